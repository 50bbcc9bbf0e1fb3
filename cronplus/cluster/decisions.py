"""Cluster decisions and values: who claims a slot first, lease timing, the definitions hash,
and what claims say (``ClaimStatus``, ``Expired``, the queued ``Write``).

Pure: nothing here reads a clock or talks to PostgreSQL. ``node.py`` asks these functions
and acts on the answers; docs/cluster.md explains the protocol they are part of.

Load spread is rendezvous (highest random weight) hashing of ``(job, slot)`` over the live
nodes that may run the job: every node computes the same order without talking to the
others, and a node joining or leaving moves only the slots it wins or won.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import datetime, timedelta
from enum import Enum, StrEnum
from pathlib import Path
from typing import Protocol
from uuid import UUID
from zoneinfo import ZoneInfo

from cronplus.core.model import Job, Outcome, RunResult, StateError, iso_utc

PREFERENCE_DELAY = timedelta(milliseconds=300)
"""How long each node waits per place behind the preferred one before it claims a slot.

Short, because it is lateness whenever the preferred node is dead but not yet out of the
hashing; long enough that a live preferred node, which claims at once, nearly always wins.
"""

HEARTBEATS_PER_LEASE = 3
"""A node heartbeats and renews its claims this many times per lease: two may be lost."""

RECONNECT_FIRST = 0.1
RECONNECT_MAX = 5.0
"""Seconds between attempts to reach the database: doubling from the first, up to the max."""


@dataclass(frozen=True, kw_only=True)
class NodeView:
    """What one node knows about a live node from its heartbeat row."""

    name: str
    tags: frozenset[str] = frozenset()
    full: bool = False
    """At ``max_concurrent``: it would only queue a slot, so the next node claims at once."""


def runs_here(job: Job, tags: Iterable[str]) -> bool:
    """A job without ``run_on`` runs on any node; else on nodes with one of its tags."""
    return not job.run_on or not job.run_on.isdisjoint(tags)


def rendezvous(job: str, slot: datetime, nodes: Iterable[str]) -> list[str]:
    """Node names, the preferred one first: highest hash of (node, job, slot) wins."""
    key = f"{job}\0{iso_utc(slot)}"
    return sorted(nodes, key=lambda node: (-_weight(node, key), node))


def _weight(node: str, key: str) -> int:
    digest = hashlib.blake2b(f"{node}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def claim_delay(job: Job, slot: datetime, *, me: str, live: Sequence[NodeView]) -> timedelta:
    """How long ``me`` waits before claiming: 0 when preferred, else one step per place.

    Only live nodes that may run the job count; full nodes go to the back of the order,
    so a busy preferred node does not make the slot wait. A node that does not see its
    own heartbeat yet counts itself last.
    """
    able = {node.name: node for node in live if runs_here(job, node.tags)}
    order = rendezvous(job.name, slot, able)
    order.sort(key=lambda name: able[name].full)  # stable: hashing order within each group
    place = order.index(me) if me in order else len(order)
    return PREFERENCE_DELAY * place


MAX_CLOCK_SKEW = 5.0
"""Seconds a node's clock may be off the database's before the node refuses to claim.
Within it the node reads its clock corrected by the measured offset (clock.CorrectedClock);
past it the clock is broken (no time sync), and a node on it must not decide."""
CORRECTION_STEP = 0.02
"""Seconds a new measurement must differ by before the correction follows it: a round
trip's noise does not move the node's clock at each heartbeat."""


def clock_refusal(node: str, offset: float, error: float) -> str | None:
    """Why ``node``, whose clock is ``offset`` seconds ahead of the database's (give or
    take ``error``), must not claim; None within ``MAX_CLOCK_SKEW``."""
    if abs(offset) - error <= MAX_CLOCK_SKEW:
        return None
    direction = "ahead of" if offset > 0 else "behind"
    return (
        f"node {node} refuses to claim slots: its clock is {abs(offset):.1f}s {direction} the"
        f" cluster database's, more than the {MAX_CLOCK_SKEW:g}s a node may be off; fix the"
        " host's time sync (NTP, chrony, systemd-timesyncd)"
    )


def heartbeat_interval(lease: timedelta) -> timedelta:
    """How often a node heartbeats and renews its leases."""
    return lease / HEARTBEATS_PER_LEASE


def reconnect_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` failed attempts in a row to reach the database."""
    return min(RECONNECT_FIRST * 2.0 ** max(failures - 1, 0), RECONNECT_MAX)


def definitions_hash(jobs: Iterable[Job]) -> str:
    """A hex digest of the job definitions, the same on every node whose files agree.

    Jobs are hashed by name, so their order in the file does not matter; ``settings`` are
    not part of it, as nodes may differ in ``cluster.node`` and ``cluster.tags`` (and keep
    their own ``state`` path, log format and limits).
    """
    canonical = {job.name: _plain(job) for job in jobs}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(value: object) -> object:
    """A JSON value that is equal exactly when the job fields are."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, ZoneInfo):
        return value.key
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, frozenset | set):
        return sorted(_plain(item) for item in value)  # type: ignore[type-var]
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


# --- what the database says: nodes, claims, queued writes -----------------------------


@dataclass(frozen=True, kw_only=True)
class NodeRow:
    """A node's heartbeat row, as the others see it."""

    name: str
    host: str
    pid: int
    tags: frozenset[str]
    definitions: str
    running: int
    capacity: int
    started_at: datetime
    heartbeat_age_s: float
    """Seconds since its last heartbeat, by the database's clock."""
    live: bool
    """Heartbeat younger than its lease, and not stopped."""
    stopped: bool
    clock_offset: float | None = None
    """Seconds its clock was ahead of the database's at its last heartbeat but one."""
    refusing: str | None = None
    """Why it does not claim (its definitions, its clock), or None."""
    incarnation: UUID | None = None
    """The start of the node that wrote the row: a new one at each daemon start."""


@dataclass(frozen=True, kw_only=True)
class Beat:
    """What one heartbeat learned: the live nodes and the cluster's job definitions."""

    live: tuple[NodeRow, ...]
    definitions: str
    """The cluster's definitions hash (this node's if it just set it)."""
    set_by: str
    holders: tuple[str, ...]
    """Live nodes, this one excluded, whose definitions are the cluster's."""
    clock_offset: float = 0.0
    """Seconds this node's clock is ahead of the database's (negative: behind)."""
    clock_error: float = 0.0
    """How far ``clock_offset`` may be off: half the heartbeat's round trip."""


class Superseded(StateError):
    """Another daemon started as this node since this one lost its connection (and the
    node's lock with it): this one must stop claiming and exit."""


class ClaimStatus(StrEnum):
    """What a row in ``claims`` says about its (job, slot)."""

    RUNNING = "running"
    """A node runs the slot and renews its lease; another takes it over if the lease ends."""
    DONE = "done"
    """The slot ran (whatever its outcome); nobody starts it again."""
    SKIPPED = "skipped"
    """``overlap: forbid`` and the job's previous run was alive somewhere: not started."""
    MISSED = "missed"
    """The node that counted the slot missed recorded it; nobody records it again."""


@dataclass(frozen=True, kw_only=True)
class Claimed:
    """A claim that went in: RUNNING to start the slot, SKIPPED to record it skipped."""

    status: ClaimStatus
    busy_slot: datetime | None = None
    busy_node: str | None = None
    """The live run of the same job that made it SKIPPED (or that was asked to stop)."""


@dataclass(frozen=True, kw_only=True)
class Expired:
    """A RUNNING claim whose owner stopped renewing its lease, as it was when taken over."""

    job: str
    scheduled_at: datetime
    node: str
    attempt: int
    started_at: datetime | None
    lease_until: datetime
    token: UUID | None = None
    """The dead incarnation's token: the takeover replaces exactly this claim."""


@dataclass(frozen=True, kw_only=True)
class Write:
    """One write the engine asked for, applied later in a batch (``ClusterDb.write``).

    ``history``: add the row. ``ledger``: advance it. ``claim_status`` with ``token``:
    mark this node's claim so; without a token, claim the slot with that status and add
    ``history`` only if nobody had claimed it (a slot skipped or missed is recorded once).
    ``begin``: note the attempt and pid on this node's claim.
    """

    history: RunResult | None = None
    keep: int = 1
    ledger: tuple[tuple[str, datetime], ...] = ()
    job: str = ""
    slot: datetime | None = None
    token: UUID | None = None
    claim_status: ClaimStatus | None = None
    begin: tuple[int, datetime, int | None] | None = None
    """(attempt, started_at, pid)."""
    tried: UUID | None = None
    """With ``claim_status`` and no ``token``: a claim of this node's whose answer never
    came (the on-time timeout ended the wait); if it went in, it becomes the record."""
    give_up: bool = False
    """With ``token``: this node gives its claim up unstarted; another takes it over."""
    rewind: tuple[tuple[str, datetime], ...] = ()
    """Slots given up before their claim went in (a shutdown): the ledger goes back to
    just before each, so the next start catches them up by the job's ``catchup``."""


def record_of_slot(
    job: str, slot: datetime, outcome: Outcome, *, now: datetime, why: str
) -> RunResult:
    """The history row of a slot that never became an attempt (skipped, missed)."""
    return RunResult(
        job=job,
        scheduled_at=slot,
        attempt=0,
        started_at=now,
        finished_at=now,
        outcome=outcome,
        reason=why,
    )


def interrupted_by_node_death(item: Expired, *, taker: str, now: datetime) -> RunResult:
    """The history row of an attempt whose node died under it (its lease ran out)."""
    started = item.started_at or item.lease_until
    what = f"attempt {item.attempt}" if item.attempt else "the slot (no attempt had started)"
    return RunResult(
        job=item.job,
        scheduled_at=item.scheduled_at,
        attempt=item.attempt,
        started_at=started,
        finished_at=now,
        outcome=Outcome.INTERRUPTED,
        duration_s=max((now - started).total_seconds(), 0.0),
        reason=(
            f"node {item.node} stopped heartbeating during {what}; its lease ran out at"
            f" {item.lease_until.isoformat()} (or the node started again) and node {taker}"
            " took the slot over"
        ),
    )


class ClusterDatabase(Protocol):
    """What a node asks of the cluster's database: ``pg.claims.ClusterDb``, or a test's fake."""

    node: str
    where: str
    """The database, for messages (never the DSN: it may hold a password)."""
    connected_at: float
    """Monotonic instant of the last (re)connection."""

    async def heartbeat(
        self,
        *,
        tags: frozenset[str],
        lease: timedelta,
        definitions: str,
        running: int,
        capacity: int,
        joining: bool = False,
        stamp: datetime | None = None,
        clock_offset: float | None = None,
        refusing: str | None = None,
    ) -> Beat: ...

    async def claim(
        self,
        *,
        job: str,
        slot: datetime,
        token: UUID,
        lease: timedelta,
        forbid: bool,
        replace: bool,
    ) -> Claimed | None: ...

    async def renew(
        self, *, tokens: Sequence[UUID], lease: timedelta
    ) -> dict[UUID, str | None]: ...

    async def confirm(
        self, *, job: str, slot: datetime, token: UUID, attempt: int, lease: timedelta
    ) -> bool: ...

    async def expired(self) -> list[Expired]: ...

    async def take_over(self, item: Expired, *, token: UUID, lease: timedelta) -> bool: ...

    async def write(self, writes: Sequence[Write]) -> None: ...

    async def prune(self, *, keep: timedelta) -> int: ...

    async def leave(self) -> None: ...

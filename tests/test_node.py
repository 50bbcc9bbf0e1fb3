"""A cluster node's policy against a fake database: who claims when, refusals, records."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest

from cronplus.clock import FakeClock
from cronplus.cluster.decisions import (
    PREFERENCE_DELAY,
    Beat,
    Claimed,
    ClaimStatus,
    Expired,
    NodeRow,
    Write,
    definitions_hash,
    rendezvous,
)
from cronplus.cluster.node import Node
from cronplus.core.model import ClusterSettings, Crontab, Job, Outcome, Overlap, RunResult, Settings
from cronplus.core.plan import ON_TIME
from cronplus.observe.logs import EventLog

T0 = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
JOB = Job(name="backup", schedule="*/2 * * * * *", timezone=ZoneInfo("UTC"), command=("true",))


def crontab(node: str = "a", job: Job = JOB) -> Crontab:
    cluster = ClusterSettings(dsn="postgresql://x@h/db", node=node)
    settings = Settings(state=Path("/nonexistent/state.db"), cluster=cluster)
    return Crontab(path=Path("crontab.yaml"), settings=settings, jobs=(job,))


def row(name: str, definitions: str = "") -> NodeRow:
    return NodeRow(
        name=name,
        host="h",
        pid=1,
        tags=frozenset(),
        definitions=definitions,
        running=0,
        capacity=16,
        started_at=T0,
        heartbeat_age_s=0.0,
        live=True,
        stopped=False,
    )


@dataclass
class FakeDb:
    """Answers as the database would; notes every claim and write."""

    node: str = "a"
    where: str = "postgresql host=fake"
    connected_at: float = 0.0
    live: tuple[str, ...] = ("a", "b", "c")
    definitions: str | None = None
    """The cluster's hash; None: whatever the node sends."""
    answer: Claimed | None = field(default_factory=lambda: Claimed(status=ClaimStatus.RUNNING))
    claims: list[dict[str, Any]] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    away: bool = False
    """The database does not answer: a claim waits (as ClusterDb's reconnect loop does)."""
    clock_offset: float = 0.0
    """How far ahead of the database's the node's clock is, as a heartbeat measures it."""
    beats: list[dict[str, Any]] = field(default_factory=list)
    stamp: datetime | None = None
    """The stamp of the cluster's definitions: a newer publication replaces them."""
    lost: set[UUID] = field(default_factory=set)
    """Tokens another node took over: renewing and confirming them fail."""
    confirms: list[dict[str, Any]] = field(default_factory=list)
    expiring: list[Expired] = field(default_factory=list)
    """What ``expired`` answers (once each); ``take_over`` succeeds for these."""

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
    ) -> Beat:
        newer = stamp is not None and (self.stamp is None or stamp > self.stamp)
        if newer or self.definitions is None:
            self.definitions, self.stamp = definitions, stamp or self.stamp
        self.beats.append({"stamp": stamp, "refusing": refusing})
        nodes = tuple(row(name, self.definitions) for name in self.live)
        return Beat(
            live=nodes,
            definitions=self.definitions,
            set_by="b",
            holders=("b",),
            clock_offset=self.clock_offset,
        )

    async def claim(
        self,
        *,
        job: str,
        slot: datetime,
        token: UUID,
        lease: timedelta,
        forbid: bool,
        replace: bool,
    ) -> Claimed | None:
        self.claims.append({"job": job, "slot": slot, "forbid": forbid, "replace": replace})
        if self.away:
            await asyncio.Event().wait()
        return self.answer

    async def renew(self, *, tokens: Sequence[UUID], lease: timedelta) -> dict[UUID, str | None]:
        return dict.fromkeys(t for t in tokens if t not in self.lost)

    async def confirm(
        self, *, job: str, slot: datetime, token: UUID, attempt: int, lease: timedelta
    ) -> bool:
        self.confirms.append({"job": job, "slot": slot, "attempt": attempt})
        if self.away:
            await asyncio.Event().wait()
        return token not in self.lost

    async def expired(self) -> list[Expired]:
        found, self.expiring = self.expiring, []
        return found

    async def take_over(self, item: Expired, *, token: UUID, lease: timedelta) -> bool:
        return True

    async def write(self, writes: Sequence[Write]) -> None:
        self.writes.extend(writes)

    async def prune(self, *, keep: timedelta) -> int:
        return 0

    async def leave(self) -> None:
        pass


def node(db: FakeDb, clock: FakeClock | None = None, job: Job = JOB) -> Node:
    return Node(
        db,
        crontab(db.node, job),
        clock=clock or FakeClock(T0),
        log=EventLog(),
        ledger={"backup": T0},
        outcomes={},
    )


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


@pytest.mark.parametrize("place", [0, 1, 2], ids=["preferred", "second", "third"])
def test_a_node_waits_one_step_per_place_behind_the_preferred_node(place: int) -> None:
    me = rendezvous("backup", T0, ["a", "b", "c"])[place]
    db, clock = FakeDb(node=me), FakeClock(T0)
    member = node(db, clock)

    async def scenario() -> object:
        await member.join()
        return await member.claim(JOB, T0)

    held = run(scenario())

    assert held is not None
    assert clock.now() - T0 == PREFERENCE_DELAY * place
    assert db.claims == [{"job": "backup", "slot": T0, "forbid": True, "replace": False}]


def test_a_node_whose_definitions_differ_claims_nothing_and_moves_no_ledger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = FakeDb(definitions="0123456789abcdef")
    member = node(db)

    async def scenario() -> object:
        await member.join()
        member.store.advance_ledger([("backup", T0 + timedelta(seconds=2))])
        return await member.claim(JOB, T0 + timedelta(seconds=2))

    with caplog.at_level(logging.ERROR, logger="cronplus"):
        held = run(scenario())

    assert held is None
    assert db.claims == []
    assert member.queued == ()  # nothing queued: no claim, no ledger move
    mine = definitions_hash([JOB])[:12]
    assert f"its job definitions (hash {mine}) differ from the cluster's (0123456789ab" in (
        caplog.text
    )


def test_a_slot_skipped_for_a_run_on_another_node_is_recorded_by_the_claimer() -> None:
    busy = Claimed(status=ClaimStatus.SKIPPED, busy_slot=T0 - timedelta(seconds=2), busy_node="c")
    db = FakeDb(answer=busy)
    member = node(db)

    async def scenario() -> object:
        await member.join()
        return await member.claim(JOB, T0)

    assert run(scenario()) is None
    [write] = member.queued
    assert write.history is not None
    assert (write.history.outcome, write.history.attempt) == (Outcome.SKIPPED_OVERLAP, 0)
    assert "still alive on node c (overlap: forbid)" in write.history.reason


def test_a_slot_claimed_by_another_node_is_not_ours() -> None:
    member = node(FakeDb(answer=None))

    assert run(member.claim(replace(JOB, overlap=Overlap.ALLOW), T0)) is None


@pytest.mark.parametrize(
    ("started", "expected"),
    [(True, [(ClaimStatus.DONE, False)]), (False, [(None, True)])],
    ids=["ran: done", "given-up-unstarted: dead at once, for another node"],
)
def test_releasing_a_claim_marks_it_done_only_if_an_attempt_ran(
    started: bool, expected: list[tuple[ClaimStatus | None, bool]]
) -> None:
    member = node(FakeDb())
    held = run(member.claim(JOB, T0))

    held.release(started=started)

    assert [(w.claim_status, w.give_up) for w in member.queued] == expected
    assert all(w.token == held.token for w in member.queued)
    assert member.held("backup", T0) is None


def result(outcome: Outcome) -> RunResult:
    return RunResult(
        job="backup",
        scheduled_at=T0,
        attempt=0,
        started_at=T0,
        finished_at=T0,
        outcome=outcome,
    )


@pytest.mark.parametrize(
    ("outcome", "claim_status"),
    [
        (Outcome.MISSED, ClaimStatus.MISSED),
        (Outcome.SKIPPED_OVERLAP, ClaimStatus.SKIPPED),
        (Outcome.SUCCEEDED, None),
    ],
    ids=["missed", "skipped", "a-run"],
)
def test_records_any_node_could_make_are_claims_so_they_are_written_once(
    outcome: Outcome, claim_status: ClaimStatus | None
) -> None:
    member = node(FakeDb())

    member.store.record(result(outcome), keep=10)

    [write] = member.queued
    assert (write.claim_status, write.token, write.history) == (claim_status, None, result(outcome))


def test_an_attempt_of_a_held_slot_is_noted_on_its_claim() -> None:
    member = node(FakeDb())
    held = run(member.claim(JOB, T0))

    member.store.begin_attempt(job="backup", scheduled_at=T0, attempt=1, started_at=T0, pid=42)

    [write] = member.queued
    assert (write.token, write.begin) == (held.token, (1, T0, 42))


def test_a_claim_the_database_cannot_take_while_the_slot_is_on_time_is_missed_once() -> None:
    clock = FakeClock(T0)
    member = node(FakeDb(away=True), clock)
    slot = T0 - (ON_TIME - timedelta(milliseconds=100))  # 0.1 s of its minute of grace left

    assert run(member.claim(JOB, slot)) is None
    [write] = member.queued
    assert (write.claim_status, write.token, write.slot) == (ClaimStatus.MISSED, None, slot)
    # If the claim went in after all and only its answer was lost, it becomes the record.
    assert write.tried is not None
    assert write.history is not None and write.history.outcome is Outcome.MISSED
    assert "unreachable until the slot was 0:01:00 late" in write.history.reason

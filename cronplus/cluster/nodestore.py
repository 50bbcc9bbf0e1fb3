"""``NodeStore``: the ``Store`` a cluster node's engine writes to, through the node's queue.

The engine records as on one host; here each record becomes a ``Write`` that the node
applies in a background batch (``node.Node``), so the event loop never waits on the
database. Records that any node could make for one slot (skipped, missed) become claims,
so they are written once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Generic, Protocol, TypeVar
from uuid import UUID

from cronplus.cluster.decisions import ClaimStatus, Write
from cronplus.core.model import Outcome, RunResult, StateError


class Claim(Protocol):
    """A claim the node holds, as the store sees it."""

    @property
    def token(self) -> UUID: ...
    @property
    def taken_from(self) -> str | None: ...


H = TypeVar("H", bound=Claim)


class Claims(Protocol[H]):
    """What the store needs of its node (``node.Node``): the claims it holds, and its queue
    of writes for the database."""

    @property
    def refused(self) -> bool: ...
    def held(self, job: str, slot: datetime) -> H | None: ...
    def release(self, held: H, status: ClaimStatus) -> None: ...
    def queue(self, write: Write) -> None: ...


_RECORDED_ONCE = {Outcome.SKIPPED_OVERLAP: ClaimStatus.SKIPPED, Outcome.MISSED: ClaimStatus.MISSED}


class NodeStore(Generic[H]):
    """The ``Store`` a cluster node's engine writes to: writes queue for the database.

    Reads answer from what the database held when the node started (the daemon reads the
    ledger and last outcomes once); ``cronplus history`` opens a ``PgStore``. The daemon's
    attempts in flight are the node's claims: one cut off by a dead node is taken over, not
    recorded interrupted at the next start; ``take_interrupted`` gives what the node found
    of ``cronplus run`` attempts whose process died.
    """

    def __init__(
        self,
        node: Claims[H],
        ledger: Mapping[str, datetime],
        outcomes: Mapping[str, tuple[Outcome, datetime]],
        interrupted: Sequence[RunResult] = (),
    ) -> None:
        self._node = node
        self._ledger = dict(ledger)
        self._outcomes = dict(outcomes)
        self._interrupted = list(interrupted)
        self._attempts: dict[int, tuple[str, datetime]] = {}
        self._next_id = 0

    def record(self, result: RunResult, *, keep: int) -> None:
        status = _RECORDED_ONCE.get(result.outcome)
        if status is not None and self._node.refused:
            return  # its schedule is not the cluster's: the agreeing nodes record the slot
        held = self._node.held(result.job, result.scheduled_at)
        if status is not None and held is not None:
            self._node.release(held, status)
        elif status is not None:  # recorded by whichever node claims the slot first
            write = Write(job=result.job, slot=result.scheduled_at, claim_status=status)
            self._node.queue(replace(write, history=result, keep=keep))
            return
        self._node.queue(Write(history=result, keep=keep))

    def history(
        self,
        *,
        job: str | None = None,
        failed_only: bool = False,
        limit: int = 20,
        run_id: str | None = None,
    ) -> list[RunResult]:
        raise StateError("a cluster node's engine store keeps no history; open a PgStore")

    def last_outcomes(self) -> dict[str, tuple[Outcome, datetime]]:
        return dict(self._outcomes)

    def ledger(self) -> dict[str, datetime]:
        return dict(self._ledger)

    def advance_ledger(self, slots: Iterable[tuple[str, datetime]]) -> None:
        pairs = tuple(slots)
        if pairs and not self._node.refused:  # a refusing node's schedule is not the cluster's
            self._node.queue(Write(ledger=pairs))

    def begin_attempt(
        self,
        *,
        job: str,
        scheduled_at: datetime,
        attempt: int,
        started_at: datetime,
        pid: int | None,
    ) -> int:
        self._next_id += 1
        self._attempts[self._next_id] = (job, scheduled_at)
        held = self._node.held(job, scheduled_at)
        if held is not None:
            begin = (attempt, started_at, pid)
            self._node.queue(Write(job=job, slot=scheduled_at, token=held.token, begin=begin))
        return self._next_id

    def end_attempt(self, attempt_id: int, result: RunResult, *, keep: int) -> None:
        key = self._attempts.pop(attempt_id, None)
        held = self._node.held(*key) if key else None
        if held is not None and held.taken_from is not None:
            why = f"taken over from node {held.taken_from} after its lease ran out"
            result = replace(result, reason=f"{why}; {result.reason}" if result.reason else why)
        self._node.queue(Write(history=result, keep=keep))

    def take_interrupted(self, *, now: datetime) -> list[RunResult]:
        """What the node found at start (already recorded); then nothing."""
        taken, self._interrupted = self._interrupted, []
        return taken

    def close(self) -> None:
        pass

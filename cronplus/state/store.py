"""What cronplus remembers between runs: the ``Store`` protocol and what every store shares.

``Store`` is the protocol the engine and the CLI code against: run history, the per-job
ledger of handled slots, attempts in flight. ``SqliteStore`` (``cronplus/state/sqlite.py``,
re-exported here) implements it on one SQLite file; ``PgStore`` (``cronplus/cluster/pg/store.py``)
on a cluster's PostgreSQL database, reusing what is here: ``Migration``, the instant
check, the ``keep`` check, what ``failed_only`` leaves out and how an interrupted attempt
reads.
docs/state.md describes the schema, the files beside the database and how to recover.

Instants are aware UTC datetimes in and out, stored as integer microseconds since the Unix
epoch: exact, and they sort as numbers (ISO text without fixed-width fractions does not).

A database that cannot be read is a ``StateError`` naming the file, what is wrong and how to
recover; cronplus never replaces or deletes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cronplus.core.model import Outcome, RunResult

__all__ = [
    "NOT_FAILED",
    "Migration",
    "Store",
    "check_keep",
    "from_micros",
    "history_values",
    "interrupted_result",
    "to_micros",
]


class Store(Protocol):
    """Where run history, the ledger and attempts in flight are kept."""

    def record(self, result: RunResult, *, keep: int) -> None:
        """Add one attempt as a history row, then trim the job's history to ``keep`` rows."""

    def history(
        self,
        *,
        job: str | None = None,
        failed_only: bool = False,
        limit: int = 20,
        run_id: str | None = None,
    ) -> list[RunResult]:
        """Newest first (by ``finished_at``, then insertion). ``failed_only`` drops
        ``succeeded`` and ``skipped_overlap`` rows; ``run_id``: only that run's rows."""

    def last_outcomes(self) -> dict[str, tuple[Outcome, datetime]]:
        """Per job: the outcome and ``finished_at`` of its newest history row."""

    def ledger(self) -> dict[str, datetime]:
        """Per job: the last slot handled."""

    def advance_ledger(self, slots: Iterable[tuple[str, datetime]]) -> None:
        """Commit all ``(job, slot)`` pairs in one transaction; a job's slot never moves back."""

    def begin_attempt(
        self,
        *,
        job: str,
        scheduled_at: datetime,
        attempt: int,
        started_at: datetime,
        pid: int | None,
    ) -> int:
        """Note an attempt as in flight; returns the id ``end_attempt`` takes."""

    def end_attempt(self, attempt_id: int, result: RunResult, *, keep: int) -> None:
        """Drop the in-flight row and ``record`` the result, in one transaction."""

    def take_interrupted(self, *, now: datetime) -> list[RunResult]:
        """Turn attempts left in flight by dead processes into ``interrupted`` history rows."""

    def close(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class Migration:
    """One schema step: its statements run, with the new schema version, in one transaction."""

    summary: str
    statements: tuple[str, ...]


# --- values every store shares ----------------------------------------------------------

NOT_FAILED = (Outcome.SUCCEEDED, Outcome.SKIPPED_OVERLAP)
"""The outcomes ``history(failed_only=True)`` leaves out; ``missed`` and ``interrupted``
count as failures."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(instant: datetime, what: str) -> int:
    """``instant`` as integer microseconds since the Unix epoch; ``what`` names it if naive."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime, got naive {instant.isoformat()}")
    return (instant - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """The aware UTC instant ``to_micros`` made ``micros`` of."""
    return _EPOCH + micros * _MICROSECOND


def history_values(
    result: RunResult, instant: Callable[[datetime, str], object]
) -> tuple[object, ...]:
    """A history row's values in the column order every store inserts them; ``instant``
    turns a datetime into the store's own type (and rejects a naive one)."""
    return (
        result.run_id,
        result.job,
        instant(result.scheduled_at, f"scheduled_at of {result.job}"),
        result.attempt,
        instant(result.started_at, f"started_at of {result.job}"),
        instant(result.finished_at, f"finished_at of {result.job}"),
        result.outcome.value,
        result.exit_code,
        result.signal,
        result.duration_s,
        result.stderr_tail,
        result.reason,
        result.stdout,
        result.stderr,
        "" if result.trigger is None else result.trigger.value,
        result.response,
    )


def check_keep(keep: int) -> None:
    """``keep`` (history rows per job) must be at least 1, else ``ValueError``."""
    if keep < 1:
        raise ValueError(f"keep (history rows per job) must be at least 1, got {keep}")


def interrupted_result(
    *,
    job: str,
    scheduled_at: datetime,
    attempt: int,
    started_at: datetime,
    pid: int | None,
    owner_pid: int,
    now: datetime,
) -> RunResult:
    """The history row of an attempt whose cronplus process (``owner_pid``) died under it."""
    reason = f"cronplus (pid {owner_pid}) ended while this attempt ran"
    if pid is not None:
        reason += f"; its process group {pid} may still be running"
    return RunResult(
        job=job,
        scheduled_at=scheduled_at,
        attempt=attempt,
        started_at=started_at,
        finished_at=now,
        outcome=Outcome.INTERRUPTED,
        duration_s=max((now - started_at).total_seconds(), 0.0),
        reason=reason,
    )

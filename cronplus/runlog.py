"""The run log: the records and log lines for slots that were skipped, missed or failed.

Builders here are pure (they take ``now``); the ``log_*`` functions only write event lines.
Field names are stable: ``job``, ``run_id``, ``scheduled_at``, ``attempt``,
``max_attempts``, ``outcome``, ``exit_code``, ``signal``, ``duration_s``, ``reason``.
"""

from __future__ import annotations

from datetime import datetime

from cronplus.exits import how_it_ended
from cronplus.logs import EventLog
from cronplus.model import Job, Outcome, RunResult, iso_utc
from cronplus.plan import Pending


def fields(result: RunResult, *, job: Job) -> dict[str, object]:
    """The stable event fields of one record."""
    return {
        "job": result.job,
        "run_id": result.run_id,
        "scheduled_at": iso_utc(result.scheduled_at),
        "attempt": result.attempt,
        "max_attempts": job.retry.retries + 1,
        "outcome": str(result.outcome),
        "exit_code": result.exit_code,
        "signal": result.signal,
        "duration_s": result.duration_s,
        "reason": result.reason or None,
    }


def skipped(job: Job, slot: datetime, *, busy_slot: datetime, now: datetime) -> RunResult:
    """``overlap: forbid`` and the previous run is alive: attempt 0, nothing started."""
    return RunResult(
        job=job.name,
        scheduled_at=slot,
        attempt=0,
        started_at=now,
        finished_at=now,
        outcome=Outcome.SKIPPED_OVERLAP,
        reason=f"the run of {iso_utc(busy_slot)} is still alive (overlap: forbid)",
    )


def missed(job: Job, decision: Pending, *, now: datetime) -> RunResult | None:
    """One record for all the slots a catch-up decision counted as missed, or None."""
    if decision.missed == 0 or decision.missed_until is None:
        return None
    return RunResult(
        job=job.name,
        scheduled_at=decision.missed_until,
        attempt=0,
        started_at=now,
        finished_at=now,
        outcome=Outcome.MISSED,
        reason=f"{_missed_span(decision)} (catchup: {job.catchup})",
    )


def _missed_span(decision: Pending) -> str:
    first = iso_utc(decision.missed_from) if decision.missed_from else "?"
    last = iso_utc(decision.missed_until) if decision.missed_until else "?"
    return f"{decision.missed} slot(s) missed from {first} to {last}"


def log_skipped(out: EventLog, job: Job, result: RunResult) -> None:
    out.warning(
        "skipped_overlap",
        f"job {job.name}: slot skipped, the previous run is still alive",
        **fields(result, job=job),
    )


def log_missed(out: EventLog, job: Job, decision: Pending) -> None:
    out.warning(
        "missed",
        f"job {job.name}: {_missed_span(decision)} while the daemon was down, asleep or "
        "the clock jumped",
        job=job.name,
        missed=decision.missed,
        first=iso_utc(decision.missed_from) if decision.missed_from else None,
        last=iso_utc(decision.missed_until) if decision.missed_until else None,
        catchup=str(job.catchup),
    )


def log_succeeded(out: EventLog, job: Job, result: RunResult) -> None:
    out.info("attempt_succeeded", f"job {job.name} succeeded", **fields(result, job=job))


def log_failure(out: EventLog, job: Job, result: RunResult, *, retry_at: datetime | None) -> None:
    """Every failed attempt is a WARNING line; the final failure also an ERROR line."""
    total = job.retry.retries + 1
    local = result.scheduled_at.astimezone(job.timezone).isoformat()
    head = (
        f"job {job.name} {result.outcome} (attempt {result.attempt}/{total}, "
        f"{how_it_ended(result)}, {result.duration_s:.2f}s), slot {iso_utc(result.scheduled_at)} "
        f"({local} local)"
    )
    details = fields(result, job=job) | {"local": local, "stderr_tail": result.stderr_tail}
    if retry_at is not None:
        wait = (retry_at - result.finished_at).total_seconds()
        out.warning("attempt_failed", f"{head}; retry in {wait:g}s", **details)
        return
    out.warning("attempt_failed", head, **details)
    dropped = result.attempt <= job.retry.retries
    why = "its next slot comes before the retry" if dropped else "no retries left"
    out.error("run_failed", f"job {job.name} failed: {why}", **details)

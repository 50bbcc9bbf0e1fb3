"""The run log: the records and log lines for slots that were skipped, missed or failed,
and for runs that failed inside cronplus.

Builders here are pure (they take ``now``); the ``log_*`` functions only write event lines.
Field names are stable: ``job``, ``run_id``, ``scheduled_at``, ``attempt``,
``max_attempts``, ``outcome``, ``exit_code``, ``signal``, ``duration_s``, ``reason``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from cronplus.core.model import Job, Outcome, RunResult, Slot, Trigger, iso_utc
from cronplus.core.plan import Pending
from cronplus.observe.logs import EventLog
from cronplus.run.exits import how_it_ended


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
        "response": result.response or None,
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


def crashed(
    job: Job,
    slot: datetime,
    *,
    attempt: int,
    started_at: datetime | None,
    ended: RunResult | None,
    now: datetime,
    reason: str,
) -> RunResult:
    """An attempt whose run failed inside cronplus (a bug, a failing store): ``failed``
    with ``reason``; what is known of how the job itself ended (``ended``) is kept."""
    if ended is not None:
        why = f"{reason} (the attempt itself {ended.outcome}, {how_it_ended(ended)})"
        return replace(ended, outcome=Outcome.FAILED, reason=why)
    begun = started_at or now
    return RunResult(
        job=job.name,
        scheduled_at=slot,
        attempt=attempt,
        started_at=begun,
        finished_at=now,
        outcome=Outcome.FAILED,
        duration_s=max((now - begun).total_seconds(), 0.0),
        reason=reason,
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


def log_started(
    out: EventLog, job: Job, slot: Slot, attempt: int, *, pid: int | None, how: Trigger
) -> None:
    total = job.retry.retries + 1
    what = f"pid {pid}" if job.target is None else f"to {job.target.kind}"
    out.info(
        "job_started",
        f"job {job.name} started (attempt {attempt}/{total}, {what}, {how})",
        job=job.name,
        run_id=slot.run_id,
        scheduled_at=iso_utc(slot.scheduled_at),
        attempt=attempt,
        max_attempts=total,
        pid=pid,
        trigger=str(how),
        target=str(job.target.kind) if job.target is not None else None,
    )


def log_succeeded(out: EventLog, job: Job, result: RunResult) -> None:
    answer = f" ({result.response})" if result.response else ""
    out.info("attempt_succeeded", f"job {job.name} succeeded{answer}", **fields(result, job=job))


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


def log_crashed(
    out: EventLog, job: Job, slot: datetime, *, attempt: int, reason: str, where: str
) -> None:
    """A run's task ended by an exception: an ERROR line with the run and the traceback."""
    out.error(
        "run_crashed",
        f"job {job.name}: {reason}",
        job=job.name,
        run_id=Slot(job=job.name, scheduled_at=slot).run_id,
        scheduled_at=iso_utc(slot),
        attempt=attempt,
        reason=reason,
        traceback=where,
    )


def log_unrecorded(out: EventLog, result: RunResult, *, why: str) -> None:
    out.error(
        "record_failed",
        f"job {result.job}: the failure of its run could not be recorded: {why}",
        job=result.job,
        run_id=result.run_id,
        attempt=result.attempt,
        reason=why,
    )

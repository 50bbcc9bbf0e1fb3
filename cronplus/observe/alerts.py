"""Alert decisions: which alert an engine event raises, and the dead-man timers.

Pure: nothing here sends, sleeps or reads a clock. ``AlertBook`` remembers, per job, whether
its last run failed (for ``on_recovery``) and when its dead-man alert is due
(``alert_if_no_success_for``); every method takes ``now``. ``notifiers.py`` delivers what
it decides; docs/observability.md tells the rules to operators.

The dead-man alert fires once when a job has had no success for its period, counted from
its last success (or from when the daemon began watching it), then stays quiet until a
success re-arms it. Its deadline feeds the daemon loop's wake-up, so nothing polls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cronplus.core.model import AlertKind, Job, Outcome, RunResult, iso_utc
from cronplus.run.exits import how_it_ended

FAILING = frozenset({Outcome.FAILED, Outcome.TIMED_OUT, Outcome.KILLED})
"""Final outcomes that raise ``on_failure`` (and make the next success a recovery)."""


@dataclass(frozen=True, kw_only=True)
class Alert:
    """One alert, with everything a notifier may show; ``body()`` is the webhook JSON."""

    kind: AlertKind
    job: str
    at: datetime
    """When the alert was raised."""
    message: str
    run_id: str | None = None
    scheduled_at: datetime | None = None
    attempt: int | None = None
    max_attempts: int | None = None
    outcome: Outcome | None = None
    exit_code: int | None = None
    signal: int | None = None
    duration_s: float | None = None
    reason: str = ""
    stderr_tail: str = ""
    stdout_tail: str = ""
    """The last 20 lines (4 KiB) of stdout; empty for a job with ``output: discard``."""
    retry_at: datetime | None = None
    missed: int | None = None
    """How many slots an ``on_missed`` alert covers."""
    last_success: datetime | None = None
    """For ``no_success``: the last success known, or None."""

    def body(self, *, host: str) -> dict[str, object]:
        """The documented JSON body (docs/observability.md), version 1."""
        return {
            "version": 1,
            "alert": str(self.kind),
            "job": self.job,
            "host": host,
            "at": iso_utc(self.at),
            "message": self.message,
            "run_id": self.run_id,
            "scheduled_at": _iso(self.scheduled_at),
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "outcome": None if self.outcome is None else str(self.outcome),
            "exit_code": self.exit_code,
            "signal": self.signal,
            "duration_s": self.duration_s,
            "reason": self.reason or None,
            "stderr_tail": self.stderr_tail,
            "stdout_tail": self.stdout_tail,
            "retry_at": _iso(self.retry_at),
            "missed": self.missed,
            "last_success": _iso(self.last_success),
        }


def _iso(instant: datetime | None) -> str | None:
    return None if instant is None else iso_utc(instant)


def _from_result(
    kind: AlertKind, job: Job, result: RunResult, message: str, now: datetime
) -> Alert:
    return Alert(
        kind=kind,
        job=job.name,
        at=now,
        message=message,
        run_id=result.run_id,
        scheduled_at=result.scheduled_at,
        attempt=result.attempt,
        max_attempts=job.retry.retries + 1,
        outcome=result.outcome,
        exit_code=result.exit_code,
        signal=result.signal,
        duration_s=result.duration_s,
        reason=result.reason,
        stderr_tail=result.stderr_tail,
        stdout_tail=result.stdout_tail,
    )


@dataclass(eq=False)
class _DeadMan:
    period: timedelta
    since: datetime
    """The last success, or when watching began: the deadline is ``since + period``."""
    last_success: datetime | None
    armed: bool = True

    @property
    def deadline(self) -> datetime:
        return self.since + self.period


class AlertBook:
    """Per-job memory for alerts: failing or not, and the dead-man timers."""

    def __init__(self, last_outcomes: Mapping[str, tuple[Outcome, datetime]]) -> None:
        """Start from the state database's newest history row per job: a failure there
        makes the next success a recovery, a success there starts the dead-man count."""
        self._failing = {name for name, (outcome, _) in last_outcomes.items() if outcome in FAILING}
        self._seen_success = {
            name: finished_at
            for name, (outcome, finished_at) in last_outcomes.items()
            if outcome.ok
        }
        self._dead_men: dict[str, _DeadMan] = {}

    def watch(self, jobs: Iterable[Job], *, now: datetime) -> None:
        """Follow the dead-man periods of ``jobs`` (the enabled ones, after a start or a
        reload): a new job is counted from ``now``, a known one keeps its count."""
        watched: dict[str, _DeadMan] = {}
        for job in jobs:
            period = job.alert_if_no_success_for
            if period is None or not job.enabled:
                continue
            seen = self._seen_success.get(job.name)
            timer = self._dead_men.get(job.name) or _DeadMan(
                period=period, since=seen or now, last_success=seen
            )
            timer.period = period
            watched[job.name] = timer
        self._dead_men = watched

    def attempt_finished(
        self,
        job: Job,
        result: RunResult,
        *,
        retry_at: datetime | None,
        stopped: bool,
        now: datetime,
    ) -> list[Alert]:
        """The alerts an ended attempt raises: retry, failure or recovery."""
        if result.outcome.ok:
            self._succeeded(job.name, result.finished_at)
        if stopped:
            return []  # cronplus stopped it (shutdown, overlap: replace): nothing to report
        if retry_at is not None:
            return [self._retry(job, result, retry_at, now)]
        if result.outcome.ok:
            if job.name not in self._failing:
                return []
            self._failing.discard(job.name)
            message = f"job {job.name} succeeded again (attempt {result.attempt}) after a failure"
            return [_from_result(AlertKind.RECOVERY, job, result, message, now)]
        if result.outcome not in FAILING:
            return []
        self._failing.add(job.name)
        message = (
            f"job {job.name} {result.outcome} after {result.attempt} attempt(s) "
            f"({how_it_ended(result)}), slot {iso_utc(result.scheduled_at)}"
        )
        return [_from_result(AlertKind.FAILURE, job, result, message, now)]

    def _retry(self, job: Job, result: RunResult, retry_at: datetime, now: datetime) -> Alert:
        total = job.retry.retries + 1
        message = (
            f"job {job.name} attempt {result.attempt}/{total} {result.outcome} "
            f"({how_it_ended(result)}); retry at {iso_utc(retry_at)}"
        )
        return replace(_from_result(AlertKind.RETRY, job, result, message, now), retry_at=retry_at)

    def slots_missed(
        self, job: Job, result: RunResult, *, count: int, now: datetime
    ) -> list[Alert]:
        """One ``missed`` alert for a skipped slot or for a batch missed while down."""
        why = result.reason or str(result.outcome)
        message = f"job {job.name}: {count} slot(s) {result.outcome}: {why}"
        alert = _from_result(AlertKind.MISSED, job, result, message, now)
        return [replace(alert, missed=count, attempt=None)]

    def _succeeded(self, name: str, at: datetime) -> None:
        self._seen_success[name] = at
        timer = self._dead_men.get(name)
        if timer is not None:
            timer.since = timer.last_success = max(at, timer.since)
            timer.armed = True

    def next_deadline(self) -> datetime | None:
        """The earliest instant an armed dead-man alert comes due (for the loop's wake-up)."""
        return min((t.deadline for t in self._dead_men.values() if t.armed), default=None)

    def due(self, *, now: datetime) -> list[Alert]:
        """Fire every armed dead-man timer whose deadline has passed; each fires once."""
        alerts = []
        for name, timer in self._dead_men.items():
            if not timer.armed or timer.deadline > now:
                continue
            timer.armed = False
            self._failing.add(name)  # the next success is a recovery
            seen = iso_utc(timer.last_success) if timer.last_success else "none seen"
            message = (
                f"job {name} has not succeeded for {_words(timer.period)} (last success: {seen})"
            )
            alerts.append(
                Alert(
                    kind=AlertKind.NO_SUCCESS,
                    job=name,
                    at=now,
                    message=message,
                    last_success=timer.last_success,
                )
            )
        return alerts


def _words(period: timedelta) -> str:
    """``26h``, ``1d2h``, ``90s``: a period the way the crontab writes it."""
    seconds = int(period.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or f"{period.total_seconds():g}s"

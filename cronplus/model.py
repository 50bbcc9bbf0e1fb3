"""The cronplus domain: jobs, policies, slots, run results and the errors that name them.

Values are frozen and keyword-only. Strings from the crontab become ``ZoneInfo``,
``timedelta`` and enums in ``config.py``; everything here is already converted.

Every instant is an aware UTC ``datetime``; a job's zone is only used to evaluate its
expression and to display.

Exceptions::

    CronplusError                 anything cronplus reports and exits 2 for
     +-- ConfigError              a crontab that cannot be loaded (carries every ConfigIssue)
     +-- ScheduleError            a cron expression that cannot be parsed or never fires
     +-- StateError               the state database cannot be opened, read or written
     +-- UsageError               a command-line argument that makes no sense
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from zoneinfo import ZoneInfo


class Outcome(StrEnum):
    """How one attempt (or one slot that never became an attempt) ended."""

    SUCCEEDED = "succeeded"
    """The process exited with a code in ``success_codes``."""
    FAILED = "failed"
    """The process exited with another code, or could not be started at all."""
    TIMED_OUT = "timed_out"
    """The attempt ran past ``timeout``; its process group was terminated."""
    KILLED = "killed"
    """The process was ended by a signal that cronplus did not send for a timeout."""
    SKIPPED_OVERLAP = "skipped_overlap"
    """The slot came while the job's previous run was alive and ``overlap`` is ``forbid``."""
    MISSED = "missed"
    """The slot passed while the daemon was down or the host asleep, and catch-up skipped it."""
    INTERRUPTED = "interrupted"
    """The daemon stopped (or crashed) while the attempt was running."""

    @property
    def ok(self) -> bool:
        return self is Outcome.SUCCEEDED


class Overlap(StrEnum):
    """What to do when a slot comes while the job's previous run is still alive."""

    ALLOW = "allow"
    """Start another run beside the old one."""
    FORBID = "forbid"
    """Skip the new slot and record it ``skipped_overlap``."""
    REPLACE = "replace"
    """Stop the old run's process group, then start the new one."""


class Catchup(StrEnum):
    """What to do with slots missed while the daemon was down or the host asleep."""

    SKIP = "skip"
    """Log and count them; run none."""
    LATEST = "latest"
    """Run the newest missed slot once."""
    ALL = "all"
    """Run every missed slot, oldest first, at most ``MAX_CATCHUP_RUNS`` (the newest ones)."""


class LogFormat(StrEnum):
    """How the daemon writes its log lines to stderr."""

    TEXT = "text"
    """A timestamp, a level and a human sentence with ``key=value`` details."""
    JSON = "json"
    """One JSON object per line, with stable field names."""


MAX_CATCHUP_RUNS = 100
"""``catchup: all`` runs at most this many missed slots per job."""


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How a failed attempt is retried: ``delay * backoff**(n-1)``, capped at ``max_delay``."""

    retries: int = 0
    delay: timedelta = timedelta(seconds=30)
    backoff: float = 2.0
    max_delay: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, kw_only=True)
class Job:
    """One entry under ``jobs:``, with every default already applied."""

    name: str
    schedule: str
    timezone: ZoneInfo
    command: tuple[str, ...] | str
    """A tuple is exec'd as argv; a string is run by ``shell -c``."""
    shell: str = "/bin/sh"
    workdir: Path = Path(".")
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: timedelta | None = None
    kill_grace: timedelta = timedelta(seconds=10)
    retry: RetryPolicy = RetryPolicy()
    success_codes: frozenset[int] = frozenset({0})
    overlap: Overlap = Overlap.FORBID
    catchup: Catchup = Catchup.LATEST
    catchup_window: timedelta | None = None
    jitter: timedelta = timedelta(0)
    enabled: bool = True

    @property
    def argv(self) -> tuple[str, ...]:
        """What is exec'd: the argv itself, or ``shell -c COMMAND``."""
        if isinstance(self.command, str):
            return (self.shell, "-c", self.command)
        return self.command


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The daemon-wide ``settings:`` block."""

    state: Path
    max_concurrent: int = 16
    log_format: LogFormat = LogFormat.TEXT
    history_keep: int = 1000
    shutdown_grace: timedelta = timedelta(seconds=30)


@dataclass(frozen=True, kw_only=True)
class Crontab:
    """A whole, valid crontab file: settings and jobs in file order."""

    path: Path
    settings: Settings
    jobs: tuple[Job, ...]

    def job(self, name: str) -> Job:
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(name)


@dataclass(frozen=True, kw_only=True)
class Slot:
    """One fire instant of one job: the unit the ledger, retries and run ids are keyed on."""

    job: str
    scheduled_at: datetime

    @property
    def run_id(self) -> str:
        """Stable for a job and slot, so jobs can use it as an idempotency key."""
        return f"{self.job}@{iso_utc(self.scheduled_at)}"


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """One attempt of one slot, as the history table keeps it."""

    job: str
    scheduled_at: datetime
    attempt: int
    started_at: datetime
    finished_at: datetime
    outcome: Outcome
    exit_code: int | None = None
    signal: int | None = None
    duration_s: float = 0.0
    stderr_tail: str = ""
    stdout_tail: str = ""
    reason: str = ""
    """Why, in words, where the outcome alone does not say (a missing command, a timeout)."""

    @property
    def run_id(self) -> str:
        return Slot(job=self.job, scheduled_at=self.scheduled_at).run_id


def iso_utc(instant: datetime) -> str:
    """``2026-03-08T07:00:00Z``: the one way cronplus writes an instant for machines."""
    text = instant.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


# --- errors ---------------------------------------------------------------------------


class CronplusError(Exception):
    """Anything cronplus reports to the operator and exits 2 for."""


@dataclass(frozen=True)
class ConfigIssue:
    """One thing wrong in a crontab, with its place: ``FILE:LINE:COL: PATH: MESSAGE``."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(CronplusError):
    """A crontab that cannot be loaded; ``issues`` holds every problem found, in file order."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = sorted(issues, key=lambda i: (i.line, i.column, i.path))
        super().__init__("\n".join(str(issue) for issue in self.issues))


class ScheduleError(CronplusError):
    """A cron expression that cannot be parsed, or that can never fire."""


class StateError(CronplusError):
    """The state database cannot be opened, read or written."""


class UsageError(CronplusError):
    """A command-line argument that makes no sense (a bad time, an unknown job)."""

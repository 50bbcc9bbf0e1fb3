"""The cronplus domain: jobs, policies, slots, run results and the errors that name them.

Values are frozen and keyword-only. Strings from the crontab become ``ZoneInfo``,
``timedelta`` and enums in ``config/loader.py``; everything here is already converted.

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

from cronplus.core.targets import Target


class Outcome(StrEnum):
    """How one attempt (or one slot that never became an attempt) ended."""

    SUCCEEDED = "succeeded"
    """The process exited with a code in ``success_codes``."""
    FAILED = "failed"
    """The process exited with another code, or could not be started at all."""
    TIMED_OUT = "timed_out"
    """The attempt ran past ``timeout``; its process group was terminated."""
    KILLED = "killed"
    """The process was ended by a signal that cronplus did not send for a timeout, or it
    hit one of its ``limits`` (the reason starts with the limit's name: ``memory: ...``)."""
    SKIPPED_OVERLAP = "skipped_overlap"
    """The slot came while the job's previous run was alive and ``overlap`` is ``forbid``."""
    MISSED = "missed"
    """The slot passed while the daemon was down or the host asleep, and catch-up skipped it."""
    INTERRUPTED = "interrupted"
    """The daemon stopped (or crashed) while the attempt was running."""
    FENCED = "fenced"
    """A cluster node lost the slot's lease while the attempt ran (it was paused, or cut
    off from the database, past its lease) and another node took the slot over: cronplus
    stopped the attempt here so the two do not run side by side."""

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


class Output(StrEnum):
    """What cronplus does with a job's output, beyond its failure lines' stderr tail."""

    LOG = "log"
    """Log each line as it comes (``job_output``), within ``output_log_limit`` a run, and
    keep each attempt's head and tail in history (``output_keep`` a stream)."""
    DISCARD = "discard"
    """Neither log nor keep it: ``>/dev/null``. A failed attempt's line still carries its
    stderr tail, as every failure line does."""


class OutputLevel(StrEnum):
    """The level a job's stderr lines are logged at (stdout's are always ``info``)."""

    INFO = "info"
    """As stdout's: many programs write progress and chatter to stderr."""
    WARNING = "warning"
    """For a job whose stderr only ever says something is wrong."""


class Trigger(StrEnum):
    """How a run started: what history and ``job_started`` lines say."""

    SCHEDULE = "schedule"
    """Its slot came while the daemon ran (within ``plan.ON_TIME`` of it)."""
    CATCHUP = "catchup"
    """A slot missed while the daemon was down, the host asleep or the clock stepped."""
    START = "start"
    """``@reboot``: the daemon started."""
    RUN = "run"
    """``cronplus run JOB``, in the command's own process."""
    DAEMON = "run --via-daemon"
    """``cronplus run JOB --via-daemon``: the daemon ran it on request."""
    RUN_ONCE = "run-once"
    """``cronplus run-once``: one scheduling pass."""
    TAKEOVER = "takeover"
    """A cluster node took over the slot of a node that died or was fenced."""


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
class Limits:
    """A job's ``limits:``; None is no limit. What each means: docs/running.md."""

    memory: int | None = None
    """Bytes: RLIMIT_DATA of each process, or the scope's ``MemoryMax=`` with ``cgroup``."""
    cpu_time: int | None = None
    """Whole CPU seconds of each process (RLIMIT_CPU): SIGXCPU, then SIGKILL a second later."""
    open_files: int | None = None
    """RLIMIT_NOFILE of each process."""
    processes: int | None = None
    """RLIMIT_NPROC: counts every process of the job's *user*; ``TasksMax=`` with ``cgroup``."""
    cpu_quota: float | None = None
    """Percent of one CPU for the whole scope (``CPUQuota=``); only with ``cgroup``."""
    cgroup: bool = False
    """Run the job in a transient systemd scope, so memory and tasks count the whole tree."""

    @property
    def any(self) -> bool:
        return self != Limits()


@dataclass(frozen=True, kw_only=True)
class Account:
    """The user a job runs as (``user:``, ``group:``), resolved when the crontab is loaded."""

    name: str
    uid: int
    gid: int
    """The primary group: ``group:``'s if given, else the user's own."""
    groups: tuple[int, ...]
    """Supplementary groups: the user's own (``os.getgrouplist``), never the daemon's."""
    home: str
    shell: str = "/bin/sh"
    """The login shell from the user database (a job's ``SHELL``)."""


# --- alerts, pings and metrics (docs/observability.md) -------------------------------


class AlertKind(StrEnum):
    """Why an alert is sent; each kind has its own list of notifiers on a job."""

    FAILURE = "failure"
    """A run ended failed, timed out or killed, with no retry left (``on_failure``)."""
    RETRY = "retry"
    """An attempt failed and a retry is scheduled (``on_retry``)."""
    MISSED = "missed"
    """Slots were skipped by ``overlap: forbid`` or missed while down (``on_missed``)."""
    RECOVERY = "recovery"
    """A run succeeded after the job's previous run had failed (``on_recovery``)."""
    NO_SUCCESS = "no_success"
    """No success for ``alert_if_no_success_for``; sent to the ``on_failure`` notifiers."""


class NotifierKind(StrEnum):
    """How a notifier delivers an alert."""

    COMMAND = "command"
    """Runs an argv with the alert in ``CRONPLUS_*`` environment variables."""
    WEBHOOK = "webhook"
    """POSTs the alert as JSON to a URL."""
    EMAIL = "email"
    """Mails the alert through ``settings.smtp``."""


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """How hard cronplus tries to deliver one alert or ping before it logs it as lost."""

    timeout: timedelta = timedelta(seconds=10)
    """Per try: a server that hangs costs no more than this."""
    retries: int = 2
    """Extra tries after a failed one."""
    retry_delay: timedelta = timedelta(seconds=5)
    """Before the first retry; doubled for each further one."""


@dataclass(frozen=True, kw_only=True)
class NotifierConfig:
    """One entry under ``notifiers:``: where alerts go, and how hard to try."""

    name: str
    kind: NotifierKind
    argv: tuple[str, ...] = ()
    """``command``: what is run."""
    url: str = field(default="", repr=False)  # a webhook URL often holds a token
    """``webhook``: where the JSON is POSTed."""
    to: tuple[str, ...] = ()
    """``email``: the recipients."""
    delivery: Delivery = Delivery()


class SmtpSecurity(StrEnum):
    """How the connection to the SMTP server is protected."""

    STARTTLS = "starttls"
    """Plain connect, then STARTTLS before anything else (port 587)."""
    TLS = "tls"
    """TLS from the first byte (port 465)."""
    NONE = "none"
    """No TLS at all: only for a relay on the same host."""


@dataclass(frozen=True, kw_only=True)
class SmtpSettings:
    """``settings.smtp``: the server ``email`` notifiers send through."""

    host: str
    port: int = 587
    security: SmtpSecurity = SmtpSecurity.STARTTLS
    sender: str
    """The ``From:`` address (``from`` in the file)."""
    username: str | None = None
    password_env: str | None = None
    """The name of the daemon's environment variable holding the password."""
    password_file: Path | None = None
    """A file whose content (less a final newline) is the password."""
    ca_file: Path | None = None
    """Trusted CA certificates (PEM) instead of the system's."""


@dataclass(frozen=True, kw_only=True)
class ListenAddress:
    """A TCP host and port to listen on (``settings.metrics``)."""

    host: str
    port: int


@dataclass(frozen=True, kw_only=True, slots=True)
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
    """Values that are secrets are ``secrets.Secret`` strings (``***`` in a repr)."""
    env_file: Path | None = None
    """Where some of ``env`` was read from when the crontab was loaded (all of it secret)."""
    inherit_env: tuple[str, ...] = ()
    """Names of the daemon's variables the job gets too, beside cron's small environment."""
    timeout: timedelta | None = None
    kill_grace: timedelta = timedelta(seconds=10)
    retry: RetryPolicy = RetryPolicy()
    success_codes: frozenset[int] = frozenset({0})
    overlap: Overlap = Overlap.FORBID
    catchup: Catchup = Catchup.LATEST
    catchup_window: timedelta | None = None
    jitter: timedelta = timedelta(0)
    enabled: bool = True
    limits: Limits = Limits()
    user: Account | None = None
    """Run as this user (the daemon must be root); None: as the daemon's own user."""
    group: str | None = None
    """The ``group:`` as written; ``user.gid`` already is its id."""
    run_on: frozenset[str] = frozenset()
    """Cluster tags: only nodes with one of them claim the job's slots (empty: any node)."""
    on_failure: tuple[str, ...] = ()
    """Notifier names for a failed run, and for ``alert_if_no_success_for``."""
    on_retry: tuple[str, ...] = ()
    on_missed: tuple[str, ...] = ()
    on_recovery: tuple[str, ...] = ()
    alert_if_no_success_for: timedelta | None = None
    """Alert once when no run succeeded for this long; a success re-arms it."""
    ping_url: str | None = field(default=None, repr=False)  # a secret: never logged
    """Healthchecks-style: ``/start`` before a run, success or ``/fail`` after."""
    output: Output = Output.LOG
    stderr_level: OutputLevel = OutputLevel.INFO
    output_limit: int = 64 * 1024
    """Bytes of each stream's head, and of its tail, held while an attempt runs."""
    output_log_limit: int = 64 * 1024
    """Bytes of output lines logged per run (all its attempts, both streams)."""
    output_keep: int = 16 * 1024
    """Bytes of each stream an attempt's history row keeps: half its head, half its tail."""
    priority: int = 0
    """Under ``max_concurrent``: waiting attempts of a higher priority start first."""
    target: Target | None = None
    """What the job sends instead of running ``command`` (``core/targets.py``)."""

    def notifiers(self, kind: AlertKind) -> tuple[str, ...]:
        """The notifier names an alert of ``kind`` goes to."""
        routes = {
            AlertKind.FAILURE: self.on_failure,
            AlertKind.RETRY: self.on_retry,
            AlertKind.MISSED: self.on_missed,
            AlertKind.RECOVERY: self.on_recovery,
            AlertKind.NO_SUCCESS: self.on_failure,
        }
        return routes[kind]

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
    cluster: ClusterSettings | None = None
    """Set: history, ledger and claims live in PostgreSQL, shared by every node."""
    metrics: ListenAddress | None = None
    """Where Prometheus metrics and ``/healthz`` are served; None: off."""
    smtp: SmtpSettings | None = None
    pings: Delivery = Delivery(retry_delay=timedelta(seconds=1))
    """How ``ping_url`` requests are tried."""


@dataclass(frozen=True, kw_only=True)
class ClusterSettings:
    """``settings.cluster``: this node's place in a cluster sharing one PostgreSQL database."""

    dsn: str = field(repr=False)  # may hold a password: never in a repr or a log line
    node: str
    tags: frozenset[str] = frozenset()
    lease: timedelta = timedelta(seconds=30)
    """How long a claim or a heartbeat holds without renewal (renewed every third of it)."""


@dataclass(frozen=True, kw_only=True)
class Crontab:
    """A whole, valid crontab file: settings and jobs in file order."""

    path: Path
    settings: Settings
    jobs: tuple[Job, ...]
    notifiers: Mapping[str, NotifierConfig] = field(default_factory=dict)
    modified: datetime | None = None
    """The file's modification time when it was read (None: not read from a file)."""

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
    stdout: str = ""
    """What history keeps of the attempt's stdout (``Job.output_keep``), secrets masked."""
    stderr: str = ""
    trigger: Trigger | None = None
    """How the run started; None in rows older than the column."""
    response: str = ""
    """What a target answered (``HTTP 503``, ``task SUCCESS``); empty for a process."""

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

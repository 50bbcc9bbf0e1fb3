"""The crontab file's pydantic models: ``CrontabFile`` and the blocks in it.

They are ``TypedDict``s, strict (a string is never coerced into a number) and closed (an
unknown key is an error); their names are the definition names in ``cronplus.schema.json``,
and their docstrings and field descriptions its text. ``config`` checks a file with them and
generates the schema from them.
"""

from __future__ import annotations

from typing import Annotated, Any, Required

from pydantic import ConfigDict, Field, PlainValidator, WithJsonSchema, with_config
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from cronplus.config.fields import (
    Address,
    Choice,
    Command,
    CpuTime,
    Dsn,
    Duration,
    EnvFile,
    EnvName,
    EnvValue,
    ExitCode,
    Expression,
    FilePath,
    Group,
    JobName,
    Lease,
    Limit,
    Listen,
    NotifierNames,
    Percent,
    Positive,
    Shell,
    Size,
    Tag,
    Url,
    User,
    Zone,
)
from cronplus.config.targetfields import KINDS, AmqpFile, CeleryFile, HttpFile, RqFile
from cronplus.core.model import Catchup, LogFormat, Output, OutputLevel, Overlap, SmtpSecurity
from cronplus.run import limits

OUTPUT_MAX = 64 << 20
"""The most any output size may be: what one job may make the daemon hold or log."""


def _output_size(value: object) -> int:
    try:
        return limits.parse_bytes(value, at_most=OUTPUT_MAX)
    except ValueError as error:
        raise PydanticCustomError("size", str(error)) from None


OutputSize = Annotated[
    int,
    PlainValidator(_output_size),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "pattern": limits.SIZE_PATTERN}, {"type": "integer"}]}
    ),
]


def _doc(text: str, default: object = None) -> Any:
    extra: Any = None if default is None else {"default": default}
    return Field(description=text, json_schema_extra=extra)


_STRICT = ConfigDict(strict=True, extra="forbid")


@with_config(_STRICT)
class ClusterFile(TypedDict, total=False):
    """Cluster mode: nodes share history, ledger and claims in one PostgreSQL database."""

    dsn: Required[Annotated[Dsn, _doc("PostgreSQL DSN, or {from_env: VAR} / {from_file: PATH}")]]
    node: Required[Annotated[JobName, _doc("This node's name, unique in the cluster")]]
    tags: Annotated[list[Tag], _doc("Jobs with run_on run only on nodes with such a tag", [])]
    lease: Annotated[Lease, _doc("A claim or heartbeat lapses after this without renewal", "30s")]


@with_config(_STRICT)
class DeliveryFile(TypedDict, total=False):
    """How hard an alert or a ping is tried."""

    timeout: Annotated[Positive, _doc("Per try", "10s")]
    retries: Annotated[int, Field(ge=0, le=10), _doc("Extra tries after a failed one", 2)]
    retry_delay: Annotated[Duration, _doc("Before the first retry; doubled after", "5s")]


@with_config(_STRICT)
class NotifierFile(DeliveryFile, total=False):
    """Where alerts go: exactly one of command, webhook or email."""

    command: Annotated[list[str], Field(min_length=1), _doc("argv; the alert is in CRONPLUS_*")]
    webhook: Annotated[Url, _doc("POST the alert as JSON to this URL")]
    email: Annotated[list[Address], Field(min_length=1), _doc("Mail it via settings.smtp")]


@with_config(_STRICT)
class SmtpFile(TypedDict, total=False):
    """The SMTP server email notifiers send through; the password never sits here."""

    host: Required[Annotated[Shell, _doc("The SMTP server's name or address")]]
    port: Annotated[int, Field(ge=1, le=65535), _doc("Default 587, 465 with security: tls")]
    security: Annotated[SmtpSecurity, Choice, _doc("starttls, tls or none", "starttls")]
    sender: Required[Annotated[Address, _doc("The From: address")]]
    username: Annotated[Shell, _doc("Log in as this user")]
    password_env: Annotated[Shell, _doc("The environment variable holding the password")]
    password_file: Annotated[FilePath, _doc("A file holding the password")]
    ca_file: Annotated[FilePath, _doc("PEM CA certificates to trust instead of the system's")]


@with_config(_STRICT)
class SettingsFile(TypedDict, total=False):
    """Daemon-wide settings; every key is optional."""

    state: Annotated[FilePath, _doc("SQLite ledger and history; default: XDG state folder")]
    max_concurrent: Annotated[
        int, Field(ge=1, le=100_000), _doc("Cap on running jobs; the rest wait", 16)
    ]
    log_format: Annotated[LogFormat, Choice, _doc("How the daemon logs to stderr", "text")]
    history_keep: Annotated[int, Field(ge=1, le=1_000_000), _doc("Run records kept per job", 1000)]
    shutdown_grace: Annotated[Duration, _doc("On stop: SIGTERM to jobs, SIGKILL after", "30s")]
    cluster: Annotated[ClusterFile, _doc("Run as one node of a cluster (docs/cluster.md)")]
    metrics: Annotated[Listen, _doc("HOST:PORT for /metrics and /healthz; off if absent")]
    smtp: Annotated[SmtpFile, _doc("The server email notifiers send through")]
    pings: Annotated[DeliveryFile, _doc("How ping_url requests are tried (retry_delay 1s)")]


@with_config(_STRICT)
class LimitsFile(TypedDict, total=False):
    """Resource limits of each process of a job, or of its whole scope with ``cgroup``."""

    memory: Annotated[Size, _doc("RLIMIT_DATA of each process, or MemoryMax= (512M, 2G)")]
    cpu_time: Annotated[CpuTime, _doc("CPU time of each process: SIGXCPU, then SIGKILL")]
    open_files: Annotated[int, Field(ge=1), _doc("RLIMIT_NOFILE of each process")]
    processes: Annotated[int, Field(ge=1), _doc("RLIMIT_NPROC (the user's, all), or TasksMax=")]
    cpu_quota: Annotated[Percent, _doc("CPUQuota= of the scope (50%, 200%); needs cgroup")]
    cgroup: Annotated[bool, _doc("Run in a transient systemd scope (systemd-run --scope)", False)]


@with_config(_STRICT)
class JobFields(TypedDict, total=False):
    """Every job field except schedule and command: what ``defaults:`` may hold."""

    timezone: Annotated[Zone, _doc("IANA zone; default: defaults.timezone, else the host's")]
    shell: Annotated[Shell, _doc("Runs a command given as a string", "/bin/sh")]
    workdir: Annotated[FilePath, _doc("Working folder; relative to the crontab's folder", ".")]
    env: Annotated[
        dict[EnvName, EnvValue] | None,
        _doc("The job's variables; {from_env: VAR} / {from_file: PATH} are secrets", {}),
    ]
    env_file: Annotated[EnvFile, _doc("NAME=VALUE lines, read at load; all of them secret")]
    inherit_env: Annotated[
        list[EnvName],
        _doc("The daemon's variables the job gets too, beside cron's small environment", []),
    ]
    timeout: Annotated[Limit, _doc("Per attempt; none for no limit", "none")]
    kill_grace: Annotated[Duration, _doc("On timeout: SIGTERM, then SIGKILL after", "10s")]
    retries: Annotated[int, Field(ge=0, le=1000), _doc("Extra attempts after a failed one", 0)]
    retry_delay: Annotated[Duration, _doc("Before the first retry", "30s")]
    retry_backoff: Annotated[
        float, Field(ge=1, le=100, allow_inf_nan=False), _doc("Per retry", 2.0)
    ]
    retry_max_delay: Annotated[Duration, _doc("Cap on the delay between retries", "10m")]
    success_codes: Annotated[list[ExitCode], Field(min_length=1), _doc("Exit codes", [0])]
    overlap: Annotated[Overlap, Choice, _doc("A slot comes while a run lives", "forbid")]
    catchup: Annotated[Catchup, Choice, _doc("Slots missed while down or asleep", "latest")]
    catchup_window: Annotated[Limit, _doc("Only slots newer than this catch up", "none")]
    jitter: Annotated[Duration, _doc("Random start delay in [0, jitter]", "0s")]
    enabled: Annotated[bool, _doc("false keeps the job but never runs it", True)]
    run_on: Annotated[list[Tag], Field(min_length=1), _doc("Cluster nodes with one of these tags")]
    on_failure: Annotated[NotifierNames, _doc("Notifiers for a failed run and no_success", [])]
    on_retry: Annotated[NotifierNames, _doc("Notifiers for each failed attempt retried", [])]
    on_missed: Annotated[NotifierNames, _doc("Notifiers for slots skipped or missed", [])]
    on_recovery: Annotated[NotifierNames, _doc("Notifiers for a success after a failure", [])]
    alert_if_no_success_for: Annotated[Limit, _doc("Dead-man alert period, once", "none")]
    ping_url: Annotated[Url, _doc("Healthchecks-style ping URL (a secret)")]
    output: Annotated[Output, Choice, _doc("log: log its lines and keep them; discard", "log")]
    stderr_level: Annotated[OutputLevel, Choice, _doc("Level of its stderr lines", "info")]
    output_limit: Annotated[
        OutputSize, _doc("Bytes of each stream's head and of its tail held per attempt", "64K")
    ]
    output_log_limit: Annotated[OutputSize, _doc("Bytes of output lines logged a run", "64K")]
    output_keep: Annotated[OutputSize, _doc("Bytes of each stream a history row keeps", "16K")]
    priority: Annotated[
        int,
        Field(ge=-1000, le=1000),
        _doc("Under max_concurrent, waiting attempts of higher priority start first", 0),
    ]
    limits: Annotated[LimitsFile, _doc("Resource limits of each process (docs/running.md)")]
    user: Annotated[User, _doc("Run as this user; the daemon must run as root")]
    group: Annotated[Group, _doc("With user: this primary group instead of the user's own")]


_ONE_TARGET: Any = {"oneOf": [{"required": [key]} for key in ("command", *KINDS)]}


@with_config(ConfigDict(strict=True, extra="forbid", json_schema_extra=_ONE_TARGET))
class JobFile(JobFields, total=False):
    """One job: a schedule, a command or one target (http, celery, rq, amqp), and any
    field that overrides ``defaults:``."""

    schedule: Required[Annotated[Expression, _doc("5 fields, 6 with seconds first, or @daily")]]
    command: Annotated[Command, _doc("A list is exec'd as argv; a string: shell -c")]
    http: Annotated[HttpFile, _doc("Call an HTTP endpoint instead (docs/targets.md)")]
    celery: Annotated[CeleryFile, _doc("Send a Celery task instead (the celery extra)")]
    rq: Annotated[RqFile, _doc("Enqueue an RQ job instead (the rq extra)")]
    amqp: Annotated[AmqpFile, _doc("Publish to RabbitMQ instead (the amqp extra)")]


@with_config(ConfigDict(strict=True, extra="forbid", title="cronplus crontab"))
class CrontabFile(TypedDict, total=False):
    """A cronplus crontab: daemon settings, defaults for every job, and the jobs by name."""

    settings: SettingsFile | None
    defaults: JobFields | None
    notifiers: Annotated[dict[JobName, NotifierFile] | None, _doc("Alert notifiers, by name")]
    jobs: Required[Annotated[dict[JobName, JobFile] | None, _doc("The jobs, by name")]]

"""The crontab file: YAML text in, a valid ``Crontab`` out, or every problem at once.

Four steps, each collecting its problems instead of stopping at the first:

1. bytes to text: UTF-8, or the line and column of the first bad byte (``yamlsource``);
2. text to plain values with the place of every key and value kept beside them
   (``yamlsource``), so a pydantic location such as ``("jobs", "backup", "retries")`` maps
   back to ``line:col``;
3. values to checked values: one pydantic ``TypeAdapter`` over the file models (strict: a
   string is never coerced into a number) and ``Schedule.parse`` for every job;
4. checked values to the frozen ``model.py`` types, with ``defaults:`` and the built-in
   defaults applied.

The same file models generate ``cronplus.schema.json`` (``python -m cronplus.config
--write-schema``); a test keeps the shipped file equal to what they generate.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import json
import math
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Required, cast
from zoneinfo import ZoneInfo, available_timezones

from pydantic import (
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    with_config,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from cronplus import accounts, alertconfig, limits, permissions, secrets
from cronplus.model import (
    Catchup,
    ClusterSettings,
    ConfigError,
    ConfigIssue,
    Crontab,
    Job,
    LogFormat,
    Overlap,
    RetryPolicy,
    ScheduleError,
    Settings,
    SmtpSecurity,
)
from cronplus.schedule import Schedule
from cronplus.yamlsource import Values, decode, describe, read_yaml

SCHEMA_PATH = Path(__file__).with_name("cronplus.schema.json")
"""The shipped JSON Schema; ``python -m cronplus.config --write-schema`` regenerates it."""

# --- durations, zones and words -------------------------------------------------------------

_NUMBER = r"\d+(?:\.\d+)?"
_DURATION = re.compile(
    rf"(?P<bare>{_NUMBER})|(?:(?P<d>{_NUMBER})d)?(?:(?P<h>{_NUMBER})h)?(?:(?P<m>{_NUMBER})m)?"
    rf"(?:(?P<s>{_NUMBER})s)?(?:(?P<ms>{_NUMBER})ms)?"
)
_SECONDS = {"bare": 1.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION_HINT = "a duration such as 90s, 5m, 1h30m, 2d, 500ms or a number of seconds"


def parse_duration(text: str | int | float) -> timedelta:
    """``90s``, ``5m``, ``1h30m``, ``2d``, ``500ms``, ``0.5s``, or a number of seconds."""
    seconds = math.nan
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = text
    elif isinstance(text, str) and (match := _DURATION.fullmatch(text.strip())) and text.strip():
        seconds = sum(float(n) * _SECONDS[unit] for unit, n in match.groupdict().items() if n)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected {_DURATION_HINT}, got {describe(text)}")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"duration {describe(text)} is too long") from None


def host_zone(env: Mapping[str, str]) -> ZoneInfo:
    """The host's zone: ``TZ`` (with or without a leading ``:``), else the zone
    ``/etc/localtime`` links to, else ``/etc/timezone``, else UTC.

    A ``TZ`` that names no zone (a POSIX rule such as ``EST5EDT,M3.2.0,M11.1.0``, a typo)
    is passed over like an unset one.
    """
    for text in _host_zone_keys(env):
        key = text.strip().removeprefix(":")
        key = key.rpartition("zoneinfo/")[2] if key.startswith(("/", ".")) else key
        if key:
            with contextlib.suppress(KeyError, ValueError, OSError):
                return ZoneInfo(key)
    return ZoneInfo("UTC")


def _host_zone_keys(env: Mapping[str, str]) -> Iterator[str]:
    """Each source only when the one before it named no zone."""
    yield env.get("TZ", "")
    with contextlib.suppress(OSError):
        yield os.readlink("/etc/localtime")
    with contextlib.suppress(OSError, UnicodeDecodeError):
        yield Path("/etc/timezone").read_text(encoding="utf-8")


_ZONE = "an IANA zone name such as Europe/Berlin"


def _zone(key: str) -> ZoneInfo:
    try:
        return ZoneInfo(key)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        names = _zone_names()
        close = difflib.get_close_matches(key, names, n=2, cutoff=0.8)
        close = close or [name for name in names if name.lower().endswith(f"/{key.lower()}")]
        hint = f"did you mean {_either(close)}?" if close else f"expected {_ZONE}"
        raise PydanticCustomError("zone", f"unknown time zone {key!r}; {hint}") from None


@cache
def _zone_names() -> list[str]:
    return sorted(available_timezones())


def _either(names: Sequence[str]) -> str:
    quoted = [f"'{name}'" for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


# --- the file models --------------------------------------------------------------------------


def _nonempty(value: object, what: str) -> str:
    if isinstance(value, str) and value.strip():
        return value
    got = "an empty string" if isinstance(value, str) else describe(value)
    raise PydanticCustomError("text_type", f"expected {what}, got {got}")


def _duration(value: Any) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as error:
        raise PydanticCustomError("duration", str(error)) from None


def _limit(value: Any) -> timedelta | None:
    if value == "none":
        return None
    try:
        limit = parse_duration(value)
    except ValueError:
        got = f"expected {_DURATION_HINT}, or none, got {describe(value)}"
        raise PydanticCustomError("duration", got) from None
    if limit <= timedelta(0):
        raise PydanticCustomError("duration", "expected a positive duration, or none for no limit")
    return limit


def _command(value: object) -> tuple[str, ...] | str:
    if isinstance(value, list) and value:
        for index, arg in enumerate(value):
            if not isinstance(arg, str):
                got = f"expected a string, got {describe(arg)}"
                raise PydanticCustomError("argv", got, {"index": index})
        return tuple(value)
    return _nonempty(value, "a non-empty list of strings (argv) or string (run by the shell)")


def _path(value: object, info: ValidationInfo) -> Path:
    """``~`` is HOME from the crontab's environment; relative means the crontab's folder."""
    text = _nonempty(value, "a path")
    env, folder = cast("tuple[Mapping[str, str], Path]", info.context)
    if text == "~" or text.startswith("~/"):
        if not env.get("HOME"):
            raise PydanticCustomError("path", "cannot expand '~': HOME is not set")
        text = env["HOME"] + text[1:]
    elif text.startswith("~"):
        raise PydanticCustomError("path", "only '~' and '~/...' are expanded, not '~user'")
    return Path(folder, text)


def _env_value(value: object, info: ValidationInfo) -> str:
    """A string, or a secret from ``{from_env: NAME}`` or ``{from_file: PATH}``."""
    if isinstance(value, str):
        return value
    if not isinstance(value, dict):
        raise PydanticCustomError("string_type", "expected a string")
    env, folder = cast("tuple[Mapping[str, str], Path]", info.context)
    try:
        return secrets.from_source(value, env=env, folder=folder)
    except ValueError as error:
        raise PydanticCustomError("env", str(error)) from None


def _env_file(value: object, info: ValidationInfo) -> secrets.EnvFile:
    try:
        return secrets.read_env_file(_path(value, info))
    except ValueError as error:
        raise PydanticCustomError("env_file", str(error)) from None


def _dsn(value: object, info: ValidationInfo) -> str:
    """A connection string, or where to find one (``from_env``, ``from_file``) so that the
    password need not sit in the crontab. Messages never echo a DSN: it may hold one."""
    env, folder = cast("tuple[Mapping[str, str], Path]", info.context)
    if isinstance(value, str) and value.strip():
        return value.strip()
    source = list(value.items()) if isinstance(value, dict) else []
    if len(source) == 1 and source[0][0] in ("from_env", "from_file"):
        key, name = source[0]
        if not isinstance(name, str) or not name.strip():
            raise PydanticCustomError("dsn", f"{key}: expected a non-empty string")
        return _dsn_from_env(env, name) if key == "from_env" else _dsn_from_file(folder, name)
    raise PydanticCustomError(
        "dsn", f"expected a PostgreSQL connection string, or a mapping {_DSN_SOURCES}"
    )


_DSN_SOURCES = "with one key, from_env: VARIABLE or from_file: PATH"


def _dsn_from_env(env: Mapping[str, str], name: str) -> str:
    if not env.get(name, "").strip():
        raise PydanticCustomError("dsn", f"the environment variable {name} is not set or empty")
    return env[name].strip()


def _dsn_from_file(folder: Path, name: str) -> str:
    path = Path(folder, name)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        why = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text"
        raise PydanticCustomError("dsn", f"cannot read {path}: {why}") from None
    if not text:
        raise PydanticCustomError("dsn", f"{path} is empty; expected a connection string")
    return text


def _lease(value: Any) -> timedelta:
    lease = _duration(value)
    if lease < timedelta(seconds=1):
        raise PydanticCustomError("duration", "expected a lease of at least 1s")
    return lease


def _text(what: str) -> Any:
    return PlainValidator(lambda value: _nonempty(value, what))


def _checked(kind: str, check: Any) -> Any:
    """A validator from a plain check that raises ``ValueError`` with the message."""

    def validate(value: object) -> Any:
        try:
            return check(value)
        except ValueError as error:
            raise PydanticCustomError(kind, str(error)) from None

    return PlainValidator(validate)


def _positive(value: Any) -> timedelta:
    amount = _duration(value)
    if amount <= timedelta(0):
        raise PydanticCustomError("duration", "expected a positive duration")
    return amount


def _doc(text: str, default: object = None) -> Any:
    extra: Any = None if default is None else {"default": default}
    return Field(description=text, json_schema_extra=extra)


_TEXT = WithJsonSchema({"type": "string", "minLength": 1})
_PATTERN = re.sub(r"\?P<\w+>", "", _DURATION.pattern)  # JSON Schema has no (?P<name>)
_AMOUNTS = [
    {"type": "string", "minLength": 1, "pattern": f"^(?:{_PATTERN})$"},
    {"type": "number", "minimum": 0},
]
_ARGV = {"type": "array", "items": {"type": "string"}, "minItems": 1}
Duration = Annotated[timedelta, PlainValidator(_duration), WithJsonSchema({"anyOf": _AMOUNTS})]
Limit = Annotated[
    timedelta | None,
    PlainValidator(_limit),
    WithJsonSchema({"anyOf": [*_AMOUNTS, {"const": "none"}]}),
]
FilePath = Annotated[Path, PlainValidator(_path), _TEXT]
Zone = Annotated[ZoneInfo, PlainValidator(lambda value: _zone(_nonempty(value, _ZONE))), _TEXT]
Command = Annotated[
    tuple[str, ...] | str,
    PlainValidator(_command),
    WithJsonSchema({"anyOf": [_ARGV, {"type": "string", "minLength": 1}]}),
]
Expression = Annotated[str, _text('a cron expression such as "0 3 * * *"'), _TEXT]
Shell = Annotated[str, _text("a shell such as /bin/sh"), _TEXT]
JobName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
Tag = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
Dsn = Annotated[
    str,
    PlainValidator(_dsn),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1},
                *(
                    {
                        "type": "object",
                        "properties": {key: {"type": "string", "minLength": 1}},
                        "required": [key],
                        "additionalProperties": False,
                    }
                    for key in ("from_env", "from_file")
                ),
            ]
        }
    ),
]
Lease = Annotated[timedelta, PlainValidator(_lease), WithJsonSchema({"anyOf": _AMOUNTS})]
Url = Annotated[str, _checked("url", alertconfig.url), WithJsonSchema({"type": "string"})]
Address = Annotated[str, _checked("address", alertconfig.mail_address), _TEXT]
Listen = Annotated[
    Any,
    _checked("listen", alertconfig.listen_address),
    WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]}),
]
Positive = Annotated[timedelta, PlainValidator(_positive), WithJsonSchema({"anyOf": _AMOUNTS})]
NotifierNames = list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]]
EnvName = Annotated[str, Field(pattern=r"^[^=\x00]+$")]
_SOURCE_SCHEMAS = [
    {
        "type": "object",
        "properties": {key: {"type": "string", "minLength": 1}},
        "required": [key],
        "additionalProperties": False,
    }
    for key in secrets.SOURCES
]
EnvValue = Annotated[
    str,
    PlainValidator(_env_value),
    WithJsonSchema({"anyOf": [{"type": "string"}, *_SOURCE_SCHEMAS]}),
]
EnvFile = Annotated[secrets.EnvFile, PlainValidator(_env_file), _TEXT]
User = Annotated[
    Any, _checked("user", lambda value: accounts.lookup_user(value, euid=os.geteuid())), _TEXT
]
Group = Annotated[Any, _checked("group", accounts.lookup_group), _TEXT]
Size = Annotated[
    int,
    _checked("size", limits.parse_size),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "pattern": limits.SIZE_PATTERN}, {"type": "integer"}]}
    ),
]
CpuTime = Annotated[
    int,
    _checked("duration", lambda value: limits.parse_cpu_time(_duration(value).total_seconds())),
    WithJsonSchema({"anyOf": _AMOUNTS}),
]
Percent = Annotated[
    float,
    _checked("percent", limits.parse_percent),
    WithJsonSchema({"type": "string", "pattern": limits.PERCENT_PATTERN}),
]
ExitCode = Annotated[int, Field(ge=0, le=255)]
Choice = Strict(False)  # enums arrive as strings; lax mode matches them by value, nothing else
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
    max_concurrent: Annotated[int, Field(ge=1), _doc("Cap on running jobs; the rest wait", 16)]
    log_format: Annotated[LogFormat, Choice, _doc("How the daemon logs to stderr", "text")]
    history_keep: Annotated[int, Field(ge=1), _doc("Run records kept per job", 1000)]
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
        _doc("Added to the daemon's environment; {from_env: VAR} / {from_file: PATH}", {}),
    ]
    env_file: Annotated[EnvFile, _doc("NAME=VALUE lines, read at load; all of them secret")]
    timeout: Annotated[Limit, _doc("Per attempt; none for no limit", "none")]
    kill_grace: Annotated[Duration, _doc("On timeout: SIGTERM, then SIGKILL after", "10s")]
    retries: Annotated[int, Field(ge=0), _doc("Extra attempts after a failed one", 0)]
    retry_delay: Annotated[Duration, _doc("Before the first retry", "30s")]
    retry_backoff: Annotated[float, Field(ge=1, allow_inf_nan=False), _doc("Per retry", 2.0)]
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
    limits: Annotated[LimitsFile, _doc("Resource limits of each process (docs/running.md)")]
    user: Annotated[User, _doc("Run as this user; the daemon must run as root")]
    group: Annotated[Group, _doc("With user: this primary group instead of the user's own")]


@with_config(_STRICT)
class JobFile(JobFields, total=False):
    """One job: a schedule, a command, and any field that overrides ``defaults:``."""

    schedule: Required[Annotated[Expression, _doc("5 fields, 6 with seconds first, or @daily")]]
    command: Required[Annotated[Command, _doc("A list is exec'd as argv; a string: shell -c")]]


@with_config(ConfigDict(strict=True, extra="forbid", title="cronplus crontab"))
class CrontabFile(TypedDict, total=False):
    """A cronplus crontab: daemon settings, defaults for every job, and the jobs by name."""

    settings: SettingsFile | None
    defaults: JobFields | None
    notifiers: Annotated[dict[JobName, NotifierFile] | None, _doc("Alert notifiers, by name")]
    jobs: Required[Annotated[dict[JobName, JobFile] | None, _doc("The jobs, by name")]]


_ADAPTER: TypeAdapter[CrontabFile] = TypeAdapter(CrontabFile)
_OWNERS: dict[str, Any] = {"settings": SettingsFile, "defaults": JobFields, "jobs": JobFile}
_OWNERS["notifiers"] = NotifierFile
_BLOCKS: dict[tuple[str, ...], Any] = {("settings", "smtp"): SmtpFile}
_BLOCKS[("settings", "pings")] = DeliveryFile
_NEEDS = {
    "jobs": "a mapping of job names to jobs",
    "schedule": 'a cron expression such as "0 3 * * *"',
    "command": "a list of strings (argv) or a string (run by the shell)",
    "dsn": "a PostgreSQL connection string, or from_env: VARIABLE or from_file: PATH",
    "node": "this node's name, unique in the cluster",
}
_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "greater_than_equal": "{number} >= {ge}",
    "less_than_equal": "{number} <= {le}",
    "finite_number": "a finite number",
    "too_short": "at least one item",
    "string_pattern_mismatch": "a name of letters, digits, '_', '.' and '-'",
}


# --- pydantic's findings, back at their places ----------------------------------------------


def _report(values: Values, error: ErrorDetails) -> None:
    loc, kind = tuple(error["loc"]), error["type"]
    if kind == "argv":  # point at the argument itself, not at the whole command
        loc = (*loc, error.get("ctx", {})["index"])
    key_mark, mark, text = values.place(loc)
    if values.explained(mark):
        return  # reported while reading, with the reason
    if kind == "missing":
        key_mark, mark, _ = values.place(loc[:-1])
        need = f"missing key '{loc[-1]}': expected {_NEEDS.get(str(loc[-1]), 'a value')}"
        values.issue(key_mark or mark, loc[:-1], need)
    elif kind == "extra_forbidden":
        values.issue(key_mark, loc, _unknown_key(loc))
    elif loc[-1:] == ("[key]",):
        key_mark, loc = values.place(loc[:-1])[0], loc[:-1]
        what, allowed = ("job name", "letters, digits, '_', '.' and '-'")
        if len(loc) > 2:
            what, allowed = ("environment variable name", "no '=' and no NUL")
        values.issue(key_mark, loc, f"{what} {loc[-1]!r}: expected {allowed}")
    else:
        values.issue(mark, loc, _message(error, kind, loc, text))


def _unknown_key(loc: Sequence[Any]) -> str:
    owner = _OWNERS.get(str(loc[0]), CrontabFile) if len(loc) > 1 else CrontabFile
    if tuple(loc[:2]) == ("settings", "cluster") and len(loc) > 2:
        owner = ClusterFile
    owner = _BLOCKS.get(tuple(loc[:2]), owner) if len(loc) > 2 else owner
    if len(loc) == (3 if loc[0] == "defaults" else 4) and loc[-2] == "limits":
        owner = LimitsFile
    key, allowed = str(loc[-1]), sorted(owner.__required_keys__ | owner.__optional_keys__)
    if owner is JobFields and key in ("schedule", "command"):
        return f"unknown key {key!r}: defaults hold every job field except schedule and command"
    close = difflib.get_close_matches(key, allowed, n=3, cutoff=0.6)
    # A shared beginning beats a shared ending: 'retry' means 'retries', not 'on_retry'.
    close.sort(key=lambda name: not name.startswith(key[:3]))
    hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(allowed)}"
    return f"unknown key {key!r}, {hint}"


def _message(error: ErrorDetails, kind: str, loc: Sequence[Any], text: str | None) -> str:
    ctx, value = error.get("ctx") or {}, error["input"]
    value = value[ctx["index"]] if kind == "argv" else value
    if not loc and kind == "dict_type":
        return f"expected a mapping with a 'jobs' key at the top level, got {describe(value)}"
    if kind in _EXPECTED:
        number = "an integer" if isinstance(ctx.get("ge", ctx.get("le")), int) else "a number"
        message = f"expected {_EXPECTED[kind].format(number=number, **ctx)}, got {describe(value)}"
    elif kind == "enum":
        names = ", ".join(re.findall(r"'([^']*)'", ctx["expected"]))
        message = f"expected one of {names}, got {describe(value)}"
    else:
        message = error["msg"]
    if text is None or kind not in ("string_type", "text_type", "argv"):
        return message
    return f'{message}; quote it: "{text}"'


# --- checking and converting ----------------------------------------------------------------


def _check_schedules(values: Values, env: Mapping[str, str]) -> None:
    """Parse every job's schedule in its zone, on the raw values, beside pydantic's checks."""
    root = values.root if isinstance(values.root, dict) else {}
    defaults, jobs = root.get("defaults"), root.get("jobs")
    default_zone = defaults.get("timezone") if isinstance(defaults, dict) else None
    for name, raw in jobs.items() if isinstance(jobs, dict) else ():
        job = raw if isinstance(raw, dict) else {}
        expression, zone = job.get("schedule"), job.get("timezone", default_zone)
        if not isinstance(expression, str) or not expression.strip():
            continue  # pydantic reports it
        try:
            zone = host_zone(env) if zone is None else ZoneInfo(zone)
        except (KeyError, ValueError, OSError, TypeError):
            zone = ZoneInfo("UTC")  # pydantic reports the zone; the expression is still checked
        try:
            Schedule.for_job(expression, zone=zone, job_name=name)
        except ScheduleError as error:
            loc = ("jobs", name, "schedule")
            values.issue(values.place(loc)[1], loc, str(error))


def _check_run_on(values: Values) -> None:
    """Tags name the nodes of a cluster: without ``settings.cluster`` no node has any."""
    root = values.root if isinstance(values.root, dict) else {}
    settings, jobs = root.get("settings"), root.get("jobs")
    if isinstance(settings, dict) and "cluster" in settings:
        return
    names = jobs if isinstance(jobs, dict) else {}
    places = [("defaults", "run_on")] + [("jobs", name, "run_on") for name in names]
    why = "run_on needs settings.cluster: its tags name the nodes of a cluster"
    for loc in places:
        if _has(root, loc):
            values.issue(values.place(loc)[0], loc, why)


def _check_alerts(values: Values) -> None:
    """Notifier names, kinds and the settings they need (``alertconfig.cross_check``)."""
    root = values.root if isinstance(values.root, dict) else {}
    for finding in alertconfig.cross_check(root):
        key_mark, mark, _ = values.place(finding.loc)
        values.issue((key_mark if finding.at_key else mark) or mark, finding.loc, finding.message)


def _check_containment(values: Values, env: Mapping[str, str]) -> None:
    """Rules between ``limits``, ``user``, ``group`` and the host (``limits.cross_problems``);
    a problem in ``defaults`` is reported once, not once per job."""
    root = values.root if isinstance(values.root, dict) else {}
    defaults, jobs = root.get("defaults"), root.get("jobs")
    defaults = defaults if isinstance(defaults, dict) else {}
    found: dict[tuple[tuple[str, ...], str], None] = {}
    for name, raw in jobs.items() if isinstance(jobs, dict) else ():
        job = raw if isinstance(raw, dict) else {}
        for problem in limits.cross_problems(name, defaults, job, euid=os.geteuid(), env=env):
            found[problem] = None
    for loc, message in found:
        values.issue(values.place(loc)[0], loc, message)


def _hide_secrets(values: Values) -> list[ConfigIssue]:
    """The issues, with the values of secret-looking ``env`` names as ``***``."""
    hidden = {
        ".".join(loc): [str(value), values.place(loc)[2] or ""]
        for loc, value in secrets.env_places(values.root)
    }
    return secrets.hide_in_issues(values.issues, hidden)


def _has(root: dict[str, Any], loc: tuple[str, ...]) -> bool:
    container: Any = root
    for step in loc:
        if not isinstance(container, dict) or step not in container:
            return False
        container = container[step]
    return True


def _default_state(env: Mapping[str, str]) -> Path | None:
    """XDG's: ``$XDG_STATE_HOME`` if it is absolute (the spec ignores it otherwise), else
    ``$HOME/.local/state``."""
    xdg, home = env.get("XDG_STATE_HOME", ""), env.get("HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path(home, ".local", "state") if home else None
    return None if base is None else base / "cronplus" / "state.db"


_RETRY = {"retries": "retries", "retry_delay": "delay", "retry_backoff": "backoff"}
_RETRY["retry_max_delay"] = "max_delay"


def _crontab(file: CrontabFile, path: Path, folder: Path, env: Mapping[str, str]) -> Crontab:
    settings: dict[str, Any] = {"state": _default_state(env), **(file.get("settings") or {})}
    if settings["state"] is None:
        why = "no default, as neither XDG_STATE_HOME nor HOME is set; set it"
        raise ConfigError([ConfigIssue(str(path), 1, 1, "settings.state", why)])
    defaults: dict[str, Any] = dict(file.get("defaults") or {})
    jobs = file.get("jobs") or {}
    if "timezone" not in defaults and any("timezone" not in job for job in jobs.values()):
        defaults["timezone"] = host_zone(env)
    if "cluster" in settings:
        cluster = dict(settings["cluster"])
        cluster["tags"] = frozenset(cluster.get("tags", ()))
        settings["cluster"] = ClusterSettings(**cluster)
    if "smtp" in settings:
        settings["smtp"] = alertconfig.smtp(settings["smtp"])
    settings["pings"] = alertconfig.delivery(settings.get("pings", {}), alertconfig.PING_DELIVERY)
    shared: dict[tuple[type, object], Any] = {}
    return Crontab(
        path=path,
        settings=Settings(**settings),
        jobs=tuple(_job(name, dict(job), defaults, folder, shared) for name, job in jobs.items()),
        notifiers=alertconfig.notifiers(file.get("notifiers") or {}),
    )


def _job(
    name: str,
    job: dict[str, Any],
    defaults: dict[str, Any],
    folder: Path,
    shared: dict[tuple[type, object], Any],
) -> Job:
    """The job's own value wins over ``defaults:``; ``env`` maps merge, the job's keys win.

    Equal values in ``_SHARED`` fields are one object across the jobs (``shared``): 10,000
    jobs hold a few dozen schedules, commands and policies, not 10,000 of each.
    """
    fields = {"workdir": folder, **defaults, **job}
    env_file: secrets.EnvFile | None = fields.get("env_file")
    fields["env"] = secrets.job_env(env_file, defaults.get("env"), job.get("env"))
    fields["env_file"] = env_file.path if env_file else None
    fields["limits"] = limits.merged(defaults.get("limits"), job.get("limits"))
    fields["user"], fields["group"] = accounts.job_user(fields.get("user"), fields.get("group"))
    retry = RetryPolicy(**{_RETRY[key]: fields.pop(key) for key in _RETRY if key in fields})
    if "success_codes" in fields:
        fields["success_codes"] = frozenset(fields["success_codes"])
    if "run_on" in fields:
        fields["run_on"] = frozenset(fields["run_on"])
    alertconfig.job_fields(fields)
    for key in _SHARED.intersection(fields):
        fields[key] = shared.setdefault((type(fields[key]), fields[key]), fields[key])
    retry = shared.setdefault((RetryPolicy, retry), retry)
    return Job(name=name, retry=retry, **fields)


_SHARED = frozenset({"schedule", "command", "limits", "success_codes", "timeout"})
"""Job fields whose values many jobs repeat (all hashable)."""


# --- the public surface -------------------------------------------------------------------


def load(path: Path, *, env: Mapping[str, str] | None = None) -> Crontab:
    """Read and check the crontab at ``path``; ``env`` defaults to the process environment."""
    if (why := permissions.refusal(path, euid=os.geteuid())) is not None:
        raise ConfigError([ConfigIssue(str(path), 1, 1, "", f"refusing to load as root: {why}")])
    try:
        data = path.read_bytes()
    except OSError as error:
        why = "it is a directory; expected a YAML file" if path.is_dir() else error.strerror
        raise ConfigError([ConfigIssue(str(path), 1, 1, "", f"cannot read: {why}")]) from None
    return loads(data, path=path, env=os.environ if env is None else env)


def loads(text: str | bytes, *, path: Path, env: Mapping[str, str]) -> Crontab:
    """Check crontab text; ``path`` names it in messages and anchors its relative paths."""
    file, folder = str(path), Path(os.path.abspath(path)).parent
    with _gc_paused():
        values = read_yaml(decode(text, file) if isinstance(text, bytes) else text, file)
        checked = None
        if values.root is not None or not values.issues:
            try:
                checked = _ADAPTER.validate_python(values.root, context=(env, folder))
            except ValidationError as error:
                for details in error.errors(include_url=False):
                    _report(values, details)
            _check_schedules(values, env)
            _check_run_on(values)
            _check_alerts(values)
            _check_containment(values, env)
        if values.issues or checked is None:
            raise ConfigError(_hide_secrets(values))
        return _crontab(checked, path, folder, env)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """A big crontab allocates containers by the hundred thousand, which sets off the cyclic
    collector dozens of times (a third of the load time) to find nothing: the values built
    here hold no cycles, as an alias into its own anchor is refused."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def schema() -> dict[str, object]:
    """The draft-07 JSON Schema of a crontab, generated from the file models."""
    generated = _draft07(_ADAPTER.json_schema())
    return {"$schema": "http://json-schema.org/draft-07/schema#", **generated}


def schema_text() -> str:
    """``schema()`` exactly as the shipped ``cronplus.schema.json`` holds it."""
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"


def _draft07(node: Any) -> Any:
    """pydantic writes draft 2020-12: ``$defs``, and keywords beside a ``$ref``, which
    draft-07 ignores, so those go into an ``allOf``. A key pattern also closes its mapping."""
    if isinstance(node, list):
        return [_draft07(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {("definitions" if key == "$defs" else key): _draft07(v) for key, v in node.items()}
    if "patternProperties" in out:
        out.setdefault("additionalProperties", False)
    if "$ref" in out:
        ref = {"$ref": out.pop("$ref").replace("#/$defs/", "#/definitions/")}
        out = {"allOf": [ref], **out} if out else ref
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cronplus.config --write-schema``, or ``--check-schema`` (exit 1 if stale)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--write-schema"]:
        SCHEMA_PATH.write_text(schema_text(), encoding="utf-8")
        sys.stdout.write(f"wrote {SCHEMA_PATH}\n")
        return 0
    if args == ["--check-schema"]:
        shipped = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
        return 0 if shipped == schema_text() else 1
    sys.stderr.write("usage: python -m cronplus.config --write-schema | --check-schema\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""The crontab file: YAML text in, a valid ``Crontab`` out, or every problem at once.

Four steps, each collecting its problems instead of stopping at the first:

1. bytes to text: UTF-8, or the line and column of the first bad byte;
2. text to plain values, built from PyYAML's event stream with the place of every key and
   value kept beside them, so a pydantic location such as ``("jobs", "backup", "retries")``
   maps back to ``line:col``;
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
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Required, cast
from zoneinfo import ZoneInfo, available_timezones

import yaml
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

from cronplus.model import (
    Catchup,
    ConfigError,
    ConfigIssue,
    Crontab,
    Job,
    LogFormat,
    Overlap,
    RetryPolicy,
    ScheduleError,
    Settings,
)
from cronplus.schedule import Schedule

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
        raise ValueError(f"expected {_DURATION_HINT}, got {_describe(text)}")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"duration {_describe(text)} is too long") from None


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


def _describe(value: object) -> str:
    """What YAML made of a value, for ``got ...`` in a message."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the {'integer' if isinstance(value, int) else 'number'} {value}"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, date):
        return f"the date {value.isoformat()}"
    kinds: dict[type, str] = {list: "a list", dict: "a mapping", bytes: "binary data"}
    kind = kinds.get(type(value), type(value).__name__)
    return kind.replace("a ", "an empty ", 1) if value in ([], {}) else kind


def _either(names: Sequence[str]) -> str:
    quoted = [f"'{name}'" for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


# --- the file models --------------------------------------------------------------------------


def _nonempty(value: object, what: str) -> str:
    if isinstance(value, str) and value.strip():
        return value
    got = "an empty string" if isinstance(value, str) else _describe(value)
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
        got = f"expected {_DURATION_HINT}, or none, got {_describe(value)}"
        raise PydanticCustomError("duration", got) from None
    if limit <= timedelta(0):
        raise PydanticCustomError("duration", "expected a positive duration, or none for no limit")
    return limit


def _command(value: object) -> tuple[str, ...] | str:
    if isinstance(value, list) and value:
        for index, arg in enumerate(value):
            if not isinstance(arg, str):
                got = f"expected a string, got {_describe(arg)}"
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


def _text(what: str) -> Any:
    return PlainValidator(lambda value: _nonempty(value, what))


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
EnvName = Annotated[str, Field(pattern=r"^[^=\x00]+$")]
ExitCode = Annotated[int, Field(ge=0, le=255)]
Choice = Strict(False)  # enums arrive as strings; lax mode matches them by value, nothing else
_STRICT = ConfigDict(strict=True, extra="forbid")


@with_config(_STRICT)
class SettingsFile(TypedDict, total=False):
    """Daemon-wide settings; every key is optional."""

    state: Annotated[FilePath, _doc("SQLite ledger and history; default: XDG state folder")]
    max_concurrent: Annotated[int, Field(ge=1), _doc("Cap on running jobs; the rest wait", 16)]
    log_format: Annotated[LogFormat, Choice, _doc("How the daemon logs to stderr", "text")]
    history_keep: Annotated[int, Field(ge=1), _doc("Run records kept per job", 1000)]
    shutdown_grace: Annotated[Duration, _doc("On stop: SIGTERM to jobs, SIGKILL after", "30s")]


@with_config(_STRICT)
class JobFields(TypedDict, total=False):
    """Every job field except schedule and command: what ``defaults:`` may hold."""

    timezone: Annotated[Zone, _doc("IANA zone; default: defaults.timezone, else the host's")]
    shell: Annotated[Shell, _doc("Runs a command given as a string", "/bin/sh")]
    workdir: Annotated[FilePath, _doc("Working folder; relative to the crontab's folder", ".")]
    env: Annotated[dict[EnvName, str] | None, _doc("Added to the daemon's environment", {})]
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
    jobs: Required[Annotated[dict[JobName, JobFile] | None, _doc("The jobs, by name")]]


_ADAPTER: TypeAdapter[CrontabFile] = TypeAdapter(CrontabFile)
_OWNERS: dict[str, Any] = {"settings": SettingsFile, "defaults": JobFields, "jobs": JobFile}
_NEEDS = {
    "jobs": "a mapping of job names to jobs",
    "schedule": 'a cron expression such as "0 3 * * *"',
    "command": "a list of strings (argv) or a string (run by the shell)",
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
}

# --- YAML to values ---------------------------------------------------------------------------

_Place = tuple[Any, Any, str | None]
"""A key's mark, its value's mark, and the source text of a plain scalar that YAML 1.1 did
not read as a string (``2:30``, ``yes``), for the "quote it" hints."""

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOLVER: Any = yaml.resolver.Resolver()
_RESOLVED_FIRST = frozenset(k for k in yaml.resolver.Resolver.yaml_implicit_resolvers if k)
_STR = "tag:yaml.org,2002:str"
_MERGE, _SKIP = object(), object()  # a plain "<<" key, a key to drop
_UNQUOTED = {
    "*": "YAML reads a leading '*' as an alias",
    "@": "YAML reserves a leading '@'",
    "`": "YAML reserves a leading '`'",
}


class _Frame:
    """A mapping or list being built; ``key`` is None while a mapping waits for one."""

    __slots__ = ("anchor", "as_key", "key", "key_mark", "mark", "merges", "path", "places", "value")

    def __init__(self, value: Any, path: tuple[Any, ...], event: Any, as_key: bool) -> None:
        self.value, self.path, self.anchor, self.mark = value, path, event.anchor, event.start_mark
        self.as_key, self.key_mark = as_key, None
        self.key: Any = None
        self.places: dict[Any, _Place] = {}
        self.merges: list[tuple[Any, Any]] = []


class _Values:
    """Plain values built from YAML events, with the place of every key and value.

    Built from events, not from a composed node tree: composing costs twice as much (0.9 s
    against 0.4 s for 10,000 jobs with libyaml), and the events carry every mark.
    """

    def __init__(self, file: str, quoted: dict[tuple[int, int], str]) -> None:
        self.file, self.quoted = file, quoted
        self.issues: list[ConfigIssue] = []
        self.places: dict[int, tuple[Any, dict[Any, _Place]]] = {}
        self.root: Any = None
        self.root_mark: Any = None
        self.documents = 0
        self.base60: set[tuple[int, int]] = set()  # places of 2:30-style numbers, reported
        self._anchors: dict[str, tuple[Any, str | None]] = {}
        self._stack: list[_Frame] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def issue(self, mark: Any, path: Sequence[Any], message: str) -> None:
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
        self.issues.append(ConfigIssue(self.file, line, column, where.lstrip("."), message))

    def build(self, text: str) -> None:
        handlers = {
            yaml.ScalarEvent: self._scalar,
            yaml.AliasEvent: self._alias,
            yaml.MappingStartEvent: self._start,
            yaml.SequenceStartEvent: self._start,
            yaml.MappingEndEvent: self._end,
            yaml.SequenceEndEvent: self._end,
        }
        loader = _LOADER(text)
        try:
            while not isinstance(event := loader.get_event(), yaml.StreamEndEvent):
                if (handler := handlers.get(type(event))) is not None:
                    handler(event)
                elif isinstance(event, yaml.DocumentStartEvent):
                    self.documents += 1
                    if self.documents > 1:
                        self.issue(event.start_mark, (), "expected one YAML document, found two")
                        break
        finally:
            loader.dispose()

    def _waiting(self) -> _Frame | None:
        """The mapping whose next scalar is a key, if that is what comes next."""
        top = self._stack[-1] if self._stack else None
        return top if top is not None and top.key is None and type(top.value) is dict else None

    def _here(self) -> tuple[Any, ...]:
        if not self._stack:
            return ()
        top = self._stack[-1]
        return (*top.path, len(top.value) if isinstance(top.value, list) else top.key)

    def _scalar(self, event: Any) -> None:
        if (top := self._waiting()) is not None:
            merge = event.value == "<<" and event.implicit[0]
            self._key(top, _MERGE if merge else event.value, event.start_mark)
            return
        if (spot := (event.start_mark.line, event.start_mark.column)) in self.quoted:
            here = self._here()
            self.issue(event.start_mark, here, f"{here[-1]} {self.quoted.pop(spot)}")
        value, text = self._construct(event)
        if event.anchor:
            self._anchors[event.anchor] = (value, text)
        self._put(value, event.start_mark, text)

    def _construct(self, event: Any) -> tuple[Any, str | None]:
        """YAML 1.1 as PyYAML reads it: plain ``2:30`` is 150, ``yes`` is true."""
        value, plain, tag = event.value, event.implicit[0], event.tag
        if tag is None or tag == "!":
            if not plain or (value and value[0] not in _RESOLVED_FIRST):
                return value, None
            tag = _RESOLVER.resolve(yaml.ScalarNode, value, event.implicit)
        make = self._constructor.yaml_constructors.get(tag)
        if tag == _STR or (make is None and plain):
            return value, None
        try:
            if make is None:
                raise ValueError(f"unsupported YAML tag {tag!r}")
            node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark)
            result = make(self._constructor, node)
        except (TypeError, ValueError, yaml.YAMLError) as error:
            why = error.args[0] if make is None else f"cannot read {value!r} as {tag}"
            self.issue(event.start_mark, self._here(), why)
            return value, None
        if plain and ":" in value and isinstance(result, int | float):
            self._sexagesimal(event.start_mark, value, result)
        return result, value if plain and value else None  # an empty value needs no quotes

    def _sexagesimal(self, mark: Any, text: str, value: float) -> None:
        """YAML 1.1 reads ``2:30`` as 150; no crontab field wants that, so it is an error."""
        here = self._here()
        what = here[-1] if here and isinstance(here[-1], str) else "this value"
        kind = "integer" if isinstance(value, int) else "number"
        why = f"must be quoted: YAML 1.1 reads unquoted {text} as the base-60 {kind} {value}"
        self.issue(mark, here, f"{what} {why}")
        self.base60.add((mark.line, mark.column))

    def _key(self, top: _Frame, key: Any, mark: Any) -> None:
        if key is not _MERGE and not isinstance(key, str):
            self.issue(mark, top.path, f"expected a name as key, got {_describe(key)}")
            key = _SKIP
        elif isinstance(key, str) and (first := top.places.get(key)) is not None:
            what = "job name" if top.path == ("jobs",) else "key"
            at = f"line {first[0].line + 1}, column {first[0].column + 1}"
            self.issue(mark, (*top.path, key), f"duplicate {what} {key!r}: first given at {at}")
        top.key, top.key_mark = key, mark

    def _put(self, value: Any, mark: Any, text: str | None) -> None:
        if not self._stack:
            self.root, self.root_mark = value, mark
            return
        top = self._stack[-1]
        if isinstance(top.value, list):
            top.places[len(top.value)] = (None, mark, text)
            top.value.append(value)
            return
        if top.key is _MERGE:
            top.merges.append((value, mark))
        elif top.key is not _SKIP:
            top.value[top.key] = value
            top.places[top.key] = (top.key_mark, mark, text)
        top.key = None

    def _start(self, event: Any) -> None:
        value: Any = {} if isinstance(event, yaml.MappingStartEvent) else []
        frame = _Frame(value, self._here(), event, as_key=self._waiting() is not None)
        self.places[id(value)] = (value, frame.places)  # keeps ids unique while loading
        self._stack.append(frame)

    def _end(self, _event: Any) -> None:
        frame = self._stack.pop()
        for source, mark in frame.merges:
            self._merge(frame, source, mark)
        if frame.anchor:
            self._anchors[frame.anchor] = (frame.value, None)
        if frame.as_key:
            self._key(self._stack[-1], frame.value, frame.mark)
        else:
            self._put(frame.value, frame.mark, None)

    def _merge(self, frame: _Frame, source: Any, mark: Any) -> None:
        """``<<: *base`` or ``<<: [*a, *b]``: the keys the mapping lacks, first source first."""
        for item in source if isinstance(source, list) else [source]:
            if not isinstance(item, dict):
                self.issue(mark, frame.path, "a merge key '<<' takes a mapping or a list of them")
                continue
            places = self.places[id(item)][1]
            for key, value in item.items():
                if key not in frame.value:
                    frame.value[key], frame.places[key] = value, places[key]

    def _alias(self, event: Any) -> None:
        value, text = self._anchors.get(event.anchor, (f"*{event.anchor}", None))
        if event.anchor not in self._anchors:
            inside = any(frame.anchor == event.anchor for frame in self._stack)
            why = "is used inside its own anchor" if inside else "names no anchor; quote the value"
            self.issue(event.start_mark, self._here(), f"alias '*{event.anchor}' {why}")
        if (top := self._waiting()) is not None:
            self._key(top, value, event.start_mark)
        else:
            self._put(value, event.start_mark, text)

    # --- pydantic's findings, back at their places ------------------------------------------

    def place(self, loc: Sequence[Any]) -> _Place:
        container: Any = self.root
        place: _Place = (None, self.root_mark, None)
        for step in loc:
            table = self.places.get(id(container), (None, {}))[1]
            if step not in table:
                break
            container, place = container[step], table[step]
        return place

    def report(self, error: ErrorDetails) -> None:
        loc, kind = tuple(error["loc"]), error["type"]
        if kind == "argv":  # point at the argument itself, not at the whole command
            loc = (*loc, error.get("ctx", {})["index"])
        key_mark, mark, text = self.place(loc)
        if mark is not None and (mark.line, mark.column) in self.base60:
            return  # reported while building, with the reason
        if kind == "missing":
            key_mark, mark, _ = self.place(loc[:-1])
            need = f"missing key '{loc[-1]}': expected {_NEEDS.get(str(loc[-1]), 'a value')}"
            self.issue(key_mark or mark, loc[:-1], need)
        elif kind == "extra_forbidden":
            self.issue(key_mark, loc, _unknown_key(loc))
        elif loc[-1:] == ("[key]",):
            key_mark, loc = self.place(loc[:-1])[0], loc[:-1]
            what, allowed = ("job name", "letters, digits, '_', '.' and '-'")
            if len(loc) > 2:
                what, allowed = ("environment variable name", "no '=' and no NUL")
            self.issue(key_mark, loc, f"{what} {loc[-1]!r}: expected {allowed}")
        else:
            self.issue(mark, loc, _message(error, kind, loc, text))


def _unknown_key(loc: Sequence[Any]) -> str:
    owner = _OWNERS.get(str(loc[0]), CrontabFile) if len(loc) > 1 else CrontabFile
    key, allowed = str(loc[-1]), sorted(owner.__required_keys__ | owner.__optional_keys__)
    if owner is JobFields and key in ("schedule", "command"):
        return f"unknown key {key!r}: defaults hold every job field except schedule and command"
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(allowed)}"
    return f"unknown key {key!r}, {hint}"


def _message(error: ErrorDetails, kind: str, loc: Sequence[Any], text: str | None) -> str:
    ctx, value = error.get("ctx") or {}, error["input"]
    value = value[ctx["index"]] if kind == "argv" else value
    if not loc and kind == "dict_type":
        return f"expected a mapping with a 'jobs' key at the top level, got {_describe(value)}"
    if kind in _EXPECTED:
        number = "an integer" if isinstance(ctx.get("ge", ctx.get("le")), int) else "a number"
        message = f"expected {_EXPECTED[kind].format(number=number, **ctx)}, got {_describe(value)}"
    elif kind == "enum":
        names = ", ".join(re.findall(r"'([^']*)'", ctx["expected"]))
        message = f"expected one of {names}, got {_describe(value)}"
    else:
        message = error["msg"]
    if text is None or kind not in ("string_type", "text_type", "argv"):
        return message
    return f'{message}; quote it: "{text}"'


# --- YAML syntax --------------------------------------------------------------------------------


def _read_yaml(text: str, file: str) -> _Values:
    """Build the values. A value YAML cannot even scan because it is unquoted (``*/5 * * * *``,
    ``@daily``) is quoted and reported, and the text read again, so later errors show too."""
    quoted: dict[tuple[int, int], str] = {}
    while True:
        values = _Values(file, dict(quoted))
        try:
            values.build(text)
        except yaml.MarkedYAMLError as error:
            fixed = _quote(text, error)
            if fixed is not None and fixed[1] not in quoted:
                text, spot, why = fixed
                quoted[spot] = why
                continue
            values.issues, values.quoted, values.root = [_syntax(file, text, error)], quoted, None
        except yaml.YAMLError as error:  # a ReaderError: a character YAML does not allow
            values.issues, values.root = [_unprintable(file, error, text)], None
        if not values.issues and values.documents == 0:
            what = "is empty" if not text.strip() else "holds only comments"
            values.issue(None, (), f"the file {what}; expected a mapping with a 'jobs' key")
        for (line, column), why in values.quoted.items():  # the file broke before them
            values.issues.append(ConfigIssue(file, line + 1, column + 1, "", f"value {why}"))
        return values


def _quote(text: str, error: yaml.MarkedYAMLError) -> tuple[str, tuple[int, int], str] | None:
    """The text with the block value at the error quoted, if an unquoted '*', '@' or '`' at
    the start of a ``key: value`` or ``- value`` was the error."""
    mark = error.context_mark if error.context == "while scanning an alias" else error.problem_mark
    if mark is None:
        return None
    lines = text.splitlines()  # the line breaks YAML knows, as far as its reader lets through
    line, column = _line(lines, mark.line), mark.column
    before = line[:column]
    if line[column : column + 1] not in _UNQUOTED or not re.search(r"(^|[:-])\s+$", before):
        return None
    value = re.split(r"\s#", line[column:], maxsplit=1)[0].rstrip()
    lines[mark.line] = before + "'" + value.replace("'", "''") + "'" + line[column + len(value) :]
    return "\n".join(lines), (mark.line, column), f"must be quoted: {_UNQUOTED[line[column]]}"


def _line(lines: list[str], index: int) -> str:
    return lines[index] if index < len(lines) else ""  # an error at the end of the text


def _syntax(file: str, text: str, error: yaml.MarkedYAMLError) -> ConfigIssue:
    mark = error.problem_mark or error.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    message = f"not valid YAML: {error.problem or error.context}"
    if error.context and error.problem and error.context_mark:
        message += f" ({error.context} at line {error.context_mark.line + 1})"
    if mark and _line(text.splitlines(), mark.line)[mark.column : mark.column + 1] == "\t":
        message += "; YAML allows no tabs in indentation"
    return ConfigIssue(file, line, column, "", message)


def _unprintable(file: str, error: yaml.YAMLError, text: str) -> ConfigIssue:
    reader: Any = error  # libyaml counts the offset in UTF-8 bytes, PyYAML in characters
    data = text.encode() if _LOADER is not yaml.SafeLoader else text
    line, column = _line_column(data, reader.position)
    code = reader.character if isinstance(reader.character, int) else ord(reader.character)
    return ConfigIssue(file, line, column, "", f"character U+{code:04X} is not allowed in YAML")


def _line_column(data: bytes | str, offset: int) -> tuple[int, int]:
    """The 1-based line and column (in characters) of ``offset`` into ``data``."""
    head = data[:offset]
    before = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    return before.count("\n") + 1, len(before) - before.rfind("\n")


def _decode(data: bytes, file: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line, column = _line_column(data, error.start)
        why = f"byte 0x{data[error.start]:02x} is not UTF-8; save the file as UTF-8"
        raise ConfigError([ConfigIssue(file, line, column, "", why)]) from None


# --- checking and converting ----------------------------------------------------------------


def _check_schedules(values: _Values, env: Mapping[str, str]) -> None:
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
            Schedule.parse(expression, zone=zone, job_name=name)
        except ScheduleError as error:
            loc = ("jobs", name, "schedule")
            values.issue(values.place(loc)[1], loc, str(error))


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
    return Crontab(
        path=path,
        settings=Settings(**settings),
        jobs=tuple(_job(name, dict(job), defaults, folder) for name, job in jobs.items()),
    )


def _job(name: str, job: dict[str, Any], defaults: dict[str, Any], folder: Path) -> Job:
    """The job's own value wins over ``defaults:``; ``env`` maps merge, the job's keys win."""
    fields = {"workdir": folder, **defaults, **job}
    fields["env"] = {**(defaults.get("env") or {}), **(job.get("env") or {})}
    retry = RetryPolicy(**{_RETRY[key]: fields.pop(key) for key in _RETRY if key in fields})
    if "success_codes" in fields:
        fields["success_codes"] = frozenset(fields["success_codes"])
    return Job(name=name, retry=retry, **fields)


# --- the public surface -------------------------------------------------------------------


def load(path: Path, *, env: Mapping[str, str] | None = None) -> Crontab:
    """Read and check the crontab at ``path``; ``env`` defaults to the process environment."""
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
        values = _read_yaml(_decode(text, file) if isinstance(text, bytes) else text, file)
        checked = None
        if values.root is not None or not values.issues:
            try:
                checked = _ADAPTER.validate_python(values.root, context=(env, folder))
            except ValidationError as error:
                for details in error.errors(include_url=False):
                    values.report(details)
            _check_schedules(values, env)
        if values.issues or checked is None:
            raise ConfigError(values.issues)
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

"""The crontab's value types: each field's pydantic annotation, its check and its JSON Schema.

The boundary where text becomes values: durations become ``timedelta``, zone names
``ZoneInfo``, paths absolute ``Path``s (``~`` from the crontab's environment, relative to its
folder), secret sources their values. A check raises ``PydanticCustomError`` with a message
that says what was expected; ``errors`` puts it at its place in the file. The models
built from these types are ``models``.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, cast
from zoneinfo import ZoneInfo, available_timezones

from pydantic import (
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainValidator,
    Strict,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from cronplus.config import alerting, cronpattern
from cronplus.core.words import describe_value as describe
from cronplus.host import accounts, permissions
from cronplus.run import limits, secrets

# --- durations, zones and words -------------------------------------------------------------

_NUMBER = r"\d+(?:\.\d+)?"
_DURATION = re.compile(
    rf"(?P<bare>{_NUMBER})|(?:(?P<d>{_NUMBER})d)?(?:(?P<h>{_NUMBER})h)?(?:(?P<m>{_NUMBER})m)?"
    rf"(?:(?P<s>{_NUMBER})s)?(?:(?P<ms>{_NUMBER})ms)?"
)
_SECONDS = {"bare": 1.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION_HINT = "a duration such as 90s, 5m, 1h30m, 2d, 500ms or a number of seconds"


MAX_DURATION = timedelta(days=3650)
"""The longest duration: past it, instants computed from it leave datetime's range, and a
run would fail where validate said yes (``jitter: 100000000d``)."""


def parse_duration(text: str | int | float) -> timedelta:
    """``90s``, ``5m``, ``1h30m``, ``2d``, ``500ms``, ``0.5s``, or a number of seconds."""
    seconds = math.nan
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = text
    elif isinstance(text, str) and (match := _DURATION.fullmatch(text.strip())) and text.strip():
        seconds = sum(float(n) * _SECONDS[unit] for unit, n in match.groupdict().items() if n)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected {_DURATION_HINT}, got {describe(text)}")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"duration {describe(text)} is too long; at most 3650d (ten years)")
    return timedelta(seconds=seconds)


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


@cache
def zone_names() -> tuple[str, ...]:
    """The zones the ``tzdata`` package ships (its ``zones`` list), sorted: the schema's
    ``timezone`` names, the same on every host, unlike the host's own zone folder."""
    listed = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return tuple(sorted(listed.split()))


def _either(names: Sequence[str]) -> str:
    quoted = [f"'{name}'" for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


# --- the checks -----------------------------------------------------------------------------


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
    except ValueError as error:
        got = f"expected {_DURATION_HINT}, or none, got {describe(value)}"
        raise PydanticCustomError(
            "duration", got if "too long" not in str(error) else str(error)
        ) from None
    if limit <= timedelta(0):
        raise PydanticCustomError("duration", "expected a positive duration, or none for no limit")
    return limit


MAX_ARGUMENT = 128 * 1024 - 1
"""Bytes in one argument: Linux refuses a longer one at exec (MAX_ARG_STRLEN, with its NUL)."""
MAX_ARGUMENTS = 1024 * 1024
"""Bytes in a whole argv: under the kernel's ARG_MAX, which the environment shares."""


def _command(value: object) -> tuple[str, ...] | str:
    if isinstance(value, list) and value:
        for index, arg in enumerate(value):
            if not isinstance(arg, str):
                got = f"expected a string, got {describe(arg)}"
                raise PydanticCustomError("argv", got, {"index": index})
            if why := _refused_argument(arg, "this argument"):
                raise PydanticCustomError("argv", why, {"index": index})
        if sum(len(arg.encode("utf-8", "surrogateescape")) + 1 for arg in value) > MAX_ARGUMENTS:
            why = _too_long("the arguments together are", MAX_ARGUMENTS)
            raise PydanticCustomError("command", why)
        return tuple(value)
    text = _nonempty(value, "a non-empty list of strings (argv) or string (run by the shell)")
    if why := _refused_argument(text, "the command"):
        raise PydanticCustomError("command", why)
    return text


def _refused_argument(text: str, what: str) -> str | None:
    """What the kernel would refuse at exec, refused at load instead (no run ever fails)."""
    if "\x00" in text:
        return f"{what} holds a NUL character, which exec cannot pass"
    if len(text.encode("utf-8", "surrogateescape")) > MAX_ARGUMENT:
        return _too_long(f"{what} is", MAX_ARGUMENT)
    return None


def _too_long(what: str, limit: int) -> str:
    return f"{what} longer than the {limit // 1024} KiB the kernel passes to a program"


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
    """A string, or a secret from ``{from_env: NAME}`` or ``{from_file: PATH}``; one the
    kernel would pass to a program (no NUL, at most 128 KiB)."""
    text = env_text(value, info)
    if why := _refused_argument(text, "the value"):
        raise PydanticCustomError("env", why)
    return text


def env_text(value: object, info: ValidationInfo) -> str:
    """A string as written, or the secret ``{from_env: NAME}`` / ``{from_file: PATH}`` gives."""
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
    password need not sit in the crontab. Messages never echo a DSN: it may hold one; nor
    does anything later, as a password that a URI would misread is refused here."""
    dsn = _dsn_text(value, info)
    from cronplus.config.dsn import password_problem

    if (why := password_problem(dsn)) is not None:
        raise PydanticCustomError("dsn", why)
    return dsn


def _dsn_text(value: object, info: ValidationInfo) -> str:
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
    try:  # checked like a from_file secret: the DSN's password gives the cluster database
        text = secrets.read_trusted_text(path, "a connection string", permissions.SECRET).strip()
    except ValueError as error:
        raise PydanticCustomError("dsn", str(error)) from None
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


# --- the JSON Schemas that are built -------------------------------------------------------


@dataclass(frozen=True)
class _Built:
    """A JSON Schema built when the schema is, not at import. With a ``name``, it is one
    definition that every field of the type refers to: 598 zone names once, not per field."""

    build: Callable[[], dict[str, Any]]
    name: str | None = None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        schema = handler(source)
        return cast("CoreSchema", {**schema, "ref": self.name}) if self.name else schema

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        if self.name is None:
            return self.build()
        reference = handler(schema)  # {"$ref": ...}, to the definition pydantic made of it
        handler.resolve_ref_schema(reference).update(self.build())
        return reference


def _expression_schema() -> dict[str, Any]:
    return {
        "type": "string",
        "pattern": cronpattern.expression(),
        "patternErrorMessage": _EXPRESSION_HINT,  # editors' wording, instead of the regex
    }


_EXPRESSION_HINT = (
    "expected a cron expression: 5 fields (minute hour day-of-month month day-of-week), "
    "6 with seconds first, or a macro such as @daily (docs/schedules.md)"
)


def _zone_schema() -> dict[str, Any]:
    return {
        "description": "An IANA zone name, as the tzdata package lists them",
        "type": "string",
        "enum": list(zone_names()),
    }


# --- the annotated types ----------------------------------------------------------------------

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
Zone = Annotated[
    ZoneInfo,
    PlainValidator(lambda value: _zone(_nonempty(value, _ZONE))),
    _Built(_zone_schema, name="Zone"),
]
Command = Annotated[
    tuple[str, ...] | str,
    PlainValidator(_command),
    WithJsonSchema({"anyOf": [_ARGV, {"type": "string", "minLength": 1}]}),
]
Expression = Annotated[
    str, _text('a cron expression such as "0 3 * * *"'), _Built(_expression_schema)
]
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
Url = Annotated[str, _checked("url", alerting.url), WithJsonSchema({"type": "string"})]
Address = Annotated[str, _checked("address", alerting.mail_address), _TEXT]
Listen = Annotated[
    Any,
    _checked("listen", alerting.listen_address),
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

"""pydantic's findings about a crontab, as ``ConfigIssue``s at their places in the file.

A pydantic location such as ``("jobs", "backup", "retries")`` maps back to ``line:col``
through the ``Values`` read by ``yamlsource``; the message says what was expected, in
cronplus's words rather than pydantic's, with a close key name for a misspelt one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

from pydantic_core import ErrorDetails

from cronplus.config.models import (
    ClusterFile,
    CrontabFile,
    DeliveryFile,
    JobFields,
    JobFile,
    LimitsFile,
    NotifierFile,
    SettingsFile,
    SmtpFile,
)
from cronplus.config.yamlsource import Values
from cronplus.core.words import describe_value as describe

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


def report(values: Values, error: ErrorDetails) -> None:
    """Note pydantic's ``error`` in ``values`` at its place, unless reading explained it."""
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

"""The event log: what cronplus tells the operator on stderr, as text or one JSON object a line.

Every line is an *event* with a stable name (``attempt_failed``, ``run_failed``, ``missed``,
...) and fields. Text lines read as sentences followed by ``key=value`` details; JSON lines
carry the same fields under stable names (``event``, ``job``, ``run_id``, ``scheduled_at``,
``attempt``, ``outcome``, ``exit_code``, ``signal``, ``duration_s``). Under systemd, when
stderr is the journal's stream, each event goes to journald whole, with its priority and
fields (``journal.py``); a text line then leaves out the timestamp, which the journal keeps.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TextIO

from cronplus import journal
from cronplus.model import LogFormat

LOGGER_NAME = "cronplus"
_FIELDS = "cronplus_fields"
_EVENT = "cronplus_event"


class EventLog:
    """Writes events through the standard ``logging`` machinery."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger(LOGGER_NAME)

    def emit(self, level: int, event: str, message: str, **fields: object) -> None:
        clean = {key: value for key, value in fields.items() if value is not None}
        self._logger.log(level, message, extra={_EVENT: event, _FIELDS: clean})

    def info(self, event: str, message: str, **fields: object) -> None:
        self.emit(logging.INFO, event, message, **fields)

    def warning(self, event: str, message: str, **fields: object) -> None:
        self.emit(logging.WARNING, event, message, **fields)

    def error(self, event: str, message: str, **fields: object) -> None:
        self.emit(logging.ERROR, event, message, **fields)


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``2026-03-08T07:00:01.012Z WARNING message key=value ...``; without the timestamp
    when ``stamped`` is false (the journal stamps each entry itself)."""

    def __init__(self, *, stamped: bool = True) -> None:
        super().__init__()
        self._stamped = stamped

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, object] = getattr(record, _FIELDS, {})
        details = " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
        line = f"{record.levelname} {record.getMessage()}"
        if self._stamped:
            line = f"{_timestamp(record)} {line}"
        return f"{line} {details}" if details else line


def _text_value(value: object) -> str:
    text = str(value)
    if not text or any(ch.isspace() or ch in "\"'=" for ch in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``event``, ``message`` and the fields."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "event": getattr(record, _EVENT, "log"),
            "message": record.getMessage(),
        }
        body.update(getattr(record, _FIELDS, {}))
        return json.dumps(body, ensure_ascii=False, default=str)


def configure(
    fmt: LogFormat,
    *,
    stream: TextIO | None = None,
    level: int = logging.INFO,
    env: Mapping[str, str] | None = None,
) -> None:
    """Send cronplus's events to ``stream`` (stderr) in the chosen format; idempotent.
    When ``env``'s ``JOURNAL_STREAM`` names that stream, they go to journald instead."""
    logger = logging.getLogger(LOGGER_NAME)
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    out = stream or sys.stderr
    handler: logging.Handler
    if env is not None and journal.is_journal(out, env):
        handler = journal.JournalHandler(out)
        text = TextFormatter(stamped=False)
    else:
        handler, text = logging.StreamHandler(out), TextFormatter()
    handler.setFormatter(JsonFormatter() if fmt is LogFormat.JSON else text)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False

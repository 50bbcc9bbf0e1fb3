"""The event log: what cronplus tells the operator on stderr, as text or one JSON object a line.

Every line is an *event* with a stable name (``attempt_failed``, ``run_failed``, ``missed``,
...) and fields. Text lines read as sentences followed by ``key=value`` details; JSON lines
carry the same fields under stable names (``event``, ``job``, ``run_id``, ``scheduled_at``,
``attempt``, ``outcome``, ``exit_code``, ``signal``, ``duration_s``). Under systemd, when
stderr is the journal's stream, each event goes to journald whole, with its priority and
fields (``journal.py``); a text line then leaves out the timestamp, which the journal keeps.

Job output reaches these lines (a failed attempt's ``stderr_tail``), so no control
character gets to a terminal raw: text lines show ESC as ``\\x1b``, CR as ``\\r`` and so
on, JSON lines as ``\\u001b`` (valid JSON). An event that can come in a flood (a refused
connection, an error asyncio or a thread reports) goes through ``Throttle``: once a minute
per kind, the next line counting what was held back. ``internal_errors`` routes what a
thread or asyncio would print raw to stderr into the event log, so ``log_format: json``
stays JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any, TextIO

from cronplus.core.model import LogFormat
from cronplus.observe import journal

LOGGER_NAME = "cronplus"
_FIELDS = "cronplus_fields"
_EVENT = "cronplus_event"
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
"""What a terminal would act on rather than show: C0 controls but tab and newline (ESC
starts the sequences that recolour, move the cursor or retitle the window; CR overwrites
the line), DEL, C1 controls (0x9b is a one-byte CSI), line separators and the bidi
overrides that make text read differently from what it is."""
THROTTLE_EVERY = 60.0
"""Seconds: an event kind that repeats is logged once in this long."""
_THROTTLE_KEYS = 256
"""Kinds a ``Throttle`` tracks; past that, expired ones are forgotten, then kinds share."""
_TRACE_MAX = 4000
"""Characters of a traceback kept in an ``internal_error`` line (its end: where it broke)."""


class EventLog:
    """Writes events through the standard ``logging`` machinery."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger(LOGGER_NAME)

    def emit(self, level: int, event: str, message: str, **fields: object) -> None:
        if not self._logger.isEnabledFor(level):
            return  # --log-level warning: a job's lines cost nothing here
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
        # A message's newlines stay (a rejected reload lists its errors one a line).
        line = f"{record.levelname} {_UNSAFE.sub(_escape_text, record.getMessage())}"
        if self._stamped:
            line = f"{_timestamp(record)} {line}"
        return f"{line} {details}" if details else line


def _text_value(value: object) -> str:
    """A field's value: bare when plain, else a JSON string (controls escaped, so a job's
    stderr tail is one line and nothing in it reaches the terminal)."""
    text = str(value)
    if not text or _UNSAFE.search(text) or any(ch.isspace() or ch in "\"'=" for ch in text):
        return _UNSAFE.sub(_escape_json, json.dumps(text, ensure_ascii=False))
    return text


def printable(text: str) -> str:
    """``text`` safe for a terminal, as text lines show it: newlines and tabs kept, every
    other control character escaped (``\\x1b``, ``\\r``, ``\\u202e``)."""
    return _UNSAFE.sub(_escape_text, text)


def _escape_text(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code == 0x0D:
        return "\\r"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _escape_json(match: re.Match[str]) -> str:
    # json.dumps escapes C0 itself; what is left (DEL, C1, bidi) gets JSON's own escape.
    return f"\\u{ord(match.group()):04x}"


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
        return _UNSAFE.sub(_escape_json, json.dumps(body, ensure_ascii=False, default=str))


class Throttle:
    """Logs an event that can come in a flood once per ``every`` seconds per kind (the
    event and a ``key``); the first line after a quiet spell carries ``suppressed=N``, the
    count held back since the line before. ``now`` is a monotonic reading."""

    def __init__(self, log: EventLog, *, every: float = THROTTLE_EVERY) -> None:
        self._log, self._every = log, every
        self._windows: dict[str, tuple[float, int]] = {}
        """kind -> (when its last line was logged, how many were held back since)."""
        self._lock = threading.Lock()  # the metrics thread and the loop both log

    def emit(
        self, level: int, event: str, message: str, *, now: float, key: str = "", **fields: object
    ) -> bool:
        """Log unless this kind was logged less than ``every`` ago; True if it was."""
        with self._lock:
            kind = self._kind(f"{event}:{key}", now)
            since, held = self._windows.get(kind, (None, 0))
            if since is not None and now - since < self._every:
                self._windows[kind] = (since, held + 1)
                return False
            self._windows[kind] = (now, 0)
        self._log.emit(level, event, message, **fields, suppressed=held or None)
        return True

    def _kind(self, kind: str, now: float) -> str:
        """``kind``, or its event alone once too many kinds are tracked (keys can carry
        text from outside, and the table must not grow with it)."""
        if kind in self._windows or len(self._windows) < _THROTTLE_KEYS:
            return kind
        for old, (since, _) in list(self._windows.items()):
            if now - since >= self._every:
                del self._windows[old]
        return kind if len(self._windows) < _THROTTLE_KEYS else kind.split(":", 1)[0] + ":"


@contextlib.contextmanager
def internal_errors(log: EventLog, *, monotonic: Callable[[], float]) -> Iterator[Throttle]:
    """While inside (on the running event loop): an exception a thread did not catch, an
    error asyncio reports (a failed callback, an accept out of descriptors) and asyncio's
    own log lines become ``internal_error`` events, throttled per kind, instead of raw
    tracebacks on stderr."""
    throttle = Throttle(log)
    loop = asyncio.get_running_loop()
    old_loop, old_thread = loop.get_exception_handler(), threading.excepthook
    forward = _Forward(throttle, monotonic)
    asyncio_log = logging.getLogger("asyncio")
    old_propagate = asyncio_log.propagate
    loop.set_exception_handler(partial(_loop_error, throttle))
    threading.excepthook = partial(_thread_error, throttle, monotonic)
    asyncio_log.addHandler(forward)
    asyncio_log.propagate = False
    try:
        yield throttle
    finally:
        asyncio_log.propagate = old_propagate
        asyncio_log.removeHandler(forward)
        threading.excepthook = old_thread
        loop.set_exception_handler(old_loop)


def _trace(error: BaseException | None) -> str | None:
    if error is None:
        return None
    return "".join(traceback.format_exception(error))[-_TRACE_MAX:]


def _loop_error(
    throttle: Throttle, loop: asyncio.AbstractEventLoop, context: dict[str, Any]
) -> None:
    message = str(context.get("message") or "asyncio reported an error")
    error = context.get("exception")
    error = error if isinstance(error, BaseException) else None
    throttle.emit(
        logging.ERROR,
        "internal_error",
        f"internal error in the event loop: {message}",
        now=loop.time(),
        # The exception's type, not the message: asyncio's messages carry object reprs.
        key=type(error).__name__ if error is not None else message,
        where="asyncio",
        error=None if error is None else repr(error),
        traceback=_trace(error),
    )


def _thread_error(
    throttle: Throttle, monotonic: Callable[[], float], args: threading.ExceptHookArgs
) -> None:
    if issubclass(args.exc_type, SystemExit):  # what the default hook ignores too
        return
    thread = args.thread.name if args.thread is not None else "unknown"
    throttle.emit(
        logging.ERROR,
        "internal_error",
        f"internal error in thread {thread}: {args.exc_type.__name__}: {args.exc_value}",
        now=monotonic(),
        key=f"{thread}:{args.exc_type.__name__}",
        where=f"thread {thread}",
        traceback=_trace(args.exc_value),
    )


class _Forward(logging.Handler):
    """asyncio's own log lines (``logging.getLogger("asyncio")``) as throttled events."""

    def __init__(self, throttle: Throttle, monotonic: Callable[[], float]) -> None:
        super().__init__(logging.WARNING)
        self._throttle, self._monotonic = throttle, monotonic

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        self._throttle.emit(
            record.levelno,
            "internal_error",
            f"asyncio: {record.getMessage()}",
            now=self._monotonic(),
            key=str(record.msg),  # the format, before its arguments: one kind per line
            where="asyncio",
            traceback=_trace(error),
        )


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

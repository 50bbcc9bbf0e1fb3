"""The event log: what a job's output may put on the operator's terminal, floods held to a
line a minute, and errors of threads and asyncio kept inside the log's format."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import threading
from collections.abc import Iterator

import pytest
from conftest import Cronplus

from cronplus.observe.logs import (
    THROTTLE_EVERY,
    EventLog,
    JsonFormatter,
    TextFormatter,
    Throttle,
    internal_errors,
)

HOSTILE = (
    "disk full\x1b]0;owned\x07\x1b[2J\x1b[31mred\rERROR fake line\x9b2J"
    "\u202eevil\u2028next\x00\x7f\x0bend"
)
"""What a job's stderr may hold: a title change, a screen clear, colours, a carriage
return that overwrites the line, a one-byte CSI, a bidi override, a line separator."""
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2028\u2029]")


def record(message: str, **fields: object) -> logging.LogRecord:
    line = logging.LogRecord("cronplus", logging.WARNING, __file__, 1, message, None, None)
    line.cronplus_event = "attempt_failed"
    line.cronplus_fields = fields
    return line


@pytest.mark.parametrize("stamped", [True, False], ids=["stderr", "journal"])
def test_a_stderr_tail_with_terminal_controls_is_one_escaped_line(stamped: bool) -> None:
    text = TextFormatter(stamped=stamped).format(record("job x failed", stderr_tail=HOSTILE))

    assert RAW.search(text) is None, ascii(text)
    assert "\n" not in text
    shown = text.split(" stderr_tail=", 1)[1]
    assert json.loads(shown) == HOSTILE  # a JSON string: nothing lost, nothing ambiguous
    assert "\\u001b]0;owned" in shown and "\\u009b" in shown and "\\u202e" in shown


def test_a_bare_value_with_a_control_is_quoted_and_escaped() -> None:
    text = TextFormatter().format(record("m", job="x\x1b[2Jy"))

    assert text.endswith(' job="x\\u001b[2Jy"')


def test_a_message_keeps_its_newlines_and_loses_its_controls() -> None:
    text = TextFormatter().format(record("rejected:\na:1:1: bad\x1b[31m\r\x9b"))

    assert text.endswith("WARNING rejected:\na:1:1: bad\\x1b[31m\\r\\x9b")


def test_a_json_line_escapes_what_json_leaves_raw_and_still_parses() -> None:
    text = JsonFormatter().format(record("m", stderr_tail=HOSTILE))

    assert RAW.search(text) is None, ascii(text)
    assert json.loads(text)["stderr_tail"] == HOSTILE


def test_a_job_printing_terminal_controls_leaves_cronplus_stderr_clean(
    cronplus: Cronplus,
) -> None:
    # The job is the attacker here: its stderr reaches the operator's terminal in the tail.
    cronplus.write(
        "jobs:\n  loud:\n    schedule: '@daily'\n"
        "    command: \"printf 'ok\\\\033]0;owned\\\\007\\\\033[2J\\\\rERROR forged"
        "\\\\302\\\\233' >&2; exit 3\"\n"
    )
    done = cronplus.run("run", "loud")

    assert done.returncode == 1, done.stderr
    assert "owned" in done.stderr and "forged" in done.stderr
    assert RAW.search(done.stderr) is None, ascii(done.stderr)
    assert "\\u001b]0;owned" in done.stderr and "forged\\u009b" in done.stderr


# --- the throttle ---------------------------------------------------------------------------


class Lines:
    """An event log whose JSON lines are kept, to read back."""

    def __init__(self) -> None:
        self._stream = io.StringIO()
        self._handler = logging.StreamHandler(self._stream)
        self._handler.setFormatter(JsonFormatter())
        self._logger = logging.getLogger(f"cronplus.test.{id(self)}")
        self._logger.addHandler(self._handler)
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self.log = EventLog(self._logger)

    def read(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self._stream.getvalue().splitlines()]

    def close(self) -> None:
        self._logger.removeHandler(self._handler)


@pytest.fixture
def lines() -> Iterator[Lines]:
    kept = Lines()
    yield kept
    kept.close()


def test_a_flood_of_one_event_is_one_line_a_minute_with_the_count(lines: Lines) -> None:
    throttle = Throttle(lines.log)
    for i in range(1000):
        throttle.emit(logging.WARNING, "metrics_busy", "busy", now=10.0 + i * 0.01)
    throttle.emit(logging.WARNING, "metrics_busy", "busy", now=10.0 + THROTTLE_EVERY)

    out = lines.read()
    assert [line["event"] for line in out] == ["metrics_busy", "metrics_busy"]
    assert "suppressed" not in out[0] and out[1]["suppressed"] == 999


def test_kinds_are_throttled_apart_and_their_number_is_bounded(lines: Lines) -> None:
    throttle = Throttle(lines.log)
    for key in ("408", "431", "408"):
        throttle.emit(logging.WARNING, "metrics_bad_request", key, now=1.0, key=key)
    for i in range(5000):  # keys from outside (asyncio's messages) cannot grow the table
        throttle.emit(logging.ERROR, "internal_error", "x", now=2.0, key=f"k{i}")

    out = lines.read()
    assert [line["message"] for line in out[:2]] == ["408", "431"]
    assert len(out) <= 2 + 257
    assert len(throttle._windows) <= 257


# --- errors of threads and asyncio ---------------------------------------------------------


def test_thread_and_asyncio_errors_become_throttled_json_events(lines: Lines) -> None:
    clock = [100.0]

    def broken() -> None:
        raise RuntimeError("listener bug")

    before = threading.excepthook

    async def scenario() -> None:
        with internal_errors(lines.log, monotonic=lambda: clock[0]):
            for _ in range(3):
                thread = threading.Thread(target=broken, name="cronplus-metrics")
                thread.start()
                thread.join()
            asyncio.get_running_loop().call_soon(broken)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            logging.getLogger("asyncio").warning("socket.send() raised exception.")
        assert threading.excepthook is before  # put back, as asyncio's handler is
        assert asyncio.get_running_loop().get_exception_handler() is None

    asyncio.run(scenario())

    out = lines.read()
    assert [line["event"] for line in out] == ["internal_error"] * 3, out
    thread, loop, logged = out
    assert thread["where"] == "thread cronplus-metrics"
    assert "RuntimeError: listener bug" in str(thread["traceback"])
    assert loop["where"] == "asyncio" and "listener bug" in str(loop["error"])
    assert logged["message"] == "asyncio: socket.send() raised exception."

"""Secrets are masked before output is cut: no cut leaves a fragment of one.

A job's output is cut three times before anything shows it: the capture keeps a head and a
tail of 64 KiB and drops the middle, and the stderr tail is the last 20 lines within 4 KiB.
Each test writes a secret so that it straddles one of those cuts (or a read boundary, or
both) and checks what is left. Secrets here are upper-case letters and the filler is
not, so any upper-case letter left is a leak, however short.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cronplus.clock import SystemClock
from cronplus.core.model import Crontab, Job, RunResult, Settings
from cronplus.engine.engine import Engine
from cronplus.engine.events import NoEvents
from cronplus.observe.alerts import AlertBook
from cronplus.observe.logs import LOGGER_NAME, EventLog, JsonFormatter, TextFormatter
from cronplus.run.capture import CONTEXT, Capture
from cronplus.run.command import DEFAULT_OUTPUT_LIMIT, STDERR_TAIL_BYTES, Command
from cronplus.run.runner import ProcessResult, Runner
from cronplus.run.secrets import Redactor, Secret, mark
from cronplus.state.sqlite import SqliteStore

LIMIT = DEFAULT_OUTPUT_LIMIT
TOKEN = "".join(random.Random(20).choices("ABCDEFGHJKLMNPQRSTUVWXYZ", k=40))
LONG = "".join(random.Random(21).choices("ABCDEFGHJKLMNPQRSTUVWXYZ", k=CONTEXT + 4000))
PEM_LINES = [
    "-----BEGIN TEST PRIVATE KEY-----",
    *("".join(random.Random(n).choices("ABCDEFGHJKLMNPQRSTUVWXYZ", k=64)) for n in range(25)),
    "-----END TEST PRIVATE KEY-----",
]
PEM = "\n".join(PEM_LINES)
_LETTERS = re.compile(r"[A-Z]+")


def leaks(text: str | bytes) -> list[str]:
    """The runs of upper-case letters in ``text``: pieces of a secret."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return _LETTERS.findall(text)


# --- the masking of a window of bytes ----------------------------------------------------


@pytest.mark.parametrize(
    ("data", "window", "cuts", "expected"),
    [
        (b"a TOKENVALUE b", (0, None), (False, False), b"a *** b"),
        (b"..TOKENVALUE..", (6, None), (False, False), b"***.."),
        (b"..TOKENVALUE..", (0, 6), (False, False), b"..***"),
        (b"ABABAB.", (0, None), (False, False), b"***."),
        (b"TOKENVALUE.", (0, None), (False, False), b"***."),
        (b"KENVALUE.", (0, None), (True, False), b"***."),
        (b"KENVALUE.", (0, None), (False, False), b"KENVALUE."),
        (b".TOKEN", (0, None), (False, True), b".***"),
        (b".TOK", (0, None), (False, True), b".TOK"),
        (b"....", (0, None), (False, False), b"...."),
    ],
    ids=[
        "whole-in-the-window",
        "straddling-the-window-start",
        "straddling-the-window-end",
        "overlapping-occurrences",
        "at-the-edge-of-the-data",
        "its-end-after-a-cut",
        "its-end-where-nothing-was-cut-is-the-jobs-own",
        "its-start-before-a-cut",
        "a-start-of-three-bytes-is-not-searched-for",
        "nothing-to-mask",
    ],
)
def test_a_window_is_masked_wherever_a_secret_touches_it(
    data: bytes, window: tuple[int, int | None], cuts: tuple[bool, bool], expected: bytes
) -> None:
    hide = Redactor(mark({"API_TOKEN": "TOKENVALUE", "B_KEY": "ABAB"}))

    masked = hide.mask(data, *window, cut_before=cuts[0], cut_after=cuts[1])

    assert masked == expected


def test_a_multi_line_secret_is_masked_whole_and_line_by_line() -> None:
    hide = Redactor({"DEPLOY": Secret(PEM)})
    whole = f"key:\n{PEM}\ndone".encode()
    by_line = "".join(f"log: {line}\r\n" for line in PEM_LINES).encode()

    assert hide.mask(whole) == b"key:\n***\ndone"
    assert hide.mask(by_line) == b"log: ***\r\n" * len(PEM_LINES)
    assert hide(f"reason: {PEM_LINES[3]}") == "reason: ***"


# --- the capture's own cuts ----------------------------------------------------------------


def fed(stream: bytes, *, seed: int) -> Capture:
    """``stream`` fed to a capture in reads of random sizes, as pipes deliver it."""
    capture, rng, at = Capture(LIMIT), random.Random(seed), 0
    while at < len(stream):
        size = rng.choice((1, 7, 4096, 65536, rng.randrange(1, 70000)))
        capture.feed(stream[at : at + size])
        at += size
    return capture


def around(edge: int, secret: str) -> Iterator[int]:
    """Offsets that make ``secret`` straddle ``edge`` (or just touch it), every one for a
    short secret, a spread for a long one."""
    size = len(secret)
    step = 1 if size < 100 else 997
    yield from range(edge - size - 1, edge + 2, step)
    yield from (edge - size + 1, edge - 1)


@pytest.mark.parametrize("secret", [TOKEN, PEM, LONG], ids=["token", "pem", "longer-than-context"])
@pytest.mark.parametrize(
    ("total", "edge"),
    [
        (150_000, LIMIT),
        (150_000, 150_000 - LIMIT),
        (600_000, LIMIT),
        (600_000, 600_000 - LIMIT),
    ],
    ids=["whole-stream-head-end", "whole-stream-tail-start", "head-end", "tail-start"],
)
def test_a_secret_straddling_a_cut_of_the_capture_leaves_no_fragment(
    secret: str, total: int, edge: int
) -> None:
    hide = Redactor({"A_SECRET": secret})
    for n, offset in enumerate(around(edge, secret)):
        stream = b"." * offset + secret.encode() + b"." * (total - offset - len(secret))

        value = fed(stream, seed=n).value(hide)

        assert b"bytes dropped" in value
        assert not leaks(value), f"offset {offset}: {leaks(value)[:3]}"


def test_the_end_of_a_stream_cronplus_cut_short_is_masked_from_four_bytes() -> None:
    hide = Redactor({"A_SECRET": TOKEN})
    capture = Capture(LIMIT)
    capture.feed(b"." * 100 + TOKEN[:4].encode())

    assert capture.value(hide).endswith(TOKEN[:4].encode())  # the job's own: it ended so
    assert capture.value(hide, cut_end=True) == b"." * 100 + b"***"


# --- real jobs through the runner ------------------------------------------------------------

WRITER = """
import json, os, sys, time
out, secret = sys.stderr.buffer, os.environb[b"A_SECRET"]
for kind, *args in json.loads(sys.argv[1]):
    if kind == "fill":
        out.write(b"." * args[0])
    elif kind == "secret":
        out.write(secret[args[0] : args[1]])
    elif kind == "lines":
        out.write(b"".join(b"key: " + line + b"\\r\\n" for line in secret.split(b"\\n")))
    elif kind == "text":
        out.write(args[0].encode())
    else:
        time.sleep(args[0])
    out.flush()
"""
WRITES: dict[str, tuple[str, list[list[Any]]]] = {
    "across-the-4-KiB-cut": (TOKEN, [["secret", 0, 40], ["fill", STDERR_TAIL_BYTES - 12]]),
    "split-between-reads-at-the-4-KiB-cut": (
        TOKEN,
        [
            ["secret", 0, 17],
            ["sleep", 0.02],
            ["secret", 17, 40],
            ["fill", STDERR_TAIL_BYTES - 30],
        ],
    ),
    "across-the-head-end": (TOKEN, [["fill", LIMIT - 10], ["secret", 0, 40], ["fill", 300_000]]),
    "split-between-reads-at-the-head-end": (
        TOKEN,
        [
            ["fill", LIMIT - 10],
            ["secret", 0, 5],
            ["sleep", 0.02],
            ["secret", 5, 40],
            ["fill", 300_000],
        ],
    ),
    "across-the-tail-start": (
        TOKEN,
        [["fill", 300_000], ["secret", 0, 40], ["fill", LIMIT - 10]],
    ),
    "longer-than-the-context-across-the-tail-start": (
        LONG,
        [["fill", 300_000], ["secret", 0, len(LONG)], ["fill", LIMIT - 10]],
    ),
    "pem-whose-last-lines-end-the-output": (PEM, [["secret", 0, len(PEM)], ["text", "\nok\n"]]),
    "pem-printed-line-by-line": (PEM, [["lines"], ["text", "done\n"]]),
}


def writer(secret: str, parts: list[list[Any]], folder: Path) -> Command:
    return Command(
        argv=(sys.executable, "-c", WRITER, json.dumps(parts)),
        workdir=folder,
        env={"A_SECRET": Secret(secret)},
        timeout=20.0,
        kill_grace=0.2,
        success_codes=frozenset({0}),
    )


async def executed(command: Command, hide: Redactor) -> ProcessResult:
    process = Runner(drain_grace=0.2).start(command)
    process.mask_secrets(hide)
    return await asyncio.wait_for(process.wait(), 30)


@pytest.mark.parametrize("case", list(WRITES), ids=str)
def test_a_job_that_prints_a_secret_across_a_cut_leaves_no_fragment(
    case: str, tmp_path: Path
) -> None:
    secret, parts = WRITES[case]
    command = writer(secret, parts, tmp_path)

    result = asyncio.run(executed(command, Redactor(command.env)))

    assert result.exit_code == 0, result.stderr[-300:]
    assert b"***" in result.stderr
    assert not leaks(result.stderr)
    assert not leaks(result.stderr_tail)


@pytest.mark.parametrize(
    "how",
    ["timeout", "drain-grace"],
    ids=["stopped-by-its-timeout", "read-until-the-drain-grace"],
)
def test_output_that_cronplus_cut_short_does_not_end_in_the_start_of_a_secret(
    how: str, tmp_path: Path
) -> None:
    parts = [["fill", 10], ["secret", 0, 20], ["sleep", 1.0]]
    command = writer(TOKEN, parts, tmp_path)
    if how == "timeout":
        command = replace(command, timeout=0.3)
    else:  # a background child holds the pipe, with a secret half written, past its parent
        script = '"$0" "$@" & sleep 0.3'
        command = replace(command, argv=("/bin/sh", "-c", script, *command.argv))

    result = asyncio.run(executed(command, Redactor(command.env)))

    assert result.stderr == b"." * 10 + b"***"
    assert result.stderr_tail == ".........." + "***"


def test_without_secrets_to_mask_the_output_is_kept_as_written(tmp_path: Path) -> None:
    command = writer(TOKEN, [["secret", 0, 40], ["fill", 10]], tmp_path)

    result = asyncio.run(executed(command, Redactor()))

    assert result.stderr == TOKEN.encode() + b"." * 10


# --- through the engine: history, the log line, what an alert carries ------------------------


class Heard(NoEvents):
    def __init__(self) -> None:
        self.results: list[RunResult] = []

    def attempt_finished(
        self, *, job: Job, result: RunResult, retry_at: datetime | None, stopped: bool
    ) -> None:
        self.results.append(result)


ENGINE_CASES = [
    "across-the-4-KiB-cut",
    "split-between-reads-at-the-4-KiB-cut",
    "pem-whose-last-lines-end-the-output",
    "pem-printed-line-by-line",
]


def failed_once(job: Job, folder: Path) -> tuple[RunResult, RunResult]:
    """Run ``job`` once through a real engine: its history row and the result observers
    (alerts) heard."""
    tab = Crontab(path=folder / "c.yaml", settings=Settings(state=folder / "s.db"), jobs=(job,))
    heard = Heard()

    async def scenario() -> None:
        store = SqliteStore.open(folder / "s.db")
        clock = SystemClock()
        engine = Engine(
            tab,
            store=store,
            runner=Runner(),
            clock=clock,
            base_env={},
            log=EventLog(),
            events=heard,
        )
        engine.start_slots([(job, clock.now())], now=clock.now())
        await engine.wait_idle()
        store.close()

    asyncio.run(scenario())
    store = SqliteStore.open(folder / "s.db")
    (row,) = store.history(job=job.name)
    store.close()
    (result,) = heard.results
    return row, result


@pytest.mark.parametrize("case", ENGINE_CASES, ids=str)
def test_what_cronplus_keeps_and_shows_of_a_failed_run_has_no_fragment(
    case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret, parts = WRITES[case]
    job = Job(
        name="leaky",
        schedule="@daily",
        timezone=ZoneInfo("UTC"),
        command=(sys.executable, "-c", WRITER + "sys.exit(3)", json.dumps(parts)),
        workdir=tmp_path,
        env=mark({"A_SECRET": Secret(secret)}),
    )

    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        row, result = failed_once(job, tmp_path)
    (line,) = [r for r in caplog.records if r.getMessage().startswith("job leaky failed (")]
    (alert,) = AlertBook({}).attempt_finished(
        job, result, retry_at=None, stopped=False, now=datetime.now(UTC)
    )

    tail = row.stderr_tail
    assert "***" in tail and not leaks(tail)
    assert result.stderr_tail == tail
    assert json.loads(JsonFormatter().format(line))["stderr_tail"] == tail
    shown = TextFormatter().format(line).split(" stderr_tail=", 1)[1]  # the last field
    assert "***" in shown and not leaks(shown)
    assert alert.body(host="h")["stderr_tail"] == tail

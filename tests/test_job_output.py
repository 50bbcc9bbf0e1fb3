"""A job's output: its lines in the log as they come, within a budget a run, its head and
tail in history, shown by `history --output` and `logs`, escaped for the terminal."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import Cronplus, Daemon

from cronplus.clock import FakeClock
from cronplus.config.loader import loads
from cronplus.core.model import (
    ConfigError,
    Crontab,
    Job,
    Output,
    OutputLevel,
    RetryPolicy,
    RunResult,
    Settings,
    Trigger,
)
from cronplus.engine.engine import Engine
from cronplus.observe.logs import LOGGER_NAME, EventLog
from cronplus.run.command import Command, kept_text
from cronplus.run.lines import LINE_MAX, Lines
from cronplus.run.runner import Runner
from cronplus.run.secrets import Redactor
from cronplus.state import sqlite as sqlite_state
from cronplus.state.sqlite import SqliteStore

S = timedelta(seconds=1)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Sink:
    def __init__(self, budget: int = 1_000) -> None:
        self.lines: list[tuple[str, str, int]] = []
        self.budget = budget

    def line(self, stream: str, text: str, *, dropped: int) -> bool:
        self.lines.append((stream, text, dropped))
        return len(self.lines) < self.budget


# --- splitting ------------------------------------------------------------------------


def test_reads_become_lines_whatever_the_read_boundaries() -> None:
    sink = Sink()
    lines = Lines("stdout", sink)
    for piece in (b"one\ntw", b"o\n", b"\nthree\r\nfour"):
        lines.feed(piece)
    lines.close()
    assert sink.lines == [
        ("stdout", "one", 0),
        ("stdout", "two", 0),
        ("stdout", "", 0),
        ("stdout", "three", 0),
        ("stdout", "four", 0),
    ]


def test_a_long_line_is_cut_and_the_rest_counted_without_being_kept() -> None:
    sink = Sink()
    lines = Lines("stderr", sink)
    for _ in range(100):
        lines.feed(b"x" * 10_000)  # one line of 1 MB in reads of 10 kB
    lines.feed(b"\nnext\n")
    assert sink.lines[0] == ("stderr", "x" * LINE_MAX, 1_000_000 - LINE_MAX)
    assert sink.lines[1] == ("stderr", "next", 0)
    assert len(lines._partial) == 0


def test_a_secret_is_masked_in_its_line_even_across_reads_and_at_the_cut() -> None:
    hide = Redactor({"API_TOKEN": "s3cr3t-value"})
    sink = Sink()
    lines = Lines("stdout", sink, hide)
    lines.feed(b"token=s3cr3t")
    lines.feed(b"-value ok\n")
    lines.feed(b"y" * (LINE_MAX - 4) + b"s3cr3t-value tail\n")  # straddles the cut
    assert sink.lines[0][1] == "token=*** ok"
    assert sink.lines[1][1] == "y" * (LINE_MAX - 4) + "***"
    assert "s3cr" not in sink.lines[1][1]


def test_once_the_sink_has_had_enough_nothing_more_is_split() -> None:
    sink = Sink(budget=2)
    lines = Lines("stdout", sink)
    lines.feed(b"a\nb\nc\nd\n")
    lines.feed(b"e\n")
    lines.close()
    assert [text for _, text, _ in sink.lines] == ["a", "b"]
    assert not lines.open


def test_history_keeps_the_head_and_tail_and_counts_the_middle() -> None:
    data = b"A" * 100 + "é".encode() * 50 + b"Z" * 100
    kept = kept_text(data, keep=64, size=len(data))
    head, middle, tail = kept.split("\n")
    assert head == "A" * 32
    assert middle == f"[... {len(data) - 64} bytes not kept ...]"
    assert tail == "Z" * 32
    assert kept_text(b"short\n", keep=64, size=6) == "short\n"


# --- a real process ---------------------------------------------------------------------


def test_a_running_job_hands_on_its_lines_before_it_ends(tmp_path: Path) -> None:
    flag = tmp_path / "go"
    script = f"echo first; while [ ! -e {flag} ]; do sleep 0.01; done; echo second >&2"
    command = Command(
        argv=("/bin/sh", "-c", script),
        workdir=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        timeout=20,
        kill_grace=1,
        success_codes=frozenset({0}),
    )
    sink = Sink()

    async def scenario() -> None:
        process = Runner(drain_grace=0.2).start(command)
        process.send_lines(sink)
        for _ in range(1000):  # the first line comes while the job still waits
            if sink.lines:
                break
            await asyncio.sleep(0.01)
        assert sink.lines == [("stdout", "first", 0)]
        assert not process.done
        flag.touch()
        result = await process.wait()
        assert result.stdout == b"first\n"

    asyncio.run(scenario())
    assert sink.lines == [("stdout", "first", 0), ("stderr", "second", 0)]


# --- the engine -------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore.open(tmp_path / "state.db")
    yield opened
    opened.close()


def make_job(tmp_path: Path, command: str, **fields: object) -> Job:
    base = Job(
        name="chatty",
        schedule="0 * * * *",
        timezone=ZoneInfo("UTC"),
        command=command,
        workdir=tmp_path,
        kill_grace=0.5 * S,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


class Finished:
    """The engine's events observer: the results of the attempts that ended."""

    def __init__(self) -> None:
        self.results: list[RunResult] = []

    def attempt_started(self, **_: object) -> None:
        pass

    def attempt_finished(self, *, result: RunResult, **_: object) -> None:
        self.results.append(result)

    def slots_missed(self, **_: object) -> None:
        pass


def run_job(
    tmp_path: Path,
    store: SqliteStore,
    job: Job,
    trigger: Trigger,
    events: Finished | None = None,
) -> None:
    tab = Crontab(path=tmp_path / "c.yaml", settings=Settings(state=store._path), jobs=(job,))
    clock = FakeClock(T0)

    async def scenario() -> None:
        eng = Engine(
            tab,
            store=store,
            runner=Runner(drain_grace=0.2),
            clock=clock,
            base_env={"SERVICE_TOKEN": "hunter2-hunter2"},
            log=EventLog(),
            events=events or Finished(),
        )
        eng.start_slots([(job, T0)], now=clock.now(), trigger=trigger)
        await eng.wait_idle()

    asyncio.run(scenario())


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "cronplus_event", None) == name]


def field(record: logging.LogRecord, name: str) -> object:
    fields: dict[str, object] = getattr(record, "cronplus_fields", {})
    return fields.get(name)


def test_each_line_is_logged_with_its_run_and_kept_in_history(
    tmp_path: Path, store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    job = make_job(
        tmp_path,
        "echo copied 3 files; echo 'token hunter2-hunter2' >&2; exit 4",
        retry=RetryPolicy(retries=1, delay=S),
        stderr_level=OutputLevel.WARNING,
    )
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        run_job(tmp_path, store, job, Trigger.RUN_ONCE)
    lines = events(caplog, "job_output")
    seen = [(field(r, "attempt"), field(r, "stream"), r.getMessage()) for r in lines]
    assert seen == [
        (1, "stdout", "copied 3 files"),
        (1, "stderr", "token ***"),
        (2, "stdout", "copied 3 files"),
        (2, "stderr", "token ***"),
    ]
    assert [r.levelno for r in lines] == [logging.INFO, logging.WARNING] * 2
    assert {field(r, "run_id") for r in lines} == {"chatty@2026-01-01T00:00:00Z"}
    started = events(caplog, "job_started")
    assert [field(r, "trigger") for r in started] == ["run-once", "run-once"]
    assert started[0].getMessage().startswith("job chatty started (attempt 1/2, pid ")
    rows = store.history(job="chatty")
    assert [(r.attempt, r.stdout, r.stderr, r.trigger) for r in rows] == [
        (2, "copied 3 files\n", "token ***\n", Trigger.RUN_ONCE),
        (1, "copied 3 files\n", "token ***\n", Trigger.RUN_ONCE),
    ]


def test_a_chatty_run_is_cut_at_its_budget_and_says_so_once(
    tmp_path: Path, store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    job = make_job(
        tmp_path,
        "i=0; while [ $i -lt 5000 ]; do echo line $i; i=$((i+1)); done; exit 1",
        retry=RetryPolicy(retries=1, delay=S),
        output_log_limit=1024,
        output_keep=512,
    )
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        run_job(tmp_path, store, job, Trigger.RUN)
    lines = events(caplog, "job_output")
    logged = sum(len(r.getMessage()) + 1 for r in lines)
    assert 1024 - 16 < logged <= 1024
    assert {field(r, "attempt") for r in lines} == {1}
    (over,) = events(caplog, "output_not_logged")
    assert "output_log_limit (1K a run)" in over.getMessage()
    row = store.history(job="chatty")[0]
    head, rest = row.stdout.split("\n[... ")
    middle, tail = rest.split(" ...]\n")
    assert head.startswith("line 0\nline 1\n") and len(head) == 256
    assert middle.endswith(" bytes not kept")
    assert tail.endswith("line 4999\n") and len(tail) == 256


def test_discarded_output_is_neither_logged_nor_kept(
    tmp_path: Path, store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    job = make_job(tmp_path, "echo private; echo why >&2; exit 2", output=Output.DISCARD)
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        run_job(tmp_path, store, job, Trigger.RUN)
    assert events(caplog, "job_output") == []
    (row,) = store.history(job="chatty")
    assert (row.stdout, row.stderr, row.stdout_tail) == ("", "", "")
    assert row.stderr_tail == "why"  # the failure line's tail stays, as every failure's


def test_output_keep_0_keeps_no_output_in_history_but_the_alerts_stdout_tail_stays(
    tmp_path: Path, store: SqliteStore
) -> None:
    job = make_job(tmp_path, "echo copied 3 of 4 files; exit 1", output_keep=0)
    finished = Finished()
    run_job(tmp_path, store, job, Trigger.RUN, events=finished)
    (row,) = store.history(job="chatty")
    assert (row.stdout, row.stderr) == ("", "")
    assert [r.stdout_tail for r in finished.results] == ["copied 3 of 4 files"]


# --- the file ---------------------------------------------------------------------------


def test_the_output_fields_load_and_a_bad_one_names_its_line(tmp_path: Path) -> None:
    text = """\
jobs:
  a:
    schedule: "@daily"
    command: "true"
    output: discard
    stderr_level: warning
    output_limit: 8K
    output_log_limit: 1M
    output_keep: 0
"""
    env = {"HOME": str(tmp_path)}
    (job,) = loads(text, path=tmp_path / "c.yaml", env=env).jobs
    assert (job.output, job.stderr_level) == (Output.DISCARD, OutputLevel.WARNING)
    assert (job.output_limit, job.output_log_limit, job.output_keep) == (8192, 1 << 20, 0)
    bad = text.replace("output: discard", "output: quiet").replace("1M", "1Q")
    with pytest.raises(ConfigError) as error:
        loads(bad, path=tmp_path / "c.yaml", env=env)
    message = str(error.value)
    assert "c.yaml:5:13: jobs.a.output:" in message
    assert "c.yaml:8:23: jobs.a.output_log_limit: expected a size such as 64K" in message


# --- an older state file --------------------------------------------------------------------


def test_a_version_1_file_reads_as_it_is_and_upgrades_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.touch(mode=0o600)
    db = sqlite3.connect(path, isolation_level=None)
    sqlite_state.migrate(db, sqlite_state.MIGRATIONS[:1])
    db.execute(
        "INSERT INTO history (run_id, job, scheduled_at, attempt, started_at, finished_at,"
        " outcome, exit_code, signal, duration_s, stderr_tail, reason)"
        " VALUES ('old@x', 'old', 0, 1, 0, 1000000, 'failed', 1, NULL, 1.0, 'boom', '')"
    )
    db.close()
    reader = SqliteStore.open(path, readonly=True)
    (row,) = reader.history()
    reader.close()
    assert (row.job, row.stderr_tail, row.stdout, row.trigger) == ("old", "boom", "", None)
    writer = SqliteStore.open(path)
    (row,) = writer.history()
    writer.close()
    assert (row.job, row.stdout, row.trigger) == ("old", "", None)
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == sqlite_state.SCHEMA_VERSION == 3


# --- the commands -----------------------------------------------------------------------

CHATTY = """\
jobs:
  chatty:
    schedule: "0 3 * * *"
    command: "echo step one; printf 'evil \\\\033]0;title\\\\007 end\\\\n' >&2; exit 5"
    retries: 1
    retry_delay: 0s
"""


def test_history_folds_a_runs_attempts_and_says_why_and_how_it_started(
    cronplus: Cronplus,
) -> None:
    cronplus.write(CHATTY)
    assert cronplus.run("run-once", "--at", "2026-03-08T03:00:00Z").returncode == 1
    assert cronplus.run("run", "chatty").returncode == 1  # a second run, a second slot
    folded = cronplus.run("history").stdout.splitlines()
    assert folded[0].split() == [
        "FINISHED",
        "JOB",
        "SCHEDULED",
        "OUTCOME",
        "ATTEMPTS",
        "EXIT",
        "DURATION_S",
        "STARTED_BY",
        "REASON",
    ]
    assert len(folded) == 3
    for line, how in zip(folded[1:], ["run", "run-once"], strict=True):
        cells = line.split()
        assert cells[1] == "chatty" and cells[3:6] == ["failed", "2", "5"]
        assert cells[7:] == [how, "exit", "code", "5", "is", "not", "a", "success", "code"]
    assert folded[2].split()[2] == "2026-03-08T03:00:00Z"
    unfolded = cronplus.run("history", "--attempts", "-n", "1").stdout.splitlines()
    assert [line.split()[3] for line in unfolded[1:]] == ["2", "1"]
    rows = cronplus.json("history", "-n", "1")
    assert isinstance(rows, list)
    assert [(r["attempt"], r["reason"], r["trigger"]) for r in rows] == [
        (2, "exit code 5 is not a success code", "run"),
        (1, "exit code 5 is not a success code", "run"),
    ]


def test_logs_and_history_output_show_each_attempt_escaped(cronplus: Cronplus) -> None:
    cronplus.write(CHATTY)
    cronplus.run("run", "chatty")
    shown = cronplus.run("logs", "chatty")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "\x1b" not in text and "\x07" not in text
    assert text.count("-- stdout:\nstep one\n") == 2
    assert text.count("-- stderr:\nevil \\x1b]0;title\\x07 end\n") == 2
    assert " attempt 1: failed, exit code 5 is not a success code, run, " in text
    rows = cronplus.json("history", "-n", "1")
    assert isinstance(rows, list)
    run_id = rows[0]["run_id"]
    same = cronplus.json("history", "--output", run_id)
    assert isinstance(same, list)
    assert [(r["attempt"], r["stdout"]) for r in same] == [(1, "step one\n"), (2, "step one\n")]
    assert same[0]["stderr"] == "evil \x1b]0;title\x07 end\n"  # JSON keeps it, escaped by JSON
    unknown = cronplus.run("history", "--output", "chatty@2020-01-01T00:00:00Z")
    assert unknown.returncode == 2
    assert "no run chatty@2020-01-01T00:00:00Z in the history of" in unknown.stderr
    typo = cronplus.run("logs", "chaty")
    assert typo.returncode == 2 and "did you mean chatty?" in typo.stderr


def test_the_daemon_logs_a_jobs_lines_as_json_events(
    cronplus: Cronplus, daemons: Callable[..., Daemon]
) -> None:
    cronplus.write(
        """\
        jobs:
          ticker:
            schedule: "* * * * * *"
            command: "echo tick from the daemon"
        """
    )
    daemon = daemons()
    daemon.wait_event("job_output", count=2)
    daemon.stop()
    outputs = [e for e in daemon.events() if e.get("event") == "job_output"]
    first = outputs[0]
    assert first["message"] == "tick from the daemon"
    assert (first["job"], first["stream"], first["attempt"]) == ("ticker", "stdout", 1)
    assert str(first["run_id"]).startswith("ticker@")
    started = [e for e in daemon.events() if e.get("event") == "job_started"]
    assert started and started[0]["trigger"] == "schedule"


def test_log_level_warning_leaves_out_output_and_starts_but_keeps_failures(
    cronplus: Cronplus,
) -> None:
    cronplus.write(CHATTY)
    quiet = cronplus.run("--log-level", "warning", "--log-format", "json", "run", "chatty")
    assert quiet.returncode == 1
    seen = [json.loads(line)["event"] for line in quiet.stderr.splitlines() if line[:1] == "{"]
    assert "job_output" not in seen and "job_started" not in seen
    assert seen.count("attempt_failed") == 2 and "run_failed" in seen
    loud = cronplus.run("--log-format", "json", "run", "chatty")
    events = [json.loads(line) for line in loud.stderr.splitlines() if line[:1] == "{"]
    assert [e["message"] for e in events if e["event"] == "job_output"][:2] == [
        "step one",
        "evil \x1b]0;title\x07 end",
    ]
    bad = cronplus.run("--log-level", "loud", "run", "chatty")
    assert bad.returncode == 2 and "'loud' is not one of" in bad.stderr

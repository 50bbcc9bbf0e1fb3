"""The runner against real subprocesses: exit codes, environment, timeouts, output bounds.

Every delay here is a fraction of a second. Checks that read ``/proc`` or use
``prctl`` are Linux-only; this is where cronplus's CI runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import pwd
import re
import resource
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from descriptors import limit_descriptors, open_fds

from cronplus.core.model import Job, Outcome, Slot
from cronplus.run import parking
from cronplus.run import runner as runner_module
from cronplus.run.runner import (
    Command,
    ProcessResult,
    Runner,
    RunningProcess,
    command_for,
    job_environment,
    passed_on,
    tail_text,
    watch_exit_pidfd,
    watch_exit_thread,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")

SLOT = Slot(job="backup", scheduled_at=datetime(2026, 3, 8, 7, 0, tzinfo=UTC))
JOB = Job(name="backup", schedule="0 3 * * *", timezone=ZoneInfo("America/New_York"), command="env")
PR_SET_CHILD_SUBREAPER = 36
MIB = 1024 * 1024


T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def command(argv: tuple[str, ...], **overrides: Any) -> Command:
    fields: dict[str, Any] = {
        "argv": argv,
        "workdir": Path("/"),
        "env": dict(os.environ),
        "timeout": 20.0,  # a safety net: no test should ever get near it
        "kill_grace": 0.2,
        "success_codes": frozenset({0}),
    }
    fields.update(overrides)
    return Command(**fields)


def sh(script: str, **overrides: Any) -> Command:
    return command(("/bin/sh", "-c", script), **overrides)


async def execute(cmd: Command, *, drain_grace: float = 0.5) -> ProcessResult:
    return await asyncio.wait_for(Runner(drain_grace=drain_grace).start(cmd).wait(), 30)


# --- /proc helpers ----------------------------------------------------------------------


def _proc_stat(pid: str) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def _processes() -> Iterator[tuple[int, str, int, int]]:
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := _proc_stat(entry)) is not None:
            yield (int(entry), *found)


def live_members(pgid: int) -> list[int]:
    return [pid for pid, state, _, pgrp in _processes() if pgrp == pgid and state != "Z"]


def zombie_children() -> set[int]:
    me = os.getpid()
    return {pid for pid, state, ppid, _ in _processes() if ppid == me and state == "Z"}


def peak_rss_growth(baseline: int) -> int:
    status = Path("/proc/self/status").read_text()
    peak = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(peak.split()[1]) * 1024 - baseline


def reset_peak_rss() -> int:
    """Reset VmHWM (Linux ``clear_refs`` 5) and return the current RSS in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    status = Path("/proc/self/status").read_text()
    rss = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(rss.split()[1]) * 1024


def reap_exited_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def wait_group_gone(pgid: int) -> None:
    """Reap our orphans until ``killpg(pgid, 0)`` says the group no longer exists."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        reap_exited_children()
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)
    raise AssertionError(f"process group {pgid} still has live members {live_members(pgid)}")


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Make this test process the reaper of orphaned grandchildren.

    This machine's PID 1 never reaps orphans, so their zombies would keep a dead process
    group visible to ``killpg`` forever. Standing in as their reaper, as a real init does,
    lets the test tell a dead group from a live one.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        reap_exited_children()


# --- exit codes and commands -------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "success_codes", "outcome", "exit_code"),
    [
        ("exit 0", {0}, Outcome.SUCCEEDED, 0),
        ("exit 1", {0}, Outcome.FAILED, 1),
        ("exit 3", {0, 3}, Outcome.SUCCEEDED, 3),
        ("exit 0", {3}, Outcome.FAILED, 0),
        ("exit 255", {0}, Outcome.FAILED, 255),
    ],
    ids=["zero", "one-is-failure", "three-listed-as-success", "zero-not-listed", "255"],
)
def test_the_exit_code_decides_between_succeeded_and_failed(
    script: str, success_codes: set[int], outcome: Outcome, exit_code: int
) -> None:
    result = run(execute(sh(script, success_codes=frozenset(success_codes))))
    assert (result.outcome, result.exit_code, result.signal) == (outcome, exit_code, None)
    assert result.pid is not None and result.duration_s >= 0
    assert ("not a success code" in result.reason) is (outcome is Outcome.FAILED)


@pytest.mark.parametrize(
    ("job_command", "expected"),
    [
        (("printf", "%s|", "a b", "$HOME", "*"), "a b|$HOME|*|"),
        ('printf \'%s|\' "a b" "$GREETING"', "a b|hello|"),
        ("printf '%s|' $GREETING *", "hello|only-file|"),
    ],
    ids=["argv-is-not-interpreted", "string-runs-in-the-shell", "shell-splits-and-globs"],
)
def test_argv_is_execd_as_is_and_a_string_runs_through_the_shell(
    tmp_path: Path, job_command: tuple[str, ...] | str, expected: str
) -> None:
    (tmp_path / "only-file").touch()
    job = Job(
        name="quoting",
        schedule="* * * * *",
        timezone=ZoneInfo("UTC"),
        command=job_command,
        workdir=tmp_path,
        env={"GREETING": "hello"},
    )
    result = run(execute(command_for(job, SLOT, 1, os.environ)))
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    assert result.stdout.decode() == expected


def test_the_child_runs_in_its_workdir_with_its_env(tmp_path: Path) -> None:
    cmd = sh('pwd; echo "$GREETING"', workdir=tmp_path, env={"GREETING": "hi there"})
    result = run(execute(cmd))
    assert result.stdout.decode().splitlines() == [str(tmp_path.resolve()), "hi there"]


def test_each_attempt_is_its_own_session_and_process_group() -> None:
    probe = "import os; print(os.getpid(), os.getpgid(0), os.getsid(0))"
    result = run(execute(command((sys.executable, "-c", probe))))
    pid, pgid, sid = map(int, result.stdout.split())
    assert pid == pgid == sid == result.pid
    assert sid != os.getsid(0)


# --- environment -------------------------------------------------------------------------

CONTROL = {
    "NOTIFY_SOCKET": "/run/systemd/notify",
    "WATCHDOG_USEC": "30000000",
    "WATCHDOG_PID": "1",
    "LISTEN_FDS": "2",
    "LISTEN_PID": "1",
    "LISTEN_FDNAMES": "a:b",
}


def test_job_environment_is_built_not_inherited_and_adds_cronplus_ones() -> None:
    base = {
        "PATH": "/usr/bin",
        "HOME": "/home/someone",
        "LANG": "de_DE.UTF-8",
        "LC_TIME": "C",
        "TZ": "Europe/Berlin",
        "NOTIFY_SOCKETS": "not cron's",
        "AWS_SECRET_ACCESS_KEY": "not the job's",
        "SSH_AUTH_SOCK": "/tmp/agent",
        **CONTROL,
    }
    job = Job(
        name="backup",
        schedule="0 3 * * *",
        timezone=ZoneInfo("UTC"),
        command="true",
        env={"HOME": "/srv/backup", "CRONPLUS_JOB": "an impostor"},
        inherit_env=("SSH_AUTH_SOCK", "NOTIFY_SOCKET", "NOT_SET"),
    )
    env = job_environment(base, job, SLOT, 2)
    me = pwd.getpwuid(os.geteuid())
    assert env == {
        "PATH": "/usr/bin",
        "LANG": "de_DE.UTF-8",
        "LC_TIME": "C",
        "TZ": "Europe/Berlin",
        "HOME": "/srv/backup",  # the job's own env wins over the user database's
        "USER": me.pw_name,
        "LOGNAME": me.pw_name,
        "SHELL": me.pw_shell,
        "SSH_AUTH_SOCK": "/tmp/agent",  # named in inherit_env; a control variable never is
        "CRONPLUS_JOB": "backup",
        "CRONPLUS_SCHEDULED_AT": "2026-03-08T07:00:00Z",
        "CRONPLUS_ATTEMPT": "2",
        "CRONPLUS_RUN_ID": SLOT.run_id,
    }


def test_a_passed_on_environment_is_filtered_once_and_gives_the_same_job_environment() -> None:
    base = {"PATH": "/usr/bin", "LISTEN_FDS": "3", **CONTROL}
    shared = passed_on(base)
    assert shared == {"PATH": "/usr/bin"}
    assert passed_on(shared) is shared  # already filtered: not copied again
    env = job_environment(shared, JOB, SLOT, 1)
    assert env == job_environment(base, JOB, SLOT, 1)
    env["PATH"] = "/changed"
    assert shared["PATH"] == "/usr/bin"  # each attempt gets its own copy


def test_the_child_sees_cronplus_variables_and_no_control_variables() -> None:
    base = {"PATH": os.environ["PATH"], **CONTROL}
    result = run(execute(command_for(JOB, SLOT, 3, base)))
    seen = dict(line.split("=", 1) for line in result.stdout.decode().splitlines())
    assert not set(CONTROL) & set(seen)
    assert seen["CRONPLUS_JOB"] == "backup"
    assert seen["CRONPLUS_SCHEDULED_AT"] == "2026-03-08T07:00:00Z"
    assert seen["CRONPLUS_ATTEMPT"] == "3"
    assert seen["CRONPLUS_RUN_ID"] == "backup@2026-03-08T07:00:00Z"


def test_the_run_id_is_the_same_for_every_attempt_of_a_slot_and_differs_between_slots() -> None:
    later = Slot(job="backup", scheduled_at=SLOT.scheduled_at + timedelta(days=1))
    first, retry = (job_environment({}, JOB, SLOT, n) for n in (1, 2))
    other = job_environment({}, JOB, later, 1)
    assert first["CRONPLUS_RUN_ID"] == retry["CRONPLUS_RUN_ID"] != other["CRONPLUS_RUN_ID"]
    assert (first["CRONPLUS_ATTEMPT"], retry["CRONPLUS_ATTEMPT"]) == ("1", "2")


def test_job_environment_rejects_an_attempt_below_one() -> None:
    with pytest.raises(ValueError, match=r"job 'backup': attempt must be >= 1, got 0"):
        job_environment({}, JOB, SLOT, 0)


@pytest.mark.parametrize(
    ("timeout", "kill_grace", "expected"),
    [
        (timedelta(minutes=10), timedelta(seconds=10), (600.0, 10.0)),
        (None, timedelta(milliseconds=1500), (None, 1.5)),
    ],
    ids=["ten-minutes", "no-limit"],
)
def test_command_for_turns_durations_into_seconds(
    timeout: timedelta | None, kill_grace: timedelta, expected: tuple[float | None, float]
) -> None:
    job = Job(
        name="j",
        schedule="* * * * *",
        timezone=ZoneInfo("UTC"),
        command=("true",),
        workdir=Path("/srv"),
        timeout=timeout,
        kill_grace=kill_grace,
        success_codes=frozenset({0, 3}),
    )
    cmd = command_for(job, SLOT, 1, {})
    assert (cmd.timeout, cmd.kill_grace) == expected
    assert (cmd.argv, cmd.workdir, cmd.success_codes) == (
        ("true",),
        Path("/srv"),
        frozenset({0, 3}),
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"argv": ()}, r"Command.argv: expected at least the program name, got \(\)"),
        ({"timeout": 0.0}, r"Command.timeout for 'true': expected seconds > 0 or None, got 0.0"),
        ({"kill_grace": -1.0}, r"Command.kill_grace for 'true': expected seconds >= 0"),
        ({"output_limit": -1}, r"Command.output_limit for 'true': expected bytes >= 0"),
    ],
    ids=["empty-argv", "zero-timeout", "negative-grace", "negative-limit"],
)
def test_a_command_with_impossible_values_is_rejected_by_name(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        fields = {"argv": ("true",), **overrides}
        command(fields.pop("argv"), **fields)


def test_a_runner_rejects_a_negative_drain_grace() -> None:
    with pytest.raises(ValueError, match=r"drain_grace: expected seconds >= 0, got -1"):
        Runner(drain_grace=-1)


def test_start_needs_a_running_event_loop() -> None:
    with pytest.raises(RuntimeError, match="no running event loop"):
        Runner().start(command(("true",)))


# --- timeouts, signals, terminate -----------------------------------------------------


@pytest.mark.usefixtures("subreaper")
def test_a_timeout_ends_the_whole_group_and_keeps_the_output() -> None:
    cmd = sh("echo before; sleep 300 & sleep 300", timeout=0.3, kill_grace=0.3)
    result = run(execute(cmd))
    assert result.outcome is Outcome.TIMED_OUT
    assert (result.exit_code, result.signal) == (None, signal.SIGTERM)
    assert result.reason == "timed out after 0.3s; ended by SIGTERM"
    assert result.stdout == b"before\n"
    assert result.pid is not None
    wait_group_gone(result.pid)


@pytest.mark.usefixtures("subreaper")
@pytest.mark.parametrize(
    ("script", "main_signal"),
    [
        # The grandchild lets go of the pipes, so only the group check keeps the run open.
        ("(trap '' TERM; exec sleep 300 >/dev/null 2>&1) & sleep 300", signal.SIGTERM),
        ("trap '' TERM; sleep 300 & sleep 300", signal.SIGKILL),
    ],
    ids=["a-grandchild-ignores-it", "everyone-ignores-it"],
)
def test_whoever_ignores_sigterm_after_a_timeout_is_sigkilled_after_kill_grace(
    script: str, main_signal: int
) -> None:
    result = run(execute(sh(script, timeout=0.5, kill_grace=0.3)))
    assert result.outcome is Outcome.TIMED_OUT
    assert (result.exit_code, result.signal) == (None, main_signal)
    assert result.pid is not None
    wait_group_gone(result.pid)


def test_a_main_child_that_ignores_sigterm_is_waited_for_until_kill_grace() -> None:
    result = run(execute(sh("trap '' TERM; sleep 300", timeout=0.5, kill_grace=0.3)))
    assert (result.outcome, result.signal) == (Outcome.TIMED_OUT, signal.SIGKILL)
    assert result.duration_s >= 0.5 + 0.3 - 0.01


@pytest.mark.parametrize(
    ("script", "number", "name"),
    [("kill -KILL $$", 9, "SIGKILL"), ("kill -TERM $$", 15, "SIGTERM")],
    ids=["sigkill", "sigterm"],
)
def test_a_job_killed_by_a_signal_records_the_signal(script: str, number: int, name: str) -> None:
    result = run(execute(sh(script)))
    assert (result.outcome, result.exit_code, result.signal) == (Outcome.KILLED, None, number)
    assert result.reason == f"killed by {name}"


async def _until_exists(path: Path) -> None:
    for _ in range(500):
        if path.exists():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


@pytest.mark.usefixtures("subreaper")
@pytest.mark.parametrize(
    ("trap", "number"),
    [("", signal.SIGTERM), ("trap '' TERM;", signal.SIGKILL)],
    ids=["obeys-sigterm", "ignores-sigterm"],
)
def test_terminate_stops_a_running_group(tmp_path: Path, trap: str, number: int) -> None:
    cmd = sh(f"{trap} sleep 300 & : > ready; wait", workdir=tmp_path, timeout=None)

    async def scenario() -> tuple[ProcessResult, list[RunningProcess], list[RunningProcess]]:
        runner = Runner()
        process = runner.start(cmd)
        await _until_exists(tmp_path / "ready")
        alive = runner.running()
        process.terminate(5.0)
        process.terminate(0.2)  # a second call may bring the SIGKILL closer,
        process.terminate(10.0)  # but never push it back
        result = await asyncio.wait_for(process.wait(), 10)
        process.terminate(0.2)  # and one after the end is harmless
        return result, alive, runner.running()

    result, alive_before, alive_after = run(scenario())
    assert (result.outcome, result.exit_code, result.signal) == (Outcome.KILLED, None, number)
    assert result.reason.startswith("terminated by cronplus")
    assert result.duration_s < 4
    assert [p.pid for p in alive_before] == [result.pid] and alive_after == []
    assert result.pid is not None
    wait_group_gone(result.pid)


@pytest.mark.usefixtures("subreaper")
def test_a_timeout_that_comes_during_terminate_changes_neither_outcome_nor_grace(
    tmp_path: Path,
) -> None:
    cmd = sh("trap '' TERM; : > ready; sleep 300", workdir=tmp_path, timeout=0.2)

    async def scenario() -> ProcessResult:
        process = Runner().start(cmd)
        await _until_exists(tmp_path / "ready")
        process.terminate(0.7)
        return await asyncio.wait_for(process.wait(), 10)

    result = run(scenario())
    assert (result.outcome, result.signal) == (Outcome.KILLED, signal.SIGKILL)
    assert result.reason == "terminated by cronplus; ended by SIGKILL"
    assert result.duration_s >= 0.7 - 0.01


def test_a_cancelled_waiter_does_not_cancel_the_result_for_others() -> None:
    async def scenario() -> ProcessResult:
        process = Runner().start(sh("sleep 0.2; exit 5"))
        impatient = asyncio.ensure_future(process.wait())
        await asyncio.sleep(0.01)
        impatient.cancel()
        return await process.wait()

    assert run(scenario()).exit_code == 5


# --- output ---------------------------------------------------------------------------


def test_two_gigabytes_and_a_100_mb_line_cost_the_daemon_under_10_mb() -> None:
    gigabytes, line = 2_000_000_000, 100_000_000
    script = f"head -c {gigabytes} /dev/zero; head -c {line} /dev/zero | tr '\\0' x >&2"

    async def scenario() -> tuple[ProcessResult, int]:
        baseline = reset_peak_rss()
        result = await execute(sh(script, timeout=60.0))
        return result, peak_rss_growth(baseline)

    result, growth = run(scenario())
    assert result.outcome is Outcome.SUCCEEDED
    assert growth < 10 * MIB, f"peak RSS grew by {growth / MIB:.1f} MiB"
    limit = 64 * 1024
    for stream, size, byte in ((result.stdout, gigabytes, b"\0"), (result.stderr, line, b"x")):
        marker = f"\n[... {size - 2 * limit} bytes dropped ...]\n".encode()
        assert stream == byte * limit + marker + byte * limit


def _numbers(count: int) -> bytes:
    return "".join(f"{i:04d}" for i in range(count)).encode()


@pytest.mark.parametrize(
    ("count", "limit"),
    [(10, 100), (50, 100), (51, 100), (1000, 100), (1000, 0)],
    ids=["under-the-limit", "exactly-head-and-tail", "one-over", "far-over", "limit-zero"],
)
def test_output_keeps_its_head_and_tail_around_a_dropped_bytes_marker(
    count: int, limit: int
) -> None:
    # Each printf is its own write(), so the tail is built from many small chunks.
    script = f'i=0; while [ $i -lt {count} ]; do printf "%04d" $i; i=$((i+1)); done'
    result = run(execute(sh(f"{script}; {script} >&2", output_limit=limit)))
    full = _numbers(count)
    if len(full) <= 2 * limit:
        expected = full
    else:
        dropped = len(full) - 2 * limit
        expected = full[:limit] + f"\n[... {dropped} bytes dropped ...]\n".encode()
        expected += full[len(full) - limit :]
    assert result.stdout == expected
    assert result.stderr == expected


def test_non_utf8_output_is_kept_as_bytes_and_replaced_only_in_the_tail_text() -> None:
    result = run(execute(sh(r"printf '\377\376ok\n'; printf 'caf\351\n' >&2")))
    assert result.stdout == b"\xff\xfeok\n"
    assert result.stderr == b"caf\xe9\n"
    assert result.stdout_tail == "\ufffd\ufffdok"
    assert result.stderr_tail == "caf\ufffd"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"".join(b"line %d\n" % i for i in range(30)),
            "\n".join(f"line {i}" for i in range(10, 30)),
        ),
        (b"a" * 5000 + b"\nend", "a" * (4096 - 4) + "\nend"),
        (b"\xc3\xa9" * 3000, "\xe9" * 2048),
        (b"\xc3\xa9" * 3000 + b"!", "\xe9" * 2047 + "!"),
        (b"", ""),
    ],
    ids=["last-20-lines", "last-4-kib", "utf8-cut-even", "utf8-cut-mid-char", "empty"],
)
def test_the_tail_text_is_the_last_20_lines_within_4_kib(data: bytes, expected: str) -> None:
    assert tail_text(data) == expected
    result = ProcessResult(
        outcome=Outcome.FAILED,
        exit_code=1,
        signal=None,
        duration_s=0.0,
        pid=1,
        stdout=b"",
        stderr=data,
    )
    assert result.stderr_tail == expected


@pytest.mark.usefixtures("subreaper")
def test_a_grandchild_holding_the_pipe_does_not_hold_the_run() -> None:
    async def scenario() -> tuple[ProcessResult, float]:
        loop = asyncio.get_running_loop()
        began = loop.time()
        result = await execute(sh("sleep 30 & echo done"), drain_grace=0.2)
        return result, loop.time() - began

    result, elapsed = run(scenario())
    assert result.outcome is Outcome.SUCCEEDED
    assert result.stdout == b"done\n"
    assert elapsed < 5, f"the run took {elapsed:.1f}s though its main child exited at once"
    assert result.pid is not None
    # A normal job's background children are its own business: still alive.
    assert len(live_members(result.pid)) == 1
    os.killpg(result.pid, signal.SIGKILL)
    wait_group_gone(result.pid)


@pytest.mark.usefixtures("subreaper")
def test_a_timeout_does_not_touch_a_finished_job_whose_grandchild_still_drains() -> None:
    result = run(execute(sh("sleep 30 & echo done", timeout=0.2), drain_grace=0.6))
    assert (result.outcome, result.reason) == (Outcome.SUCCEEDED, "")
    assert result.pid is not None
    assert len(live_members(result.pid)) == 1
    os.killpg(result.pid, signal.SIGKILL)
    wait_group_gone(result.pid)


@pytest.mark.usefixtures("subreaper")
def test_terminate_after_the_main_child_exited_stops_the_leftovers_but_keeps_its_outcome() -> None:
    async def scenario() -> ProcessResult:
        process = Runner(drain_grace=10.0).start(sh("sleep 30 & exit 3"))
        for _ in range(500):  # until the main child has been reaped
            if _proc_stat(str(process.pid)) is None:
                break
            await asyncio.sleep(0.01)
        process.terminate(0.2)
        return await asyncio.wait_for(process.wait(), 5)

    result = run(scenario())
    assert (result.outcome, result.exit_code, result.signal) == (Outcome.FAILED, 3, None)
    assert result.pid is not None
    wait_group_gone(result.pid)


def test_a_job_that_closes_its_output_is_still_waited_for() -> None:
    result = run(execute(sh("exec >&- 2>&-; sleep 0.3; exit 4"), drain_grace=0.05))
    assert (result.outcome, result.exit_code) == (Outcome.FAILED, 4)
    assert result.duration_s >= 0.3 - 0.01


# --- commands that cannot start -----------------------------------------------------------


def _make_file(path: Path, mode: int) -> Path:
    path.write_text("#!/bin/sh\necho hi\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing-command", "command not found: no-such-command-cronplus"),
        ("not-executable", "permission denied: ./script.sh"),
        ("missing-interpreter", "cannot run ./script.sh: its #! interpreter was not found"),
        ("missing-workdir", "workdir does not exist: {tmp}/nowhere"),
        ("workdir-is-a-file", "workdir is not a directory: {tmp}/script.sh"),
    ],
    ids=["missing-command", "not-executable", "missing-interpreter", "missing-workdir", "file"],
)
def test_a_command_that_cannot_start_is_a_failed_attempt(
    tmp_path: Path, case: str, reason: str
) -> None:
    script = _make_file(tmp_path / "script.sh", stat.S_IRUSR | stat.S_IWUSR)
    argv, workdir = ("./script.sh",), tmp_path
    if case == "missing-command":
        argv = ("no-such-command-cronplus",)
    elif case == "missing-interpreter":
        script.write_text("#!/no/such/interpreter\n")
        script.chmod(stat.S_IRWXU)
    elif case == "missing-workdir":
        workdir = tmp_path / "nowhere"
    elif case == "workdir-is-a-file":
        workdir = script

    async def scenario() -> tuple[RunningProcess, list[RunningProcess], ProcessResult]:
        runner = Runner()
        process = runner.start(command(argv, workdir=workdir))
        return process, runner.running(), await process.wait()

    process, alive, result = run(scenario())
    assert process.done and process.pid is None and alive == []
    assert (result.outcome, result.exit_code, result.signal) == (Outcome.FAILED, None, None)
    assert result.reason == reason.format(tmp=tmp_path)


@pytest.mark.parametrize(
    ("argv", "env", "reason"),
    [
        (("echo", "a\0b"), {}, "cannot start echo: embedded null byte"),
        (("echo",), {"A=B": "c"}, "cannot start echo: illegal environment variable name"),
    ],
    ids=["nul-in-argv", "equals-in-a-variable-name"],
)
def test_text_that_exec_cannot_carry_is_a_failed_attempt(
    argv: tuple[str, ...], env: dict[str, str], reason: str
) -> None:
    fds = open_fds()
    result = run(execute(command(argv, env=env)))
    assert (result.outcome, result.pid, result.reason) == (Outcome.FAILED, None, reason)
    assert open_fds() == fds


@pytest.mark.parametrize(
    "free",
    [0, 2, 4, 5],
    ids=["no-pipe", "stdout-pipe-only", "both-pipes-no-devnull", "no-exec-error-pipe"],
)
def test_running_out_of_file_descriptors_is_a_failed_attempt_that_leaks_none(free: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    async def scenario() -> ProcessResult:
        limit_descriptors(free, hard)
        try:
            return await Runner().start(command(("true",))).wait()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    fds = open_fds()
    result = run(scenario())
    assert open_fds() == fds
    assert (result.outcome, result.pid, result.exit_code) == (Outcome.FAILED, None, None)
    assert result.reason.startswith("cannot start true: too many open files")


# --- many at once, and the exit watchers ------------------------------------------------


def test_two_hundred_concurrent_jobs_finish_right_and_leak_nothing() -> None:
    count = 200
    script = 'echo "$1"; echo "err $1" >&2; exit $(($1 % 4))'

    async def scenario(runner: Runner) -> list[ProcessResult]:
        processes = [
            runner.start(command(("/bin/sh", "-c", script, "sh", str(i)))) for i in range(count)
        ]
        assert len(runner.running()) == count
        return await asyncio.wait_for(asyncio.gather(*(p.wait() for p in processes)), 30)

    zombies, fds = zombie_children(), open_fds()
    runner = Runner()
    results = run(scenario(runner))
    for i, result in enumerate(results):
        expected = Outcome.SUCCEEDED if i % 4 == 0 else Outcome.FAILED
        assert (result.outcome, result.exit_code) == (expected, i % 4)
        assert (result.stdout, result.stderr) == (f"{i}\n".encode(), f"err {i}\n".encode())
    assert len({result.pid for result in results}) == count
    assert runner.running() == []
    assert zombie_children() == zombies
    assert open_fds() == fds


@pytest.mark.skipif(parking.open_descriptors() == 0, reason="no count in /proc/self/fd")
def test_a_burst_keeps_its_read_ends_out_of_the_table_until_the_next_loop_turn() -> None:
    count = 200
    script = 'echo "$1"; echo "err $1" >&2'

    async def scenario() -> tuple[int, list[ProcessResult]]:
        runner = Runner()
        processes = [
            runner.start(command(("/bin/sh", "-c", script, "sh", str(i)))) for i in range(count)
        ]
        # Without parking the table would hold 400 read ends by now (parking.py).
        during = open_fds()
        results = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in processes)), 30)
        return during, results

    fds = open_fds()
    during, results = run(scenario())
    assert during - fds < 40
    assert [(r.stdout, r.stderr) for r in results] == [
        (f"{i}\n".encode(), f"err {i}\n".encode()) for i in range(count)
    ]
    assert open_fds() == fds


def test_a_burst_past_the_descriptor_limit_fails_clearly_and_loses_no_output() -> None:
    """Parking must not let a burst spawn more than the table can take back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = 150

    async def scenario() -> list[ProcessResult]:
        limit_descriptors(200, hard)
        try:
            runner = Runner()
            processes = [
                runner.start(command(("/bin/sh", "-c", 'echo "$1"', "sh", str(i))))
                for i in range(count)
            ]
            return await asyncio.wait_for(asyncio.gather(*(p.wait() for p in processes)), 30)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    fds = open_fds()
    results = run(scenario())
    failed = [r for r in results if r.outcome is Outcome.FAILED]
    assert 0 < len(failed) < count
    for result in failed:
        assert result.reason.startswith("cannot start /bin/sh: too many open files"), result
    for i, result in enumerate(results):
        if result.outcome is not Outcome.FAILED:
            assert (result.outcome, result.stdout) == (Outcome.SUCCEEDED, f"{i}\n".encode())
    assert open_fds() == fds


def test_a_job_whose_parked_output_cannot_be_taken_back_is_killed_and_failed_clearly() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = 20  # the first 16 park their 32 read ends (parking.BATCH)

    async def scenario() -> list[ProcessResult]:
        runner = Runner()
        processes = [
            runner.start(command(("/bin/sh", "-c", 'echo "$1"', "sh", str(i))))
            for i in range(count)
        ]
        # Something else fills the table before the next loop turn takes them back.
        limit_descriptors(4, hard)
        try:
            await asyncio.sleep(0)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        return await asyncio.wait_for(asyncio.gather(*(p.wait() for p in processes)), 30)

    fds = open_fds()
    results = run(scenario())
    lost = [i for i, r in enumerate(results) if r.reason.startswith("killed at its start")]
    assert lost == list(range(2, 16)), [r.reason for r in results]  # 4 ends came back
    for i, result in enumerate(results):
        if i in lost:
            assert result.outcome is Outcome.FAILED
            assert result.reason == (
                "killed at its start, its output unreadable: /bin/sh: too many open files "
                "(each running job holds 3 file descriptors; raise the daemon's limit: "
                "ulimit -n, LimitNOFILE=)"
            )
        else:
            assert (result.outcome, result.stdout) == (Outcome.SUCCEEDED, f"{i}\n".encode())
    assert open_fds() == fds


def test_a_start_that_cannot_be_watched_leaves_the_others_of_its_turn_watched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watch = runner_module._watch_exit
    refused: list[int] = []

    def first_refused(loop: asyncio.AbstractEventLoop, popen: Any, on_exit: Any) -> None:
        if not refused:
            refused.append(popen.pid)
            raise RuntimeError("can't start new thread")
        watch(loop, popen, on_exit)

    monkeypatch.setattr(runner_module, "_watch_exit", first_refused)

    async def scenario() -> tuple[list[object], list[ProcessResult]]:
        reported: list[object] = []
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, context: reported.append(context["exception"])
        )
        runner = Runner()
        first, *others = [runner.start(command(("true",))) for _ in range(3)]
        results = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in others)), 30)
        assert first._popen is not None
        first._popen.wait()  # never watched: reap it here
        return reported, results

    reported, results = run(scenario())
    assert [str(error) for error in reported] == ["can't start new thread"]
    assert [r.outcome for r in results] == [Outcome.SUCCEEDED] * 2


Watcher = Callable[[asyncio.AbstractEventLoop, "subprocess.Popen[bytes]", Callable[[], None]], None]


@pytest.mark.parametrize("watch", [watch_exit_pidfd, watch_exit_thread], ids=["pidfd", "thread"])
def test_an_exit_watcher_reports_the_exit_once_after_reaping(watch: Watcher) -> None:
    async def scenario() -> tuple[list[int | None], subprocess.Popen[bytes]]:
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        calls: list[int | None] = []
        popen = subprocess.Popen(["/bin/sh", "-c", "sleep 0.1; exit 7"])

        def on_exit() -> None:
            calls.append(popen.returncode)
            if not exited.done():
                exited.set_result(None)

        watch(loop, popen, on_exit)
        assert calls == []
        await asyncio.wait_for(exited, 10)
        await asyncio.sleep(0.05)  # room for a wrong second call
        return calls, popen

    calls, popen = run(scenario())
    assert calls == [7]
    assert _proc_stat(str(popen.pid)) is None, "the child was not reaped"


def test_the_spawn_benchmark_runs_every_way_and_prints_a_table() -> None:
    bench = Path(__file__).resolve().parent.parent / "bench" / "bench_spawn.py"
    done = subprocess.run(
        [sys.executable, str(bench), "-n", "5", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    rows = [line.strip("|").split("|") for line in done.stdout.splitlines() if line[:1] == "|"]
    header, separator, *body = ([cell.strip() for cell in row] for row in rows)
    assert header[0] == "way" and set(separator) == {"---"}
    assert [row[0] for row in body] == ["popen", "posix_spawn", "asyncio", "runner"]
    spread = r"\d+\.\d{3} \(\d+\.\d{3}–\d+\.\d{3}\)"
    for row in body:
        assert all(re.fullmatch(spread, cell) for cell in row[1:3]), row
        assert re.fullmatch(r"[\d,]+", row[3]), row

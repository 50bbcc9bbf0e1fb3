"""Resource limits: reading them, the exec wrapper, and real jobs that hit them.

A memory hog, a CPU spinner, a fork bomb and a descriptor hog each run under a small limit
and must end ``killed`` with the limit named; a job that stays inside its limits sees
exactly them, and its environment and signals as they would be without the wrapper.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import resource
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from attacker import throwaway
from test_runner import (
    live_members,
    peak_rss_growth,
    reap_exited_children,
    reset_peak_rss,
    subreaper,
)

from cronplus.core.model import Account, Limits, Outcome
from cronplus.run import limit_exec, limits
from cronplus.run.runner import Command, ProcessResult, Runner

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="limits are enforced on Linux")
__all__ = ["subreaper"]  # a fixture, used by name

MIB = 1024 * 1024
SPARE = "cronplus-spare"
"""A user no other process (nor any other test) runs as: RLIMIT_NPROC counts per user."""


def command(argv: tuple[str, ...], **overrides: Any) -> Command:
    fields: dict[str, Any] = {
        "argv": argv,
        "workdir": Path("/"),
        "env": dict(os.environ),
        "timeout": 20.0,  # a safety net: no test gets near it
        "kill_grace": 0.2,
        "success_codes": frozenset({0}),
    }
    fields.update(overrides)
    return Command(**fields)


def execute(cmd: Command) -> ProcessResult:
    async def scenario() -> ProcessResult:
        return await asyncio.wait_for(Runner(drain_grace=0.2).start(cmd).wait(), 30)

    return asyncio.run(scenario())


def python(code: str, **overrides: Any) -> Command:
    return command((sys.executable, "-c", code), **overrides)


# --- reading ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("512M", 512 * MIB),
        ("2G", 2048 * MIB),
        ("1.5G", 1536 * MIB),
        ("1T", 1024**4),
        ("2048K", 2 * MIB),
        (4 * MIB, 4 * MIB),
        ("1048576", MIB),
    ],
    ids=["M", "G", "fraction", "T", "K", "integer-bytes", "string-bytes"],
)
def test_a_size_reads_units_as_powers_of_1024(value: object, size: int) -> None:
    assert limits.parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("512", "expected at least 1M, got 512 bytes; did you mean 512M?"),
        ("512m", "expected a size such as 512M"),
        ("5 M", "expected a size such as 512M"),
        ("-1M", "expected a size such as 512M"),
        (True, "got the boolean true"),
        ([1], "got a list"),
    ],
    ids=["too-small", "lower-case-unit", "space", "negative", "boolean", "list"],
)
def test_a_bad_size_says_what_was_expected(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        limits.parse_size(value)


@pytest.mark.parametrize(
    ("seconds", "whole"), [(1, 1), (1.2, 2), (600, 600)], ids=["one", "rounded-up", "10m"]
)
def test_cpu_time_is_whole_seconds_rounded_up(seconds: float, whole: int) -> None:
    assert limits.parse_cpu_time(seconds) == whole


def test_cpu_time_under_a_second_is_refused_as_the_kernel_counts_seconds() -> None:
    with pytest.raises(ValueError, match=r"at least 1s \(the kernel counts whole seconds\)"):
        limits.parse_cpu_time(0.5)


@pytest.mark.parametrize(
    ("value", "percent"), [("50%", 50.0), ("250%", 250.0), ("12.5%", 12.5)], ids=str
)
def test_a_cpu_quota_is_a_percentage_of_one_cpu(value: str, percent: float) -> None:
    assert limits.parse_percent(value) == percent


@pytest.mark.parametrize("value", ["50", "0%", 50, "-5%"], ids=repr)
def test_a_bad_cpu_quota_says_what_was_expected(value: object) -> None:
    with pytest.raises(ValueError, match="expected a percentage of one CPU such as 50%"):
        limits.parse_percent(value)


@pytest.mark.parametrize(
    ("size", "text"),
    [(64 * MIB, "64M"), (2 * 1024 * MIB, "2G"), (1536 * 1024, "1536K"), (MIB + 1, "1048577 bytes")],
    ids=["M", "G", "K", "bytes"],
)
def test_a_size_is_written_in_its_largest_whole_unit(size: int, text: str) -> None:
    assert limits.format_size(size) == text


def test_defaults_and_job_limits_merge_key_by_key_and_the_job_wins() -> None:
    merged = limits.merged({"memory": MIB, "cpu_time": 5}, {"cpu_time": 9, "open_files": 64})
    assert merged == Limits(memory=MIB, cpu_time=9, open_files=64)


# --- what the child gets ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (Limits(), []),
        (Limits(memory=MIB), [("DATA", MIB, MIB)]),
        (Limits(cpu_time=5), [("CPU", 5, 6)]),
        (Limits(open_files=64, processes=32), [("NOFILE", 64, 64), ("NPROC", 32, 32)]),
        (Limits(memory=MIB, processes=32, cpu_time=5, cgroup=True), [("CPU", 5, 6)]),
    ],
    ids=["none", "memory-is-data", "cpu-kill-a-second-later", "files-and-processes", "cgroup"],
)
def test_each_limit_maps_to_its_rlimit_unless_the_scope_counts_it(
    limit: Limits, expected: list[tuple[str, int, int]]
) -> None:
    assert limits.rlimits(limit) == expected


SCOPE = ["systemd-run", "--scope", "--quiet", "--collect"]
NOBODY = Account(name="nobody", uid=65534, gid=65534, groups=(65534,), home="/nonexistent")


@pytest.mark.parametrize(
    ("limit", "account", "euid", "expected"),
    [
        (Limits(), None, 0, ["job"]),
        (
            Limits(),
            NOBODY,
            0,
            [
                "WRAP",
                "--user=nobody",
                "--group=nogroup",
                "--cwd=/srv",
                "--no-lc-ctype",
                "--",
                "job",
            ],
        ),
        (
            Limits(open_files=8),
            NOBODY,
            0,
            [
                "WRAP",
                "--rlimit=NOFILE:8:8",
                "--user=nobody",
                "--group=nogroup",
                "--cwd=/srv",
                "--no-lc-ctype",
                "--",
                "job",
            ],
        ),
        (
            Limits(memory=MIB, cpu_quota=50, processes=9, cgroup=True),
            None,
            0,
            [
                *SCOPE,
                "--description=cronplus job j",
                "-p",
                f"MemoryMax={MIB}",
                "-p",
                "MemorySwapMax=0",
                "-p",
                "CPUQuota=50%",
                "-p",
                "TasksMax=9",
                "--",
                "job",
            ],
        ),
        (
            Limits(cgroup=True),
            NOBODY,
            1000,
            [
                *SCOPE,
                "--user",
                "--description=cronplus job j",
                "--",
                "WRAP",
                "--user=nobody",
                "--group=nogroup",
                "--cwd=/srv",
                "--no-lc-ctype",
                "--",
                "job",
            ],
        ),
    ],
    ids=[
        "plain",
        "a-user-always-by-the-wrapper",
        "wrapper-sets-limits-then-user",
        "scope",
        "user-in-a-scope",
    ],
)
def test_launch_puts_the_scope_then_the_wrapper_before_the_job(
    limit: Limits, account: Account | None, euid: int, expected: list[str]
) -> None:
    wrapped = limits.needs_wrapper(limit, account)
    argv = limits.launch(
        ("job",),
        limits=limit,
        account=account,
        env={"CRONPLUS_JOB": "j"},
        euid=euid,
        status_fd=7 if wrapped else None,
        group="nogroup" if account is not None else None,
        workdir="/srv",
    )
    wrapper = [sys.executable, "-I", "-S", limits.WRAPPER, "--status-fd=7"]
    at = next((i for i in range(len(argv)) if argv[i : i + len(wrapper)] == wrapper), None)
    shown = argv if at is None else [*argv[:at], "WRAP", *argv[at + len(wrapper) :]]
    assert shown == expected
    assert wrapped == (account is not None or bool(limit.open_files))


def test_a_scope_is_bound_to_the_daemons_own_service() -> None:
    argv = limits.scope_argv(
        Limits(memory=MIB, cgroup=True), euid=0, env={}, bound_to="cronplus.service"
    )

    assert argv == [
        *SCOPE,
        "-p",
        "BindsTo=cronplus.service",
        "-p",
        f"MemoryMax={MIB}",
        "-p",
        "MemorySwapMax=0",
        "--",
    ]


@pytest.mark.parametrize(
    ("limit", "signal_number", "stderr", "expected"),
    [
        (Limits(cpu_time=2), signal.SIGXCPU, "", ("cpu_time", "cpu_time: used up its 2s")),
        (
            Limits(memory=64 * MIB),
            None,
            "Traceback...\nMemoryError",
            ("memory", "memory: ran out of its 64M"),
        ),
        (Limits(memory=64 * MIB), None, "x: Cannot allocate memory", ("memory", "memory: ran out")),
        (
            Limits(memory=MIB, cgroup=True),
            signal.SIGKILL,
            "",
            ("memory", "memory: killed by SIGKILL"),
        ),
        (Limits(processes=8), None, "sh: 1: Cannot fork", ("processes", "processes: could not")),
        (
            Limits(open_files=8),
            None,
            "OSError: [Errno 24] Too many open files",
            ("open_files", "open_files:"),
        ),
        (Limits(), signal.SIGXCPU, "MemoryError Cannot fork", None),
        (Limits(memory=MIB), signal.SIGKILL, "", None),
        (Limits(cpu_time=2), None, "exit 3", None),
    ],
    ids=[
        "sigxcpu",
        "python-memoryerror",
        "enomem",
        "oom-kill-in-a-scope",
        "fork-refused",
        "emfile",
        "no-limits-no-verdict",
        "sigkill-without-a-scope-is-not-memory",
        "an-ordinary-failure",
    ],
)
def test_the_verdict_names_the_limit_only_on_its_evidence(
    limit: Limits, signal_number: int | None, stderr: str, expected: tuple[str, str] | None
) -> None:
    found = limits.verdict(limit, signal_number=signal_number, stderr_tail=stderr)
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert (found[0], found[1][: len(expected[1])]) == expected


# --- the wrapper's own command line -----------------------------------------------------


def test_the_wrapper_reads_its_options_and_the_argv_after_the_double_dash() -> None:
    plan, argv = limit_exec.parse(
        [
            *("--rlimit=DATA:1:2", "--user=op", "--group=staff", "--cwd=/srv/a b"),
            *("--lc-ctype=C", "--status-fd=9", "--", "a", "--"),
        ]
    )
    assert (plan.rlimits, plan.user, plan.group, plan.cwd, plan.restore, plan.status_fd) == (
        [("DATA", 1, 2)],
        "op",
        "staff",
        "/srv/a b",
        {"LC_CTYPE": "C"},
        9,
    )
    assert argv == ["a", "--"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rlimit=BOGUS:1:1", "--", "a"], "bad option '--rlimit=BOGUS:1:1'"),
        (["--user=", "--", "a"], "bad option '--user='"),
        (["--frobnicate", "--", "a"], "bad option '--frobnicate'"),
        (["--status-fd=3", "--"], "nothing to run after --"),
        (["--status-fd=3"], "expected OPTIONS -- ARGV"),
    ],
    ids=["unknown-rlimit", "bad-user", "unknown-option", "no-argv", "no-double-dash"],
)
def test_the_wrapper_names_a_bad_option(args: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        limit_exec.parse(args)


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"", None), (b"exec 2", ("exec", 2)), (b"user 1", ("user", 1)), (b"exec ?", ("exec", 22))],
    ids=["exec-worked", "exec-enoent", "user-eperm", "garbled"],
)
def test_the_wrapper_status_is_a_stage_and_an_errno(
    data: bytes, expected: tuple[str, int] | None
) -> None:
    assert limit_exec.read_failure(data) == expected


# --- real jobs against their limits ---------------------------------------------------------


def test_a_memory_hog_is_killed_for_memory_and_the_daemon_keeps_its_own() -> None:
    before = resource.getrlimit(resource.RLIMIT_DATA)
    baseline = reset_peak_rss()
    hog = python("x = bytearray(512 * 1024 * 1024)", limits=Limits(memory=64 * MIB))

    result = execute(hog)

    assert (result.outcome, result.limit) == (Outcome.KILLED, "memory")
    assert result.reason.startswith("memory: ran out of its 64M memory limit")
    assert "MemoryError" in result.stderr_tail
    assert resource.getrlimit(resource.RLIMIT_DATA) == before
    assert peak_rss_growth(baseline) < 64 * MIB


def test_a_cpu_spinner_is_killed_for_cpu_time_after_a_second_of_cpu() -> None:
    spinner = command(("/bin/sh", "-c", "while :; do :; done"), limits=Limits(cpu_time=1))

    result = execute(spinner)

    assert (result.outcome, result.signal, result.limit) == (
        Outcome.KILLED,
        signal.SIGXCPU,
        "cpu_time",
    )
    assert result.reason == "cpu_time: used up its 1s of CPU time (SIGXCPU)"
    assert result.duration_s >= 0.9


@pytest.mark.skipif(
    os.geteuid() != 0,
    reason="RLIMIT_NPROC counts every process of the user: the bomb runs as a uid of its own,"
    " which needs root to switch to",
)
@pytest.mark.usefixtures("subreaper")
def test_a_fork_bomb_is_stopped_by_processes_and_nothing_of_it_is_left() -> None:
    # Each loop turn forks a sleeper and prints how many it has; dash exits at the first
    # fork the kernel refuses. Run as a user of its own, so the count is the bomb's alone.
    bomb = "i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); echo $i; done"
    user = throwaway(SPARE)
    spare = Account(name=user.name, uid=user.uid, gid=user.gid, groups=(user.gid,), home="/")
    assert not _processes_of(user.uid), "the spare user must have no processes"

    result = execute(command(("/bin/sh", "-c", bomb), limits=Limits(processes=8), account=spare))

    started = int(result.stdout.split()[-1]) if result.stdout.split() else 0
    assert (result.outcome, result.limit) == (Outcome.KILLED, "processes")
    assert result.reason.startswith("processes: could not start more than its 8")
    assert 0 < started < 8  # the shell itself is one of the eight
    assert result.pid is not None
    _wait_for(lambda: not live_members(result.pid or 0) and not _processes_of(user.uid))


def test_a_descriptor_hog_is_killed_for_open_files() -> None:
    hog = python("[open('/dev/null') for _ in range(100)]", limits=Limits(open_files=16))

    result = execute(hog)

    assert (result.outcome, result.limit) == (Outcome.KILLED, "open_files")
    assert result.reason.startswith("open_files: ran out of its 16")


def test_a_job_within_its_limits_sees_exactly_them_and_succeeds() -> None:
    inside = Limits(memory=256 * MIB, cpu_time=30, open_files=64, processes=4096)

    result = execute(command(("cat", "/proc/self/limits"), limits=inside))

    assert result.outcome is Outcome.SUCCEEDED and result.limit == ""
    table = {
        line[:26].strip(): line[26:].split()[:2] for line in result.stdout.decode().splitlines()
    }
    assert table["Max data size"] == [str(256 * MIB)] * 2
    assert table["Max cpu time"] == ["30", "31"]
    assert table["Max open files"] == ["64", "64"]
    assert table["Max processes"] == ["4096", "4096"]


def test_a_limit_above_the_daemons_own_hard_limit_stays_at_the_daemons() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    result = execute(command(("sh", "-c", "ulimit -Hn"), limits=Limits(open_files=hard * 10)))

    assert result.stdout.decode().strip() == str(hard)


@pytest.mark.parametrize(
    ("env", "script", "expected"),
    [
        ({"LANG": "C"}, "echo ${LC_CTYPE-unset}", "unset"),
        ({"LANG": "C", "LC_CTYPE": "POSIX"}, "echo $LC_CTYPE", "POSIX"),
        ({"PYTHONPATH": "/x", "A": "1"}, "echo $PYTHONPATH $A", "/x 1"),
        ({}, "yes | head -n 2 | tr '\\n' ' '", "y y"),
    ],
    ids=["no-lc-ctype-added", "lc-ctype-kept", "python-variables-passed-on", "sigpipe-default"],
)
def test_the_wrapper_hands_the_job_its_environment_and_signals_untouched(
    env: dict[str, str], script: str, expected: str
) -> None:
    base = {"PATH": os.environ["PATH"], **env}
    cmd = command(("/bin/sh", "-c", script), env=base, limits=Limits(open_files=64), timeout=5.0)

    result = execute(cmd)

    assert (result.outcome, result.stdout.decode().strip()) == (Outcome.SUCCEEDED, expected)


@pytest.mark.parametrize(
    ("argv", "mode", "reason"),
    [
        (("no-such-command-cronplus",), None, "command not found: no-such-command-cronplus"),
        (("./script.sh",), stat.S_IRUSR | stat.S_IWUSR, "permission denied: ./script.sh"),
    ],
    ids=["missing", "not-executable"],
)
def test_a_program_the_wrapper_cannot_exec_fails_as_without_the_wrapper(
    tmp_path: Path, argv: tuple[str, ...], mode: int | None, reason: str
) -> None:
    if mode is not None:
        (tmp_path / "script.sh").write_text("#!/bin/sh\n")
        (tmp_path / "script.sh").chmod(mode)
    cmd = command(argv, workdir=tmp_path, limits=Limits(cpu_time=5))

    result = execute(cmd)

    assert (result.outcome, result.exit_code, result.reason) == (Outcome.FAILED, None, reason)


# --- helpers --------------------------------------------------------------------------------


def _processes_of(uid: int) -> list[int]:
    """The live (not zombie) processes running as ``uid``."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if not entry.isdigit() or os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue  # it ended while we looked
        if state != "Z":
            found.append(int(entry))
    return found


def _wait_for(done: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "still not done"
        reap_exited_children()  # we are the subreaper of the job's orphans
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def _no_stray_spare_processes() -> Iterator[None]:
    yield
    with contextlib.suppress(KeyError):
        for pid in _processes_of(pwd.getpwnam(SPARE).pw_uid):
            os.kill(pid, signal.SIGKILL)


# --- the layout rule ------------------------------------------------------------------------


def _ruff_banned_api(path: Path) -> subprocess.CompletedProcess[str]:
    config = Path(__file__).resolve().parent.parent / "pyproject.toml"
    args = ["check", "--no-cache", "--config", str(config), "--select", "TID251", str(path)]
    return subprocess.run([sys.executable, "-m", "ruff", *args], capture_output=True, text=True)


def test_the_pure_core_may_not_exec_a_program(tmp_path: Path) -> None:
    probe = tmp_path / "cronplus" / "engine.py"
    probe.parent.mkdir()
    probe.write_text('import os\n\nos.execvp("true", ["true"])\n')

    done = _ruff_banned_api(probe)

    assert done.returncode == 1 and "`os.execvp` is banned" in done.stdout


def test_the_exec_wrapper_is_the_one_module_besides_the_runner_that_may() -> None:
    wrapper = Path(limits.WRAPPER)
    assert "os.execvp(" in wrapper.read_text()

    assert _ruff_banned_api(wrapper).returncode == 0


def test_the_limits_benchmark_runs_every_way_and_prints_a_table() -> None:
    bench = Path(__file__).resolve().parent.parent / "bench" / "bench_limits.py"

    done = subprocess.run(
        [sys.executable, str(bench), "-n", "3", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    rows = [line.strip("|").split("|") for line in done.stdout.splitlines() if line[:1] == "|"]
    header, separator, *body = ([cell.strip() for cell in row] for row in rows)
    assert header[0] == "way" and set(separator) == {"---"}
    assert [row[0] for row in body] == ["plain", "limits", "preexec"]
    spread = r"\d+\.\d{3} \(\d+\.\d{3}–\d+\.\d{3}\)"
    assert all(re.fullmatch(spread, cell) for row in body for cell in row[1:3]), body
    assert all(re.fullmatch(r"\d+\.\d", row[3]) for row in body), body

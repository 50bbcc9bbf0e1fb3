"""The benchmark scripts run end to end on tiny sizes and print well-formed tables.

No timing is ever asserted: only that every way ran, every cell holds a number of the
right shape, and that ``--write-results`` touches nothing but its own section.
"""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from bench_daemon import idle_crontab
from bench_floors import check_target
from gen import EXPRESSIONS, ZONES, JobSpec, as_generated, cronplus_crontab, idle_from, job_specs
from harness import (
    Record,
    Section,
    bench_env,
    build_c,
    build_stamp,
    code_state,
    interpreter,
    percentile,
    read_stamps,
    update_results,
)
from procs import Child, DaemonRun, no_child_left

from cronplus.config import loader
from cronplus.core.schedule import Schedule

pytestmark = pytest.mark.bench

BENCH = Path(__file__).resolve().parent.parent / "bench"
SPREAD = re.compile(r"^\d+\.\d+ \(\d+\.\d+–\d+\.\d+\)$")
"""A ``median (min–max)`` cell."""
NUMBER = re.compile(r"^\d[\d,]*(\.\d+)?$")
SIGNED_SPREAD = re.compile(r"^-?\d+\.\d+ \(-?\d+\.\d+–-?\d+\.\d+\)$")
"""A ``median (min–max)`` cell whose values may be below zero."""

Table = list[list[str]]


def tables(text: str) -> list[Table]:
    """Every markdown table in ``text``, as rows of cells (separator rows checked and dropped)."""
    found: list[Table] = []
    current: Table = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip("|").split("|")])
        elif current:
            assert all(cell == "---" for cell in current[1]), f"no separator row in {current}"
            assert {len(row) for row in current} == {len(current[0])}, f"ragged table {current}"
            found.append([current[0], *current[2:]])
            current = []
    return found


def column(table: Table, name: str) -> list[str]:
    index = table[0].index(name)
    return [row[index] for row in table[1:]]


def run_script(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# --- the scripts, end to end -----------------------------------------------------------


def test_the_runonce_bench_times_every_way_on_ten_jobs(tmp_path: Path) -> None:
    out = run_script("bench_runonce.py", "-n", "10", "--repeats", "1", "--build-dir", str(tmp_path))
    command, loops, targets = tables(out)
    assert column(command, "way") == ["run-once, stamp", "run-once, /bin/true"]
    stamp_row, true_row = command[1][1:], command[2][1:]
    assert all(SPREAD.match(cell) for cell in stamp_row), stamp_row
    assert true_row[:3] == ["–", "–", "–"], true_row
    assert all(SPREAD.match(cell) for cell in true_row[3:]), true_row
    assert column(loops, "way") == ["engine", "popen", "posix_spawn", "asyncio", "runner"]
    for row in loops[1:]:
        assert all(SPREAD.match(cell) for cell in row[1:-1]), row
        assert NUMBER.match(row[-1]), row
    assert len(targets) == 3
    assert set(column(targets, "met")) <= {"yes", "**no**"}


def test_the_wake_bench_times_both_sleeps() -> None:
    out = run_script("bench_wake.py", "--sleeps", "4", "--repeats", "2")
    [table] = tables(out)
    assert column(table, "sleep") == ["plain", "precise"]
    for row in table[1:]:
        assert all(re.fullmatch(r"-?\d+\.\d{3}", cell) for cell in row[1:4]), row
        assert re.fullmatch(r"-?\d+\.\d{3}–-?\d+\.\d{3}", row[4]), row


def test_the_daemon_bench_measures_and_writes_only_its_section(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## run-once burst\n\nkept as it is\n")
    out = run_script(
        "bench_daemon.py",
        *("--sizes", "10", "--burst-sizes", "10", "--repeats", "1"),
        *("--idle-seconds", "1", "--lateness-seconds", "2", "--burst-lead", "5"),
        *("--build-dir", str(tmp_path), "--write-results", str(results)),
        *("--cronplus-python", sys.executable),
    )
    idle, every_second, burst, targets = tables(out)
    assert column(idle, "jobs") == ["10"]
    assert SPREAD.match(idle[1][1])
    assert all(NUMBER.match(cell) for cell in idle[1][2:]), idle[1]
    assert int(column(every_second, "starts")[0]) >= 1
    assert all(NUMBER.match(cell) for cell in every_second[1]), every_second[1]
    assert column(burst, "jobs") == ["10"]
    assert all(SPREAD.match(cell) for cell in burst[1][1:]), burst[1]
    assert column(targets, targets[0][0]) == ["every-second job: p99"]
    written = results.read_text()
    assert written.startswith("# Benchmark results\n\n## run-once burst\n\nkept as it is\n")
    assert "\n## daemon\n\n<!-- bench_daemon.py: begin -->\n- date: " in written
    assert tables(written.split("## daemon", 1)[1]) == [idle, every_second, burst, targets]


def test_the_floors_bench_measures_cronplus_beside_its_floors_and_writes_its_section(
    tmp_path: Path,
) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## daemon\n\nkept as it is\n")
    out = run_script(
        "bench_floors.py",
        *("-n", "10", "--rounds", "2", "--idle-seconds", "0.5", "--windows", "2"),
        *("--build-dir", str(tmp_path), "--write-results", str(results)),
        *("--cronplus-python", sys.executable),
    )
    checks, idle, against = tables(out)
    assert column(checks, "what runs") == [
        "interpreter (`-c pass`)",
        "+ click, PyYAML, pydantic models",
        "cronplus validate, 10 jobs",
        "cronplus validate, 100 jobs",
    ]
    for row in checks[1:]:
        assert all(SPREAD.match(cell) for cell in row[1:]), row
    interpreter, libraries, *validates = (
        float(c.split()[0]) for c in column(checks, "peak RSS, MB")
    )
    assert interpreter < libraries < min(validates), checks  # each its own, none the harness's
    assert column(idle, "process") == [
        "C `nanosleep` loop",
        "Python `time.sleep` loop",
        "Python `asyncio.sleep` loop",
        "cronplus daemon, 10 jobs",
    ]
    for row in idle[1:]:
        assert all(SPREAD.match(cell) for cell in row[1:]), row
    assert column(against, "cronplus") == ["cronplus validate, 10 jobs", "cronplus daemon, 10 jobs"]
    assert column(against, "target") == ["< 0.3 s", "< 1 ms per 60 s"]
    check_row, idle_row = against[1][2:], against[2][2:]
    assert all(SIGNED_SPREAD.match(cell) for cell in [*check_row[:2], check_row[3]]), check_row
    assert re.match(r"^\d+%$", check_row[2]) and NUMBER.match(check_row[4]), check_row
    assert all(SIGNED_SPREAD.match(cell) for cell in [*idle_row[:2], idle_row[3]]), idle_row
    assert idle_row[4] in {"–"} or NUMBER.match(idle_row[4]), idle_row  # "–": no floor CPU
    written = results.read_text()
    assert written.startswith("# Benchmark results\n\n## daemon\n\nkept as it is\n")
    assert "\n## floors\n\n<!-- bench_floors.py: begin -->\n- date: " in written
    assert tables(written.split("## floors", 1)[1]) == [checks, idle, against]


@pytest.mark.parametrize(("n", "target"), [(10, 0.3), (1000, 0.3), (10_000, 1.0), (20_000, None)])
def test_the_floors_read_a_check_against_the_target_for_its_size(
    n: int, target: float | None
) -> None:
    assert check_target(n) == target


def names_a_loader(program: Path) -> bool:
    """Whether a 64-bit ELF program names a loader (a ``PT_INTERP`` header): is dynamic."""
    data = program.read_bytes()
    (offset,), (size, count) = (
        struct.unpack_from("<Q", data, 32),
        struct.unpack_from("<HH", data, 54),
    )
    kinds = [struct.unpack_from("<I", data, offset + n * size)[0] for n in range(count)]
    return 3 in kinds  # PT_INTERP


def test_a_static_build_is_never_a_dynamic_one_made_before(tmp_path: Path) -> None:
    dynamic = build_c(BENCH / "stamp.c", tmp_path)
    static = build_c(BENCH / "stamp.c", tmp_path, static=True)
    assert static != dynamic
    assert names_a_loader(dynamic) and not names_a_loader(static)
    built = static.stat().st_mtime_ns
    assert build_c(BENCH / "stamp.c", tmp_path, static=True) == static  # up to date: kept
    assert static.stat().st_mtime_ns == built
    for program in (dynamic, static):
        ran = subprocess.run([program], capture_output=True, text=True)
        assert (ran.returncode, ran.stderr) == (2, "usage: stamp FILE\n")


def test_the_sleeper_wakes_and_sleeps_again_until_killed(tmp_path: Path) -> None:
    sleeper = build_c(BENCH / "sleeper.c", tmp_path)
    assert subprocess.run([sleeper], capture_output=True, text=True).stderr == (
        "usage: sleeper SECONDS\n"
    )
    proc = subprocess.Popen([sleeper, "1"])
    try:
        before = sleeps(proc.pid)
        time.sleep(2.1)  # two wake-ups, each followed by a sleep
        assert proc.poll() is None
        assert sleeps(proc.pid) - before >= 2
    finally:
        proc.kill()
        proc.wait()


def sleeps(pid: int) -> int:
    """How often ``pid`` has gone to sleep: its voluntary context switches."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"\nvoluntary_ctxt_switches:\s+(\d+)", status)
    assert found is not None, status
    return int(found[1])


def test_a_daemon_still_running_when_the_bench_fails_is_killed(tmp_path: Path) -> None:
    daemon = DaemonRun(tmp_path, idle_crontab(tmp_path, 3))
    try:
        with pytest.raises(SystemExit, match="a failure"), no_child_left():
            daemon.ready(60)
            raise SystemExit("a failure")
        assert daemon.proc.returncode == -signal.SIGKILL
        assert daemon not in Child.alive
    finally:
        if daemon.proc.poll() is None:  # the test failed: do not leave it running either
            daemon.kill()


def test_stamp_writes_the_job_its_slot_and_the_realtime_of_its_start(tmp_path: Path) -> None:
    stamp, out = build_stamp(tmp_path), tmp_path / "stamps.txt"
    env = {"CRONPLUS_JOB": "job-7", "CRONPLUS_SCHEDULED_AT": "2026-03-08T07:00:00Z"}
    before = time.time()
    for _ in range(2):
        subprocess.run([stamp, out], env=env, check=True)
    after = time.time()
    stamps = read_stamps(out)
    assert [(s.job, s.scheduled_at) for s in stamps] == [
        ("job-7", datetime(2026, 3, 8, 7, tzinfo=UTC))
    ] * 2
    assert before <= stamps[0].at <= stamps[1].at <= after
    assert stamps[0].lateness == stamps[0].at - datetime(2026, 3, 8, 7, tzinfo=UTC).timestamp()


def test_stamp_without_a_file_argument_exits_2_with_its_usage(tmp_path: Path) -> None:
    done = subprocess.run([build_stamp(tmp_path)], capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (2, "usage: stamp FILE\n")


def test_a_malformed_stamp_line_is_named_with_its_place(tmp_path: Path) -> None:
    path = tmp_path / "stamps.txt"
    path.write_text("job-1 2026-03-08T07:00:00Z 1.5\njob-2 oops\n")
    with pytest.raises(ValueError, match=r"stamps.txt:2: expected 'JOB SCHEDULED_AT SECONDS'"):
        read_stamps(path)


# --- the pieces ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        (list(range(1, 101)), 99, 99),
        (list(range(100, 0, -1)), 50, 50),
        ([3.0], 99, 3.0),
        ([4, 1, 3, 2], 50, 2),
        ([4, 1, 3, 2], 99, 4),
    ],
    ids=["p99-of-100", "p50-unsorted", "one-value", "p50-even", "p99-of-4-is-max"],
)
def test_percentile_is_the_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


def test_the_crontab_holds_the_generated_jobs_and_zones_with_the_schedule_and_command_asked(
    tmp_path: Path,
) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}
    jobs = job_specs(40)
    generated = loader.loads(
        cronplus_crontab(jobs, as_generated, ["true"]), path=tmp_path / "g.yaml", env=env
    )
    assert [(job.name, job.schedule, job.timezone.key) for job in generated.jobs] == [
        (spec.name, spec.expression, spec.zone) for spec in jobs
    ]
    seen: list[tuple[str, str]] = []

    def schedule(spec: JobSpec, zone: ZoneInfo) -> str:
        seen.append((spec.name, zone.key))
        return "5 4 * * *"

    path = tmp_path / "crontab.yaml"
    path.write_text(cronplus_crontab(jobs, schedule, ["/a b", "c"]))
    crontab = loader.load(path, env=env)
    assert seen == [(spec.name, spec.zone) for spec in jobs]
    assert [(job.name, job.timezone.key) for job in crontab.jobs] == [
        (s.name, s.zone) for s in jobs
    ]
    assert {(job.schedule, job.command) for job in crontab.jobs} == {("5 4 * * *", ("/a b", "c"))}


def test_a_shell_command_and_more_lines_are_written_as_cronplus_reads_them(tmp_path: Path) -> None:
    jobs = [JobSpec(name="job-001", expression="*/2 * * * * *", zone="UTC")]
    text = cronplus_crontab(
        jobs, as_generated, "echo \"$X\" >> 'a file'", concurrent=40, each=["overlap: allow"]
    )
    crontab = loader.loads(text, path=tmp_path / "c.yaml", env={"XDG_STATE_HOME": str(tmp_path)})
    assert crontab.settings.max_concurrent == 40
    [job] = crontab.jobs
    assert (job.command, job.overlap.value) == ("echo \"$X\" >> 'a file'", "allow")


@pytest.mark.parametrize(
    "today",
    [datetime(2026, 11, 25, 0, 8, tzinfo=UTC), datetime(2026, 6, 30, 23, 59, tzinfo=UTC)],
    ids=["november", "end-of-june"],
)
@pytest.mark.parametrize("expression", [*EXPRESSIONS, "@weekly", "* * * * * *"])
def test_an_idle_schedule_stays_quiet_for_months(today: datetime, expression: str) -> None:
    quiet = idle_from(today)
    for key in ZONES:
        zone = ZoneInfo(key)
        spec = JobSpec(name="job-00001", expression=expression, zone=key)
        schedule = Schedule.parse(quiet(spec, zone), zone=zone, job_name=spec.name)
        assert schedule.next_after(today) - today > timedelta(days=120), (expression, key)


BLOCK = "<!-- me: begin -->\nnew body\n<!-- me: end -->"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, f"# Benchmark results\n\n## mine\n\n{BLOCK}\n"),
        ("# R\n\n## theirs\n\nx\n", f"# R\n\n## theirs\n\nx\n\n## mine\n\n{BLOCK}\n"),
        ("# R\n\n## mine\n\nanalysis\n", f"# R\n\n## mine\n\n{BLOCK}\n\nanalysis\n"),
        (
            "# R\n\n## mine\n\n<!-- me: begin -->\nold\n<!-- me: end -->\n\nanalysis\n"
            "\n## theirs\n",
            f"# R\n\n## mine\n\n{BLOCK}\n\nanalysis\n\n## theirs\n",
        ),
    ],
    ids=["no-file", "other-sections-only", "heading-without-block", "block-replaced"],
)
def test_update_results_replaces_only_its_own_block(
    tmp_path: Path, before: str | None, after: str
) -> None:
    path = tmp_path / "RESULTS.md"
    if before is not None:
        path.write_text(before)
    update_results(path, "## mine", "new body\n", owner="me")
    assert path.read_text() == after


def test_the_header_names_the_code_read_when_the_run_began_not_the_head_at_its_end() -> None:
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert code_state().startswith(f"commit {head}")
    # A long run reads it first and passes it on: a commit made meanwhile is not measured.
    began = datetime(2026, 12, 2, 12, 45, tzinfo=UTC)
    record = Record(loadavg="0.00 0.00 0.00", code="commit 0000000", began=began)
    header = record.header("python bench/x.py -n 3", "- cronplus run by: python")
    assert header.startswith("- date: 2026-12-02T12:45+00:00 to ")
    assert header.endswith(
        "\n- code: commit 0000000\n- cronplus run by: python\n- command: `python bench/x.py -n 3`"
    )
    assert f"\n- code: commit {head}" in Record.begin().header("x")


@pytest.mark.parametrize(
    ("script", "args", "options", "command"),
    [
        (
            "bench_daemon.py",
            {"sizes": [100, 1000, 10000], "idle_seconds": 60.0, "burst_lead": 5.0, "repeats": 3},
            ["sizes", "idle_seconds", "repeats", "burst_lead"],
            "python bench/bench_daemon.py --sizes 100,1000,10000 --idle-seconds 60 --repeats 3"
            " --burst-lead 5",
        ),
        (
            "bench_runonce.py",
            {"n": 1000, "repeats": 3, "program": "/bin/true"},
            ["n", "repeats", "program"],
            "python bench/bench_runonce.py -n 1000 --repeats 3 --program /bin/true",
        ),
        (
            "bench_cluster_faults.py",
            {"scenarios": ["steady", "pause"], "window": 60.0, "lease": 6},
            ["scenarios", "lease", "window"],
            "python bench/bench_cluster_faults.py --scenarios steady,pause --lease 6 --window 60",
        ),
    ],
    ids=["lists-and-floats", "short-option", "names"],
)
def test_a_section_names_the_command_that_measures_it_again(
    script: str, args: dict[str, object], options: list[str], command: str
) -> None:
    import argparse

    assert Section("## x", script).command(argparse.Namespace(**args), options) == command


def test_the_bench_env_drops_what_steers_cronplus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRONPLUS_CONFIG", "/elsewhere.yaml")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/notify")
    env = bench_env(Path("/tmp/state-x"))
    assert "CRONPLUS_CONFIG" not in env and "NOTIFY_SOCKET" not in env
    assert env["XDG_STATE_HOME"] == "/tmp/state-x"
    assert env["PATH"] == os.environ["PATH"]


def test_cronplus_python_is_a_path_or_a_name_on_path_made_absolute_not_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    venv_python = tmp_path / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(sys.executable)
    monkeypatch.chdir(tmp_path)
    assert interpreter("venv/bin/python") == venv_python  # the link, not what it points to
    monkeypatch.setenv("PATH", str(venv_python.parent))
    assert interpreter("python") == venv_python
    with pytest.raises(argparse.ArgumentTypeError, match="no executable 'pyhton'"):
        interpreter("pyhton")

"""The peers benchmark (bench/bench_peers.py) runs end to end for cronplus alone on 10 jobs,
and its pieces write each daemon's format, fire at the instant asked for and judge fairly.

Peers are installed only by ``make bench``: nothing here needs yacron or Debian cron, and no
figure is ever asserted, only the shape of what is reported.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen import PORTABLE, JobSpec, every, job_specs, minute_at, second_at
from harness import BENCH, Failed, build_c, read_stamps
from peers import Cronplus, DebianCron, Yacron
from peers_report import Idle, Results, load, report, save, targets_table
from procs import Check, exits_within, timed_check
from test_bench import SPREAD, column, tables

from cronplus.config import loader
from cronplus.core.schedule import Schedule

pytestmark = pytest.mark.bench

PEAK = BENCH / "peak.c"
PNG = b"\x89PNG\r\n\x1a\n"
FIGURE = re.compile(r"^(\d[\d,]*\.\d+ (s|MB|ms)|–)$")


def test_the_peers_bench_measures_cronplus_alone_and_writes_only_its_section(
    tmp_path: Path,
) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## daemon\n\nkept as it is\n")
    done = subprocess.run(
        [
            *(sys.executable, str(BENCH / "bench_peers.py"), "--peers", "cronplus"),
            *("--sizes", "10", "--burst-sizes", "10", "--repeats", "1", "--grain", "second"),
            *("--idle-seconds", "0.5", "--starts", "1", "--lead", "1", "--spawn-n", "5"),
            *("--json", str(tmp_path / "peers.json"), "--charts", str(tmp_path / "charts")),
            *("--build-dir", str(tmp_path / "build"), "--write-results", str(results)),
            *("--cronplus-python", sys.executable),
        ],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr
    targets, checks, daemons, bursts, periodic, spawn = tables(done.stdout)
    assert column(targets, "figure") == [
        f"one job every second: {q}" for q in ("p50", "p99", "max")
    ]
    assert all(FIGURE.match(cell) for cell in column(targets, "cronplus")), targets
    assert set(column(targets, "met")) <= {"yes", "**no**", "–"}
    assert [row[:2] for row in checks[1:]] == [["10", "cronplus"]]
    assert all(SPREAD.match(cell) for cell in checks[1][2:]), checks
    assert [row[:2] for row in daemons[1:]] == [["10", "cronplus"]]
    assert SPREAD.match(daemons[1][2].removesuffix(" (1 run)")), daemons
    assert all(SPREAD.match(cell) for cell in bursts[1][2:]), bursts
    assert column(periodic, "starts") == ["1"]
    assert column(spawn, "loop") == [
        "C posix_spawn",
        "Python posix_spawn",
        "Python Popen",
        "asyncio",
    ]
    written = results.read_text()
    assert written.startswith("# Benchmark results\n\n## daemon\n\nkept as it is\n")
    assert "\n## peers\n\n<!-- bench_peers.py: begin -->\n- date: " in written
    assert tables(written.split("## peers", 1)[1]) == tables(done.stdout)
    kept = load(tmp_path / "peers.json")
    assert report(kept) == done.stdout.split("\nwrote ", 1)[0]
    for chart in ("lateness.png", "scaling.png"):
        assert (tmp_path / "charts" / chart).read_bytes().startswith(PNG)


def test_seconds_are_refused_when_a_peer_takes_part(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "bench_peers.py"), "--grain", "second"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "only cronplus reads seconds; use --peers cronplus" in done.stderr


# --- the config check's own figures ------------------------------------------------------


def test_a_check_s_peak_rss_is_its_own_not_the_harness_s(tmp_path: Path) -> None:
    ballast = bytearray(200 * 2**20)  # the harness at 200 MB more than a bare interpreter
    checked = timed_check(
        [sys.executable, "-c", "pass"], tmp_path, 60.0, peak=build_c(PEAK, tmp_path)
    )
    assert checked.seconds is not None and checked.seconds < 60.0
    assert checked.peak_mb is not None and 1.0 < checked.peak_mb < 100.0, checked
    assert len(ballast) == 200 * 2**20


def test_a_failing_check_is_reported_with_its_exit_code_and_output(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('bad line 3'); sys.exit(3)"]
    with pytest.raises(Failed, match=r"exited 3:\nbad line 3"):
        timed_check(argv, tmp_path, 60.0, peak=build_c(PEAK, tmp_path))


def test_exits_within_sees_the_exit_and_leaves_the_child_to_be_reaped() -> None:
    quick = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(4)"])
    assert exits_within(quick.pid, 60.0)
    assert quick.wait() == 4  # not reaped by exits_within: its code is still there
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not exits_within(slow.pid, 0.2)
        assert slow.poll() is None
    finally:
        slow.kill()
        slow.wait()


def test_a_check_that_cannot_be_run_is_reported_as_such(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-daemon")
    with pytest.raises(Failed, match=r"no-such-daemon exited 127:\n.*No such file"):
        timed_check([missing, "--check"], tmp_path, 60.0, peak=build_c(PEAK, tmp_path))


def test_a_check_over_the_limit_is_stopped_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = (
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    )
    checked = timed_check(
        [sys.executable, "-c", script], tmp_path, 3.0, peak=build_c(PEAK, tmp_path)
    )
    assert checked == Check(seconds=None, peak_mb=None)
    status = Path(f"/proc/{int(pid_file.read_text())}/status")
    deadline = time.monotonic() + 10
    while (text := _read_if_there(status)) is not None and "zombie" not in text:
        assert time.monotonic() < deadline, f"still running after the limit:\n{text}"
        time.sleep(0.01)  # SIGKILL takes a moment


def _read_if_there(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


# --- the jobs and their formats -----------------------------------------------------------


def test_the_jobs_are_the_same_on_every_call_and_every_daemon_reads_their_expressions() -> None:
    jobs = job_specs(200, expressions=PORTABLE)
    assert jobs == job_specs(200, expressions=PORTABLE)
    assert [job.name for job in jobs[:2]] == ["job-00000", "job-00001"]
    assert {job.expression for job in jobs} == set(PORTABLE)
    assert not any(re.search(r"[HLW#]", job.expression) for job in jobs)


def read_cronplus(folder: Path) -> list[tuple[str, str, str, tuple[str, ...]]]:
    crontab = loader.load(folder / "crontab.yaml", env={"XDG_STATE_HOME": str(folder)})
    return [(j.name, j.schedule, j.timezone.key, tuple(j.argv)) for j in crontab.jobs]


def read_yacron(folder: Path) -> list[tuple[str, str, str, tuple[str, ...]]]:
    jobs = yaml.safe_load((folder / "yacron.yaml").read_text())["jobs"]
    return [(j["name"], j["schedule"], j["timezone"], tuple(j["command"])) for j in jobs]


def read_cron(folder: Path) -> list[tuple[str, str, str, tuple[str, ...]]]:
    found = []
    for line in (folder / "jobs.cron").read_text().splitlines():
        fields = line.split(maxsplit=6)
        assert fields[5] == "root", line
        found.append(("", " ".join(fields[:5]), "UTC", tuple(shlex.split(fields[6]))))
    return found


@pytest.mark.parametrize(
    ("daemon", "read", "named", "zoned"),
    [
        (Cronplus(Path(sys.executable)), read_cronplus, True, True),
        (Yacron(Path("/nowhere/yacron")), read_yacron, True, True),
        (DebianCron(), read_cron, False, False),
    ],
    ids=["cronplus", "yacron", "debian-cron"],
)
def test_each_daemon_gets_every_job_in_its_own_format(
    tmp_path: Path, daemon: Cronplus, read: object, named: bool, zoned: bool
) -> None:
    jobs = job_specs(12, expressions=PORTABLE)
    argv = ("/bench/stamp", "/tmp/a file")
    daemon.write(tmp_path, jobs, lambda spec, zone: f"5 4 * * {len(spec.name) % 7}", argv)
    assert callable(read)
    found = read(tmp_path)
    assert [row[3] for row in found] == [argv] * len(jobs)
    assert [row[1] for row in found] == [f"5 4 * * {len(j.name) % 7}" for j in jobs]
    assert [row[0] for row in found] == ([j.name for j in jobs] if named else [""] * 12)
    assert [row[2] for row in found] == ([j.zone for j in jobs] if zoned else ["UTC"] * 12)


INSTANT = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # Europe's spring-forward instant


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata"])
@pytest.mark.parametrize(
    ("at", "step", "later"),
    [
        (minute_at, timedelta(minutes=1), timedelta(hours=7, minutes=13)),
        (second_at, timedelta(seconds=1), timedelta(hours=7, minutes=13, seconds=5)),
    ],
    ids=["minute", "second"],
)
def test_a_burst_expression_fires_at_its_instant_in_the_zone_it_is_read_in(
    zone: str, at: object, step: timedelta, later: timedelta
) -> None:
    assert callable(at)
    spec = JobSpec(name="job-00001", expression="@daily", zone=zone)
    for instant in (INSTANT, INSTANT + later):
        expression = at(instant)(spec, ZoneInfo(zone))
        schedule = Schedule.parse(expression, zone=ZoneInfo(zone), job_name=spec.name)
        assert schedule.next_after(instant - step) == instant


@pytest.mark.parametrize(
    ("grain", "expected"), [("minute", "* * * * *"), ("second", "* * * * * *")]
)
def test_the_periodic_job_fires_every_minute_or_every_second(grain: str, expected: str) -> None:
    spec = JobSpec(name="job-00000", expression="@daily", zone="UTC")
    assert every(grain)(spec, ZoneInfo("UTC")) == expected


def test_stamps_without_a_job_or_slot_are_read_for_their_time(tmp_path: Path) -> None:
    path = tmp_path / "stamps.txt"
    path.write_text("- - 1795567773.210128225\njob-7 2026-03-08T07:00:00Z 12.5\n")
    assert [stamp.at for stamp in read_stamps(path)] == [1795567773.210128225, 12.5]
    assert read_stamps(tmp_path / "missing.txt") == []
    path.write_text("- - 1.0\ntorn\n")
    with pytest.raises(ValueError, match=r"stamps.txt:2: expected 'JOB SCHEDULED_AT SECONDS'"):
        read_stamps(path)


# --- the verdicts ---------------------------------------------------------------------------


def results(cronplus_rss: float, yacron_rss: float | None, cron_rss: float) -> Results:
    def idle(rss: float | None) -> list[Idle]:
        return [
            Idle(
                startup=None if rss is None else 0.5,
                rss_mb=rss,
                hwm_mb=rss,
                cpu_ms=0.4,
                wakeups=2.0,
            )
        ]

    daemons = {
        "cronplus": {10000: idle(cronplus_rss)},
        "yacron": {10000: idle(yacron_rss)},
        "Debian cron": {10000: idle(cron_rss)},
    }
    checks: dict[str, dict[int, list[Check]]] = {name: {} for name in daemons}
    return Results(
        grain="minute",
        slow_limit=900.0,
        checks=checks,
        daemons=daemons,
        bursts={},
        every={},
        spawn={},
        spawn_n=1000,
    )


@pytest.mark.parametrize(
    ("rss", "beats", "met"),
    [
        ((40.0, 120.0, 5.0), "8× higher", "yes"),
        ((4.0, 120.0, 5.0), "**1.25× lower**", "yes"),
        ((80.0, None, 5.0), "16× higher", "**no**"),
    ],
    ids=["beats-yacron-only", "beats-both", "peer-not-ready"],
)
def test_the_targets_table_compares_with_the_best_peer_that_has_a_figure(
    rss: tuple[float, float | None, float], beats: str, met: str
) -> None:
    table = tables(targets_table(results(*rss)))[0]
    row = dict(
        zip(table[0], next(r for r in table[1:] if r[0] == "steady RSS, 10,000 jobs"), strict=True)
    )
    mine, yacron, cron = rss
    assert row["target"] == "< 60 MB"
    assert row["cronplus"] == f"{mine:.1f} MB"
    assert row["yacron"] == ("not ready" if yacron is None else f"{yacron:.1f} MB")
    assert row["cronplus ÷ Debian cron"] == f"{mine / cron:.3g}"
    assert row["best peer ÷ cronplus"] == beats
    assert row["met"] == met


def test_results_survive_their_json(tmp_path: Path) -> None:
    kept = results(40.0, 120.0, 5.0)
    save(kept, tmp_path / "peers.json")
    assert load(tmp_path / "peers.json") == kept
    assert json.loads((tmp_path / "peers.json").read_text())["daemons"]["cronplus"]["10000"]

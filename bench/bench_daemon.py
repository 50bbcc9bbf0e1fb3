"""What a running daemon costs (startup, memory, idle CPU) and how late its jobs start.

    python bench/bench_daemon.py [--sizes 100,1000,10000] [--idle-seconds 60]
                                 [--lateness-seconds 30] [--burst-sizes 100,1000]
                                 [--repeats 3] [--burst-lead 5] [--build-dir bench/out]
                                 [--cronplus-python PYTHON] [--write-results [FILE]]

Every daemon is a real ``cronplus daemon`` (procs.py's ``DaemonRun``), installed as an
operator installs it unless ``--cronplus-python`` names one. Startups alternate sizes; the
last repeat's daemons (gen.py's jobs, none due for months) then idle side by side through
one window. One job every second runs bench/stamp.c for ``--lateness-seconds``; each burst
is N jobs due at one whole second ``--burst-lead`` s after its crontab is written.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import product
from pathlib import Path

from gen import cronplus_crontab, every, idle_from, job_specs, second_at
from harness import (
    BURST_STATS,
    Failed,
    Record,
    Section,
    build_stamp,
    cell,
    fresh,
    install_cronplus,
    launch,
    markdown_table,
    numbers,
    parser,
    percentile,
    read_stamps,
    shown,
    verdict,
)
from procs import DaemonRun, Window, no_child_left, raise_fd_limit, usage, watch

SECTION = Section("## daemon", "bench_daemon.py")
STARTUP_TIMEOUT = 120.0
"""Seconds a daemon may take to log ``started`` before the benchmark gives up."""
SETTLE = 1.0
"""Seconds between the last ``started`` and the idle window, for startup's tail to pass."""
BURST_TIMEOUT = 60.0
"""Seconds after the burst instant by which every job must have started and succeeded."""
TARGETS = {
    "startup, 1,000 jobs": (500.0, "ms"),
    "startup, 10,000 jobs": (1000.0, "ms"),
    "VmRSS, 10,000 jobs": (60.0, "MB"),
    "idle CPU, 1,000 jobs": (1.0, "ms/min"),
    "idle CPU, 10,000 jobs": (1.0, "ms/min"),
    "burst of 1,000: last start": (450.0, "ms"),
    "burst of 100: p99 start": (60.0, "ms"),
    "every-second job: p99": (10.0, "ms"),
}
"""The issue's targets: what must stay below which limit."""


def idle_crontab(folder: Path, n: int) -> Path:
    """gen.py's N jobs, each running ``true``, none due for months."""
    crontab = folder / "crontab.yaml"
    crontab.write_text(cronplus_crontab(job_specs(n), idle_from(datetime.now(UTC)), ["true"]))
    return crontab


@dataclass(frozen=True, kw_only=True)
class Idle:
    """One size's startups, and its kept daemon over the idle window."""

    startups: list[float]
    window: Window


def idle_daemons(root: Path, args: argparse.Namespace, python: Path) -> dict[int, Idle]:
    """Each size's startups, alternating; the last repeat's daemons idle side by side."""
    times: dict[int, list[float]] = {n: [] for n in args.sizes}
    kept: dict[int, DaemonRun] = {}
    for repeat, n in product(range(args.repeats), args.sizes):
        folder = fresh(root, f"idle-{n}")
        kept[n] = DaemonRun(folder, idle_crontab(folder, n), python=python)
        times[n].append(kept[n].ready(STARTUP_TIMEOUT))
        if repeat < args.repeats - 1:
            kept.pop(n).stop()
    time.sleep(SETTLE)
    windows = watch({n: daemon.pid for n, daemon in kept.items()}, args.idle_seconds)
    for daemon in kept.values():
        daemon.stop()
    return {n: Idle(startups=times[n], window=windows[n][0]) for n in args.sizes}


def every_second(root: Path, stamp: Path, *, seconds: float, python: Path) -> list[float]:
    """Lateness, in seconds, of each start of one every-second job."""
    folder = fresh(root, "every-second")
    stamps, crontab = folder / "stamps.txt", folder / "crontab.yaml"
    crontab.write_text(cronplus_crontab(job_specs(1), every("second"), [stamp, stamps]))
    daemon = DaemonRun(folder, crontab, python=python)
    daemon.ready(STARTUP_TIMEOUT)
    time.sleep(seconds)
    daemon.stop()
    late = [s.lateness for s in read_stamps(stamps)]
    if not late:
        raise Failed(f"the every-second job never started in {seconds}s")
    return late


@dataclass(frozen=True, kw_only=True)
class Burst:
    """One daemon's burst of N jobs due at one instant."""

    late: list[float]
    """Seconds from the instant to each job's start."""
    cpu_ms: float
    """The daemon's own CPU (schedstat) from before the instant until every job succeeded."""


def burst(root: Path, stamp: Path, n: int, *, lead: float, python: Path) -> Burst:
    folder = fresh(root, f"burst-{n}")
    stamps, crontab = folder / "stamps.txt", folder / "crontab.yaml"
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1 + lead)
    crontab.write_text(cronplus_crontab(job_specs(n), second_at(at), [stamp, stamps]))
    daemon = DaemonRun(folder, crontab, python=python)
    daemon.ready(lead)
    if datetime.now(UTC) >= at:
        daemon.stop()
        raise Failed(
            f"the daemon with {n} jobs started after the burst instant: raise --burst-lead"
        )
    before = usage(daemon.pid)
    daemon.wait_for("attempt_succeeded", count=n, timeout=lead + 1 + BURST_TIMEOUT)
    cpu_ms = usage(daemon.pid).cpu_sched_ms - before.cpu_sched_ms
    daemon.stop()
    found = read_stamps(stamps)
    wrong = [s for s in found if s.scheduled_at != at]
    if len(found) != n or wrong:
        raise Failed(
            f"burst of {n} at {at:%H:%M:%S}: {len(found)} stamps, {len(wrong)} for another slot"
        )
    return Burst(late=[s.lateness for s in found], cpu_ms=cpu_ms)


def idle_table(results: dict[int, Idle]) -> str:
    rows = [
        [
            *(f"{n:,}", cell(idle.startups), f"{idle.window.rss_mb:.1f}"),
            *(f"{idle.window.hwm_mb:.1f}", f"{idle.window.ticks_ms:.0f}"),
            *(f"{idle.window.cpu_ms:.3f}", str(idle.window.switches)),
        ]
        for n, idle in results.items()
    ]
    headers = ["jobs", "startup, s", "VmRSS, MB", "VmHWM, MB", "idle CPU, ms (stat ticks)"]
    return markdown_table([*headers, "idle CPU, ms (schedstat)", "context switches"], rows)


def lateness_table(late: list[float]) -> str:
    row = [str(len(late)), *(f"{percentile(late, q) * 1000:.1f}" for q in (50, 99, 100))]
    return markdown_table(["starts", "p50, ms", "p99, ms", "max, ms"], [row])


def burst_table(results: dict[int, list[Burst]]) -> str:
    rows = [
        [
            f"{n:,}",
            *(cell([stat(run.late) for run in runs], 1000, 1) for stat in BURST_STATS.values()),
            cell([run.cpu_ms for run in runs], digits=1),
        ]
        for n, runs in results.items()
    ]
    return markdown_table(
        ["jobs", *(f"{name}, ms" for name in BURST_STATS), "daemon CPU, ms"], rows
    )


def targets_table(idle: dict[int, Idle], late: list[float], bursts: dict[int, list[Burst]]) -> str:
    measured = {"every-second job: p99": percentile(late, 99) * 1000}
    for n, run in idle.items():
        measured[f"startup, {n:,} jobs"] = statistics.median(run.startups) * 1000
        measured[f"VmRSS, {n:,} jobs"] = run.window.rss_mb
        measured[f"idle CPU, {n:,} jobs"] = run.window.per_minute(run.window.cpu_ms)
    for n, runs in bursts.items():
        for stat in ("last", "p99"):
            late_ms = [BURST_STATS[stat](run.late) * 1000 for run in runs]
            measured[f"burst of {n:,}: {stat} start"] = statistics.median(late_ms)
    rows = [
        [
            name,
            f"< {limit:g} {unit}",
            f"{measured[name]:.3f} {unit}",
            verdict(measured[name], limit),
        ]
        for name, (limit, unit) in TARGETS.items()
        if name in measured
    ]
    return markdown_table(
        ["what (medians; idle CPU by schedstat)", "target", "measured", "met"], rows
    )


def report(
    idle: dict[int, Idle],
    late: list[float],
    bursts: dict[int, list[Burst]],
    args: argparse.Namespace,
) -> str:
    window = next(iter(idle.values())).window.seconds if idle else 0.0
    return (
        f"Startup ({args.repeats} alternating repeats, s, median (min–max)), memory, and CPU "
        f"over a {window:.0f} s idle window (nothing due):\n\n{idle_table(idle)}\n\n"
        f"One job `* * * * * *` for {args.lateness_seconds:g} s, lateness of each start "
        f"(stamp minus slot):\n\n{lateness_table(late)}\n\n"
        f"N jobs due at one instant, `max_concurrent: N`: lateness of the starts, and the "
        f"daemon's own CPU from just before the instant until every job had succeeded "
        f"({args.repeats} daemons per size, ms, median (min–max)):\n\n{burst_table(bursts)}\n\n"
        f"Targets:\n\n{targets_table(idle, late, bursts)}\n"
    )


def main() -> None:
    args = parser(__doc__, SECTION, build_dir=True, cronplus_python=True)
    args.add_argument("--sizes", type=numbers, default=[100, 1000, 10000], help="startup/idle")
    args.add_argument("--idle-seconds", type=float, default=60.0, help="idle window (default 60)")
    args.add_argument("--lateness-seconds", type=float, default=30.0, help="every-second run (30)")
    args.add_argument("--burst-sizes", type=numbers, default=[100, 1000], help="jobs due at once")
    args.add_argument("--repeats", type=int, default=3, help="startups and bursts per size (3)")
    args.add_argument("--burst-lead", type=float, default=5.0, help="s from start to burst (5)")
    chosen = args.parse_args()
    record = Record.begin()
    stamp = build_stamp(chosen.build_dir)
    python = chosen.cronplus_python or install_cronplus()
    raise_fd_limit(max([*chosen.burst_sizes, 1]))
    bursts: dict[int, list[Burst]] = {n: [] for n in chosen.burst_sizes}
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp, no_child_left():
        root = Path(tmp)
        idle = idle_daemons(root, chosen, python)
        late = every_second(root, stamp, seconds=chosen.lateness_seconds, python=python)
        for _ in range(chosen.repeats):
            for n in chosen.burst_sizes:
                bursts[n].append(burst(root, stamp, n, lead=chosen.burst_lead, python=python))
    text = report(idle, late, bursts, chosen)
    options = ["sizes", "idle_seconds", "lateness_seconds", "burst_sizes", "repeats", "burst_lead"]
    header = record.header(SECTION.command(chosen, options), f"- cronplus run by: {shown(python)}")
    SECTION.publish(f"{header}\n\n{text}", chosen.write_results)


if __name__ == "__main__":
    launch(main)

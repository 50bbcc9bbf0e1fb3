"""cronplus beside yacron and Debian cron: the same jobs, measured in one run, alternating.

    python bench/bench_peers.py [--peers cronplus,yacron,cron] [--sizes 100,1000,10000]
        [--burst-sizes 100,1000] [--repeats 3] [--idle-seconds 60] [--starts 5]
        [--grain minute] [--lead 20] [--slow-limit 1200] [--spawn-n 1000]
        [--write-results [FILE]] [--json FILE] [--charts DIR]

``make bench`` runs it in full (60 to 90 minutes). Every daemon (peers.py) gets gen.py's
portable jobs in its own format, for the issue's rows: its config check (spawn to exit,
peak RSS by bench/peak.c); startup, steady RSS and idle CPU with jobs none due for months;
bursts of N jobs due at the first whole minute at least ``--lead`` s away (or twice the
daemon's startup); one job every minute; and the bare spawn limit. ``--grain second``
(cronplus alone) fires at whole seconds: the test suite's smoke run. A measurement over
60 s is not repeated; one over ``--slow-limit`` is stopped and shown as "> limit".
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from itertools import product
from pathlib import Path
from typing import TypeVar

import peers_report
from gen import PORTABLE, Schedule, every, idle_from, job_specs, minute_at, second_at
from harness import (
    BENCH,
    BUILD_DIR,
    Failed,
    Record,
    alternate,
    build_c,
    build_stamp,
    fresh,
    install_cronplus,
    launch,
    listed,
    numbers,
    parser,
    read_stamps,
)
from peers import Peer, peers
from peers_report import Idle, Results
from procs import (
    Check,
    Child,
    NotReady,
    Window,
    asyncio_loop,
    c_loop,
    no_child_left,
    popen_loop,
    posix_spawn_loop,
    raise_fd_limit,
    timed_check,
    watch,
)

SLOW = 60.0
"""A measurement that took longer than this many seconds is not repeated."""
SETTLE = 1.0
"""Seconds between the last daemon's readiness and the idle window."""
BURST_TIMEOUT = 120.0
"""Seconds after the burst instant by which every job must have started."""
T = TypeVar("T")
Sized = dict[str, dict[int, list[T]]]
"""Figures by daemon name, then job count, a run a repeat."""


@dataclass(frozen=True, kw_only=True)
class Lab:
    """What every measurement of one run shares."""

    daemons: list[Peer]
    repeats: int
    root: Path
    """A temporary folder: each run of a daemon gets a fresh folder in it."""
    stamp: Path
    limit: float
    """Seconds a check or a start may take (``--slow-limit``)."""
    grain: str

    @property
    def period(self) -> int:
        return 60 if self.grain == "minute" else 1

    def sized(self, sizes: list[int], _kind: type[T]) -> Sized[T]:
        """Empty lists of ``_kind`` by daemon and size, to be filled repeat by repeat."""
        return {d.name: {n: [] for n in sizes} for d in self.daemons}

    def write(
        self, what: str, daemon: Peer, n: int, schedule: Schedule, stamps: bool = False
    ) -> Path:
        """A fresh folder with N of gen.py's portable jobs in the daemon's format, each
        running ``true``, or (``stamps``) stamping ``stamps.txt`` in that folder."""
        folder = fresh(self.root, f"{what}-{daemon.name.replace(' ', '-')}-{n}")
        argv = [str(self.stamp), str(folder / "stamps.txt")] if stamps else ["true"]
        daemon.write(folder, job_specs(n, expressions=PORTABLE), schedule, argv)
        return folder


def _again(repeat: int, first: float | None) -> bool:
    """Whether to measure in this repeat: always the first time, then only what took less
    than SLOW seconds the first time."""
    return not repeat or (first is not None and first < SLOW)


def config_checks(lab: Lab, sizes: list[int], *, peak: Path) -> Sized[Check]:
    schedule, out = idle_from(datetime.now(UTC)), lab.sized(sizes, Check)
    for repeat, daemon, n in product(range(lab.repeats), lab.daemons, sizes):
        runs: list[Check] = out[daemon.name][n]
        if _again(repeat, runs[0].seconds if runs else None):
            folder = lab.write("check", daemon, n, schedule)
            if (argv := daemon.check(folder)) is not None:
                runs.append(timed_check(argv, folder, lab.limit, peak=peak))
    return out


def started(
    lab: Lab, daemon: Peer, n: int, schedule: Schedule
) -> tuple[Child | None, float | None]:
    """A daemon with N jobs and its startup; (None, None) if it was not ready in time."""
    child = daemon.start(lab.write("idle", daemon, n, schedule), stamp=lab.stamp)
    try:
        return child, child.ready(lab.limit)
    except NotReady:
        return None, None


def idle(startup: float | None, window: Window | None) -> Idle:
    """One repeat of one size: a daemon that was not ready has its startup (None) only."""
    if window is None:
        return Idle(startup=startup, rss_mb=None, hwm_mb=None, cpu_ms=None, wakeups=None)
    return Idle(
        startup=startup,
        rss_mb=window.rss_mb,
        hwm_mb=window.hwm_mb,
        cpu_ms=window.per_minute(window.cpu_ms),
        wakeups=window.per_minute(window.switches),
    )


def daemon_costs(lab: Lab, sizes: list[int], *, seconds: float) -> Sized[Idle]:
    schedule, out = idle_from(datetime.now(UTC)), lab.sized(sizes, Idle)
    for repeat, daemon in product(range(lab.repeats), lab.daemons):
        running: dict[int, Child] = {}
        startups: dict[int, float | None] = {}
        windows: dict[int, list[Window]] = {}
        try:
            for n in sorted(sizes, reverse=True):  # the slowest start first
                runs: list[Idle] = out[daemon.name][n]
                if _again(repeat, runs[0].startup if runs else None):
                    child, startups[n] = started(lab, daemon, n, schedule)
                    if child is not None:
                        running[n] = child
            if running:
                time.sleep(min(SETTLE, seconds))
                windows = watch({n: child.pid for n, child in running.items()}, seconds)
        finally:
            for child in running.values():
                child.stop()
        for n, startup in startups.items():
            out[daemon.name][n].append(idle(startup, windows.get(n, [None])[0]))
    return out


def stamped(
    lab: Lab, daemon: Peer, folder: Path, count: int, *, ready: float, within: float
) -> list[float]:
    """Start the daemon written in ``folder``: when its jobs stamped, once ``count`` have or
    ``within`` seconds after it was ready; it is stopped either way."""
    child = daemon.start(folder, stamp=lab.stamp)
    try:
        child.ready(ready)
        deadline = time.time() + within
        while len(found := read_stamps(folder / "stamps.txt")) < count and time.time() < deadline:
            time.sleep(0.05)
    finally:
        child.stop()
    return [stamp.at for stamp in found]


def burst(lab: Lab, daemon: Peer, n: int, *, lead: float) -> list[float]:
    """Lateness, in seconds, of each of N jobs due at one instant."""
    at = math.ceil((time.time() + lead) / lab.period) * lab.period
    instant = datetime.fromtimestamp(at, UTC)
    schedule = minute_at(instant) if lab.grain == "minute" else second_at(instant)
    folder = lab.write("burst", daemon, n, schedule, stamps=True)
    try:
        found = stamped(
            lab, daemon, folder, n, ready=at - time.time(), within=at - time.time() + BURST_TIMEOUT
        )
    except NotReady:
        raise Failed(
            f"{daemon.name} with {n} jobs was not ready by the burst; raise --lead"
        ) from None
    if len(found) != n:
        raise Failed(f"{daemon.name}: {len(found)} of {n} jobs started by the burst")
    return [start - at for start in found]


def bursts(lab: Lab, sizes: list[int], lead: Callable[[Peer, int], float]) -> Sized[list[float]]:
    out: Sized[list[float]] = lab.sized(sizes, list)
    for _, n, daemon in product(range(lab.repeats), sizes, lab.daemons):
        try:
            out[daemon.name][n].append(burst(lab, daemon, n, lead=lead(daemon, n)))
        except Failed as error:  # one lost burst must not lose an hour's figures
            print(f"a burst is left out: {error}", file=sys.stderr)
    return out


def periodic(lab: Lab, daemon: Peer, *, starts: int) -> list[float]:
    """Lateness of the first ``starts`` starts of one job due every minute (or second)."""
    folder = lab.write("every", daemon, 1, every(lab.grain), stamps=True)
    within = (starts + 1) * lab.period + 10
    found = stamped(lab, daemon, folder, starts, ready=lab.limit, within=within)
    if len(found) < starts:
        raise Failed(f"{daemon.name}: {len(found)} of {starts} starts of the periodic job")
    # Every start is far less than a period late, so its slot is the period it falls in.
    return [at - at // lab.period * lab.period for at in found[:starts]]


def periodics(lab: Lab, *, starts: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for daemon in lab.daemons:
        try:
            out[daemon.name] = periodic(lab, daemon, starts=starts)
        except Failed as error:
            print(f"a periodic run is left out: {error}", file=sys.stderr)
    return out


def spawn_limits(lab: Lab, n: int, *, build_dir: Path) -> dict[str, list[tuple[float, float]]]:
    argv = [str(lab.stamp), str(lab.root / "spawn-stamps.txt")]
    loops = {
        "C posix_spawn": c_loop(build_dir),
        "Python posix_spawn": posix_spawn_loop,
        "Python Popen": popen_loop,
        "asyncio": asyncio_loop,
    }
    return alternate({name: partial(loop, argv) for name, loop in loops.items()}, n, lab.repeats)


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    made = parser(__doc__, peers_report.SECTION, build_dir=True, cronplus_python=True)
    add = made.add_argument
    add("--peers", type=listed, default=["cronplus", "yacron", "cron"], help="daemons to run")
    add("--sizes", type=numbers, default=[100, 1000, 10000], help="jobs: check, startup, idle")
    add("--burst-sizes", type=numbers, default=[100, 1000], help="jobs due at one instant")
    add("--repeats", type=int, default=3, help="rounds of every daemon (3)")
    add("--idle-seconds", type=float, default=60.0, help="idle window (60)")
    add("--starts", type=int, default=5, help="starts of the every-minute job (5)")
    add("--grain", choices=["minute", "second"], default="minute", help="burst/periodic unit")
    add("--lead", type=float, default=20.0, help="least s from writing a burst to it (20)")
    add("--slow-limit", type=float, default=1200.0, help="s a check or a start may take")
    add("--spawn-n", type=int, default=1000, help="children in flight for the limit (1000)")
    add(
        "--json",
        type=Path,
        default=BUILD_DIR / "peers.json",
        help="raw figures (bench/out/peers.json)",
    )
    add("--charts", type=Path, nargs="?", const=BENCH / "figures", metavar="DIR")
    args = made.parse_args(argv)
    if args.grain == "second" and args.peers != ["cronplus"]:
        made.error("--grain second: only cronplus reads seconds; use --peers cronplus")
    return args


def measure(args: argparse.Namespace, root: Path, stamp: Path) -> Results:
    lab = Lab(
        daemons=peers(args.peers, cronplus_python=args.cronplus_python),
        repeats=args.repeats,
        root=root,
        stamp=stamp,
        limit=args.slow_limit,
        grain=args.grain,
    )
    spawn = spawn_limits(lab, args.spawn_n, build_dir=args.build_dir)
    peak = build_c(BENCH / "peak.c", args.build_dir, static=True)
    checks = config_checks(lab, args.sizes, peak=peak)
    costs = daemon_costs(lab, args.sizes, seconds=args.idle_seconds)

    def lead(daemon: Peer, n: int) -> float:
        """Seconds from writing a burst to its instant: the daemon must be up by then."""
        known = [run.startup for run in costs[daemon.name].get(n, []) if run.startup]
        least: float = args.lead
        return max(least, 2 * statistics.median(known) + 2) if known else least

    return Results(
        grain=args.grain,
        slow_limit=args.slow_limit,
        checks=checks,
        daemons=costs,
        bursts=bursts(lab, args.burst_sizes, lead),
        every=periodics(lab, starts=args.starts),
        spawn=spawn,
        spawn_n=args.spawn_n,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments(argv)
    record = Record.begin()  # the code install_cronplus builds, not HEAD when the run ends
    stamp = build_stamp(args.build_dir)
    if args.cronplus_python is None and "cronplus" in args.peers:
        args.cronplus_python = install_cronplus()
    raise_fd_limit(max([*args.burst_sizes, args.spawn_n]))
    with no_child_left(), tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        results = measure(args, Path(tmp), stamp)
    command = sys.argv[1:] if argv is None else argv
    header = peers_report.header(record, args.peers, command, cronplus=args.cronplus_python)
    results = replace(results, header=header)
    peers_report.save(results, args.json)
    peers_report.SECTION.publish(peers_report.report(results), args.write_results)
    if args.charts is not None:
        import charts

        for path in charts.draw(results, args.charts):
            print(f"wrote {path}")


if __name__ == "__main__":
    launch(main)

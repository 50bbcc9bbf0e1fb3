"""cronplus beside yacron and Debian cron: the same jobs, measured in one run, alternating.

    python bench/bench_peers.py [--peers cronplus,yacron,cron] [--sizes 100,1000,10000]
        [--burst-sizes 100,1000] [--repeats 3] [--idle-seconds 60] [--starts 5]
        [--grain minute] [--lead 20] [--slow-limit 1200] [--spawn-n 1000]
        [--write-results [FILE]] [--json FILE] [--charts DIR]

``make bench`` runs it in full (60 to 90 minutes, half of them yacron with 10,000 jobs),
installing the peers first (bench/peers.py). Every daemon gets peers.py's ``job_specs``
in its own format, and the rows are the issue's:

1. **config check**: the daemon's own check of the file (``cronplus validate``, ``yacron
   --validate-config``; Debian cron has none): wall time from spawn to exit, and its peak
   RSS (``ru_maxrss`` from ``wait4``, taken by bench/peak.c, whose child it is). The jobs are
   the idle ones below.
2. **startup, steady RSS, idle CPU**: each daemon starts with N jobs moved into a month
   half a year away (nothing fires); startup is spawn to ready (peers.py). Per repeat and
   daemon, its sizes run side by side through one idle window: VmRSS at its end, CPU from
   /proc/PID/task/*/schedstat (ns) and wake-ups (context switches), per 60 s.
3. **bursts**: N jobs due at one instant, the first whole minute at least ``--lead`` s (or
   twice the daemon's startup) after the files are written; each job runs bench/stamp.c,
   which notes CLOCK_REALTIME first thing. Lateness of the first, median, p99 and last start.
4. **every minute**: one job ``* * * * *`` until it has started ``--starts`` times;
   lateness of each start from its minute.
5. **spawn limit**: N copies of the same payload started by bare loops (spawn_limit.py).

``--grain second`` (cronplus alone) fires bursts at a whole second and the job every second:
the test suite's smoke run. Measurements that take longer than 60 s are not repeated; one
that exceeds ``--slow-limit`` is stopped and shown as "> limit". Figures are medians with
(min–max) over the repeats; percentiles are nearest-rank.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers_report
import spawn_limit
from bench_daemon import idle_month, no_daemon_left, per_minute, usage
from bench_runonce import (
    DEFAULT_BUILD_DIR,
    add_cronplus_python,
    add_write_results,
    bench_env,
    build_c,
    build_stamp,
    code_state,
    fresh,
    install_cronplus,
)
from bench_spawn import raise_fd_limit
from peers import (
    NotReady,
    Peer,
    PeerError,
    Running,
    Schedule,
    every,
    idle_in,
    job_specs,
    kill_left_over,
    minute_at,
    peers,
    second_at,
    stamp_times,
)
from peers_report import Check, Idle, Results

SLOW = 60.0
"""A measurement that took longer than this many seconds is not repeated."""
SETTLE = 1.0
"""Seconds between the last daemon's readiness and the idle window."""
BURST_TIMEOUT = 120.0
"""Seconds after the burst instant by which every job must have started."""
DEFAULT_JSON = DEFAULT_BUILD_DIR / "peers.json"
DEFAULT_CHARTS = Path(__file__).resolve().parent / "figures"
PEAK_SOURCE = Path(__file__).resolve().parent / "peak.c"


def slug(daemon: Peer) -> str:
    """The daemon's name as a folder name: ``Debian cron`` is ``Debian-cron``."""
    return daemon.name.replace(" ", "-")


# --- 1. config check --------------------------------------------------------------------


def timed_check(argv: list[str], folder: Path, limit: float, *, peak: Path) -> Check:
    """Run one check command; its wall time and its own peak RSS.

    ``peak`` is bench/peak.c built: the command runs as its child, so that its peak RSS
    is its own and not this harness's (see there).
    """
    peak_file = folder / "peak.kib"
    with (folder / "check.log").open("wb") as log:
        began = time.perf_counter()
        proc = subprocess.Popen(
            [str(peak.absolute()), str(peak_file), *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=bench_env(folder / "state"),
            cwd=folder,
            start_new_session=True,  # a check stopped at the limit goes with its group
        )
        try:
            # Not proc.wait(limit): with a timeout it polls, sleeping up to 50 ms between
            # looks, which rounded every check up to the next 50 ms step.
            exited = exits_within(proc.pid, limit)
            seconds = time.perf_counter() - began
        finally:
            if proc.poll() is None:  # the limit, or this harness stopped (Ctrl-C)
                os.killpg(proc.pid, signal.SIGKILL)  # not yet reaped: still our group
                proc.wait()
        if not exited:
            return Check(seconds=None, peak_mb=None)
    if proc.returncode != 0:
        output = (folder / "check.log").read_text(errors="replace")[-2000:]
        raise PeerError(f"{argv[0]} exited {proc.returncode}:\n{output}")
    return Check(seconds=seconds, peak_mb=int(peak_file.read_text()) / 1024)


def exits_within(pid: int, seconds: float) -> bool:
    """Whether child ``pid`` ends within ``seconds``, seen the moment it does (a pidfd);
    it is left to be reaped."""
    pidfd = os.pidfd_open(pid)
    try:
        return bool(select.select([pidfd], [], [], seconds)[0])
    finally:
        os.close(pidfd)


def config_checks(
    daemons: Sequence[Peer],
    sizes: list[int],
    *,
    repeats: int,
    limit: float,
    root: Path,
    peak: Path,
) -> dict[str, dict[int, list[Check]]]:
    schedule = idle_in(idle_month(datetime.now(UTC)))
    out: dict[str, dict[int, list[Check]]] = {d.name: {n: [] for n in sizes} for d in daemons}
    for repeat in range(repeats):
        for daemon in daemons:
            for n in sizes:
                runs = out[daemon.name][n]
                if repeat and not (runs and _quick(runs[0].seconds)):
                    continue
                folder = fresh(root, f"check-{slug(daemon)}-{n}")
                daemon.write(folder, job_specs(n), schedule, ("true",))
                argv = daemon.check(folder)
                if argv is not None:
                    runs.append(timed_check(argv, folder, limit, peak=peak))
    return out


def _quick(seconds: float | None) -> bool:
    return seconds is not None and seconds < SLOW


# --- 2. startup, steady RSS, idle CPU ---------------------------------------------------


def started(
    daemon: Peer, n: int, *, root: Path, stamp: Path, schedule: Schedule, limit: float
) -> tuple[Running | None, float | None]:
    """A daemon with N jobs and its startup; (None, None) if it was not ready in time."""
    folder = fresh(root, f"idle-{slug(daemon)}-{n}")
    daemon.write(folder, job_specs(n), schedule, ("true",))
    run = daemon.start(folder, stamp=stamp)
    try:
        return run, run.ready(limit)
    except NotReady:
        return None, None


def idle_window(running: dict[int, Running], seconds: float) -> dict[int, tuple[float, ...]]:
    """Per size: (VmRSS MB, VmHWM MB, CPU ms per 60 s, wake-ups per 60 s)."""
    time.sleep(min(SETTLE, seconds))
    before = {n: usage(run.pid) for n, run in running.items()}
    began = time.perf_counter()
    time.sleep(seconds)
    after = {n: usage(run.pid) for n, run in running.items()}
    elapsed = time.perf_counter() - began
    return {
        n: (
            after[n].rss_kib / 1024,
            after[n].hwm_kib / 1024,
            *per_minute(before[n], after[n], elapsed),
        )
        for n in running
    }


def daemon_costs(
    daemons: Sequence[Peer],
    sizes: list[int],
    *,
    repeats: int,
    seconds: float,
    limit: float,
    root: Path,
    stamp: Path,
) -> dict[str, dict[int, list[Idle]]]:
    schedule = idle_in(idle_month(datetime.now(UTC)))
    out: dict[str, dict[int, list[Idle]]] = {d.name: {n: [] for n in sizes} for d in daemons}
    for repeat in range(repeats):
        for daemon in daemons:
            running: dict[int, Running] = {}
            startups: dict[int, float | None] = {}
            try:
                for n in sorted(sizes, reverse=True):  # the slowest start first
                    runs = out[daemon.name][n]
                    if repeat and not (runs and _quick(runs[0].startup)):
                        continue
                    run, startups[n] = started(
                        daemon, n, root=root, stamp=stamp, schedule=schedule, limit=limit
                    )
                    if run is not None:
                        running[n] = run
                window = idle_window(running, seconds) if running else {}
            finally:
                for run in running.values():
                    run.stop()
            for n, startup in startups.items():
                rss, hwm, cpu, wakeups = window.get(n, (None, None, None, None))
                out[daemon.name][n].append(
                    Idle(startup=startup, rss_mb=rss, hwm_mb=hwm, cpu_ms=cpu, wakeups=wakeups)
                )
    return out


# --- 3. bursts and 4. the every-minute job ----------------------------------------------


def next_instant(after: float, grain: str) -> datetime:
    """The first whole minute (or second) at or after ``after``."""
    period = 60 if grain == "minute" else 1
    return datetime.fromtimestamp(math.ceil(after / period) * period, UTC)


def wait_for_stamps(path: Path, count: int, deadline: float) -> list[float]:
    """The stamps in ``path`` once there are ``count``, or whatever came by ``deadline``."""
    while len(times := stamp_times(path)) < count and time.time() < deadline:
        time.sleep(0.05)
    return times


def burst(daemon: Peer, n: int, *, grain: str, lead: float, root: Path, stamp: Path) -> list[float]:
    """Lateness, in seconds, of each of N jobs due at one instant."""
    folder = fresh(root, f"burst-{slug(daemon)}-{n}")
    stamps = folder / "stamps.txt"
    instant = next_instant(time.time() + lead, grain)
    at = minute_at(instant) if grain == "minute" else second_at(instant)
    daemon.write(folder, job_specs(n), at, (str(stamp), str(stamps)))
    run = daemon.start(folder, stamp=stamp)
    try:
        try:
            run.ready(instant.timestamp() - time.time())
        except NotReady:
            raise PeerError(
                f"{daemon.name} with {n} jobs was not ready by the burst; raise --lead"
            ) from None
        found = wait_for_stamps(stamps, n, instant.timestamp() + BURST_TIMEOUT)
    finally:
        run.stop()
    if len(found) != n:
        raise PeerError(f"{daemon.name}: {len(found)} of {n} jobs started by the burst")
    return [at - instant.timestamp() for at in found]


def bursts(
    daemons: Sequence[Peer],
    sizes: list[int],
    *,
    repeats: int,
    grain: str,
    lead: Callable[[Peer, int], float],
    root: Path,
    stamp: Path,
) -> dict[str, dict[int, list[list[float]]]]:
    out: dict[str, dict[int, list[list[float]]]] = {d.name: {n: [] for n in sizes} for d in daemons}
    for _ in range(repeats):
        for n in sizes:
            for daemon in daemons:
                try:
                    ahead = lead(daemon, n)
                    late = burst(daemon, n, grain=grain, lead=ahead, root=root, stamp=stamp)
                except PeerError as error:  # one lost burst must not lose an hour's figures
                    print(f"a burst is left out: {error}", file=sys.stderr)
                    continue
                out[daemon.name][n].append(late)
    return out


def periodic(
    daemons: Sequence[Peer], *, starts: int, grain: str, limit: float, root: Path, stamp: Path
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for daemon in daemons:
        try:
            out[daemon.name] = every_period(
                daemon, starts=starts, grain=grain, limit=limit, root=root, stamp=stamp
            )
        except PeerError as error:
            print(f"a periodic run is left out: {error}", file=sys.stderr)
    return out


def every_period(
    daemon: Peer, *, starts: int, grain: str, limit: float, root: Path, stamp: Path
) -> list[float]:
    """Lateness of the first ``starts`` starts of one job due every minute (or second)."""
    folder = fresh(root, f"every-{slug(daemon)}")
    stamps = folder / "stamps.txt"
    daemon.write(folder, job_specs(1), every(grain), (str(stamp), str(stamps)))
    period = 60 if grain == "minute" else 1
    run = daemon.start(folder, stamp=stamp)
    try:
        run.ready(limit)
        found = wait_for_stamps(stamps, starts, time.time() + (starts + 1) * period + 10)
    finally:
        run.stop()
    if len(found) < starts:
        raise PeerError(f"{daemon.name}: {len(found)} of {starts} starts of the periodic job")
    # Every start is far less than a period late, so its slot is the period it falls in.
    return [at - at // period * period for at in found[:starts]]


# --- 5. the spawn limit -----------------------------------------------------------------


def spawn_limits(
    n: int, *, repeats: int, root: Path, stamp: Path, build_dir: Path
) -> dict[str, list[tuple[float, float]]]:
    argv = [str(stamp), str(root / "spawn-stamps.txt")]
    loops = spawn_limit.ways(build_dir)
    for loop in loops.values():  # warm up imports, caches and the page cache
        loop(argv, min(n, 20))
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in loops}
    for _ in range(repeats):
        for name, loop in loops.items():
            gc.collect()
            out[name].append(loop(argv, n))
    return out


# --- the run ----------------------------------------------------------------------------


def sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--peers", type=names, default=["cronplus", "yacron", "cron"], help="daemons to run")
    add("--sizes", type=sizes, default=[100, 1000, 10000], help="jobs: check, startup, idle")
    add("--burst-sizes", type=sizes, default=[100, 1000], help="jobs due at one instant")
    add("--repeats", type=int, default=3, help="rounds of every daemon (3)")
    add("--idle-seconds", type=float, default=60.0, help="idle window (60)")
    add("--starts", type=int, default=5, help="starts of the every-minute job (5)")
    add("--grain", choices=["minute", "second"], default="minute", help="burst/periodic unit")
    add("--lead", type=float, default=20.0, help="least s from writing a burst to it (20)")
    add("--slow-limit", type=float, default=1200.0, help="s a check or a start may take")
    add("--spawn-n", type=int, default=1000, help="children in flight for the limit (1000)")
    add("--build-dir", type=Path, default=DEFAULT_BUILD_DIR, help="for stamp and spawn")
    add_cronplus_python(parser)
    add("--json", type=Path, default=DEFAULT_JSON, help="raw figures (bench/out/peers.json)")
    add("--charts", type=Path, nargs="?", const=DEFAULT_CHARTS, default=None, metavar="DIR")
    add_write_results(parser, peers_report.HEADING)
    args = parser.parse_args(argv)
    if args.grain == "second" and args.peers != ["cronplus"]:
        parser.error("--grain second: only cronplus reads seconds; use --peers cronplus")
    return args


def measure(args: argparse.Namespace, root: Path, stamp: Path) -> Results:
    daemons = peers(args.peers, cronplus_python=args.cronplus_python)
    spawn = spawn_limits(
        args.spawn_n, repeats=args.repeats, root=root, stamp=stamp, build_dir=args.build_dir
    )
    checks = config_checks(
        daemons,
        args.sizes,
        repeats=args.repeats,
        limit=args.slow_limit,
        root=root,
        peak=build_c(PEAK_SOURCE, args.build_dir, static=True),
    )
    costs = daemon_costs(
        daemons,
        args.sizes,
        repeats=args.repeats,
        seconds=args.idle_seconds,
        limit=args.slow_limit,
        root=root,
        stamp=stamp,
    )

    def lead(daemon: Peer, n: int) -> float:
        """Seconds from writing a burst to its instant: the daemon must be up by then."""
        known = [run.startup for run in costs[daemon.name].get(n, []) if run.startup]
        least: float = args.lead
        return max(least, 2 * statistics.median(known) + 2) if known else least

    burst_late = bursts(
        daemons,
        args.burst_sizes,
        repeats=args.repeats,
        grain=args.grain,
        lead=lead,
        root=root,
        stamp=stamp,
    )
    every_start = periodic(
        daemons,
        starts=args.starts,
        grain=args.grain,
        limit=args.slow_limit,
        root=root,
        stamp=stamp,
    )
    return Results(
        grain=args.grain,
        slow_limit=args.slow_limit,
        checks=checks,
        daemons=costs,
        bursts=burst_late,
        every=every_start,
        spawn=spawn,
        spawn_n=args.spawn_n,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments(argv)
    loadavg, began = peers_report.load_average(), datetime.now(UTC)
    code = code_state()  # what install_cronplus builds, not HEAD when the run ends
    stamp = build_stamp(args.build_dir)
    if args.cronplus_python is None and "cronplus" in args.peers:
        args.cronplus_python = install_cronplus()
    raise_fd_limit(max([*args.burst_sizes, args.spawn_n]))  # the daemons inherit it
    try:
        with no_daemon_left(), tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
            results = measure(args, Path(tmp), stamp)
    finally:
        kill_left_over()
    command = sys.argv[1:] if argv is None else argv
    header = peers_report.header(
        loadavg, args.peers, command, cronplus=args.cronplus_python, began=began, code=code
    )
    results = replace(results, header=header)
    peers_report.save(results, args.json)
    body = peers_report.report(results)
    print(body)
    if args.write_results is not None:
        peers_report.write_section(args.write_results, body)
    if args.charts is not None:
        import charts

        for path in charts.draw(results, args.charts):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()

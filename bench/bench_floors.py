"""What this host allows a Python daemon on cronplus's stack: the config check and the idle
daemon beside their floors, measured in one run.

    python bench/bench_floors.py [-n 1000] [--rounds 9] [--idle-seconds 60] [--windows 5]
        [--build-dir bench/out] [--cronplus-python PYTHON] [--write-results [FILE]]

The peers run (bench_peers.py) reads its bursts against the bare spawn limit
(spawn_limit.py). This gives the check and idle rows the same kind of reference, so a
figure measured on a slower host reads as cronplus's own share on top of the host's:

- **check**: wall time from spawn to exit and peak RSS, alternating over ``--rounds``:
  cronplus's interpreter doing nothing (``-c pass``); the same importing what any check
  needs before it reads a file (click, PyYAML, pydantic's ``BaseModel`` and
  ``TypeAdapter``), nothing of cronplus; ``cronplus validate`` of 100 and of N jobs
  (gen.py's jobs, none due for months, as the peers run checks them).
- **idle**: side by side through ``--windows`` consecutive windows, CPU (schedstat) and
  wake-ups per 60 s and VmRSS at the end: a ``cronplus daemon`` of N such jobs, and three
  sleepers that wake as often as an idle cronplus does (every 30 s, DESIGN's cap on a
  sleep) and do nothing else: a C loop of ``nanosleep`` (bench/sleeper.c), a Python loop
  of ``time.sleep`` and a Python loop of ``await asyncio.sleep`` (the daemon's own way).

Figures are medians with (min–max); nothing here is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_daemon import (
    STARTUP_TIMEOUT,
    DaemonRun,
    no_daemon_left,
    per_minute,
    usage,
    write_idle_crontab,
)
from bench_peers import PEAK_SOURCE, timed_check
from bench_runonce import (
    DEFAULT_BUILD_DIR,
    add_cronplus_python,
    add_write_results,
    build_c,
    cell,
    code_state,
    cronplus_argv,
    fresh,
    install_cronplus,
    load_average,
    machine,
    markdown_table,
    shown,
    update_results,
)
from peers_report import Check

BENCH = Path(__file__).resolve().parent
SLEEPER_SOURCE = BENCH / "sleeper.c"
HEADING = "## floors"
WAKE_EVERY = 30
"""Seconds between an idle cronplus's wake-ups (DESIGN: never sleep more than 30 s)."""
CHECK_LIMIT = 120.0
"""Seconds a check may take before it is stopped."""
SETTLE = 1.0
"""Seconds between the daemon's readiness and the first window."""
IDLE_TARGET = 1.0
"""The issue's target for an idle daemon, of 1,000 or 10,000 jobs: < 1 ms of CPU a minute."""


def check_target(n: int) -> float | None:
    """The issue's target for a check of N jobs: < 0.3 s up to 1,000, < 1 s up to 10,000."""
    if n <= 1000:
        return 0.3
    return 1.0 if n <= 10_000 else None


LIBRARIES = "import click, yaml; from pydantic import BaseModel, TypeAdapter"
CHECK_FLOOR = "+ click, PyYAML, pydantic models"
IDLE_FLOOR = "Python `asyncio.sleep` loop"


# --- check ------------------------------------------------------------------------------


def check_ways(python: Path, root: Path, n: int) -> dict[str, list[str]]:
    """What each check row runs."""
    ways = {
        "interpreter (`-c pass`)": [str(python), "-c", "pass"],
        CHECK_FLOOR: [str(python), "-c", LIBRARIES],
    }
    for jobs in sorted({100, n}):
        crontab = fresh(root, f"check-{jobs}") / "crontab.yaml"
        write_idle_crontab(crontab, jobs)
        ways[f"cronplus validate, {jobs:,} jobs"] = cronplus_argv(
            crontab, "validate", python=python
        )
    return ways


def checks(
    ways: dict[str, list[str]], root: Path, *, rounds: int, peak: Path
) -> dict[str, list[Check]]:
    """Every way once a round, the order turned by one each round; ``peak``: bench/peak.c
    built."""
    out: dict[str, list[Check]] = {name: [] for name in ways}
    names = list(ways)
    for round_ in range(rounds):
        turn = round_ % len(names)
        for name in names[turn:] + names[:turn]:
            folder = fresh(root, "check-run")
            checked = timed_check(ways[name], folder, CHECK_LIMIT, peak=peak)
            if checked.seconds is None:
                raise SystemExit(f"{name} took more than {CHECK_LIMIT:g} s")
            out[name].append(checked)
    return out


# --- idle -------------------------------------------------------------------------------


def sleepers(python: Path, build_dir: Path) -> dict[str, list[str]]:
    """The idle floors: processes that wake every WAKE_EVERY seconds to do nothing."""
    every = str(WAKE_EVERY)
    return {
        "C `nanosleep` loop": [str(build_c(SLEEPER_SOURCE, build_dir)), every],
        "Python `time.sleep` loop": [
            str(python),
            "-c",
            f"import time\nwhile True: time.sleep({every})",
        ],
        IDLE_FLOOR: [
            str(python),
            "-c",
            "import asyncio\nasync def main():\n    while True:\n"
            f"        await asyncio.sleep({every})\nasyncio.run(main())",
        ],
    }


@contextmanager
def running(argvs: dict[str, list[str]]) -> Iterator[dict[str, int]]:
    """Each argv as a process (its pid by name), killed on the way out."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, argv in argvs.items():
            procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        yield {name: proc.pid for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()


Window = tuple[float, float, float]
"""One process over one window: CPU ms per 60 s, wake-ups per 60 s, VmRSS MB at its end."""


def windows(pids: dict[str, int], seconds: float, count: int) -> dict[str, list[Window]]:
    out: dict[str, list[Window]] = {name: [] for name in pids}
    after = {name: usage(pid) for name, pid in pids.items()}
    ended = time.perf_counter()
    for _ in range(count):
        before, began = after, ended
        time.sleep(seconds)
        after = {name: usage(pid) for name, pid in pids.items()}
        ended = time.perf_counter()
        for name in pids:
            cpu, wakes = per_minute(before[name], after[name], ended - began)
            out[name].append((cpu, wakes, after[name].rss_kib / 1024))
    return out


def idle(
    python: Path, root: Path, n: int, *, build_dir: Path, seconds: float, count: int
) -> dict[str, list[Window]]:
    """The sleepers and a cronplus daemon of N idle jobs, side by side."""
    folder = fresh(root, f"idle-{n}")
    crontab = folder / "crontab.yaml"
    write_idle_crontab(crontab, n)
    with no_daemon_left(), running(sleepers(python, build_dir)) as pids:
        daemon = DaemonRun(folder, crontab, python=python)
        daemon.wait_for("started", timeout=STARTUP_TIMEOUT)
        time.sleep(SETTLE)
        found = windows({**pids, f"cronplus daemon, {n:,} jobs": daemon.proc.pid}, seconds, count)
        daemon.stop()
    return found


# --- the report -------------------------------------------------------------------------


def seconds(runs: list[Check]) -> list[float]:
    """The checks' times (none is None: ``checks`` stops at one over the limit)."""
    return [c.seconds for c in runs if c.seconds is not None]


def check_table(found: dict[str, list[Check]]) -> str:
    rows = [
        [
            name,
            cell(seconds(runs)),
            cell([c.peak_mb for c in runs if c.peak_mb is not None], digits=1),
        ]
        for name, runs in found.items()
    ]
    return markdown_table(["what runs", "spawn to exit, s", "peak RSS, MB"], rows)


def idle_table(found: dict[str, list[Window]]) -> str:
    rows = [
        [
            name,
            cell([w[0] for w in runs]),
            cell([w[1] for w in runs], digits=1),
            cell([w[2] for w in runs], digits=1),
        ]
        for name, runs in found.items()
    ]
    return markdown_table(["process", "CPU, ms per 60 s", "wake-ups per 60 s", "VmRSS, MB"], rows)


def against_table(checked: dict[str, list[Check]], idled: dict[str, list[Window]], n: int) -> str:
    """cronplus's figure, the floor under it, and what is cronplus's own: the floor and
    cronplus ran in the same rounds (checks) and the same windows (idle), so each round or
    window gives one difference and one ratio, whose medians are shown."""

    def cpu_ms(name: str) -> list[float]:
        return [w[0] for w in idled[name]]

    validate, daemon = f"cronplus validate, {n:,} jobs", f"cronplus daemon, {n:,} jobs"
    validated, floor_checked = seconds(checked[validate]), seconds(checked[CHECK_FLOOR])
    pairs = [
        (validate, "s", check_target(n), validated, floor_checked),
        (daemon, "ms per 60 s", IDLE_TARGET, cpu_ms(daemon), cpu_ms(IDLE_FLOOR)),
    ]
    rows = []
    for name, unit, target, mine, floor in pairs:
        above = [m - f for m, f in zip(mine, floor, strict=True)]
        ratios = [m / f for m, f in zip(mine, floor, strict=True) if f > 0]
        rows.append(
            [
                name,
                "–" if target is None else f"< {target:g} {unit}",
                cell(mine),
                cell(floor),
                "–" if target is None else f"{statistics.median(floor) / target:.0%}",
                cell(above),
                f"{statistics.median(ratios):.2f}" if ratios else "–",
            ]
        )
    headers = ["cronplus", "target", "measured", "floor", "floor ÷ target", "above floor"]
    return markdown_table([*headers, "÷ floor"], rows)


def report(
    checked: dict[str, list[Check]], idled: dict[str, list[Window]], args: argparse.Namespace
) -> str:
    return (
        f"Checks, {args.rounds} alternating rounds, median (min–max):\n\n{check_table(checked)}\n\n"
        f"Side by side, {args.windows} windows of {args.idle_seconds:g} s, median (min–max):\n\n"
        f"{idle_table(idled)}\n\n"
        "Against the floors (the check's: the libraries' row; the idle daemon's: the "
        "`asyncio.sleep` loop), round by round and window by window, median (min–max):"
        f"\n\n{against_table(checked, idled, args.n)}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="jobs checked and idle (1000)")
    parser.add_argument("--rounds", type=int, default=9, help="alternating check rounds (9)")
    parser.add_argument(
        "--idle-seconds", type=float, default=60.0, help="one window, a multiple of 30 s (60)"
    )
    parser.add_argument("--windows", type=int, default=5, help="consecutive windows (5)")
    parser.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR, help="C helpers")
    add_cronplus_python(parser)
    add_write_results(parser, HEADING)
    args = parser.parse_args()
    for option in ("n", "rounds", "windows", "idle_seconds"):
        if getattr(args, option) <= 0:
            parser.error(f"--{option.replace('_', '-')} must be above 0")
    loadavg, began, code = load_average(), datetime.now(UTC), code_state()
    python = args.cronplus_python or install_cronplus()
    with tempfile.TemporaryDirectory(prefix="bench-floors-") as tmp:
        root = Path(tmp)
        ways = check_ways(python, root, args.n)
        peak = build_c(PEAK_SOURCE, args.build_dir, static=True)
        checked = checks(ways, root, rounds=args.rounds, peak=peak)
        idled = idle(
            python,
            root,
            args.n,
            build_dir=args.build_dir,
            seconds=args.idle_seconds,
            count=args.windows,
        )
    command = (
        f"python bench/bench_floors.py -n {args.n} --rounds {args.rounds} "
        f"--idle-seconds {args.idle_seconds:g} --windows {args.windows}"
    )
    body = (
        f"{machine(loadavg, began=began, code=code)}\n- cronplus run by: {shown(python)}\n"
        f"- command: `{command}`\n\n{report(checked, idled, args)}"
    )
    print(body)
    if args.write_results is not None:
        update_results(args.write_results, HEADING, body, owner="bench_floors.py")


if __name__ == "__main__":
    main()

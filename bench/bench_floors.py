"""What this host allows a Python daemon on cronplus's stack: the config check and the idle
daemon beside their floors, measured in one run.

    python bench/bench_floors.py [-n 1000] [--rounds 9] [--idle-seconds 60] [--windows 5]
        [--build-dir bench/out] [--cronplus-python PYTHON] [--write-results [FILE]]

The check's floors: the interpreter alone, then importing what any check needs before it
reads a file (click, PyYAML, pydantic), over rounds whose order turns. The idle daemon's:
sleepers that wake as often as an idle cronplus (every 30 s, DESIGN's cap on a sleep) to do
nothing, in C (bench/sleeper.c), with ``time.sleep`` and with ``asyncio.sleep``, watched
side by side with it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench_daemon import STARTUP_TIMEOUT, idle_crontab
from harness import (
    BENCH,
    Failed,
    Record,
    Section,
    build_c,
    cell,
    cronplus_argv,
    fresh,
    install_cronplus,
    launch,
    markdown_table,
    parser,
    shown,
)
from procs import Check, Child, DaemonRun, Window, no_child_left, timed_check, watch

SECTION = Section("## floors", "bench_floors.py")
WAKE_EVERY = 30
"""Seconds between an idle cronplus's wake-ups (DESIGN: never sleep more than 30 s)."""
CHECK_LIMIT = 120.0
"""Seconds a check may take before it is stopped."""
SETTLE = 1.0
"""Seconds between the daemon's readiness and the first window."""
IDLE_TARGET = 1.0
"""The issue's target for an idle daemon, of 1,000 or 10,000 jobs: < 1 ms of CPU a minute."""
LIBRARIES = "import click, yaml; from pydantic import BaseModel, TypeAdapter"
CHECK_FLOOR = "+ click, PyYAML, pydantic models"
IDLE_FLOOR = "Python `asyncio.sleep` loop"


def check_target(n: int) -> float | None:
    """The issue's target for a check of N jobs: < 0.3 s up to 1,000, < 1 s up to 10,000."""
    if n <= 1000:
        return 0.3
    return 1.0 if n <= 10_000 else None


def check_ways(python: Path, root: Path, n: int) -> dict[str, list[str]]:
    """What each check row runs."""
    ways = {
        "interpreter (`-c pass`)": [str(python), "-c", "pass"],
        CHECK_FLOOR: [str(python), "-c", LIBRARIES],
    }
    for jobs in sorted({100, n}):
        crontab = idle_crontab(fresh(root, f"check-{jobs}"), jobs)
        ways[f"cronplus validate, {jobs:,} jobs"] = cronplus_argv(
            crontab, "validate", python=python
        )
    return ways


def checks(
    ways: dict[str, list[str]], root: Path, *, rounds: int, peak: Path
) -> dict[str, list[Check]]:
    """Every way once a round, the order turned by one each round; ``peak``: bench/peak.c."""
    out: dict[str, list[Check]] = {name: [] for name in ways}
    names = list(ways)
    for round_ in range(rounds):
        turn = round_ % len(names)
        for name in names[turn:] + names[:turn]:
            checked = timed_check(ways[name], fresh(root, "check-run"), CHECK_LIMIT, peak=peak)
            if checked.seconds is None:
                raise Failed(f"{name} took more than {CHECK_LIMIT:g} s")
            out[name].append(checked)
    return out


def sleepers(python: Path, build_dir: Path) -> dict[str, list[str]]:
    """The idle floors: processes that wake every WAKE_EVERY seconds to do nothing."""
    asleep_plainly = f"import time\nwhile True: time.sleep({WAKE_EVERY})"
    asleep = (
        "import asyncio\nasync def main():\n    while True:\n"
        f"        await asyncio.sleep({WAKE_EVERY})\nasyncio.run(main())"
    )
    return {
        "C `nanosleep` loop": [str(build_c(BENCH / "sleeper.c", build_dir)), str(WAKE_EVERY)],
        "Python `time.sleep` loop": [str(python), "-c", asleep_plainly],
        IDLE_FLOOR: [str(python), "-c", asleep],
    }


def idle(python: Path, root: Path, args: argparse.Namespace) -> dict[str, list[Window]]:
    """The sleepers and a cronplus daemon of N idle jobs, side by side."""
    with no_child_left():
        sleeping = sleepers(python, args.build_dir).items()
        pids = {name: Child(argv, fresh(root, "sleeper")).pid for name, argv in sleeping}
        folder = fresh(root, f"idle-{args.n}")
        daemon = DaemonRun(folder, idle_crontab(folder, args.n), python=python)
        daemon.ready(STARTUP_TIMEOUT)
        time.sleep(SETTLE)
        pids[f"cronplus daemon, {args.n:,} jobs"] = daemon.pid
        found = watch(pids, args.idle_seconds, args.windows)
        daemon.stop()
    return found


def check_table(found: dict[str, list[Check]]) -> str:
    rows = [
        [name, cell(c.seconds for c in runs), cell((c.peak_mb for c in runs), digits=1)]
        for name, runs in found.items()
    ]
    return markdown_table(["what runs", "spawn to exit, s", "peak RSS, MB"], rows)


def idle_table(found: dict[str, list[Window]]) -> str:
    rows = [
        [
            name,
            cell(w.per_minute(w.cpu_ms) for w in runs),
            cell((w.per_minute(w.switches) for w in runs), digits=1),
            cell((w.rss_mb for w in runs), digits=1),
        ]
        for name, runs in found.items()
    ]
    return markdown_table(["process", "CPU, ms per 60 s", "wake-ups per 60 s", "VmRSS, MB"], rows)


def against_table(checked: dict[str, list[Check]], idled: dict[str, list[Window]], n: int) -> str:
    """cronplus's figure, the floor under it, and what is cronplus's own: the floor and
    cronplus ran in the same rounds (checks) and the same windows (idle), so each round or
    window gives one difference and one ratio, whose medians are shown."""

    def seconds(name: str) -> list[float]:
        return [c.seconds for c in checked[name] if c.seconds is not None]

    def cpu_ms(name: str) -> list[float]:
        return [w.per_minute(w.cpu_ms) for w in idled[name]]

    validate, daemon = f"cronplus validate, {n:,} jobs", f"cronplus daemon, {n:,} jobs"
    pairs = [
        (validate, "s", check_target(n), seconds(validate), seconds(CHECK_FLOOR)),
        (daemon, "ms per 60 s", IDLE_TARGET, cpu_ms(daemon), cpu_ms(IDLE_FLOOR)),
    ]
    rows = []
    for name, unit, target, mine, floor in pairs:
        ratios = [m / f for m, f in zip(mine, floor, strict=True) if f > 0]
        rows.append(
            [
                name,
                "–" if target is None else f"< {target:g} {unit}",
                cell(mine),
                cell(floor),
                "–" if target is None else f"{statistics.median(floor) / target:.0%}",
                cell(m - f for m, f in zip(mine, floor, strict=True)),
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
    args = parser(__doc__, SECTION, build_dir=True, cronplus_python=True)
    args.add_argument("-n", type=int, default=1000, help="jobs checked and idle (1000)")
    args.add_argument("--rounds", type=int, default=9, help="alternating check rounds (9)")
    args.add_argument(
        "--idle-seconds", type=float, default=60.0, help="one window, a multiple of 30 s (60)"
    )
    args.add_argument("--windows", type=int, default=5, help="consecutive windows (5)")
    chosen = args.parse_args()
    options = ["n", "rounds", "idle_seconds", "windows"]
    for option in options:
        if getattr(chosen, option) <= 0:
            args.error(f"--{option.replace('_', '-')} must be above 0")
    record = Record.begin()
    python = chosen.cronplus_python or install_cronplus()
    with tempfile.TemporaryDirectory(prefix="bench-floors-") as tmp:
        root = Path(tmp)
        peak = build_c(BENCH / "peak.c", chosen.build_dir, static=True)
        checked = checks(check_ways(python, root, chosen.n), root, rounds=chosen.rounds, peak=peak)
        idled = idle(python, root, chosen)
    text = report(checked, idled, chosen)
    header = record.header(SECTION.command(chosen, options), f"- cronplus run by: {shown(python)}")
    SECTION.publish(f"{header}\n\n{text}", chosen.write_results)


if __name__ == "__main__":
    launch(main)

"""How late does the daemon's clock wake at a due instant? ``SystemClock.sleep_until``, plain
against ``precise=True``.

    python bench/bench_wake.py [--sleeps 60] [--repeats 3]

Each repeat runs both ways alternating, sleep by sleep, in one event loop: a sleep of 20 to
80 ms to an instant on the wall clock, then the wall clock read. The lateness is that read
minus the instant. The plain sleep is one asyncio timer (epoll's whole milliseconds,
rounded up twice); the precise one sets its timer ``clock.LANDING`` short and blocks for
the rest (docs/daemon.md, "The loop"). Prints a markdown table in milliseconds: the median,
p99 and max over all sleeps, and the range of the repeats' medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
from datetime import timedelta

from bench_runonce import percentile

from cronplus.clock import LANDING, SystemClock

WAYS = {"plain": False, "precise": True}


async def lateness(sleeps: int) -> dict[str, list[float]]:
    """Milliseconds past the instant, per way, for ``sleeps`` sleeps of each."""
    clock = SystemClock()
    late: dict[str, list[float]] = {name: [] for name in WAYS}
    for i in range(sleeps):
        for name, precise in WAYS.items():
            # 20 to 80 ms, spread over the microseconds as a due instant's distance is
            instant = clock.now() + timedelta(microseconds=20_000 + (i * 7_919) % 60_000)
            await clock.sleep_until(instant, max_seconds=1, precise=precise)
            late[name].append((clock.now() - instant).total_seconds() * 1000)
    return late


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sleeps", type=int, default=60, help="sleeps per way and repeat (60)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (default 3)")
    args = parser.parse_args()
    runs = [asyncio.run(lateness(args.sleeps)) for _ in range(args.repeats)]
    print(
        f"{args.sleeps} sleeps of 20–80 ms per way and repeat, {args.repeats} repeats, "
        f"LANDING {LANDING * 1000:g} ms, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs\n"
    )
    print("| sleep | median, ms | p99, ms | max, ms | repeats' medians, ms |")
    print("| --- | --- | --- | --- | --- |")
    for name in WAYS:
        every = [late for run in runs for late in run[name]]
        medians = [statistics.median(run[name]) for run in runs]
        print(
            f"| {name} | {statistics.median(every):.3f} | {percentile(every, 99):.3f} | "
            f"{max(every):.3f} | {min(medians):.3f}–{max(medians):.3f} |"
        )


if __name__ == "__main__":
    main()

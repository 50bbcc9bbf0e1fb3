"""How late does the daemon's clock wake at a due instant? ``SystemClock.sleep_until``, plain
against ``precise=True``.

    python bench/bench_wake.py [--sleeps 60] [--repeats 3]

Each repeat runs both ways alternating, sleep by sleep, in one event loop: a sleep of 20 to
80 ms to an instant on the wall clock, then the wall clock read; the lateness is that read
minus the instant (docs/daemon.md, "The loop", says why the two differ). Prints the median,
p99 and max over all sleeps in ms, and the range of the repeats' medians.
"""

from __future__ import annotations

import asyncio
import statistics
from datetime import timedelta

from harness import host_line, launch, markdown_table, parser, percentile

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
    args = parser(__doc__)
    args.add_argument("--sleeps", type=int, default=60, help="sleeps per way and repeat (60)")
    args.add_argument("--repeats", type=int, default=3, help="rounds (default 3)")
    chosen = args.parse_args()
    runs = [asyncio.run(lateness(chosen.sleeps)) for _ in range(chosen.repeats)]
    rows = []
    for name in WAYS:
        every = [late for run in runs for late in run[name]]
        medians = [statistics.median(run[name]) for run in runs]
        rows.append(
            [
                name,
                *(
                    f"{value:.3f}"
                    for value in (statistics.median(every), percentile(every, 99), max(every))
                ),
                f"{min(medians):.3f}–{max(medians):.3f}",
            ]
        )
    print(
        f"{chosen.sleeps} sleeps of 20–80 ms per way and repeat, {chosen.repeats} repeats, "
        f"LANDING {LANDING * 1000:g} ms, {host_line()}\n"
    )
    headers = ["sleep", "median, ms", "p99, ms", "max, ms", "repeats' medians, ms"]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    launch(main)

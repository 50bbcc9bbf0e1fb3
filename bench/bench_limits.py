"""What limits cost per start: N jobs through the runner, without and with limits.

    python bench/bench_limits.py -n 1000 [--repeats 3] [--program /bin/true]

Three ways, alternating: ``plain`` (no limits), ``limits`` (``open_files`` and ``cpu_time``:
the exec wrapper, ``python -I -S``) and, for the record, ``preexec`` (a bare ``Popen`` with
``preexec_fn=setrlimit``, which cronplus does not use: unsafe with threads). Prints seconds
until the last start and until all were reaped, median (min–max), and the children's CPU
time per start.
"""

from __future__ import annotations

import resource
import statistics
from collections.abc import Callable

from harness import alternate, cell, host_line, launch, markdown_table, parser
from procs import Timing, cpu_seconds, popen_loop, runner_loop

from cronplus.core.model import Limits


def limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def with_cpu(loop: Callable[[int], Timing]) -> Callable[[int], tuple[float, float, float]]:
    """``loop`` timed, and the CPU its children used per start, in ms."""

    def way(n: int) -> tuple[float, float, float]:
        before = cpu_seconds()[1]
        started, reaped = loop(n)
        return started, reaped, (cpu_seconds()[1] - before) / n * 1000

    return way


def main() -> None:
    args = parser(__doc__)
    args.add_argument("-n", type=int, default=1000)
    args.add_argument("--repeats", type=int, default=3)
    args.add_argument("--program", default="/bin/true")
    chosen = args.parse_args()
    argv = [chosen.program]
    limited = Limits(open_files=256, cpu_time=60)
    ways = {
        "plain": with_cpu(lambda n: runner_loop(argv, n)),
        "limits": with_cpu(lambda n: runner_loop(argv, n, limited)),
        "preexec": with_cpu(lambda n: popen_loop(argv, n, preexec_fn=limit)),
    }
    timings = alternate(ways, chosen.n, chosen.repeats, warm=False)
    rows = [
        [
            name,
            cell(t[0] for t in runs),
            cell(t[1] for t in runs),
            f"{statistics.median(t[2] for t in runs):.1f}",
        ]
        for name, runs in timings.items()
    ]
    print(f"{chosen.n} starts, {chosen.repeats} repeats, {host_line()}\n")
    headers = ["way", "last started, s", "all reaped, s", "child CPU per start, ms"]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    launch(main)

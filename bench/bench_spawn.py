"""How fast can cronplus start a burst of jobs? Four ways to start N children, compared.

    python bench/bench_spawn.py -n 1000 [--repeats 3] [--program /bin/true]

Each way starts all N children (each in its own session, as the runner does), then waits
for all of them: ``popen`` and ``posix_spawn`` bare loops, ``asyncio`` (one
``create_subprocess_exec`` each) and ``runner`` (``Runner.start`` with its pipes, pidfd and
timeout timer). The ways alternate; prints seconds to the last start and until all were
reaped, median (min–max).
"""

from __future__ import annotations

from harness import alternate, cell, host_line, launch, markdown_table, parser, per_second
from procs import Loop, asyncio_loop, popen_loop, posix_spawn_loop, raise_fd_limit, runner_loop

WAYS: dict[str, Loop] = {
    "popen": popen_loop,
    "posix_spawn": posix_spawn_loop,
    "asyncio": asyncio_loop,
    "runner": runner_loop,
}


def main() -> None:
    args = parser(__doc__)
    args.add_argument("-n", type=int, default=1000, help="children per burst (default 1000)")
    args.add_argument("--repeats", type=int, default=3, help="rounds of all ways (default 3)")
    args.add_argument("--program", default="/bin/true", help="what each child runs")
    chosen = args.parse_args()
    raise_fd_limit(chosen.n)
    ways = {name: (lambda n, loop=loop: loop([chosen.program], n)) for name, loop in WAYS.items()}
    timings = alternate(ways, chosen.n, chosen.repeats)
    print(f"{chosen.n} × `{chosen.program}`, {chosen.repeats} alternating repeats, {host_line()}\n")
    headers = ["way", "last started, s: median (min–max)", "all reaped, s: median (min–max)"]
    rows = [
        [
            name,
            cell(t[0] for t in runs),
            cell(t[1] for t in runs),
            per_second(chosen.n, (t[0] for t in runs)),
        ]
        for name, runs in timings.items()
    ]
    print(markdown_table([*headers, "starts/s"], rows))


if __name__ == "__main__":
    launch(main)

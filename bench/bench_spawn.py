"""How fast can cronplus start a burst of jobs? Four ways to start N children, compared.

    python bench/bench_spawn.py -n 1000 [--repeats 3] [--program /bin/true]

Each way starts all N children, then waits for all of them; we note when the last one was
started and when the last one was reaped. The ways run alternating (A B C D, A B C D, ...)
so drift on the machine hits all of them alike. Every way puts each child in its own
session, as the runner does:

- ``popen``: a bare ``subprocess.Popen`` loop, then ``wait()`` each.
- ``posix_spawn``: a bare ``os.posix_spawn(..., setsid=True)`` loop, then ``waitpid`` each.
- ``asyncio``: ``await asyncio.create_subprocess_exec`` each, then gather their ``wait()``.
- ``runner``: ``Runner.start`` for N prepared ``Command``s (pipes for stdout and stderr,
  a pidfd per child, a timeout timer), then gather their ``wait()``.

Prints a markdown table: median and min–max over the repeats, in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from cronplus.run.runner import Command, Runner

Timing = tuple[float, float]
"""Seconds from the first start until the last child was started, and until all were reaped."""


def bench_popen(program: str, n: int) -> Timing:
    began = time.perf_counter()
    children = [subprocess.Popen([program], start_new_session=True) for _ in range(n)]
    started = time.perf_counter()
    for child in children:
        child.wait()
    return started - began, time.perf_counter() - began


def bench_posix_spawn(program: str, n: int) -> Timing:
    env = dict(os.environ)
    began = time.perf_counter()
    pids = [os.posix_spawn(program, [program], env, setsid=True) for _ in range(n)]
    started = time.perf_counter()
    for pid in pids:
        os.waitpid(pid, 0)
    return started - began, time.perf_counter() - began


def bench_asyncio(program: str, n: int) -> Timing:
    async def burst() -> Timing:
        began = time.perf_counter()
        children = [
            await asyncio.create_subprocess_exec(program, start_new_session=True) for _ in range(n)
        ]
        started = time.perf_counter()
        await asyncio.gather(*(child.wait() for child in children))
        return started - began, time.perf_counter() - began

    return asyncio.run(burst())


def bench_runner(program: str, n: int) -> Timing:
    env = dict(os.environ)
    commands = [
        Command(
            argv=(program,),
            workdir=Path("/"),
            env=env,
            timeout=600.0,
            kill_grace=10.0,
            success_codes=frozenset({0}),
        )
        for _ in range(n)
    ]

    async def burst() -> Timing:
        runner = Runner()
        began = time.perf_counter()
        processes = [runner.start(command) for command in commands]
        started = time.perf_counter()
        results = await asyncio.gather(*(process.wait() for process in processes))
        finished = time.perf_counter()
        failed = [result.reason for result in results if not result.outcome.ok]
        if failed:
            raise SystemExit(f"{len(failed)} of {n} runner starts failed, e.g. {failed[0]}")
        return started - began, finished - began

    return asyncio.run(burst())


WAYS: dict[str, Callable[[str, int], Timing]] = {
    "popen": bench_popen,
    "posix_spawn": bench_posix_spawn,
    "asyncio": bench_asyncio,
    "runner": bench_runner,
}


def raise_fd_limit(n: int) -> None:
    """The runner holds three descriptors per child in flight (two pipes and a pidfd)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * n + 64
    if soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="children per burst (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of all ways (default 3)")
    parser.add_argument("--program", default="/bin/true", help="what each child runs")
    args = parser.parse_args()
    raise_fd_limit(args.n)
    for way in WAYS.values():  # warm up imports, caches and the page cache
        way(args.program, 20)
    timings: dict[str, list[Timing]] = {name: [] for name in WAYS}
    for _ in range(args.repeats):
        for name, way in WAYS.items():
            gc.collect()
            timings[name].append(way(args.program, args.n))
    print(
        f"{args.n} × `{args.program}`, {args.repeats} alternating repeats, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs\n"
    )
    print(
        "| way | last started, s: median (min–max) | all reaped, s: median (min–max) | starts/s |"
    )
    print("| --- | --- | --- | --- |")
    for name, runs in timings.items():
        started = [run[0] for run in runs]
        finished = [run[1] for run in runs]
        rate = args.n / statistics.median(started)
        print(f"| {name} | {spread(started)} | {spread(finished)} | {rate:,.0f} |")


if __name__ == "__main__":
    main()

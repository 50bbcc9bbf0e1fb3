"""What limits cost per start: N jobs through the runner, without and with limits.

    python bench/bench_limits.py -n 1000 [--repeats 3] [--program /bin/true]

Three ways, alternating: ``plain`` (no limits: the path every job without limits takes),
``limits`` (``open_files`` and ``cpu_time``: the exec wrapper, ``python -I -S``) and, for
the record, ``preexec`` (a bare ``Popen`` with ``preexec_fn=setrlimit``, which cronplus does
not use: unsafe with threads). Prints a markdown table: seconds until the last child was
started and until all were reaped, median and min–max over the repeats, and the CPU time
the children used per start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from cronplus.core.model import Limits
from cronplus.run.runner import Command, Runner

Timing = tuple[float, float, float]
"""Seconds until the last start, until all were reaped, and children's CPU per start (ms)."""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_runner(program: str, n: int, limits: Limits) -> Timing:
    command = Command(
        argv=(program,),
        workdir=Path("/"),
        env=dict(os.environ),
        timeout=60.0,
        kill_grace=1.0,
        success_codes=frozenset({0}),
        limits=limits,
    )

    async def burst() -> Timing:
        cpu = _children_cpu()
        runner = Runner()
        began = time.perf_counter()
        processes = [runner.start(command) for _ in range(n)]
        started = time.perf_counter()
        results = await asyncio.gather(*(process.wait() for process in processes))
        assert all(result.outcome.ok for result in results), results[0].reason
        done = time.perf_counter()
        return started - began, done - began, (_children_cpu() - cpu) / n * 1000

    return asyncio.run(burst())


def bench_preexec(program: str, n: int) -> Timing:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    cpu = _children_cpu()
    began = time.perf_counter()
    children = [
        subprocess.Popen([program], start_new_session=True, preexec_fn=limit)  # noqa: PLW1509
        for _ in range(n)
    ]
    started = time.perf_counter()
    for child in children:
        child.wait()
    return started - began, time.perf_counter() - began, (_children_cpu() - cpu) / n * 1000


def ways(program: str) -> dict[str, Callable[[int], Timing]]:
    limited = Limits(open_files=256, cpu_time=60)
    return {
        "plain": lambda n: bench_runner(program, n, Limits()),
        "limits": lambda n: bench_runner(program, n, limited),
        "preexec": lambda n: bench_preexec(program, n),
    }


def table(rows: dict[str, list[Timing]], n: int) -> str:
    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"

    lines = [
        "| way | last started, s | all reaped, s | child CPU per start, ms |",
        "| --- | --- | --- | --- |",
    ]
    for name, timings in rows.items():
        started, reaped, cpu = ([t[i] for t in timings] for i in range(3))
        lines.append(
            f"| {name} | {spread(started)} | {spread(reaped)} | {statistics.median(cpu):.1f} |"
        )
    machine = f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    repeats = len(next(iter(rows.values())))
    head = f"{n} starts, {repeats} repeats, {machine}, {os.cpu_count()} CPUs"
    return head + "\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--program", default="/bin/true")
    args = parser.parse_args(argv)
    rows: dict[str, list[Timing]] = {name: [] for name in ways(args.program)}
    for _ in range(args.repeats):
        for name, way in ways(args.program).items():
            rows[name].append(way(args.n))
    text = table(rows, args.n)
    print(text)
    return text


if __name__ == "__main__":
    main()

"""The bare spawn limit: how fast this machine starts N children with no scheduler at all.

Four loops start N copies of the same payload the bursts run (bench/stamp.c writing to a
scratch file), every child in its own session, all in flight before any is reaped:

- ``C posix_spawn``: bench/spawn.c, compiled here;
- ``Python posix_spawn``: ``os.posix_spawn(..., setsid=True)``;
- ``Python Popen``: ``subprocess.Popen(..., start_new_session=True)``;
- ``asyncio``: ``await asyncio.create_subprocess_exec`` each (yacron's path).

Each gives (seconds to the last start, seconds until all were reaped).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench_runonce import build_c

BENCH = Path(__file__).resolve().parent
SPAWN_SOURCE = BENCH / "spawn.c"

Timing = tuple[float, float]
Way = Callable[[list[str], int], Timing]


def build_spawn(build_dir: Path) -> Path:
    """Compile spawn.c unless an up-to-date build exists."""
    return build_c(SPAWN_SOURCE, build_dir)


def c_loop(spawn: Path) -> Way:
    def way(argv: list[str], n: int) -> Timing:
        done = subprocess.run([str(spawn), str(n), *argv], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{spawn} exited {done.returncode}: {done.stderr.strip()}")
        started, reaped = (float(word) for word in done.stdout.split())
        return started, reaped

    return way


def posix_spawn_loop(argv: list[str], n: int) -> Timing:
    env = dict(os.environ)
    began = time.perf_counter()
    pids = [os.posix_spawn(argv[0], argv, env, setsid=True) for _ in range(n)]
    started = time.perf_counter()
    for pid in pids:
        os.waitpid(pid, 0)
    return started - began, time.perf_counter() - began


def popen_loop(argv: list[str], n: int) -> Timing:
    began = time.perf_counter()
    children = [subprocess.Popen(argv, start_new_session=True) for _ in range(n)]
    started = time.perf_counter()
    for child in children:
        child.wait()
    return started - began, time.perf_counter() - began


def asyncio_loop(argv: list[str], n: int) -> Timing:
    async def burst() -> Timing:
        began = time.perf_counter()
        children = [
            await asyncio.create_subprocess_exec(*argv, start_new_session=True) for _ in range(n)
        ]
        started = time.perf_counter()
        await asyncio.gather(*(child.wait() for child in children))
        return started - began, time.perf_counter() - began

    return asyncio.run(burst())


def ways(build_dir: Path) -> dict[str, Way]:
    """Every loop, in the order each repeat runs them."""
    return {
        "C posix_spawn": c_loop(build_spawn(build_dir)),
        "Python posix_spawn": posix_spawn_loop,
        "Python Popen": popen_loop,
        "asyncio": asyncio_loop,
    }

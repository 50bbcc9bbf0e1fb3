"""What a start with capture pipes costs on this host, and what does not lower it.

    python bench/bench_spawn_cost.py [-n 1000] [--repeats 5]

Bare ``subprocess.Popen`` loops start N copies of bench/stamp.c (as the bursts run it), each
in its own session with ``close_fds`` and a ``cwd``, as the runner starts a job, all in
flight before any is reaped:

- ``no pipes``: stdout and stderr to /dev/null;
- ``pipes``: two fresh pipes a child whose read ends stay open until the end, as the
  runner's do while a burst's children run;
- ``pipes + a job's environment``: as ``pipes``, with ``env=`` this process's environment
  plus the four ``CRONPLUS_*`` variables: the runner's whole call, whose environment
  ``Popen`` encodes variable by variable in Python on every start;
- ``pipes, read ends closed``: the same pipes, read ends closed at once: the descriptor
  table stays small;
- ``pipes, read ends parked``: the read ends kept, but parked outside the table every
  ``parking.BATCH`` of them, as the runner does in a burst (cronplus/run/parking.py), and taken
  back after the last start;
- ``pipes + 2,000 open files``: as the last, beside 2,000 other open descriptors: what a
  large table costs each ``vfork``, which copies it;
- ``pipes, 2 threads`` and ``pipes, 3 threads``: the ``pipes`` loop shared by threads
  (``fork_exec`` releases the GIL while the parent waits for the child's exec).

Prints seconds from the first start to the last, median (min–max) over alternating repeats.
bench/RESULTS.md (``## peers``, by hand) reads these figures.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench_runonce import DEFAULT_BUILD_DIR, build_stamp, markdown_table
from bench_spawn import raise_fd_limit

from cronplus.run.parking import BATCH, Parking

Started = tuple[subprocess.Popen[bytes], int | None, int | None]


def job_env() -> dict[str, str]:
    """What a job's ``env=`` holds: this environment and cronplus's four variables."""
    return {
        **os.environ,
        "CRONPLUS_JOB": "job-00001",
        "CRONPLUS_SCHEDULED_AT": "2026-12-02T10:00:00Z",
        "CRONPLUS_ATTEMPT": "1",
        "CRONPLUS_RUN_ID": "0123456789abcdef0123456789abcdef",
    }


def start(
    argv: list[str], folder: Path, *, pipes: bool, keep: bool, env: dict[str, str] | None
) -> Started:
    """One child as the runner starts it; the read ends of its pipes if kept."""
    if not pipes:
        null = subprocess.DEVNULL
        child = subprocess.Popen(
            argv, stdin=null, stdout=null, stderr=null, cwd=folder, start_new_session=True
        )
        return child, None, None
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    child = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=out_write,
        stderr=err_write,
        cwd=folder,
        env=env,
        start_new_session=True,
        close_fds=True,
    )
    os.close(out_write)
    os.close(err_write)
    if keep:
        return child, out_read, err_read
    os.close(out_read)
    os.close(err_read)
    return child, None, None


def loop(
    argv: list[str],
    folder: Path,
    n: int,
    *,
    pipes: bool,
    keep: bool,
    env: bool,
    ballast: int,
    threads: int,
    park: bool,
) -> float:
    """Seconds from the first start to the last; then every child is reaped."""
    environment = job_env() if env else None
    extra = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(ballast)]
    started: list[Started] = []
    left = [n]
    lock = threading.Lock()
    parking, pile = Parking(), list[int]()

    def work() -> None:
        while True:
            with lock:
                if not left[0]:
                    return
                left[0] -= 1
            child, out_read, err_read = start(argv, folder, pipes=pipes, keep=keep, env=environment)
            if not park:
                started.append((child, out_read, err_read))
                continue
            started.append((child, None, None))
            pile.extend(fd for fd in (out_read, err_read) if fd is not None)
            if len(pile) >= BATCH and parking.park(pile):
                pile.clear()

    gc.collect()
    began = time.perf_counter()
    helpers = [threading.Thread(target=work) for _ in range(threads - 1)]
    for helper in helpers:
        helper.start()
    work()
    for helper in helpers:
        helper.join()
    seconds = time.perf_counter() - began
    pile.extend(parking.take_back())
    for end in pile:
        os.close(end)
    for child, *reads in started:
        child.wait()
        for fd in reads:
            if fd is not None:
                os.close(fd)
    for fd in extra:
        os.close(fd)
    return seconds


_PLAIN = {"pipes": True, "keep": True, "env": False, "ballast": 0, "threads": 1, "park": False}
WAYS: dict[str, dict[str, bool | int]] = {
    "no pipes": {**_PLAIN, "pipes": False, "keep": False},
    "pipes": _PLAIN,
    "pipes + a job's environment": {**_PLAIN, "env": True},
    "pipes, read ends closed": {**_PLAIN, "keep": False},
    "pipes, read ends parked": {**_PLAIN, "park": True},
    "pipes + 2,000 open files": {**_PLAIN, "keep": False, "ballast": 2000},
    "pipes, 2 threads": {**_PLAIN, "threads": 2},
    "pipes, 3 threads": {**_PLAIN, "threads": 3},
}


def measure(n: int, repeats: int) -> dict[str, list[float]]:
    stamp = build_stamp(DEFAULT_BUILD_DIR)
    raise_fd_limit(3 * n + 2100)
    with tempfile.TemporaryDirectory(prefix="bench-spawn-cost-") as tmp:
        folder = Path(tmp)
        argv = [str(stamp), str(folder / "stamps.txt")]

        def way(options: dict[str, bool | int]) -> Callable[[int], float]:
            def run(count: int) -> float:
                return loop(
                    argv,
                    folder,
                    count,
                    pipes=bool(options["pipes"]),
                    keep=bool(options["keep"]),
                    env=bool(options["env"]),
                    ballast=int(options["ballast"]),
                    threads=int(options["threads"]),
                    park=bool(options["park"]),
                )

            return run

        ways = {name: way(options) for name, options in WAYS.items()}
        for run in ways.values():  # warm up imports and the page cache
            run(min(n, 20))
        out: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(repeats):
            for name, run in ways.items():
                out[name].append(run(n))
    return out


def table(results: dict[str, list[float]], n: int) -> str:
    rows = [
        [
            name,
            f"{statistics.median(s):.3f} ({min(s):.3f}–{max(s):.3f})",
            f"{n / statistics.median(s):,.0f}",
        ]
        for name, s in results.items()
    ]
    return markdown_table(["loop", f"{n:,} starts, s", "starts/s"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="children in flight (1000)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds (5)")
    args = parser.parse_args()
    print(table(measure(args.n, args.repeats), args.n))


if __name__ == "__main__":
    main()

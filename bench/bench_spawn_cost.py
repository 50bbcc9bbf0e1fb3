"""What a start with capture pipes costs on this host, and what does not lower it.

    python bench/bench_spawn_cost.py [-n 1000] [--repeats 5]

Bare ``Popen`` loops start N copies of bench/stamp.c as the runner starts a job (own
session, ``close_fds``, a ``cwd``), all in flight before any is reaped, each way (``WAYS``)
changing one thing. Prints seconds from the first start to the last; RESULTS.md's
``## peers`` (by hand) reads them.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from harness import alternate, build_stamp, cell, launch, markdown_table, parser, per_second
from procs import raise_fd_limit

from cronplus.run.parking import BATCH, Parking

Started = tuple[subprocess.Popen[bytes], list[int]]
"""A child, and the read ends of its pipes that are kept."""


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
        return subprocess.Popen(
            argv, stdin=null, stdout=null, stderr=null, cwd=folder, start_new_session=True
        ), []
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
        return child, [out_read, err_read]
    os.close(out_read)
    os.close(err_read)
    return child, []


@dataclass(frozen=True, kw_only=True)
class Way:
    """How one loop starts its children."""

    pipes: bool = True
    keep: bool = True
    """The read ends stay open until the children are reaped (else closed at once)."""
    env: bool = False
    """``env=`` a job's environment, which ``Popen`` encodes variable by variable."""
    ballast: int = 0
    """Other open descriptors in the table meanwhile."""
    threads: int = 1
    park: bool = False


def loop(argv: list[str], folder: Path, n: int, way: Way) -> float:
    """Seconds from the first start to the last; then every child is reaped."""
    environment = job_env() if way.env else None
    extra = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(way.ballast)]
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
            child, reads = start(argv, folder, pipes=way.pipes, keep=way.keep, env=environment)
            if not way.park:
                started.append((child, reads))
                continue
            started.append((child, []))
            pile.extend(reads)
            if len(pile) >= BATCH and parking.park(pile):
                pile.clear()

    began = time.perf_counter()
    helpers = [threading.Thread(target=work) for _ in range(way.threads - 1)]
    for helper in helpers:
        helper.start()
    work()
    for helper in helpers:
        helper.join()
    seconds = time.perf_counter() - began
    pile.extend(parking.take_back())
    for child, reads in started:
        child.wait()
        pile.extend(reads)
    for fd in pile + extra:
        os.close(fd)
    return seconds


WAYS = {
    "no pipes": Way(pipes=False, keep=False),
    "pipes": Way(),
    "pipes + a job's environment": Way(env=True),
    "pipes, read ends closed": Way(keep=False),
    "pipes, read ends parked": Way(park=True),
    "pipes + 2,000 open files": Way(keep=False, ballast=2000),
    "pipes, 2 threads": Way(threads=2),
    "pipes, 3 threads": Way(threads=3),
}


def main() -> None:
    args = parser(__doc__)
    args.add_argument("-n", type=int, default=1000, help="children in flight (1000)")
    args.add_argument("--repeats", type=int, default=5, help="alternating rounds (5)")
    chosen = args.parse_args()
    stamp = build_stamp()
    raise_fd_limit(3 * chosen.n + 2100)
    with tempfile.TemporaryDirectory(prefix="bench-spawn-cost-") as tmp:
        folder = Path(tmp)
        argv = [str(stamp), str(folder / "stamps.txt")]

        ways = {name: (lambda n, way=way: loop(argv, folder, n, way)) for name, way in WAYS.items()}
        results = alternate(ways, chosen.n, chosen.repeats)
    rows = [[name, cell(s), per_second(chosen.n, s)] for name, s in results.items()]
    print(markdown_table(["loop", f"{chosen.n:,} starts, s", "starts/s"], rows))


if __name__ == "__main__":
    launch(main)

"""Time `validate` and `next -n 1` on generated crontabs of 100, 1,000 and 10,000 jobs.

Two views: the whole command as a user runs it (a subprocess, interpreter start-up
included), and the work inside the process (load + validate, then every job's next fire).
Three repeats each; the median and the min-max are printed as a markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen import crontab_text

from cronplus.config import loader
from cronplus.core.schedule import Schedule


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def cli(path: Path, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cronplus", "-c", str(path), *args],
        capture_output=True,
        env={**os.environ, "XDG_STATE_HOME": str(path.parent / "state")},
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr.decode())


def in_process_next(path: Path) -> None:
    tab = loader.load(path)
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    for job in tab.jobs:
        Schedule.parse(job.schedule, zone=job.timezone, job_name=job.name).next_after(now)


def measure(n: int, path: Path, repeats: int) -> tuple[object, ...]:
    return (
        n,
        fmt(timed(lambda: loader.load(path), repeats)),
        fmt(timed(lambda: in_process_next(path), repeats)),
        fmt(timed(lambda: cli(path, "validate"), repeats)),
        fmt(timed(lambda: cli(path, "next", "-n", "1", "--json"), repeats)),
    )


def fmt(samples: list[float]) -> str:
    return f"{statistics.median(samples):.3f} s ({min(samples):.3f}-{max(samples):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows: list[tuple[object, ...]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            path = Path(tmp) / f"crontab-{n}.yaml"
            path.write_text(crontab_text(n))
            rows.append(measure(n, path, args.repeats))
    print(
        "| jobs | load+validate (in process) | load + next fire of every job (in process) "
        "| `cronplus validate` | `cronplus next -n 1 --json` |"
    )
    print("| ---: | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


if __name__ == "__main__":
    main()

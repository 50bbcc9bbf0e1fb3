"""Time `validate` and `next -n 1` on generated crontabs of 100, 1,000 and 10,000 jobs.

    python bench/bench_config.py [--sizes 100,1000,10000] [--repeats 3]

Two views of gen.py's jobs: the work inside the process (load + validate, then every job's
next fire) and the whole command as a user runs it (interpreter start-up included). Prints
seconds, median (min–max) over the repeats.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from gen import as_generated, cronplus_crontab, job_specs
from harness import Failed, bench_env, cell, launch, markdown_table, numbers, parser

from cronplus.config import loader
from cronplus.core.schedule import Schedule


def timed(fn: Callable[[], object], repeats: int) -> str:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return cell(seconds)


def cli(path: Path, *args: str) -> None:
    argv = [sys.executable, "-m", "cronplus", "-c", str(path), *args]
    done = subprocess.run(
        argv, capture_output=True, text=True, env=bench_env(path.parent / "state")
    )
    if done.returncode != 0:
        raise Failed(done.stderr)


def in_process_next(path: Path) -> None:
    tab = loader.load(path)
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    for job in tab.jobs:
        Schedule.parse(job.schedule, zone=job.timezone, job_name=job.name).next_after(now)


def measure(path: Path, repeats: int) -> list[str]:
    """One row's cells: in process, then as commands."""
    ways: list[Callable[[], object]] = [
        lambda: loader.load(path),
        lambda: in_process_next(path),
        lambda: cli(path, "validate"),
        lambda: cli(path, "next", "-n", "1", "--json"),
    ]
    return [timed(way, repeats) for way in ways]


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--sizes", type=numbers, default=[100, 1000, 10000])
    args.add_argument("--repeats", type=int, default=3)
    chosen = args.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in chosen.sizes:
            path = Path(tmp) / f"crontab-{n}.yaml"
            path.write_text(cronplus_crontab(job_specs(n), as_generated, ["true"]))
            rows.append([str(n), *measure(path, chosen.repeats)])
    headers = [
        "jobs",
        "load+validate (in process), s",
        "load + next fire of every job (in process), s",
    ]
    print(
        markdown_table([*headers, "`cronplus validate`, s", "`cronplus next -n 1 --json`, s"], rows)
    )


if __name__ == "__main__":
    launch(main)

"""How fast ``cronplus run-once`` starts N jobs due in one minute, beside bare spawn loops.

    python bench/bench_runonce.py [-n 1000] [--repeats 3] [--program /bin/true]
                                  [--build-dir bench/out] [--write-results [FILE]]

gen.py's N jobs, every one ``* * * * *``, each way on a fresh state database, alternating:
the real command with every job running bench/stamp.c (its stamps' spread misses the
pass's first spawn, which the ``engine`` row has) or PROGRAM; run-once's pass in this
process (``Engine.start_slots``, then ``wait_idle``); bench_spawn.py's bare loops.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench_spawn import WAYS
from gen import cronplus_crontab, every, job_specs
from harness import (
    Failed,
    Record,
    Section,
    alternate,
    bench_env,
    build_stamp,
    cell,
    cronplus_argv,
    fresh,
    launch,
    markdown_table,
    parser,
    per_second,
    read_stamps,
    verdict,
)
from procs import cpu_seconds, raise_fd_limit

from cronplus.clock import SystemClock
from cronplus.config import loader
from cronplus.core.model import LogFormat, iso_utc
from cronplus.core.plan import first_in_minute
from cronplus.engine.engine import Engine
from cronplus.engine.timetable import compile_job
from cronplus.observe import logs
from cronplus.run.runner import Command, Runner, RunningProcess
from cronplus.state.sqlite import SqliteStore

SECTION = Section("## run-once burst", "bench_runonce.py")
BURST_TARGET_S = 0.45
"""The issue's target: all 1,000 jobs of one minute started within 0.45 s."""

Measure = dict[str, float]
"""One run of one way: column name -> seconds."""


def crontab(folder: Path, n: int, argv: list[str]) -> Path:
    path = folder / "crontab.yaml"
    path.write_text(cronplus_crontab(job_specs(n), every("minute"), argv))
    return path


def cpu_since(before: tuple[float, float]) -> Measure:
    own, children = cpu_seconds()
    return {"own cpu": own - before[0], "children cpu": children - before[1]}


def run_once_cli(folder: Path, n: int, argv: list[str], stamps: Path | None) -> Measure:
    """The real command as a user runs it, on a crontab of N every-minute jobs."""
    path = crontab(folder, n, argv)
    at = iso_utc(datetime.now(UTC).replace(second=0, microsecond=0))
    cpu = cpu_seconds()
    began_wall, began = time.time(), time.perf_counter()
    done = subprocess.run(
        cronplus_argv(path, "run-once", "--at", at, "--json"),
        capture_output=True,
        text=True,
        env=bench_env(folder / "state"),
        cwd=folder,
    )
    measure = {"exit": time.perf_counter() - began, **cpu_since(cpu)}
    runs = json.loads(done.stdout)["runs"] if done.returncode == 0 else []
    if len(runs) != n or any(run["outcome"] != "succeeded" for run in runs):
        raise Failed(
            f"run-once exited {done.returncode} with {len(runs)} of {n} runs:\n"
            f"{done.stderr[-2000:]}"
        )
    if stamps is not None:
        starts = [stamp.at for stamp in read_stamps(stamps)]
        if len(starts) != n:
            raise Failed(f"run-once left {len(starts)} stamps in {stamps}, expected {n}")
        measure |= {
            "first": min(starts) - began_wall,
            "last": max(starts) - began_wall,
            "spread": max(starts) - min(starts),
        }
    return measure


class TimedRunner(Runner):
    """A ``Runner`` that notes ``perf_counter()`` right after each start."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[float] = []

    def start(self, command: Command) -> RunningProcess:
        process = super().start(command)
        self.starts.append(time.perf_counter())
        return process


def engine_burst(folder: Path, n: int, program: str) -> Measure:
    """run-once's pass in this process: ``start_slots`` for N slots, then ``wait_idle``."""
    env = bench_env(folder / "state")
    tab = loader.load(crontab(folder, n, [program]), env=env)
    clock = SystemClock()
    now = clock.now()
    slots = [(job, first_in_minute(compile_job(job), now)) for job in tab.jobs]
    due = [(job, slot) for job, slot in slots if slot is not None]

    async def burst() -> Measure:
        store = SqliteStore.open(tab.settings.state)
        runner = TimedRunner()
        try:
            engine = Engine(
                tab, store=store, runner=runner, clock=clock, base_env=env, log=logs.EventLog()
            )
            cpu, began = cpu_seconds(), time.perf_counter()
            runs = engine.start_slots(due, now=now)
            await engine.wait_idle()
            finished, used = time.perf_counter(), cpu_since(cpu)
        finally:
            store.close()
        failed = [run for run in runs if not (run.results and run.results[-1].outcome.ok)]
        if len(runs) != n or failed or len(runner.starts) != n:
            raise Failed(f"engine burst: {len(runs)} runs of {n}, {len(failed)} failed")
        return {"last": runner.starts[-1] - began, "done": finished - began, **used}

    return asyncio.run(burst())


def ways(root: Path, stamp: Path, program: str) -> dict[str, Callable[[int], Measure]]:
    """Every way, in the order each repeat runs them, each in a fresh folder under ``root``."""

    def with_stamp(n: int) -> Measure:
        folder = fresh(root, "run-once-stamp")
        return run_once_cli(
            folder, n, [str(stamp), str(folder / "stamps.txt")], folder / "stamps.txt"
        )

    def bare(loop: Callable[[list[str], int], tuple[float, float]]) -> Callable[[int], Measure]:
        def way(n: int) -> Measure:
            cpu = cpu_seconds()
            started, done = loop([program], n)
            return {"last": started, "done": done, **cpu_since(cpu)}

        return way

    return {
        "run-once, stamp": with_stamp,
        f"run-once, {program}": lambda n: run_once_cli(fresh(root, "run-once"), n, [program], None),
        "engine": lambda n: engine_burst(fresh(root, "engine"), n, program),
        **{name: bare(loop) for name, loop in WAYS.items()},
    }


CLI_COLUMNS = {
    "first": "spawn → first start",
    "last": "spawn → last start",
    "spread": "first → last start",
    "exit": "spawn → exit",
    "children cpu": "CPU: cronplus + jobs",
}
LOOP_COLUMNS = {
    "last": "last started",
    "done": "all finished",
    "own cpu": "CPU: this process",
    "children cpu": "CPU: children",
}


def rows(results: dict[str, list[Measure]], names: list[str], keys: list[str]) -> list[list[str]]:
    """One row per way: its name, then a ``median (min–max)`` cell per key ("–": none)."""
    return [
        [name, *(cell(run.get(key) for run in results[name]) for key in keys)] for name in names
    ]


def report(results: dict[str, list[Measure]], *, n: int, repeats: int, program: str) -> str:
    command = [name for name in results if name.startswith("run-once")]
    burst = [name for name in results if name not in command]
    cli = markdown_table(["way", *CLI_COLUMNS.values()], rows(results, command, list(CLI_COLUMNS)))
    loops = markdown_table(
        ["way", *LOOP_COLUMNS.values(), "starts/s"],
        [
            [*row, per_second(n, (run["last"] for run in results[row[0]]))]
            for row in rows(results, burst, list(LOOP_COLUMNS))
        ],
    )
    measured = {
        "engine pass: all started": statistics.median(r["last"] for r in results["engine"]),
        "`run-once`: first to last start": statistics.median(
            r["spread"] for r in results["run-once, stamp"]
        ),
    }
    targets = markdown_table(
        ["target (issue, for 1,000 jobs)", "measured (median)", "met"],
        [
            [f"{what} within {BURST_TARGET_S} s", f"{value:.3f} s", verdict(value, BURST_TARGET_S)]
            for what, value in measured.items()
        ],
    )
    return (
        f"N = {n} jobs due in one minute, `max_concurrent: {n}`, {repeats} alternating "
        f"repeats; seconds, median (min–max). CPU is user + system time, which other work "
        f"on the host hardly changes, unlike the wall times.\n\n"
        f"The real command, `cronplus run-once --at T` (from just before its spawn, on "
        f"CLOCK_REALTIME, to the jobs' stamps and to its exit):\n\n{cli}\n\n"
        f"In process, from the start of the burst (for `engine`: the `start_slots` call) "
        f"to the last child started, and to all finished (`engine`: and recorded); "
        f"children run `{program}`:\n\n{loops}\n\nTargets:\n\n{targets}\n"
    )


def main() -> None:
    args = parser(__doc__, SECTION, build_dir=True)
    args.add_argument("-n", type=int, default=1000, help="jobs due at once (default 1000)")
    args.add_argument("--repeats", type=int, default=3, help="rounds of all ways (default 3)")
    args.add_argument("--program", default="/bin/true", help="what the plain jobs run")
    chosen = args.parse_args()
    record = Record.begin()
    stamp = build_stamp(chosen.build_dir)
    raise_fd_limit(chosen.n)
    # The engine logs each finished attempt, as run-once does to its stderr.
    logs.configure(LogFormat.JSON, stream=open(os.devnull, "w"))  # noqa: SIM115
    with tempfile.TemporaryDirectory(prefix="bench-runonce-") as tmp:
        results = alternate(ways(Path(tmp), stamp, chosen.program), chosen.n, chosen.repeats)
    text = report(results, n=chosen.n, repeats=chosen.repeats, program=chosen.program)
    command = SECTION.command(chosen, ["n", "repeats", "program"])
    SECTION.publish(f"{record.header(command, span=False)}\n\n{text}", chosen.write_results)


if __name__ == "__main__":
    launch(main)

"""How fast ``cronplus run-once`` starts N jobs due in one minute, beside bare spawn loops.

    python bench/bench_runonce.py [-n 1000] [--repeats 3] [--program /bin/true]
                                  [--build-dir bench/out] [--write-results [FILE]]

The crontab is gen.py's N jobs (its mix of zones) with every schedule set to ``* * * * *``
and ``max_concurrent: N``. The ways run alternating, each on a fresh state database:

- ``run-once, stamp``: the real ``cronplus run-once --at T`` as a subprocess; every job
  runs bench/stamp.c, which notes CLOCK_REALTIME first thing after its exec. Measured on
  the same clock from just before the command is spawned: the first stamp, the last
  stamp, their spread (the burst itself), and the command's exit. run-once logs nothing
  when its pass begins, so "pass start to last start" cannot be seen from outside: the
  spread misses the pass's first spawn (about a millisecond); the ``engine`` row has it.
- ``run-once, PROGRAM``: the same command with every job running PROGRAM; exit only.
- ``engine``: in this process, what run-once's pass does: an ``Engine`` on a
  ``SqliteStore`` in a temp folder, ``start_slots`` for the N slots, then ``wait_idle``.
  A ``Runner`` subclass notes the time after each start. Measured from the
  ``start_slots`` call to the last start, and to every attempt finished and recorded.
- ``runner``, ``popen``, ``posix_spawn``, ``asyncio``: bench_spawn.py's bare loops.

Prints markdown tables: median and min–max over the repeats, in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from resource import RUSAGE_CHILDREN, RUSAGE_SELF
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_spawn import WAYS, raise_fd_limit
from gen import crontab_text

from cronplus.clock import SystemClock
from cronplus.config import loader
from cronplus.core.model import LogFormat, iso_utc
from cronplus.core.plan import first_in_minute
from cronplus.engine.engine import Engine
from cronplus.engine.timetable import compile_job
from cronplus.observe import logs
from cronplus.run.runner import Command, Runner, RunningProcess
from cronplus.state.sqlite import SqliteStore

BENCH = Path(__file__).resolve().parent
STAMP_SOURCE = BENCH / "stamp.c"
DEFAULT_BUILD_DIR = BENCH / "out"
DEFAULT_RESULTS = BENCH / "RESULTS.md"
HEADING = "## run-once burst"
BURST_TARGET_S = 0.45
"""The issue's target: all 1,000 jobs of one minute started within 0.45 s."""

Measure = dict[str, float]
"""One run of one way: column name -> seconds."""


# --- the payload -----------------------------------------------------------------------


def install_cronplus(venv: Path = DEFAULT_BUILD_DIR / "cronplus") -> Path:
    """This checkout, as a wheel, in a virtual environment of its own; returns its python.

    The daemon benchmarks run cronplus as an operator installs it, bytecode compiled by
    pip. The work tree's own interpreter would add an editable install's path finder to
    every start and, where ``PYTHONDONTWRITEBYTECODE`` is set, compile every module from
    source on every start (``validate`` of 1,000 jobs: 0.49 s, against 0.43 s installed, on
    2026-12-02). Installed anew on every call, so what is measured is the code checked out
    now.
    """
    venv.parent.mkdir(parents=True, exist_ok=True)
    for argv in (
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--quiet", str(BENCH.parent)],
    ):
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return venv / "bin" / "python"


def interpreter(text: str) -> Path:
    """``--cronplus-python``: a path, or a name looked up on PATH, made absolute.

    Absolute, not resolved: the daemons run in folders of their own, and a venv's python
    is a link that must stay one to find its site-packages.
    """
    found = shutil.which(text)
    if found is None:
        raise argparse.ArgumentTypeError(f"no executable {text!r} (a path, or a name on PATH)")
    return Path(found).absolute()


def add_cronplus_python(parser: argparse.ArgumentParser) -> None:
    """The daemon benchmarks' ``--cronplus-python``: without it, ``install_cronplus``."""
    parser.add_argument(
        "--cronplus-python",
        type=interpreter,
        default=None,
        metavar="PYTHON",
        help="an interpreter with cronplus installed (default: this checkout, installed anew)",
    )


def add_write_results(parser: argparse.ArgumentParser, heading: str) -> None:
    """A benchmark's ``--write-results [FILE]``: its section of bench/RESULTS.md."""
    parser.add_argument(
        "--write-results",
        type=Path,
        nargs="?",
        const=DEFAULT_RESULTS,
        default=None,
        metavar="FILE",
        help=f"also update the '{heading}' section of FILE (bench/RESULTS.md)",
    )


def shown(path: Path) -> str:
    """``path`` from the checkout's root where it lies under it (bench/out/...)."""
    root = BENCH.parent
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def build_stamp(build_dir: Path = DEFAULT_BUILD_DIR) -> Path:
    """Compile stamp.c (static if the toolchain can), unless an up-to-date build exists."""
    return build_c(STAMP_SOURCE, build_dir, static=True)


def build_c(source: Path, build_dir: Path = DEFAULT_BUILD_DIR, *, static: bool = False) -> Path:
    """Compile ``source`` into ``build_dir`` (named after it; first ``-static`` if
    ``static``, then dynamic), unless an up-to-date build exists.

    A static build has a name of its own (``-static`` added), so a dynamic build of the
    same source, made before, is never taken for it."""
    target = build_dir / (f"{source.stem}-static" if static else source.stem)
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    build_dir.mkdir(parents=True, exist_ok=True)
    partial = build_dir / f".{source.stem}-{os.getpid()}"
    complaint = ""
    for flags in (["-static"], []) if static else ([],):
        try:
            done = subprocess.run(
                ["gcc", "-O2", *flags, "-o", str(partial), str(source)],
                capture_output=True,
                text=True,
            )
        except FileNotFoundError:
            raise SystemExit(f"cannot build {source}: gcc is not on PATH") from None
        if done.returncode == 0:
            # Renamed into place, so two benchmarks building at once both run a whole file.
            partial.replace(target)
            return target
        complaint = done.stderr.strip()
    raise SystemExit(f"cannot build {source} with gcc:\n{complaint}")


@dataclass(frozen=True, kw_only=True)
class Stamp:
    """One line of a stamp file: which job and slot started, and when (CLOCK_REALTIME)."""

    job: str
    scheduled_at: datetime
    at: float

    @property
    def lateness(self) -> float:
        """Seconds from the scheduled instant to the job's start."""
        return self.at - self.scheduled_at.timestamp()


def read_stamps(path: Path) -> list[Stamp]:
    """Every stamp in ``path``, in file order; none if nothing has started yet."""
    if not path.exists():
        return []
    stamps = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"{path}:{number}: expected 'JOB SCHEDULED_AT SECONDS', got {line!r}")
        job, slot, seconds = parts
        stamps.append(Stamp(job=job, scheduled_at=datetime.fromisoformat(slot), at=float(seconds)))
    return stamps


# --- crontabs and environments ---------------------------------------------------------

_JOB = re.compile(
    r'^    schedule: "(?P<schedule>[^"]*)"\n    timezone: (?P<zone>\S+)\n    command: .*$', re.M
)
_JOB_LINE = re.compile(r"^  job-\d+:$", re.M)


def rewritten(
    text: str, *, schedule: Callable[[str, ZoneInfo], str], argv: tuple[str | Path, ...]
) -> str:
    """gen.py's crontab with each job's schedule replaced by ``schedule(old, zone)`` and its
    command by ``argv``: the same jobs and zones, made to fire when the benchmark needs."""
    command = json.dumps([str(arg) for arg in argv])  # a JSON list is a YAML flow list

    def swap(match: re.Match[str]) -> str:
        zone = match["zone"]
        new = schedule(match["schedule"], ZoneInfo(zone))
        return f'    schedule: "{new}"\n    timezone: {zone}\n    command: {command}'

    out, swapped = _JOB.subn(swap, text)
    jobs = len(_JOB_LINE.findall(text))
    if swapped != jobs:
        raise ValueError(f"gen.py's layout changed: {swapped} jobs rewritten of {jobs}")
    return out


def every_minute(_old: str, _zone: ZoneInfo) -> str:
    return "* * * * *"


def bench_env(state_home: Path) -> dict[str, str]:
    """This environment minus anything that steers cronplus, with its own state folder."""
    steering = ("CRONPLUS_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(steering)}
    env["XDG_STATE_HOME"] = str(state_home)
    return env


def cronplus_argv(crontab: Path, *args: str, python: str | Path = sys.executable) -> list[str]:
    """``cronplus`` as ``python`` runs it (by default this interpreter: this checkout)."""
    return [str(python), "-m", "cronplus", "-c", str(crontab), "--log-format", "json", *args]


def fresh(root: Path, name: str) -> Path:
    """A new, empty folder under ``root`` for one run: its crontab, state and stamps."""
    return Path(tempfile.mkdtemp(prefix=f"{name.replace('/', '_')}-", dir=root))


# --- the ways --------------------------------------------------------------------------


def run_once_cli(
    folder: Path, n: int, argv: tuple[str | Path, ...], stamps: Path | None
) -> Measure:
    """The real command as a user runs it, on a crontab of N every-minute jobs."""
    crontab = folder / "crontab.yaml"
    crontab.write_text(rewritten(crontab_text(n), schedule=every_minute, argv=argv))
    at = iso_utc(datetime.now(UTC).replace(second=0, microsecond=0))
    cpu = cpu_seconds()
    began_wall, began = time.time(), time.perf_counter()
    done = subprocess.run(
        cronplus_argv(crontab, "run-once", "--at", at, "--json"),
        capture_output=True,
        text=True,
        env=bench_env(folder / "state"),
        cwd=folder,
    )
    measure = {"exit": time.perf_counter() - began, **cpu_used(cpu)}
    runs = json.loads(done.stdout)["runs"] if done.returncode == 0 else []
    if len(runs) != n or any(run["outcome"] != "succeeded" for run in runs):
        raise SystemExit(
            f"run-once exited {done.returncode} with {len(runs)} of {n} runs:\n"
            f"{done.stderr[-2000:]}"
        )
    if stamps is not None:
        starts = [stamp.at for stamp in read_stamps(stamps)]
        if len(starts) != n:
            raise SystemExit(f"run-once left {len(starts)} stamps in {stamps}, expected {n}")
        measure |= {
            "first": min(starts) - began_wall,
            "last": max(starts) - began_wall,
            "spread": max(starts) - min(starts),
        }
    return measure


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) used so far by this process, and by its reaped children."""
    own, children = (resource.getrusage(who) for who in (RUSAGE_SELF, RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def cpu_used(before: tuple[float, float]) -> Measure:
    """CPU since ``before``: other work on the host stretches wall times, hardly these."""
    own, children = cpu_seconds()
    return {"own cpu": own - before[0], "children cpu": children - before[1]}


class TimedRunner(Runner):
    """A ``Runner`` that notes ``perf_counter()`` right after each start (bench only)."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[float] = []

    def start(self, command: Command) -> RunningProcess:
        process = super().start(command)
        self.starts.append(time.perf_counter())
        return process


def engine_burst(folder: Path, n: int, program: str) -> Measure:
    """run-once's pass in this process: ``start_slots`` for N slots, then ``wait_idle``."""
    path = folder / "crontab.yaml"
    path.write_text(rewritten(crontab_text(n), schedule=every_minute, argv=(program,)))
    env = bench_env(folder / "state")
    crontab = loader.load(path, env=env)
    clock = SystemClock()
    now = clock.now()
    slots = [(job, first_in_minute(compile_job(job), now)) for job in crontab.jobs]
    due = [(job, slot) for job, slot in slots if slot is not None]

    async def burst() -> Measure:
        store = SqliteStore.open(crontab.settings.state)
        runner = TimedRunner()
        try:
            engine = Engine(
                crontab, store=store, runner=runner, clock=clock, base_env=env, log=logs.EventLog()
            )
            cpu, began = cpu_seconds(), time.perf_counter()
            runs = engine.start_slots(due, now=now)
            await engine.wait_idle()
            finished, used = time.perf_counter(), cpu_used(cpu)
        finally:
            store.close()
        failed = [run for run in runs if not (run.results and run.results[-1].outcome.ok)]
        if len(runs) != n or failed or len(runner.starts) != n:
            raise SystemExit(f"engine burst: {len(runs)} runs of {n}, {len(failed)} failed")
        return {"last": runner.starts[-1] - began, "done": finished - began, **used}

    return asyncio.run(burst())


def bare_way(name: str) -> Callable[[Path, int, str], Measure]:
    """One of bench_spawn.py's loops, as a way of this benchmark."""

    def way(_folder: Path, n: int, program: str) -> Measure:
        cpu = cpu_seconds()
        started, done = WAYS[name](program, n)
        return {"last": started, "done": done, **cpu_used(cpu)}

    return way


def ways(stamp: Path, program: str) -> dict[str, Callable[[Path, int, str], Measure]]:
    """Every way, in the order each repeat runs them."""

    def with_stamp(folder: Path, n: int, _program: str) -> Measure:
        stamps = folder / "stamps.txt"
        return run_once_cli(folder, n, (stamp, stamps), stamps)

    def with_program(folder: Path, n: int, program: str) -> Measure:
        return run_once_cli(folder, n, (program,), None)

    return {
        "run-once, stamp": with_stamp,
        f"run-once, {program}": with_program,
        "engine": engine_burst,
        **{name: bare_way(name) for name in WAYS},
    }


# --- tables and RESULTS.md -------------------------------------------------------------


def cell(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    """``median (min–max)``, each value times ``scale``."""
    scaled = [value * scale for value in values]
    median = statistics.median(scaled)
    return f"{median:.{digits}f} ({min(scaled):.{digits}f}–{max(scaled):.{digits}f})"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = [headers, ["---"] * len(headers), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile: the smallest value with at least q% of them at or below."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


def machine(loadavg: str, *, code: str, began: datetime | None = None) -> str:
    """The host, as RESULTS.md records it; ``code``: ``code_state()`` read when the run
    began, with ``loadavg`` (a commit made during a long run is not what it installed and
    measured); ``began``: when a long run started."""
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip()
    cpuinfo = Path("/proc/cpuinfo")
    models = re.findall(
        r"^model name\s*:\s*(.*)$", cpuinfo.read_text() if cpuinfo.exists() else "", re.M
    )
    return (
        f"- date: {_span(began, datetime.now(UTC))}\n"
        f"- `uname -a`: `{uname or platform.platform()}`\n"
        f"- CPU: {models[0] if models else platform.processor() or 'unknown'}, "
        f"{os.cpu_count()} cores\n"
        f"- Python {platform.python_version()}\n"
        f"- load average when the run began (other work on the host): {loadavg}\n"
        f"- code: {code}"
    )


def code_state() -> str:
    """The commit measured, and whether cronplus/ had uncommitted changes on top of it."""
    git = ["git", "-C", str(BENCH.parent)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "not a git checkout"
    changed = subprocess.run(
        [*git, "status", "--porcelain", "--", "cronplus"], capture_output=True, text=True
    ).stdout.splitlines()
    extra = f" + uncommitted changes to {len(changed)} files in cronplus/" if changed else ""
    return f"commit {head.stdout.strip()}{extra}"


def _span(began: datetime | None, ended: datetime) -> str:
    if began is None:
        return ended.isoformat(timespec="minutes")
    return f"{began.isoformat(timespec='minutes')} to {ended:%H:%M} UTC"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the host skews every figure."""
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def verdict(measured: float, target: float) -> str:
    return "yes" if measured < target else "**no**"


def update_results(path: Path, heading: str, body: str, *, owner: str) -> None:
    """Put ``body`` under ``heading`` between ``owner``'s markers; all else in the file stays.

    Text in the section outside the markers (an analysis written by hand) is kept.
    """
    begin, end = f"<!-- {owner}: begin -->", f"<!-- {owner}: end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if begin in text and end in text.split(begin, 1)[1]:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    elif re.search(f"^{re.escape(heading)}$", text, re.M):
        text = re.sub(
            f"^{re.escape(heading)}$", lambda _: f"{heading}\n\n{block}", text, count=1, flags=re.M
        )
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{block}\n"
    path.write_text(text)


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

    def cells(runs: list[Measure]) -> list[str]:
        return [cell([run[key] for run in runs]) if key in runs[0] else "–" for key in keys]

    return [[name, *cells(results[name])] for name in names]


def report(results: dict[str, list[Measure]], *, n: int, repeats: int, program: str) -> str:
    command = [name for name in results if name.startswith("run-once")]
    burst = [name for name in results if name not in command]
    cli = markdown_table(["way", *CLI_COLUMNS.values()], rows(results, command, list(CLI_COLUMNS)))
    loops = markdown_table(
        ["way", *LOOP_COLUMNS.values(), "starts/s"],
        [
            [*row, f"{n / statistics.median(run['last'] for run in results[row[0]]):,.0f}"]
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="jobs due at once (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of all ways (default 3)")
    parser.add_argument("--program", default="/bin/true", help="what the plain jobs run")
    parser.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR, help="for stamp")
    add_write_results(parser, HEADING)
    args = parser.parse_args()
    loadavg, code = load_average(), code_state()
    stamp = build_stamp(args.build_dir)
    raise_fd_limit(args.n)
    # The engine logs each finished attempt, as run-once does to its stderr.
    logs.configure(LogFormat.JSON, stream=open(os.devnull, "w"))  # noqa: SIM115
    chosen = ways(stamp, args.program)
    results: dict[str, list[Measure]] = {name: [] for name in chosen}
    with tempfile.TemporaryDirectory(prefix="bench-runonce-") as tmp:
        for way in chosen.values():  # warm up imports, caches and the page cache
            way(fresh(Path(tmp), "warm-up"), min(args.n, 20), args.program)
        for _ in range(args.repeats):
            for name, way in chosen.items():
                gc.collect()
                results[name].append(way(fresh(Path(tmp), name), args.n, args.program))
    text = report(results, n=args.n, repeats=args.repeats, program=args.program)
    command = (
        f"python bench/bench_runonce.py -n {args.n} --repeats {args.repeats} "
        f"--program {args.program}"
    )
    body = f"{machine(loadavg, code=code)}\n- command: `{command}`\n\n{text}"
    print(body)
    if args.write_results is not None:
        update_results(args.write_results, HEADING, body, owner="bench_runonce.py")


if __name__ == "__main__":
    main()

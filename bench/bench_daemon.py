"""What a running daemon costs (startup, memory, idle CPU) and how late its jobs start.

    python bench/bench_daemon.py [--sizes 100,1000,10000] [--idle-seconds 60]
                                 [--lateness-seconds 30] [--burst-sizes 100,1000]
                                 [--repeats 3] [--burst-lead 5] [--build-dir bench/out]
                                 [--cronplus-python PYTHON] [--write-results [FILE]]

Every daemon is a real ``cronplus daemon`` subprocess (``--log-format json``) with its own
XDG_STATE_HOME temp folder; it is stopped with SIGTERM and must exit 0. It runs as an
operator installs it: this checkout is built as a wheel into ``bench/out/cronplus``
(``install_cronplus``) unless ``--cronplus-python`` names an interpreter that has it. A
thread reads its stderr line by line, noting when each line arrived.

- **startup**: gen.py's N jobs (its expressions and zones), each moved into the month
  half a year from now, so nothing fires while we watch. From just before the spawn until
  the ``started`` line is read: interpreter, imports, config load, the state database and
  every job's next instant. Repeated ``--repeats`` times, alternating sizes.
- **memory**: VmRSS, and VmHWM (its peak, i.e. during startup), from /proc/PID/status
  of the last repeat's daemons, at the end of the idle window.
- **idle CPU**: those daemons' CPU time over ``--idle-seconds`` (they idle side by side;
  the window opens 1 s after the last one started). utime+stime from /proc/PID/stat count
  in clock ticks (10 ms), so the window is also read from /proc/PID/task/*/schedstat
  (nanoseconds), and the context switches say how often the daemon woke.
- **every-second lateness**: one job ``* * * * * *`` running bench/stamp.c for
  ``--lateness-seconds``; lateness = the stamp's CLOCK_REALTIME minus the slot's instant.
- **burst lateness**: N jobs (gen.py's zones) all due at one instant, a whole second
  ``--burst-lead`` seconds after the crontab is written, written as a 6-field schedule in
  each job's own zone; ``max_concurrent: N``. Lateness of the first, median, p99 and last
  start, and the daemon's CPU (schedstat) for the burst; ``--repeats`` daemons per size,
  alternating.

Percentiles are nearest-rank. Prints markdown tables; writes nothing into the repository
unless ``--write-results``, which updates the ``## daemon`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_runonce import (
    DEFAULT_BUILD_DIR,
    add_cronplus_python,
    add_write_results,
    bench_env,
    build_stamp,
    cell,
    code_state,
    cronplus_argv,
    fresh,
    install_cronplus,
    load_average,
    machine,
    markdown_table,
    percentile,
    read_stamps,
    rewritten,
    shown,
    update_results,
    verdict,
)
from bench_spawn import raise_fd_limit
from gen import crontab_text

HEADING = "## daemon"
STARTUP_TIMEOUT = 120.0
"""Seconds a daemon may take to log ``started`` before the benchmark gives up."""
STOP_TIMEOUT = 60.0
SETTLE = 1.0
"""Seconds between the last ``started`` and the idle window, for startup's tail to pass."""
BURST_TIMEOUT = 60.0
"""Seconds after the burst instant by which every job must have started and succeeded."""
MACROS = {  # spelled out, so that their month field can be moved
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
TARGETS = {
    "startup, 1,000 jobs": (500.0, "ms"),
    "startup, 10,000 jobs": (1000.0, "ms"),
    "VmRSS, 10,000 jobs": (60.0, "MB"),
    "idle CPU, 1,000 jobs": (1.0, "ms/min"),
    "idle CPU, 10,000 jobs": (1.0, "ms/min"),
    "burst of 1,000: last start": (450.0, "ms"),
    "burst of 100: p99 start": (60.0, "ms"),
    "every-second job: p99": (10.0, "ms"),
}
"""The issue's targets: what must stay below which limit."""


# --- a daemon under test ---------------------------------------------------------------


class DaemonRun:
    """A real ``cronplus daemon``; a thread reads its JSON log lines as they come."""

    alive: ClassVar[set[DaemonRun]] = set()
    """Started and not yet stopped: killed on the way out if the benchmark fails."""

    def __init__(self, folder: Path, crontab: Path, *, python: str | Path = sys.executable) -> None:
        self.began = time.perf_counter()
        self.proc = subprocess.Popen(
            cronplus_argv(crontab, "daemon", python=python),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=bench_env(folder / "state"),
            cwd=folder,
        )
        self.events: list[tuple[float, dict[str, object]]] = []
        """(``perf_counter()`` when read, the JSON line) for every line of its stderr."""
        self._closed = False
        self._news = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="daemon-stderr", daemon=True)
        self._reader.start()
        self.alive.add(self)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            at = time.perf_counter()
            try:
                event = json.loads(raw)
            except json.JSONDecodeError:
                event = {"event": "raw", "message": raw.decode(errors="replace").rstrip()}
            with self._news:
                self.events.append((at, event))
                self._news.notify_all()
        with self._news:
            self._closed = True
            self._news.notify_all()

    def wait_for(self, name: str, *, count: int = 1, timeout: float) -> float:
        """When the ``count``-th line of event ``name`` was read (``perf_counter()``)."""
        deadline = time.monotonic() + timeout
        with self._news:
            while True:
                seen = [at for at, event in self.events if event.get("event") == name]
                if len(seen) >= count:
                    return seen[count - 1]
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    why = "exited" if self._closed else f"gave no {count} × {name} in {timeout}s"
                    raise SystemExit(f"daemon {self.proc.pid} {why}:\n{self.log_tail()}")
                self._news.wait(left)

    def log_tail(self, lines: int = 20) -> str:
        with self._news:
            tail = self.events[-lines:]
        return "\n".join(json.dumps(event) for _, event in tail)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._forget()

    def _forget(self) -> None:
        self._reader.join(STOP_TIMEOUT)  # it has read to the end: the daemon is gone
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        self.alive.discard(self)

    def stop(self) -> None:
        """SIGTERM, then insist on exit code 0."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(STOP_TIMEOUT)
        self._forget()
        if code != 0:
            raise SystemExit(f"daemon {self.proc.pid} exited {code} on SIGTERM:\n{self.log_tail()}")


@contextlib.contextmanager
def no_daemon_left() -> Iterator[None]:
    """Kill every daemon still running when the block ends: a failed run leaves none."""
    try:
        yield
    finally:
        for daemon in list(DaemonRun.alive):
            daemon.kill()


# --- /proc -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Usage:
    """One reading of a process's CPU time, its wake-ups and its memory."""

    cpu_ticks_ms: float
    """utime + stime from /proc/PID/stat: all threads, in clock ticks, as ms."""
    cpu_sched_ms: float
    """Summed over /proc/PID/task/*/schedstat: nanosecond CPU time, as ms."""
    switches: int
    """Voluntary + involuntary context switches, summed over the threads."""
    rss_kib: int
    hwm_kib: int


def _status(path: Path) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
    return {key: value.strip() for key, value in pairs}


def per_minute(before: Usage, after: Usage, seconds: float) -> tuple[float, float]:
    """CPU ms (schedstat) and wake-ups per 60 s between two readings ``seconds`` apart."""
    scale = 60 / seconds
    cpu = (after.cpu_sched_ms - before.cpu_sched_ms) * scale
    return cpu, (after.switches - before.switches) * scale


def usage(pid: int) -> Usage:
    proc = Path(f"/proc/{pid}")
    # The name in (...) may hold spaces; utime and stime are fields 14 and 15.
    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    tasks = list((proc / "task").iterdir())
    sched_ns = sum(int((task / "schedstat").read_text().split()[0]) for task in tasks)
    switches = 0
    for task in tasks:
        status = _status(task / "status")
        switches += int(status["voluntary_ctxt_switches"])
        switches += int(status["nonvoluntary_ctxt_switches"])
    status = _status(proc / "status")
    return Usage(
        cpu_ticks_ms=ticks * 1000 / os.sysconf("SC_CLK_TCK"),
        cpu_sched_ms=sched_ns / 1e6,
        switches=switches,
        rss_kib=int(status["VmRSS"].split()[0]),
        hwm_kib=int(status["VmHWM"].split()[0]),
    )


# --- the measurements ------------------------------------------------------------------


def idle_month(today: datetime) -> int:
    """The month half a year away: no job of that month fires for months."""
    return (today.month + 5) % 12 + 1


def write_idle_crontab(crontab: Path, n: int) -> None:
    """gen.py's N jobs, each running ``true``, moved into a month none of them is due in
    for months."""
    schedule = moved_to_month(idle_month(datetime.now(UTC)))
    crontab.write_text(rewritten(crontab_text(n), schedule=schedule, argv=("true",)))


def moved_to_month(month: int) -> Callable[[str, ZoneInfo], str]:
    def schedule(expression: str, _zone: ZoneInfo) -> str:
        fields = MACROS.get(expression, expression).split()
        fields[-2] = str(month)  # the month field, with or without seconds
        return " ".join(fields)

    return schedule


@dataclass(frozen=True, kw_only=True)
class Idle:
    """One size's startups, and its kept daemon's usage over the idle window."""

    startups: list[float]
    window: float
    before: Usage
    after: Usage

    @property
    def cpu_ticks_ms(self) -> float:
        return self.after.cpu_ticks_ms - self.before.cpu_ticks_ms

    @property
    def cpu_sched_ms(self) -> float:
        return self.after.cpu_sched_ms - self.before.cpu_sched_ms

    @property
    def switches(self) -> int:
        return self.after.switches - self.before.switches


def startups(
    root: Path, sizes: list[int], *, repeats: int, python: Path
) -> tuple[dict[int, list[float]], dict[int, DaemonRun]]:
    """Each size's startup times, alternating; the last repeat's daemons are kept running."""
    times: dict[int, list[float]] = {n: [] for n in sizes}
    kept: dict[int, DaemonRun] = {}
    for repeat in range(repeats):
        for n in sizes:
            folder = fresh(root, f"idle-{n}")
            crontab = folder / "crontab.yaml"
            write_idle_crontab(crontab, n)
            daemon = DaemonRun(folder, crontab, python=python)
            times[n].append(daemon.wait_for("started", timeout=STARTUP_TIMEOUT) - daemon.began)
            if repeat < repeats - 1:
                daemon.stop()
            else:
                kept[n] = daemon
    return times, kept


def idle_daemons(
    root: Path, sizes: list[int], *, repeats: int, seconds: float, python: Path
) -> dict[int, Idle]:
    times, kept = startups(root, sizes, repeats=repeats, python=python)
    time.sleep(SETTLE)
    before = {n: usage(daemon.proc.pid) for n, daemon in kept.items()}
    began = time.perf_counter()
    time.sleep(seconds)
    after = {n: usage(daemon.proc.pid) for n, daemon in kept.items()}
    window = time.perf_counter() - began
    for daemon in kept.values():
        daemon.stop()
    return {
        n: Idle(startups=times[n], window=window, before=before[n], after=after[n]) for n in sizes
    }


def every_second(root: Path, stamp: Path, *, seconds: float, python: Path) -> list[float]:
    """Lateness, in seconds, of each start of one every-second job."""
    folder = fresh(root, "every-second")
    stamps, crontab = folder / "stamps.txt", folder / "crontab.yaml"
    text = crontab_text(1)
    crontab.write_text(
        rewritten(text, schedule=lambda _old, _zone: "* * * * * *", argv=(stamp, stamps))
    )
    daemon = DaemonRun(folder, crontab, python=python)
    daemon.wait_for("started", timeout=STARTUP_TIMEOUT)
    time.sleep(seconds)
    daemon.stop()
    late = [s.lateness for s in read_stamps(stamps)]
    if not late:
        raise SystemExit(f"the every-second job never started in {seconds}s")
    return late


@dataclass(frozen=True, kw_only=True)
class Burst:
    """One daemon's burst of N jobs due at one instant."""

    late: list[float]
    """Seconds from the instant to each job's start."""
    cpu_ms: float
    """The daemon's own CPU (schedstat) from before the instant until every job succeeded:
    starting, reaping, recording and logging them all."""


def burst(root: Path, stamp: Path, n: int, *, lead: float, python: Path) -> Burst:
    folder = fresh(root, f"burst-{n}")
    stamps, crontab = folder / "stamps.txt", folder / "crontab.yaml"
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1 + lead)

    def at_instant(_old: str, zone: ZoneInfo) -> str:
        local = at.astimezone(zone)
        return f"{local.second} {local.minute} {local.hour} {local.day} {local.month} *"

    crontab.write_text(rewritten(crontab_text(n), schedule=at_instant, argv=(stamp, stamps)))
    daemon = DaemonRun(folder, crontab, python=python)
    daemon.wait_for("started", timeout=lead)
    if datetime.now(UTC) >= at:
        daemon.stop()
        raise SystemExit(
            f"the daemon with {n} jobs started after the burst instant: raise --burst-lead"
        )
    before = usage(daemon.proc.pid)
    daemon.wait_for("attempt_succeeded", count=n, timeout=lead + 1 + BURST_TIMEOUT)
    cpu_ms = usage(daemon.proc.pid).cpu_sched_ms - before.cpu_sched_ms
    daemon.stop()
    found = read_stamps(stamps)
    wrong = [s for s in found if s.scheduled_at != at]
    if len(found) != n or wrong:
        raise SystemExit(
            f"burst of {n} at {at:%H:%M:%S}: {len(found)} stamps, {len(wrong)} for another slot"
        )
    return Burst(late=[s.lateness for s in found], cpu_ms=cpu_ms)


# --- tables ----------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


IDLE_HEADERS = (
    "jobs|startup, s|VmRSS, MB|VmHWM, MB|idle CPU, ms (stat ticks)|"
    "idle CPU, ms (schedstat)|context switches"
)


def idle_table(results: dict[int, Idle]) -> str:
    rows = [
        [
            *(f"{n:,}", cell(idle.startups), f"{idle.after.rss_kib / 1024:.1f}"),
            *(f"{idle.after.hwm_kib / 1024:.1f}", f"{idle.cpu_ticks_ms:.0f}"),
            *(f"{idle.cpu_sched_ms:.3f}", str(idle.switches)),
        ]
        for n, idle in results.items()
    ]
    return markdown_table(IDLE_HEADERS.split("|"), rows)


def lateness_table(late: list[float]) -> str:
    row = [str(len(late)), ms(percentile(late, 50)), ms(percentile(late, 99)), ms(max(late))]
    return markdown_table(["starts", "p50, ms", "p99, ms", "max, ms"], [row])


BURST_STATS: dict[str, Callable[[list[float]], float]] = {
    "first": min,
    "median": statistics.median,
    "p99": lambda late: percentile(late, 99),
    "last": max,
}


def burst_table(results: dict[int, list[Burst]]) -> str:
    rows = [
        [
            f"{n:,}",
            *(cell([stat(run.late) for run in runs], 1000, 1) for stat in BURST_STATS.values()),
            cell([run.cpu_ms for run in runs], digits=1),
        ]
        for n, runs in results.items()
    ]
    headers = ["jobs", *(f"{name}, ms" for name in BURST_STATS), "daemon CPU, ms"]
    return markdown_table(headers, rows)


def targets_table(idle: dict[int, Idle], late: list[float], bursts: dict[int, list[Burst]]) -> str:
    measured = {"every-second job: p99": percentile(late, 99) * 1000}
    for n, run in idle.items():
        measured[f"startup, {n:,} jobs"] = statistics.median(run.startups) * 1000
        measured[f"VmRSS, {n:,} jobs"] = run.after.rss_kib / 1024
        measured[f"idle CPU, {n:,} jobs"] = run.cpu_sched_ms * 60 / run.window
    for n, runs in bursts.items():
        for stat in ("last", "p99"):
            late_ms = [BURST_STATS[stat](run.late) * 1000 for run in runs]
            measured[f"burst of {n:,}: {stat} start"] = statistics.median(late_ms)
    rows = [
        [
            name,
            f"< {limit:g} {unit}",
            f"{measured[name]:.3f} {unit}",
            verdict(measured[name], limit),
        ]
        for name, (limit, unit) in TARGETS.items()
        if name in measured
    ]
    return markdown_table(
        ["what (medians; idle CPU by schedstat)", "target", "measured", "met"], rows
    )


def report(
    idle: dict[int, Idle],
    late: list[float],
    bursts: dict[int, list[Burst]],
    args: argparse.Namespace,
) -> str:
    window = next(iter(idle.values())).window if idle else 0.0
    return (
        f"Startup ({args.repeats} alternating repeats, s, median (min–max)), memory, and CPU "
        f"over a {window:.0f} s idle window (nothing due):\n\n{idle_table(idle)}\n\n"
        f"One job `* * * * * *` for {args.lateness_seconds:g} s, lateness of each start "
        f"(stamp minus slot):\n\n{lateness_table(late)}\n\n"
        f"N jobs due at one instant, `max_concurrent: N`: lateness of the starts, and the "
        f"daemon's own CPU from just before the instant until every job had succeeded "
        f"({args.repeats} daemons per size, ms, median (min–max)):\n\n{burst_table(bursts)}\n\n"
        f"Targets:\n\n{targets_table(idle, late, bursts)}\n"
    )


def sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=sizes, default=[100, 1000, 10000], help="startup/idle job counts"
    )
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="idle window (default 60)")
    parser.add_argument(
        "--lateness-seconds", type=float, default=30.0, help="every-second run (30)"
    )
    parser.add_argument("--burst-sizes", type=sizes, default=[100, 1000], help="jobs due at once")
    parser.add_argument("--repeats", type=int, default=3, help="startups and bursts per size (3)")
    parser.add_argument("--burst-lead", type=float, default=5.0, help="s from start to burst (5)")
    parser.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR, help="for stamp")
    add_cronplus_python(parser)
    add_write_results(parser, HEADING)
    args = parser.parse_args()
    loadavg, began, code = load_average(), datetime.now(UTC), code_state()
    stamp = build_stamp(args.build_dir)
    python = args.cronplus_python or install_cronplus()
    raise_fd_limit(max([*args.burst_sizes, 1]))  # the daemons inherit it
    bursts: dict[int, list[Burst]] = {n: [] for n in args.burst_sizes}
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp, no_daemon_left():
        idle = idle_daemons(
            Path(tmp), args.sizes, repeats=args.repeats, seconds=args.idle_seconds, python=python
        )
        late = every_second(Path(tmp), stamp, seconds=args.lateness_seconds, python=python)
        for _ in range(args.repeats):
            for n in args.burst_sizes:
                bursts[n].append(burst(Path(tmp), stamp, n, lead=args.burst_lead, python=python))
    text = report(idle, late, bursts, args)
    command = (
        f"python bench/bench_daemon.py --sizes {','.join(map(str, args.sizes))} "
        f"--idle-seconds {args.idle_seconds:g} --lateness-seconds {args.lateness_seconds:g} "
        f"--burst-sizes {','.join(map(str, args.burst_sizes))} --repeats {args.repeats} "
        f"--burst-lead {args.burst_lead:g}"
    )
    ran = f"- cronplus run by: {shown(python)}"
    body = f"{machine(loadavg, began=began, code=code)}\n{ran}\n- command: `{command}`\n\n{text}"
    print(body)
    if args.write_results is not None:
        update_results(args.write_results, HEADING, body, owner="bench_daemon.py")


if __name__ == "__main__":
    main()

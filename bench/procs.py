"""The processes a benchmark starts and watches: daemons under test and what they cost
(read from /proc), a check timed to its exit, and the bare spawn loops that bound a burst."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from harness import Failed, bench_env, build_c, checked, cronplus_argv

from cronplus.core.model import Limits
from cronplus.run.runner import Command, Runner

K = TypeVar("K")
STOP_TIMEOUT = 60.0
"""Seconds a cronplus daemon may take to exit on SIGTERM."""
STOP_GRACE = 30.0
"""Seconds any other process under test may take: yacron reads SIGTERM between its parses
only (with 10,000 jobs, minutes later)."""


class NotReady(Failed):
    """A daemon took longer to start than the benchmark would wait; it has been killed."""


# --- what a process costs ---------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Usage:
    """One reading of a process's CPU time, its wake-ups and its memory."""

    cpu_ticks_ms: float
    """utime + stime from /proc/PID/stat: all threads, in clock ticks (10 ms), as ms."""
    cpu_sched_ms: float
    """Summed over /proc/PID/task/*/schedstat: nanosecond CPU time, as ms."""
    switches: int
    """Voluntary + involuntary context switches, summed over the threads: its wake-ups."""
    rss_kib: int
    hwm_kib: int


def _status(path: Path) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
    return {key: value.strip() for key, value in pairs}


def usage(pid: int) -> Usage:
    proc = Path(f"/proc/{pid}")
    # The name in (...) may hold spaces; utime and stime are fields 14 and 15.
    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    tasks = list((proc / "task").iterdir())
    switches = 0
    for task in tasks:
        status = _status(task / "status")
        switches += int(status["voluntary_ctxt_switches"])
        switches += int(status["nonvoluntary_ctxt_switches"])
    status = _status(proc / "status")
    return Usage(
        cpu_ticks_ms=(int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK"),
        cpu_sched_ms=sum(int((t / "schedstat").read_text().split()[0]) for t in tasks) / 1e6,
        switches=switches,
        rss_kib=int(status["VmRSS"].split()[0]),
        hwm_kib=int(status["VmHWM"].split()[0]),
    )


@dataclass(frozen=True, kw_only=True)
class Window:
    """One process over ``seconds``: its CPU by schedstat and by stat ticks (ms), context
    switches (its wake-ups), and its memory at the end (MB)."""

    seconds: float
    cpu_ms: float
    ticks_ms: float
    switches: int
    rss_mb: float
    hwm_mb: float

    def per_minute(self, value: float) -> float:
        return value * 60 / self.seconds


def watch(pids: Mapping[K, int], seconds: float, count: int = 1) -> dict[K, list[Window]]:
    """``count`` consecutive windows of ``seconds``, all processes side by side."""
    out: dict[K, list[Window]] = {key: [] for key in pids}
    after, ended = {key: usage(pid) for key, pid in pids.items()}, time.perf_counter()
    for _ in range(count):
        before, began = after, ended
        time.sleep(seconds)
        after, ended = {key: usage(pid) for key, pid in pids.items()}, time.perf_counter()
        for key in pids:
            was, now = before[key], after[key]
            out[key].append(
                Window(
                    seconds=ended - began,
                    cpu_ms=now.cpu_sched_ms - was.cpu_sched_ms,
                    ticks_ms=now.cpu_ticks_ms - was.cpu_ticks_ms,
                    switches=now.switches - was.switches,
                    rss_mb=now.rss_kib / 1024,
                    hwm_mb=now.hwm_kib / 1024,
                )
            )
    return out


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) used so far by this process, and by its reaped children:
    other work on the host stretches wall times, hardly these."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def raise_fd_limit(n: int) -> None:
    """Room for ``n`` children in flight: the runner holds three descriptors for each (two
    pipes and a pidfd); a daemon started after this inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * n + 64
    if soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


# --- processes under test ---------------------------------------------------------------


class Child:
    """A process under test, started in ``folder`` with its output in ``folder/output.log``."""

    alive: ClassVar[set[Child]] = set()
    """Started and not yet stopped: killed when a ``no_child_left`` block ends."""

    def __init__(
        self,
        argv: Sequence[str | Path],
        folder: Path,
        env: Mapping[str, str] | None = None,
        *,
        stderr: int = subprocess.STDOUT,
    ) -> None:
        self.folder = folder
        self._log = (folder / "output.log").open("wb")
        self.began_at, self.began = time.time(), time.perf_counter()
        self.proc = subprocess.Popen(
            [str(word) for word in argv],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=stderr,
            env=env,
            cwd=folder,
        )
        self.pid = self.proc.pid
        self.alive.add(self)

    def ready(self, timeout: float) -> float:
        """Seconds from the spawn until the process is ready; a plain one is at once."""
        return 0.0

    def log_tail(self, size: int = 2000) -> str:
        return (self.folder / "output.log").read_bytes()[-size:].decode(errors="replace")

    def stop(self, grace: float = STOP_GRACE) -> int:
        """SIGTERM, SIGKILL after ``grace`` seconds; its exit code (if not stopped already)."""
        if self in self.alive:
            self.terminate()
            self.wait(grace)
        return self.proc.returncode

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, grace: float = STOP_GRACE) -> int:
        """Its exit code once it has exited, killed after ``grace`` seconds."""
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._forget()
        return self.proc.returncode

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._forget()

    def _forget(self) -> None:
        self._log.close()
        self.alive.discard(self)


@contextlib.contextmanager
def no_child_left() -> Iterator[None]:
    """Kill every child still running when the block ends: a failed run leaves none."""
    try:
        yield
    finally:
        for child in list(Child.alive):
            child.kill()


class DaemonRun(Child):
    """A real ``cronplus daemon --log-format json``; a thread reads its log lines as they
    come, noting when each arrived."""

    def __init__(self, folder: Path, crontab: Path, *, python: str | Path = sys.executable) -> None:
        argv = cronplus_argv(crontab, "daemon", python=python)
        super().__init__(argv, folder, bench_env(folder / "state"), stderr=subprocess.PIPE)
        self.events: list[tuple[float, dict[str, object]]] = []
        """(``perf_counter()`` when read, the JSON line) for every line of its stderr."""
        self._closed = False
        self._news = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="daemon-stderr", daemon=True)
        self._reader.start()

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
                if self._closed:
                    raise Failed(f"daemon {self.pid} exited:\n{self.log_tail()}")
                if left <= 0:
                    why = f"daemon {self.pid} gave no {count} × {name} in {timeout:g} s"
                    raise NotReady(f"{why}:\n{self.log_tail()}")
                self._news.wait(left)

    def ready(self, timeout: float) -> float:
        """Seconds from the spawn until its ``started`` line was read; killed if none came."""
        try:
            return self.wait_for("started", timeout=timeout) - self.began
        except Failed:
            self.kill()
            raise

    def log_tail(self, size: int = 20) -> str:
        with self._news:
            tail = self.events[-size:]
        return "\n".join(json.dumps(event) for _, event in tail)

    def stop(self, grace: float = STOP_TIMEOUT) -> int:
        """SIGTERM, and insist on exit code 0 (unless it was killed already: its failure is
        told)."""
        stopping = self in self.alive
        code = super().stop(grace)
        if stopping and code != 0:
            raise Failed(f"daemon {self.pid} exited {code} on SIGTERM:\n{self.log_tail()}")
        return code

    def _forget(self) -> None:
        self._reader.join(STOP_TIMEOUT)  # it has read to the end: the daemon is gone
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        super()._forget()


# --- a check, timed to its exit ---------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Check:
    """One config check: seconds from spawn to exit and the command's own peak RSS (both
    None: stopped at the limit)."""

    seconds: float | None
    peak_mb: float | None


def exits_within(pid: int, seconds: float) -> bool:
    """Whether child ``pid`` ends within ``seconds``, seen the moment it does (a pidfd);
    it is left to be reaped."""
    pidfd = os.pidfd_open(pid)
    try:
        return bool(select.select([pidfd], [], [], seconds)[0])
    finally:
        os.close(pidfd)


def timed_check(argv: list[str], folder: Path, limit: float, *, peak: Path) -> Check:
    """Run one check command; its wall time and its own peak RSS.

    ``peak`` is bench/peak.c built: the command runs as its child, so that its peak RSS is
    its own and not this harness's.
    """
    peak_file = folder / "peak.kib"
    with (folder / "check.log").open("wb") as log:
        began = time.perf_counter()
        proc = subprocess.Popen(
            [str(peak.absolute()), str(peak_file), *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=bench_env(folder / "state"),
            cwd=folder,
            start_new_session=True,  # a check stopped at the limit goes with its group
        )
        try:
            # Not proc.wait(limit): with a timeout it polls, sleeping up to 50 ms between
            # looks, which rounded every check up to the next 50 ms step.
            exited = exits_within(proc.pid, limit)
            seconds = time.perf_counter() - began
        finally:
            if proc.poll() is None:  # the limit, or this harness stopped (Ctrl-C)
                os.killpg(proc.pid, signal.SIGKILL)  # not yet reaped: still our group
                proc.wait()
        if not exited:
            return Check(seconds=None, peak_mb=None)
    if proc.returncode != 0:
        output = (folder / "check.log").read_text(errors="replace")[-2000:]
        raise Failed(f"{argv[0]} exited {proc.returncode}:\n{output}")
    return Check(seconds=seconds, peak_mb=int(peak_file.read_text()) / 1024)


# --- the bare spawn loops ---------------------------------------------------------------

Timing = tuple[float, float]
"""Seconds from the first start to the last, and until every child was reaped."""
Loop = Callable[[Sequence[str], int], Timing]
"""N children of one argv, all in flight before any is reaped, each in its own session."""


def popen_loop(argv: Sequence[str], n: int, **options: Any) -> Timing:
    began = time.perf_counter()
    children = [subprocess.Popen(argv, start_new_session=True, **options) for _ in range(n)]
    started = time.perf_counter()
    for child in children:
        child.wait()
    return started - began, time.perf_counter() - began


def posix_spawn_loop(argv: Sequence[str], n: int) -> Timing:
    env = dict(os.environ)
    began = time.perf_counter()
    pids = [os.posix_spawn(argv[0], list(argv), env, setsid=True) for _ in range(n)]
    started = time.perf_counter()
    for pid in pids:
        os.waitpid(pid, 0)
    return started - began, time.perf_counter() - began


def asyncio_loop(argv: Sequence[str], n: int) -> Timing:
    """``await asyncio.create_subprocess_exec`` each, as yacron starts its jobs."""

    async def burst() -> Timing:
        began = time.perf_counter()
        children = [
            await asyncio.create_subprocess_exec(*argv, start_new_session=True) for _ in range(n)
        ]
        started = time.perf_counter()
        await asyncio.gather(*(child.wait() for child in children))
        return started - began, time.perf_counter() - began

    return asyncio.run(burst())


def runner_loop(argv: Sequence[str], n: int, limits: Limits | None = None) -> Timing:
    """cronplus's ``Runner.start`` (pipes, a pidfd, a timeout timer a child), then every wait."""
    command = Command(
        argv=tuple(argv),
        workdir=Path("/"),
        env=dict(os.environ),
        timeout=600.0,
        kill_grace=10.0,
        success_codes=frozenset({0}),
        limits=limits or Limits(),
    )

    async def burst() -> Timing:
        runner = Runner()
        began = time.perf_counter()
        processes = [runner.start(command) for _ in range(n)]
        started = time.perf_counter()
        results = await asyncio.gather(*(process.wait() for process in processes))
        finished = time.perf_counter()
        failed = [result.reason for result in results if not result.outcome.ok]
        if failed:
            raise Failed(f"{len(failed)} of {n} runner starts failed, e.g. {failed[0]}")
        return started - began, finished - began

    return asyncio.run(burst())


def c_loop(build_dir: Path) -> Loop:
    """bench/spawn.c, built in ``build_dir``: a C loop of ``posix_spawn``."""
    spawn = build_c(Path(__file__).resolve().parent / "spawn.c", build_dir)

    def loop(argv: Sequence[str], n: int) -> Timing:
        started, reaped = (float(word) for word in checked([spawn, str(n), *argv]).split())
        return started, reaped

    return loop

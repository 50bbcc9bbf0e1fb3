"""The fault lab: three real ``cronplus daemon`` nodes on one database of a private
PostgreSQL server, their crontabs, and the record of every start.

Every attempt of every job appends one line with ``O_APPEND`` (the shell's ``>>``) to
``started.txt`` in the lab's folder: ``$CRONPLUS_RUN_ID $NODE $CRONPLUS_ATTEMPT
$EPOCHREALTIME``. That file is the truth the scenarios count; the time is the job's own
(bash's ``EPOCHREALTIME``, read by the job process, whose environment cronplus builds, so a
node run under libfaketime does not pass its fake clock on: the crontab inherits only
``NODE``, and a start whose environment still held ``LD_PRELOAD`` or ``FAKETIME`` names
them after the time, ``Start.inherited``).

No pytest here: the fault suite (tests_cluster/) and bench/bench_cluster_faults.py both
drive it, and a missing tool is ``Missing``, which each turns into its own skip or exit.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from privatepg import PrivateServer

RECORD = (
    'echo "$CRONPLUS_RUN_ID $NODE $CRONPLUS_ATTEMPT $EPOCHREALTIME'
    '${LD_PRELOAD:+ LD_PRELOAD}${FAKETIME:+ FAKETIME}" >> started.txt'
)
"""One line per attempt; a job that inherited its node's fake clock says so at the end."""
FAIL_FIRST = '; [ "$CRONPLUS_ATTEMPT" -gt 1 ]'
"""Appended to a retrying job's command: its first attempt fails, a retry succeeds."""
NAMES = ("a", "b", "c")


class Missing(Exception):
    """A tool the lab needs is not on this host; the message says which and how to get it."""


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """One job of the lab's crontab: every ``period`` seconds at ``phase``, in UTC."""

    name: str
    period: int
    phase: int = 0
    retrying: bool = False
    retry_delay: int = 3
    catchup: str = "all"

    @property
    def schedule(self) -> str:
        first = "*" if self.phase == 0 else f"{self.phase}-59"
        return f"{first}/{self.period} * * * * *"

    @property
    def tail(self) -> float:
        """Seconds from a slot to its succeeding start in a healthy cluster, about."""
        return float(self.retry_delay) if self.retrying else 0.0

    def slots(self, begin: datetime, end: datetime) -> list[datetime]:
        """This job's instants in [begin, end)."""
        first = int(begin.timestamp()) - 1
        first += (self.phase - first) % self.period
        out = []
        for t in range(first, int(end.timestamp()) + 1, self.period):
            instant = datetime.fromtimestamp(t, UTC)
            if begin <= instant < end:
                out.append(instant)
        return out

    def yaml(self) -> list[str]:
        command = RECORD + (FAIL_FIRST if self.retrying else "")
        lines = [
            f"  {self.name}:",
            f'    schedule: "{self.schedule}"',
            f"    catchup: {self.catchup}",
            f"    command: '{command}'",
        ]
        if self.retrying:
            lines += ["    retries: 2", f"    retry_delay: {self.retry_delay}s"]
        return lines


def crontab(node: str, jobs: Sequence[JobSpec], *, lease: int) -> str:
    lines = [
        "settings:",
        "  shutdown_grace: 2s",
        "  max_concurrent: 64",
        "  cluster:",
        "    dsn: {from_env: CRONPLUS_FAULTS_DSN}",
        f"    node: {node}",
        f"    lease: {lease}s",
        "defaults:",
        "  timezone: UTC",
        "  shell: /bin/bash  # EPOCHREALTIME: the start's time without a process of its own",
        "  inherit_env: [NODE]  # a start names the node it ran on",
        "  overlap: allow",
        "jobs:",
    ]
    for job in jobs:
        lines += job.yaml()
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Start:
    """One line of ``started.txt``: an attempt of (job, slot) began on ``node`` at ``at``."""

    job: str
    slot: datetime
    node: str
    attempt: int
    at: datetime
    inherited: tuple[str, ...] = ()
    """``LD_PRELOAD``, ``FAKETIME``: what of a fake clock the job's environment held."""


def now() -> datetime:
    return datetime.now(UTC)


def sleep_until(instant: datetime) -> None:
    time.sleep(max((instant - now()).total_seconds(), 0.0))


def faketime_library() -> Path:
    """libfaketime's multi-threaded preload library (Debian's package ``faketime``)."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")) or sorted(
        glob.glob("/usr/lib/faketime/libfaketimeMT.so.1")
    )
    if not found:
        raise Missing("no libfaketime for the skewed-clock scenario: apt-get install -y faketime")
    return Path(found[-1])


def skewed(seconds: int) -> dict[str, str]:
    """The environment that runs a process with its wall clock ``seconds`` off (+ fast),
    as on a host whose NTP is broken; file times stay real (``NO_FAKE_STAT``).

    libfaketime 0.9.10 (Debian 12) fakes CLOCK_MONOTONIC too, and it must: with
    ``FAKETIME_DONT_FAKE_MONOTONIC=1`` its ``clock_nanosleep`` still shifts the absolute
    CLOCK_MONOTONIC deadline Python 3.11's ``time.sleep`` passes, and every sleep fails
    with EINVAL (libfaketime issue 426). Faked, the process's monotonic clock reads the
    fake wall time (a constant offset from the real one) and advances at the real rate,
    and a sleep's deadline is translated back, so ``time.sleep``, ``asyncio.sleep`` and
    every poll/epoll timeout work. Its one casualty: a *timed* wait on a lock, an event or
    a queue in a thread (``sem_clockwait``, not intercepted) waits until woken, whatever
    its timeout; the daemon has none (asyncio, and threads that wait without a timeout).
    """
    return {
        "LD_PRELOAD": str(faketime_library()),
        "FAKETIME": f"{seconds:+d}s",
        "NO_FAKE_STAT": "1",
    }


class Proc:
    """One ``cronplus daemon`` process; its JSON log lines go to a file we read."""

    def __init__(self, script: Path, config: Path, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = log.open("w")
        self._faked = "FAKETIME" in env
        self.proc = subprocess.Popen(
            [str(script), "-c", str(config), "--log-format", "json", "daemon"],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=env,
            cwd=config.parent,
        )

    def events(self) -> list[dict[str, object]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    def count(self, name: str) -> int:
        return sum(1 for e in self.events() if e.get("event") == name)

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode} before {what}:\n"
                                     f"{self.tail()}")  # fmt: skip
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout:g} s:\n{self.tail()}")
            time.sleep(0.05)

    def wait_event(self, name: str, timeout: float, *, more_than: int = 0) -> None:
        self.wait_for(lambda: self.count(name) > more_than, timeout, name)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 20) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()
            if self._faked and self.proc.returncode is not None:
                # libfaketime's per-process shared memory, which the daemon's exit (or a
                # kill) leaves in /dev/shm
                for name in (f"faketime_shm_{self.proc.pid}", f"sem.faketime_sem_{self.proc.pid}"):
                    with contextlib.suppress(OSError):
                        os.unlink(f"/dev/shm/{name}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process dies at once either way
            self.proc.kill()
        self.wait(10)


@dataclass
class Lab:
    """Three nodes' crontabs in one folder, their daemons, and the database they share."""

    folder: Path
    server: PrivateServer
    script: Path
    dsn: str
    lease: int
    procs: dict[str, Proc] = field(default_factory=dict)
    started: int = 0
    clocks: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per node, extra environment (a skewed clock)."""

    @property
    def out(self) -> Path:
        return self.folder / "started.txt"

    def config(self, name: str) -> Path:
        return self.folder / f"node-{name}.yaml"

    def write(
        self, jobs: Sequence[JobSpec], names: Iterable[str] = NAMES, *, age_s: float = 0
    ) -> None:
        """Each node's crontab on ``jobs``; modified ``age_s`` ago (a stale file: the
        cluster's definitions are the newest file's, so an older one never replaces them).
        """
        for name in names:
            tmp = self.config(name).with_suffix(".tmp")
            tmp.write_text(crontab(name, jobs, lease=self.lease))
            if age_s:
                then = time.time() - age_s
                os.utime(tmp, (then, then))
            tmp.replace(self.config(name))  # a rename: the watcher never sees half a file

    def env(self, name: str) -> dict[str, str]:
        drop = ("CRONPLUS_", "LD_", "FAKETIME", "NO_FAKE_STAT")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env.pop("NOTIFY_SOCKET", None)
        return env | {
            "XDG_STATE_HOME": str(self.folder / f"state-{name}"),
            "TZ": "UTC",
            "NODE": name,
            "CRONPLUS_FAULTS_DSN": self.dsn,
        }

    def cli(self, name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.script), "-c", str(self.config(name)), *args],
            capture_output=True,
            text=True,
            env=self.env(name),
            cwd=self.folder,
            timeout=timeout,
        )

    def migrate(self) -> None:
        done = self.cli(NAMES[0], "db", "migrate")
        if done.returncode != 0:
            raise AssertionError(f"db migrate exited {done.returncode}: {done.stderr}")

    def start(self, *names: str, timeout: float = 30) -> datetime:
        """Start these nodes (all by default); when the last of them had joined."""
        names = names or NAMES
        for name in names:
            self.started += 1
            log = self.folder / f"daemon-{name}-{self.started}.log"
            env = self.env(name) | self.clocks.get(name, {})
            self.procs[name] = Proc(self.script, self.config(name), env, log)
        for name in names:
            self.procs[name].wait_event("cluster_joined", timeout)
        return now()

    def pause(self, *names: str) -> None:
        for name in names:
            self.procs[name].signal(signal.SIGSTOP)

    def resume(self, *names: str) -> None:
        for name in names:
            self.procs[name].signal(signal.SIGCONT)

    def kill(self, name: str) -> None:
        self.procs[name].kill()

    def stop(self, *names: str) -> None:
        """SIGTERM to each node at once, then wait for every one to exit."""
        names = names or tuple(self.procs)
        for name in names:
            self.procs[name].signal(signal.SIGTERM)
        for name in names:
            code = self.procs[name].wait()
            if code != 0:
                raise AssertionError(f"node {name} exited {code}:\n{self.procs[name].tail()}")

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()

    def events(self, name: str) -> list[dict[str, object]]:
        return [e for p in self.procs.values() for e in p.events() if e.get("event") == name]

    def logs(self, node: str) -> list[dict[str, object]]:
        """Every event of every incarnation of ``node``, in order."""
        out: list[dict[str, object]] = []
        for path in sorted(self.folder.glob(f"daemon-{node}-*.log"), key=_incarnation):
            for line in path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    out.append(json.loads(line))
        return out

    def starts(self) -> list[Start]:
        rows = []
        for line in self.out.read_text().splitlines() if self.out.exists() else []:
            run_id, node, attempt, at, *inherited = line.split()
            job, _, slot = run_id.partition("@")
            rows.append(
                Start(
                    job=job,
                    slot=datetime.fromisoformat(slot),
                    node=node,
                    attempt=int(attempt),
                    at=datetime.fromtimestamp(float(at), UTC),
                    inherited=tuple(inherited),
                )
            )
        return rows

    def query(self, sql: str) -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(self.dsn, connect_timeout=10) as conn:
            return list(conn.execute(sql).fetchall())


def _incarnation(path: Path) -> int:
    return int(path.stem.rsplit("-", 1)[1])


@contextlib.contextmanager
def lab(
    folder: Path, server: PrivateServer, script: Path, *, name: str, lease: int
) -> Iterator[Lab]:
    """A lab on a fresh database ``name`` of ``server``; its daemons killed afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    made = Lab(folder=folder, server=server, script=script, dsn=server.database(name), lease=lease)
    try:
        yield made
    finally:
        made.close()


def seconds(delta: timedelta) -> float:
    return delta.total_seconds()

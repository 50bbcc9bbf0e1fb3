"""A PostgreSQL server of a test's own: initdb into a temporary folder, pg_ctl on a free
loopback port, so a test may restart or kill it while every other test keeps its server.

Used by tests/test_cluster_e2e.py (a restart), the fault suite (tests_cluster/) and its
longer bench (bench/bench_cluster_faults.py). No pytest here: a caller asks ``why_not()``
and skips or fails as its suite does.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PrivateServer:
    """A PostgreSQL instance of this test's own, on a free loopback port."""

    data: Path
    port: int
    run_as: list[str]
    bindir: Path

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def ctl(self, *args: str) -> None:
        # -l: the server must not hold our pipes open, or run() waits for it to exit.
        log = str(self.data.parent / "server.log")
        command = [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", log]
        subprocess.run([*command, *args], check=True, timeout=60, stdout=subprocess.DEVNULL)

    def start(self) -> None:
        self.ctl("start", "-w", "-o", self.options())

    def restart(self) -> None:
        self.ctl("restart", "-m", "fast", "-w", "-o", self.options())

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would, and its backends, which a crash leaves
        dying; return when none of them runs and ``start()`` may follow.

        The postmaster is stopped first so it forks no backend between the listing and the
        kill. A killed process stays a zombie until its parent reaps it, and PID 1 here may
        reap orphans late: a zombie holds no shared memory, but PostgreSQL refuses to start
        while the pid its lock files name exists at all, so those files go."""
        pid = self._postmaster()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
        backends = _children(pid)
        for victim in [pid, *backends]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in [pid, *backends]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"postmaster {pid} or a backend outlived SIGKILL by 30 s")
            time.sleep(0.02)
        self._clear_stale_locks()

    def stop(self) -> None:
        """Stop the server at once if it runs (``pg_ctl stop`` would wait a minute on a
        postmaster that died and left its lock file)."""
        pid = self._postmaster()
        if pid is not None and _alive(pid):
            self.ctl("stop", "-m", "immediate")
        self._clear_stale_locks()

    def answers(self, timeout: int = 5) -> bool:
        """Whether the server accepts a connection within ``timeout`` seconds."""
        import psycopg

        try:
            with psycopg.connect(self.dsn, connect_timeout=timeout, autocommit=True) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def ensure_running(self) -> None:
        """Make the server answer again if a caller (a failed scenario) left it down: a
        postmaster that runs but does not answer within 10 s is killed, then it is started.
        """
        if self.answers():
            return
        pid = self._postmaster()
        if pid is not None and _alive(pid):
            deadline = time.monotonic() + 10  # starting up or in crash recovery
            while time.monotonic() < deadline:
                if self.answers(timeout=2):
                    return
                time.sleep(0.2)
            self.kill()
        self._clear_stale_locks()
        self.start()

    def _postmaster(self) -> int | None:
        """The pid ``postmaster.pid`` names, or None without one."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _clear_stale_locks(self) -> None:
        """Remove the data folder's and the socket's lock files whose pid is not a live
        process (gone, or a zombie no one reaped yet)."""
        for lock in [self.data / "postmaster.pid", *self.data.glob(".s.PGSQL.*.lock")]:
            with contextlib.suppress(OSError, ValueError, IndexError):
                if not _alive(int(lock.read_text().split()[0])):
                    lock.unlink()

    def options(self) -> str:
        return f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"

    def database(self, name: str) -> str:
        """A fresh database ``name`` on this server (dropped first if it exists); its DSN."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={name}"


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/pid/stat`` after the command (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` exists other than as a zombie."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _children(parent: int) -> list[int]:
    """The live processes whose parent is ``parent`` (a postmaster's backends: each is a
    session of its own, so only the parent pid finds them, and only while it lives)."""
    out = []
    for entry in glob.glob("/proc/[0-9]*"):
        pid = int(entry.rsplit("/", 1)[1])
        fields = _stat(pid)
        if fields and fields[0] not in ("Z", "X") and int(fields[1]) == parent:
            out.append(pid)
    return out


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _initdb() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb") or ""]
    return found[-1]


def why_not() -> str | None:
    """Why no private server can start here, or None."""
    if not _initdb():
        return "no initdb to start a private server (Debian: apt-get install -y postgresql)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "root needs runuser to start PostgreSQL as the postgres user"
    return None


@contextlib.contextmanager
def running() -> Iterator[PrivateServer]:
    """A fresh server, started; stopped and removed afterwards."""
    root = os.geteuid() == 0
    folder = Path(tempfile.mkdtemp(prefix="cronplus-pg-"))
    if root:  # PostgreSQL refuses to run as root
        shutil.chown(folder, "postgres", "postgres")
    server = PrivateServer(
        data=folder / "data",
        port=free_port(),
        run_as=["runuser", "-u", "postgres", "--"] if root else [],
        bindir=Path(_initdb()).parent,
    )
    init = [*server.run_as, str(server.bindir / "initdb"), "-D", str(server.data)]
    try:
        subprocess.run([*init, "-A", "trust", "-U", "postgres", "--no-sync"], check=True,
                       capture_output=True, timeout=120)  # fmt: skip
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)

"""Shared helpers: run the real ``cronplus`` command and a real daemon process.

Both run the console script of the installed wheel (``installed.py``), as an operator does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import installed
from attacker import arena, attacker

__all__ = ["arena", "attacker"]  # fixtures of attacker.py, for every test module
import pytest


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment a test's cronplus runs with: its own state folder, a fixed host zone."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CRONPLUS_", "NOTIFY_SOCKET", "WATCHDOG_"))
    }
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    env["TZ"] = "UTC"
    return env


class Cronplus:
    """Runs the installed ``cronplus`` against one crontab in a temporary folder."""

    def __init__(self, tmp_path: Path, script: Callable[[], Path] = installed.script) -> None:
        self.dir = tmp_path
        self.config = tmp_path / "crontab.yaml"
        self.env = clean_env(tmp_path)
        self.script = script
        """Which installation's ``cronplus``: ``installed.targets_script`` has every extra."""

    def write(self, text: str) -> Path:
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(textwrap.dedent(text))
        tmp.replace(self.config)
        return self.config

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.script()), "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.dir,
            timeout=timeout,
        )

    def json(self, *args: str) -> object:
        done = self.run(*args, "--json")
        assert done.returncode in (0, 1), done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def cronplus(tmp_path: Path) -> Cronplus:
    return Cronplus(tmp_path)


class Daemon:
    """A real ``cronplus daemon`` process; its stderr goes to a file we can wait on."""

    def __init__(self, cp: Cronplus, *extra: str) -> None:
        self.log_path = cp.dir / f"daemon-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                str(cp.script()),
                "-c",
                str(cp.config),
                "--log-format",
                "json",
                "daemon",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=cp.env,
            cwd=cp.dir,
        )

    def events(self) -> list[dict[str, object]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"event": "raw", "message": line})
        return out

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None and not predicate():
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.text()}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting; daemon log:\n{self.text()}")

    def wait_event(self, name: str, count: int = 1, timeout: float = 15.0) -> None:
        self.wait_for(lambda: self.count(name) >= count, timeout)

    def count(self, name: str) -> int:
        return sum(1 for event in self.events() if event.get("event") == name)

    def text(self) -> str:
        return self.log_path.read_text()

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._log.close()


@pytest.fixture
def daemons(cronplus: Cronplus) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(*extra: str) -> Daemon:
        daemon = Daemon(cronplus, *extra)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


# --- PostgreSQL (cluster mode) -----------------------------------------------------------

POSTGRES_HOW = (
    "start PostgreSQL on 127.0.0.1:5432 with a database `test` that user postgres may use"
    " (trust auth), or set CRONPLUS_TEST_DSN to a server where it may create databases"
)


def postgres_admin_dsn() -> str:
    return os.environ.get("CRONPLUS_TEST_DSN") or "postgresql://postgres@127.0.0.1:5432/test"


def postgres_missing(why: str) -> None:
    """Skip, or fail where PostgreSQL is required (CI sets CRONPLUS_REQUIRE_POSTGRES=1)."""
    message = f"PostgreSQL is not reachable ({why}); to run these tests, {POSTGRES_HOW}"
    if os.environ.get("CRONPLUS_REQUIRE_POSTGRES") == "1":
        pytest.fail(message + " [CRONPLUS_REQUIRE_POSTGRES=1 makes this a failure]")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of its own for this test session (one per xdist worker), dropped after."""
    import secrets

    import psycopg
    from psycopg import conninfo

    admin = postgres_admin_dsn()
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=3)
    except psycopg.Error as error:
        postgres_missing(" ".join(str(error).split()))
    name = f"cronplus_test_{os.getpid()}_{secrets.token_hex(4)}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield conninfo.make_conninfo(admin, dbname=name)
    with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_dsn(postgres_database: str) -> str:
    """A DSN whose search_path is a fresh, empty schema of this test's own."""
    import secrets

    import psycopg
    from psycopg import conninfo

    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_database, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return conninfo.make_conninfo(postgres_database, options=f"-c search_path={schema}")

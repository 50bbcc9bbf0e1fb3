"""The control socket in-process: its protocol, its mode, long paths, the status text, and
its bounds (a cap on connections, a deadline and a size for a request) played against it."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sockets import closed_by_server, wait_until

from cronplus.observe.control import (
    MAX_REQUEST,
    ControlBounds,
    ControlHandler,
    ControlServer,
    NoDaemon,
    ask,
    format_status,
    socket_path,
)
from cronplus.observe.logs import EventLog


class Answers:
    """A fake daemon: fixed status, runs that echo the job's name."""

    def status(self) -> dict[str, Any]:
        return {"pid": 1}

    def reload(self) -> dict[str, Any]:
        return {"ok": True}

    def jobs(self) -> dict[str, Any]:
        return {"jobs": []}

    async def run_job(self, name: str) -> dict[str, Any]:
        return {"job": name, "outcome": "succeeded"}


def serving(
    path: Path,
    client: Callable[[], Any],
    *,
    handler: ControlHandler | None = None,
    bounds: ControlBounds | None = None,
    log: EventLog | None = None,
) -> Any:
    """Start a server on ``path``, run the blocking ``client`` in a thread, stop the server."""

    async def scenario() -> Any:
        server = await ControlServer.start(
            path, handler or Answers(), log=log or EventLog(), bounds=bounds
        )
        try:
            return await asyncio.to_thread(client)
        finally:
            await server.close()

    return asyncio.run(scenario())


def raw(path: Path, line: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
        sock.sendall(line)
        return b"".join(iter(lambda: sock.recv(4096), b""))


@pytest.mark.parametrize(
    ("request_line", "answer"),
    [
        (b'{"command": "status"}\n', b'{"pid": 1}\n'),
        (b'{"command": "run", "job": "backup"}\n', b'{"job": "backup", "outcome": "succeeded"}\n'),
        (b'{"command": "reload"}\n', b'{"ok": true}\n'),
        (b"not json\n", b'{"error": "expected one JSON object on one line"}\n'),
        (b'{"command": "reboot"}\n', b"expected"),
        (b'{"command": "run"}\n', b"expected"),
    ],
    ids=["status", "run", "reload", "not-json", "unknown-command", "run-without-a-job"],
)
def test_the_socket_answers_one_json_line_per_request(
    tmp_path: Path, request_line: bytes, answer: bytes
) -> None:
    path = tmp_path / "s.sock"
    got = serving(path, lambda: raw(path, request_line))
    assert answer in got and got.endswith(b"\n")


def test_the_socket_is_0600_and_gone_after_close(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    mode = serving(path, lambda: stat.S_IMODE(path.stat().st_mode))
    assert mode == 0o600
    assert not path.exists()


def test_a_dead_daemons_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))  # bound, never listening: what a kill -9 leaves
    assert serving(path, lambda: ask(path, {"command": "status"}, timeout=5)) == {"pid": 1}


def test_a_path_longer_than_a_socket_address_still_works(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = socket_path(deep / "state.db")
    assert len(str(path)) > 108
    assert serving(path, lambda: ask(path, {"command": "status"}, timeout=5)) == {"pid": 1}


@pytest.mark.parametrize(
    "prepare",
    [lambda path: None, lambda path: path.write_text("")],
    ids=["no-socket-file", "a-plain-file"],
)
def test_asking_with_no_daemon_is_no_daemon(
    tmp_path: Path, prepare: Callable[[Path], object]
) -> None:
    path = tmp_path / "s.sock"
    prepare(path)
    with pytest.raises(NoDaemon, match="no cronplus daemon is running"):
        ask(path, {"command": "status"}, timeout=1)


# --- bounds ------------------------------------------------------------------------------


class Waiting(Answers):
    """Runs that last until the test ends them."""

    def __init__(self) -> None:
        self.started = 0
        self._release = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run_job(self, name: str) -> dict[str, Any]:
        self._loop = asyncio.get_running_loop()
        self.started += 1
        await self._release.wait()
        return {"job": name, "outcome": "succeeded"}

    def end_runs(self) -> None:
        """From the client's thread: every run waiting now ends."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._release.set)


class Kept(logging.Handler):
    """The events a server logged, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.logger = logging.getLogger(f"cronplus.test.control.{id(self)}")
        self.logger.addHandler(self)
        self.logger.propagate = False

    def emit(self, record: logging.LogRecord) -> None:
        self.names.append(getattr(record, "cronplus_event", "?"))


def test_at_the_cap_the_oldest_idle_connection_makes_room_for_status(tmp_path: Path) -> None:
    path, kept = tmp_path / "s.sock", Kept()

    def client() -> tuple[dict[str, Any], int]:
        idle = []
        for _ in range(10):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(path))
            idle.append(sock)
        try:
            wait_until(lambda: sum(closed_by_server(s) for s in idle) == 6)
            answer = ask(path, {"command": "status"}, timeout=5)
            wait_until(lambda: sum(closed_by_server(s) for s in idle) == 7)
            return answer, sum(not closed_by_server(s) for s in idle)
        finally:
            for sock in idle:
                sock.close()

    bounds = ControlBounds(connections=4)
    answer, still_open = serving(path, client, bounds=bounds, log=EventLog(kept.logger))
    assert answer == {"pid": 1} and still_open == 3
    assert kept.names == ["control_busy"]  # seven closes, one line


def test_a_request_that_never_ends_is_cut_off_at_its_deadline(tmp_path: Path) -> None:
    path, kept = tmp_path / "s.sock", Kept()

    def client() -> list[bytes]:
        got = []
        for _ in range(5):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(10)
                sock.connect(str(path))
                sock.sendall(b'{"command": ')
                got.append(sock.recv(100))
        return got

    bounds = ControlBounds(request_timeout=0.3)
    got = serving(path, client, bounds=bounds, log=EventLog(kept.logger))
    assert got == [b""] * 5
    assert kept.names == ["control_error"]  # five cut off, one line


def test_a_request_past_max_request_is_refused_and_logged_once(tmp_path: Path) -> None:
    path, kept = tmp_path / "s.sock", Kept()
    huge = b'{"command": "' + b"a" * MAX_REQUEST + b'"}\n'
    answers = serving(path, lambda: [raw(path, huge) for _ in range(5)], log=EventLog(kept.logger))
    assert answers == [b""] * 5
    assert kept.names == ["control_error"]


def test_with_every_connection_being_answered_a_new_one_hears_busy(tmp_path: Path) -> None:
    path, kept, handler = tmp_path / "s.sock", Kept(), Waiting()

    def client() -> tuple[str, list[dict[str, Any]]]:
        runs: list[dict[str, Any]] = []
        threads = [
            threading.Thread(
                target=lambda: runs.append(ask(path, {"command": "run", "job": "a"}, timeout=10))
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        wait_until(lambda: handler.started == 2)
        try:
            ask(path, {"command": "status"}, timeout=5)
            refused = "answered"
        except NoDaemon as error:
            refused = str(error)
        handler.end_runs()
        for thread in threads:
            thread.join()
        return refused, runs

    bounds = ControlBounds(connections=2)
    log = EventLog(kept.logger)
    refused, runs = serving(path, client, handler=handler, bounds=bounds, log=log)
    assert "is busy: the daemon is answering 2 requests already; try again" in refused
    assert runs == [{"job": "a", "outcome": "succeeded"}] * 2  # the runs were not cut off
    assert kept.names == ["control_busy"]


def test_a_symlink_planted_at_the_socket_path_is_replaced_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("root's\n")
    target.chmod(0o644)
    path = tmp_path / "s.sock"
    path.symlink_to(target)
    old = os.umask(0)  # the mode must not depend on the umask the daemon was given
    try:
        mode = serving(path, lambda: os.lstat(path).st_mode)
    finally:
        os.umask(old)
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 and target.read_text() == "root's\n"


STATUS: dict[str, Any] = {
    "pid": 4242,
    "version": "0.1.0",
    "uptime_s": 3725.0,
    "config": "/etc/cronplus/crontab.yaml",
    "last_reload": {"at": "2026-03-08T07:00:00Z", "why": "SIGHUP", "ok": False,
                    "error": "a:1:1: x"},
    "heartbeat_age_s": 0.4,
    "queued": 2,
    "running": [
        {"job": "backup", "scheduled_at": "2026-03-08T07:00:00Z", "attempt": 2, "pid": 99,
         "age_s": 75.0},
    ],
    "jobs": [
        {"job": "backup", "next_run": "2026-03-09T07:00:00Z",
         "next_run_local": "2026-03-09T08:00:00+01:00", "running": 1},
    ],
}  # fmt: skip


def test_the_status_text_names_everything_the_json_holds() -> None:
    assert format_status(STATUS).splitlines() == [
        "cronplus 0.1.0, pid 4242, up 1h02m",
        "config: /etc/cronplus/crontab.yaml",
        "last load: 2026-03-08T07:00:00Z (SIGHUP): REJECTED, the previous jobs run on",
        "  a:1:1: x",
        "loop: last beat 0.4s ago; queue: 2 waiting",
        "",
        "JOB     NEXT (UTC)            NEXT (LOCAL)               RUNNING",
        "backup  2026-03-09T07:00:00Z  2026-03-09T08:00:00+01:00  1",
        "",
        "RUNNING  SLOT                  ATTEMPT  PID  FOR",
        "backup   2026-03-08T07:00:00Z  2        99   1m15s",
    ]

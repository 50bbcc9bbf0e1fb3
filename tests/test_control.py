"""The control socket in-process: its protocol, its mode, long paths, and the status text."""

from __future__ import annotations

import asyncio
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cronplus.control import ControlServer, NoDaemon, ask, format_status, socket_path
from cronplus.logs import EventLog


class Answers:
    """A fake daemon: fixed status, runs that echo the job's name."""

    def status(self) -> dict[str, Any]:
        return {"pid": 1}

    def reload(self) -> dict[str, Any]:
        return {"ok": True}

    async def run_job(self, name: str) -> dict[str, Any]:
        return {"job": name, "outcome": "succeeded"}


def serving(path: Path, client: Callable[[], Any]) -> Any:
    """Start a server on ``path``, run the blocking ``client`` in a thread, stop the server."""

    async def scenario() -> Any:
        server = await ControlServer.start(path, Answers(), log=EventLog())
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

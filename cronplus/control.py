"""The control socket: ``cronplus status`` and ``run --via-daemon`` talking to the daemon.

A unix socket beside the state database (``<state>.sock``, mode 0600: only the daemon's
user may ask). One request per connection, one JSON object per line each way::

    {"command": "status"}               -> the daemon's status (docs/observability.md)
    {"command": "reload"}               -> {"ok", "config", "rejected"} once the file is
                                           reloaded, or rejected (its errors)
    {"command": "run", "job": "NAME"}   -> the run's summary, once it has ended
    anything else                       -> {"error": "..."}

The daemon holds the state's lock while it runs, so a socket file found at start-up is a
dead daemon's and is replaced. A path longer than a socket address holds (108 bytes on
Linux) is reached through ``/proc/self/fd`` of its folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from cronplus.logs import EventLog
from cronplus.model import CronplusError

MAX_REQUEST = 64 * 1024
_SUN_PATH_MAX = 107  # bytes in sockaddr_un.sun_path on Linux, less the final NUL


class NoDaemon(CronplusError):
    """No daemon answers on the control socket."""


def socket_path(state: Path) -> Path:
    """Where the daemon for the state database ``state`` listens."""
    return state.with_name(state.name + ".sock")


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """An address for ``bind``/``connect`` that fits in ``sun_path``."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield str(path)
        return
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


class ControlHandler(Protocol):
    """What the daemon answers."""

    def status(self) -> dict[str, Any]: ...

    def reload(self) -> dict[str, Any]: ...

    async def run_job(self, name: str) -> dict[str, Any]: ...


class ControlServer:
    """Listens on the control socket and hands each request to a ``ControlHandler``."""

    def __init__(self, path: Path, server: asyncio.AbstractServer, log: EventLog) -> None:
        self.path, self._server, self._log = path, server, log

    @classmethod
    async def start(cls, path: Path, handler: ControlHandler, *, log: EventLog) -> ControlServer:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            with _address(path) as address:
                sock.bind(address)
            os.chmod(path, 0o600)  # before listen(): nobody can connect in between
            server = await asyncio.start_unix_server(
                lambda r, w: _serve(r, w, handler, log), sock=sock, limit=MAX_REQUEST
            )
        except OSError as error:
            sock.close()
            raise CronplusError(
                f"cannot listen on the control socket {path}: {error.strerror or error}"
            ) from None
        return cls(path, server, log)

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


async def _serve(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handler: ControlHandler,
    events: EventLog,
) -> None:
    try:
        answer = await _answer(await reader.readline(), handler)
        writer.write(json.dumps(answer).encode() + b"\n")
        await writer.drain()
    except (ConnectionError, ValueError) as error:  # ValueError: a line past MAX_REQUEST
        events.warning("control_error", f"control socket request failed: {error}")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _answer(line: bytes, handler: ControlHandler) -> dict[str, Any]:
    try:
        request = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"error": "expected one JSON object on one line"}
    command = request.get("command") if isinstance(request, dict) else None
    if command == "status":
        return handler.status()
    if command == "reload":
        return handler.reload()
    if command == "run" and isinstance(request.get("job"), str):
        return await handler.run_job(request["job"])
    return {
        "error": 'expected {"command": "status"}, {"command": "reload"}'
        ' or {"command": "run", "job": NAME}'
    }


def ask(path: Path, request: dict[str, Any], *, timeout: float | None) -> dict[str, Any]:
    """Send one request to the daemon and return its answer (``NoDaemon`` if none runs)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            with _address(path) as address:
                sock.connect(address)
        except (FileNotFoundError, ConnectionRefusedError):
            raise NoDaemon(f"no cronplus daemon is running (nothing listens on {path})") from None
        except PermissionError:
            raise NoDaemon(f"not allowed to talk to the daemon on {path} (mode 0600)") from None
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b"".join(iter(lambda: sock.recv(65536), b""))
        except TimeoutError:
            raise NoDaemon(f"the daemon on {path} did not answer within {timeout:g}s") from None
    try:
        answer = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        answer = None
    if not isinstance(answer, dict):
        got = "nothing" if not data else "something that is not a JSON object"
        raise NoDaemon(f"the daemon on {path} answered {got}")
    return answer


# --- showing the answers ------------------------------------------------------------------


def format_status(status: dict[str, Any]) -> str:
    """``cronplus status`` without ``--json``: a few lines and two tables."""
    reload = status["last_reload"]
    verdict = "ok" if reload["ok"] else "REJECTED, the previous jobs run on"
    beat = status["heartbeat_age_s"]
    lines = [
        f"cronplus {status['version']}, pid {status['pid']}, up {_age(status['uptime_s'])}",
        f"config: {status['config']}",
        f"last load: {reload['at']} ({reload['why']}): {verdict}",
        f"loop: last beat {'-' if beat is None else _age(beat) + ' ago'}; "
        f"queue: {status['queued']} waiting",
        "",
    ]
    if reload["error"]:
        lines[3:3] = [f"  {line}" for line in str(reload["error"]).splitlines()]
    jobs = [
        [job["job"], job["next_run"] or "-", job["next_run_local"] or "-", str(job["running"])]
        for job in status["jobs"]
    ]
    lines.append(_table(["JOB", "NEXT (UTC)", "NEXT (LOCAL)", "RUNNING"], jobs))
    running = [
        [run["job"], run["scheduled_at"], str(run["attempt"]), str(run["pid"]), _age(run["age_s"])]
        for run in status["running"]
    ]
    if running:
        lines += ["", _table(["RUNNING", "SLOT", "ATTEMPT", "PID", "FOR"], running)]
    return "\n".join(lines)


def _age(seconds: float) -> str:
    """``3.2s``, ``4m05s``, ``2h03m``, ``3d04h``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    for unit, size, small, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if whole >= size:
            return f"{whole // size}{unit}{(whole % size) // small_size:02d}{small}"
    return f"{whole // 60}m{whole % 60:02d}s"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=False)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    )

"""The control socket: ``cronplus status`` and ``run --via-daemon`` talking to the daemon.

A unix socket beside the state database (``<state>.sock``, mode 0600: only the daemon's
user may ask). One request per connection, one JSON object per line each way::

    {"command": "status"}               -> the daemon's status (docs/observability.md)
    {"command": "reload"}               -> {"ok", "config", "rejected"} once the file is
                                           reloaded, or rejected (its errors)
    {"command": "run", "job": "NAME"}   -> the run's summary, once it has ended
    {"command": "jobs"}                 -> {"config", "state", "jobs"}: the definitions the
                                           daemon runs (``list`` on a rejected file)
    anything else                       -> {"error": "..."}

The daemon holds the state's lock while it runs, so a socket file found at start-up is a
dead daemon's and is replaced. The file is 0600 from the instant it exists and its mode is
never set by path (a chmod would follow a symlink swapped in meanwhile). A path longer than
a socket address holds (108 bytes on Linux) is reached through ``/proc/self/fd`` of its
folder.

What one client may cost is bounded (``ControlBounds``): at the cap a new connection
closes the oldest one still sending its request, or is told the daemon is busy when every
open one is being answered; a request must arrive within a deadline and fit
``MAX_REQUEST``; refusals are logged once a minute per kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import socket
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cronplus.core.model import CronplusError
from cronplus.observe.logs import EventLog, Throttle

MAX_REQUEST = 64 * 1024
"""Bytes of one request line; a longer one is refused (``control_error``)."""
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


@dataclass(frozen=True, kw_only=True)
class ControlBounds:
    """What one client may cost the daemon (docs/observability.md, "Bounds")."""

    connections: int = 32
    """Open at once, ``run --via-daemon`` waits included: the descriptors the socket may
    hold, whatever its clients do."""
    request_timeout: float = 5.0
    """Seconds from the connection to the request's newline."""
    answer_timeout: float = 10.0
    """Seconds for the client to take the answer."""


def _backlog(bounds: ControlBounds) -> int:
    """asyncio accepts up to this many at each turn of the loop, and a connection reaches
    the cap's count (and a request is read) three or four turns after its accept. Well
    under the cap, a flood's newer connections cannot push out a client that asked at once
    before it is heard, and those on their way in stay few."""
    return max(1, bounds.connections // 8)


def _bind_private(sock: socket.socket, address: str) -> None:
    """Bind ``sock`` so that its file is 0600 from the instant it exists."""
    if sys.platform == "linux":
        os.fchmod(sock.fileno(), 0o600)  # Linux gives the file bind() makes the socket's mode
        sock.bind(address)
        return
    old = os.umask(0o177)  # elsewhere only the umask does it; it is the process's, so briefly
    try:
        sock.bind(address)
    finally:
        os.umask(old)


class Admission(enum.Enum):
    """What the control socket does with a new connection."""

    ADMITTED = "admitted"
    """Below the cap."""
    MADE_ROOM = "made_room"
    """At the cap: the oldest connection still sending its request was closed for it."""
    REFUSED = "refused"
    """At the cap with every connection being answered: told ``busy`` and closed."""


class _Gate:
    """The connections open now, oldest first, each marked while it still sends its
    request: only those give way at the cap, never one whose run is being awaited."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._open: dict[asyncio.StreamWriter, bool] = {}  # -> still reading

    def enter(self, writer: asyncio.StreamWriter) -> Admission:
        if len(self._open) < self._cap:
            self._open[writer] = True
            return Admission.ADMITTED
        oldest = next((w for w, reading in self._open.items() if reading), None)
        if oldest is None:
            return Admission.REFUSED
        del self._open[oldest]
        oldest.transport.abort()  # its readline sees the end, and it goes quietly
        self._open[writer] = True
        return Admission.MADE_ROOM

    def read(self, writer: asyncio.StreamWriter) -> None:
        if writer in self._open:
            self._open[writer] = False

    def leave(self, writer: asyncio.StreamWriter) -> None:
        self._open.pop(writer, None)


class ControlHandler(Protocol):
    """What the daemon answers."""

    def status(self) -> dict[str, Any]: ...

    def reload(self) -> dict[str, Any]: ...

    def jobs(self) -> dict[str, Any]: ...

    async def run_job(self, name: str) -> dict[str, Any]: ...


class ControlServer:
    """Listens on the control socket and hands each request to a ``ControlHandler``."""

    def __init__(self, path: Path, server: asyncio.AbstractServer, log: EventLog) -> None:
        self.path, self._server, self._log = path, server, log

    @classmethod
    async def start(
        cls,
        path: Path,
        handler: ControlHandler,
        *,
        log: EventLog,
        bounds: ControlBounds | None = None,
    ) -> ControlServer:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        peer = _Peer(handler, bounds or ControlBounds(), Throttle(log))
        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a symlink planted here goes, its target untouched
            with _address(path) as address:
                _bind_private(sock, address)
            server = await asyncio.start_unix_server(
                peer.serve, sock=sock, limit=MAX_REQUEST, backlog=_backlog(peer.bounds)
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


class _Peer:
    """The daemon's side of each connection, within ``bounds``."""

    def __init__(self, handler: ControlHandler, bounds: ControlBounds, log: Throttle) -> None:
        self.handler, self.bounds, self._log = handler, bounds, log
        self._gate = _Gate(bounds.connections)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        admission = self._gate.enter(writer)
        if admission is Admission.REFUSED:
            self._refuse(writer)
            return
        if admission is Admission.MADE_ROOM:
            cap = self.bounds.connections
            self._warn(
                "control_busy", f"at its cap of {cap} connections: closed the oldest", "room"
            )
        try:
            await self._exchange(reader, writer)
        except TimeoutError:
            self._warn(
                "control_error", "no whole request, or its answer not taken, in time", "late"
            )
        except (ConnectionError, ValueError) as error:  # ValueError: a line past MAX_REQUEST
            self._warn("control_error", f"request failed: {error}", type(error).__name__)
        finally:
            self._gate.leave(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request, one answer, each within its deadline."""
        async with asyncio.timeout(self.bounds.request_timeout):
            line = await reader.readline()
        self._gate.read(writer)
        if not line.endswith(b"\n"):
            return  # the client hung up, or made room for a newer one
        answer = await _answer(line, self.handler)
        async with asyncio.timeout(self.bounds.answer_timeout):
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()

    def _refuse(self, writer: asyncio.StreamWriter) -> None:
        """Every open connection is being answered: say so, and close at once."""
        cap = self.bounds.connections
        busy = {"error": f"the daemon is answering {cap} requests already", "busy": True}
        writer.write(json.dumps(busy).encode() + b"\n")  # a fresh socket's buffer takes it
        writer.close()
        self._warn(
            "control_busy", f"at its cap of {cap} connections, all answering: refused", "full"
        )

    def _warn(self, event: str, message: str, kind: str) -> None:
        """Logged once a minute per ``event`` and ``kind``, the next line counting the rest."""
        now = asyncio.get_running_loop().time()  # asyncio's monotonic clock
        self._log.emit(logging.WARNING, event, f"control socket: {message}", now=now, key=kind)


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
    if command == "jobs":
        return handler.jobs()
    if command == "run" and isinstance(request.get("job"), str):
        return await handler.run_job(request["job"])
    return {
        "error": 'expected {"command": "status"}, {"command": "reload"}, {"command": "jobs"}'
        ' or {"command": "run", "job": NAME}'
    }


def ask(path: Path, request: dict[str, Any], *, timeout: float | None) -> dict[str, Any]:
    """Send one request to the daemon and return its answer (``NoDaemon`` if none runs)."""
    late = f"the daemon on {path} did not answer within {timeout or 0:g}s"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            _connect(sock, path, timeout)
        except (FileNotFoundError, ConnectionRefusedError):
            raise NoDaemon(f"no cronplus daemon is running (nothing listens on {path})") from None
        except PermissionError:
            raise NoDaemon(f"not allowed to talk to the daemon on {path} (mode 0600)") from None
        except BlockingIOError:  # its backlog stayed full for the whole timeout
            raise NoDaemon(late) from None
        try:
            # A busy daemon writes its answer and closes before reading: the send may then
            # fail (EPIPE), and the answer is still there to read.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(json.dumps(request).encode() + b"\n")
            data = _read_all(sock)
        except TimeoutError:
            raise NoDaemon(late) from None
    try:
        answer = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        answer = None
    if not isinstance(answer, dict):
        got = "nothing" if not data else "something that is not a JSON object"
        raise NoDaemon(f"the daemon on {path} answered {got}")
    if answer.get("busy") is True:
        raise NoDaemon(f"the daemon on {path} is busy: {answer.get('error')}; try again")
    return answer


def _read_all(sock: socket.socket) -> bytes:
    """What the daemon sent before it closed. A reset ends it too: a daemon that refuses
    (busy) closes without reading the request, and a unix socket closed on unread bytes
    resets its peer once the answer is read; or it closed this one for a newer client."""
    chunks = []
    with contextlib.suppress(ConnectionError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _connect(sock: socket.socket, path: Path, timeout: float | None) -> None:
    """Connect, waiting up to ``timeout`` for room in the daemon's backlog: a socket with
    a timeout is non-blocking inside, and a full backlog fails its connect at once."""
    if timeout is not None:
        whole = int(timeout)
        wait = struct.pack("ll", whole, int((timeout - whole) * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, wait)  # a blocking connect's
    with _address(path) as address:
        sock.connect(address)
    sock.settimeout(timeout)


# --- showing the answers ------------------------------------------------------------------


def format_status(status: dict[str, Any]) -> str:
    """``cronplus status`` without ``--json``: a few lines and two tables."""
    reload = status["last_reload"]
    verdict = "ok" if reload["ok"] else "REJECTED, the previous jobs run on"
    beat = status["heartbeat_age_s"]
    lines = [
        f"cronplus {status['version']}, pid {status['pid']}, up {_age(status['uptime_s'])}",
        f"config: {status['config']}",
        *([f"state: {status['state']}"] if "state" in status else []),
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

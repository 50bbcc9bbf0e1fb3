"""A small bounded HTTP/1 listener for scrapers: one thread, one selector, ``HttpBounds``'s caps.

Any local user can connect to it, so what a client may cost is bounded (``HttpBounds``:
connections, the time to send a request and to take the answer, the head's size), and
what it did wrong is logged once a minute per kind (``metrics_busy``,
``metrics_bad_request``, ``metrics_accept_failed``: docs/observability.md). It speaks just
enough HTTP/1 for a scraper: ``GET``/``HEAD``, no body, one request per connection.

It knows nothing of Prometheus: what a path is answered with comes from the ``Answer`` it
is given (``metrics.py`` hands it ``/metrics`` and ``/healthz``). Its events and messages
still say "metrics", the one port it serves, as docs/observability.md names them. It
imports the standard library, ``clock`` and ``logs`` only.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from cronplus.clock import SystemClock
from cronplus.observe.logs import EventLog, Throttle

PLAIN_TEXT = "text/plain; charset=utf-8"

Answer = Callable[[str], tuple[int, bytes, str]]
"""The status, body and content type for a ``GET`` of a request target."""


@dataclass(frozen=True, kw_only=True)
class HttpBounds:
    """What one client may cost the listener (docs/observability.md, "Bounds")."""

    connections: int = 64
    """Open at once. The listener's descriptors are these plus three, whatever a client
    does, so a flood of them cannot take the ones job starts need."""
    request_timeout: float = 5.0
    """Seconds from the connection to the request's last header: a deadline for the whole
    head, not per read, so a byte every few seconds does not hold it."""
    answer_timeout: float = 10.0
    """Seconds for the answer to be taken by a client that reads it slowly."""
    max_head: int = 8 * 1024
    """Bytes of request line and headers; requests carry no body."""
    accepts_per_second: float = 200.0
    """New connections taken; past it the rest wait in the kernel's backlog (and, once
    that is full, their SYNs are dropped and retried by the client), so closing and
    reopening connections in a loop costs the daemon a bounded share of a CPU."""
    accept_pause: float = 1.0
    """Seconds without accepting after the process ran out of descriptors, instead of
    retrying a listening socket that stays readable in a busy loop."""


class _Refused(Exception):
    """A request answered with ``status`` and closed at once."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status, self.why = status, why


def parse_head(head: bytes) -> tuple[str, str]:
    """The method and target of a request head (line and headers, without the blank
    line); ``_Refused`` for what the listener does not serve."""
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    parts = lines[0].decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _Refused(400, "not an HTTP/1 request line")
    method, target, _ = parts
    if method not in ("GET", "HEAD"):
        raise _Refused(405, f"method {method[:16]!r} (only GET and HEAD are served)")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            raise _Refused(413, "a request body (none is accepted)")
    return method, target


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def response(status: int, body: bytes, content_type: str, *, with_body: bool = True) -> bytes:
    """A whole HTTP/1.1 answer; the connection closes after it."""
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        + ("Allow: GET, HEAD\r\n" if status == 405 else "")
        + "Connection: close\r\n\r\n"
    )
    return head.encode() + (body if with_body else b"")


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    deadline: float
    """When it is closed, answered or not (monotonic)."""
    head: bytearray = field(default_factory=bytearray)
    out: memoryview | None = None
    """The answer still to send; None while the request is being read."""


class Listener:
    """One thread, one selector, at most ``bounds.connections`` clients: a thread per
    connection let 1,000 idle ones hold 1,000 threads and every descriptor of the daemon.

    At the cap a new connection closes the oldest one (with a reset: no answer) and takes
    its place, so a client that asks at once, as a scraper does, gets its answer while
    someone holds idle connections open.
    """

    def __init__(
        self, sock: socket.socket, answer: Answer, log: EventLog, bounds: HttpBounds
    ) -> None:
        self._sock, self._answer = sock, answer
        self._bounds, self._log = bounds, Throttle(log)
        # Deadlines are the sockets' and run on real time, whatever clock the answers are
        # judged by (a test's FakeClock must not stall the accept rate or the timeouts).
        self._clock = SystemClock()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._open: dict[socket.socket, _Connection] = {}  # oldest first
        self._resume_at: float | None = None
        """When accepting resumes, after a pause (out of descriptors, or of accepts)."""
        self._burst = max(1, bounds.connections // 2)
        self._tokens, self._filled = float(self._burst), self._clock.monotonic()
        """The accepts left in the bucket (``accepts_per_second``), and when it was filled."""
        self._stopping = False
        for end in (sock, self._wake_r, self._wake_w):
            end.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ, self._accept)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._stop)

    def serve(self) -> None:
        try:
            while not self._stopping:
                for key, _ in self._selector.select(self._timeout(self._clock.monotonic())):
                    key.data()
                self._expire(self._clock.monotonic())
        except Exception as error:  # a bug here must not vanish with the thread
            self._log.emit(
                logging.ERROR,
                "internal_error",
                f"the metrics listener stopped: {error!r}",
                now=self._clock.monotonic(),
                where="thread cronplus-metrics",
            )
        finally:
            self._close_all()

    def wake(self) -> None:
        """Ends ``serve`` (from another thread)."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # --- the selector's callbacks --------------------------------------------------------

    def _stop(self) -> None:
        self._stopping = True

    def _accept(self) -> None:
        now = self._clock.monotonic()
        rate = self._bounds.accepts_per_second
        self._tokens = min(self._burst, self._tokens + (now - self._filled) * rate)
        self._filled = now
        while self._tokens >= 1:
            try:
                sock, _ = self._sock.accept()
            except BlockingIOError:
                return
            except OSError as error:  # EMFILE, ENFILE, ENOBUFS: the host is short of them
                self._pause(now + self._bounds.accept_pause, error)
                return
            self._tokens -= 1
            if len(self._open) >= self._bounds.connections:
                self._make_room()
            self._admit(sock)
        self._pause(now + (1 - self._tokens) / rate, None)

    def _admit(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        now = self._clock.monotonic()
        conn = _Connection(sock=sock, deadline=now + self._bounds.request_timeout)
        self._open[sock] = conn
        self._selector.register(sock, selectors.EVENT_READ, partial(self._ready, conn))
        # A scraper's request is usually there already: answered now, it is never the
        # oldest connection a flood of new ones closes.
        self._ready(conn)

    def _ready(self, conn: _Connection) -> None:
        try:
            if conn.out is None:
                self._read(conn)
            else:
                self._send(conn)
        except BlockingIOError:  # nothing to read yet, or no room to send: wait for it
            return
        except OSError:  # the client went away (reset, broken pipe)
            self._drop(conn)
        except Exception as error:
            self._log.emit(
                logging.ERROR,
                "internal_error",
                f"the metrics listener failed to answer: {error!r}",
                now=self._clock.monotonic(),
                key=type(error).__name__,
                where="thread cronplus-metrics",
            )
            self._drop(conn)

    # --- one connection --------------------------------------------------------------------

    def _read(self, conn: _Connection) -> None:
        data = conn.sock.recv(self._bounds.max_head + 4 - len(conn.head))
        if not data:
            self._drop(conn)
            return
        conn.head += data
        end = _head_end(conn.head)
        if end < 0:
            if len(conn.head) > self._bounds.max_head:
                self._refuse(conn, _Refused(431, f"a head over {self._bounds.max_head} bytes"))
            return
        try:
            method, target = parse_head(bytes(conn.head[:end]))
        except _Refused as refused:
            self._refuse(conn, refused)
            return
        status, body, kind = self._answer(target)
        conn.out = memoryview(response(status, body, kind, with_body=method == "GET"))
        conn.deadline = self._clock.monotonic() + self._bounds.answer_timeout
        self._selector.modify(conn.sock, selectors.EVENT_WRITE, partial(self._ready, conn))
        self._send(conn)

    def _send(self, conn: _Connection) -> None:
        assert conn.out is not None
        conn.out = conn.out[conn.sock.send(conn.out) :]
        if not conn.out:
            self._close(conn)

    def _refuse(self, conn: _Connection, refused: _Refused) -> None:
        """Answer ``refused.status`` with what one send takes, close, and say so (once a
        minute for each kind of refusal)."""
        body = f"{_REASONS[refused.status].lower()}: {refused.why}\n".encode()
        with contextlib.suppress(OSError):
            conn.sock.send(response(refused.status, body, PLAIN_TEXT))
        self._close(conn)
        self._log.emit(
            logging.WARNING,
            "metrics_bad_request",
            f"metrics listener refused a request ({refused.status}): {refused.why}",
            now=self._clock.monotonic(),
            key=str(refused.status),
            status=refused.status,
        )

    def _make_room(self) -> None:
        oldest = next(iter(self._open.values()))
        self._drop(oldest)
        self._log.emit(
            logging.WARNING,
            "metrics_busy",
            f"metrics listener at its cap of {self._bounds.connections} connections: "
            "closed the oldest to let a new one in",
            now=self._clock.monotonic(),
            key="cap",
            connections=self._bounds.connections,
        )

    def _drop(self, conn: _Connection) -> None:
        """Close with a reset: nothing is owed, and the daemon keeps no TIME_WAIT state."""
        with contextlib.suppress(OSError):
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._close(conn)

    def _close(self, conn: _Connection) -> None:
        if self._open.pop(conn.sock, None) is not None:
            self._selector.unregister(conn.sock)
        conn.sock.close()

    # --- time --------------------------------------------------------------------------------

    def _timeout(self, now: float) -> float | None:
        """Seconds until the next deadline; None (no wake-up) when nothing waits on one."""
        deadlines = [conn.deadline for conn in self._open.values()]
        if self._resume_at is not None:
            deadlines.append(self._resume_at)
        return max(min(deadlines) - now, 0.0) if deadlines else None

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._open.values() if c.deadline <= now]:
            if conn.out is None:
                why = f"no whole request within {self._bounds.request_timeout:g}s"
                self._refuse(conn, _Refused(408, why))
            else:
                self._drop(conn)  # it did not take its answer in time
        if self._resume_at is not None and self._resume_at <= now:
            self._resume_at = None
            self._selector.register(self._sock, selectors.EVENT_READ, self._accept)

    def _pause(self, until: float, error: OSError | None) -> None:
        """Stop accepting until ``until``: out of accepts (``error`` None) or descriptors."""
        self._resume_at = until
        self._selector.unregister(self._sock)
        now = self._clock.monotonic()
        if error is None:
            rate = self._bounds.accepts_per_second
            message = f"metrics listener at its rate of {rate:g} new connections a second"
            self._log.emit(logging.WARNING, "metrics_busy", message, now=now, key="rate")
            return
        self._log.emit(
            logging.WARNING,
            "metrics_accept_failed",
            f"metrics listener cannot accept: {error.strerror or error}; "
            f"retrying in {self._bounds.accept_pause:g}s",
            now=now,
            key=str(error.errno),
        )

    def _close_all(self) -> None:
        for conn in list(self._open.values()):
            self._close(conn)
        self._selector.close()
        for end in (self._wake_r, self._wake_w):
            end.close()


def _head_end(head: bytearray) -> int:
    """Where the request's head ends (before its blank line), or -1 while it goes on."""
    for blank in (b"\r\n\r\n", b"\n\n"):
        at = head.find(blank)
        if at >= 0:
            return at
    return -1

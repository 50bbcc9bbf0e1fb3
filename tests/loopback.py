"""Real servers on 127.0.0.1 for the observability tests: HTTP, SMTP and a TLS certificate.

``HttpRecorder`` keeps every request it gets and answers by a mode: ``ok`` (200, with a
``Ping-Body-Limit`` header), ``fail`` (500) or ``hang`` (reads the request, answers nothing
until the test ends); ``statuses`` answers the first requests with those codes instead, in
order; ``tls`` serves HTTPS with that server context. ``SmtpRecorder`` is aiosmtpd with
STARTTLS (or implicit TLS) and a login. ``make_certificate`` makes a self-signed
certificate for 127.0.0.1 with openssl.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        recorder = self.server.recorder
        recorder.add(Request(self.command, self.path, headers, body))
        status = recorder.statuses.pop(0) if recorder.statuses else None
        if status is None and recorder.mode == "hang":
            recorder.release.wait(10)
            return
        self.send_response(status or (200 if recorder.mode == "ok" else 500))
        self.send_header("Content-Length", "2")
        if self.server.recorder.body_limit is not None:
            self.send_header("Ping-Body-Limit", str(self.server.recorder.body_limit))
        self.end_headers()
        self.wfile.write(b"OK")

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

    def log_message(self, format: str, *args: object) -> None:
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    recorder: HttpRecorder


@dataclass
class HttpRecorder:
    """An HTTP server on 127.0.0.1 that keeps what it is sent."""

    mode: str = "ok"
    body_limit: int | None = None
    statuses: list[int] = field(default_factory=list)
    tls: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.recorder = self
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def add(self, request: Request) -> None:
        with self.arrived:
            self.requests.append(request)
            self.arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Request]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 and localhost."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    content: bytes
    login: str | None


class _MailHandler:
    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        login = session.login_data.decode() if isinstance(session.login_data, bytes) else None
        self.mails.append(
            Mail(str(envelope.mail_from), list(envelope.rcpt_tos), bytes(content), login)
        )
        self.arrived.set()
        return "250 OK"


class SmtpRecorder:
    """aiosmtpd on 127.0.0.1: STARTTLS required (or TLS from the start), one user."""

    def __init__(self, cert: Path, key: Path, *, tls: str, password: str) -> None:
        """``tls``: ``starttls`` (required before AUTH), ``implicit``, or ``none`` (plain)."""
        implicit_tls = tls == "implicit"
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.handler = _MailHandler()
        self.port = free_port()
        self.logins: list[tuple[str, bool]] = []

        def authenticate(
            server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            assert isinstance(data, LoginPassword)
            ok = data.password.decode() == password
            self.logins.append((data.login.decode(), ok))
            return AuthResult(success=ok, handled=False)

        choices: dict[str, dict[str, Any]] = {
            "implicit": {"ssl_context": context},
            "starttls": {"tls_context": context, "require_starttls": True},
            "none": {},
        }
        options = choices[tls]
        self.controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=authenticate,
            auth_require_tls=not implicit_tls,  # aiosmtpd counts only STARTTLS as TLS
            server_hostname="localhost",
            **options,
        )
        self.controller.start()

    @property
    def mails(self) -> list[Mail]:
        return self.handler.mails

    def close(self) -> None:
        self.controller.stop()

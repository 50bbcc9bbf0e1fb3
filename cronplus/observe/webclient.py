"""A small HTTP/1.1 POST over asyncio streams, for webhooks and healthchecks pings.

Why not ``urllib`` in a thread: a thread cannot be cancelled, so every server that hangs
would hold one until its socket timeout, and enough of them would starve the loop's
default executor. On asyncio streams the caller's ``asyncio.timeout`` ends the whole
exchange (connect, TLS, request, status line) at once and frees everything.

Only what a notifier needs: one request per connection (``Connection: close``), the status
and the headers of the answer, never its body. Errors never name the URL's path or query,
which often hold a token (a healthchecks UUID, a chat webhook key).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from cronplus import __version__

USER_AGENT = f"cronplus/{__version__}"
MAX_HEADER_LINES = 100


class HttpError(Exception):
    """A request that got no answer, or an answer that is not HTTP; the message is safe to log."""


@dataclass(frozen=True, kw_only=True)
class Response:
    status: int
    headers: Mapping[str, str]
    """Lower-cased names."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True, kw_only=True)
class Target:
    """Where a URL points: what to connect to and what to ask for."""

    tls: bool
    host: str
    port: int
    host_header: str
    path: str
    authorization: str | None


def parse_url(url: str) -> Target:
    """Split an ``http(s)://`` URL; a user and password in it become Basic auth."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError("expected an http:// or https:// URL with a host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise HttpError("the URL's port is not a number from 0 to 65535") from None
    auth = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(
        tls=parts.scheme == "https",
        host=parts.hostname,
        port=port,
        host_header=parts.netloc.rpartition("@")[2],
        path=path,
        authorization=auth,
    )


def _request(target: Target, body: bytes, headers: Mapping[str, str]) -> bytes:
    lines = [
        f"POST {target.path} HTTP/1.1",
        f"Host: {target.host_header}",
        f"User-Agent: {USER_AGENT}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if target.authorization:
        lines.append(f"Authorization: {target.authorization}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def post(
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Response:
    """POST ``body`` and return the answer's status and headers. Put it under
    ``asyncio.timeout``: nothing here waits for less than forever on its own."""
    target = parse_url(url)
    context = (ssl_context or ssl.create_default_context()) if target.tls else None
    try:
        reader, writer = await asyncio.open_connection(
            target.host, target.port, ssl=context, server_hostname=target.host if context else None
        )
    except OSError as error:
        raise HttpError(f"cannot connect to {target.host}:{target.port}: {_why(error)}") from None
    try:
        writer.write(_request(target, body, headers or {}))
        await writer.drain()
        return await _read_head(reader)
    except OSError as error:
        raise HttpError(
            f"connection to {target.host}:{target.port} failed: {_why(error)}"
        ) from None
    except ValueError:  # StreamReader's answer to a line past its 64 KiB limit
        raise HttpError("the answer's head has a line longer than 64 KiB") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _read_head(reader: asyncio.StreamReader) -> Response:
    status_line = await reader.readline()
    fields = status_line.decode("latin-1").split(maxsplit=2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
        got = "nothing" if not status_line else repr(status_line[:40])
        raise HttpError(f"expected an HTTP status line, got {got}")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADER_LINES):
        line = (await reader.readline()).decode("latin-1").strip()
        if not line:
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(status=int(fields[1]), headers=headers)


def _why(error: OSError) -> str:
    return error.strerror or type(error).__name__

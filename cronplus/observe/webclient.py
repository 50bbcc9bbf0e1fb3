"""A small HTTP/1.1 POST over asyncio streams, for webhooks and healthchecks pings.

Why not ``urllib`` in a thread: a thread cannot be cancelled, so every server that hangs
would hold one until its socket timeout, and enough of them would starve the loop's
default executor. On asyncio streams the caller's ``asyncio.timeout`` ends the whole
exchange (connect, proxy ``CONNECT``, TLS, request, status line) at once and frees everything.

Only what a notifier and an ``http:`` target need: one request per connection
(``Connection: close``), the status and the headers of the answer, and at most
``body_limit`` bytes of its body (none for a notifier). Errors never name the URL's path or query,
which often hold a token (a healthchecks UUID, a chat webhook key), nor a proxy's password.

Proxies come from the environment the caller passes (the daemon's own), read as curl and
``urllib`` read them: ``https_proxy``/``HTTPS_PROXY`` for https URLs (a ``CONNECT`` tunnel,
then TLS to the server through it), ``http_proxy``/``HTTP_PROXY`` for http URLs (the
request goes to the proxy with the absolute URL), the lower-case name first, and
``no_proxy``/``NO_PROXY`` for the hosts that bypass them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from urllib.parse import unquote, urlsplit

from cronplus import __version__

USER_AGENT = f"cronplus/{__version__}"
MAX_HEADER_LINES = 100
NO_ENVIRONMENT: Mapping[str, str] = MappingProxyType({})
"""An environment that names no proxy."""


class HttpError(Exception):
    """A request that got no answer, or an answer that is not HTTP; the message is safe to log."""


@dataclass(frozen=True, kw_only=True)
class Response:
    status: int
    headers: Mapping[str, str]
    """Lower-cased names."""
    body: bytes = b""
    """The head of the body, when asked for (``body_limit``)."""

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
    authorization: str | None = field(repr=False)

    @property
    def authority(self) -> str:
        """``host:port``, as ``CONNECT`` and error messages name it (never the path)."""
        return _authority(self.host, self.port)


@dataclass(frozen=True, kw_only=True)
class Proxy:
    """An HTTP proxy from the environment; ``variable`` names where it came from."""

    host: str
    port: int
    authorization: str | None = field(repr=False)
    variable: str

    def __str__(self) -> str:
        return f"proxy {_authority(self.host, self.port)} (from {self.variable})"


def parse_url(url: str) -> Target:
    """Split an ``http(s)://`` URL; a user and password in it become Basic auth."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError("expected an http:// or https:// URL with a host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise HttpError("the URL's port is not a number from 0 to 65535") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(
        tls=parts.scheme == "https",
        host=parts.hostname,
        port=port,
        host_header=parts.netloc.rpartition("@")[2],
        path=path,
        authorization=_basic(parts.username, parts.password),
    )


# --- proxies from the environment --------------------------------------------------------


def proxy_for(target: Target, env: Mapping[str, str]) -> Proxy | None:
    """The proxy ``env`` names for ``target``, or None: no variable for its scheme, an
    empty one, or a ``no_proxy`` entry that matches it."""
    variable = "https_proxy" if target.tls else "http_proxy"
    found = _variable(env, variable)
    no_proxy = _variable(env, "no_proxy")
    if found is None or (no_proxy and bypasses(target.host, target.port, no_proxy[1])):
        return None
    return parse_proxy(*found)


def _variable(env: Mapping[str, str], lower: str) -> tuple[str, str] | None:
    """``(name, value)`` of the lower-case variable, else the upper-case one, when not empty.
    A set but empty lower-case one wins, as in urllib: it turns the proxy off."""
    for name in (lower, lower.upper()):
        if name in env:
            return (name, env[name]) if env[name].strip() else None
    return None


def parse_proxy(variable: str, value: str) -> Proxy:
    """``http://[user:password@]host[:port]``; without a scheme, ``http://`` as in curl.
    The messages name the variable, never its value: it may hold a password."""
    text = value.strip()
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme != "http" or not parts.hostname:
        raise HttpError(
            f"{variable}: expected an http://host:port proxy URL "
            "(https:// and socks proxies are not supported)"
        )
    try:
        port = parts.port or 80
    except ValueError:
        raise HttpError(f"{variable}: the proxy's port is not a number from 0 to 65535") from None
    auth = _basic(parts.username, parts.password)
    return Proxy(host=parts.hostname, port=port, authorization=auth, variable=variable)


def bypasses(host: str, port: int, no_proxy: str) -> bool:
    """Whether a ``no_proxy`` list names ``host``: ``*`` names all; ``example.com`` and
    ``.example.com`` name it and its subdomains; an IP address (or a CIDR block, as in
    curl) names that address; ``:port`` on an entry limits it to that port."""
    host = host.lower().rstrip(".")
    for entry in no_proxy.split(","):
        name, entry_port = _split_port(entry.strip().lower())
        if name == "*":
            return True
        if not name or (entry_port is not None and entry_port != port):
            continue
        if _matches(host, name):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [::1] or [::1]:8080
        inside, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return inside, int(port) if port.isdigit() else None
    name, colon, port = entry.rpartition(":")
    if colon and name.count(":") == 0 and port.isdigit():
        return name, int(port)
    return entry, None  # no port, or a bare IPv6 address


def _matches(host: str, name: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and "/" in name:
        try:
            return address in ipaddress.ip_network(name, strict=False)
        except ValueError:
            return False
    if address is not None:
        with contextlib.suppress(ValueError):
            return address == ipaddress.ip_address(name)
    name = name.lstrip(".").rstrip(".")
    return host == name or host.endswith(f".{name}")


# --- the exchange -----------------------------------------------------------------------


def _request(
    method: str, target: Target, body: bytes, headers: Mapping[str, str], proxy: Proxy | None
) -> bytes:
    # Through a forward proxy the request line carries the absolute URL (RFC 9112 3.2.2).
    where = f"http://{target.host_header}{target.path}" if proxy else target.path
    lines = [
        f"{method} {where} HTTP/1.1",
        f"Host: {target.host_header}",
        f"User-Agent: {USER_AGENT}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if target.authorization:
        lines.append(f"Authorization: {target.authorization}")
    if proxy and proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def post(
    url: str,
    body: bytes,
    *,
    env: Mapping[str, str],
    headers: Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Response:
    """POST ``body`` and return the answer's status and headers, through the proxy ``env``
    names if any. Put it under ``asyncio.timeout``: nothing here waits for less than
    forever on its own."""
    return await request("POST", url, body, env=env, headers=headers, ssl_context=ssl_context)


async def request(
    method: str,
    url: str,
    body: bytes,
    *,
    env: Mapping[str, str],
    headers: Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    body_limit: int = 0,
) -> Response:
    """``post`` with any method, and the first ``body_limit`` bytes of the answer's body."""
    target = parse_url(url)
    proxy = proxy_for(target, env)
    context = (ssl_context or ssl.create_default_context()) if target.tls else None
    where = target.authority if proxy is None else f"{target.authority} via {proxy}"
    forward = proxy if context is None else None  # through a tunnel, the request is plain
    reader, writer = await _open(target, proxy, context)
    try:
        if proxy is not None and context is not None:
            await _tunnel(reader, writer, target, proxy)
            await writer.start_tls(context, server_hostname=target.host)
        writer.write(_request(method, target, body, headers or {}, forward))
        await writer.drain()
        answer = await _read_head(reader)
        if body_limit > 0 and method != "HEAD":
            answer = replace(answer, body=await _read_body(reader, answer, body_limit))
    except OSError as error:
        raise HttpError(f"connection to {where} failed: {_why(error)}") from None
    except ValueError:  # StreamReader's answer to a line past its 64 KiB limit
        raise HttpError(f"the answer of {where} has a head line longer than 64 KiB") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if forward is not None and answer.status == 407:
        raise HttpError(f"the {proxy} asks for a user and password (HTTP 407)")
    return answer


async def _open(
    target: Target, proxy: Proxy | None, context: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        if proxy is not None:
            return await asyncio.open_connection(proxy.host, proxy.port)
        return await asyncio.open_connection(
            target.host, target.port, ssl=context, server_hostname=target.host if context else None
        )
    except OSError as error:
        name = target.authority if proxy is None else str(proxy)
        raise HttpError(f"cannot connect to {name}: {_why(error)}") from None


async def _tunnel(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: Target, proxy: Proxy
) -> None:
    """Ask ``proxy`` for a tunnel to ``target``; only a 2xx opens one."""
    lines = [
        f"CONNECT {target.authority} HTTP/1.1",
        f"Host: {target.authority}",
        f"User-Agent: {USER_AGENT}",
    ]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()
    try:
        answer = await _read_head(reader)
    except HttpError as error:
        raise HttpError(f"the {proxy} answered CONNECT {target.authority}: {error}") from None
    if not answer.ok:
        hint = ", which asks for a user and password" if answer.status == 407 else ""
        raise HttpError(
            f"the {proxy} answered HTTP {answer.status} to CONNECT {target.authority}{hint}"
        )


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


async def _read_body(reader: asyncio.StreamReader, head: Response, limit: int) -> bytes:
    """Up to ``limit`` bytes of the body: by its length, its chunks, or until the close."""
    if head.headers.get("transfer-encoding", "").lower().endswith("chunked"):
        parts: list[bytes] = []
        size = 0
        while size < limit:
            line = await reader.readline()
            length = int(line.split(b";")[0].strip() or b"0", 16)
            if length == 0:
                break
            part = await reader.readexactly(length)
            parts.append(part)
            size += len(part)
            await reader.readline()  # the CRLF after the chunk
        return b"".join(parts)[:limit]
    given = head.headers.get("content-length", "")
    want = min(int(given), limit) if given.isdigit() else limit
    try:
        return await reader.readexactly(want)
    except asyncio.IncompleteReadError as short:  # closed early: what came is the body
        return short.partial


def _basic(username: str | None, password: str | None) -> str | None:
    if username is None:
        return None
    pair = f"{unquote(username)}:{unquote(password or '')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _why(error: OSError) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate verify failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS: {error.reason or error}"
    # asyncio's failed connect carries "Connect call failed (ADDRESS)" as its strerror.
    if error.errno:
        return os.strerror(error.errno)
    return error.strerror or type(error).__name__

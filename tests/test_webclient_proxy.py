"""The webhook client through proxies named in the environment, against real servers on
127.0.0.1: a CONNECT and forward proxy written here on asyncio, and an HTTPS server with a
certificate from ``loopback.make_certificate``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from loopback import free_port, make_certificate

from cronplus.clock import FakeClock
from cronplus.core.model import (
    AlertKind,
    Delivery,
    Job,
    NotifierConfig,
    NotifierKind,
    Outcome,
    Slot,
)
from cronplus.observe import webclient
from cronplus.observe.alerts import Alert
from cronplus.observe.logs import EventLog
from cronplus.observe.notifiers import build_routes
from cronplus.observe.pings import Pinger
from cronplus.run.runner import Runner

SECRET_PATH = "/hooks/T0KEN-path?key=Q-SECRET"
PASSWORD = "pr0xy-s3cret"
FAST = Delivery(timeout=timedelta(seconds=2), retries=0)
T0 = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


@dataclass
class Asked:
    """What one client asked a server or proxy: its request line, headers and body."""

    line: str
    headers: dict[str, str]
    body: bytes = b""


async def read_head(reader: asyncio.StreamReader) -> Asked:
    line = (await reader.readline()).decode("latin-1").strip()
    headers: dict[str, str] = {}
    while (header := (await reader.readline()).decode("latin-1").strip()) != "":
        name, _, value = header.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Asked(line, headers)


async def read_request(reader: asyncio.StreamReader) -> Asked:
    asked = await read_head(reader)
    asked.body = await reader.readexactly(int(asked.headers.get("content-length", "0")))
    return asked


@dataclass
class TestProxy:
    """A CONNECT proxy (it tunnels bytes to the host asked for) and a forward proxy (it
    answers a plain request itself) on 127.0.0.1. ``answer``: the status it gives, 200 to
    tunnel or accept; ``hang`` keeps it silent after the request until the client leaves."""

    __test__ = False
    answer: int = 200
    hang: bool = False
    hung_up: bool = False
    asked: list[Asked] = field(default_factory=list)
    tunnelled: bytearray = field(default_factory=bytearray)
    port: int = 0

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked = await read_head(reader)
        self.asked.append(asked)
        if self.hang:
            await reader.read()  # silent until the client hangs up
            self.hung_up = True
            return
        method, target, _ = asked.line.split(" ", 2)
        if method != "CONNECT" or self.answer != 200:
            await reader.readexactly(int(asked.headers.get("content-length", "0")))
            writer.write(f"HTTP/1.1 {self.answer} Test\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
            return
        host, _, port = target.rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(
                self._pipe(reader, up_writer),
                self._pipe(up_reader, writer),
                return_exceptions=True,
            )
        finally:
            up_writer.close()
            with contextlib.suppress(OSError):
                await up_writer.wait_closed()

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while chunk := await source.read(65536):
            self.tunnelled += chunk
            sink.write(chunk)
            await sink.drain()
        with contextlib.suppress(OSError):
            sink.write_eof()


@dataclass
class TlsServer:
    """An HTTPS server on 127.0.0.1 that answers 200 to every request it keeps."""

    context: ssl.SSLContext
    asked: list[Asked] = field(default_factory=list)
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.asked.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")
        await writer.drain()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


@pytest.fixture
def tls(certificate: tuple[Path, Path]) -> Iterator[TlsServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    yield TlsServer(context)


Scenario = Callable[[], Awaitable[None]]


def run_with(proxy: TestProxy, tls: TlsServer | None, scenario: Scenario) -> None:
    """Start the proxy (and the HTTPS server) in a fresh loop, run ``scenario`` there, then
    let every connection they serve end before the loop does."""
    handlers: set[asyncio.Task[object]] = set()
    Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

    def tracked(handler: Handler) -> Handler:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await handler(reader, writer)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        return serve

    async def main() -> None:
        servers = [await asyncio.start_server(tracked(proxy.serve), "127.0.0.1", 0)]
        proxy.port = servers[0].sockets[0].getsockname()[1]
        if tls is not None:
            served = tracked(tls.serve)
            servers.append(await asyncio.start_server(served, "127.0.0.1", 0, ssl=tls.context))
            tls.port = servers[1].sockets[0].getsockname()[1]
        try:
            async with asyncio.timeout(10):
                await scenario()
        finally:
            for server in servers:
                server.close()
                await server.wait_closed()
            if handlers:
                _, hanging = await asyncio.wait(handlers, timeout=5)
                for task in hanging:
                    task.cancel()
                await asyncio.gather(*hanging, return_exceptions=True)

    asyncio.run(main())


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def assert_safe(message: str) -> None:
    for secret in ("T0KEN", "Q-SECRET", "hooks", PASSWORD, "alice"):
        assert secret not in message


# --- https through a CONNECT tunnel -----------------------------------------------------


@pytest.mark.parametrize(
    "names",
    [("HTTPS_PROXY",), ("https_proxy",), ("https_proxy", "HTTPS_PROXY")],
    ids=["upper-case", "lower-case", "lower-case-wins"],
)
def test_an_https_post_goes_through_a_connect_tunnel_to_the_server(
    names: tuple[str, ...], tls: TlsServer, client_context: ssl.SSLContext
) -> None:
    proxy = TestProxy()

    async def scenario() -> None:
        env = {name: proxy.url() for name in names}
        if len(names) > 1:
            env[names[1]] = f"http://127.0.0.1:{free_port()}"  # nobody listens: must lose
        url = f"https://127.0.0.1:{tls.port}{SECRET_PATH}"
        answer = await webclient.post(url, b"{}", env=env, ssl_context=client_context)
        assert answer.status == 200

    run_with(proxy, tls, scenario)
    assert [asked.line for asked in proxy.asked] == [f"CONNECT 127.0.0.1:{tls.port} HTTP/1.1"]
    assert proxy.asked[0].headers["host"] == f"127.0.0.1:{tls.port}"
    assert "proxy-authorization" not in proxy.asked[0].headers
    (request,) = tls.asked
    assert request.line == f"POST {SECRET_PATH} HTTP/1.1" and request.body == b"{}"
    assert b"T0KEN" not in proxy.tunnelled  # TLS from end to end: the proxy saw no path


def test_the_connect_carries_the_proxy_url_user_and_password_as_basic_auth(
    tls: TlsServer, client_context: ssl.SSLContext
) -> None:
    proxy = TestProxy()

    async def scenario() -> None:
        env = {"HTTPS_PROXY": proxy.url(f"alice:{PASSWORD}%21@")}
        url = f"https://127.0.0.1:{tls.port}/"
        await webclient.post(url, b"", env=env, ssl_context=client_context)

    run_with(proxy, tls, scenario)
    (connect,) = proxy.asked
    assert connect.headers["proxy-authorization"] == basic("alice", f"{PASSWORD}!")
    assert "proxy-authorization" not in tls.asked[0].headers  # for the proxy only


@pytest.mark.parametrize("status", [407, 502], ids=["auth-required", "bad-gateway"])
def test_a_proxy_that_refuses_the_connect_is_an_error_without_path_query_or_password(
    status: int, tls: TlsServer, client_context: ssl.SSLContext
) -> None:
    proxy = TestProxy(answer=status)
    errors: list[str] = []

    async def scenario() -> None:
        env = {"HTTPS_PROXY": proxy.url(f"alice:{PASSWORD}@")}
        url = f"https://127.0.0.1:{tls.port}{SECRET_PATH}"
        with pytest.raises(webclient.HttpError) as caught:
            await webclient.post(url, b"", env=env, ssl_context=client_context)
        errors.append(str(caught.value))

    run_with(proxy, tls, scenario)
    (message,) = errors
    assert f"HTTP {status} to CONNECT 127.0.0.1:{tls.port}" in message
    assert f"proxy 127.0.0.1:{proxy.port} (from HTTPS_PROXY)" in message
    assert_safe(message)
    assert tls.asked == []


def test_the_callers_timeout_bounds_a_proxy_that_never_answers_the_connect(
    tls: TlsServer, client_context: ssl.SSLContext
) -> None:
    proxy = TestProxy(hang=True)

    async def scenario() -> None:
        env = {"HTTPS_PROXY": proxy.url()}
        url = f"https://127.0.0.1:{tls.port}/"
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await webclient.post(url, b"", env=env, ssl_context=client_context)
        assert loop.time() - began < 2

    run_with(proxy, tls, scenario)
    assert len(proxy.asked) == 1 and proxy.hung_up  # the timeout closed the connection too


# --- http through a forward proxy -------------------------------------------------------


@pytest.mark.parametrize("name", ["HTTP_PROXY", "http_proxy"])
def test_an_http_post_goes_to_the_forward_proxy_with_the_absolute_url(name: str) -> None:
    proxy = TestProxy()

    async def scenario() -> None:
        env = {name: proxy.url(f"alice:{PASSWORD}@")}
        # .invalid never resolves: only the proxy can have taken this request.
        url = f"http://hooks.example.invalid:8080{SECRET_PATH}"
        answer = await webclient.post(url, b"{}", env=env)
        assert answer.status == 200

    run_with(proxy, None, scenario)
    (asked,) = proxy.asked
    assert asked.line == f"POST http://hooks.example.invalid:8080{SECRET_PATH} HTTP/1.1"
    assert asked.headers["host"] == "hooks.example.invalid:8080"
    assert asked.headers["proxy-authorization"] == basic("alice", PASSWORD)


def test_a_forward_proxy_asking_for_a_password_is_an_error_without_path_or_password() -> None:
    proxy = TestProxy(answer=407)
    errors: list[str] = []

    async def scenario() -> None:
        env = {"http_proxy": proxy.url(f"alice:{PASSWORD}@")}
        with pytest.raises(webclient.HttpError) as caught:
            await webclient.post(f"http://hooks.example.invalid{SECRET_PATH}", b"", env=env)
        errors.append(str(caught.value))

    run_with(proxy, None, scenario)
    (message,) = errors
    assert "HTTP 407" in message and f"127.0.0.1:{proxy.port} (from http_proxy)" in message
    assert_safe(message)


def test_a_forward_proxy_passing_on_a_failure_is_an_answer_not_an_error() -> None:
    proxy = TestProxy(answer=502)

    async def scenario() -> None:
        env = {"HTTP_PROXY": proxy.url()}
        answer = await webclient.post("http://hooks.example.invalid/", b"", env=env)
        assert answer.status == 502 and not answer.ok  # the server's or the proxy's: unknown

    run_with(proxy, None, scenario)


# --- which proxy, if any -----------------------------------------------------------------


def test_no_proxy_sends_the_post_straight_to_the_server(
    tls: TlsServer, client_context: ssl.SSLContext
) -> None:
    proxy = TestProxy()

    async def scenario() -> None:
        env = {"HTTPS_PROXY": proxy.url(), "NO_PROXY": "db.internal, 127.0.0.1"}
        url = f"https://127.0.0.1:{tls.port}/hook"
        answer = await webclient.post(url, b"", env=env, ssl_context=client_context)
        assert answer.status == 200

    run_with(proxy, tls, scenario)
    assert proxy.asked == [] and len(tls.asked) == 1


@pytest.mark.parametrize(
    ("url", "env", "expected"),
    [
        ("https://a.example/", {}, None),
        ("https://a.example/", {"HTTP_PROXY": "http://p:3128"}, None),
        ("http://a.example/", {"HTTPS_PROXY": "http://p:3128"}, None),
        ("https://a.example/", {"HTTPS_PROXY": "http://p:3128"}, ("p", 3128, "HTTPS_PROXY")),
        ("https://a.example/", {"https_proxy": "p:3128"}, ("p", 3128, "https_proxy")),
        ("http://a.example/", {"http_proxy": "http://p"}, ("p", 80, "http_proxy")),
        ("https://a.example/", {"https_proxy": "", "HTTPS_PROXY": "http://p:1"}, None),
        ("https://a.example/", {"HTTPS_PROXY": "http://[::1]:3128"}, ("::1", 3128, "HTTPS_PROXY")),
        ("https://a.example/", {"HTTPS_PROXY": "http://p:1", "no_proxy": "a.example"}, None),
        ("https://a.example/", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, None),
        ("https://a.example/", {"HTTPS_PROXY": "http://p:1", "no_proxy": "", "NO_PROXY": "*"},
         ("p", 1, "HTTPS_PROXY")),
    ],
    ids=[
        "none", "http-proxy-not-for-https", "https-proxy-not-for-http", "upper-case",
        "no-scheme-as-curl", "default-port-80", "empty-lower-case-turns-it-off", "ipv6-proxy",
        "no-proxy-host", "no-proxy-star", "lower-case-no-proxy-wins",
    ],
)  # fmt: skip
def test_the_proxy_for_a_url_comes_from_the_environment_as_in_curl_and_urllib(
    url: str, env: Mapping[str, str], expected: tuple[str, int, str] | None
) -> None:
    proxy = webclient.proxy_for(webclient.parse_url(url), env)
    got = None if proxy is None else (proxy.host, proxy.port, proxy.variable)
    assert got == expected


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "bypassed"),
    [
        ("example.com", 443, "example.com", True),
        ("api.example.com", 443, "example.com", True),
        ("api.example.com", 443, ".example.com", True),
        ("example.com", 443, ".example.com", True),
        ("badexample.com", 443, "example.com", False),
        ("example.com", 443, "other.org, ,  Example.COM ", True),
        ("example.com", 443, "*", True),
        ("example.com", 443, "other.org,*", True),
        ("example.com", 8443, "example.com:8443", True),
        ("example.com", 443, "example.com:8443", False),
        ("10.1.2.3", 443, "10.1.2.3", True),
        ("10.1.2.3", 443, "10.0.0.0/8", True),
        ("192.168.1.1", 443, "10.0.0.0/8", False),
        ("::1", 443, "::1", True),
        ("::1", 443, "[::1]:443", True),
        ("::1", 443, "[0:0::1]", True),
        ("127.0.0.1", 443, "localhost", False),
        ("example.com", 443, "", False),
    ],
    ids=[
        "same-host", "subdomain", "dot-subdomain", "dot-matches-the-domain-itself",
        "not-a-suffix-of-a-label", "spaces-case-and-empty-entries", "star", "star-in-a-list",
        "entry-port-matches", "entry-port-differs", "ip", "cidr-as-curl", "outside-cidr",
        "ipv6", "ipv6-brackets-and-port", "ipv6-other-spelling", "no-name-resolution",
        "empty-list",
    ],
)  # fmt: skip
def test_no_proxy_entries_match_as_in_urllib(
    host: str, port: int, no_proxy: str, bypassed: bool
) -> None:
    assert webclient.bypasses(host, port, no_proxy) is bypassed


@pytest.mark.parametrize(
    "value",
    [f"socks5://alice:{PASSWORD}@p:1080", f"https://alice:{PASSWORD}@p", f"http://alice:{PASSWORD}@p:99999"],
    ids=["socks", "https-proxy", "bad-port"],
)  # fmt: skip
def test_a_proxy_url_that_cannot_be_used_is_an_error_naming_the_variable_not_its_value(
    value: str,
) -> None:
    target = webclient.parse_url(f"https://a.example{SECRET_PATH}")
    with pytest.raises(webclient.HttpError, match=r"^HTTPS_PROXY: ") as caught:
        webclient.proxy_for(target, {"HTTPS_PROXY": value})
    assert_safe(str(caught.value))


def test_a_proxy_nobody_listens_on_is_an_error_naming_it_without_its_password() -> None:
    async def scenario() -> None:
        env = {"HTTPS_PROXY": f"http://alice:{PASSWORD}@127.0.0.1:{free_port()}"}
        with pytest.raises(webclient.HttpError, match="cannot connect to proxy") as caught:
            await webclient.post(f"https://a.example{SECRET_PATH}", b"", env=env)
        assert "(from HTTPS_PROXY)" in str(caught.value)
        assert_safe(str(caught.value))

    asyncio.run(scenario())


# --- the environment reaches the client ------------------------------------------------


def test_webhook_routes_and_pings_use_the_proxy_of_the_environment_they_are_built_with() -> None:
    proxy = TestProxy()

    async def scenario() -> None:
        env = {"HTTP_PROXY": proxy.url()}
        config = NotifierConfig(
            name="chat", kind=NotifierKind.WEBHOOK, url="http://chat.example.invalid/hook"
        )
        routes = build_routes(
            {"chat": config},
            runner=Runner(),
            env=env,
            workdir=Path("/"),
            host="box",
            mailer=None,
        )
        async with asyncio.timeout(5):
            await routes["chat"].notifier.send(alert_for_test())
        job = Job(
            name="backup",
            schedule="0 * * * *",
            timezone=ZoneInfo("UTC"),
            command="true",
            ping_url="http://hc.example.invalid/ping/uuid-1",
        )
        pinger = Pinger(FAST, clock=FakeClock(T0), log=EventLog(), env=env)
        slot = Slot(job="backup", scheduled_at=T0)
        pinger.attempt_started(job=job, slot=slot, attempt=1, pid=1, at=T0)
        await pinger.close(5)

    run_with(proxy, None, scenario)
    lines = [asked.line.split("?")[0] for asked in proxy.asked]
    assert lines == [
        "POST http://chat.example.invalid/hook HTTP/1.1",
        "POST http://hc.example.invalid/ping/uuid-1/start",  # its ?rid= cut off
    ]


def alert_for_test() -> Alert:
    return Alert(
        kind=AlertKind.FAILURE,
        job="backup",
        at=T0,
        message="job backup failed",
        run_id="backup@2026-03-08T07:00:00Z",
        scheduled_at=T0,
        attempt=1,
        max_attempts=1,
        outcome=Outcome.FAILED,
        exit_code=1,
        duration_s=0.1,
        stderr_tail="",
    )


def test_the_server_certificate_is_checked_through_the_tunnel_too(tls: TlsServer) -> None:
    proxy = TestProxy()
    errors: list[str] = []

    async def scenario() -> None:
        env = {"HTTPS_PROXY": proxy.url()}
        with pytest.raises(webclient.HttpError) as caught:  # the system CAs do not know it
            await webclient.post(f"https://127.0.0.1:{tls.port}{SECRET_PATH}", b"", env=env)
        errors.append(str(caught.value))

    run_with(proxy, tls, scenario)
    (message,) = errors
    assert message.startswith(f"connection to 127.0.0.1:{tls.port} via proxy 127.0.0.1:")
    assert "certificate verify failed" in message
    assert_safe(message)
    assert tls.asked == []

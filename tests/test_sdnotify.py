"""sd_notify against real AF_UNIX datagram sockets: the exact bytes, the no-op, the watchdog."""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import methodcaller
from pathlib import Path

import pytest

from cronplus.daemon.sdnotify import Notifier


@dataclass(frozen=True, kw_only=True)
class Receiver:
    """The service manager's end: a bound datagram socket and the NOTIFY_SOCKET naming it."""

    sock: socket.socket
    notify_socket: str

    def receive(self) -> bytes:
        return self.sock.recv(4096)

    def nothing_arrived(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        finally:
            self.sock.settimeout(2.0)
        return False


def _bound(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)
    return sock


@pytest.fixture
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # mktemp keeps the folder short: AF_UNIX paths end at 104-108 bytes, and tmp_path
    # carries the whole (long) test name.
    return tmp_path_factory.mktemp("sd") / "notify"


@pytest.fixture
def receiver(socket_path: Path) -> Iterator[Receiver]:
    with _bound(str(socket_path)) as sock:
        yield Receiver(sock=sock, notify_socket=str(socket_path))


Send = Callable[[Notifier], object]

MESSAGES: list[tuple[Send, bytes]] = [
    (methodcaller("ready", "3 jobs, 0 running"), b"READY=1\nSTATUS=3 jobs, 0 running"),
    (methodcaller("status", "3 jobs, 1 running"), b"STATUS=3 jobs, 1 running"),
    (methodcaller("status", "bad\nREADY=1"), b"STATUS=bad READY=1"),
    (methodcaller("status", "nul\0byte"), b"STATUS=nul byte"),
    (methodcaller("status", "caf\u00e9 \u2615"), "STATUS=caf\u00e9 \u2615".encode()),
    (methodcaller("watchdog"), b"WATCHDOG=1"),
    (methodcaller("stopping"), b"STOPPING=1"),
    (methodcaller("reloading", monotonic_s=12.5), b"RELOADING=1\nMONOTONIC_USEC=12500000"),
]
MESSAGE_IDS = [
    "ready",
    "status",
    "status-newline-cannot-inject",
    "status-nul-byte",
    "status-utf8",
    "watchdog",
    "stopping",
    "reloading",
]


@pytest.mark.parametrize(("send", "expected"), MESSAGES, ids=MESSAGE_IDS)
def test_it_sends_exactly_one_datagram_per_call_to_a_path_socket(
    receiver: Receiver, send: Send, expected: bytes
) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": receiver.notify_socket})

    send(notifier)

    assert receiver.receive() == expected
    assert receiver.nothing_arrived()


@pytest.mark.skipif(sys.platform != "linux", reason="the abstract namespace is Linux-only")
@pytest.mark.parametrize(("send", "expected"), MESSAGES, ids=MESSAGE_IDS)
def test_it_sends_to_an_abstract_socket_named_with_an_at_sign(send: Send, expected: bytes) -> None:
    name = f"cronplus-test-{uuid.uuid4().hex}"
    with _bound("\0" + name) as sock:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})

        send(notifier)

        assert sock.recv(4096) == expected


@pytest.mark.parametrize(
    "env",
    [{}, {"NOTIFY_SOCKET": ""}, {"WATCHDOG_USEC": "60000000"}],
    ids=["unset", "empty", "watchdog-without-socket"],
)
def test_it_is_a_silent_no_op_without_notify_socket(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier.from_env(env)

    for send, _ in MESSAGES:
        send(notifier)

    assert not notifier.enabled
    assert notifier.watchdog_interval() is None
    assert caplog.records == []


def test_a_vanished_socket_is_warned_about_once_and_notifying_resumes_when_it_returns(
    socket_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(socket_path)})
    caplog.set_level(logging.WARNING, logger="cronplus.daemon.sdnotify")

    notifier.ready("loaded")
    notifier.watchdog()
    notifier.status("still here")

    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert f"NOTIFY_SOCKET={socket_path}" in caplog.records[0].getMessage()
    with _bound(str(socket_path)) as sock:
        notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
    assert len(caplog.records) == 1


def test_alive_feeds_the_watchdog_and_carries_the_status_only_when_it_changed(
    receiver: Receiver,
) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": receiver.notify_socket})

    for line in ["2 jobs, 0 running", "2 jobs, 0 running", "2 jobs, 1 running", "a\nb"]:
        notifier.alive(line)

    assert [receiver.receive() for _ in range(4)] == [
        b"WATCHDOG=1\nSTATUS=2 jobs, 0 running",
        b"WATCHDOG=1",
        b"WATCHDOG=1\nSTATUS=2 jobs, 1 running",
        b"WATCHDOG=1\nSTATUS=a b",
    ]
    assert receiver.nothing_arrived()


def test_a_status_that_did_not_arrive_is_sent_again_with_the_next_feed(
    socket_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(socket_path)})
    caplog.set_level(logging.WARNING, logger="cronplus.daemon.sdnotify")

    notifier.alive("1 jobs, 0 running")  # nobody listens yet: lost
    with _bound(str(socket_path)) as sock:
        notifier.alive("1 jobs, 0 running")
        notifier.alive("1 jobs, 0 running")
        assert sock.recv(4096) == b"WATCHDOG=1\nSTATUS=1 jobs, 0 running"
        assert sock.recv(4096) == b"WATCHDOG=1"
    assert len(caplog.records) == 1


@pytest.mark.parametrize(
    "name", ["vsock:2:1234", "relative/notify"], ids=["vsock", "relative-path"]
)
def test_an_unsupported_notify_socket_turns_notifications_off_with_a_clear_warning(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "60000000"})
    notifier.ready("loaded")

    assert not notifier.enabled
    assert notifier.watchdog_interval() is None
    [record] = caplog.records
    assert f"NOTIFY_SOCKET={name}" in record.getMessage()
    assert "expected an absolute path or an @abstract name" in record.getMessage()


OUR_PID = str(os.getpid())
OTHER_PID = str(os.getpid() + 1)


@pytest.mark.parametrize(
    ("watchdog_env", "expected_s", "warning"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0, None),
        ({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": OUR_PID}, 2.5, None),
        ({"WATCHDOG_USEC": "1"}, 0.0000005, None),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": OTHER_PID}, None, None),
        ({"WATCHDOG_PID": OUR_PID}, None, None),
        ({}, None, None),
        ({"WATCHDOG_USEC": "0"}, None, "WATCHDOG_USEC='0'"),
        ({"WATCHDOG_USEC": "soon"}, None, "WATCHDOG_USEC='soon'"),
        ({"WATCHDOG_USEC": "-5"}, None, "WATCHDOG_USEC='-5'"),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "me"}, None, "WATCHDOG_PID='me'"),
    ],
    ids=[
        "half-of-usec-without-pid",
        "half-of-usec-for-our-pid",
        "one-microsecond",
        "meant-for-another-pid",
        "pid-without-usec",
        "no-watchdog",
        "zero-usec",
        "usec-not-a-number",
        "usec-negative",
        "pid-not-a-number",
    ],
)
def test_the_watchdog_interval_is_half_of_watchdog_usec_when_it_is_meant_for_us(
    watchdog_env: dict[str, str],
    expected_s: float | None,
    warning: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "/run/systemd/notify", **watchdog_env})

    assert notifier.watchdog_interval() == expected_s
    messages = [record.getMessage() for record in caplog.records]
    if warning is None:
        assert messages == []
    else:
        [message] = messages
        assert message.startswith(warning)
        assert "expected a positive integer" in message


def test_a_status_line_systemd_already_has_is_not_sent_again(receiver: Receiver) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": receiver.notify_socket})

    notifier.ready("3 jobs, 1 running")
    notifier.status("3 jobs, 1 running")
    notifier.status("3 jobs, 0 running")
    notifier.status("3 jobs, 0 running")

    assert receiver.receive() == b"READY=1\nSTATUS=3 jobs, 1 running"
    assert receiver.receive() == b"STATUS=3 jobs, 0 running"
    assert receiver.nothing_arrived()

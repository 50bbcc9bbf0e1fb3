"""Helpers for the tests of the listeners (the metrics port, the control socket)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the other end closed or reset ``sock`` (without waiting)."""
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def wait_until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)

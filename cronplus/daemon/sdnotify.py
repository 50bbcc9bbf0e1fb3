"""The systemd notification channel: telling the service manager we are ready, alive or stopping.

A small in-house ``sd_notify(3)``. Each message is one datagram of ``KEY=VALUE`` lines sent
over ``AF_UNIX``/``SOCK_DGRAM`` to the socket named by ``$NOTIFY_SOCKET``: a filesystem
path, or ``@name`` for Linux's abstract namespace. Without that variable (launchd, a
terminal, the tests) every call is a cheap no-op, so callers never need to ask first.

Notifications are advice to the service manager, never a reason to stop: a send that fails
(systemd re-executed, the socket gone) is logged once as a warning and otherwise ignored.

The loop reports at every pass and idle slice (``alive``): one datagram, the status line in
it only when its text changed, so a wake-up under systemd costs one send and nothing that
grows with the number of jobs (docs/service.md).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

_log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 1.0
"""How long one send may wait on a full socket buffer before it is given up (and logged)."""


class Notifier:
    """Sends ``sd_notify`` messages to one socket; build it with ``Notifier.from_env``."""

    def __init__(self, *, socket_name: str | None, watchdog_usec: int | None = None) -> None:
        """``socket_name`` is ``$NOTIFY_SOCKET`` as systemd gives it (None: notifications off)."""
        self._socket_name = socket_name
        self._address = _socket_address(socket_name) if socket_name else None
        self._watchdog_usec = watchdog_usec if self._address is not None else None
        self._warned = False
        self._status: str | None = None  # the last status line systemd has

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` from ``env``."""
        return cls(
            socket_name=env.get("NOTIFY_SOCKET") or None,
            watchdog_usec=_watchdog_usec(env, pid=os.getpid()),
        )

    @property
    def enabled(self) -> bool:
        """Whether messages go anywhere (so callers can skip building a costly status)."""
        return self._address is not None

    def ready(self, status: str) -> None:
        """The crontab is loaded (at the start, or again after a reload) and the loop runs:
        ``READY=1``, with the status line in the same datagram, so ``systemctl status``
        never shows a line left from before the start or the reload."""
        if self._send("READY=1\n" + _status(status)):
            self._status = status

    def status(self, text: str) -> None:
        """A one-line state for ``systemctl status`` (jobs, running, next run); nothing is
        sent when systemd already has this line."""
        if text != self._status and self._send(_status(text)):
            self._status = text

    def watchdog(self) -> None:
        """The loop is alive; send at least every ``watchdog_interval()`` seconds."""
        self._send("WATCHDOG=1")

    def alive(self, status: str) -> None:
        """``watchdog()`` and, if ``status`` is not the line systemd last got, ``status()``,
        in one datagram."""
        message = "WATCHDOG=1" if status == self._status else "WATCHDOG=1\n" + _status(status)
        if self._send(message):
            self._status = status

    def stopping(self) -> None:
        """Shutdown has begun: jobs are being stopped within ``shutdown_grace``."""
        self._send("STOPPING=1")

    def reloading(self, *, monotonic_s: float) -> None:
        """A reload has begun; send ``ready()`` when it is done.

        ``monotonic_s`` is ``Clock.monotonic()`` (CLOCK_MONOTONIC): systemd >= 253 needs
        ``MONOTONIC_USEC`` to tell this reload from an older one under
        ``Type=notify-reload``; older versions ignore the field.
        """
        self._send(f"RELOADING=1\nMONOTONIC_USEC={round(monotonic_s * 1_000_000)}")

    def watchdog_interval(self) -> float | None:
        """Seconds between ``watchdog()`` calls: half of ``WATCHDOG_USEC``, or None if off."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2_000_000

    def _send(self, message: str) -> bool:
        """Whether the message went out (False also when notifications are off)."""
        if self._address is None:
            return False
        data = message.encode("utf-8", errors="replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(SEND_TIMEOUT_S)
                sock.sendto(data, self._address)
        except OSError as error:
            # Keep trying on later calls: after `systemctl daemon-reexec` the socket comes
            # back at the same address, and a silent watchdog would get us killed.
            if not self._warned:
                self._warned = True
                _log.warning(
                    "cannot notify systemd at NOTIFY_SOCKET=%s: %s; carrying on without it",
                    self._socket_name,
                    error.strerror or error,
                )
            return False
        return True


def _status(text: str) -> str:
    # A newline would start a new KEY=VALUE assignment (a job name must not be able to send
    # READY=1 on our behalf), and systemd drops a message holding a NUL byte.
    return "STATUS=" + " ".join(text.replace("\0", " ").splitlines())


def _socket_address(name: str) -> str | None:
    """``/path`` stays a path; ``@name`` is Linux's abstract namespace (a leading NUL)."""
    if name.startswith("/"):
        return name
    if name.startswith("@"):
        return "\0" + name[1:]
    _log.warning(
        "NOTIFY_SOCKET=%s is not supported: expected an absolute path or an @abstract name; "
        "systemd notifications are off",
        name,
    )
    return None


def _watchdog_usec(env: Mapping[str, str], *, pid: int) -> int | None:
    """``WATCHDOG_USEC`` when it is meant for ``pid`` (``WATCHDOG_PID`` unset or equal)."""
    usec = _positive_int(env, "WATCHDOG_USEC")
    if usec is None or "WATCHDOG_PID" not in env:
        return usec
    # A WATCHDOG_PID naming another process means the variables were inherited from a
    # parent that systemd watches, not set for us.
    owner = _positive_int(env, "WATCHDOG_PID")
    return usec if owner == pid else None


def _positive_int(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name, "")
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) == 0:
        _log.warning("%s=%r is ignored: expected a positive integer", name, text)
        return None
    return int(text)

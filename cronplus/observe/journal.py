"""The systemd journal: knowing that stderr goes to it, and giving it each event whole.

Under systemd a service's stderr is a stream into journald, which files every line at
priority 6 (info) and makes each line an entry of its own. So when ``$JOURNAL_STREAM``
names our stderr (systemd.exec(5): ``DEVICE:INODE`` of the stream), an event goes to
journald's native socket instead, as one datagram (``MESSAGE=``, ``PRIORITY=``, the event's
fields as ``CRONPLUS_*``): ``journalctl -p warning`` shows the warnings, a multi-line
message (a rejected reload's errors) stays one entry, and ``journalctl CRONPLUS_JOB=backup``
finds one job's lines. Where that socket takes no datagram (missing, a message too big for
it), each line goes to stderr with its ``<N>`` priority prefix, which journald's stream
reads (sd-daemon(3)).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import struct
from collections.abc import Mapping
from typing import TextIO

SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "cronplus"

_PRIORITIES = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
_FIELD = re.compile(r"[^A-Z0-9_]")


def priority(level: int) -> int:
    """The syslog priority of a ``logging`` level: 3 error (and worse), 4 warning, 6 info,
    7 debug."""
    for floor, number in _PRIORITIES:
        if level >= floor:
            return number
    return 7


def is_journal(stream: TextIO, env: Mapping[str, str]) -> bool:
    """Whether ``stream`` is the journal stream systemd named in ``JOURNAL_STREAM``."""
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError):  # no descriptor behind it (a test's StringIO), or closed
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


def prefixed(text: str, level: int) -> str:
    """``text`` with every line marked with its priority, for journald's stream."""
    mark = f"<{priority(level)}>"
    return "\n".join(mark + line for line in text.split("\n"))


def entry(message: str, level: int, fields: Mapping[str, object]) -> bytes:
    """One native-protocol datagram (systemd's "Native Journal Protocol"): ``KEY=value``
    lines, and ``KEY``, a 64-bit little-endian length and the bytes for a value holding a
    newline."""
    items: dict[str, str] = {
        "MESSAGE": message,
        "PRIORITY": str(priority(level)),
        "SYSLOG_IDENTIFIER": IDENTIFIER,
    }
    for key, value in fields.items():
        items["CRONPLUS_" + _FIELD.sub("_", key.upper())] = str(value)
    out = bytearray()
    for key, value in items.items():
        data = value.encode("utf-8", errors="replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Sends each record to journald natively; a record the socket refuses goes to
    ``fallback`` (stderr, the journal's stream) line by line with ``<N>`` prefixes."""

    def __init__(self, fallback: TextIO, *, address: str = SOCKET) -> None:
        super().__init__()
        self._fallback, self._address = fallback, address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)  # journald never makes the loop wait

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            fields: Mapping[str, object] = getattr(record, "cronplus_fields", {})
            event = getattr(record, "cronplus_event", None)
            if event is not None:
                fields = {"event": event, **fields}
            try:
                self._socket.sendto(entry(message, record.levelno, fields), self._address)
            except OSError:  # no journald socket, a full queue, a message past its size
                self._fallback.write(prefixed(message, record.levelno) + "\n")
                self._fallback.flush()
        except Exception:  # logging's contract: a handler reports its own failure
            self.handleError(record)

    def close(self) -> None:
        self._socket.close()
        super().close()

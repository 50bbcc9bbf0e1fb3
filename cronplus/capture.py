"""The first and last bytes of one output stream of a job, and how many were dropped.

The runner feeds each pipe's reads into one of these, so a job that writes gigabytes costs
the daemon at most three times its ``output_limit`` a stream: the head, and a tail trimmed
once it has doubled (docs/running.md, "One attempt").
"""

from __future__ import annotations


class Capture:
    """The first and last ``limit`` bytes of a stream, and how many were seen in all."""

    __slots__ = ("_head", "_limit", "_tail", "_total")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._head = bytearray()
        self._tail = bytearray()
        self._total = 0

    def feed(self, data: bytes) -> None:
        self._total += len(data)
        room = self._limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            if len(data) <= room:
                return
            data = data[room:]
        self._tail += data
        # Trim only once the tail has doubled, so each byte is moved O(1) times.
        if len(self._tail) > 2 * self._limit:
            del self._tail[: len(self._tail) - self._limit]

    def value(self) -> bytes:
        tail = self._tail[max(0, len(self._tail) - self._limit) :]
        dropped = self._total - len(self._head) - len(tail)
        if dropped == 0:
            return bytes(self._head + tail)
        return bytes(self._head) + f"\n[... {dropped} bytes dropped ...]\n".encode() + bytes(tail)

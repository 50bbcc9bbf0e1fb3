"""The first and last bytes of one output stream of a job, and how many were dropped.

The runner feeds each pipe's reads into one of these, so a job that writes gigabytes costs
the daemon at most about three times ``output_limit + CONTEXT`` a stream: the head, and a
tail trimmed once it has doubled (docs/running.md, "One attempt"). Secrets are masked when
the value is taken, over the bytes kept, before the head and the tail are cut from them:
each cut keeps ``CONTEXT`` bytes beyond it, so a secret that straddles one is found whole
(docs/running.md, "Secrets in what cronplus shows").
"""

from __future__ import annotations

from cronplus.run.secrets import NO_SECRETS, Redactor

CONTEXT = 16 * 1024
"""Bytes kept beyond each cut the capture makes: a secret up to this long that straddles
a cut is masked whole, and a longer one is recognized by this much of it."""


class Capture:
    """The first and last ``limit`` bytes of a stream, and how many were seen in all.

    It keeps the first ``limit + CONTEXT`` bytes, and everything after the first ``limit``
    in a tail that is trimmed to its last ``limit + CONTEXT``: until the first trim, the
    head's ``limit`` and the tail are the whole stream.
    """

    __slots__ = ("_head", "_keep", "_limit", "_tail", "_total")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._keep = limit + CONTEXT if limit else 0
        self._head = bytearray()
        self._tail = bytearray()
        self._total = 0

    @property
    def total(self) -> int:
        """Bytes fed in all."""
        return self._total

    def feed(self, data: bytes) -> None:
        seen = self._total
        self._total = seen + len(data)
        if seen >= self._keep:  # the head is full: every read of a chatty job
            self._tail += data
        else:
            self._head += data[: self._keep - seen]
            if self._total <= self._limit:
                return
            self._tail += data[max(0, self._limit - seen) :]
        # Trim only once the tail has doubled, so each byte is moved O(1) times.
        if len(self._tail) > 2 * self._keep:
            del self._tail[: len(self._tail) - self._keep]

    def value(self, hide: Redactor = NO_SECRETS, *, cut_end: bool = False) -> bytes:
        """Head + ``\\n[... N bytes dropped ...]\\n`` + tail (or the whole stream, if it
        fits in both), with ``hide``'s secrets masked; ``cut_end``: cronplus stopped the
        stream before its end (stopped reading it, or the job), so its last bytes may be
        the start of a secret."""
        total, limit = self._total, self._limit
        if not total:
            return b""
        if total - len(self._tail) <= limit:  # nothing trimmed: the whole stream is here
            whole = bytes(self._head[:limit] + self._tail)
            if total <= 2 * limit:
                return hide.mask(whole, cut_after=cut_end)
            head = hide.mask(whole, 0, limit)
            tail = hide.mask(whole, total - limit, total, cut_after=cut_end)
        else:
            head = hide.mask(bytes(self._head), 0, limit, cut_after=True)
            kept = bytes(self._tail)
            tail = hide.mask(kept, len(kept) - limit, cut_before=True, cut_after=cut_end)
        return head + f"\n[... {total - 2 * limit} bytes dropped ...]\n".encode() + tail

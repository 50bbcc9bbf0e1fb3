"""A job's output as lines while it runs: ``Lines`` splits one stream's reads for a
``LineSink`` (the engine logs them), secrets masked, each line bounded.

The capture (``capture.py``) keeps the head and tail for the record; this is the live view,
so a line is handed on as soon as its newline comes. A line longer than ``LINE_MAX`` is
handed on cut at ``LINE_MAX`` bytes, and the rest of it, up to its newline, is counted,
not kept. A secret is masked in the line it is in; a secret that spans lines is masked line
by line, as the ``Redactor`` does everywhere (docs/running.md, "Secrets in what cronplus
shows"). Once the sink says it has had enough (its budget for the run is spent), the
stream's reads cost nothing more here.
"""

from __future__ import annotations

from typing import Protocol

from cronplus.run.secrets import NO_SECRETS, Redactor

LINE_MAX = 4096
"""Bytes of one line handed on; the rest of a longer line is dropped (and said so)."""
_CONTEXT = 256
"""Bytes past a cut kept for masking, so a secret straddling ``LINE_MAX`` is found whole."""


class LineSink(Protocol):
    """Where a running attempt's lines go."""

    def line(self, stream: str, text: str, *, dropped: int) -> bool:
        """One line of ``stream`` (``stdout`` or ``stderr``), without its newline, decoded
        with replacement; ``dropped``: bytes of it cut off past ``LINE_MAX``. False: send
        no more lines of this attempt."""


class Lines:
    """Splits the reads of one stream into lines for ``sink``."""

    __slots__ = ("_dropped", "_hide", "_partial", "_sink", "_stream", "open")

    def __init__(self, stream: str, sink: LineSink, hide: Redactor = NO_SECRETS) -> None:
        self._stream = stream
        self._sink = sink
        self._hide = hide
        self._partial = bytearray()
        self._dropped = 0  # bytes of the current line past LINE_MAX + _CONTEXT
        self.open = True
        """False once the sink wanted no more: feeding then does nothing."""

    def mask_secrets(self, hide: Redactor) -> None:
        self._hide = hide

    def feed(self, data: bytes) -> None:
        if not self.open:
            return
        start = 0
        while self.open:
            end = data.find(b"\n", start)
            if end < 0:
                self._keep(data, start, len(data))
                return
            self._keep(data, start, end)
            self._send()
            start = end + 1

    def close(self) -> None:
        """The stream ended: a last line without its newline is handed on too."""
        if self.open and (self._partial or self._dropped):
            self._send()
        self.open = False

    def _keep(self, data: bytes, start: int, end: int) -> None:
        room = LINE_MAX + _CONTEXT - len(self._partial)
        if end - start <= room:
            self._partial += data[start:end]
            return
        self._partial += data[start : start + max(room, 0)]
        self._dropped += end - start - max(room, 0)

    def _send(self) -> None:
        raw = bytes(self._partial)
        cut = len(raw) > LINE_MAX
        shown = self._hide.mask(raw, 0, LINE_MAX, cut_after=cut) if raw else b""
        dropped = self._dropped + max(len(raw) - LINE_MAX, 0)
        self._partial.clear()
        self._dropped = 0
        text = shown.decode("utf-8", errors="replace").removesuffix("\r")
        if not self._sink.line(self._stream, text, dropped=dropped):
            self.open = False

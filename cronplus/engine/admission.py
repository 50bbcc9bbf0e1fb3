"""Admission of runs: the FIFO queue under ``max_concurrent``, and the slot gate.

The queue caps running attempts across all jobs; the rest wait in order. The gate says
whether this process may start a slot at all: always on one host (``LocalGate``), only
after a claim in the shared database in a cluster (``node.Node``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import datetime
from typing import Protocol

from cronplus.core.model import Job


class Limiter:
    """A FIFO queue in front of ``max_concurrent`` running attempts; the limit can change."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return sum(1 for waiter in self._waiters if not waiter.done())

    @property
    def full(self) -> bool:
        """An ``acquire`` now would wait."""
        return self.active >= self.limit or bool(self._waiters)

    async def acquire(self) -> None:
        if self.active < self.limit and not self._waiters:
            self.active += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as we were cancelled: pass the place on
            raise

    def release(self) -> None:
        self.active -= 1
        self._wake()

    def set_limit(self, limit: int) -> None:
        self.limit = limit
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.active < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)


class SlotClaim(Protocol):
    """Leave to run one slot; released once its attempts and retries are over."""

    async def confirm(self, attempt: int, *, waited: bool) -> str | None:
        """Just before ``attempt`` starts: None when it may; else why not (in a cluster,
        the node no longer holds the slot: the fence). ``waited``: the first attempt
        waited after the claim (its jitter, an earlier run, a free place)."""
        ...

    def release(self, *, started: bool) -> None:
        """``started``: an attempt ran; else the slot was given up before (a shutdown)."""
        ...


class SlotGate(Protocol):
    """May this process start a slot? Always on one host; in a cluster, only once it has
    claimed the slot in the shared database (``node.Node``)."""

    async def claim(self, job: Job, slot: datetime) -> SlotClaim | None:
        """The claim, or None: another node runs the slot, or this one may not."""
        ...


class LocalGate:
    """One host: every slot is this process's to run."""

    async def claim(self, job: Job, slot: datetime) -> SlotClaim | None:
        return self

    async def confirm(self, attempt: int, *, waited: bool) -> str | None:
        return None

    def release(self, *, started: bool) -> None:
        pass

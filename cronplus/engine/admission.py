"""Admission of runs: the priority queue under ``max_concurrent``, and the slot gate.

The queue caps running attempts across all jobs; the rest wait, the highest priority first
and in arrival order within one priority. The gate says whether this process may start a
slot at all: always on one host (``LocalGate``), only after a claim in the shared database
in a cluster (``node.Node``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import datetime
from typing import Protocol

from cronplus.core.model import Job

_COMPACT_SLACK = 64
"""Cancelled waiters the queue may hold beyond twice its live ones before it drops them."""


class Limiter:
    """The queue in front of ``max_concurrent`` running attempts; the limit can change.

    A waiter that is cancelled stays in the heap, marked by its cancelled future, until it
    comes to the top or the heap is compacted, so each acquire and release stays O(log n).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        # A heap of (-priority, arrival, future): the highest priority, then the oldest.
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()
        self._queued = 0  # waiters neither granted a place nor cancelled

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def full(self) -> bool:
        """An ``acquire`` now would wait."""
        return self.active >= self.limit or self._queued > 0

    async def acquire(self, *, priority: int = 0) -> None:
        """Take a place; while there is none, wait behind every waiter of a higher
        ``priority`` and every earlier one of the same."""
        if not self.full:
            self.active += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (-priority, next(self._arrivals), waiter))
        self._queued += 1
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as we were cancelled: pass the place on
            else:
                waiter.cancel()  # already so when the task's cancel reached it
                self._queued -= 1
                self._compact()
                # A place freed between the cancel and now was not given while this
                # waiter still counted as queued (``full``): give it now.
                self._wake()
            raise

    def release(self) -> None:
        self.active -= 1
        self._wake()

    def set_limit(self, limit: int) -> None:
        self.limit = limit
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.active < self.limit:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                self._queued -= 1
                self.active += 1
                waiter.set_result(None)

    def _compact(self) -> None:
        # A cancelled waiter of low priority could sit under a stream of higher ones for
        # ever; dropping them all once they outnumber the live ones keeps this amortized O(1).
        if len(self._waiters) > 2 * self._queued + _COMPACT_SLACK:
            self._waiters = [entry for entry in self._waiters if not entry[2].done()]
            heapq.heapify(self._waiters)


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

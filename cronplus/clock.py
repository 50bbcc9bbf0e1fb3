"""The clock: the one place cronplus reads the time or sleeps.

Everything that decides takes ``now`` as an argument; the engine and the daemon get a
``Clock`` and ask it. ``SystemClock`` is the real one; ``FakeClock`` is moved by hand (or
jumps to whatever instant it is asked to sleep until), so tests need no patching;
``CorrectedClock`` reads another clock less a measured offset (a cluster node's, as the
database's).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Wall time for deciding, monotonic time for measuring, and a sleep."""

    def now(self) -> datetime:
        """The wall clock, as an aware UTC datetime."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (and does not count suspend)."""
        ...

    async def sleep_until(
        self, instant: datetime, *, max_seconds: float, precise: bool = False
    ) -> None:
        """Sleep until ``instant`` by the wall clock, but never longer than ``max_seconds``.

        The wall clock can jump while we sleep (NTP, suspend), so callers re-read ``now()``
        afterwards instead of assuming they woke on time. ``precise``: the instant is one
        something is due at, worth a wake-up within a fraction of a millisecond.
        """
        ...

    async def sleep_while(self, still_idle: Callable[[], bool], *, every: float) -> None:
        """Sleep in slices of ``every`` seconds; after each, ``still_idle()`` says whether
        to sleep another. Return once it says no (its exception ends the sleep too).

        A slice's end runs ``still_idle`` straight from a timer, with no task resumed: an
        idle daemon's whole cost is these wake-ups (docs/daemon.md, "The loop").
        """
        ...


LANDING = 0.003
"""Seconds: the most a precise ``SystemClock.sleep_until`` blocks the event loop for."""


class SystemClock:
    """The host's clocks."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep_until(
        self, instant: datetime, *, max_seconds: float, precise: bool = False
    ) -> None:
        delay = (instant - self.now()).total_seconds()
        if not precise or delay > max_seconds:
            await asyncio.sleep(min(max(delay, 0.0), max_seconds))
            return
        # asyncio's timers end 0-2 ms late: epoll_wait takes whole milliseconds, and the
        # timeout is rounded up twice on the way (selectors, then select.epoll). So the
        # loop sleeps until LANDING before the instant and blocks for the rest, which a
        # nanosleep ends within the host's wake-up latency (docs/daemon.md, "The loop").
        await asyncio.sleep(max(delay - LANDING, 0.0))  # yields even when there is no wait
        rest = (instant - self.now()).total_seconds()
        if rest > 0:
            time.sleep(min(rest, LANDING))

    async def sleep_while(self, still_idle: Callable[[], bool], *, every: float) -> None:
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        timer: asyncio.TimerHandle

        def slice_ended() -> None:
            nonlocal timer
            if woken.done():  # cancelled earlier in the turn this timer came due in
                return
            try:
                idle = still_idle()
            except Exception as error:  # the sleeper raises it, not the loop's handler
                woken.set_exception(error)
                return
            if idle:
                timer = loop.call_later(every, slice_ended)
            else:
                woken.set_result(None)

        timer = loop.call_later(every, slice_ended)
        try:
            await woken
        finally:
            timer.cancel()  # a cancelled sleep asks nothing more


class CorrectedClock:
    """Another clock's time less a measured ``offset``: in a cluster, the node's clock read
    as the database's, so every node decides slot instants on one clock (docs/cluster.md,
    "Clocks"). Sleeps, monotonic time and the idle slices are the other clock's own."""

    def __init__(self, inner: Clock) -> None:
        self._inner = inner
        self.offset = timedelta(0)
        """The inner clock minus the reference clock; set by whoever measures it."""

    def now(self) -> datetime:
        return self._inner.now() - self.offset

    def monotonic(self) -> float:
        return self._inner.monotonic()

    async def sleep_until(
        self, instant: datetime, *, max_seconds: float, precise: bool = False
    ) -> None:
        await self._inner.sleep_until(
            instant + self.offset, max_seconds=max_seconds, precise=precise
        )

    async def sleep_while(self, still_idle: Callable[[], bool], *, every: float) -> None:
        await self._inner.sleep_while(still_idle, every=every)


class FakeClock:
    """A clock that only moves when told to, or when somebody sleeps on it.

    ``sleep_until`` jumps the clock forward to the instant asked for (capped at
    ``max_seconds``), so a retry policy of hours runs in microseconds.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._monotonic = 1000.0
        self.sleeps: list[float] = []
        """Every sleep asked for, in seconds, for tests that check the wake-up plan."""
        self.precise: list[float] = []
        """The sleeps of those asked with ``precise``: the legs that end at a due instant."""

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, delta: timedelta) -> None:
        """Time passes normally: wall and monotonic clocks move together."""
        if delta < timedelta(0):
            raise ValueError("advance() moves forward; use step() for a clock set backwards")
        self._now += delta
        self._monotonic += delta.total_seconds()

    def step(self, delta: timedelta) -> None:
        """The wall clock is set (NTP step, an operator's `date -s`); monotonic time is not."""
        self._now += delta

    def suspend(self, delta: timedelta) -> None:
        """The host sleeps: wall time passes, the monotonic clock stands still."""
        self.step(delta)

    async def sleep_until(
        self, instant: datetime, *, max_seconds: float, precise: bool = False
    ) -> None:
        delay = min(max((instant - self._now).total_seconds(), 0.0), max_seconds)
        self.sleeps.append(delay)
        if precise:
            self.precise.append(delay)
        self.advance(timedelta(seconds=delay))
        await asyncio.sleep(0)

    async def sleep_while(self, still_idle: Callable[[], bool], *, every: float) -> None:
        while True:
            self.sleeps.append(every)
            self.advance(timedelta(seconds=every))
            await asyncio.sleep(0)
            if not still_idle():
                return

"""The clocks' ``sleep_while``: slices whose ends run a check from a timer, with no task
resumed, until the check says to stop; its exception and a cancel end the sleep."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from cronplus.clock import FakeClock, SystemClock

SLICE = 0.01


class Checks:
    """A ``still_idle`` that says yes ``idle`` times, then no; notes the task it ran in."""

    def __init__(self, idle: int) -> None:
        self.idle = idle
        self.tasks: list[asyncio.Task[object] | None] = []

    def __call__(self) -> bool:
        self.tasks.append(asyncio.current_task())
        return len(self.tasks) <= self.idle


def test_a_system_sleep_checks_after_every_slice_from_a_timer_and_ends_when_told() -> None:
    async def scenario() -> tuple[Checks, float]:
        loop = asyncio.get_running_loop()
        checks = Checks(idle=4)
        began = loop.time()
        await asyncio.wait_for(SystemClock().sleep_while(checks, every=SLICE), 5)
        return checks, loop.time() - began

    checks, took = asyncio.run(scenario())
    assert checks.tasks == [None] * 5  # five slices, each check outside any task
    assert took >= 5 * SLICE


def test_a_check_that_raises_ends_the_system_sleep_with_its_error() -> None:
    def broken() -> bool:
        raise LookupError("no such job")

    async def scenario() -> None:
        await asyncio.wait_for(SystemClock().sleep_while(broken, every=SLICE), 5)

    with pytest.raises(LookupError, match="no such job"):
        asyncio.run(scenario())


def test_a_cancelled_system_sleep_asks_nothing_more() -> None:
    async def scenario() -> int:
        checks = Checks(idle=1_000_000)
        sleeper = asyncio.create_task(SystemClock().sleep_while(checks, every=SLICE))
        while len(checks.tasks) < 2:
            await asyncio.sleep(SLICE)
        sleeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(sleeper, 5)
        asked = len(checks.tasks)
        await asyncio.sleep(10 * SLICE)
        return len(checks.tasks) - asked

    assert asyncio.run(scenario()) == 0


def test_a_sleep_cancelled_in_the_turn_its_slice_ends_asks_nothing_and_logs_nothing() -> None:
    async def scenario() -> tuple[int, list[object]]:
        loop = asyncio.get_running_loop()
        handled: list[object] = []
        loop.set_exception_handler(lambda _loop, context: handled.append(context))
        checks = Checks(idle=0)
        sleeper = asyncio.create_task(SystemClock().sleep_while(checks, every=SLICE))
        await asyncio.sleep(0)  # the sleeper sets its slice's timer
        time.sleep(3 * SLICE)  # the loop is busy (a reload's parse) past the slice's end
        # A signal handler's call, queued before the turn in which that timer comes due.
        loop.call_soon(sleeper.cancel)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(sleeper, 5)
        await asyncio.sleep(SLICE)
        return len(checks.tasks), handled

    assert asyncio.run(scenario()) == (0, [])


def test_a_fake_sleep_moves_the_clock_a_slice_before_each_check() -> None:
    start = datetime(2026, 12, 31, 23, 50, tzinfo=UTC)
    clock = FakeClock(start)
    seen: list[datetime] = []

    def still_idle() -> bool:
        seen.append(clock.now())
        return len(seen) < 3

    asyncio.run(clock.sleep_while(still_idle, every=30))
    assert seen == [start + timedelta(seconds=30 * n) for n in (1, 2, 3)]
    assert clock.sleeps == [30, 30, 30]

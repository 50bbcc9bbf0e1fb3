"""The clocks' ``sleep_while``: slices whose ends run a check from a timer, with no task
resumed, until the check says to stop; its exception and a cancel end the sleep."""

from __future__ import annotations

import asyncio
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
        await SystemClock().sleep_while(checks, every=SLICE)
        return checks, loop.time() - began

    checks, took = asyncio.run(scenario())
    assert checks.tasks == [None] * 5  # five slices, each check outside any task
    assert took >= 5 * SLICE


def test_a_check_that_raises_ends_the_system_sleep_with_its_error() -> None:
    def broken() -> bool:
        raise LookupError("no such job")

    async def scenario() -> None:
        await SystemClock().sleep_while(broken, every=SLICE)

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
            await sleeper
        asked = len(checks.tasks)
        await asyncio.sleep(10 * SLICE)
        return len(checks.tasks) - asked

    assert asyncio.run(scenario()) == 0


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

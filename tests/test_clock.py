"""The clocks' ``sleep_while``: slices whose ends run a check from a timer, with no task
resumed, until the check says to stop; its exception and a cancel end the sleep. And a
precise ``sleep_until``: never before its instant, within its cap, cancellable, and always
a turn of the event loop."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from cronplus.clock import LANDING, FakeClock, SystemClock

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


@pytest.mark.parametrize(
    "ahead", [-0.01, 0.0, LANDING / 3, LANDING, 2 * LANDING, 0.02], ids=lambda s: f"{s}s"
)
def test_a_precise_system_sleep_never_ends_before_its_instant(ahead: float) -> None:
    """Its last LANDING seconds block the loop (asyncio's timers end up to 2 ms late);
    the wall clock read afterwards is at or past the instant, whatever the split."""
    clock = SystemClock()

    async def scenario() -> list[timedelta]:
        past: list[timedelta] = []
        for _ in range(5):
            instant = clock.now() + timedelta(seconds=ahead)
            await clock.sleep_until(instant, max_seconds=5, precise=True)
            past.append(clock.now() - instant)
        return past

    assert all(late >= timedelta(0) for late in asyncio.run(scenario()))


def test_a_precise_system_sleep_lets_the_loop_run_even_when_it_has_nothing_to_wait() -> None:
    """A loop whose due instant stays past must still hand the event loop a turn, or it
    would starve every signal handler and reader."""
    clock = SystemClock()

    async def scenario() -> list[str]:
        ran: list[str] = []
        asyncio.get_running_loop().call_soon(ran.append, "other")
        past = clock.now() - timedelta(seconds=1)
        await clock.sleep_until(past, max_seconds=5, precise=True)
        return list(ran)  # what ran while it slept, not what runs as the loop winds down

    assert asyncio.run(scenario()) == ["other"]


def test_a_precise_system_sleep_is_capped_and_can_be_cancelled_before_it_lands() -> None:
    clock = SystemClock()

    async def scenario() -> tuple[float, bool]:
        loop = asyncio.get_running_loop()
        began = loop.time()
        await clock.sleep_until(clock.now() + timedelta(hours=1), max_seconds=SLICE, precise=True)
        capped = loop.time() - began
        sleeper = asyncio.create_task(
            clock.sleep_until(clock.now() + timedelta(hours=1), max_seconds=3600, precise=True)
        )
        await asyncio.sleep(SLICE)
        sleeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(sleeper, 5)
        return capped, sleeper.cancelled()

    capped, cancelled = asyncio.run(scenario())
    assert SLICE <= capped < 5
    assert cancelled


def test_a_fake_precise_sleep_is_noted_as_such() -> None:
    start = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    clock = FakeClock(start)

    async def scenario() -> None:
        await clock.sleep_until(start + timedelta(seconds=20), max_seconds=30)
        await clock.sleep_until(start + timedelta(seconds=60), max_seconds=30, precise=True)

    asyncio.run(scenario())
    assert clock.now() == start + timedelta(seconds=50)  # the second capped at 30 s
    assert (clock.sleeps, clock.precise) == ([20, 30], [30])

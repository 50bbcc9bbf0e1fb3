"""``priority:`` under ``max_concurrent``: the ``Limiter`` alone, a burst through the real
engine (real subprocesses, a fake clock), and the field in the crontab file."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cronplus.clock import FakeClock
from cronplus.config.loader import loads
from cronplus.core.model import ConfigError, Crontab, Job, RetryPolicy, Settings
from cronplus.engine.admission import Limiter
from cronplus.engine.engine import Engine
from cronplus.observe.logs import LOGGER_NAME, EventLog
from cronplus.run.runner import Runner
from cronplus.state.sqlite import SqliteStore

# --- the Limiter alone ------------------------------------------------------------------


async def _turns(n: int = 3) -> None:
    """Let every task made so far run up to its next wait."""
    for _ in range(n):
        await asyncio.sleep(0)


async def _queue_behind_one(limiter: Limiter, priorities: list[int]) -> list[str]:
    """Take the only place, queue a waiter per priority (in list order), then free the
    place: the names of the waiters in the order they got it."""
    started: list[str] = []

    async def waiter(name: str, priority: int) -> None:
        await limiter.acquire(priority=priority)
        started.append(name)
        await asyncio.sleep(0)  # hold the place across a loop turn, as an attempt does
        limiter.release()

    await limiter.acquire()
    names = [f"{priority}#{i}" for i, priority in enumerate(priorities)]
    tasks = [asyncio.create_task(waiter(n, p)) for n, p in zip(names, priorities, strict=True)]
    await _turns()
    assert limiter.queued == len(priorities)
    limiter.release()
    await asyncio.gather(*tasks)
    assert (limiter.active, limiter.queued) == (0, 0)
    return started


ORDERS = [
    ("mixed", [0, 5, -1, 5, 0], ["5#1", "5#3", "0#0", "0#4", "-1#2"]),
    ("one-priority-is-fifo", [3, 3, 3, 3], ["3#0", "3#1", "3#2", "3#3"]),
    ("all-default-is-the-old-fifo", [0, 0, 0], ["0#0", "0#1", "0#2"]),
    ("the-range-s-ends", [-1000, 1000, 0], ["1000#1", "0#2", "-1000#0"]),
    ("rising", [1, 2, 3], ["3#2", "2#1", "1#0"]),
]


@pytest.mark.parametrize(
    ("priorities", "expected"), [c[1:] for c in ORDERS], ids=[c[0] for c in ORDERS]
)
def test_the_highest_priority_waiting_gets_the_place_first_and_equals_in_arrival_order(
    priorities: list[int], expected: list[str]
) -> None:
    assert asyncio.run(_queue_behind_one(Limiter(1), priorities)) == expected


def test_a_higher_priority_arrival_goes_ahead_of_the_queue_but_stops_no_running_one() -> None:
    async def scenario() -> None:
        limiter = Limiter(1)
        await limiter.acquire()  # the running attempt
        low = asyncio.create_task(limiter.acquire(priority=0))
        await _turns()
        high = asyncio.create_task(limiter.acquire(priority=1000))
        await _turns()
        assert (limiter.active, limiter.queued) == (1, 2)
        assert not high.done() and not low.done()
        limiter.release()
        await _turns()
        assert high.done() and not low.done()
        limiter.release()
        await low
        limiter.release()
        assert (limiter.active, limiter.queued, limiter.full) == (0, 0, False)

    asyncio.run(scenario())


def test_a_free_place_is_taken_at_once_whatever_the_priority() -> None:
    async def scenario() -> None:
        limiter = Limiter(2)
        await asyncio.wait_for(limiter.acquire(priority=-1000), 1)
        await asyncio.wait_for(limiter.acquire(priority=0), 1)
        assert (limiter.active, limiter.queued, limiter.full) == (2, 0, True)

    asyncio.run(scenario())


def test_a_waiter_cancelled_in_the_queue_leaves_it_and_never_takes_a_place() -> None:
    async def scenario() -> None:
        limiter = Limiter(1)
        await limiter.acquire()
        first = asyncio.create_task(limiter.acquire(priority=5))
        second = asyncio.create_task(limiter.acquire(priority=0))
        await _turns()
        first.cancel()
        await _turns()
        assert first.cancelled()
        assert (limiter.active, limiter.queued) == (1, 1)
        limiter.release()
        await asyncio.wait_for(second, 1)  # the place skips the cancelled one
        assert (limiter.active, limiter.queued) == (1, 0)
        limiter.release()
        assert (limiter.active, limiter.full) == (0, False)

    asyncio.run(scenario())


def test_a_waiter_cancelled_just_as_it_was_granted_passes_the_place_on() -> None:
    async def scenario() -> None:
        limiter = Limiter(1)
        await limiter.acquire()
        granted = asyncio.create_task(limiter.acquire(priority=5))
        after = asyncio.create_task(limiter.acquire(priority=0))
        await _turns()
        limiter.release()  # the place is now ``granted``'s, which has not run yet
        granted.cancel()
        await _turns()
        assert granted.cancelled()
        await asyncio.wait_for(after, 1)
        assert (limiter.active, limiter.queued) == (1, 0)
        limiter.release()
        assert limiter.active == 0

    asyncio.run(scenario())


def test_a_place_freed_between_a_cancel_and_its_unwinding_is_not_lost() -> None:
    async def scenario() -> None:
        limiter = Limiter(1)
        await limiter.acquire()
        gone = asyncio.create_task(limiter.acquire())
        await _turns()
        # late's first step comes before gone's unwinding: it finds the place free but
        # gone still counted as queued, so it queues behind nobody.
        late = asyncio.create_task(limiter.acquire())
        gone.cancel()  # its future is cancelled now; the task unwinds on its next turn
        limiter.release()
        await asyncio.wait_for(late, 1)
        assert gone.cancelled()
        assert (limiter.active, limiter.queued) == (1, 0)

    asyncio.run(scenario())


def test_many_cancelled_waiters_do_not_pile_up_under_higher_priorities() -> None:
    async def scenario() -> None:
        limiter = Limiter(1)
        await limiter.acquire()
        doomed = [asyncio.create_task(limiter.acquire(priority=-5)) for _ in range(1000)]
        live = [asyncio.create_task(limiter.acquire(priority=5)) for _ in range(10)]
        await _turns()
        for task in doomed:
            task.cancel()
        await _turns()
        assert limiter.queued == 10
        # A peek inside: the cancelled ones are gone from the heap, not only skipped later.
        assert len(limiter._waiters) <= 2 * 10 + 64
        for task in live:
            limiter.release()
            await asyncio.wait_for(task, 1)
        limiter.release()
        assert (limiter.active, limiter.queued, limiter.full) == (0, 0, False)

    asyncio.run(scenario())


def test_a_raised_limit_admits_the_waiters_by_priority() -> None:
    async def scenario() -> None:
        limiter = Limiter(1)
        await limiter.acquire()
        tasks = {p: asyncio.create_task(limiter.acquire(priority=p)) for p in (1, 3, 2)}
        await _turns()
        limiter.set_limit(3)
        await _turns()
        assert {p for p, task in tasks.items() if task.done()} == {3, 2}
        assert (limiter.active, limiter.queued) == (3, 1)

    asyncio.run(scenario())


# --- a burst through the engine -----------------------------------------------------------

UTCZ = ZoneInfo("UTC")
NOON = datetime(2026, 1, 1, 12, tzinfo=UTC)
GATE = "while [ ! -e go ]; do sleep 0.01; done"
"""The blocker holds its place until the test has queued the rest and made the file."""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore.open(tmp_path / "state.db")
    yield opened
    opened.close()


def _job(name: str, command: str, tmp_path: Path, **fields: object) -> Job:
    return Job(
        name=name,
        schedule="0 * * * *",
        timezone=UTCZ,
        command=f"echo {name} >> order.log; {command}",
        workdir=tmp_path,
        **fields,  # type: ignore[arg-type]
    )


def _engine(tmp_path: Path, store: SqliteStore, clock: FakeClock, jobs: list[Job]) -> Engine:
    settings = Settings(state=tmp_path / "state.db", max_concurrent=1)
    tab = Crontab(path=tmp_path / "crontab.yaml", settings=settings, jobs=tuple(jobs))
    runner = Runner(drain_grace=0.2)
    return Engine(tab, store=store, runner=runner, clock=clock, base_env={}, log=EventLog())


async def _burst(eng: Engine, clock: FakeClock, blocker: Job, burst: list[Job], go: Path) -> None:
    eng.start_slots([(blocker, NOON)], now=clock.now())
    await _turns()  # the blocker has the only place
    eng.start_slots([(job, NOON) for job in burst], now=clock.now())
    await _turns()
    assert eng.queued == len(burst)
    go.touch()
    await asyncio.wait_for(eng.wait_idle(), 10)


def test_a_burst_under_max_concurrent_starts_by_priority_then_in_arrival_order(
    tmp_path: Path, store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = _job("blocker", GATE, tmp_path)
    burst = [
        _job(name, "true", tmp_path, priority=priority)
        for name, priority in [("a0", 0), ("b5", 5), ("c-1", -1), ("d5", 5), ("e0", 0)]
    ]
    clock = FakeClock(NOON)
    eng = _engine(tmp_path, store, clock, [blocker, *burst])
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        asyncio.run(_burst(eng, clock, blocker, burst, tmp_path / "go"))
    order = (tmp_path / "order.log").read_text().split()
    assert order == ["blocker", "b5", "d5", "a0", "e0", "c-1"]
    queued = {
        r.cronplus_fields["job"]: r.getMessage()  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "cronplus_event", "") == "queued"
    }
    assert queued["b5"] == "job b5 waits for a free place (max_concurrent 1, priority 5)"
    assert queued["c-1"] == "job c-1 waits for a free place (max_concurrent 1, priority -1)"
    assert queued["a0"] == "job a0 waits for a free place (max_concurrent 1)"
    assert [row.outcome.ok for row in store.history(limit=100)] == [True] * 6


def test_a_retry_waiting_for_a_place_keeps_its_job_s_priority(
    tmp_path: Path, store: SqliteStore
) -> None:
    # flaky fails once; when it frees its place, low0 takes it and flaky's retry queues,
    # at priority 5, ahead of low1, which has waited longer at 0.
    blocker = _job("blocker", GATE, tmp_path)
    counter = 'n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ "$n" -ge 2 ]'
    flaky = _job("flaky", counter, tmp_path, priority=5, retry=RetryPolicy(retries=1))
    # low0's sleep is slack for the retry to queue while low0 runs, on a busy host.
    lows = [_job("low0", "sleep 0.1", tmp_path), _job("low1", "true", tmp_path)]
    clock = FakeClock(NOON)
    eng = _engine(tmp_path, store, clock, [blocker, flaky, *lows])
    asyncio.run(_burst(eng, clock, blocker, [*lows, flaky], tmp_path / "go"))
    order = (tmp_path / "order.log").read_text().split()
    assert order == ["blocker", "flaky", "low0", "flaky", "low1"]
    attempts = [row.attempt for row in store.history(job="flaky")]
    assert sorted(attempts) == [1, 2]


# --- the field in the crontab file -----------------------------------------------------

PATH = Path("/srv/cron/crontab.yaml")
ENV = {"HOME": "/home/op", "TZ": "UTC"}


def _load(text: str) -> Crontab:
    return loads(textwrap.dedent(text), path=PATH, env=ENV, euid=1000)


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        loads(textwrap.dedent(text), path=Path("crontab.yaml"), env=ENV, euid=1000)
    return [str(issue) for issue in caught.value.issues]


def test_priority_loads_from_the_job_and_from_defaults_and_is_zero_by_default() -> None:
    tab = _load(
        """\
        defaults:
          priority: -3
        jobs:
          own: {schedule: "@daily", command: "true", priority: 1000}
          inherited: {schedule: "@daily", command: "true"}
        """
    )
    assert [(job.name, job.priority) for job in tab.jobs] == [("own", 1000), ("inherited", -3)]
    plain = _load('jobs:\n  plain: {schedule: "@daily", command: "true"}\n')
    assert plain.jobs[0].priority == 0


JOB = 'jobs:\n  backup:\n    schedule: "0 3 * * *"\n    command: "true"\n'
BAD = [
    (
        "above-the-range",
        JOB + "    priority: 1001\n",
        "crontab.yaml:5:15: jobs.backup.priority: "
        "expected an integer <= 1000, got the integer 1001",
    ),
    (
        "below-the-range",
        JOB + "    priority: -1001\n",
        "crontab.yaml:5:15: jobs.backup.priority: "
        "expected an integer >= -1000, got the integer -1001",
    ),
    (
        "a-quoted-number",
        JOB + "    priority: '5'\n",
        "crontab.yaml:5:15: jobs.backup.priority: expected an integer, got '5'",
    ),
    (
        "a-fraction",
        JOB + "    priority: 1.5\n",
        "crontab.yaml:5:15: jobs.backup.priority: expected an integer, got the number 1.5",
    ),
    (
        "a-word",
        JOB + "    priority: high\n",
        "crontab.yaml:5:15: jobs.backup.priority: expected an integer, got 'high'",
    ),
    (
        "in-defaults",
        "defaults:\n  priority: 2000\n" + JOB,
        "crontab.yaml:2:13: defaults.priority: expected an integer <= 1000, got the integer 2000",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_bad_priority_names_its_place_and_the_job(text: str, expected: str) -> None:
    assert _problems(text) == [expected]

"""The engine on a fake clock, with real subprocesses and a real SQLite state file."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cronplus.clock import FakeClock
from cronplus.core.model import (
    Catchup,
    Crontab,
    Job,
    Outcome,
    Overlap,
    RetryPolicy,
    RunResult,
    Settings,
    Slot,
    StateError,
)
from cronplus.engine.admission import LocalGate, SlotClaim
from cronplus.engine.engine import Engine
from cronplus.engine.events import NoEvents
from cronplus.observe.logs import LOGGER_NAME, EventLog
from cronplus.run.command import Command
from cronplus.run.runner import Runner, RunningProcess
from cronplus.state.sqlite import SqliteStore

S = timedelta(seconds=1)
UTCZ = ZoneInfo("UTC")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore.open(tmp_path / "state.db")
    yield opened
    opened.close()


def crontab(tmp_path: Path, *jobs: Job, max_concurrent: int = 16) -> Crontab:
    settings = Settings(state=tmp_path / "state.db", max_concurrent=max_concurrent)
    return Crontab(path=tmp_path / "crontab.yaml", settings=settings, jobs=jobs)


def job(name: str, schedule: str, command: str, tmp_path: Path, **fields: object) -> Job:
    base = Job(
        name=name,
        schedule=schedule,
        timezone=UTCZ,
        command=command,
        workdir=tmp_path,
        kill_grace=0.5 * S,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def engine(tab: Crontab, store: SqliteStore, clock: FakeClock) -> Engine:
    return Engine(
        tab, store=store, runner=Runner(drain_grace=0.2), clock=clock, base_env={}, log=EventLog()
    )


COUNTER = 'n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ "$n" -ge {0} ]'


def test_a_retry_succeeds_on_the_third_attempt_after_the_backoff_delays(
    tmp_path: Path, store: SqliteStore
) -> None:
    retry = RetryPolicy(retries=3, delay=30 * S, backoff=2.0, max_delay=timedelta(minutes=10))
    flaky = job("flaky", "0 * * * *", COUNTER.format(3), tmp_path, retry=retry)
    clock = FakeClock(utc("2026-01-01T00:00"))

    async def scenario() -> None:
        eng = engine(crontab(tmp_path, flaky), store, clock)
        eng.start_slots([(flaky, utc("2026-01-01T00:00"))], now=clock.now())
        await eng.wait_idle()

    asyncio.run(scenario())
    rows = list(reversed(store.history(job="flaky")))
    assert [row.outcome for row in rows] == [Outcome.FAILED, Outcome.FAILED, Outcome.SUCCEEDED]
    assert [row.attempt for row in rows] == [1, 2, 3]
    assert [row.exit_code for row in rows] == [1, 1, 0]
    gaps = [(b.started_at - a.finished_at) for a, b in pairwise(rows)]
    assert gaps == [30 * S, 60 * S]
    assert (tmp_path / "count").read_text().strip() == "3"


def test_exhausted_retries_log_a_warning_per_attempt_and_one_error(
    tmp_path: Path, store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    failing = job(
        "failing",
        "0 * * * *",
        "echo boom >&2; exit 7",
        tmp_path,
        retry=RetryPolicy(retries=2, delay=S),
    )
    clock = FakeClock(utc("2026-01-01T00:00"))

    async def scenario() -> None:
        eng = engine(crontab(tmp_path, failing), store, clock)
        eng.start_slots([(failing, utc("2026-01-01T00:00"))], now=clock.now())
        await eng.wait_idle()

    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        asyncio.run(scenario())
    rows = store.history(job="failing")
    assert [row.outcome for row in rows] == [Outcome.FAILED] * 3
    assert all(row.exit_code == 7 and "boom" in row.stderr_tail for row in rows)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(warnings) == 3
    assert len(errors) == 1
    text = warnings[-1].getMessage()
    assert "attempt 3/3" in text and "exit 7" in text and "2026-01-01T00:00:00Z" in text
    assert "no retries left" in errors[0].getMessage()


def test_a_pending_retry_is_dropped_when_the_next_slot_comes_first(
    tmp_path: Path, store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    minutely = job(
        "minutely", "* * * * *", "exit 1", tmp_path, retry=RetryPolicy(retries=3, delay=90 * S)
    )
    clock = FakeClock(utc("2026-01-01T00:00"))

    async def scenario() -> None:
        eng = engine(crontab(tmp_path, minutely), store, clock)
        eng.start_slots([(minutely, utc("2026-01-01T00:00"))], now=clock.now())
        await eng.wait_idle()

    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        asyncio.run(scenario())
    assert len(store.history(job="minutely")) == 1
    assert any("next slot comes before the retry" in r.getMessage() for r in caplog.records)


def run_ticks(eng: Engine, clock: FakeClock, until: datetime) -> None:
    """Drive the engine like the daemon loop: jump to each due instant and tick."""

    async def loop() -> None:
        eng.load_jobs(now=clock.now(), ledger={})
        while (due := eng.next_due()) is not None and due <= until:
            clock.advance(max(due - clock.now(), timedelta(0)))
            eng.tick(clock.now())
            await eng.wait_idle()

    asyncio.run(loop())


@pytest.mark.parametrize(
    ("schedule", "expected_local"),
    [
        ("30 2 * * *", ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
        ("0,30 2 * * *", ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"]),
        ("0 */2 * * *", ["2026-03-08T00:00:00-05:00", "2026-03-08T04:00:00-04:00"]),
    ],
    ids=["fixed-time-in-the-gap", "two-slots-one-instant", "wildcard-skips-the-gap"],
)
def test_the_engine_runs_each_dst_slot_once_on_a_spring_forward_night(
    tmp_path: Path, store: SqliteStore, schedule: str, expected_local: list[str]
) -> None:
    ny = ZoneInfo("America/New_York")
    nightly = job("nightly", schedule, "true", tmp_path, timezone=ny)
    clock = FakeClock(datetime(2026, 3, 7, 23, 59, tzinfo=ny))
    eng = engine(crontab(tmp_path, nightly), store, clock)
    run_ticks(eng, clock, datetime(2026, 3, 9, 2, 59, tzinfo=ny))
    slots = sorted({row.scheduled_at for row in store.history(job="nightly", limit=100)})
    local = [slot.astimezone(ny).isoformat() for slot in slots]
    assert local[: len(expected_local)] == expected_local
    assert len(local) == len(set(local))


def test_a_fixed_time_job_runs_once_on_a_fall_back_night(
    tmp_path: Path, store: SqliteStore
) -> None:
    ny = ZoneInfo("America/New_York")
    nightly = job("nightly", "30 1 * * *", "true", tmp_path, timezone=ny)
    clock = FakeClock(datetime(2026, 10, 31, 12, 0, tzinfo=ny))
    eng = engine(crontab(tmp_path, nightly), store, clock)
    run_ticks(eng, clock, datetime(2026, 11, 1, 23, 0, tzinfo=ny))
    local = [row.scheduled_at.astimezone(ny).isoformat() for row in store.history(limit=100)]
    assert sorted(local) == ["2026-11-01T01:30:00-04:00"]


def test_a_week_of_downtime_runs_the_latest_slot_once_and_counts_the_rest(
    tmp_path: Path, store: SqliteStore
) -> None:
    hourly = job("hourly", "0 * * * *", "true", tmp_path, catchup=Catchup.LATEST)
    clock = FakeClock(utc("2026-01-08T00:10"))
    store.advance_ledger([("hourly", utc("2026-01-01T00:00"))])

    async def scenario() -> None:
        eng = engine(crontab(tmp_path, hourly), store, clock)
        eng.load_jobs(now=clock.now(), ledger=store.ledger())
        eng.tick(clock.now())
        await eng.wait_idle()

    asyncio.run(scenario())
    rows = store.history(job="hourly")
    outcomes = sorted((row.outcome, row.scheduled_at) for row in rows)
    assert outcomes == [
        (Outcome.MISSED, utc("2026-01-07T23:00")),
        (Outcome.SUCCEEDED, utc("2026-01-08T00:00")),
    ]
    missed = next(row for row in rows if row.outcome is Outcome.MISSED)
    assert missed.reason.startswith("167 slot(s) missed from 2026-01-01T01:00:00Z")
    assert store.ledger()["hourly"] == utc("2026-01-08T00:00")


def test_a_suspend_of_ten_hours_catches_up_once(tmp_path: Path, store: SqliteStore) -> None:
    every15 = job("every15", "*/15 * * * *", "true", tmp_path, catchup=Catchup.LATEST)
    clock = FakeClock(utc("2026-01-01T00:00:30"))

    async def scenario() -> None:
        eng = engine(crontab(tmp_path, every15), store, clock)
        eng.load_jobs(now=clock.now(), ledger={})
        clock.suspend(timedelta(hours=10, minutes=5))
        eng.tick(clock.now())
        await eng.wait_idle()

    asyncio.run(scenario())
    ran = [row.scheduled_at for row in store.history() if row.outcome is Outcome.SUCCEEDED]
    assert ran == [utc("2026-01-01T10:00")]


def test_a_clock_stepped_back_never_reruns_a_handled_slot(
    tmp_path: Path, store: SqliteStore
) -> None:
    minutely = job("minutely", "* * * * *", "true", tmp_path)
    clock = FakeClock(utc("2026-01-01T00:00:30"))

    async def scenario() -> None:
        eng = engine(crontab(tmp_path, minutely), store, clock)
        eng.load_jobs(now=clock.now(), ledger={})
        for _ in range(5):
            clock.advance(60 * S)
            eng.tick(clock.now())
        clock.step(-timedelta(minutes=10))
        for _ in range(15):
            clock.advance(60 * S)
            eng.tick(clock.now())
        await eng.wait_idle()

    asyncio.run(scenario())
    slots = [row.scheduled_at for row in store.history(limit=100)]
    assert len(slots) == len(set(slots))
    assert max(slots) == utc("2026-01-01T00:10")


def test_a_clock_stepped_forward_counts_the_jumped_slots_as_missed(
    tmp_path: Path, store: SqliteStore
) -> None:
    every5 = job("every5", "*/5 * * * *", "true", tmp_path, catchup=Catchup.SKIP)
    clock = FakeClock(utc("2026-01-01T00:00:30"))

    async def scenario() -> None:
        eng = engine(crontab(tmp_path, every5), store, clock)
        eng.load_jobs(now=clock.now(), ledger={})
        clock.step(timedelta(hours=2))
        eng.tick(clock.now())
        await eng.wait_idle()

    asyncio.run(scenario())
    ran, missed = sorted(store.history(), key=lambda row: row.outcome is Outcome.MISSED)
    assert (ran.outcome, ran.scheduled_at) == (Outcome.SUCCEEDED, utc("2026-01-01T02:00"))
    assert missed.outcome is Outcome.MISSED
    assert missed.reason.startswith(
        "23 slot(s) missed from 2026-01-01T00:05:00Z to 2026-01-01T01:55:00Z"
    )
    assert store.ledger()["every5"] == utc("2026-01-01T02:00")


def test_overlap_forbid_skips_a_slot_while_the_last_run_is_alive(
    tmp_path: Path, store: SqliteStore
) -> None:
    slow = job("slow", "* * * * * *", "sleep 0.5", tmp_path, overlap=Overlap.FORBID)
    clock = FakeClock(utc("2026-01-01T00:00:00.5"))

    async def scenario() -> None:
        eng = engine(crontab(tmp_path, slow), store, clock)
        eng.load_jobs(now=clock.now(), ledger={})
        clock.advance(S)
        eng.tick(clock.now())
        clock.advance(S)
        eng.tick(clock.now())
        await eng.wait_idle()

    asyncio.run(scenario())
    rows = sorted(store.history(), key=lambda row: row.scheduled_at)
    assert [row.outcome for row in rows] == [Outcome.SUCCEEDED, Outcome.SKIPPED_OVERLAP]


def test_overlap_replace_stops_the_old_group_first(tmp_path: Path, store: SqliteStore) -> None:
    slow = job("slow", "* * * * * *", "sleep 30", tmp_path, overlap=Overlap.REPLACE)
    clock = FakeClock(utc("2026-01-01T00:00:00.5"))

    async def scenario() -> None:
        eng = engine(crontab(tmp_path, slow), store, clock)
        eng.load_jobs(now=clock.now(), ledger={})
        clock.advance(S)
        eng.tick(clock.now())
        await asyncio.sleep(0.2)
        clock.advance(S)
        eng.tick(clock.now())
        await asyncio.sleep(1.0)  # the old group gets SIGTERM, then SIGKILL after 0.5 s
        await eng.shutdown(0.2 * S)

    asyncio.run(scenario())
    rows = sorted(store.history(), key=lambda row: row.scheduled_at)
    assert [row.outcome for row in rows] == [Outcome.KILLED, Outcome.INTERRUPTED]
    assert "replaced by the slot 2026-01-01T00:00:02Z" in rows[0].reason


def test_overlap_allow_starts_the_new_run_beside_the_live_one(
    tmp_path: Path, store: SqliteStore
) -> None:
    log = tmp_path / "starts.log"
    command = f"echo $CRONPLUS_SCHEDULED_AT >> {log}; sleep 30"
    slow = job("slow", "* * * * * *", command, tmp_path, overlap=Overlap.ALLOW)
    clock = FakeClock(utc("2026-01-01T00:00:00.5"))

    async def scenario() -> None:
        eng = engine(crontab(tmp_path, slow), store, clock)
        eng.load_jobs(now=clock.now(), ledger={})
        for _ in range(2):
            clock.advance(S)
            eng.tick(clock.now())
            await asyncio.sleep(0.3)
        await eng.shutdown(0.2 * S)

    asyncio.run(scenario())
    assert log.read_text().split() == ["2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z"]
    assert [row.outcome for row in store.history()] == [Outcome.INTERRUPTED] * 2


def test_max_concurrent_queues_the_rest_in_order_and_says_so(
    tmp_path: Path, store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "order.log"
    jobs = [
        job(
            f"j{i}",
            "0 * * * *",
            f"echo start {i} >> {log}; sleep 0.05; echo end {i} >> {log}",
            tmp_path,
        )
        for i in range(4)
    ]
    clock = FakeClock(utc("2026-01-01T00:00"))

    async def scenario() -> None:
        eng = engine(crontab(tmp_path, *jobs, max_concurrent=1), store, clock)
        eng.start_slots([(j, clock.now()) for j in jobs], now=clock.now())
        await asyncio.sleep(0)
        assert eng.queued == 3
        await eng.wait_idle()

    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        asyncio.run(scenario())
    queued = [r for r in caplog.records if getattr(r, "cronplus_event", "") == "queued"]
    assert len(queued) == 3
    assert "waits for a free place (max_concurrent 1)" in queued[0].getMessage()
    lines = log.read_text().split("\n")[:-1]
    assert lines == [f"{what} {i}" for i in range(4) for what in ("start", "end")]


def test_shutdown_terminates_running_jobs_and_records_them_interrupted(
    tmp_path: Path, store: SqliteStore
) -> None:
    stubborn = job("stubborn", "0 * * * *", "trap '' TERM; sleep 30", tmp_path)
    clock = FakeClock(utc("2026-01-01T00:00"))

    async def scenario() -> None:
        eng = engine(crontab(tmp_path, stubborn), store, clock)
        eng.start_slots([(stubborn, clock.now())], now=clock.now())
        await asyncio.sleep(0.2)
        await eng.shutdown(0.3 * S)

    asyncio.run(scenario())
    (row,) = store.history()
    assert row.outcome is Outcome.INTERRUPTED
    assert row.signal == 9


def test_reload_keeps_unchanged_jobs_and_reports_the_diff(
    tmp_path: Path, store: SqliteStore
) -> None:
    keep = job("keep", "0 * * * *", "true", tmp_path)
    change = job("change", "0 * * * *", "true", tmp_path)
    drop = job("drop", "0 * * * *", "true", tmp_path)
    clock = FakeClock(utc("2026-01-01T00:30"))

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        eng = engine(crontab(tmp_path, keep, change, drop), store, clock)
        eng.load_jobs(now=clock.now(), ledger={})
        before = {state.job.name: state for state in eng.jobs()}
        added = job("added", "*/5 * * * *", "true", tmp_path)
        new = crontab(tmp_path, keep, replace(change, schedule="15 * * * *"), added)
        diff = eng.reload(new, now=clock.now())
        after = {state.job.name: state for state in eng.jobs()}
        assert after["keep"] is before["keep"]
        assert after["change"].next_due == utc("2026-01-01T01:15")
        return diff

    assert asyncio.run(scenario()) == (["added"], ["drop"], ["change"])


def test_a_tick_starts_on_time_slots_before_finding_their_next_slots(
    tmp_path: Path, store: SqliteStore
) -> None:
    early = job("early", "0 * * * *", "true", tmp_path)
    yearly = job("yearly", "0 0 1 1 *", "true", tmp_path, timezone=ZoneInfo("America/New_York"))
    clock = FakeClock(utc("2026-01-01T04:59:59.5"))

    async def scenario() -> tuple[list[str], list[str | None], datetime | None]:
        eng = engine(crontab(tmp_path, early, yearly), store, clock)
        eng.load_jobs(now=clock.now(), ledger={})
        clock.advance(S / 2)  # 05:00:00 UTC: both due, on time
        started = eng.tick(clock.now())
        # Not searched yet: the tick left each job's next slot for after its starts.
        pending = [
            None if s.next_due is None else s.next_due.isoformat()
            for s in eng._table._jobs.values()
        ]
        following = eng.next_due()  # any reader queues them first
        await eng.wait_idle()
        return [run.job.name for run in started], pending, following

    started, pending, following = asyncio.run(scenario())
    assert started == ["early", "yearly"]
    assert pending == [None, None]
    assert following == utc("2026-01-01T06:00")  # early's next; yearly's is a year away
    assert store.ledger() == {"early": utc("2026-01-01T05:00"), "yearly": utc("2026-01-01T05:00")}


class Recorder(NoEvents):
    """Notes each attempt the engine announces, after the spawns that ``SpawnOrder`` notes."""

    def __init__(self, order: list[str]) -> None:
        self.order = order

    def attempt_started(
        self, *, job: Job, slot: Slot, attempt: int, pid: int | None, at: datetime
    ) -> None:
        self.order.append(f"announced {job.name}")


class SpawnOrder(Runner):
    def __init__(self, order: list[str]) -> None:
        super().__init__(drain_grace=0.2)
        self.order = order

    def start(self, command: Command) -> RunningProcess:
        process = super().start(command)
        self.order.append(f"spawned {command.env['CRONPLUS_JOB']}")
        return process


def test_the_slots_due_at_once_all_spawn_before_any_is_announced(
    tmp_path: Path, store: SqliteStore
) -> None:
    names = [f"job{n}" for n in range(5)]
    tab = crontab(tmp_path, *(job(name, "0 * * * *", "true", tmp_path) for name in names))
    clock = FakeClock(utc("2026-01-01T04:59:59.5"))
    order: list[str] = []

    async def scenario() -> None:
        eng = Engine(
            tab,
            store=store,
            runner=SpawnOrder(order),
            clock=clock,
            base_env={},
            log=EventLog(),
            events=Recorder(order),
        )
        eng.load_jobs(now=clock.now(), ledger={})
        clock.advance(S / 2)
        eng.tick(clock.now())
        await eng.wait_idle()

    asyncio.run(scenario())
    # Bookkeeping after a spawn waits a loop turn, so the last job of a burst starts sooner.
    assert order == [f"spawned {n}" for n in names] + [f"announced {n}" for n in names]
    assert [r.outcome for r in store.history(limit=10)] == [Outcome.SUCCEEDED] * 5


def test_a_reload_that_changes_a_job_but_not_its_next_slot_starts_that_slot_once(
    tmp_path: Path, store: SqliteStore
) -> None:
    # The reload queues the changed job's next slot while the tick's entry for that same
    # slot is still queued; before 9b3115e both entries started it (overlap: allow ran it
    # twice; forbid recorded a false skip).
    every = job("every", "* * * * * *", "true", tmp_path, overlap=Overlap.ALLOW)
    changed = replace(every, env={"CHANGED": "1"})  # same schedule, so the same next slot
    clock = FakeClock(utc("2026-01-01T00:00"))

    async def scenario() -> list[int]:
        eng = engine(crontab(tmp_path, every), store, clock)
        eng.load_jobs(now=clock.now(), ledger={})
        counts = []
        for step in range(3):
            clock.advance(S)
            counts.append(len(eng.tick(clock.now())))
            if step == 0:
                eng.reload(crontab(tmp_path, changed), now=clock.now())
            counts.append(len(eng.tick(clock.now())))  # the same instant again: nothing
        await eng.wait_idle()
        return counts

    assert asyncio.run(scenario()) == [1, 0, 1, 0, 1, 0]
    slots = sorted(row.scheduled_at for row in store.history(job="every"))
    assert slots == [
        utc("2026-01-01T00:00:01"),
        utc("2026-01-01T00:00:02"),
        utc("2026-01-01T00:00:03"),
    ]


# --- a run that fails inside cronplus ------------------------------------------------------


class Faults:
    """Failures armed by a test, each raised once by the piece that checks for it."""

    def __init__(self) -> None:
        self.armed: dict[str, type[Exception]] = {}

    def check(self, point: str) -> None:
        error = self.armed.pop(point, None)
        if error is not None:
            raise error(f"injected at {point}")


class FaultyStore(SqliteStore):
    """The real SQLite store, but noting or ending an attempt may fail (a full disk)."""

    faults = Faults()

    def begin_attempt(
        self,
        *,
        job: str,
        scheduled_at: datetime,
        attempt: int,
        started_at: datetime,
        pid: int | None,
    ) -> int:
        self.faults.check("begin_attempt")
        return super().begin_attempt(
            job=job, scheduled_at=scheduled_at, attempt=attempt, started_at=started_at, pid=pid
        )

    def end_attempt(self, attempt_id: int, result: RunResult, *, keep: int) -> None:
        self.faults.check("end_attempt")
        super().end_attempt(attempt_id, result, keep=keep)


class FaultyRunner(Runner):
    def __init__(self, faults: Faults) -> None:
        super().__init__(drain_grace=0.2)
        self.faults = faults

    def start(self, command: Command) -> RunningProcess:
        self.faults.check("start")
        return super().start(command)


class FaultyEvents(NoEvents):
    def __init__(self, faults: Faults) -> None:
        self.faults = faults

    def attempt_started(
        self, *, job: Job, slot: Slot, attempt: int, pid: int | None, at: datetime
    ) -> None:
        self.faults.check("attempt_started")


class FaultyGate(LocalGate):
    def __init__(self, faults: Faults) -> None:
        self.faults = faults

    async def claim(self, job: Job, slot: datetime) -> SlotClaim | None:
        self.faults.check("claim")
        return await super().claim(job, slot)


class FaultyClock(FakeClock):
    def __init__(self, start: datetime, faults: Faults) -> None:
        super().__init__(start)
        self.faults = faults

    async def sleep_until(
        self, instant: datetime, *, max_seconds: float, precise: bool = False
    ) -> None:
        self.faults.check("sleep_until")
        await super().sleep_until(instant, max_seconds=max_seconds, precise=precise)


@pytest.mark.parametrize(
    ("point", "error", "command", "rows"),
    [
        ("end_attempt", StateError, "true", [(1, 0, "(the attempt itself succeeded, exit 0)")]),
        ("begin_attempt", StateError, "exit 4", [(1, 4, "(the attempt itself failed, exit 4)")]),
        ("attempt_started", RuntimeError, "sleep 30", [(1, None, "")]),
        ("start", RuntimeError, "true", [(1, None, "")]),
        ("claim", RuntimeError, "true", [(1, None, "")]),
        ("sleep_until", RuntimeError, "exit 1", [(1, 1, None), (2, None, "")]),
    ],
    ids=[
        "store-ending-the-attempt",
        "store-noting-the-attempt",
        "observer-of-the-start",
        "runner-starting-it",
        "slot-gate",
        "clock-in-the-retry-wait",
    ],
)
def test_an_exception_inside_a_run_is_logged_recorded_as_failed_and_the_engine_goes_on(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    point: str,
    error: type[Exception],
    command: str,
    rows: list[tuple[int, int | None, str | None]],
) -> None:
    faults = Faults()
    store = FaultyStore.open(tmp_path / "state.db")
    assert isinstance(store, FaultyStore)
    store.faults = faults
    broken = job("broken", "0 * * * *", command, tmp_path, retry=RetryPolicy(retries=1, delay=S))
    after = job("after", "0 * * * *", "true", tmp_path)
    clock = FaultyClock(utc("2026-01-01T00:00"), faults)
    runner = FaultyRunner(faults)

    async def scenario() -> None:
        eng = Engine(
            crontab(tmp_path, broken, after),
            store=store,
            runner=runner,
            clock=clock,
            base_env={},
            log=EventLog(),
            events=FaultyEvents(faults),
            gate=FaultyGate(faults),
        )
        faults.armed[point] = error
        eng.start_slots([(broken, utc("2026-01-01T00:00"))], now=clock.now())
        await eng.wait_idle()
        eng.start_slots([(after, utc("2026-01-01T00:00"))], now=clock.now())
        await eng.wait_idle()
        for _ in range(100):  # a process whose run crashed is stopped, not left running
            if not runner.running():
                break
            await asyncio.sleep(0.05)

    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        asyncio.run(scenario())
    history = list(reversed(store.history(job="broken")))
    (later,) = store.history(job="after")
    store.close()
    crashes = [r for r in caplog.records if getattr(r, "cronplus_event", "") == "run_crashed"]
    in_flight = sqlite3.connect(tmp_path / "state.db").execute("SELECT count(*) FROM in_flight")

    reason = f"cronplus failed while running it: {error.__name__}: injected at {point}"
    assert len(crashes) == 1 and crashes[0].levelno == logging.ERROR
    fields = getattr(crashes[0], "cronplus_fields", {})
    assert (fields["job"], fields["run_id"]) == ("broken", "broken@2026-01-01T00:00:00Z")
    assert fields["attempt"] == rows[-1][0] and f"injected at {point}" in fields["traceback"]
    assert [(r.attempt, r.exit_code) for r in history] == [row[:2] for row in rows]
    assert all(r.outcome is Outcome.FAILED for r in history)
    assert history[-1].reason == reason + (f" {rows[-1][2]}" if rows[-1][2] else "")
    assert in_flight.fetchone() == (0,)
    assert later.outcome is Outcome.SUCCEEDED
    assert runner.running() == []

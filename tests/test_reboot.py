"""``@reboot``: a job that runs once at each start of the daemon, on a fake clock.

It parses and describes itself, has no instant for ``next`` and no slot for ``run-once``;
its one slot is the daemon's start (to the second), which it runs whatever ``catchup``
says, retries as any job, and never runs for a reload or again while the daemon runs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cronplus.clock import FakeClock
from cronplus.config import loader
from cronplus.core import plan
from cronplus.core.model import (
    Catchup,
    Crontab,
    Job,
    Outcome,
    RetryPolicy,
    ScheduleError,
    Settings,
    Trigger,
)
from cronplus.core.schedule import Reboot, Schedule, start_slot
from cronplus.daemon.loop import Daemon
from cronplus.engine.engine import Engine
from cronplus.engine.timetable import compile_job
from cronplus.observe.logs import LOGGER_NAME, EventLog
from cronplus.run.runner import Runner
from cronplus.state.sqlite import SqliteStore

S = timedelta(seconds=1)
UTCZ = ZoneInfo("UTC")
START = datetime(2026, 3, 1, 9, 30, 0, 400_000, tzinfo=UTC)
"""The daemon's start: 0.4 s into a second, so the slot is that whole second."""
SLOT = START.replace(microsecond=0)
COUNTER = 'n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ "$n" -ge {0} ]'
NOTE_RUN = 'echo "$CRONPLUS_RUN_ID $CRONPLUS_ATTEMPT" >> runs.txt'


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore.open(tmp_path / "state.db")
    yield opened
    opened.close()


def job(name: str, schedule: str, command: str, tmp_path: Path, **fields: Any) -> Job:
    base = Job(
        name=name,
        schedule=schedule,
        timezone=UTCZ,
        command=command,
        workdir=tmp_path,
        kill_grace=0.5 * S,
    )
    return replace(base, **fields)


def crontab(tmp_path: Path, *jobs: Job) -> Crontab:
    settings = Settings(state=tmp_path / "state.db")
    return Crontab(path=tmp_path / "crontab.yaml", settings=settings, jobs=jobs)


def engine(tab: Crontab, store: SqliteStore, clock: FakeClock) -> Engine:
    return Engine(
        tab, store=store, runner=Runner(drain_grace=0.2), clock=clock, base_env={}, log=EventLog()
    )


def drive(eng: Engine, clock: FakeClock, until: datetime) -> None:
    """Tick as the loop does, at each due instant up to ``until``, each run finished."""

    async def loop() -> None:
        while (due := eng.next_due()) is not None and due <= until:
            clock.advance(max(due - clock.now(), timedelta(0)))
            eng.tick(clock.now())
            await eng.wait_idle()

    asyncio.run(loop())


def start(eng: Engine, clock: FakeClock, store: SqliteStore, until: datetime) -> None:
    """A daemon start at the clock's instant, then its ticks up to ``until``."""
    eng.load_jobs(now=clock.now(), ledger=store.ledger())
    drive(eng, clock, until)


def runs(tmp_path: Path) -> list[str]:
    path = tmp_path / "runs.txt"
    return path.read_text().splitlines() if path.exists() else []


# --- the schedule -----------------------------------------------------------------------


@pytest.mark.parametrize("expression", ["@reboot", "@REBOOT", " @Reboot\t"])
def test_reboot_parses_to_a_schedule_without_fires_that_says_when_it_runs(
    expression: str,
) -> None:
    schedule = Schedule.parse(expression, zone=UTCZ, job_name="boot")
    assert schedule.reboot
    assert schedule.describe() == "at daemon start"
    assert (schedule.wildcard, schedule.has_seconds) == (False, False)
    assert list(schedule.iter_after(START)) == []
    assert schedule.previous_before(START) is None
    assert schedule.count_between(START - timedelta(days=400), START) == 0
    with pytest.raises(ScheduleError, match="has no fire instants: it runs at daemon start"):
        schedule.next_after(START)


def test_other_schedules_are_not_reboot() -> None:
    assert not Schedule.parse("@daily", zone=UTCZ, job_name="x").reboot
    assert not Schedule.parse("* * * * * *", zone=UTCZ, job_name="x").reboot


def test_a_crontab_with_a_reboot_job_loads(tmp_path: Path) -> None:
    path = tmp_path / "crontab.yaml"
    path.write_text("jobs:\n  boot:\n    schedule: '@reboot'\n    command: ['true']\n")
    (loaded,) = loader.load(path, env={"PATH": os.environ["PATH"]}).jobs
    assert loaded.schedule == "@reboot"


@pytest.mark.parametrize(
    ("handled", "slot"),
    [
        (None, "2026-03-01T09:30:00"),
        ("2026-02-28T08:00:00", "2026-03-01T09:30:00"),
        ("2026-03-01T09:30:00", "2026-03-01T09:30:01"),
        ("2026-03-01T09:30:00.200000", "2026-03-01T09:30:01"),
        ("2026-03-01T10:00:00", "2026-03-01T10:00:01"),
    ],
    ids=[
        "new-job",
        "earlier-start",
        "restart-in-the-same-second",
        "ledger-mid-second",
        "clock-set-back",
    ],
)
def test_the_start_slot_is_the_starts_second_or_the_one_after_the_ledger(
    handled: str | None, slot: str
) -> None:
    ledger = None if handled is None else utc(handled)
    assert start_slot(START, handled=ledger) == utc(slot)


def test_a_reboot_slot_has_nothing_after_it() -> None:
    bound = Reboot(at=SLOT)
    assert bound.next_after(SLOT - S) == SLOT
    assert bound.next_after(SLOT) is None
    assert Reboot().next_after(SLOT) is None
    assert bound.describe() == "at daemon start"


def test_compile_job_gives_a_reboot_job_a_reboot_without_a_slot(tmp_path: Path) -> None:
    assert compile_job(job("boot", "@reboot", "true", tmp_path)) == Reboot()


def test_its_slot_runs_however_late_and_whatever_catchup_says(tmp_path: Path) -> None:
    boot = job("boot", "@reboot", "true", tmp_path, catchup=Catchup.SKIP)
    late = SLOT + timedelta(minutes=5)
    decided = plan.pending(boot, Reboot(at=SLOT), handled=SLOT - S, now=late)
    assert (decided.run, decided.missed, decided.handled) == ((SLOT,), 0, SLOT)
    assert plan.pending(boot, Reboot(at=SLOT), handled=SLOT, now=late) == plan.NOTHING
    assert plan.pending(boot, Reboot(), handled=SLOT, now=late) == plan.NOTHING


def test_run_once_has_no_slot_for_it(tmp_path: Path) -> None:
    schedule = compile_job(job("boot", "@reboot", "true", tmp_path))
    assert plan.first_in_minute(schedule, START) is None
    parsed = Schedule.parse("@reboot", zone=UTCZ, job_name="boot")
    assert plan.first_in_minute(parsed, START) is None


# --- the engine -------------------------------------------------------------------------


def test_it_runs_once_at_the_start_and_not_again_while_the_daemon_runs(
    tmp_path: Path, store: SqliteStore
) -> None:
    boot = job("boot", "@reboot", NOTE_RUN, tmp_path)
    minutely = job("minutely", "* * * * *", "true", tmp_path)
    clock = FakeClock(START)
    eng = engine(crontab(tmp_path, boot, minutely), store, clock)
    start(eng, clock, store, until=START + timedelta(minutes=10))
    assert runs(tmp_path) == ["boot@2026-03-01T09:30:00Z 1"]
    (row,) = store.history(job="boot")
    assert (row.scheduled_at, row.outcome) == (SLOT, Outcome.SUCCEEDED)
    assert len(store.history(job="minutely", limit=100)) == 10
    state = next(s for s in eng.jobs() if s.job.name == "boot")
    assert state.next_due is None  # no next slot, no heap entry
    assert eng.upcoming() is not None and eng.upcoming()[1] == "minutely"  # type: ignore[index]


def test_it_runs_at_each_start_with_that_starts_slot(tmp_path: Path, store: SqliteStore) -> None:
    boot = job("boot", "@reboot", NOTE_RUN, tmp_path)
    tab = crontab(tmp_path, boot)
    clock = FakeClock(START)
    start(engine(tab, store, clock), clock, store, until=START + S)
    clock.advance(timedelta(hours=3))  # stopped, started again later
    start(engine(tab, store, clock), clock, store, until=clock.now() + S)
    clock.advance(timedelta(milliseconds=300))  # a restart within the same second
    start(engine(tab, store, clock), clock, store, until=clock.now() + 2 * S)
    assert runs(tmp_path) == [
        "boot@2026-03-01T09:30:00Z 1",
        "boot@2026-03-01T12:30:00Z 1",
        "boot@2026-03-01T12:30:01Z 1",  # not a second run id for one second
    ]


def test_a_late_first_tick_still_runs_it_even_with_catchup_skip(
    tmp_path: Path, store: SqliteStore
) -> None:
    boot = job("boot", "@reboot", NOTE_RUN, tmp_path, catchup=Catchup.SKIP)
    clock = FakeClock(START)
    eng = engine(crontab(tmp_path, boot), store, clock)
    eng.load_jobs(now=clock.now(), ledger={})
    clock.advance(timedelta(minutes=5))  # a slow start-up, or a suspend
    drive(eng, clock, until=clock.now())
    assert runs(tmp_path) == ["boot@2026-03-01T09:30:00Z 1"]
    assert [row.outcome for row in store.history(job="boot")] == [Outcome.SUCCEEDED]
    # History says the start began it, not a catch-up, however late the tick came.
    assert [row.trigger for row in store.history(job="boot")] == [Trigger.START]


def test_a_failing_reboot_job_retries_with_its_backoff(tmp_path: Path, store: SqliteStore) -> None:
    retry = RetryPolicy(retries=3, delay=30 * S, backoff=2.0)
    command = f"{NOTE_RUN}; {COUNTER.format(3)}"
    flaky = job("flaky", "@reboot", command, tmp_path, retry=retry, timeout=10 * S)
    clock = FakeClock(START)
    eng = engine(crontab(tmp_path, flaky), store, clock)
    start(eng, clock, store, until=START + S)
    rows = list(reversed(store.history(job="flaky")))
    assert [row.outcome for row in rows] == [Outcome.FAILED, Outcome.FAILED, Outcome.SUCCEEDED]
    assert {row.scheduled_at for row in rows} == {SLOT}
    assert [b.started_at - a.finished_at for a, b in itertools.pairwise(rows)] == [
        30 * S,
        60 * S,
    ]
    assert runs(tmp_path) == [f"flaky@2026-03-01T09:30:00Z {n}" for n in (1, 2, 3)]


def test_run_job_runs_it_and_retries_it(tmp_path: Path, store: SqliteStore) -> None:
    flaky = job("flaky", "@reboot", COUNTER.format(2), tmp_path, retry=RetryPolicy(retries=1))
    clock = FakeClock(START)

    async def scenario() -> None:
        eng = engine(crontab(tmp_path, flaky), store, clock)
        eng.start_slots([(flaky, SLOT)], now=clock.now())
        await eng.wait_idle()

    asyncio.run(scenario())
    assert [row.outcome for row in store.history(job="flaky")] == [
        Outcome.SUCCEEDED,
        Outcome.FAILED,
    ]


def test_a_reload_runs_no_reboot_job_it_adds_or_changes(tmp_path: Path, store: SqliteStore) -> None:
    boot = job("boot", "@reboot", NOTE_RUN, tmp_path)
    minutely = job("minutely", "* * * * *", "true", tmp_path)
    clock = FakeClock(START)
    eng = engine(crontab(tmp_path, boot, minutely), store, clock)
    start(eng, clock, store, until=START + timedelta(minutes=2))
    added = job("added", "@reboot", NOTE_RUN, tmp_path)
    changed = replace(boot, env={"NEW": "1"})
    became = replace(minutely, schedule="@reboot", command=NOTE_RUN)
    reloaded = eng.reload(crontab(tmp_path, changed, became, added), now=clock.now())
    assert reloaded == (["added"], [], ["boot", "minutely"])
    drive(eng, clock, until=clock.now() + timedelta(hours=1))
    assert runs(tmp_path) == ["boot@2026-03-01T09:30:00Z 1"]
    assert all(state.next_due is None for state in eng.jobs())


def test_a_reload_before_the_first_tick_keeps_the_starts_slot(
    tmp_path: Path, store: SqliteStore
) -> None:
    boot = job("boot", "@reboot", "true", tmp_path)
    clock = FakeClock(START)
    eng = engine(crontab(tmp_path, boot), store, clock)
    eng.load_jobs(now=clock.now(), ledger={})
    eng.reload(crontab(tmp_path, replace(boot, command=NOTE_RUN)), now=clock.now())
    drive(eng, clock, until=START + timedelta(minutes=5))
    assert runs(tmp_path) == ["boot@2026-03-01T09:30:00Z 1"]  # once, the new definition


# --- the daemon -------------------------------------------------------------------------


def test_the_daemon_logs_it_at_start_runs_it_once_and_a_reload_says_it_waits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "crontab.yaml"
    first = f"settings:\n  state: {tmp_path / 'state.db'}\njobs:\n"
    boot = f"  boot:\n    schedule: '@reboot'\n    timezone: UTC\n    command: '{NOTE_RUN}'\n"
    path.write_text(first + boot)
    env = {"PATH": os.environ["PATH"]}
    tab = loader.load(path, env=env)
    store = SqliteStore.open(tab.settings.state)
    clock = FakeClock(START)
    daemon = Daemon(path, tab, store=store, clock=clock, env=env)

    async def scenario() -> None:
        await daemon._start_up()
        try:
            daemon._log_next_runs()
            for _ in range(3):
                daemon.engine.tick(clock.now())
                await daemon.engine.wait_idle()
                clock.advance(timedelta(minutes=1))
            path.write_text(first + boot + boot.replace("  boot:", "  later:"))
            daemon.reload("test")
            daemon.engine.tick(clock.now())
            await daemon.engine.wait_idle()
        finally:
            await daemon.observe.close()

    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        try:
            asyncio.run(scenario())
        finally:
            store.close()
    assert runs(tmp_path) == ["boot@2026-03-01T09:30:00Z 1"]
    messages = {getattr(r, "cronplus_event", None): r.getMessage() for r in caplog.records}
    assert messages["next_run"] == (
        "job boot runs at this start of the daemon (@reboot), that is at "
        "2026-03-01T09:30:00+00:00 (UTC)"
    )
    assert messages["reboot_waits"] == (
        "job later runs at daemon start (@reboot): the reload (test) that added it does not"
        " run it; the next start of the daemon will"
    )


# --- a cluster node ---------------------------------------------------------------------


def test_a_node_runs_its_own_start_without_a_claim_or_a_wait() -> None:
    from test_node import JOB, FakeDb, node

    from cronplus.cluster.decisions import rendezvous

    boot = replace(JOB, schedule="@reboot")
    last = rendezvous("backup", SLOT, ["a", "b", "c"])[-1]  # a preferred node would wait
    db, clock = FakeDb(node=last), FakeClock(SLOT)
    member = node(db, clock, job=boot)

    async def scenario() -> Any:
        await member.join()
        held = await member.claim(boot, SLOT)
        assert held is not None
        return held, await held.confirm(1, waited=True)

    held, refused = asyncio.run(scenario())
    assert held.own_start and refused is None
    assert clock.now() == SLOT  # no place in the claim order to wait for
    assert (db.claims, db.confirms) == ([], [])
    assert member.held("backup", SLOT) is None  # nothing to renew or take over
    held.release(started=True)
    assert member.queued == ()


@pytest.mark.parametrize("why", ["run_on", "refusing"])
def test_a_node_that_may_not_run_it_does_not(why: str) -> None:
    from test_node import JOB, FakeDb, node

    boot = replace(JOB, schedule="@reboot")
    if why == "run_on":
        boot = replace(boot, run_on=frozenset({"gpu"}))
    db = FakeDb(definitions="0123456789abcdef" if why == "refusing" else None)
    member = node(db, job=boot)

    async def scenario() -> object:
        await member.join()
        return await member.claim(boot, SLOT)

    assert asyncio.run(scenario()) is None
    assert db.claims == []


# --- the commands and the installed daemon ----------------------------------------------

BOOT_AND_DAILY = """\
settings:
  state: {state}
jobs:
  boot:
    schedule: '@reboot'
    timezone: UTC
    command: ['true']
  daily:
    schedule: '@daily'
    timezone: UTC
    command: ['true']
"""


def test_next_and_list_show_it_at_daemon_start_with_no_instant(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    path = tmp_path / "crontab.yaml"
    path.write_text(BOOT_AND_DAILY.format(state=tmp_path / "state.db"))

    def cronplus(*args: str) -> str:
        command = [sys.executable, "-m", "cronplus", "-c", str(path), *args]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        return done.stdout

    table = cronplus("next", "-n", "1", "--after", "2026-03-01T12:00:00Z").splitlines()
    assert table[1:] == [
        "2026-03-02T00:00:00Z  2026-03-02T00:00:00+00:00  daily",
        "at daemon start       -                          boot",
    ]
    listed = json.loads(cronplus("next", "boot", "--json"))
    assert listed == []  # instants only
    rows = {row["job"]: row for row in json.loads(cronplus("list", "--json"))}
    assert (rows["boot"]["meaning"], rows["boot"]["next_utc"]) == ("at daemon start", None)
    assert "would run" not in cronplus("run-once", "--dry-run", "--at", "2026-03-01T12:00:30Z")


def test_the_installed_daemon_runs_it_at_start_and_not_for_a_sighup(
    tmp_path: Path, daemons: Any
) -> None:
    import signal

    from conftest import Cronplus

    cp = Cronplus(tmp_path)
    boot, later, tick = (tmp_path / f"{name}.txt" for name in ("boot", "later", "tick"))

    def job_text(name: str, schedule: str, out: Path) -> str:
        fire = f'echo "$CRONPLUS_RUN_ID" >> {out}'
        return f"  {name}:\n    schedule: '{schedule}'\n    timezone: UTC\n    command: '{fire}'\n"

    jobs = job_text("boot", "@reboot", boot) + job_text("tick", "* * * * * *", tick)
    cp.write(f"settings:\n  shutdown_grace: 2s\njobs:\n{jobs}")
    daemon = daemons()
    daemon.wait_for(lambda: boot.exists() and tick.exists())
    cp.write(f"settings:\n  shutdown_grace: 2s\njobs:\n{jobs}{job_text('later', '@reboot', later)}")
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("reboot_waits")
    ticks = len(tick.read_text().split())
    daemon.wait_for(lambda: len(tick.read_text().split()) >= ticks + 1)
    assert daemon.stop() == 0
    (run_id,) = boot.read_text().split()
    assert run_id.startswith("boot@")
    assert not later.exists()

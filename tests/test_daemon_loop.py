"""The daemon's loop in process: a long sleep is cut short by a reload or a stop, a
cancellation that is not the loop's own still ends it, an idle sleep runs a pass only where
a slot comes due within a slice or the clock jumps, and the garbage collector keeps out of
start-up and of a tick's starts."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cronplus.clock import Clock, FakeClock, SystemClock
from cronplus.config import loader
from cronplus.core import collector
from cronplus.core.model import CronplusError
from cronplus.daemon.loop import Daemon
from cronplus.engine.slotrun import SlotRun
from cronplus.observe.control import socket_path
from cronplus.observe.logs import LOGGER_NAME
from cronplus.run.runner import Command, Runner, RunningProcess
from cronplus.state.sqlite import SqliteStore

IDLE = "jobs:\n  later:\n    schedule: '0 0 1 1 *'\n    timezone: UTC\n    command: ['true']\n"
EVERY_SECOND = "jobs:\n  soon:\n    schedule: '* * * * * *'\n    command: ['true']\n"
NEW_YEAR = datetime(2027, 1, 1, tzinfo=UTC)
"""When IDLE's job comes due."""


def daemon_on(
    tmp_path: Path, text: str, clock: Clock | None = None, env: dict[str, str] | None = None
) -> Daemon:
    path = tmp_path / "crontab.yaml"
    path.write_text(f"settings:\n  state: {tmp_path / 'state.db'}\n{text}")
    env = {"PATH": os.environ["PATH"], **(env or {})}
    crontab = loader.load(path, env=env)
    store = SqliteStore.open(crontab.settings.state)
    return Daemon(path, crontab, store=store, clock=clock or SystemClock(), env=env)


def noting_passes(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, *, stop_after: int
) -> list[tuple[datetime, int]]:
    """(now, slots started) for each of the loop's ticks; the daemon stops at the
    ``stop_after``-th."""
    passes: list[tuple[datetime, int]] = []
    tick = daemon.engine.tick

    def noting(now: datetime) -> list[SlotRun]:
        started = tick(now)
        passes.append((now, len(started)))
        if len(passes) == stop_after:
            daemon.stop("test")
        return started

    monkeypatch.setattr(daemon.engine, "tick", noting)
    return passes


async def asleep(tmp_path: Path) -> tuple[Daemon, asyncio.Task[None]]:
    """A daemon on the idle crontab, once its loop sleeps (its 30 s cap: the only job is
    months away), and the task that runs it."""
    daemon = daemon_on(tmp_path, IDLE)
    task = asyncio.create_task(daemon.run())
    for _ in range(1000):
        await asyncio.sleep(0.01)
        if daemon._sleeper is task:
            return daemon, task
    raise AssertionError("the daemon's loop never went to sleep")


def test_a_reload_cuts_a_long_sleep_short_and_the_new_job_runs(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        daemon, task = await asleep(tmp_path)
        daemon.path.write_text(daemon.path.read_text().replace(IDLE, EVERY_SECOND))
        daemon.reload("test")
        store = SqliteStore.open(tmp_path / "state.db", readonly=True)
        try:
            for _ in range(300):  # 3 s: far less than the 30 s the loop was sleeping
                ran = [r.job for r in store.history(job="soon", limit=5)]
                if ran:
                    break
                await asyncio.sleep(0.01)
        finally:
            store.close()
        assert not task.done()  # the interrupted sleep did not end the loop
        daemon.stop("test")
        await asyncio.wait_for(task, 10)
        return ran

    assert asyncio.run(scenario()) == ["soon"]


def test_a_stop_ends_the_sleeping_loop_at_once(tmp_path: Path) -> None:
    async def scenario() -> float:
        daemon, task = await asleep(tmp_path)
        loop = asyncio.get_running_loop()
        began = loop.time()
        daemon.stop("test")
        await asyncio.wait_for(task, 10)
        return loop.time() - began

    assert asyncio.run(scenario()) < 5  # not the rest of a 30 s sleep


def test_a_cancellation_that_is_not_a_wake_up_still_ends_the_loop(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon, task = await asleep(tmp_path)
        daemon._wake_up()  # a wake-up and a real cancel in the same turn
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)

    asyncio.run(scenario())


def test_a_cancelled_run_closes_the_control_socket(tmp_path: Path) -> None:
    async def scenario() -> tuple[bool, Path]:
        daemon, task = await asleep(tmp_path)
        control = socket_path(daemon.engine.crontab.settings.state)
        listening = control.is_socket()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        return listening, control

    listening, control = asyncio.run(scenario())
    assert listening
    assert not control.exists()


def test_an_idle_sleep_runs_a_pass_only_once_the_slot_is_within_a_slice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(NEW_YEAR - timedelta(minutes=10))
    daemon = daemon_on(tmp_path, IDLE, clock)
    passes = noting_passes(daemon, monkeypatch, stop_after=3)
    beats: list[object] = []
    idle_slice = daemon._idle_slice

    def beating() -> bool:
        idle = idle_slice()
        beats.append(daemon.observe.status()["heartbeat_age_s"])
        return idle

    monkeypatch.setattr(daemon, "_idle_slice", beating)
    asyncio.run(daemon.run())
    start = NEW_YEAR - timedelta(minutes=10)
    # Not one pass per 30 s slice (21 of them): the start, the slice that finds the slot
    # within the next, and the slot, started on time.
    assert passes == [(start, 0), (NEW_YEAR - timedelta(seconds=30), 0), (NEW_YEAR, 1)]
    # Then the split sleep up to the slot: 1 % short of it, then the rest, precisely.
    assert clock.sleeps[:21] == [30.0] * 19 + [pytest.approx(29.7), pytest.approx(0.3)]
    assert clock.precise == [pytest.approx(0.3)]
    assert beats == [0.0] * 19  # every slice counts as the loop alive, as a pass does


def test_a_clock_jump_in_an_idle_sleep_ends_it_at_that_slice_and_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    clock = FakeClock(start)
    daemon = daemon_on(tmp_path, IDLE, clock)
    passes = noting_passes(daemon, monkeypatch, stop_after=2)
    slices = 0
    idle_slice = daemon._idle_slice

    def suspending() -> bool:
        nonlocal slices
        slices += 1
        if slices == 3:
            clock.suspend(timedelta(hours=2))  # the host slept in the third slice
        return idle_slice()

    monkeypatch.setattr(daemon, "_idle_slice", suspending)
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        asyncio.run(daemon.run())
    assert slices == 3
    assert [now for now, _ in passes] == [start, start + timedelta(hours=2, seconds=90)]
    jumps = [r for r in caplog.records if getattr(r, "cronplus_event", None) == "clock_jump"]
    assert [getattr(r, "cronplus_fields", {}).get("seconds") for r in jumps] == [7200.0]


def test_under_systemds_watchdog_a_slice_is_half_its_interval_and_each_one_feeds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"cronplus-test-{os.getpid()}-{id(tmp_path)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name)  # an abstract socket: no path to outgrow sun_path
        manager.setblocking(False)
        clock = FakeClock(NEW_YEAR - timedelta(minutes=1))
        watchdog = {"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "10000000"}
        daemon = daemon_on(tmp_path, IDLE, clock, env=watchdog)
        passes = noting_passes(daemon, monkeypatch, stop_after=3)
        messages: list[bytes] = []

        def receive() -> None:
            with contextlib.suppress(BlockingIOError):
                while True:
                    messages.append(manager.recv(4096))

        async def scenario() -> None:
            # Read as the daemon sends: a datagram socket's queue holds only a few.
            asyncio.get_running_loop().add_reader(manager.fileno(), receive)
            await daemon.run()
            receive()

        asyncio.run(scenario())
    # 10 s of watchdog: slices of 5 s, the last pass before the slot one slice ahead of it.
    assert [now for now, _ in passes] == [
        NEW_YEAR - timedelta(minutes=1),
        NEW_YEAR - timedelta(seconds=5),
        NEW_YEAR,
    ]
    assert clock.sleeps[:11] == [5.0] * 11
    # A status line at the start, READY=1 with the first status line, then a feed per pass
    # and per slice, 3 + 11, each one datagram; the status line rides along only when it
    # changed (the job's next slot at the last pass). The job's start and end each send
    # the line on their own, after the stop that the last pass asked for.
    head = b"READY=1\nSTATUS=1 jobs, 0 running, next later at 2027-01-01T00:00:00Z"
    assert messages[:2] == [b"STATUS=starting: 1 jobs", head]
    feeds = [m.split(b"\n") for m in messages[2:16]]
    assert len(feeds) == 14 and all(feed[0] == b"WATCHDOG=1" for feed in feeds)
    assert [(i, feed[1]) for i, feed in enumerate(feeds) if len(feed) > 1] == [
        (13, b"STATUS=1 jobs, 0 running, next later at 2028-01-01T00:00:00Z"),
    ]
    assert messages[16:] == [
        b"STOPPING=1",
        b"STATUS=1 jobs, 1 running, next later at 2028-01-01T00:00:00Z",
        b"STATUS=1 jobs, 0 running, next later at 2028-01-01T00:00:00Z",
    ]


def test_a_dead_man_deadline_ends_an_idle_sleep_one_slice_ahead_and_fires_on_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    clock = FakeClock(start)
    watched = (
        "notifiers:\n  ops: {command: ['true']}\n"
        + IDLE
        + "    on_failure: [ops]\n    alert_if_no_success_for: 2m\n"
    )
    daemon = daemon_on(tmp_path, watched, clock)
    passes = noting_passes(daemon, monkeypatch, stop_after=3)
    asyncio.run(daemon.run())
    deadline = start + timedelta(minutes=2)
    assert [now for now, _ in passes] == [start, deadline - timedelta(seconds=30), deadline]
    assert daemon.observe.alerts.book.next_deadline() is None  # it fired at that pass


BURST = "  max_concurrent: 20\njobs:\n" + "".join(
    f"  job{i}:\n    schedule: '* * * * * *'\n    command: ['true']\n" for i in range(20)
)


def test_the_collector_pauses_while_a_tick_starts_its_slots_and_runs_while_the_loop_sleeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    collecting_at_start: list[bool] = []
    start = Runner.start

    def noting(runner: Runner, command: Command) -> RunningProcess:
        collecting_at_start.append(gc.isenabled())
        return start(runner, command)

    monkeypatch.setattr(Runner, "start", noting)

    async def scenario() -> tuple[bool, int]:
        collector.hold()  # as `cronplus daemon` does before it imports and loads
        daemon = daemon_on(tmp_path, BURST)
        task = asyncio.create_task(daemon.run())
        for _ in range(500):
            await asyncio.sleep(0.01)
            if len(collecting_at_start) >= 40 and daemon._sleeper is task:
                break
        on_while_asleep, frozen = gc.isenabled(), gc.get_freeze_count()
        daemon.stop("test")
        await asyncio.wait_for(task, 10)
        return on_while_asleep, frozen

    try:
        on_while_asleep, frozen = asyncio.run(scenario())
    finally:
        gc.enable()  # had the test failed before the daemon settled its start-up
    assert len(collecting_at_start) >= 40  # two ticks of 20 slots
    assert not any(collecting_at_start)
    assert on_while_asleep
    assert frozen > 0  # what start-up built is out of the collector's sight


def test_a_start_up_that_fails_leaves_the_collector_on(tmp_path: Path) -> None:
    daemon = daemon_on(tmp_path, IDLE)
    (tmp_path / "state.db.sock").mkdir()  # the control socket cannot be made there
    collector.hold()
    try:
        with pytest.raises(CronplusError, match="cannot listen on the control socket"):
            asyncio.run(daemon.run())
        assert gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize(
    ("new_text", "ok", "status"),
    [
        (EVERY_SECOND, True, b"STATUS=1 jobs, 0 running, next soon at 2026-12-31T23:59:01Z"),
        ("jobs:\n  soon:\n    schedule: 'often'\n", False, b"STATUS=1 jobs, 0 running, next later"),
    ],
    ids=["accepted", "rejected"],
)
def test_a_reload_tells_systemd_reloading_then_ready_whatever_its_outcome(
    tmp_path: Path, new_text: str, ok: bool, status: bytes
) -> None:
    name = f"cronplus-test-{os.getpid()}-{id(tmp_path)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name)
        manager.settimeout(2.0)
        clock = FakeClock(NEW_YEAR - timedelta(minutes=1))
        daemon = daemon_on(tmp_path, IDLE, clock, env={"NOTIFY_SOCKET": "@" + name})
        daemon.engine.load_jobs(now=clock.now(), ledger={})
        daemon.path.write_text(daemon.path.read_text().replace(IDLE, new_text))

        done = daemon.reload("test")

        first, second = manager.recv(4096), manager.recv(4096)
    assert first == b"RELOADING=1\nMONOTONIC_USEC=1000000000"
    assert second.startswith(b"READY=1\n" + status)
    assert done.ok is ok
    assert (done.error is None) is ok
    if not ok:
        assert "jobs.soon.schedule" in str(done.error)

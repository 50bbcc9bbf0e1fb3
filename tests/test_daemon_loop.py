"""The daemon's loop in process: a long sleep is cut short by a reload or a stop, and a
cancellation that is not the loop's own still ends it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cronplus import config
from cronplus.clock import SystemClock
from cronplus.daemon import Daemon
from cronplus.state import SqliteStore

IDLE = "jobs:\n  later:\n    schedule: '0 0 1 1 *'\n    command: ['true']\n"
EVERY_SECOND = "jobs:\n  soon:\n    schedule: '* * * * * *'\n    command: ['true']\n"


def daemon_on(tmp_path: Path, text: str) -> Daemon:
    path = tmp_path / "crontab.yaml"
    path.write_text(f"settings:\n  state: {tmp_path / 'state.db'}\n{text}")
    env = {"PATH": os.environ["PATH"]}
    crontab = config.load(path, env=env)
    store = SqliteStore.open(crontab.settings.state)
    return Daemon(path, crontab, store=store, clock=SystemClock(), env=env)


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

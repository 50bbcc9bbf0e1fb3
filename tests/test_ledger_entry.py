"""A job enters the ledger when it is first scheduled, not at its first slot: a daemon
stopped before a job's first slot catches up, at its next start, the slots it missed
(real SQLite, a fake clock, real processes)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from test_engine import crontab, engine, job, utc

from cronplus.clock import FakeClock
from cronplus.core.model import Catchup, Crontab, Outcome
from cronplus.state.sqlite import SqliteStore


def started_at(tmp_path: Path, tab: Crontab, at: str) -> list[tuple[str, Outcome]]:
    """One daemon's life: load the jobs at ``at``, run what is due, stop."""
    store = SqliteStore.open(tmp_path / "state.db")
    clock = FakeClock(utc(at))

    async def life() -> None:
        eng = engine(tab, store, clock)
        eng.load_jobs(now=clock.now(), ledger=store.ledger())
        eng.tick(clock.now())
        await eng.wait_idle()

    try:
        asyncio.run(life())
        return [(r.job, r.outcome) for r in store.history()]
    finally:
        store.close()


def test_a_job_stopped_before_its_first_slot_catches_it_up_at_the_next_start(
    tmp_path: Path,
) -> None:
    hourly = job("hourly", "0 * * * *", "touch ran", tmp_path, catchup=Catchup.ALL)
    tab = crontab(tmp_path, hourly)

    assert started_at(tmp_path, tab, "2026-01-01T00:10") == []  # no slot yet; then down
    store = SqliteStore.open(tmp_path / "state.db")
    assert store.ledger() == {"hourly": utc("2026-01-01T00:10")}
    store.close()
    ran = started_at(tmp_path, tab, "2026-01-01T02:30")  # the 01:00 and 02:00 slots passed

    assert ran == [("hourly", Outcome.SUCCEEDED)] * 2
    assert (tmp_path / "ran").exists()


def test_a_job_added_by_a_reload_enters_the_ledger_at_the_reload(tmp_path: Path) -> None:
    first = job("first", "0 * * * *", "true", tmp_path)
    added = job("added", "0 0 * * *", "true", tmp_path)
    store = SqliteStore.open(tmp_path / "state.db")
    clock = FakeClock(utc("2026-01-01T00:10"))

    async def life() -> None:
        eng = engine(crontab(tmp_path, first), store, clock)
        eng.load_jobs(now=clock.now(), ledger=store.ledger())
        clock.advance(timedelta(minutes=5))
        eng.reload(crontab(tmp_path, first, added), now=clock.now())

    asyncio.run(life())
    assert store.ledger()["added"] == utc("2026-01-01T00:15")
    store.close()

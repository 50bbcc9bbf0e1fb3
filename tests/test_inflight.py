"""Attempts in flight are noted once the loop turn that started them is over, in start order,
each with the id its attempt ends; a store that fails makes the attempt's task fail."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cronplus.core.model import StateError
from cronplus.engine.inflight import InFlight, Started
from cronplus.state.sqlite import SqliteStore

T0 = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


def started(n: int) -> Started:
    return Started(
        job=f"job-{n}", scheduled_at=T0, attempt=1, started_at=T0 + timedelta(seconds=n), pid=n
    )


def test_a_turns_attempts_are_noted_after_it_in_start_order(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")

    async def turn() -> tuple[list[bool], list[int]]:
        notes = InFlight(store)
        futures = [notes.note(started(n)) for n in range(3)]
        done_in_turn = [future.done() for future in futures]
        return done_in_turn, [await future for future in futures]

    try:
        done_in_turn, ids = asyncio.run(turn())
        assert done_in_turn == [False, False, False]
        assert ids == sorted(ids) and len(set(ids)) == 3
        # The store's own view: every one is in flight, owned by this process.
        assert store.take_interrupted(now=T0 + timedelta(hours=1)) == []
    finally:
        store.close()
    reopened = SqliteStore.open(tmp_path / "state.db")
    try:
        interrupted = reopened.take_interrupted(now=T0 + timedelta(hours=1))
    finally:
        reopened.close()
    assert [r.job for r in interrupted] == ["job-0", "job-1", "job-2"]


def test_a_cancelled_note_makes_no_row(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")

    async def turn() -> int:
        notes = InFlight(store)
        notes.note(started(0)).cancel()
        return await notes.note(started(1))

    try:
        asyncio.run(turn())
    finally:
        store.close()
    reopened = SqliteStore.open(tmp_path / "state.db")
    try:
        interrupted = reopened.take_interrupted(now=T0 + timedelta(hours=1))
    finally:
        reopened.close()
    assert [r.job for r in interrupted] == ["job-1"]


def test_a_store_that_fails_fails_the_attempt_that_waits_for_its_row(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    store.close()  # every write now raises StateError

    async def turn() -> int:
        return await InFlight(store).note(started(0))

    with pytest.raises(StateError, match="noting an attempt in flight on a closed store"):
        asyncio.run(turn())

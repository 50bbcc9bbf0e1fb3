"""The fence, against a fake database and real processes: an attempt starts only while its
node holds the slot's claim, asked of the database at the start unless the claim went in
a moment ago; a lost lease stops what runs and drops what waits; a claim left by a stopped
cluster is run again only within the job's catchup_window; a shutdown gives back the slots
whose claim had not gone in."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from test_node import JOB, T0, FakeDb, crontab, run

from cronplus.clock import FakeClock
from cronplus.cluster.decisions import Claimed, ClaimStatus, Expired
from cronplus.cluster.node import Node
from cronplus.core.model import Job, Outcome, RetryPolicy, RunResult
from cronplus.engine.engine import Engine
from cronplus.observe.logs import EventLog
from cronplus.run.runner import Runner

S = timedelta(seconds=1)


def cluster_job(tmp_path: Path, command: str, **fields: object) -> Job:
    base = replace(JOB, schedule="0 * * * *", command=command, workdir=tmp_path)
    base = replace(base, kill_grace=0.5 * S)
    return replace(base, **fields)  # type: ignore[arg-type]


def member(
    db: FakeDb, clock: FakeClock, job: Job, lease: timedelta | None = None
) -> tuple[Node, Engine]:
    table = crontab(db.node, job)
    if lease is not None and table.settings.cluster is not None:
        cluster = replace(table.settings.cluster, lease=lease)
        table = replace(table, settings=replace(table.settings, cluster=cluster))
    node = Node(db, table, clock=clock, log=EventLog(), ledger={}, outcomes={})
    engine = Engine(
        table,
        store=node.store,
        runner=Runner(drain_grace=0.2),
        clock=clock,
        base_env={},
        log=EventLog(),
        gate=node,
    )
    node._engine = engine  # as Node.start does, without its background tasks
    return node, engine


def results(db: FakeDb, node: Node) -> list[tuple[int, Outcome]]:
    writes = [*db.writes, *node.queued]
    return [(w.history.attempt, w.history.outcome) for w in writes if w.history is not None]


class RefusingDb(FakeDb):
    """Another node took the slot over once the first attempt was asked for."""

    async def confirm(self, **kwargs: object) -> bool:
        self.confirms.append(dict(kwargs))
        return False


def test_a_first_attempt_right_after_its_claim_starts_on_the_claims_word(tmp_path: Path) -> None:
    db, clock = FakeDb(), FakeClock(T0)
    job = cluster_job(tmp_path, "touch ran")
    node, engine = member(db, clock, job)

    async def scenario() -> None:
        engine.start_slots([(job, T0)], now=clock.now())
        await engine.wait_idle()

    run(scenario())
    assert (tmp_path / "ran").exists()
    assert db.confirms == []  # no round trip: the claim went in a moment ago
    assert results(db, node) == [(1, Outcome.SUCCEEDED)]


def test_a_retry_asks_the_database_and_does_not_start_once_the_slot_is_anothers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db, clock = RefusingDb(), FakeClock(T0)
    retry = RetryPolicy(retries=2, delay=30 * S)
    job = cluster_job(tmp_path, "echo x >> tries; exit 1", retry=retry)
    node, engine = member(db, clock, job)

    async def scenario() -> None:
        engine.start_slots([(job, T0)], now=clock.now())
        await engine.wait_idle()

    with caplog.at_level(logging.WARNING, logger="cronplus"):
        run(scenario())
    assert (tmp_path / "tries").read_text() == "x\n"  # the retry never started
    assert [c["attempt"] for c in db.confirms] == [2]
    assert results(db, node) == [(1, Outcome.FAILED)]
    assert node.held(job.name, T0) is None
    [lost] = [r for r in caplog.records if getattr(r, "cronplus_event", "") == "lease_lost"]
    assert "attempt 2 not started" in lost.getMessage()


def test_a_first_attempt_after_its_jitter_asks_the_database(tmp_path: Path) -> None:
    db, clock = RefusingDb(), FakeClock(T0)
    job = cluster_job(tmp_path, "touch ran", jitter=10 * S)
    node, engine = member(db, clock, job)

    async def scenario() -> None:
        engine.start_slots([(job, T0)], now=clock.now())
        await engine.wait_idle()

    run(scenario())
    assert not (tmp_path / "ran").exists()
    assert [c["attempt"] for c in db.confirms] == [1]
    assert results(db, node) == []  # the slot's new owner records it


def test_a_lost_lease_stops_the_running_attempt_as_fenced(tmp_path: Path) -> None:
    db, clock = FakeDb(), FakeClock(T0)
    job = cluster_job(tmp_path, "touch started; exec sleep 30")
    node, engine = member(db, clock, job)

    async def scenario() -> None:
        [slot_run] = engine.start_slots([(job, T0)], now=clock.now())
        while slot_run.process is None or not (tmp_path / "started").exists():
            await asyncio.sleep(0.01)
        held = node.held(job.name, T0)
        assert held is not None
        db.lost.add(held.token)  # another node took the slot over
        await node._renew()
        async with asyncio.timeout(10):
            await engine.wait_idle()

    run(scenario())
    [(attempt, outcome)] = results(db, node)
    assert (attempt, outcome) == (1, Outcome.FENCED)
    history = next(w.history for w in [*db.writes, *node.queued] if w.history is not None)
    assert "another node took the slot over" in history.reason


class SilentDb(FakeDb):
    """Asked to confirm a claim, the database does not answer (a network gone quiet)."""

    async def confirm(self, **kwargs: object) -> bool:
        self.confirms.append(dict(kwargs))
        await asyncio.Event().wait()
        return True


def test_a_lost_lease_drops_a_start_waiting_on_the_database(tmp_path: Path) -> None:
    db, clock = SilentDb(), FakeClock(T0)
    retry = RetryPolicy(retries=1, delay=5 * S)
    job = cluster_job(tmp_path, "echo x >> tries; exit 1", retry=retry)
    node, engine = member(db, clock, job)

    async def scenario() -> None:
        [slot_run] = engine.start_slots([(job, T0)], now=clock.now())
        while not db.confirms:  # the retry waits for the database's word
            await asyncio.sleep(0.01)
        held = node.held(job.name, T0)
        assert held is not None
        db.lost.add(held.token)
        await node._renew()  # renewing learns the slot is another node's
        async with asyncio.timeout(5):
            await engine.wait_idle()
        assert slot_run.task is not None and slot_run.task.cancelled()

    run(scenario())
    assert (tmp_path / "tries").read_text() == "x\n"
    assert results(db, node) == [(1, Outcome.FAILED)]


@pytest.mark.parametrize(
    ("window", "dead_for", "reruns"),
    [
        (None, timedelta(minutes=4), True),
        (timedelta(minutes=10), timedelta(minutes=4), True),
        (60 * S, timedelta(minutes=4), False),
        # its node died a moment ago while the others lived: run again, whatever the window
        (60 * S, 5 * S, True),
    ],
    ids=["no-window", "within", "past-the-window", "a-node-just-died"],
)
def test_a_claim_left_by_a_stopped_cluster_runs_again_only_within_the_catchup_window(
    tmp_path: Path, window: timedelta | None, dead_for: timedelta, reruns: bool
) -> None:
    clock = FakeClock(T0 + timedelta(minutes=5))
    left = Expired(
        job="backup",
        scheduled_at=T0,
        node="b",
        attempt=1,
        started_at=T0,
        lease_until=clock.now() - dead_for,
        token=uuid4(),
    )
    db = FakeDb(expiring=[left])
    job = cluster_job(tmp_path, "touch ran", catchup_window=window)
    node, engine = member(db, clock, job)

    async def scenario() -> None:
        await node._take_over()
        await engine.wait_idle()

    run(scenario())
    assert (tmp_path / "ran").exists() is reruns
    outcomes = [o for _, o in results(db, node)]
    closed = [w for w in node.queued if w.claim_status is ClaimStatus.DONE]
    if reruns:  # the attempt the stop cut off, then the slot run again
        assert outcomes == [Outcome.INTERRUPTED, Outcome.SUCCEEDED]
    else:  # recorded, and its claim closed at once
        assert outcomes == [Outcome.INTERRUPTED]
        assert [w.slot for w in closed] == [T0]


def test_a_shutdown_gives_back_the_slots_whose_claim_had_not_gone_in(tmp_path: Path) -> None:
    db, clock = FakeDb(away=True), FakeClock(T0)
    job = cluster_job(tmp_path, "touch ran")
    node, engine = member(db, clock, job)

    async def scenario() -> None:
        beat = asyncio.create_task(asyncio.sleep(3600))
        node._tasks = [beat, asyncio.create_task(node._flush_forever())]
        engine.start_slots([(job, T0)], now=clock.now())
        while not db.claims:
            await asyncio.sleep(0.01)
        await engine.shutdown(2 * S)
        await node.stop(2 * S)

    run(scenario())
    assert not (tmp_path / "ran").exists()
    [rewind] = [w.rewind for w in db.writes if w.rewind]
    assert rewind == (("backup", T0),)


def test_a_catch_up_slot_gets_its_minute_to_be_claimed_from_when_it_is_asked(
    tmp_path: Path,
) -> None:
    class SlowDb(FakeDb):
        async def claim(self, **kwargs: object) -> Claimed | None:
            await asyncio.sleep(0.05)  # a real round trip
            return await super().claim(**kwargs)  # type: ignore[arg-type]

    db, clock = SlowDb(), FakeClock(T0 + timedelta(minutes=5))
    node, _ = member(db, clock, cluster_job(tmp_path, "true"))

    held = run(node.claim(JOB, T0))  # five minutes late: a catch-up run

    assert held is not None
    assert node.queued == ()  # not recorded missed


def test_a_start_the_database_does_not_confirm_within_a_lease_gives_the_slot_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db, clock = SilentDb(), FakeClock(T0)
    job = cluster_job(tmp_path, "touch ran", jitter=S)
    node, engine = member(db, clock, job, lease=S)

    async def scenario() -> None:
        engine.start_slots([(job, T0)], now=clock.now())
        async with asyncio.timeout(10):
            await engine.wait_idle()

    with caplog.at_level(logging.WARNING, logger="cronplus"):
        run(scenario())
    assert not (tmp_path / "ran").exists()
    [gave] = [w for w in node.queued if w.give_up]
    assert (gave.job, gave.slot) == ("backup", T0)
    [lost] = [r for r in caplog.records if getattr(r, "cronplus_event", "") == "lease_lost"]
    assert "could not confirm its claim" in lost.getMessage()
    assert "another node took" not in lost.getMessage()


def test_a_refusing_node_records_no_slot_as_missed_or_skipped(tmp_path: Path) -> None:
    db, clock = FakeDb(definitions="0123456789abcdef"), FakeClock(T0)
    node, _ = member(db, clock, cluster_job(tmp_path, "true"))
    run(node._beat())
    assert node.refused
    missed = RunResult(
        job="backup", scheduled_at=T0, attempt=0, started_at=T0, finished_at=T0,
        outcome=Outcome.MISSED,
    )  # fmt: skip

    node.store.record(missed, keep=10)

    assert node.queued == ()

"""What keeps a node from claiming, against a fake database: a clock off the database's
past the bound (and the correction within it), definitions that are not the cluster's,
and how the cluster's definitions change: the newest file wins (a deploy forces one),
never by who is alive."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

import pytest
from test_node import JOB, T0, FakeDb, crontab, row, run

from cronplus.clock import CorrectedClock, FakeClock
from cronplus.cluster.decisions import MAX_CLOCK_SKEW, NodeView, definitions_hash
from cronplus.cluster.node import Node
from cronplus.core.model import Crontab, Job
from cronplus.observe.logs import EventLog


def corrected_node(db: FakeDb, table: Crontab | None = None) -> tuple[Node, CorrectedClock]:
    clock = CorrectedClock(FakeClock(T0))
    member = Node(
        db,
        table or crontab(db.node),
        clock=clock,
        log=EventLog(),
        ledger={"backup": T0},
        outcomes={},
        corrected=clock,
    )
    return member, clock


@pytest.mark.parametrize(
    ("offset", "refused", "applied"),
    [
        (0.004, False, 0.0),  # within the noise of a round trip: the clock stays
        (1.5, False, 1.5),
        (-4.0, False, -4.0),
        (30.0, True, 30.0),
        (-30.0, True, -30.0),
    ],
    ids=["noise", "ahead-within", "behind-within", "30s-fast", "30s-slow"],
)
def test_a_node_reads_its_clock_as_the_databases_and_refuses_past_the_bound(
    offset: float, refused: bool, applied: float, caplog: pytest.LogCaptureFixture
) -> None:
    db = FakeDb(clock_offset=offset)
    member, clock = corrected_node(db)

    with caplog.at_level(logging.INFO, logger="cronplus"):
        run(member.join())
        now = clock.now()
        held = run(member.claim(JOB, T0))

    assert clock.offset == timedelta(seconds=applied)
    assert now == T0 - timedelta(seconds=applied)
    assert (held is None) is refused
    assert member.refused is refused
    skewed = [r for r in caplog.records if getattr(r, "cronplus_event", "") == "clock_skewed"]
    assert len(skewed) == int(refused)
    if refused:
        assert f"more than the {MAX_CLOCK_SKEW:g}s a node may be off" in skewed[0].getMessage()
        assert db.claims == []


def test_a_clock_back_within_the_bound_claims_again_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = FakeDb(clock_offset=30.0)
    member, _ = corrected_node(db)

    with caplog.at_level(logging.INFO, logger="cronplus"):
        run(member.join())
        db.clock_offset = 0.1
        run(member._beat())
        held = run(member.claim(JOB, T0))
        run(member._beat())  # the nodes row says what the node did until the beat before

    assert held is not None
    events = [getattr(r, "cronplus_event", "") for r in caplog.records]
    assert events.count("clock_skewed") == 1 and events.count("clock_agrees") == 1
    assert db.beats[-1]["refusing"] is None
    assert "refuses to claim slots: its clock is 30.0s ahead" in str(db.beats[1]["refusing"])


def stamped(node: str, at: timedelta, job: Job = JOB) -> Crontab:
    """The node's crontab as read from a file modified ``at`` after T0."""
    return replace(crontab(node, job), modified=T0 + at)


def test_a_node_with_an_older_file_refuses_and_never_makes_it_the_clusters() -> None:
    db = FakeDb(definitions="0123456789abcdef", stamp=T0)
    member, _ = corrected_node(db, stamped("a", -timedelta(hours=1)))

    run(member.join())
    for _ in range(3):  # however many beats, however many others are away
        run(member._beat())

    assert db.definitions == "0123456789abcdef"
    assert member.refused
    assert db.beats[0]["stamp"] is None  # the join's first beat only measures the clock
    assert all(beat["stamp"] == T0 - timedelta(hours=1) for beat in db.beats[1:])


@pytest.mark.parametrize("how", ["start", "reload"])
def test_a_newer_file_becomes_the_clusters_at_a_start_or_a_reload(how: str) -> None:
    other = replace(JOB, schedule="*/5 * * * * *")
    db = FakeDb(definitions=definitions_hash([JOB]), stamp=T0)
    first = stamped("a", timedelta(minutes=5), other if how == "start" else JOB)
    member, _ = corrected_node(db, first)
    run(member.join())
    if how == "reload":
        assert db.definitions == definitions_hash([JOB])  # same hash: only the stamp moved
        member._crontab = stamped("a", timedelta(minutes=9), other)
        run(member._beat())

    assert db.definitions == definitions_hash([other])
    assert not member.refused


def test_a_node_whose_clock_is_off_publishes_nothing() -> None:
    db = FakeDb(definitions="0123456789abcdef", stamp=T0, clock_offset=30.0)
    member, _ = corrected_node(db, stamped("a", timedelta(hours=1)))

    run(member.join())
    run(member._beat())

    assert db.definitions == "0123456789abcdef"
    assert db.beats[-1]["stamp"] is None


def test_nodes_that_refuse_leave_the_claim_order() -> None:
    db = FakeDb(live=("a",))
    member, _ = corrected_node(db)
    run(member.join())
    mine = db.definitions or ""

    async def beat_with_others() -> None:
        await member._beat()

    db.live = ("a",)
    others = (
        replace(row("b", mine), refusing="node b refuses to claim slots: its clock ..."),
        row("c", "feedfacefeedface"),
        row("d", mine),
    )
    original = db.heartbeat

    async def heartbeat(**kwargs: object) -> object:
        beat = await original(**kwargs)  # type: ignore[arg-type]
        return replace(beat, live=(*beat.live, *others))

    db.heartbeat = heartbeat  # type: ignore[method-assign, assignment]
    run(beat_with_others())

    assert member._view() == [
        NodeView(name="d", tags=frozenset(), full=False),
        NodeView(name="a", tags=frozenset(), full=False),
    ]

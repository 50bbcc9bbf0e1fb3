"""Cluster decisions without a database: rendezvous order, claim delays, tags, the hash."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cronplus.cluster.decisions import (
    PREFERENCE_DELAY,
    RECONNECT_MAX,
    NodeView,
    claim_delay,
    definitions_hash,
    heartbeat_interval,
    reconnect_delay,
    rendezvous,
    runs_here,
)
from cronplus.core.model import Job, Overlap, RetryPolicy

T0 = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
NODES = ["a", "b", "c"]


def job(name: str = "backup", **fields: object) -> Job:
    return Job(
        name=name,
        schedule="*/2 * * * * *",
        timezone=ZoneInfo("UTC"),
        command=("true",),
        workdir=Path("/srv"),
        **fields,  # type: ignore[arg-type]
    )


def slots(count: int) -> list[datetime]:
    return [T0 + timedelta(seconds=2 * n) for n in range(count)]


def test_every_node_computes_the_same_order_whatever_order_it_lists_the_nodes_in() -> None:
    for slot in slots(50):
        orders = {tuple(rendezvous("backup", slot, names)) for names in (NODES, NODES[::-1])}
        assert len(orders) == 1


def test_slots_spread_evenly_over_three_nodes() -> None:
    wins = Counter(rendezvous(f"job-{j}", slot, NODES)[0] for j in range(50) for slot in slots(30))

    assert set(wins) == set(NODES)
    assert max(wins.values()) <= 1.1 * (1500 / 3)


def test_a_node_leaving_moves_only_the_slots_it_won() -> None:
    pairs = [(f"job-{j}", slot) for j in range(20) for slot in slots(20)]
    before = {pair: rendezvous(*pair, NODES)[0] for pair in pairs}
    after = {pair: rendezvous(*pair, ["a", "b"])[0] for pair in pairs}

    moved = {pair for pair in pairs if before[pair] != after[pair]}

    assert moved == {pair for pair in pairs if before[pair] == "c"}


def place_of(me: str, live: list[NodeView], slot: datetime = T0) -> int:
    return int(claim_delay(job(), slot, me=me, live=live) / PREFERENCE_DELAY)


def test_the_preferred_node_claims_at_once_and_the_others_one_step_per_place() -> None:
    live = [NodeView(name=name) for name in NODES]
    order = rendezvous("backup", T0, NODES)

    assert [place_of(name, live) for name in order] == [0, 1, 2]


def test_a_full_node_goes_to_the_back_of_the_order() -> None:
    order = rendezvous("backup", T0, NODES)
    live = [NodeView(name=name, full=name == order[0]) for name in NODES]

    assert [place_of(name, live) for name in order] == [2, 0, 1]


def test_a_node_that_does_not_see_itself_yet_counts_itself_last() -> None:
    live = [NodeView(name="a"), NodeView(name="b")]

    assert place_of("new", live) == 2


def test_nodes_without_a_tag_the_job_wants_do_not_hold_a_place() -> None:
    tagged = replace(job(), run_on=frozenset({"gpu"}))
    live = [NodeView(name="a"), NodeView(name="b", tags=frozenset({"gpu"}))]

    assert claim_delay(tagged, T0, me="b", live=live) == timedelta(0)


@pytest.mark.parametrize(
    ("run_on", "tags", "runs"),
    [
        (set(), set(), True),
        (set(), {"gpu"}, True),
        ({"gpu"}, set(), False),
        ({"gpu"}, {"gpu", "ssd"}, True),
        ({"gpu", "arm"}, {"arm"}, True),
        ({"gpu"}, {"ssd"}, False),
    ],
    ids=["any-node", "tags-unused", "untagged-node", "one-match", "either-tag", "no-match"],
)
def test_run_on_picks_nodes_by_any_of_their_tags(
    run_on: set[str], tags: set[str], runs: bool
) -> None:
    assert runs_here(replace(job(), run_on=frozenset(run_on)), tags) is runs


def test_the_definitions_hash_ignores_the_order_of_jobs() -> None:
    jobs = [job("a"), job("b"), job("c")]

    assert definitions_hash(jobs) == definitions_hash(reversed(jobs))


@pytest.mark.parametrize(
    "change",
    [
        {"schedule": "*/3 * * * * *"},
        {"timezone": ZoneInfo("Europe/Berlin")},
        {"command": ("false",)},
        {"env": {"A": "1"}},
        {"retry": RetryPolicy(retries=2)},
        {"overlap": Overlap.ALLOW},
        {"timeout": timedelta(seconds=5)},
        {"run_on": frozenset({"gpu"})},
        {"enabled": False},
        {"name": "other"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_any_change_to_a_job_changes_the_definitions_hash(change: dict[str, object]) -> None:
    assert definitions_hash([job()]) != definitions_hash([replace(job(), **change)])  # type: ignore[arg-type]


def test_equal_definitions_hash_equally_in_another_process_layout() -> None:
    # The same job built twice (another node loading its own copy of the file).
    assert definitions_hash([job(env={"A": "1", "B": "2"})]) == definitions_hash(
        [job(env={"B": "2", "A": "1"})]
    )


@pytest.mark.parametrize(
    ("failures", "seconds"),
    [(1, 0.1), (2, 0.2), (3, 0.4), (6, 3.2), (7, RECONNECT_MAX), (50, RECONNECT_MAX)],
    ids=["first", "second", "third", "sixth", "capped", "long-outage"],
)
def test_reconnects_back_off_doubling_up_to_a_cap(failures: int, seconds: float) -> None:
    assert reconnect_delay(failures) == pytest.approx(seconds)


def test_a_node_heartbeats_three_times_per_lease() -> None:
    assert heartbeat_interval(timedelta(seconds=30)) == timedelta(seconds=10)

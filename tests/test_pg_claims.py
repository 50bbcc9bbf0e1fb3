"""Claims, leases, heartbeats and the schema on a real PostgreSQL (one schema per test)."""

from __future__ import annotations

import asyncio
import re
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import psycopg
import pytest

from cronplus.clock import SystemClock
from cronplus.cluster.decisions import ClaimStatus, Write
from cronplus.cluster.pg.claims import ClusterDb
from cronplus.cluster.pg.schema import SCHEMA_VERSION, migrate
from cronplus.cluster.pg.store import PgStore, cluster_status
from cronplus.core.model import Outcome, RunResult, StateError
from cronplus.observe.logs import EventLog

T0 = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
SHORT = timedelta(milliseconds=200)


@pytest.fixture
def dsn(postgres_dsn: str) -> str:
    migrate(postgres_dsn)
    return postgres_dsn


@asynccontextmanager
async def node(dsn: str, name: str) -> AsyncIterator[ClusterDb]:
    db = ClusterDb(dsn, node=name, clock=SystemClock(), log=EventLog())
    await db.open()
    try:
        yield db
    finally:
        await db.close()


async def open_node(dsn: str) -> None:
    await ClusterDb(dsn, node="a", clock=SystemClock(), log=EventLog()).open()


def run(test: Callable[[], Coroutine[None, None, None]]) -> None:
    asyncio.run(test())


async def beat(
    db: ClusterDb,
    definitions: str = "h1",
    lease: timedelta = LEASE,
    stamp: datetime | None = T0,
) -> str:
    answer = await db.heartbeat(
        tags=frozenset(), lease=lease, definitions=definitions, running=0, capacity=4,
        stamp=stamp, joining=db not in JOINED,
    )  # fmt: skip
    JOINED.add(db)  # its later beats are of the same start (incarnation)
    return answer.definitions


JOINED: weakref.WeakSet[ClusterDb] = weakref.WeakSet()


async def claim(db: ClusterDb, slot: datetime = T0, **policy: bool) -> ClaimStatus | None:
    claimed = await db.claim(
        job="backup",
        slot=slot,
        token=uuid4(),
        lease=(policy.pop("short", False) and SHORT) or LEASE,
        forbid=policy.get("forbid", False),
        replace=policy.get("replace", False),
    )
    return None if claimed is None else claimed.status


def test_two_nodes_racing_for_one_slot_give_it_to_exactly_one(dsn: str) -> None:
    async def test() -> None:
        async with node(dsn, "a") as a, node(dsn, "b") as b:
            answers = await asyncio.gather(*(claim(db) for db in (a, b, a, b)))
        assert Counter(answers) == {ClaimStatus.RUNNING: 1, None: 3}

    run(test)


def test_a_claim_repeated_after_a_lost_answer_is_still_ours(dsn: str) -> None:
    async def test() -> None:
        token = uuid4()
        async with node(dsn, "a") as a:
            first, again = [
                await a.claim(
                    job="backup", slot=T0, token=token, lease=LEASE, forbid=False, replace=False
                )
                for _ in range(2)
            ]
        assert first is not None and again is not None
        assert [first.status, again.status] == [ClaimStatus.RUNNING, ClaimStatus.RUNNING]

    run(test)


@pytest.mark.parametrize(
    ("forbid", "expected"),
    [(True, ClaimStatus.SKIPPED), (False, ClaimStatus.RUNNING)],
    ids=["forbid-skips", "allow-runs"],
)
def test_overlap_is_decided_across_nodes_at_claim_time(
    dsn: str, forbid: bool, expected: ClaimStatus
) -> None:
    async def test() -> None:
        async with node(dsn, "a") as a, node(dsn, "b") as b:
            assert await claim(a, T0) is ClaimStatus.RUNNING
            later = T0 + timedelta(seconds=2)
            answer = await b.claim(
                job="backup", slot=later, token=uuid4(), lease=LEASE, forbid=forbid, replace=False
            )
        assert answer is not None
        assert answer.status is expected
        if expected is ClaimStatus.SKIPPED:
            assert (answer.busy_slot, answer.busy_node) == (T0, "a")

    run(test)


def test_replace_asks_the_node_running_the_old_slot_to_stop_it(dsn: str) -> None:
    async def test() -> None:
        async with node(dsn, "a") as a, node(dsn, "b") as b:
            token = uuid4()
            await a.claim(
                job="backup", slot=T0, token=token, lease=LEASE, forbid=False, replace=False
            )
            before = await a.renew(tokens=[token], lease=LEASE)
            await claim(b, T0 + timedelta(seconds=2), replace=True)
            after = await a.renew(tokens=[token], lease=LEASE)
        assert before == {token: None}
        assert "replaced by the slot" in str(after[token]) and "(node b)" in str(after[token])

    run(test)


def test_a_claim_is_taken_over_only_after_its_lease_ends_and_its_node_stops_beating(
    dsn: str,
) -> None:
    async def test() -> None:
        async with node(dsn, "a") as a, node(dsn, "b") as b, node(dsn, "c") as c:
            await beat(a, lease=SHORT)
            await claim(a, short=True)
            assert await b.expired() == []  # the lease still runs
            await asyncio.sleep(0.3)
            [expired] = await b.expired()
            took = [await db.take_over(expired, token=uuid4(), lease=LEASE) for db in (b, c)]
            assert await c.expired() == []
        assert (expired.job, expired.scheduled_at, expired.node) == ("backup", T0, "a")
        assert took == [True, False]

    run(test)


def test_a_node_that_still_beats_keeps_its_claims_even_past_their_lease(dsn: str) -> None:
    async def test() -> None:
        async with node(dsn, "a") as a, node(dsn, "b") as b:
            await claim(a, short=True)
            await asyncio.sleep(0.3)
            await beat(a)  # late renewing, but alive: no takeover
            assert await b.expired() == []

    run(test)


def test_a_skipped_or_missed_slot_is_recorded_once_whichever_nodes_report_it(dsn: str) -> None:
    result = RunResult(
        job="backup",
        scheduled_at=T0,
        attempt=0,
        started_at=T0,
        finished_at=T0,
        outcome=Outcome.MISSED,
    )
    write = Write(history=result, job="backup", slot=T0, claim_status=ClaimStatus.MISSED)

    async def test() -> None:
        async with node(dsn, "a") as a, node(dsn, "b") as b:
            await asyncio.gather(a.write([write]), b.write([write]))

    run(test)
    store = PgStore.open(dsn, readonly=True)
    assert [row.outcome for row in store.history()] == [Outcome.MISSED]
    store.close()


def test_a_second_daemon_may_not_be_the_same_node(dsn: str) -> None:
    async def test() -> None:
        async with node(dsn, "a"):
            with pytest.raises(StateError, match=r"another cronplus daemon.* is node 'a'"):
                await open_node(dsn)

    run(test)


def test_cluster_status_lists_nodes_and_their_running_slots(dsn: str) -> None:
    async def test() -> None:
        async with node(dsn, "a") as a:
            await beat(a)
            await claim(a)

    run(test)
    status = cluster_status(dsn)
    assert [(n.name, n.stopped, n.definitions) for n in status.nodes] == [("a", False, "h1")]
    assert [(r.node, r.job, r.scheduled_at) for r in status.running] == [("a", "backup", T0)]
    assert status.definitions == "h1"


# --- the schema and the first connection ---------------------------------------------------


def test_migrate_creates_the_schema_once_and_says_so(postgres_dsn: str) -> None:
    assert [migrate(postgres_dsn), migrate(postgres_dsn)] == [
        (0, SCHEMA_VERSION),
        (SCHEMA_VERSION, SCHEMA_VERSION),
    ]


def test_a_database_from_a_newer_cronplus_is_refused(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE cronplus_schema SET version = 99")

    with pytest.raises(StateError, match="schema version 99 is newer than this cronplus knows"):
        migrate(dsn)
    with pytest.raises(StateError, match="schema version 99"):
        PgStore.open(dsn)


@pytest.mark.parametrize(
    "open_it",
    [
        PgStore.open,
        lambda dsn: asyncio.run(
            ClusterDb(dsn, node="a", clock=SystemClock(), log=EventLog()).open()
        ),
    ],
    ids=["store", "node"],
)
def test_an_unmigrated_database_asks_for_cronplus_db_migrate(
    postgres_dsn: str, open_it: Callable[[str], object]
) -> None:
    with pytest.raises(StateError, match=r"schema version 0.*cronplus db migrate"):
        open_it(postgres_dsn)


UNREACHABLE = [
    "postgresql://cronplus:hunter2secret@127.0.0.1:1/cluster",
    "host=127.0.0.1 port=1 user=cronplus password=hunter2secret dbname=cluster",
    "postgresql://cronplus:hunter2secret@127.0.0.1:1/cluster?sslmode=bogus",
    "not a dsn password=hunter2secret",
]


@pytest.mark.parametrize("dsn", UNREACHABLE, ids=["uri", "key-value", "bad-option", "garbage"])
def test_an_unreachable_database_is_a_clear_error_that_never_shows_the_password(dsn: str) -> None:
    with pytest.raises(StateError) as caught:
        asyncio.run(open_node(dsn))
    with pytest.raises(StateError) as again:
        PgStore.open(dsn)

    for error in (caught.value, again.value):
        assert re.search(r"cannot reach the cluster database|not a PostgreSQL conn", str(error))
        assert "hunter2secret" not in str(error)


def test_pruning_forgets_finished_claims_older_than_keep_and_nothing_running(dsn: str) -> None:
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=2), now - timedelta(hours=1)

    async def test() -> int:
        async with node(dsn, "a") as a:
            for slot in (old, old + timedelta(seconds=1), recent):
                await a.write([Write(job="backup", slot=slot, claim_status=ClaimStatus.MISSED)])
            await claim(a, old - timedelta(seconds=1))  # still running: never pruned
            return await a.prune(keep=timedelta(days=1))

    assert asyncio.run(test()) == 2
    with psycopg.connect(dsn) as conn:
        left = conn.execute("SELECT scheduled_at, status FROM claims ORDER BY 1").fetchall()
    assert left == [(old - timedelta(seconds=1), "running"), (recent, "missed")]

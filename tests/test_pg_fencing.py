"""The cluster's fences on a real PostgreSQL: a start confirmed against the claim, the
incarnations that tell a restarted node's old claims from its new ones, the one record of
a claim whose answer was lost, the ledger given back at a shutdown, the measured clock
and the rule that makes a file's definitions the cluster's."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from uuid import UUID, uuid4

import pytest
from test_pg_claims import LEASE, SHORT, T0, beat, dsn, node, run

from cronplus.cluster.decisions import Claimed, ClaimStatus, Superseded, Write
from cronplus.cluster.pg import schema
from cronplus.cluster.pg.claims import ClusterDb
from cronplus.cluster.pg.definitions import deploy
from cronplus.cluster.pg.store import PgStore
from cronplus.core.model import Outcome, RunResult

__all__ = ["dsn"]  # the fixture, shared with test_pg_claims


async def claimed(db: ClusterDb, token: UUID, lease: timedelta = LEASE) -> Claimed | None:
    return await db.claim(
        job="backup", slot=T0, token=token, lease=lease, forbid=False, replace=False
    )


def test_a_start_is_confirmed_while_the_claim_is_ours_and_refused_once_taken_over(
    dsn: str,
) -> None:
    async def test() -> None:
        async with node(dsn, "a") as a, node(dsn, "b") as b:
            await beat(a, lease=SHORT)
            mine = uuid4()
            await claimed(a, mine, SHORT)
            first = await a.confirm(job="backup", slot=T0, token=mine, attempt=1, lease=SHORT)
            await asyncio.sleep(0.3)  # a stops beating (paused): its lease runs out
            [expired] = await b.expired()
            assert await b.take_over(expired, token=uuid4(), lease=LEASE)
            again = await a.confirm(job="backup", slot=T0, token=mine, attempt=2, lease=SHORT)
            assert (first, again) == (True, False)

    run(test)


def test_a_start_after_the_lease_ran_out_but_before_any_takeover_keeps_the_claim(
    dsn: str,
) -> None:
    async def test() -> None:
        async with node(dsn, "a") as a, node(dsn, "b") as b:
            await beat(a, lease=SHORT)
            mine = uuid4()
            await claimed(a, mine, SHORT)
            await asyncio.sleep(0.3)
            assert await a.confirm(job="backup", slot=T0, token=mine, attempt=2, lease=LEASE)
            assert await b.expired() == []  # the confirmed start renewed the lease

    run(test)


def test_a_node_restarted_under_its_name_gives_up_its_old_claims_at_once(dsn: str) -> None:
    async def test() -> None:
        async with node(dsn, "a") as old:
            await beat(old)
            await claimed(old, uuid4())  # a 30 s lease, far from its end
        async with node(dsn, "a") as new, node(dsn, "b") as b:
            assert new.incarnation != old.incarnation
            assert await b.expired() == []  # the old row still looks live and holds it
            await beat(new)  # the new incarnation's row: the old one is dead, its lease aside
            [expired] = await b.expired()
            assert (expired.node, expired.scheduled_at) == ("a", T0)
            assert await b.take_over(expired, token=uuid4(), lease=LEASE)
            mine = uuid4()
            await claimed(new, mine)  # the new incarnation's own claims are not dead
            assert await b.expired() == []

    run(test)


def test_a_claim_whose_answer_never_came_becomes_the_slots_missed_record(dsn: str) -> None:
    result = RunResult(
        job="backup",
        scheduled_at=T0,
        attempt=0,
        started_at=T0,
        finished_at=T0,
        outcome=Outcome.MISSED,
        reason="the database was away",
    )

    async def test() -> None:
        async with node(dsn, "a") as a, node(dsn, "b") as b:
            await beat(a)
            token = uuid4()
            await claimed(a, token)  # it went in; the on-time timeout ended the wait first
            missed = Write(
                job="backup", slot=T0, claim_status=ClaimStatus.MISSED, tried=token,
                history=result, keep=10,
            )  # fmt: skip
            await a.write([missed])
            await beat(b)
            assert await b.expired() == []  # not left running for nobody

    run(test)
    with schema.connect(dsn) as conn:
        row = conn.execute("SELECT status FROM claims").fetchone()
    store = PgStore.open(dsn, readonly=True)
    assert row == ("missed",)
    assert [r.outcome for r in store.history()] == [Outcome.MISSED]
    store.close()


def test_a_shutdown_gives_a_slot_back_to_the_ledger_never_past_an_earlier_one(dsn: str) -> None:
    async def test() -> None:
        async with node(dsn, "a") as a:
            later = T0 + timedelta(seconds=2)
            await a.write([Write(ledger=(("backup", later),))])
            await a.write([Write(rewind=(("backup", later),))])
            await a.write([Write(rewind=(("backup", T0),))])
            await a.write([Write(rewind=(("backup", later),))])
            assert await a.ledger() == {"backup": T0 - timedelta(microseconds=1)}

    run(test)


def test_a_heartbeat_measures_the_nodes_clock_against_the_databases(dsn: str) -> None:
    async def test() -> None:
        async with node(dsn, "a") as a:
            answer = await a.heartbeat(
                tags=frozenset(), lease=LEASE, definitions="h1", running=0, capacity=4,
                clock_offset=0.25, refusing="its clock",
            )  # fmt: skip
            assert abs(answer.clock_offset) < 0.5  # one host: the same clock
            assert 0 <= answer.clock_error < 0.5
            [me] = answer.live
            assert (me.clock_offset, me.refusing, me.incarnation) == (
                0.25, "its clock", a.incarnation,
            )  # fmt: skip

    run(test)


def test_the_newest_file_is_the_clusters_and_a_deploy_overrides_it(dsn: str) -> None:
    hour = timedelta(hours=1)

    async def test() -> list[str]:
        async with node(dsn, "a") as a, node(dsn, "b") as b:
            seen = [await beat(a, "h1", stamp=T0)]
            seen.append(await beat(b, "h2", stamp=T0 - hour))  # a stale file: refused
            await a.leave()
            seen.append(await beat(b, "h2", stamp=T0 - hour))  # nobody else live: still
            seen.append(await beat(b, "h3", stamp=T0 + hour))  # a newer file: the cluster's
            seen.append(await beat(a, "h1", stamp=T0))
            seen.append(await beat(b, "h9", stamp=None))  # publishes nothing
            return seen

    seen: list[str] = []

    async def outer() -> None:
        seen.extend(await test())

    run(outer)
    assert seen == ["h1", "h1", "h1", "h3", "h3", "h3"]
    assert deploy(dsn, "h1", node="a") == "h3"

    async def after() -> None:
        async with node(dsn, "b") as b:
            # A deploy is stamped with the database's clock: a file older than it loses.
            assert await beat(b, "h3", stamp=T0 + hour) == "h1"

    run(after)


def test_a_claim_given_up_unstarted_is_taken_over_at_once(dsn: str) -> None:
    async def test() -> None:
        async with node(dsn, "a") as a, node(dsn, "b") as b:
            await beat(a)
            mine = uuid4()
            await claimed(a, mine)  # a 30 s lease
            await a.write([Write(job="backup", slot=T0, token=mine, give_up=True)])
            await beat(a)  # a lives on: the claim is dead all the same
            [expired] = await b.expired()
            assert await b.take_over(expired, token=uuid4(), lease=LEASE)

    run(test)


def test_a_daemon_cut_off_while_another_started_as_its_node_is_told_to_stop(
    dsn: str,
) -> None:
    async def test() -> None:
        async with node(dsn, "a") as first:
            await beat(first)
            assert first._conn is not None
            pid = await (await first._conn.execute("SELECT pg_backend_pid()")).fetchone()
            with schema.connect(dsn) as admin:  # its session dies: the node's lock goes
                admin.execute("SELECT pg_terminate_backend(%s)", (pid[0] if pid else 0,))
            async with node(dsn, "a") as second:
                await second.heartbeat(
                    tags=frozenset(), lease=LEASE, definitions="h1", running=0, capacity=4,
                    joining=True,
                )  # fmt: skip
                with pytest.raises(Superseded, match="another cronplus daemon started as"):
                    await beat(first)
                await first.leave()  # leaves nothing of the other start's row
                [row] = (await second.heartbeat(
                    tags=frozenset(), lease=LEASE, definitions="h1", running=0, capacity=4,
                )).live  # fmt: skip
                assert row.incarnation == second.incarnation

    run(test)


def test_a_connection_without_the_nodes_lock_claims_nothing_until_it_has_it(dsn: str) -> None:
    async def test() -> None:
        async with node(dsn, "a") as a:
            await beat(a)
            assert a._conn is not None
            await a._conn.execute("SELECT pg_advisory_unlock_all()")
            a._locked = False  # as after a reconnect while its old session lingered on
            with schema.connect(dsn) as holder:
                holder.execute("SELECT pg_advisory_lock(%s, hashtext('a'))", (schema.LOCK_SPACE,))
                assert await claimed(a, uuid4()) is None
                holder.execute("SELECT pg_advisory_unlock_all()")
            assert await claimed(a, uuid4()) is not None

    run(test)

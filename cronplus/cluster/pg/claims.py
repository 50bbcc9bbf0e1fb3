"""Claims, leases and heartbeats: one node's async connection to the cluster database.

``ClusterDb`` runs each operation as one transaction on a ``psycopg.AsyncConnection``, so
the daemon's loop never waits on the database. A lost connection (the server restarted,
the network dropped) is reopened with doubling delays, and the operation is run again:
every operation here is safe to repeat, a claim included (its random token tells "my
earlier try committed" from "another node has it"). The policy (who claims when and what
a claim means for the engine) is ``cronplus/cluster/node.py``'s.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import psycopg

from cronplus.clock import Clock
from cronplus.cluster.decisions import (
    Beat,
    Claimed,
    ClaimStatus,
    Expired,
    Superseded,
    Write,
    reconnect_delay,
)
from cronplus.cluster.pg import schema
from cronplus.cluster.pg import statements as sql
from cronplus.cluster.pg.definitions import current as cluster_definitions
from cronplus.cluster.pg.schema import LOCK_SPACE, NODES, describe_dsn, error_text, node_row, utc
from cronplus.core.model import Outcome, StateError
from cronplus.observe.logs import EventLog

T = TypeVar("T")
AsyncConn = psycopg.AsyncConnection[tuple[Any, ...]]

OPERATION_TIMEOUT_S = 10.0
"""An operation taking longer than this counts as a lost connection (a silent network)."""


class ClusterDb:
    """One node's connection to the cluster database; operations wait out outages."""

    def __init__(self, dsn: str, *, node: str, clock: Clock, log: EventLog) -> None:
        self._dsn = dsn
        self.where = describe_dsn(dsn)
        self.node = node
        self._clock = clock
        self._log = log
        self._conn: AsyncConn | None = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self._down_since: float | None = None
        self.connected_at = clock.monotonic()
        """Monotonic instant of the last (re)connection: takeovers wait a lease after it."""
        self._locked = False
        """This connection holds the node's advisory lock."""
        self.incarnation = uuid.uuid4()
        """This start of the node: its claims are dead once another start of it is live."""

    async def open(self) -> None:
        """The first connection: unreachable, unmigrated or this node already live is a
        ``StateError`` (the daemon exits 2), never a retry."""
        try:
            self._conn = await self._connect()
        except psycopg.Error as error:
            raise schema.unreachable(self._dsn, error) from None
        try:
            await self._conn.execute("SELECT 1")  # sync helpers below need a sync check
            await self._require_schema(self._conn)
            await self._lock_node(self._conn, first=True)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    # --- operations ---

    async def heartbeat(
        self,
        *,
        tags: frozenset[str],
        lease: timedelta,
        definitions: str,
        running: int,
        capacity: int,
        joining: bool = False,
        stamp: datetime | None = None,
        clock_offset: float | None = None,
        refusing: str | None = None,
    ) -> Beat:
        """Write this node's row; publish its definitions stamped ``stamp`` and read the
        cluster's (definitions.py) and the live nodes; measure this node's clock against
        the database's on the way (``Beat.clock_offset``)."""
        params = {
            "node": self.node,
            "host": schema.host_name(),
            "pid": os.getpid(),
            "tags": sorted(tags),
            "lease": lease,
            "definitions": definitions,
            "running": running,
            "capacity": capacity,
            "joining": joining,
            "clock_offset": clock_offset,
            "refusing": refusing,
            "incarnation": self.incarnation,
        }

        async def op(conn: AsyncConn) -> Beat:
            sent = self._clock.now()
            row = await (await conn.execute(sql.HEARTBEAT, params)).fetchone()
            heard = self._clock.now()
            if row is None:
                raise Superseded(self._superseded())
            nodes = [node_row(row) for row in await (await conn.execute(NODES)).fetchall()]
            live = tuple(node for node in nodes if node.live)
            current, set_by = await cluster_definitions(conn, self.node, definitions, stamp=stamp)
            holders = tuple(
                n.name for n in live if n.definitions == current and n.name != self.node
            )
            # The database read its clock between our two readings: the midpoint is ours
            # at that moment, give or take half the round trip.
            midpoint = sent + (heard - sent) / 2
            return Beat(
                live=live,
                definitions=current,
                set_by=set_by,
                holders=holders,
                clock_offset=(midpoint - utc(row[0])).total_seconds(),
                clock_error=(heard - sent).total_seconds() / 2,
            )

        return await self._run("heartbeat", op)

    async def claim(
        self,
        *,
        job: str,
        slot: datetime,
        token: UUID,
        lease: timedelta,
        forbid: bool,
        replace: bool,
    ) -> Claimed | None:
        """Claim (job, slot) for this node, or None if another node has it."""
        params = {
            "job": job,
            "slot": slot,
            "node": self.node,
            "token": token,
            "lease": lease,
            "forbid": forbid,
            "replace": replace,
            "incarnation": self.incarnation,
            "stop_reason": f"replaced by the slot {slot.isoformat()} (node {self.node})",
        }

        async def op(conn: AsyncConn) -> Claimed | None:
            if not self._locked:  # a claim only under the node's lock (_lock_node)
                await self._lock_node(conn, first=False, quiet=True)
                if not self._locked:
                    return None
            row = await (await conn.execute(sql.CLAIM, params)).fetchone()
            if row is None:
                return None
            status, busy_slot, busy_node = row
            busy = utc(busy_slot) if busy_slot else None
            return Claimed(status=ClaimStatus(status), busy_slot=busy, busy_node=busy_node)

        return await self._run("claiming a slot", op, atomic=False)

    async def renew(self, *, tokens: Sequence[UUID], lease: timedelta) -> dict[UUID, str | None]:
        """Extend this node's leases; returns each still-held token and any stop request."""
        if not tokens:
            return {}

        async def op(conn: AsyncConn) -> dict[UUID, str | None]:
            cursor = await conn.execute(sql.RENEW, {"tokens": list(tokens), "lease": lease})
            return {token: why for token, why in await cursor.fetchall()}

        return await self._run("renewing leases", op, atomic=False)

    async def confirm(
        self, *, job: str, slot: datetime, token: UUID, attempt: int, lease: timedelta
    ) -> bool:
        """The fence before an attempt starts: whether the claim is still this node's (its
        lease then runs a whole ``lease`` from now)."""
        params = {"job": job, "slot": slot, "token": token, "attempt": attempt, "lease": lease}

        async def op(conn: AsyncConn) -> bool:
            return await (await conn.execute(sql.START, params)).fetchone() is not None

        return await self._run("confirming a claim", op, atomic=False)

    async def expired(self) -> list[Expired]:
        """RUNNING claims whose lease ran out while their node stopped heartbeating."""

        async def op(conn: AsyncConn) -> list[Expired]:
            rows = await (await conn.execute(sql.EXPIRED)).fetchall()
            return [
                Expired(
                    job=job,
                    scheduled_at=utc(slot),
                    node=node,
                    attempt=attempt,
                    started_at=utc(started) if started else None,
                    lease_until=utc(until),
                    token=token,
                )
                for job, slot, node, attempt, started, until, token in rows
            ]

        return await self._run("looking for expired claims", op, atomic=False)

    async def take_over(self, item: Expired, *, token: UUID, lease: timedelta) -> bool:
        params = {
            "job": item.job,
            "slot": item.scheduled_at,
            "node": self.node,
            "token": token,
            "lease": lease,
            "old": item.token,
            "incarnation": self.incarnation,
        }

        async def op(conn: AsyncConn) -> bool:
            if await (await conn.execute(sql.TAKE_OVER, params)).fetchone():
                return True
            mine = await (
                await conn.execute(sql.MINE, (item.job, item.scheduled_at, token))
            ).fetchone()
            return mine is not None

        return await self._run("taking over a claim", op, atomic=False)

    async def write(self, writes: Sequence[Write]) -> None:
        """Apply a batch of writes in one transaction, in order."""

        async def op(conn: AsyncConn) -> None:
            for write in writes:
                await _apply(conn, write, self.node)

        await self._run("writing records", op)

    async def ledger(self) -> dict[str, datetime]:
        async def op(conn: AsyncConn) -> dict[str, datetime]:
            rows = await (await conn.execute("SELECT job, slot FROM ledger")).fetchall()
            return {job: utc(slot) for job, slot in rows}

        return await self._run("reading the ledger", op)

    async def last_outcomes(self) -> dict[str, tuple[Outcome, datetime]]:
        async def op(conn: AsyncConn) -> dict[str, tuple[Outcome, datetime]]:
            rows = await (await conn.execute(schema.LAST_OUTCOMES)).fetchall()
            return {job: (Outcome(text), utc(at)) for job, text, at in rows}

        return await self._run("reading last outcomes", op)

    async def prune(self, *, keep: timedelta) -> int:
        """Forget finished claims older than ``keep`` (the ledger covers those slots);
        returns how many."""

        async def op(conn: AsyncConn) -> int:
            total = 0
            for _ in range(sql.PRUNE_BATCHES):
                deleted = (await conn.execute(sql.PRUNE, (keep,))).rowcount
                total += deleted
                if deleted < sql.PRUNE_BATCH:
                    break
            return total

        return await self._run("pruning old claims", op, atomic=False)

    async def leave(self) -> None:
        async def op(conn: AsyncConn) -> None:
            await conn.execute(  # only this start's row: another start may have joined
                "UPDATE nodes SET stopped_at = clock_timestamp()"
                " WHERE name = %s AND incarnation = %s",
                (self.node, self.incarnation),
            )

        await self._run("leaving the cluster", op)

    # --- connection ---

    async def _connect(self) -> AsyncConn:
        options = schema.connect_options(self.node)
        conn = await psycopg.AsyncConnection.connect(self._dsn, **options)
        await conn.execute("SET TIME ZONE 'UTC'")
        return conn

    async def _require_schema(self, conn: AsyncConn) -> None:
        row = await (
            await conn.execute("SELECT to_regclass('cronplus_schema') IS NOT NULL")
        ).fetchone()
        version = 0
        if row and row[0]:
            found = await (
                await conn.execute("SELECT max(version) FROM cronplus_schema")
            ).fetchone()
            version = int(found[0]) if found and found[0] is not None else 0
        if version != schema.SCHEMA_VERSION:
            newer = "newer than this cronplus knows; upgrade cronplus on this node"
            older = "older than this cronplus needs; run `cronplus db migrate` once"
            raise StateError(
                f"{self.where}: the cluster database is at schema version {version}"
                f" ({newer if version > schema.SCHEMA_VERSION else older})"
            )

    async def _lock_node(self, conn: AsyncConn, *, first: bool, quiet: bool = False) -> None:
        """Hold the node's advisory lock: two daemons may not be one node."""
        cursor = await conn.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (LOCK_SPACE, self.node)
        )
        row = await cursor.fetchone()
        if row and row[0]:
            self._locked = True
            return
        self._locked = False
        if quiet:
            return
        holder = await (
            await conn.execute("SELECT host, pid FROM nodes WHERE name = %s", (self.node,))
        ).fetchone()
        where = f" (pid {holder[1]} on {holder[0]})" if holder else ""
        message = (
            f"another cronplus daemon{where} is node {self.node!r} of the cluster at"
            f" {self.where}; give each node its own settings.cluster.node"
        )
        if first:
            raise StateError(message)
        # Maybe this process's own earlier session, which the server has not yet seen die;
        # until the lock is this connection's, the node claims nothing. If another start
        # has it, this one's next heartbeat finds the row taken and the node stops.
        self._log.error("node_name_taken", message, node=self.node)

    def _superseded(self) -> str:
        return (
            f"another cronplus daemon started as node {self.node!r} of the cluster at"
            f" {self.where} while this one was cut off from it; this one stops claiming"
            " and exits (its claims are the other's to take over)"
        )

    async def _run(
        self, action: str, op: Callable[[AsyncConn], Awaitable[T]], *, atomic: bool = True
    ) -> T:
        """Run ``op`` until it goes through, reconnecting as needed. ``atomic``: in one
        transaction; else each statement commits alone (one round trip, not three)."""
        failures = 0
        while True:
            try:
                async with self._lock, asyncio.timeout(OPERATION_TIMEOUT_S):
                    conn = self._conn or await self._reconnect()
                    try:
                        result = await self._perform(conn, op, atomic=atomic)
                    except asyncio.CancelledError:
                        self._discard(conn)  # cut off mid-statement: the session is unusable
                        raise
                self._back(action)
                return result
            except (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError) as error:
                failures += 1
                await self._lost(action, error, failures)
            except psycopg.Error as error:
                raise StateError(f"{self.where}: {action} failed: {error_text(error)}") from None

    @staticmethod
    async def _perform(
        conn: AsyncConn, op: Callable[[AsyncConn], Awaitable[T]], *, atomic: bool
    ) -> T:
        if not atomic:
            return await op(conn)
        async with conn.transaction():
            return await op(conn)

    def _discard(self, conn: AsyncConn) -> None:
        if self._conn is conn:
            self._conn = None
        closing = asyncio.get_running_loop().create_task(conn.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def _reconnect(self) -> AsyncConn:
        conn = await self._connect()
        await self._lock_node(conn, first=False)
        self._conn = conn
        self.connected_at = self._clock.monotonic()
        return conn

    async def _lost(self, action: str, error: BaseException, failures: int) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()
        if self._down_since is None:
            self._down_since = self._clock.monotonic()
            self._log.warning(
                "db_unavailable",
                f"the cluster database is unreachable while {action} ({error_text(error)});"
                " retrying with backoff, no slot starts until a claim goes in",
                database=self.where,
            )
        delay = reconnect_delay(failures)
        await self._clock.sleep_until(
            self._clock.now() + timedelta(seconds=delay), max_seconds=delay
        )

    def _back(self, action: str) -> None:
        if self._down_since is None:
            return
        seconds = round(self._clock.monotonic() - self._down_since, 3)
        self._down_since = None
        self._log.info(
            "db_reconnected",
            f"the cluster database is back after {seconds}s ({action})",
            database=self.where,
            seconds=seconds,
        )


async def _apply(conn: AsyncConn, write: Write, node: str) -> None:
    # Rows in job order: every node's batch locks ledger rows in one order, so two nodes
    # writing at once wait for each other instead of deadlocking (seen at a whole stop).
    if write.ledger:
        async with conn.cursor() as cursor:
            await cursor.executemany(schema.ADVANCE_LEDGER, sorted(write.ledger))
    if write.rewind:
        async with conn.cursor() as cursor:
            rows = [{"job": job, "slot": slot} for job, slot in sorted(write.rewind)]
            await cursor.executemany(sql.REWIND_LEDGER, rows)
    if write.give_up and write.token is not None:
        await conn.execute(sql.GIVE_UP, (write.job, write.slot, write.token))
        return
    if write.begin is not None:
        attempt, started, pid = write.begin
        await conn.execute(sql.BEGIN, (attempt, started, pid, write.job, write.slot, write.token))
    if write.claim_status is not None and write.token is not None:
        params = (write.claim_status.value, write.job, write.slot, write.token)
        await conn.execute(sql.SET_STATUS, params)
    elif write.claim_status is not None:
        once = {
            "job": write.job,
            "slot": write.slot,
            "node": node,
            "token": write.tried,
            "status": write.claim_status.value,
        }
        if await (await conn.execute(sql.CLAIM_ONCE, once)).fetchone() is None:
            return  # another node claimed or recorded this slot: its record stands
    if write.history is not None:
        await conn.execute(schema.INSERT_HISTORY, schema.history_params(write.history, node=node))
        await conn.execute(schema.TRIM_HISTORY, {"job": write.history.job, "keep": write.keep})

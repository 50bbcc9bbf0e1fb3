"""``PgStore``: the ``Store`` on the cluster's PostgreSQL database, and the cluster's status.

Every node's history, ledger and attempts in flight live here, so ``cronplus history`` on
any node shows the whole cluster's runs. ``cluster_status`` is what ``cronplus cluster
status`` reads. docs/state.md has the ``Store`` contract, docs/cluster.md the tables.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from cronplus.cluster.decisions import NodeRow
from cronplus.cluster.pg.schema import (
    ADVANCE_LEDGER,
    HISTORY_COLUMNS,
    INSERT_HISTORY,
    LAST_OUTCOMES,
    NODES,
    TRIM_HISTORY,
    checked,
    connect,
    describe_dsn,
    error_text,
    history_params,
    node_row,
    require_schema,
    result_of,
    utc,
)
from cronplus.core.model import Outcome, RunResult, StateError
from cronplus.state.store import NOT_FAILED, check_keep, interrupted_result

_HISTORY = (
    f"SELECT {HISTORY_COLUMNS} FROM history"
    " WHERE (%(job)s::text IS NULL OR job = %(job)s)"
    " AND (%(run_id)s::text IS NULL OR run_id = %(run_id)s)"
    " AND NOT (%(failed)s AND outcome = ANY(%(ok)s))"
    " ORDER BY finished_at DESC, id DESC LIMIT %(n)s"
)


_RUNNING = """
    SELECT node, job, scheduled_at, attempt, started_at FROM claims
    WHERE status = 'running' ORDER BY node, scheduled_at
"""


# --- the store ------------------------------------------------------------------------------


class PgStore:
    """A ``Store`` on a PostgreSQL database shared by every node of a cluster.

    Open it with ``PgStore.open``; the schema must be migrated (``cronplus db migrate``).
    Calls are not serialized: one store per thread. A writing store holds an advisory
    lock for as long as its connection lives, which is how ``take_interrupted`` tells a
    live owner of an attempt in flight from a dead one (a closed or killed process).
    """

    def __init__(
        self, *, dsn: str, conn: psycopg.Connection[tuple[Any, ...]], writable: bool
    ) -> None:
        self._dsn = dsn
        self._where = describe_dsn(dsn)
        self._conn = conn
        self._writable = writable
        self._owner = secrets.randbits(62)
        self._closed = False
        if writable:
            conn.execute("SELECT pg_advisory_lock(%s)", (self._owner,))

    @classmethod
    def open(cls, dsn: str, *, readonly: bool = False) -> PgStore:
        conn = connect(dsn)
        try:
            require_schema(dsn, conn)
            return cls(dsn=dsn, conn=conn, writable=not readonly)
        except BaseException:
            conn.close()
            raise

    # --- Store ---

    def record(self, result: RunResult, *, keep: int) -> None:
        check_keep(keep)
        params = history_params(result)
        with self._using("recording a run", writes=True):
            self._insert(params, keep=keep)

    def history(
        self,
        *,
        job: str | None = None,
        failed_only: bool = False,
        limit: int = 20,
        run_id: str | None = None,
    ) -> list[RunResult]:
        if limit < 0:
            raise ValueError(f"limit (history rows) must be 0 or more, got {limit}")
        if run_id is not None:  # JOB@INSTANT: the job's index finds it
            job = run_id.rpartition("@")[0]
        ok = [outcome.value for outcome in NOT_FAILED]
        params = {"job": job, "failed": failed_only, "ok": ok, "n": limit, "run_id": run_id}
        with self._using("reading history"):
            rows = self._conn.execute(_HISTORY, params).fetchall()
        return [result_of(row) for row in rows]

    def last_outcomes(self) -> dict[str, tuple[Outcome, datetime]]:
        with self._using("reading last outcomes"):
            rows = self._conn.execute(LAST_OUTCOMES).fetchall()
        return {job: (Outcome(text), utc(at)) for job, text, at in rows}

    def ledger(self) -> dict[str, datetime]:
        with self._using("reading the ledger"):
            rows = self._conn.execute("SELECT job, slot FROM ledger").fetchall()
        return {job: utc(slot) for job, slot in rows}

    def advance_ledger(self, slots: Iterable[tuple[str, datetime]]) -> None:
        pairs = ((job, checked(slot, f"ledger slot of {job}")) for job, slot in slots)
        with self._using("advancing the ledger", writes=True), self._conn.cursor() as cursor:
            cursor.executemany(ADVANCE_LEDGER, pairs)

    def begin_attempt(
        self,
        *,
        job: str,
        scheduled_at: datetime,
        attempt: int,
        started_at: datetime,
        pid: int | None,
    ) -> int:
        scheduled = checked(scheduled_at, f"scheduled_at of {job}")
        started = checked(started_at, f"started_at of {job}")
        row = (job, scheduled, attempt, started, pid, os.getpid(), self._owner)
        with self._using("noting an attempt in flight", writes=True):
            found = self._conn.execute(
                "INSERT INTO in_flight (job, scheduled_at, attempt, started_at, pid, owner_pid,"
                " owner_key) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                row,
            ).fetchone()
        assert found is not None  # INSERT ... RETURNING always gives the row
        return int(found[0])

    def end_attempt(self, attempt_id: int, result: RunResult, *, keep: int) -> None:
        # The result is recorded even if the in-flight row is gone: it is what happened.
        check_keep(keep)
        params = history_params(result)
        with self._using("recording a run", writes=True):
            self._conn.execute("DELETE FROM in_flight WHERE id = %s", (attempt_id,))
            self._insert(params, keep=keep)

    def take_interrupted(self, *, now: datetime) -> list[RunResult]:
        now = checked(now, "now")
        with self._using("taking interrupted attempts", writes=True):
            rows = self._conn.execute(
                "SELECT id, job, scheduled_at, attempt, started_at, pid, owner_pid, owner_key"
                " FROM in_flight ORDER BY id FOR UPDATE"
            ).fetchall()
            dead = [row for row in rows if not self._owner_alive(row[-1])]
            results = [_interrupted(row, now=now) for row in dead]
            with self._conn.cursor() as cursor:
                cursor.executemany("DELETE FROM in_flight WHERE id = %s", [(r[0],) for r in dead])
                cursor.executemany(INSERT_HISTORY, [history_params(r) for r in results])
        return results

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()  # ends the session: its advisory lock goes with it

    # --- helpers ---

    @contextmanager
    def _using(self, action: str, *, writes: bool = False) -> Iterator[None]:
        """One transaction; any psycopg failure becomes a StateError naming the database."""
        if self._closed:
            raise StateError(f"{self._where}: {action} on a closed store")
        if writes and not self._writable:
            raise StateError(f"{self._where}: {action} needs a store opened for writing")
        try:
            with self._conn.transaction():
                yield
        except psycopg.Error as error:
            raise StateError(f"{self._where}: {action} failed: {error_text(error)}") from None

    def _insert(self, params: tuple[Any, ...], *, keep: int) -> None:
        self._conn.execute(INSERT_HISTORY, params)
        self._conn.execute(TRIM_HISTORY, {"job": params[1], "keep": keep})

    def _owner_alive(self, owner: int) -> bool:
        if owner == self._owner:
            return True
        # A live store holds its lock; the transaction-level try is released at commit.
        row = self._conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (owner,)).fetchone()
        return not (row and row[0])


def _interrupted(row: tuple[Any, ...], *, now: datetime) -> RunResult:
    _, job, scheduled, attempt, started, pid, owner_pid, _ = row
    return interrupted_result(
        job=job,
        scheduled_at=utc(scheduled),
        attempt=attempt,
        started_at=utc(started),
        pid=pid,
        owner_pid=owner_pid,
        now=now,
    )


# --- cronplus cluster status --------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Running:
    node: str
    job: str
    scheduled_at: datetime
    attempt: int
    started_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class ClusterStatus:
    nodes: tuple[NodeRow, ...]
    definitions: str | None
    definitions_set_by: str | None
    running: tuple[Running, ...]


def cluster_status(dsn: str) -> ClusterStatus:
    """Every node ever seen, the cluster's definitions and the slots running now."""
    with connect(dsn) as conn:
        require_schema(dsn, conn)
        try:
            nodes = tuple(node_row(row) for row in conn.execute(NODES).fetchall())
            found = conn.execute("SELECT hash, node FROM definitions").fetchone()
            running = tuple(
                Running(
                    node=node,
                    job=job,
                    scheduled_at=utc(slot),
                    attempt=attempt,
                    started_at=utc(started) if started else None,
                )
                for node, job, slot, attempt, started in conn.execute(_RUNNING).fetchall()
            )
        except psycopg.Error as error:
            raise StateError(f"{describe_dsn(dsn)}: reading the cluster failed: {error}") from None
    return ClusterStatus(
        nodes=nodes,
        definitions=found[0] if found else None,
        definitions_set_by=found[1] if found else None,
        running=running,
    )

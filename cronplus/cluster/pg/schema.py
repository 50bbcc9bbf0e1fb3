"""PostgreSQL for cluster mode: connections, the schema and its versions, shared statements.

``cronplus/cluster/pg/`` is the only package that imports psycopg (a lint rule keeps it so):
``store.py`` is ``PgStore``, the ``Store`` every node and command shares; ``claims.py`` is
a node's async side (claims, leases, heartbeats). docs/cluster.md describes the tables.

Instants are ``timestamptz`` (microseconds, like SQLite's integers) and come back as aware
UTC datetimes. A DSN may hold a password: it never appears in a message, only
``describe_dsn`` of it (host, port, database, user).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import conninfo

from cronplus.cluster.decisions import NodeRow
from cronplus.config.dsn import password_problem
from cronplus.core.model import Outcome, RunResult, StateError, Trigger
from cronplus.state.store import Migration, history_values, to_micros

CONNECT_TIMEOUT_S = 5
"""Seconds a first connection may take before the database counts as unreachable."""

LOCK_SPACE = 0x63726F6E  # "cron": the first key of cronplus's two-key advisory locks
"""Advisory locks ``(LOCK_SPACE, hashtext(node))`` say a node is live; ``LOCK_SPACE + 1``
serializes migrations. An open writing store holds a one-key lock on a random number."""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        summary="history, ledger, attempts in flight, nodes, claims, definitions",
        statements=(
            """CREATE TABLE history (
                id bigserial PRIMARY KEY, run_id text NOT NULL, job text NOT NULL,
                scheduled_at timestamptz NOT NULL, attempt integer NOT NULL,
                started_at timestamptz NOT NULL, finished_at timestamptz NOT NULL,
                outcome text NOT NULL, exit_code integer, signal integer,
                duration_s double precision NOT NULL, stderr_tail text NOT NULL,
                reason text NOT NULL, node text NOT NULL DEFAULT '')""",
            "CREATE INDEX history_by_job ON history (job, finished_at, id)",
            "CREATE INDEX history_by_finish ON history (finished_at, id)",
            "CREATE TABLE ledger (job text PRIMARY KEY, slot timestamptz NOT NULL)",
            """CREATE TABLE in_flight (
                id bigserial PRIMARY KEY, job text NOT NULL, scheduled_at timestamptz NOT NULL,
                attempt integer NOT NULL, started_at timestamptz NOT NULL, pid integer,
                owner_pid integer NOT NULL, owner_key bigint NOT NULL)""",
            """CREATE TABLE nodes (
                name text PRIMARY KEY, host text NOT NULL, pid integer NOT NULL,
                tags text[] NOT NULL, lease interval NOT NULL, definitions text NOT NULL,
                running integer NOT NULL, capacity integer NOT NULL,
                started_at timestamptz NOT NULL, heartbeat_at timestamptz NOT NULL,
                stopped_at timestamptz)""",
            # One row per (job, slot) ever started, skipped or counted missed: the primary
            # key is what makes a slot start once across the cluster.
            """CREATE TABLE claims (
                job text NOT NULL, scheduled_at timestamptz NOT NULL, node text NOT NULL,
                token uuid NOT NULL, status text NOT NULL, claimed_at timestamptz NOT NULL,
                lease_until timestamptz NOT NULL, attempt integer NOT NULL DEFAULT 0,
                started_at timestamptz, pid integer, takeovers integer NOT NULL DEFAULT 0,
                stop_reason text, PRIMARY KEY (job, scheduled_at))""",
            "CREATE INDEX claims_running ON claims (lease_until) WHERE status = 'running'",
            "CREATE INDEX claims_by_slot ON claims (scheduled_at)",
            """CREATE TABLE definitions (
                only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
                hash text NOT NULL, node text NOT NULL, set_at timestamptz NOT NULL)""",
        ),
    ),
    Migration(
        summary="node incarnations, fenced claims, measured clocks, stamped definitions",
        statements=(
            # A node's incarnation is one start of it; a claim names the incarnation that
            # holds it, so a node restarted under its name does not hold its old claims.
            "ALTER TABLE nodes ADD COLUMN incarnation uuid",
            "ALTER TABLE nodes ADD COLUMN clock_offset double precision",
            "ALTER TABLE nodes ADD COLUMN refusing text",
            "ALTER TABLE claims ADD COLUMN incarnation uuid",
            # The modification time of the file whose definitions are the cluster's (or
            # the instant of a `cluster deploy`): a publication must be newer to replace it.
            "ALTER TABLE definitions ADD COLUMN stamp timestamptz",
            # Any publication replaces the row a version 1 cluster left: the newest file
            # of the nodes that start with this version becomes the cluster's.
            "UPDATE definitions SET stamp = '-infinity'",
            "ALTER TABLE definitions ALTER COLUMN stamp SET NOT NULL",
            "ALTER TABLE definitions ADD COLUMN deployed boolean NOT NULL DEFAULT false",
        ),
    ),
    Migration(
        summary="each attempt's output, and how its run started",
        statements=(
            # Rows from before keep '' in each: no output kept, started by an unknown way.
            "ALTER TABLE history ADD COLUMN stdout text NOT NULL DEFAULT ''",
            "ALTER TABLE history ADD COLUMN stderr text NOT NULL DEFAULT ''",
            "ALTER TABLE history ADD COLUMN trigger text NOT NULL DEFAULT ''",
        ),
    ),
    Migration(
        summary="what a target answered",
        statements=("ALTER TABLE history ADD COLUMN response text NOT NULL DEFAULT ''",),
    ),
)
"""Schema versions in order: applying ``MIGRATIONS[n-1]`` takes the version to n."""

SCHEMA_VERSION = len(MIGRATIONS)


# --- connections, messages ----------------------------------------------------------------


def describe_dsn(dsn: str) -> str:
    """``postgresql host=H port=P dbname=D user=U``: where, never the password (nor a part
    of one that a URI would misread as a host or a database: validate refuses those)."""
    if password_problem(dsn) is not None:
        return "postgresql (a settings.cluster.dsn whose password is not percent-encoded)"
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "an unreadable settings.cluster.dsn"
    shown = [f"{key}={parts[key]}" for key in ("host", "port", "dbname", "user") if parts.get(key)]
    return "postgresql " + " ".join(shown) if shown else "postgresql (libpq defaults)"


def error_text(error: BaseException) -> str:
    """psycopg's message on one line (libpq's messages span several)."""
    return " ".join(str(error).split()) or type(error).__name__


def unreachable(dsn: str, error: BaseException) -> StateError:
    """The exit-2 message for a cluster database that cannot be reached or used."""
    try:
        conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:  # psycopg quotes the text it could not parse: maybe the password
        return StateError(
            "settings.cluster.dsn is not a PostgreSQL connection string; expected"
            " postgresql://USER@HOST:PORT/DATABASE or key=value pairs (host=... dbname=...)"
        )
    why = error_text(error)
    return StateError(
        f"{describe_dsn(dsn)}: cannot reach the cluster database ({why}); check"
        " settings.cluster.dsn and that PostgreSQL runs and accepts this node"
    )


def connect(dsn: str, *, node: str = "") -> psycopg.Connection[tuple[Any, ...]]:
    """A connection in autocommit mode (transactions are explicit), time zone UTC."""
    try:
        conn = psycopg.connect(dsn, **connect_options(node))
    except psycopg.Error as error:
        raise unreachable(dsn, error) from None
    conn.execute("SET TIME ZONE 'UTC'")
    return conn


def connect_options(node: str) -> dict[str, Any]:
    name = f"cronplus {node}".strip()
    return {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S, "application_name": name}


def utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def checked(instant: datetime, what: str) -> datetime:
    """``instant`` if aware (else the ``ValueError`` every store raises), in UTC."""
    to_micros(instant, what)
    return instant.astimezone(UTC)


# --- schema versions ---------------------------------------------------------------------

_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS cronplus_schema (version integer NOT NULL)"


def schema_version(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    """0 when cronplus never migrated this database (or search_path schema)."""
    row = conn.execute("SELECT to_regclass('cronplus_schema') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    found = conn.execute("SELECT max(version) FROM cronplus_schema").fetchone()
    return int(found[0]) if found and found[0] is not None else 0


def migrate(dsn: str) -> tuple[int, int]:
    """Create or upgrade the schema in one transaction; returns (version before, after).

    Concurrent runs wait on an advisory lock, so each step is applied once.
    """
    with _closing(connect(dsn)) as conn:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_SPACE + 1,))
                before = schema_version(conn)
                _refuse_newer(dsn, before)
                conn.execute(_VERSION_TABLE)
                for version in range(before + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[version - 1].statements:
                        conn.execute(statement)
                conn.execute("DELETE FROM cronplus_schema")
                conn.execute("INSERT INTO cronplus_schema VALUES (%s)", (SCHEMA_VERSION,))
        except psycopg.Error as error:
            raise StateError(
                f"{describe_dsn(dsn)}: migrating failed: {error_text(error)}"
            ) from None
    return before, SCHEMA_VERSION


def require_schema(dsn: str, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    """A ``StateError`` unless the schema is exactly the version this cronplus writes."""
    version = schema_version(conn)
    _refuse_newer(dsn, version)
    if version < SCHEMA_VERSION:
        raise StateError(
            f"{describe_dsn(dsn)}: the cluster database is at schema version {version},"
            f" this cronplus needs {SCHEMA_VERSION}; run `cronplus db migrate` once"
        )


def _refuse_newer(dsn: str, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise StateError(
            f"{describe_dsn(dsn)}: schema version {version} is newer than this cronplus"
            f" knows ({SCHEMA_VERSION}); upgrade cronplus on this node"
        )


@contextmanager
def _closing(conn: psycopg.Connection[tuple[Any, ...]]) -> Iterator[psycopg.Connection[Any]]:
    try:
        yield conn
    finally:
        conn.close()


# --- statements store.py and claims.py share ------------------------------------------------------

HISTORY_COLUMNS = (
    "job, scheduled_at, attempt, started_at, finished_at, outcome, exit_code, signal,"
    " duration_s, stderr_tail, reason, stdout, stderr, trigger, response"
)
INSERT_HISTORY = (
    "INSERT INTO history (run_id, job, scheduled_at, attempt, started_at, finished_at,"
    " outcome, exit_code, signal, duration_s, stderr_tail, reason, stdout, stderr, trigger,"
    " response, node) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
    " %s, %s)"
)
TRIM_HISTORY = (
    "DELETE FROM history WHERE id IN (SELECT id FROM history WHERE job = %(job)s"
    " ORDER BY finished_at DESC, id DESC OFFSET %(keep)s)"
)
ADVANCE_LEDGER = (
    "INSERT INTO ledger (job, slot) VALUES (%s, %s)"
    " ON CONFLICT (job) DO UPDATE SET slot = greatest(ledger.slot, excluded.slot)"
)
LAST_OUTCOMES = (
    "SELECT DISTINCT ON (job) job, outcome, finished_at FROM history"
    " ORDER BY job, finished_at DESC, id DESC"
)
NODES = """
    SELECT name, host, pid, tags, definitions, running, capacity, started_at,
           extract(epoch FROM clock_timestamp() - heartbeat_at)::float8,
           stopped_at IS NULL AND heartbeat_at + lease > clock_timestamp(),
           stopped_at IS NOT NULL, clock_offset, refusing, incarnation
    FROM nodes ORDER BY name
"""


def history_params(result: RunResult, *, node: str = "") -> tuple[object, ...]:
    return (*history_values(result, checked), node)


def result_of(row: tuple[Any, ...]) -> RunResult:
    job, scheduled, attempt, started, finished, outcome, code, sig, secs, tail, why = row[:11]
    stdout, stderr, trigger, response = row[11:15]
    return RunResult(
        job=job,
        scheduled_at=utc(scheduled),
        attempt=attempt,
        started_at=utc(started),
        finished_at=utc(finished),
        outcome=Outcome(outcome),
        exit_code=code,
        signal=sig,
        duration_s=secs,
        stderr_tail=tail,
        reason=why,
        stdout=stdout,
        stderr=stderr,
        trigger=Trigger(trigger) if trigger else None,
        response=response,
    )


def node_row(row: tuple[Any, ...]) -> NodeRow:
    name, host, pid, tags, definitions, running, capacity, started, age, live, stopped = row[:11]
    offset, refusing, incarnation = row[11:14]
    return NodeRow(
        name=name,
        host=host,
        pid=pid,
        tags=frozenset(tags),
        definitions=definitions,
        running=running,
        capacity=capacity,
        started_at=utc(started),
        heartbeat_age_s=age,
        live=live,
        stopped=stopped,
        clock_offset=offset,
        refusing=refusing,
        incarnation=incarnation,
    )


def host_name() -> str:
    with suppress(OSError):
        return socket.gethostname()
    return "unknown"

"""Which job definitions are the cluster's: the one row of ``definitions``, and who may
change it.

Never by who happens to be alive (docs/cluster.md, "When the files differ"). Every node
publishes its file's definitions at each heartbeat, stamped with the file's modification
time; a publication replaces the cluster's definitions only when its stamp is newer than
the one in force. So the newest file wins, and a node that comes back with an older file,
however many of the others are away, refuses to claim until its file agrees.
``cronplus cluster deploy`` makes a file's definitions the cluster's whatever its age,
stamped with the database's clock. A stamp is never later than the database's clock: a
file from a host whose clock runs ahead cannot hold the cluster's definitions forever.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from cronplus.cluster.pg import schema

_PUBLISH = """
    INSERT INTO definitions AS d (hash, node, set_at, stamp)
    VALUES (%(hash)s, %(node)s, clock_timestamp(), least(%(stamp)s, clock_timestamp()))
    ON CONFLICT (only_row) DO UPDATE SET hash = excluded.hash, node = excluded.node,
        set_at = excluded.set_at, stamp = excluded.stamp, deployed = false
    WHERE excluded.stamp > d.stamp
    RETURNING hash, node
"""
_CURRENT = "SELECT hash, node FROM definitions"
_DEPLOY = """
    INSERT INTO definitions AS d (hash, node, set_at, stamp, deployed)
    VALUES (%(hash)s, %(node)s, clock_timestamp(), clock_timestamp(), true)
    ON CONFLICT (only_row) DO UPDATE SET hash = excluded.hash, node = excluded.node,
        set_at = excluded.set_at, deployed = true,
        stamp = greatest(excluded.stamp, d.stamp + interval '1 microsecond')
"""


async def current(
    conn: psycopg.AsyncConnection[tuple[Any, ...]],
    node: str,
    mine: str,
    *,
    stamp: datetime | None,
) -> tuple[str, str]:
    """The cluster's (hash, set by) after this node published ``mine``, stamped ``stamp``
    (its file's modification time; None publishes nothing: a node that must not decide)."""
    if stamp is not None:
        params = {"hash": mine, "node": node, "stamp": stamp}
        row = await (await conn.execute(_PUBLISH, params)).fetchone()
        if row is not None:
            return row[0], row[1]
    row = await (await conn.execute(_CURRENT)).fetchone()
    return (row[0], row[1]) if row is not None else (mine, node)


def deploy(dsn: str, definitions: str, *, node: str) -> str | None:
    """Make ``definitions`` the cluster's (``cronplus cluster deploy``); the hash before."""
    with schema.connect(dsn) as conn, conn.transaction():
        row = conn.execute(_CURRENT + " FOR UPDATE").fetchone()
        conn.execute(_DEPLOY, {"hash": definitions, "node": node})
    return None if row is None else str(row[0])

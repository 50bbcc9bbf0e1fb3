"""Starting a cluster node: the database first (unreachable is exit 2), then the daemon.

``start.run_daemon`` hands over here when the crontab has ``settings.cluster``; the
``Daemon`` is the same as on one host, with the node as its engine's slot gate and its
store (docs/cluster.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from cronplus.clock import CorrectedClock, SystemClock
from cronplus.cluster.node import Node
from cronplus.cluster.pg.claims import ClusterDb
from cronplus.cluster.pg.store import PgStore
from cronplus.core.model import Crontab, RunResult
from cronplus.daemon.loop import Daemon
from cronplus.observe.logs import EventLog
from cronplus.state.files import private_folder


def run_cluster_daemon(path: Path, crontab: Crontab, *, env: Mapping[str, str]) -> int:
    """The daemon in cluster mode; an unreachable or unmigrated database is exit 2."""
    return asyncio.run(_serve(path, crontab, env=env))


def _take_interrupted(dsn: str, now: datetime) -> list[RunResult]:
    store = PgStore.open(dsn)
    try:
        return store.take_interrupted(now=now)
    finally:
        store.close()


async def _serve(path: Path, crontab: Crontab, *, env: Mapping[str, str]) -> int:
    settings = crontab.settings.cluster
    assert settings is not None
    # No SQLite file in cluster mode, but the node's local files (its control socket) live
    # beside settings.state, in a folder as private as the state's own.
    private_folder(crontab.settings.state, create=True)
    # The database measures the host's own clock against its own; everything that decides
    # reads the host's clock corrected by that offset (docs/cluster.md, "Clocks").
    host, log = SystemClock(), EventLog()
    clock = CorrectedClock(host)
    db = ClusterDb(settings.dsn, node=settings.node, clock=host, log=log)
    await db.open()
    try:
        ledger, outcomes = await db.ledger(), await db.last_outcomes()
        # `cronplus run` attempts whose process died: as on one host, recorded interrupted.
        cut_off = await asyncio.to_thread(_take_interrupted, settings.dsn, clock.now())
        node = Node(
            db,
            crontab,
            clock=clock,
            log=log,
            ledger=ledger,
            outcomes=outcomes,
            interrupted=cut_off,
            corrected=clock,
        )
        await node.join()
        daemon = Daemon(path, crontab, store=node.store, clock=clock, env=env, gate=node)
        if (metrics := daemon.observe.metrics) is not None:
            node.on_beat = lambda offset, refusing: metrics.cluster_beat(
                clock_offset=offset, refusing=refusing
            )
            metrics.cluster_beat(clock_offset=node.clock_offset, refusing=node.refusal)
        node.on_superseded = lambda: daemon.stop("node_superseded")
        node.start(daemon.engine)
        try:
            await daemon.run()
        finally:
            await node.stop(daemon.engine.crontab.settings.shutdown_grace)
    finally:
        with contextlib.suppress(Exception):
            await db.close()
    return 1 if node.superseded else 0

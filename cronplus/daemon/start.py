"""``cronplus daemon``: the daemon on one host's SQLite state, or a cluster node's.

One daemon per state: the SQLite file's daemon lock (a second daemon exits 2); a cluster
node starts in ``clusterd.py``, which imports psycopg, so only a cluster crontab loads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from cronplus.clock import SystemClock
from cronplus.core import collector
from cronplus.core.model import Crontab
from cronplus.daemon.loop import Daemon
from cronplus.state.sqlite import SqliteStore


def run_daemon(path: Path, crontab: Crontab, *, env: Mapping[str, str]) -> int:
    """Run until SIGTERM/SIGINT; 0 on a clean stop. A second daemon on one state exits 2."""
    if crontab.settings.cluster is not None:  # PostgreSQL instead of the SQLite state
        from cronplus.daemon.clusterd import run_cluster_daemon  # imports psycopg

        # The node's start-up talks to the database (connections, threads, retries), whose
        # cycles a freeze would keep for good: it collects as usual.
        collector.settle()
        return run_cluster_daemon(path, crontab, env=env)
    store = SqliteStore.open(crontab.settings.state)
    try:
        store.acquire_daemon_lock()
        daemon = Daemon(path, crontab, store=store, clock=SystemClock(), env=env)
        asyncio.run(daemon.run())
    finally:
        store.close()
    return 0

"""One slot of a target job through the real engine on a fake clock, for the target tests:
the I/O is real (a server, a broker), the retries' waits are the fake clock's."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from cronplus.clock import FakeClock
from cronplus.core.model import Crontab, Job, RetryPolicy, RunResult, Settings
from cronplus.core.targets import Target
from cronplus.engine.engine import Engine
from cronplus.observe.logs import EventLog
from cronplus.run.runner import Runner
from cronplus.state.sqlite import SqliteStore

S = timedelta(seconds=1)
T0 = datetime(2026, 1, 1, 7, 0, tzinfo=UTC)


def target_job(
    target: Target,
    *,
    name: str = "hook",
    retries: int = 0,
    timeout: float | None = None,
    schedule: str = "0 7 * * *",
) -> Job:
    return Job(
        name=name,
        schedule=schedule,
        timezone=ZoneInfo("UTC"),
        command="",
        retry=RetryPolicy(retries=retries, delay=S),
        timeout=None if timeout is None else timedelta(seconds=timeout),
        target=target,
    )


def run_slot(
    tmp_path: Path, store: SqliteStore, job: Job, env: Mapping[str, str] | None = None
) -> list[RunResult]:
    """The slot of ``job`` at ``T0`` with its retries; its history rows, oldest first."""
    tab = Crontab(path=tmp_path / "c.yaml", settings=Settings(state=store._path), jobs=(job,))
    clock = FakeClock(T0)

    async def scenario() -> None:
        eng = Engine(
            tab,
            store=store,
            runner=Runner(drain_grace=0.2),
            clock=clock,
            base_env=dict(env or {}),
            log=EventLog(),
        )
        eng.start_slots([(job, T0)], now=clock.now())
        await eng.wait_idle()
        await eng.shutdown(S)

    asyncio.run(scenario())
    return list(reversed(store.history(job=job.name)))

"""A slot on its way: ``SlotRun``, one slot of one job through its claim, attempts and
retries. The engine drives it; the timetable keeps each job's runs; observers read it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from cronplus.core.model import Job, Outcome, RunResult, Trigger
from cronplus.engine.admission import SlotClaim
from cronplus.engine.output import RunOutput
from cronplus.run.runner import RunningProcess
from cronplus.targets.dispatch import RunningTarget


@dataclass(eq=False)
class SlotRun:
    """One slot of one job on its way through attempts and retries."""

    job: Job
    slot: datetime
    trigger: Trigger = Trigger.SCHEDULE
    output: RunOutput | None = None
    """Where its attempts' lines are logged (None: ``output: discard``)."""
    results: list[RunResult] = field(default_factory=list)
    process: RunningProcess | RunningTarget | None = None
    stop_as: Outcome | None = None
    """Set when cronplus itself stops this run (shutdown, replace)."""
    stop_reason: str = ""
    task: asyncio.Task[None] | None = None
    claim: SlotClaim | None = None
    """Leave from the slot gate, asked again before each attempt starts."""
    waited: bool = False
    """The first attempt waited (its jitter, an earlier run, a free place) after the claim."""
    waiting_retry: bool = False
    claiming: bool = False
    """Waiting for the slot gate: in a cluster, another node may run the slot instead."""
    attempt: int = 1
    """The attempt under way, or the retry waited for."""
    started_at: datetime | None = None
    noted: asyncio.Future[int] | None = None
    """The in-flight row of the attempt under way, until its result is in history."""
    ended: RunResult | None = None
    """The result of the attempt under way, once it ended, until it is in history."""

    @property
    def alive(self) -> bool:
        waiting = self.waiting_retry or self.claiming
        return self.task is not None and not self.task.done() and not waiting

"""Engine events: what the engine tells observers (metrics, alerts, pings) as runs go by.

The engine calls one ``EngineEvents`` at four points and never waits on it: an observer that
has slow work to do (a webhook, a mail) starts a task and returns. ``NO_EVENTS`` is the
default that does nothing; ``Fanout`` passes each event to several observers in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from cronplus.core.model import Job, RunResult, Slot


class EngineEvents(Protocol):
    """The engine's hooks; each returns at once."""

    def attempt_started(
        self, *, job: Job, slot: Slot, attempt: int, pid: int | None, at: datetime
    ) -> None:
        """An attempt's process was started at ``at`` (``pid`` None: it could not start)."""

    def attempt_finished(
        self, *, job: Job, result: RunResult, retry_at: datetime | None, stopped: bool
    ) -> None:
        """An attempt ended. ``retry_at`` None: it was the slot's last attempt, and
        ``result`` is the run's final outcome. ``stopped``: cronplus itself stopped the run
        (shutdown, ``overlap: replace``)."""

    def slots_missed(self, *, job: Job, result: RunResult, count: int) -> None:
        """``count`` slots will not run: one ``skipped_overlap`` or ``missed`` row says why."""


class NoEvents:
    """Hears nothing: the engine's default."""

    def attempt_started(
        self, *, job: Job, slot: Slot, attempt: int, pid: int | None, at: datetime
    ) -> None:
        return

    def attempt_finished(
        self, *, job: Job, result: RunResult, retry_at: datetime | None, stopped: bool
    ) -> None:
        return

    def slots_missed(self, *, job: Job, result: RunResult, count: int) -> None:
        return


NO_EVENTS: EngineEvents = NoEvents()


class Fanout:
    """Passes each event to every observer, in the order given."""

    def __init__(self, observers: Sequence[EngineEvents]) -> None:
        self._observers = tuple(observers)

    def attempt_started(
        self, *, job: Job, slot: Slot, attempt: int, pid: int | None, at: datetime
    ) -> None:
        for observer in self._observers:
            observer.attempt_started(job=job, slot=slot, attempt=attempt, pid=pid, at=at)

    def attempt_finished(
        self, *, job: Job, result: RunResult, retry_at: datetime | None, stopped: bool
    ) -> None:
        for observer in self._observers:
            observer.attempt_finished(job=job, result=result, retry_at=retry_at, stopped=stopped)

    def slots_missed(self, *, job: Job, result: RunResult, count: int) -> None:
        for observer in self._observers:
            observer.slots_missed(job=job, result=result, count=count)

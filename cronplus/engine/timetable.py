"""The timetable: every enabled job's place in the schedule, its next slot on one heap.

The engine asks it what is due and tells it what was handled; it finds next slots, and
finds those of the jobs a tick started only once their starts are done (``push_later``):
finding one can take 50 us (a yearly schedule in a zone with DST), which for a burst of
1,000 jobs held the first start back by 50 ms. Every reader (``next_due``, ``states``)
has them found first, so none sees a job without its next slot.

A heap entry is current while it equals its job's ``next_due``; any other (a reload's
older entry, a job removed or taken) is stale and dropped where it surfaces.

A ``@reboot`` job is scheduled on a ``Reboot``: ``load`` (the daemon's start, and only it)
gives it one slot, that start; a reload gives it none. Once its slot is taken it has no
next one, and no heap entry.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cronplus.core.model import Job
from cronplus.core.schedule import Reboot, Schedule, Timeline, start_slot
from cronplus.engine.slotrun import SlotRun

_JUST_BEFORE = timedelta(microseconds=1)


@dataclass(eq=False)
class JobState:
    job: Job
    schedule: Timeline
    handled: datetime
    """The newest slot decided on (run, skipped or missed): the ledger's value."""
    next_due: datetime | None = None
    runs: list[SlotRun] = field(default_factory=list)


def compile_job(job: Job) -> Timeline:
    """The job's schedule; for ``@reboot`` a ``Reboot`` without a slot (``load`` binds one)."""
    schedule = Schedule.for_job(job.schedule, zone=job.timezone, job_name=job.name)
    return Reboot() if schedule.reboot else schedule


class Timetable:
    """The enabled jobs by name, and a heap of (next slot, job name)."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobState] = {}
        self._heap: list[tuple[datetime, str]] = []
        self._unpushed: list[JobState] = []
        """Jobs whose next slot waits for the turn's starts (``push_later``)."""

    def load(self, jobs: Iterable[Job], *, now: datetime, ledger: Mapping[str, datetime]) -> None:
        """Schedule every enabled job at the daemon's start ``now``; a job the ledger knows
        resumes from it, a ``@reboot`` job gets the start as its one slot."""
        # Jobs that share a schedule (Schedule.for_job) and a ledger position share its next
        # slot: of 10,000 jobs, most are one of a few hundred such pairs.
        following: dict[tuple[Timeline, datetime], datetime | None] = {}
        for job in jobs:
            if job.enabled:
                state = _loaded(job, now=now, handled=ledger.get(job.name))
                self._jobs[job.name] = state
                if (entry := _entry(state, following)) is not None:
                    self._heap.append(entry)
        heapq.heapify(self._heap)

    def get(self, name: str) -> JobState | None:
        return self._jobs.get(name)

    def add(self, job: Job, *, handled: datetime) -> None:
        state = JobState(job=job, schedule=compile_job(job), handled=handled)
        self._jobs[job.name] = state
        self.push(state)

    def replace(self, job: Job, *, now: datetime) -> None:
        """A changed job keeps its state (runs, ledger) and starts its new schedule from
        ``now``; a job that was and stays ``@reboot`` keeps this start's slot instead (it
        runs once, with the new definition, if it has not run yet)."""
        state = self._jobs[job.name]
        schedule = compile_job(job)
        if isinstance(schedule, Reboot) and isinstance(state.schedule, Reboot):
            schedule = state.schedule
        else:
            state.handled = max(state.handled, now)
        state.job, state.schedule = job, schedule
        self.push(state)

    def remove(self, name: str) -> JobState:
        return self._jobs.pop(name)  # its heap entries are stale from now on

    def push(self, state: JobState, following: datetime | None = None) -> None:
        """Queue the job's next slot, if it has one; ``following`` is that slot if the
        caller knows it."""
        state.next_due = following or state.schedule.next_after(state.handled)
        if state.next_due is not None:
            heapq.heappush(self._heap, (state.next_due, state.job.name))

    def push_later(self, state: JobState) -> None:
        """Queue the job's next slot at the next reader (``push_deferred``)."""
        state.next_due = None  # until then any heap entry of this job is stale
        self._unpushed.append(state)

    def push_deferred(self) -> None:
        """Queue the next slot of the jobs left by ``push_later``."""
        pending, self._unpushed = self._unpushed, []
        following: dict[tuple[Timeline, datetime], datetime | None] = {}
        for state in pending:
            if state.next_due is not None or self._jobs.get(state.job.name) is not state:
                continue  # queued again by a reload meanwhile, or removed
            if (entry := _entry(state, following)) is not None:
                heapq.heappush(self._heap, entry)

    def due(self, now: datetime) -> Iterator[tuple[datetime, JobState]]:
        """Take every job whose next slot is at or before ``now``, earliest first; each
        taken job has no next slot until the caller pushes one."""
        self.push_deferred()
        while (when := self._earliest()) is not None and when <= now:
            _, name = heapq.heappop(self._heap)
            state = self._jobs[name]
            state.next_due = None  # taken: a second heap entry for it (a reload's) is stale
            yield when, state

    def next_due(self) -> datetime | None:
        """The earliest instant any job is due (stale heap entries are dropped here)."""
        self.push_deferred()
        return self._earliest()

    def upcoming(self) -> tuple[datetime, str] | None:
        """The earliest due instant and its job, from the heap's top (no scan of all jobs)."""
        return None if self.next_due() is None else self._heap[0]

    def states(self) -> list[JobState]:
        self.push_deferred()
        return list(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)

    def _earliest(self) -> datetime | None:
        while self._heap:
            when, name = self._heap[0]
            state = self._jobs.get(name)
            if state is not None and state.next_due == when:
                return when
            heapq.heappop(self._heap)
        return None


def _loaded(job: Job, *, now: datetime, handled: datetime | None) -> JobState:
    """A job's state at the daemon's start ``now``; ``handled`` is its ledger, if any."""
    schedule = compile_job(job)
    if isinstance(schedule, Reboot):
        slot = start_slot(now, handled=handled)
        # Whatever the ledger says, this start is a slot not handled yet.
        return JobState(job=job, schedule=Reboot(at=slot), handled=slot - _JUST_BEFORE)
    return JobState(job=job, schedule=schedule, handled=now if handled is None else handled)


def _entry(
    state: JobState, following: dict[tuple[Timeline, datetime], datetime | None]
) -> tuple[datetime, str] | None:
    """The job's heap entry (None: it has no next slot), its next slot found once for jobs
    that share a schedule and a ledger position (``following`` remembers them)."""
    key = (state.schedule, state.handled)
    if key not in following:
        following[key] = state.schedule.next_after(state.handled)
    state.next_due = following[key]
    return None if state.next_due is None else (state.next_due, state.job.name)

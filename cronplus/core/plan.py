"""Pure scheduling decisions: which slots run, which are missed, retry delays, wake-ups.

Nothing here reads a clock or touches the world: every function takes ``now`` (or the
instants it needs) and returns a decision, so the engine, ``run-once`` and the tests all
see the same answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from cronplus.core.model import MAX_CATCHUP_RUNS, Catchup, Job, Overlap, RetryPolicy
from cronplus.core.schedule import Reboot, Schedule, Timeline

ON_TIME = timedelta(seconds=60)
"""A slot found at most this long after its instant is late, not missed: it simply runs.

The loop wakes at least every 30 s, so only a stopped daemon, a sleeping host or a
clock stepped forward leaves a slot older than this.
"""

MAX_SLEEP = 30.0
"""The loop never sleeps longer than this, so clock steps and suspends are seen quickly."""

CLOCK_JUMP = timedelta(seconds=5)
"""Wall and monotonic clocks disagreeing by more than this over one slice is a jump."""


def retry_delay(policy: RetryPolicy, failed_attempts: int) -> timedelta:
    """The wait after the ``failed_attempts``-th failure: ``delay * backoff**(n-1)``, capped."""
    if failed_attempts < 1:
        raise ValueError("retry_delay counts failed attempts from 1")
    delay, cap = policy.delay.total_seconds(), policy.max_delay.total_seconds()
    if delay <= 0 or cap <= delay:  # backoff >= 1: the first delay already decides
        return min(policy.delay, policy.max_delay)
    # In logarithms: backoff**(n-1) of a thousandth retry is past any float.
    if (failed_attempts - 1) * math.log(policy.backoff) >= math.log(cap / delay):
        return policy.max_delay
    return timedelta(seconds=delay * policy.backoff ** (failed_attempts - 1))


def retry_delays(policy: RetryPolicy) -> list[timedelta]:
    """Every wait the policy allows, in order: one per retry."""
    return [retry_delay(policy, n) for n in range(1, policy.retries + 1)]


def retry_at(
    policy: RetryPolicy, *, failed_attempts: int, finished_at: datetime, next_slot: datetime | None
) -> datetime | None:
    """When to retry after a failure, or None: retries used up, or the next slot comes first.

    A retry that would start at or after the job's next slot is dropped: the next slot is
    a fresh run, and two runs of one job must not pile up behind a failing command.
    """
    if failed_attempts > policy.retries:
        return None
    when = finished_at + retry_delay(policy, failed_attempts)
    if next_slot is not None and when >= next_slot:
        return None
    return when


@dataclass(frozen=True, kw_only=True)
class Pending:
    """What one job should do with the slots that came due since it was last handled."""

    run: tuple[datetime, ...]
    """Slots to start now, oldest first."""
    missed: int
    """Slots that passed and will not run (counted, not listed)."""
    missed_from: datetime | None = None
    """The oldest missed slot, for the log line."""
    missed_until: datetime | None = None
    """The newest missed slot."""
    handled: datetime | None = None
    """The newest slot this decision covers: what the ledger moves to."""


NOTHING = Pending(run=(), missed=0)


def pending(job: Job, schedule: Timeline, *, handled: datetime, now: datetime) -> Pending:
    """Decide what to do with the slots in ``(handled, now]``.

    Slots younger than ``ON_TIME`` run. Older ones were missed (daemon down, host asleep,
    clock stepped) and follow ``job.catchup`` within ``job.catchup_window``. Counting them
    uses ``Schedule.count_between``, never a walk over every missed minute. A ``@reboot``
    job's one slot runs however late it is found.
    """
    if isinstance(schedule, Reboot):
        return _at_start(schedule, handled=handled, now=now)
    newest = schedule.previous_before(now + timedelta(microseconds=1))
    if newest is None or newest <= handled:
        return NOTHING
    on_time_from = now - ON_TIME
    on_time = _slots_between(schedule, max(handled, on_time_from), newest)
    missed_end = min(newest, on_time_from)
    missed_total = schedule.count_between(handled, missed_end) if missed_end > handled else 0
    if missed_total == 0:
        return Pending(run=on_time, missed=0, handled=newest)
    catch = _catch_up(job, schedule, handled=handled, until=missed_end, now=now, on_time=on_time)
    missed = missed_total - len(catch)
    return Pending(
        run=catch + on_time,
        missed=missed,
        missed_from=schedule.next_after(handled) if missed else None,
        missed_until=_newest_missed(schedule, missed_end, catch) if missed else None,
        handled=newest,
    )


def _at_start(schedule: Reboot, *, handled: datetime, now: datetime) -> Pending:
    """The daemon's start, a ``@reboot`` job's one slot: there is nothing to miss, so it
    runs even if the first tick comes late (a slow start-up, a suspend), whatever
    ``catchup`` says."""
    slot = schedule.at
    if slot is None or not handled < slot <= now:
        return NOTHING
    return Pending(run=(slot,), missed=0, handled=slot)


def _newest_missed(
    schedule: Schedule, missed_end: datetime, caught_up: tuple[datetime, ...]
) -> datetime | None:
    """The newest slot that neither runs late nor on time."""
    cursor = caught_up[0] if caught_up else missed_end + timedelta(microseconds=1)
    return schedule.previous_before(cursor)


def _catch_up(
    job: Job,
    schedule: Schedule,
    *,
    handled: datetime,
    until: datetime,
    now: datetime,
    on_time: tuple[datetime, ...],
) -> tuple[datetime, ...]:
    """The missed slots in ``(handled, until]`` that ``job.catchup`` says to run."""
    floor = handled
    if job.catchup_window is not None:
        floor = max(floor, now - job.catchup_window)
    if job.catchup is Catchup.SKIP:
        return ()
    limit = 1 if job.catchup is Catchup.LATEST else MAX_CATCHUP_RUNS
    if job.catchup is Catchup.LATEST and on_time:
        return ()  # the newest slot is already running on time
    newest_first: list[datetime] = []
    cursor = until + timedelta(microseconds=1)
    while len(newest_first) < limit:
        slot = schedule.previous_before(cursor)
        if slot is None or slot <= floor:
            break
        newest_first.append(slot)
        cursor = slot
    return tuple(reversed(newest_first))


def _slots_between(schedule: Schedule, start: datetime, end: datetime) -> tuple[datetime, ...]:
    """Fires in ``(start, end]``; only called on windows of ``ON_TIME``."""
    slots: list[datetime] = []
    for slot in schedule.iter_after(start):
        if slot > end:
            break
        slots.append(slot)
    return tuple(slots)


def first_in_minute(schedule: Timeline, at: datetime) -> datetime | None:
    """The first fire inside the wall-clock minute that holds ``at`` (what ``run-once`` runs).

    None for a ``@reboot`` job: it has no slot in any minute, only at a daemon start.
    """
    if isinstance(schedule, Reboot) or schedule.reboot:
        return None
    # In UTC: wall-clock arithmetic on an aware local time can land in a DST gap.
    start = at.astimezone(UTC).replace(second=0, microsecond=0)
    slot = schedule.next_after(start - timedelta(microseconds=1))
    return slot if slot < start + timedelta(minutes=1) else None


class OverlapAction(StrEnum):
    """What to do with a slot given the job's overlap policy and whether a run is alive."""

    START = "start"
    """Start it now (nothing alive, or ``overlap: allow``)."""
    SKIP = "skip"
    """Record ``skipped_overlap`` and start nothing."""
    REPLACE_THEN_START = "replace"
    """Stop the live run's process group, then start."""


def overlap_action(policy: Overlap, *, alive: bool) -> OverlapAction:
    if not alive or policy is Overlap.ALLOW:
        return OverlapAction.START
    if policy is Overlap.FORBID:
        return OverlapAction.SKIP
    return OverlapAction.REPLACE_THEN_START


def clock_jump(
    *, wall_before: datetime, wall_now: datetime, mono_before: float, mono_now: float
) -> timedelta | None:
    """How far the wall clock moved beyond the monotonic one, if more than ``CLOCK_JUMP``.

    Positive for a step forward or a suspend (Linux's monotonic clock stops while asleep),
    negative for a step back.
    """
    drift = (wall_now - wall_before) - timedelta(seconds=mono_now - mono_before)
    return drift if abs(drift) > CLOCK_JUMP else None


PRECISE_REACH = 1.01
"""A due instant up to 1 % past the cap is slept to, not past (``sleep_target``)."""


def sleep_target(next_due: datetime | None, *, now: datetime, cap: float = MAX_SLEEP) -> datetime:
    """When the loop should wake: the earliest due instant, or ``cap`` seconds from now
    (``MAX_SLEEP``, or less for systemd's watchdog) if it lies further.

    An instant up to 1 % past the cap counts as within it: a sleep to a due instant stops
    1 % short of it (the daemon's ``_nap``), so none is longer than the cap, while a sleep
    of the whole cap may end that late (Linux's poll slack), past such an instant.
    """
    if next_due is not None and next_due <= now + timedelta(seconds=cap * PRECISE_REACH):
        return next_due
    return now + timedelta(seconds=cap)

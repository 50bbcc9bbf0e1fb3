"""Cron schedules: (expression, zone, job name) -> fire instants, under DESIGN section 2.

``Schedule`` is the one entry point; docs/schedules.md has the full rules. The expression's
grammar and its matching in naive wall time are ``cronplus/core/cronexpr.py``'s, imported here
only; this module maps wall times to instants in the job's zone.

A *fixed-time* job fires for each matching wall time once, at the first instant the wall
clock reads that time or later: a time skipped by a gap fires at the jump, a time shown
twice fires on its first showing. A *wildcard* job (minute or hour field starts with ``*``)
fires whenever the wall clock reads a matching time. Offset changes come from the zone:
sampled once a day and bisected to the second, which is safe because no two changes in
any zone are closer than 3.9 days (tzdata 2025b; a test guards it).

``@reboot`` is a ``Schedule`` without fires (it parses, validates and describes itself);
a daemon start is an event, not a wall time, so the timetable schedules such a job on a
``Reboot``: one slot, the start it was loaded at, or none (docs/schedules.md, "@reboot").
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TypeAlias
from zoneinfo import ZoneInfo

from cronplus.core import cronexpr
from cronplus.core.model import ScheduleError
from cronplus.core.words import AT_START, describe

_DAY = 86_400
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = _EPOCH.replace(tzinfo=None)
_EPOCH_ORDINAL = _NAIVE_EPOCH.toordinal()
_ONE_SECOND = timedelta(seconds=1)

FIELDS = cronexpr.FIELDS
"""The grammar's fields, (name, lowest, highest) seconds first, for what writes the grammar
down elsewhere (the JSON Schema's pattern, config/cronpattern.py)."""
FIELD_NAMES = cronexpr.FIELD_NAMES
MACRO_NAMES = cronexpr.MACRO_NAMES


@dataclass(frozen=True, kw_only=True, slots=True)
class Schedule:
    """One job's cron expression in its zone. Takes aware datetimes, returns aware UTC ones."""

    expression: str
    zone: ZoneInfo
    job_name: str
    _matcher: cronexpr.Matcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_matcher", cronexpr.parse(self.expression, job_name=self.job_name)
        )

    @classmethod
    def parse(cls, expression: str, *, zone: ZoneInfo, job_name: str) -> Schedule:
        """Compile, or raise ``ScheduleError`` saying what is wrong; parses are cached."""
        return _parse(expression, zone, job_name)

    @classmethod
    def for_job(cls, expression: str, *, zone: ZoneInfo, job_name: str) -> Schedule:
        """``parse``, but one schedule for all jobs with this expression and zone unless an
        ``H`` field reads the name (10,000 jobs: a parse per distinct pair, not per job)."""
        return _parse(expression, zone, job_name if "h" in expression.lower() else "")

    @property
    def wildcard(self) -> bool:
        """The minute or hour field starts with ``*``: across DST, follow real time."""
        return self._matcher.wildcard

    @property
    def has_seconds(self) -> bool:
        return self._matcher.has_seconds

    @property
    def reboot(self) -> bool:
        """``@reboot``: it has no fires; the job runs at each daemon start (``Reboot``)."""
        return self._matcher.reboot

    def next_after(self, after: datetime) -> datetime:
        """The first fire strictly after ``after``."""
        found = self._first_from(_seconds(after) + 1)
        if found is None and self.reboot:
            raise ScheduleError(f"{self.expression!r} has no fire instants: it runs {AT_START}")
        if found is None:
            raise ScheduleError(f"{self.expression!r} never fires after {after.isoformat()}")
        return _instant(found)

    def iter_after(self, after: datetime) -> Iterator[datetime]:
        """Every fire strictly after ``after``, in order."""
        found = self._first_from(_seconds(after) + 1)
        while found is not None:
            yield _instant(found)
            found = self._first_from(found + 1)

    def previous_before(self, before: datetime) -> datetime | None:
        """The last fire strictly before ``before``; None if there is none within 28 years."""
        last = _seconds(before) - (before.microsecond == 0)
        found = self._last_from(last, last - cronexpr.YEARS_28)
        return None if found is None else _instant(found)

    def count_between(self, start: datetime, end: datetime) -> int:
        """How many fires fall in ``(start, end]``, counted a day at a time, not one by one."""
        t, last, count = _seconds(start) + 1, _seconds(end), 0
        while t <= last:
            begin, stop, offset = _segment(self.zone, t)
            low, jumped = self._lowest_wall(t, begin, offset)
            count += jumped + self._matcher.count_walls(low, min(stop - 1, last) + offset)
            t = stop
        return count

    def describe(self) -> str:
        """The schedule in English, for the ``list`` table."""
        return describe(self._matcher)

    def _first_from(self, t: int) -> int | None:
        """The first fire at or after instant ``t`` (seconds since the epoch)."""
        while True:
            begin, stop, offset = _segment(self.zone, t)
            low, jumped = self._lowest_wall(t, begin, offset)
            if jumped:
                return t
            wall = self._matcher.next_wall(low)
            if wall is None:
                return None
            if wall < stop + offset:
                return wall - offset
            t = stop

    def _last_from(self, t: int, limit: int) -> int | None:
        """The last fire at or before instant ``t``, but not before ``limit``."""
        while t >= limit:
            begin, _, offset = _segment(self.zone, t)
            low = begin + offset
            high = low if self._matcher.wildcard else _high_water(self.zone, begin)
            wall = self._matcher.prev_wall(t + offset)
            if wall is not None and wall >= max(low, high):
                return wall - offset
            if high < low and self._matcher.count_walls(high, low - 1):
                return begin
            t = begin - 1
        return None

    def _lowest_wall(self, t: int, begin: int, offset: int) -> tuple[int, bool]:
        """The first wall time that may fire from instant ``t`` on, in the stretch that starts
        at ``begin``; and whether ``t`` fires for wall times the clock jumped over."""
        low = t + offset
        if self._matcher.wildcard or t - begin >= 2 * _DAY:
            return low, False
        high = _high_water(self.zone, begin)
        if t == begin and high < low:
            # The clock jumped from `high` to `low`: whatever matched in between fires now, once.
            return low + 1, self._matcher.count_walls(high, low) > 0
        return max(low, high), False  # times the clock already showed fired the first time


@dataclass(frozen=True, kw_only=True, slots=True)
class Reboot:
    """A ``@reboot`` job's slots in one daemon process: ``at``, the start the timetable was
    loaded at (``start_slot``), or none (a reload brought the job in, or ``cronplus run``
    runs it). The engine asks it what it asks a ``Schedule``; no slot follows ``at``, so
    ``next_after`` is None there and a retry of the start's run never waits for one."""

    at: datetime | None = None

    def next_after(self, after: datetime) -> datetime | None:
        """``at`` if it is strictly after ``after``; else None: no slot follows."""
        return self.at if self.at is not None and self.at > after else None

    def describe(self) -> str:
        return AT_START


def start_slot(start: datetime, *, handled: datetime | None) -> datetime:
    """A ``@reboot`` job's slot at a daemon start at ``start``: its whole second, or the
    second after ``handled`` (the job's ledger) when that is as late (a restart within the
    second of the last one, a clock set back), so no two starts share a run id."""
    slot = start.replace(microsecond=0)
    if handled is not None and handled >= slot:
        slot = handled.replace(microsecond=0) + _ONE_SECOND
    return slot


Timeline: TypeAlias = Schedule | Reboot
"""What the engine schedules one job on: its cron ``Schedule``, or for ``@reboot`` a
``Reboot``."""


@functools.lru_cache(maxsize=16_384)
def _parse(expression: str, zone: ZoneInfo, job_name: str) -> Schedule:
    return Schedule(expression=expression, zone=zone, job_name=job_name)


def _seconds(instant: datetime) -> int:
    """Whole seconds since the epoch, rounded down."""
    if instant.utcoffset() is None:
        raise ValueError(f"expected an aware datetime, got {instant.isoformat()}")
    if not 100 <= instant.year <= cronexpr.LAST_YEAR:
        raise ValueError(
            f"expected a year from 100 to {cronexpr.LAST_YEAR}, got {instant.isoformat()}"
        )
    return (instant - _EPOCH) // _ONE_SECOND


def _instant(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


# --- the zone's offset changes ------------------------------------------------------------
# Instants are ints too: seconds since 1970-01-01T00:00Z.


def _offset(zone: ZoneInfo, instant: int) -> int:
    local = datetime.fromtimestamp(instant, zone).replace(tzinfo=None)
    return (local - _NAIVE_EPOCH) // _ONE_SECOND - instant


def _year_start(year: int) -> int:
    return (date(year, 1, 1).toordinal() - _EPOCH_ORDINAL) * _DAY


def _utc_year(instant: int) -> int:
    return date.fromordinal(instant // _DAY + _EPOCH_ORDINAL).year


@functools.lru_cache(maxsize=65_536)
def _transitions(zone: ZoneInfo, year: int) -> tuple[tuple[int, int, int], ...]:
    """(instant, offset before, offset after) of each change in ``(Jan 1, next Jan 1]`` UTC."""
    found = []
    probe, end = _year_start(year), _year_start(year + 1)
    before = _offset(zone, probe)
    while probe < end:
        low, probe = probe, min(probe + _DAY, end)  # one day: changes are days apart
        after = _offset(zone, probe)
        if after != before:
            high = probe
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if _offset(zone, middle) == before else (low, middle)
            found.append((high, before, after))
            before = after
    return tuple(found)


def _segment(zone: ZoneInfo, instant: int) -> tuple[int, int, int]:
    """``(begin, stop, offset)``: a stretch ``[begin, stop)`` around ``instant`` with one offset.

    Far from any change the stretch ends at a UTC new year instead: harmless, as the offset
    on both sides is the same and ``_high_water`` looks past it.
    """
    year = _utc_year(instant)
    begin, offset = _year_start(year - 1), None
    for change_at, _, after in _transitions(zone, year - 1) + _transitions(zone, year):
        if change_at <= instant:
            begin, offset = change_at, after
    later = _transitions(zone, year) + _transitions(zone, year + 1)
    stop = next((at for at, _, _ in later if at > instant), _year_start(year + 2))
    return begin, stop, _offset(zone, instant) if offset is None else offset


def _high_water(zone: ZoneInfo, begin: int) -> int:
    """One past the latest wall time the clock showed before instant ``begin``.

    Looks back two days: no zone ever moved its clock back by more than 24 hours.
    """
    high = begin + _offset(zone, begin - 1)
    for year in range(_utc_year(begin - 2 * _DAY), _utc_year(begin) + 1):
        for change_at, before, _ in _transitions(zone, year):
            if begin - 2 * _DAY < change_at <= begin:
                high = max(high, change_at + before)
    return high

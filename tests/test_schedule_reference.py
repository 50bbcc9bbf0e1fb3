"""Schedule against the brute-force reference, around real zone transitions, 1990-2037."""

from __future__ import annotations

import functools
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise, takewhile
from zoneinfo import ZoneInfo

import pytest
from cron_reference import MONTHS, WEEKDAYS, reference_fires
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from cronplus.core.model import ScheduleError
from cronplus.core.schedule import Schedule

FIRST_YEAR, LAST_YEAR = 1990, 2037


def offset_minutes(zone: ZoneInfo, instant: datetime) -> int:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None
    return int(offset.total_seconds()) // 60


@functools.cache
def transitions(key: str) -> tuple[datetime, ...]:
    """The zone's offset changes in 1990-2037, to the minute: monthly probes, then bisection.

    A change undone within the same month can hide from the probes; that only costs a window.
    """
    zone = ZoneInfo(key)
    found = []
    probe = datetime(FIRST_YEAR, 1, 1, tzinfo=UTC)
    while probe.year <= LAST_YEAR:
        following = probe + timedelta(days=30)
        if offset_minutes(zone, probe) != offset_minutes(zone, following):
            low, high = probe, following
            while high - low > timedelta(minutes=1):
                middle = low + (high - low) / 2
                middle = middle.replace(second=0, microsecond=0)
                if offset_minutes(zone, middle) == offset_minutes(zone, low):
                    low = middle
                else:
                    high = middle
            found.append(high)
        probe = following
    return tuple(found)


@functools.cache
def zones_with_transitions() -> list[str]:
    return [key for key in sorted(zoneinfo.available_timezones()) if transitions(key)]


@dataclass(frozen=True)
class Window:
    zone: ZoneInfo
    start: datetime
    end: datetime
    hint: datetime
    """A wall time near the transition, to aim the hour, day and month fields at."""


def window(zone_key: str, centre: datetime, half_width: timedelta) -> Window:
    zone = ZoneInfo(zone_key)
    before = (centre - timedelta(minutes=1)).astimezone(zone).replace(tzinfo=None)
    return Window(zone, centre - half_width, centre + half_width, before)


@st.composite
def windows(draw: st.DrawFn, half_width: timedelta) -> Window:
    key = draw(st.sampled_from(zones_with_transitions()))
    if draw(st.integers(0, 9)) == 0:  # now and then, a window with no transition in it
        centre = draw(st.datetimes(datetime(FIRST_YEAR, 1, 1), datetime(LAST_YEAR, 12, 1)))
        centre = centre.replace(tzinfo=UTC)
    else:
        centre = draw(st.sampled_from(transitions(key)))
    offset = draw(st.timedeltas(-half_width / 2, half_width / 2)).total_seconds()
    return window(key, centre + timedelta(seconds=offset // 1), half_width)


def number_items(draw: st.DrawFn, low: int, high: int, hint: int) -> str:
    """One list item for a plain numeric field: a value, range or step, often near ``hint``."""
    near = st.integers(max(low, hint - 2), min(high, hint + 2)) | st.integers(low, high)
    a, b = sorted((draw(near), draw(near)))
    step = draw(st.integers(1, max(1, (high - low + 1) // 2)))
    size = high - low + 1
    return draw(
        st.sampled_from(
            [
                "*",
                f"*/{step}",
                f"{a}",
                f"{a}-{b}",
                f"{a}-{b}/{step}",
                f"{a}/{step}",
                f"{a},{b}",
                "H",
                f"H/{min(step, size)}",
                f"H({a}-{b})",
                f"H({a}-{b})/{step}",
            ]
        )
    )


def day_of_month_items(draw: st.DrawFn, hint: int) -> str:
    plain = number_items(draw, 1, 31, hint)
    special = draw(
        st.sampled_from(
            ["L", f"L-{draw(st.integers(0, 5))}", "LW", f"{hint}W", f"{draw(st.integers(1, 31))}W"]
        )
    )
    return draw(st.sampled_from(["*", "?", plain, special, f"{plain},{special}"]))


def day_of_week_items(draw: st.DrawFn, hint: int) -> str:
    plain = number_items(draw, 0, 7, hint)
    name = WEEKDAYS[hint].upper() if draw(st.booleans()) else WEEKDAYS[hint]
    special = draw(
        st.sampled_from(
            [f"{hint}L", f"{name}L", f"{hint}#{draw(st.integers(1, 5))}", f"{name}#2", "7L"]
        )
    )
    ranges = ["mon-fri", "1-5", "0,6", "sat,sun", "fri-sun", "7", f"{name}"]
    return draw(st.sampled_from(["*", "?", plain, special, f"{plain},{special}", *ranges]))


def month_items(draw: st.DrawFn, hint: int) -> str:
    name = MONTHS[hint - 1]
    following = MONTHS[hint % 12]
    return draw(
        st.sampled_from(["*", "*", f"{hint}", name, f"{name}-dec" if hint < 12 else "dec", "*/2"])
        | st.just(f"{name},{following}")
    )


@st.composite
def expressions(draw: st.DrawFn, hint: datetime, seconds: bool) -> str:
    cron_weekday = (hint.weekday() + 1) % 7
    fields = [
        number_items(draw, 0, 59, hint.minute),
        number_items(draw, 0, 23, hint.hour),
        day_of_month_items(draw, hint.day),
        month_items(draw, hint.month),
        day_of_week_items(draw, cron_weekday),
    ]
    if seconds:
        # A seconds window is short: let most minutes and hours match so something fires.
        fields[0] = draw(st.sampled_from(["*", "*/7", f"{hint.minute}-59", fields[0]]))
        fields[1] = draw(st.sampled_from(["*", f"{hint.hour}", fields[1]]))
        fields[2:] = [draw(st.sampled_from(["*", text])) for text in fields[2:]]
        fields.insert(0, number_items(draw, 0, 59, 0))
    return " ".join(fields)


def parse_or_skip(expression: str, zone: ZoneInfo, job_name: str) -> Schedule:
    try:
        return Schedule.parse(expression, zone=zone, job_name=job_name)
    except ScheduleError as error:
        # Only "never fires" is acceptable for the generated grammar.
        assert str(error).startswith("never fires"), (expression, str(error))
        assume(False)
        raise


def check_against_reference(schedule: Schedule, where: Window) -> int:
    """Compare every answer the schedule gives about the window; return the number of fires."""
    expected = reference_fires(
        schedule.expression, where.zone, schedule.job_name, where.start, where.end
    )
    actual = list(takewhile(lambda fire: fire <= where.end, schedule.iter_after(where.start)))
    local = [fire.astimezone(where.zone).isoformat() for fire in actual]
    assert local == [fire.astimezone(where.zone).isoformat() for fire in expected]
    assert schedule.count_between(where.start, where.end) == len(expected)
    assert schedule.describe()
    latest = schedule.previous_before(where.end + timedelta(microseconds=1))
    if expected:
        assert latest == expected[-1]
    else:
        assert latest is None or latest <= where.start
    for earlier, later in pairwise(expected):
        assert schedule.previous_before(later) == earlier
        assert schedule.next_after(earlier) == later
    if len(expected) > 2:
        assert schedule.count_between(expected[0], expected[-1]) == len(expected) - 1
    return len(expected)


def record(fires: int) -> None:
    event("fires in window: " + ("none" if not fires else "1-9" if fires < 10 else "10+"))


REFERENCE_SETTINGS = settings(
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@settings(REFERENCE_SETTINGS, max_examples=150)
@given(data=st.data(), job_name=st.sampled_from(["backup", "report.daily", "x"]))
def test_minute_schedules_match_the_reference_around_transitions(
    data: st.DataObject, job_name: str
) -> None:
    where = data.draw(windows(timedelta(hours=36)), label="window")
    expression = data.draw(expressions(where.hint, seconds=False), label="expression")
    record(check_against_reference(parse_or_skip(expression, where.zone, job_name), where))


@settings(REFERENCE_SETTINGS, max_examples=40)
@given(data=st.data(), job_name=st.sampled_from(["backup", "x"]))
def test_seconds_schedules_match_the_reference_around_transitions(
    data: st.DataObject, job_name: str
) -> None:
    where = data.draw(windows(timedelta(minutes=40)), label="window")
    expression = data.draw(expressions(where.hint, seconds=True), label="expression")
    record(check_against_reference(parse_or_skip(expression, where.zone, job_name), where))


def latest_transition(key: str) -> datetime:
    """The zone's first change from 2024 on, or its last one before."""
    found = transitions(key)
    return next((at for at in found if at.year >= 2024), found[-1])


@pytest.mark.parametrize("key", zones_with_transitions())
def test_every_zone_matches_the_reference_at_a_transition(key: str) -> None:
    zone, at = ZoneInfo(key), latest_transition(key)
    before, after = offset_minutes(zone, at - timedelta(minutes=1)), offset_minutes(zone, at)
    # A wall time inside the gap or the repeated stretch: its DST rule decides.
    middle = min(before, after) + abs(after - before) // 2
    inside = at.replace(tzinfo=None) + timedelta(minutes=middle)
    where = window(key, at, timedelta(hours=4))
    for expression in (f"{inside.minute} {inside.hour} * * *", f"{inside.minute} * * * *"):
        check_against_reference(Schedule.parse(expression, zone=zone, job_name="j"), where)


def test_a_day_of_week_range_from_sunday_to_sunday_is_sunday_alone() -> None:
    # Found by the property test above: the reference read "0-0" as "fri-sun"'s wrap, so
    # the whole week, where cron (and cronplus) read Sunday alone. 1990-04-29 is a Sunday.
    zone = ZoneInfo("Africa/Cairo")
    start, end = datetime(1990, 4, 29, 11, tzinfo=UTC), datetime(1990, 5, 2, 11, tzinfo=UTC)
    where = Window(zone=zone, start=start, end=end, hint=datetime(1990, 5, 1, 0, 59))
    for expression in ("* * * * 0-0", "* * * * sun-sun"):
        schedule = Schedule.parse(expression, zone=zone, job_name="j")
        # 13:01 to 23:59 local on the Sunday, and nothing in the three days after it.
        assert check_against_reference(schedule, where) == 11 * 60 - 1

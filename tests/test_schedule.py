"""Schedule: the grammar, every error message, the DST rules in real zones, counting, English."""

from __future__ import annotations

import ast
import hashlib
import importlib.resources
import re
import struct
import subprocess
import sys
import zoneinfo
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise, takewhile
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import cronplus
from cronplus.config.loader import loads
from cronplus.core.model import ConfigError, ScheduleError
from cronplus.core.schedule import Schedule

NEW_YORK, LORD_HOWE, CHATHAM = "America/New_York", "Australia/Lord_Howe", "Pacific/Chatham"
DUBLIN, SAO_PAULO, APIA, ALMATY = (
    "Europe/Dublin",
    "America/Sao_Paulo",
    "Pacific/Apia",
    "Asia/Almaty",
)


def parse(expression: str, zone: str = "UTC", job_name: str = "job") -> Schedule:
    return Schedule.parse(expression, zone=ZoneInfo(zone), job_name=job_name)


def fires(expression: str, zone: str, after: str, count: int, job_name: str = "job") -> list[str]:
    """The next ``count`` fires after ``after``, as ISO strings in the job's zone."""
    schedule = parse(expression, zone, job_name)
    found = islice(schedule.iter_after(datetime.fromisoformat(after)), count)
    return [fire.astimezone(ZoneInfo(zone)).isoformat() for fire in found]


def days(expression: str, after: str, count: int) -> list[str]:
    return [fire[:10] for fire in fires(expression, "UTC", after, count)]


# --- DST --------------------------------------------------------------------------------------

DST_CASES = [  # id, expression, zone, after: the next fires
    # New York 2026-03-08: 02:00 EST jumps to 03:00 EDT.
    ("ny-spring-fixed-gap-time-runs-at-0300", "30 2 * * *", NEW_YORK, "2026-03-07T12:00:00-05:00", [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00",
    ]),
    ("ny-spring-two-gap-times-run-once", "0,30 2 * * *", NEW_YORK, "2026-03-07T12:00:00-05:00", [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00", "2026-03-09T02:30:00-04:00",
    ]),
    ("ny-spring-gap-time-and-0300-run-once", "0 2,3 * * *", NEW_YORK, "2026-03-07T12:00:00-05:00", [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00", "2026-03-09T03:00:00-04:00",
    ]),
    ("ny-spring-wildcard-has-no-0200", "0 */2 * * *", NEW_YORK, "2026-03-07T23:00:00-05:00", [
        "2026-03-08T00:00:00-05:00", "2026-03-08T04:00:00-04:00", "2026-03-08T06:00:00-04:00",
    ]),
    ("ny-spring-wildcard-skips-0230", "30 * * * *", NEW_YORK, "2026-03-08T01:00:00-05:00", [
        "2026-03-08T01:30:00-05:00", "2026-03-08T03:30:00-04:00",
    ]),
    # New York 2026-11-01: 02:00 EDT falls back to 01:00 EST.
    ("ny-fall-fixed-runs-first-pass-only", "30 1 * * *", NEW_YORK, "2026-10-31T12:00:00-04:00", [
        "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00",
    ]),
    ("ny-fall-fixed-list-first-pass", "0,30 1 * * *", NEW_YORK, "2026-10-31T12:00:00-04:00", [
        "2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-02T01:00:00-05:00",
    ]),
    ("ny-fall-wildcard-runs-both-passes", "*/30 * * * *", NEW_YORK, "2026-11-01T00:00:00-04:00", [
        "2026-11-01T00:30:00-04:00", "2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:00:00-05:00", "2026-11-01T01:30:00-05:00", "2026-11-01T02:00:00-05:00",
    ]),
    ("ny-fall-hourly-is-wildcard", "@hourly", NEW_YORK, "2026-11-01T00:00:00-04:00", [
        "2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00",
    ]),
    # Lord Howe moves by 30 minutes: 02:00 -> 02:30 in October, 02:00 -> 01:30 in April.
    ("lord-howe-spring-fixed", "15 2 * * *", LORD_HOWE, "2026-10-03T12:00:00+10:30", [
        "2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00",
    ]),
    ("lord-howe-spring-wildcard", "*/15 * * * *", LORD_HOWE, "2026-10-04T01:30:00+10:30", [
        "2026-10-04T01:45:00+10:30", "2026-10-04T02:30:00+11:00", "2026-10-04T02:45:00+11:00",
    ]),
    ("lord-howe-fall-fixed", "45 1 * * *", LORD_HOWE, "2026-04-04T12:00:00+11:00", [
        "2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30",
    ]),
    ("lord-howe-fall-wildcard", "*/15 * * * *", LORD_HOWE, "2026-04-05T01:00:00+11:00", [
        "2026-04-05T01:15:00+11:00", "2026-04-05T01:30:00+11:00", "2026-04-05T01:45:00+11:00",
        "2026-04-05T01:30:00+10:30", "2026-04-05T01:45:00+10:30", "2026-04-05T02:00:00+10:30",
    ]),
    # Chatham changes at 02:45 standard time: 02:45 -> 03:45 in September, back in April.
    ("chatham-spring-fixed", "0 3 * * *", CHATHAM, "2026-09-26T12:00:00+12:45", [
        "2026-09-27T03:45:00+13:45", "2026-09-28T03:00:00+13:45",
    ]),
    ("chatham-spring-wildcard", "0 * * * *", CHATHAM, "2026-09-27T01:30:00+12:45", [
        "2026-09-27T02:00:00+12:45", "2026-09-27T04:00:00+13:45",
    ]),
    ("chatham-fall-fixed", "0 3 * * *", CHATHAM, "2026-04-04T12:00:00+13:45", [
        "2026-04-05T03:00:00+13:45", "2026-04-06T03:00:00+12:45",
    ]),
    ("chatham-fall-wildcard", "0 * * * *", CHATHAM, "2026-04-05T01:30:00+13:45", [
        "2026-04-05T02:00:00+13:45", "2026-04-05T03:00:00+13:45", "2026-04-05T03:00:00+12:45",
        "2026-04-05T04:00:00+12:45",
    ]),
    # Dublin's tzdata has negative DST (winter is the "DST"); only the offsets matter.
    ("dublin-spring-fixed", "30 1 * * *", DUBLIN, "2026-03-28T12:00:00+00:00", [
        "2026-03-29T02:00:00+01:00", "2026-03-30T01:30:00+01:00",
    ]),
    ("dublin-spring-wildcard", "30 * * * *", DUBLIN, "2026-03-29T00:00:00+00:00", [
        "2026-03-29T00:30:00+00:00", "2026-03-29T02:30:00+01:00",
    ]),
    ("dublin-fall-fixed", "30 1 * * *", DUBLIN, "2026-10-24T12:00:00+01:00", [
        "2026-10-25T01:30:00+01:00", "2026-10-26T01:30:00+00:00",
    ]),
    ("dublin-fall-wildcard", "30 * * * *", DUBLIN, "2026-10-25T00:00:00+01:00", [
        "2026-10-25T00:30:00+01:00", "2026-10-25T01:30:00+01:00", "2026-10-25T01:30:00+00:00",
        "2026-10-25T02:30:00+00:00",
    ]),
    # Sao Paulo 2018-11-04 had no midnight: 00:00 -> 01:00.
    ("sao-paulo-missing-midnight", "0 0 * * *", SAO_PAULO, "2018-11-03T12:00:00-03:00", [
        "2018-11-04T01:00:00-02:00", "2018-11-05T00:00:00-02:00",
    ]),
    ("sao-paulo-fixed-in-gap", "30 0 * * *", SAO_PAULO, "2018-11-03T12:00:00-03:00", [
        "2018-11-04T01:00:00-02:00", "2018-11-05T00:30:00-02:00",
    ]),
    ("sao-paulo-wildcard", "30 * * * *", SAO_PAULO, "2018-11-03T23:00:00-03:00", [
        "2018-11-03T23:30:00-03:00", "2018-11-04T01:30:00-02:00",
    ]),
    # Apia skipped 2011-12-30 entirely: 2011-12-29 24:00 -10:00 became 2011-12-31 00:00 +14:00.
    ("apia-skipped-day-fixed", "30 2 * * *", APIA, "2011-12-29T12:00:00-10:00", [
        "2011-12-31T00:00:00+14:00", "2011-12-31T02:30:00+14:00",
    ]),
    ("apia-skipped-date", "0 0 30 12 *", APIA, "2011-12-01T00:00:00-10:00", [
        "2011-12-31T00:00:00+14:00", "2012-12-30T00:00:00+14:00",
    ]),
    ("apia-skipped-day-wildcard", "0 * * * *", APIA, "2011-12-29T22:30:00-10:00", [
        "2011-12-29T23:00:00-10:00", "2011-12-31T00:00:00+14:00", "2011-12-31T01:00:00+14:00",
    ]),
    # Almaty moved from +06 to +05 at 2024-03-01 00:00, by law: 23:00-24:00 came twice.
    ("almaty-fixed-first-pass", "30 23 * * *", ALMATY, "2024-02-29T12:00:00+06:00", [
        "2024-02-29T23:30:00+06:00", "2024-03-01T23:30:00+05:00",
    ]),
    ("almaty-wildcard-both-passes", "30 * * * *", ALMATY, "2024-02-29T22:00:00+06:00", [
        "2024-02-29T22:30:00+06:00", "2024-02-29T23:30:00+06:00", "2024-02-29T23:30:00+05:00",
        "2024-03-01T00:30:00+05:00",
    ]),
    ("almaty-midnight-after-the-overlap", "0 0 * * *", ALMATY, "2024-02-29T12:00:00+06:00", [
        "2024-03-01T00:00:00+05:00", "2024-03-02T00:00:00+05:00",
    ]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [case[1:] for case in DST_CASES],
    ids=[case[0] for case in DST_CASES],
)
def test_it_follows_the_dst_rules(
    expression: str, zone: str, after: str, expected: list[str]
) -> None:
    assert fires(expression, zone, after, len(expected)) == expected


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [case[1:] for case in DST_CASES],
    ids=[case[0] for case in DST_CASES],
)
def test_it_walks_back_through_the_same_fires(
    expression: str, zone: str, after: str, expected: list[str]
) -> None:
    schedule = parse(expression, zone)
    instants = [datetime.fromisoformat(fire) for fire in expected]
    for earlier, later in pairwise(instants):
        assert schedule.previous_before(later) == earlier
        assert schedule.count_between(earlier, later) == 1
    assert schedule.count_between(datetime.fromisoformat(after), instants[-1]) == len(instants)


@pytest.mark.parametrize(
    ("day_start", "day_end", "count"),
    [
        ("2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00", 100),
        ("2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00", 92),
        ("2026-07-01T00:00:00-04:00", "2026-07-02T00:00:00-04:00", 96),
    ],
    ids=["25-hour-day", "23-hour-day", "ordinary-day"],
)
def test_every_15_minutes_follows_real_time_through_the_day(
    day_start: str, day_end: str, count: int
) -> None:
    schedule = parse("*/15 * * * *", NEW_YORK)
    start, end = datetime.fromisoformat(day_start), datetime.fromisoformat(day_end)
    before_start = start - timedelta(seconds=1)
    found = list(takewhile(lambda fire: fire < end, schedule.iter_after(before_start)))
    assert len(found) == count
    assert {later - earlier for earlier, later in pairwise(found)} == {timedelta(minutes=15)}
    assert schedule.count_between(before_start, end - timedelta(seconds=1)) == count


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 30 2 * * *", "2026-03-07T12:00:00-05:00",
         ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
        ("*/20 30 2 * * *", "2026-03-07T12:00:00-05:00",
         ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00", "2026-03-09T02:30:20-04:00"]),
        ("*/20 30 1 * * *", "2026-10-31T12:00:00-04:00",
         ["2026-11-01T01:30:00-04:00", "2026-11-01T01:30:20-04:00", "2026-11-01T01:30:40-04:00",
          "2026-11-02T01:30:00-05:00"]),
    ],
    ids=["seconds-zero", "seconds-step-in-gap-runs-once", "seconds-step-in-overlap-first-pass"],
)  # fmt: skip
def test_a_seconds_schedule_is_fixed_time_when_minute_and_hour_are(
    expression: str, after: str, expected: list[str]
) -> None:
    assert not parse(expression, NEW_YORK).wildcard
    assert fires(expression, NEW_YORK, after, len(expected)) == expected


@pytest.mark.parametrize(
    ("expression", "zone", "year", "count"),
    [
        ("* * * * *", NEW_YORK, 2026, 365 * 1440),
        ("* * * * *", "UTC", 2028, 366 * 1440),
        ("0 * * * *", NEW_YORK, 2026, 365 * 24),
        ("0 0-23 * * *", NEW_YORK, 2026, 365 * 24 - 1),
        ("*/15 * * * *", LORD_HOWE, 2026, 365 * 96),
        ("30 2 * * *", NEW_YORK, 2026, 365),
        ("0 0 L * *", CHATHAM, 2026, 12),
        ("*/10 * * * * *", DUBLIN, 2026, 365 * 8640),
    ],
    ids=[
        "every-minute",
        "every-minute-leap-year",
        "hourly-wildcard-23-and-25-hour-days",
        "hourly-fixed-gap-hour-merges-with-0300",
        "lord-howe-half-hour-shifts-balance",
        "daily-gap-time-still-once-a-day",
        "last-day-of-month",
        "every-10-seconds",
    ],
)
def test_it_counts_a_year_exactly(expression: str, zone: str, year: int, count: int) -> None:
    start = datetime(year, 1, 1, tzinfo=ZoneInfo(zone))
    end = datetime(year + 1, 1, 1, tzinfo=ZoneInfo(zone))
    assert parse(expression, zone).count_between(start, end) == count


def test_count_between_agrees_with_iterating_for_a_week_around_a_transition() -> None:
    schedule = parse("*/7 1-3 * * *", NEW_YORK)
    start = datetime.fromisoformat("2026-10-29T00:00:00-04:00")
    end = start + timedelta(days=7)
    listed = list(takewhile(lambda fire: fire <= end, schedule.iter_after(start)))
    # 9 fires an hour in hours 1-3; the wildcard job runs the repeated 01:00 hour twice.
    assert schedule.count_between(start, end) == len(listed) == 7 * 27 + 9


# --- the grammar ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "same_as"),
    [
        ("0 9 * JAN,jul Mon", "0 9 * 1,7 1"),
        ("0 9 * apr-jul *", "0 9 * 4-7 *"),  # the end "jul" is no L item
        ("0 9 * * mon-FRI", "0 9 * * 1-5"),
        ("0 9 * * 7", "0 9 * * 0"),
        ("0 9 * * sun", "0 9 * * 0"),
        ("0 9 * * fri-sun", "0 9 * * 5,6,0"),
        ("0 9 * * 5-7", "0 9 * * 0,5,6"),
        ("7/10 * * * *", "7,17,27,37,47,57 * * * *"),
        ("5-50/10 * * * *", "5,15,25,35,45 * * * *"),
        ("0 0 ? * 1", "0 0 * * 1"),
        ("0 0 0 * * *", "0 0 * * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@MIDNIGHT", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("0 0 * * */2", "0 0 * * 0,2,4,6"),
        ("0 0 1-31/10 * *", "0 0 1,11,21,31 * *"),
    ],
    ids=lambda text: text.replace(" ", "_"),
)
def test_spellings_mean_the_same_fires(expression: str, same_as: str) -> None:
    assert fires(expression, "UTC", "2026-01-01T00:00:00Z", 40) == fires(
        same_as, "UTC", "2026-01-01T00:00:00Z", 40
    )


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 0 L * *", "2026-01-01T00:00:00Z", ["2026-01-31", "2026-02-28", "2026-03-31"]),
        ("0 0 L 2 *", "2027-03-01T00:00:00Z", ["2028-02-29", "2029-02-28"]),
        ("0 0 L-2 * *", "2026-01-01T00:00:00Z", ["2026-01-29", "2026-02-26", "2026-03-29"]),
        ("0 0 LW * *", "2026-01-01T00:00:00Z", ["2026-01-30", "2026-02-27", "2026-03-31"]),
        ("0 0 15W * *", "2026-02-01T00:00:00Z", ["2026-02-16", "2026-03-16", "2026-04-15"]),
        ("0 0 1W * *", "2026-07-31T12:00:00Z", ["2026-08-03", "2026-09-01", "2026-10-01"]),
        ("0 0 31W * *", "2026-05-01T00:00:00Z", ["2026-05-29", "2026-07-31", "2026-08-31"]),
        ("0 0 * * 5L", "2026-01-01T00:00:00Z", ["2026-01-30", "2026-02-27", "2026-03-27"]),
        ("0 0 * * friL", "2026-01-01T00:00:00Z", ["2026-01-30", "2026-02-27", "2026-03-27"]),
        ("0 0 * * fri#3", "2026-01-01T00:00:00Z", ["2026-01-16", "2026-02-20", "2026-03-20"]),
        ("0 0 * * 1#5", "2026-01-01T00:00:00Z", ["2026-03-30", "2026-06-29", "2026-08-31"]),
        ("0 0 13 * 5", "2026-01-01T00:00:00Z",
         ["2026-01-02", "2026-01-09", "2026-01-13", "2026-01-16"]),
        ("0 0 */10 * 5", "2026-01-01T00:00:00Z", ["2026-05-01", "2026-07-31"]),
        ("0 0 1,L * *", "2026-01-01T00:00:00Z", ["2026-01-31", "2026-02-01", "2026-02-28"]),
    ],
    ids=[
        "L-last-day",
        "L-in-february-of-a-leap-year",
        "L-2-two-before-the-last",
        "LW-last-weekday",
        "15W-sunday-moves-to-monday",
        "1W-saturday-stays-in-the-month",
        "31W-sunday-stays-in-the-month",
        "5L-last-friday",
        "friL-named",
        "fri#3-third-friday",
        "1#5-fifth-monday-only-where-one-exists",
        "vixie-or-when-neither-day-field-is-star",
        "vixie-and-when-a-day-field-starts-with-star",
        "list-of-day-and-L",
    ],
)  # fmt: skip
def test_day_rules(expression: str, after: str, expected: list[str]) -> None:
    assert days(expression, after, len(expected)) == expected


def test_seconds_come_first() -> None:
    assert fires("*/20 * * * * *", "UTC", "2026-01-01T00:00:00Z", 3) == [
        "2026-01-01T00:00:20+00:00",
        "2026-01-01T00:00:40+00:00",
        "2026-01-01T00:01:00+00:00",
    ]
    assert fires("30 0 12 * * *", "UTC", "2026-01-01T00:00:00Z", 1) == ["2026-01-01T12:00:30+00:00"]
    assert parse("30 0 12 * * *").has_seconds
    assert not parse("0 12 * * *").has_seconds
    assert not parse("@hourly").has_seconds


def documented_hash(job_name: str, field_number: int) -> int:
    """docs/schedules.md: sha256 of "{job_name}:{field}", first 8 bytes, big-endian."""
    digest = hashlib.sha256(f"{job_name}:{field_number}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


@pytest.mark.parametrize("job_name", ["backup", "report.daily", "a", "Z-9_x"])
def test_h_is_the_documented_hash_of_the_job_name(job_name: str) -> None:
    minute, hour = documented_hash(job_name, 1) % 60, documented_hash(job_name, 2) % 24
    day = 1 + documented_hash(job_name, 3) % 28
    expected = f"2026-01-{day:02}T{hour:02}:{minute:02}:00+00:00"
    assert fires("H H H * *", "UTC", "2026-01-01T00:00:00Z", 1, job_name) == [expected]
    # The same field numbers in the 6-field form: seconds are field 0.
    assert fires("0 H H H * *", "UTC", "2026-01-01T00:00:00Z", 1, job_name) == [expected]


def test_h_is_stable_across_processes() -> None:
    here = fires("H H * * *", "UTC", "2026-01-01T00:00:00Z", 1, "nightly-backup")
    program = (
        "from zoneinfo import ZoneInfo; from datetime import datetime, UTC;"
        "from cronplus.core.schedule import Schedule;"
        "s = Schedule.parse('H H * * *', zone=ZoneInfo('UTC'), job_name='nightly-backup');"
        "print(s.next_after(datetime(2026, 1, 1, tzinfo=UTC)).isoformat())"
    )
    env = {"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env)
    assert done.stdout.strip() == here[0], done.stderr


def test_h_spreads_jobs_over_the_range() -> None:
    minutes = Counter(
        parse("H * * * *", job_name=f"job-{n}").next_after(datetime(2026, 1, 1, tzinfo=UTC)).minute
        for n in range(600)
    )
    assert len(minutes) == 60
    assert max(minutes.values()) < 30


@pytest.mark.parametrize(
    ("expression", "allowed", "spacing"),
    [
        ("H/15 * * * *", set(range(60)), 15),
        ("H(0-29) * * * *", set(range(30)), 0),
        ("H(10-40)/10 * * * *", set(range(10, 41)), 10),
    ],
    ids=["hashed-offset-within-the-step", "hashed-within-a-range", "hashed-range-with-step"],
)
def test_h_variants_stay_in_their_range(expression: str, allowed: set[int], spacing: int) -> None:
    for n in range(50):
        found = fires(expression, "UTC", "2026-01-01T00:00:00Z", 8, f"job-{n}")
        minutes = sorted({int(fire[14:16]) for fire in found})
        assert set(minutes) <= allowed
        if spacing:
            assert minutes[0] < min(allowed) + spacing
            assert {b - a for a, b in pairwise(minutes)} == {spacing}
        else:
            assert len(minutes) == 1


@pytest.mark.parametrize(
    ("expression", "wildcard"),
    [
        ("*/15 * * * *", True),
        ("30 * * * *", True),
        ("0 */2 * * *", True),
        ("@hourly", True),
        ("H * * * *", True),
        ("0 * 2 * * *", True),
        ("30 2 * * *", False),
        ("0 0-23/2 * * *", False),
        ("@daily", False),
        ("H H * * *", False),
        ("* 30 2 * * *", False),
    ],
    ids=lambda value: str(value).replace(" ", "_"),
)
def test_the_dst_class_comes_from_the_minute_and_hour_fields(
    expression: str, wildcard: bool
) -> None:
    assert parse(expression).wildcard is wildcard


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "expected 5 fields, or 6 with seconds first, got 0"),
        ("* * * *", "expected 5 fields, or 6 with seconds first, got 4"),
        ("* * * * * * *", "expected 5 fields, or 6 with seconds first, got 7"),
        ("@often", "unknown macro '@often'; expected @yearly, @annually, @monthly, @weekly, "
                   "@daily, @midnight, @hourly or @reboot"),
        ("@daily 5", "unknown macro '@daily 5'; expected @yearly, @annually, @monthly, @weekly, "
                     "@daily, @midnight, @hourly or @reboot"),
        ("@reboot 5", "unknown macro '@reboot 5'; expected @yearly, @annually, @monthly, "
                      "@weekly, @daily, @midnight, @hourly or @reboot"),
        ("60 * * * * *", "second field: 60 is out of range 0-59"),
        ("61 * * * *", "minute field: 61 is out of range 0-59"),
        ("* 24 * * *", "hour field: 24 is out of range 0-23"),
        ("* * 0 * *", "day-of-month field: 0 is out of range 1-31"),
        ("* * * 13 *", "month field: 13 is out of range 1-12"),
        ("* * * * 8", "day-of-week field: 8 is out of range 0-7"),
        ("x * * * *", "minute field: 'x' is not a number; expected 0-59"),
        ("jan * * * *", "minute field: 'jan' is not a number; expected 0-59"),
        ("* * * foo *", "month field: 'foo' is not a number or a month name; "
                        "expected 1-12 or jan-dec"),
        ("* * * * funday", "day-of-week field: 'funday' is not a number or a day-of-week name; "
                           "expected 0-7 or sun-sat"),
        ("1-x * * * *", "minute field: 'x' in '1-x' is not a number; expected 0-59"),
        ("*/0 * * * *", "minute field: step 0 in '*/0' is out of range; expected 1 or more"),
        ("0-59/00 * * * *", "minute field: step 0 in '0-59/00' is out of range; "
                            "expected 1 or more"),
        ("* */x * * *", "hour field: step 'x' in '*/x' is not a number; expected 1 or more"),
        ("* */-1 * * *", "hour field: step '-1' in '*/-1' is not a number; expected 1 or more"),
        ("* * */ * *", "day-of-month field: step '' in '*/' is not a number; "
                       "expected 1 or more"),
        ("* * * */\u0663 *", "month field: step '\u0663' in '*/\u0663' is not a number; "
                             "expected 1 or more"),
        ("5-2 * * * *", "minute field: range 5-2 runs backwards; expected low-high"),
        ("1,,2 * * * *", "minute field: empty item in '1,,2'; expected a comma-separated list"),
        ("? * * * *", "minute field: '?' is only allowed in the day-of-month and "
                      "day-of-week fields"),
        ("L * * * *", "minute field: 'L': expected no L, W or # here"),
        ("* * * * L5", "day-of-week field: 'L5': expected the weekday before L, "
                       "such as 5L (last Friday)"),
        ("* * * * 1W", "day-of-week field: '1W': expected a weekday, wL or w#n here"),
        ("* * 5#3 * *", "day-of-month field: '5#3': expected a day, L, L-n, LW or nW here"),
        ("* * 5L * *", "day-of-month field: '5L': expected a day, L, L-n, LW or nW here"),
        ("* * * * 5#6", "day-of-week field: occurrence 6 in '5#6' is out of range 1-5"),
        ("* * 32W * *", "day-of-month field: 32 is out of range 1-31"),
        ("* * L-31 * *", "day-of-month field: 31 in 'L-31' is out of range 0-30"),
        ("H(5) * * * *", "minute field: 'H(5)' is not a hash; expected H, H(low-high) or H/step"),
        ("H(30-10) * * * *", "minute field: range in H(30-10) runs backwards; "
                             "expected H(low-high)"),
        ("H(0-99) * * * *", "minute field: 99 is out of range 0-59"),
        ("0 0 31 2 *", "never fires: day 31 does not exist in February"),
        ("0 0 30,31 2 *", "never fires: days 30 and 31 do not exist in February"),
        ("0 0 31 apr,jun *", "never fires: day 31 does not exist in April or June"),
        ("0 0 30W 2 *", "never fires: no date within 28 years matches the day and month fields"),
        ("0 0 31 2 */7", "never fires: no date within 28 years matches the day and month fields"),
    ],
    ids=lambda value: value.replace(" ", "_")[:40] or "empty",
)  # fmt: skip
def test_bad_expressions_say_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse(expression)
    assert str(caught.value) == message


def test_rare_but_possible_dates_are_not_never() -> None:
    assert days("0 0 29 2 1", "2026-01-01T00:00:00Z", 1) == ["2026-02-02"]  # OR: any Monday
    assert days("0 0 29 2 */7", "2026-01-01T00:00:00Z", 1) == ["2032-02-29"]  # AND: a Sunday


@pytest.mark.parametrize(
    ("instant", "message"),
    [
        (datetime(2026, 1, 1), "expected an aware datetime, got 2026-01-01T00:00:00"),
        (datetime(9999, 1, 1, tzinfo=UTC), "expected a year from 100 to 9000, got 9999-"),
    ],
    ids=["naive", "beyond-year-9000"],
)
def test_it_rejects_instants_it_cannot_place(instant: datetime, message: str) -> None:
    schedule = parse("* * * * *")
    for ask in (schedule.next_after, schedule.previous_before):
        with pytest.raises(ValueError, match=re.escape(message)):
            ask(instant)


# --- the API ----------------------------------------------------------------------------------


def test_it_answers_in_utc_for_any_zone_asked() -> None:
    schedule = parse("30 2 * * *", NEW_YORK)
    after = datetime.fromisoformat("2026-06-01T12:00:00+09:00")
    fire = schedule.next_after(after)
    assert fire.tzinfo is UTC
    assert fire.isoformat() == "2026-06-01T06:30:00+00:00"


def test_fires_are_strictly_after_and_strictly_before() -> None:
    schedule = parse("*/5 * * * *")
    fire = datetime(2026, 1, 1, 12, 5, tzinfo=UTC)
    assert schedule.next_after(fire) == fire + timedelta(minutes=5)
    assert schedule.next_after(fire - timedelta(microseconds=1)) == fire
    assert schedule.previous_before(fire) == fire - timedelta(minutes=5)
    assert schedule.previous_before(fire + timedelta(microseconds=1)) == fire
    assert schedule.count_between(fire, fire) == 0
    assert schedule.count_between(fire - timedelta(microseconds=1), fire) == 1


def test_previous_before_reaches_back_years() -> None:
    schedule = parse("0 0 29 2 *", NEW_YORK)
    found = schedule.previous_before(datetime(2031, 1, 1, tzinfo=UTC))
    assert found is not None
    assert found.isoformat() == "2028-02-29T05:00:00+00:00"


def test_parses_are_cached_and_equal_by_value() -> None:
    zone = ZoneInfo(NEW_YORK)
    first = Schedule.parse("0 9 * * 1-5", zone=zone, job_name="standup")
    assert Schedule.parse("0 9 * * 1-5", zone=zone, job_name="standup") is first
    assert Schedule(expression="0 9 * * 1-5", zone=zone, job_name="standup") == first
    assert first != Schedule.parse("0 9 * * 1-5", zone=zone, job_name="retro")


# --- English ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "text"),
    [
        ("*/20 9-17 * * 1-5", "every 20 minutes from 09:00 through 17:59, Monday through Friday"),
        ("30 2 * * *", "at 02:30"),
        ("0 0 L * *", "at 00:00 on the last day of the month"),
        ("* * * * *", "every minute"),
        ("*/15 * * * *", "every 15 minutes"),
        ("@hourly", "at minute 0 of every hour"),
        ("0 */2 * * *", "at minute 0 of every 2nd hour"),
        ("0 9-17 * * *", "at minute 0 of every hour from 09:00 through 17:59"),
        ("5-50/10 * * * *", "at minutes 5, 15, 25, 35 and 45 of every hour"),
        ("0 1,5,9,13,17 * * *", "at minute 0 in hours 1, 5, 9, 13 and 17"),
        ("0,30 2 * * *", "at 02:00 and 02:30"),
        ("0 9 * * 1,3,5", "at 09:00 on Monday, Wednesday and Friday"),
        ("0 9 1,15 * *", "at 09:00 on days 1 and 15 of the month"),
        ("0 9 15W * *", "at 09:00 on the weekday nearest day 15 of the month"),
        ("0 0 LW * *", "at 00:00 on the last weekday of the month"),
        ("0 0 L-3 * *", "at 00:00 on the 4th-to-last day of the month"),
        ("0 18 * * 5L", "at 18:00 on the last Friday of the month"),
        ("0 10 * * 2#1", "at 10:00 on the first Tuesday of the month"),
        ("@yearly", "at 00:00 on day 1 of the month in January"),
        ("0 0 1 * 1", "at 00:00 on day 1 of the month or Monday"),
        ("0 0 */2 * mon", "at 00:00 on every 2nd day of the month if it is Monday"),
        ("0 9 * jun-aug *", "at 09:00, June through August"),
        ("*/10 * * * * *", "every 10 seconds"),
        ("30 * * * * *", "at second 30 of every minute"),
        ("30 0 12 * * *", "at 12:00:30"),
        ("*/10 30 2 * * *", "every 10 seconds during 02:30"),
    ],
    ids=lambda value: value.replace(" ", "_"),
)
def test_describe_says_it_in_english(expression: str, text: str) -> None:
    assert parse(expression).describe() == text


# --- the zone data behind the search -----------------------------------------------------------


def tzif_offset_changes(key: str) -> list[int]:
    """When (seconds since the epoch) the zone's TZif file changes its UTC offset (RFC 8536)."""
    path = next((Path(root, key) for root in zoneinfo.TZPATH if Path(root, key).is_file()), None)
    if path is not None:
        data = path.read_bytes()
    else:
        data = importlib.resources.files("tzdata.zoneinfo").joinpath(key).read_bytes()
    counts = struct.unpack(">6l", data[20:44])
    isut, isstd, leap, times, types, chars = counts
    at = 44 + times * 5 + types * 6 + chars + leap * 8 + isstd + isut  # skip the 32-bit block
    isut, isstd, leap, times, types, chars = struct.unpack(">6l", data[at + 20 : at + 44])
    at += 44
    instants = struct.unpack(f">{times}q", data[at : at + 8 * times])
    kinds = data[at + 8 * times : at + 9 * times]
    table = at + 9 * times
    offsets = [
        struct.unpack(">l", data[table + 6 * n : table + 6 * n + 4])[0] for n in range(types)
    ]
    changes, current = [], offsets[0]
    for instant, kind in zip(instants, kinds, strict=True):
        if offsets[kind] != current:
            changes.append(instant)
            current = offsets[kind]
    return changes


def test_no_zone_changes_its_offset_twice_within_the_daily_sampling_step() -> None:
    # schedule.py finds offset changes by probing once a day, so two changes in one day would
    # hide each other. Guard the assumption against future tzdata releases.
    too_close = []
    for key in sorted(zoneinfo.available_timezones()):
        changes = tzif_offset_changes(key)
        too_close += [(key, b) for a, b in pairwise(changes) if b - a <= 86_400]
    assert too_close == []


# --- module boundaries ---------------------------------------------------------------------------


def imports_cronexpr(source: str, module: str) -> bool:
    """Whether ``source``, the text of ``module`` (``cronplus.engine.engine``), imports cronexpr."""
    target, package = "cronplus.core.cronexpr", module.rsplit(".", 1)[0].split(".")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            origin = ".".join([*base, *([node.module] if node.module else [])])
            names = [origin, *(f"{origin}.{alias.name}" for alias in node.names)]
        else:
            continue
        if any(name == target or name.startswith(f"{target}.") for name in names):
            return True
    return False


@pytest.mark.parametrize(
    ("source", "module", "found"),
    [
        ("import cronplus.core.cronexpr", "cronplus.engine.engine", True),
        ("import cronplus.core.cronexpr as grammar", "cronplus.engine.engine", True),
        ("from cronplus.core import cronexpr", "cronplus.engine.engine", True),
        ("from cronplus.core.cronexpr import Matcher", "cronplus.engine.engine", True),
        ("from . import cronexpr", "cronplus.core.plan", True),
        ("from .cronexpr import parse", "cronplus.core.plan", True),
        ("from ..core import cronexpr", "cronplus.engine.engine", True),
        ("def f() -> None:\n    from cronplus.core import cronexpr", "cronplus.cli.main", True),
        ("from cronplus.core import schedule", "cronplus.engine.engine", False),
        ("from cronplus.core.schedule import Schedule", "cronplus.engine.engine", False),
        ("from . import cronexpr", "cronplus.engine.engine", False),
        ("import cronexpr", "cronplus.engine.engine", False),
    ],
    ids=[
        "import", "import-as", "from-package", "from-module", "relative", "relative-module",
        "relative-from-a-sibling-package", "inside-a-function", "schedule", "from-schedule",
        "namesake-in-another-subpackage", "top-level-namesake",
    ],
)  # fmt: skip
def test_the_import_scan_sees_every_way_of_importing_cronexpr(
    source: str, module: str, found: bool
) -> None:
    assert imports_cronexpr(source, module) is found


def test_only_schedule_imports_the_cron_expression_module() -> None:
    # DESIGN section 2: one importer, so the grammar can be swapped for a library.
    root = Path(cronplus.__file__).parent
    importers = [
        path.relative_to(root.parent).as_posix()
        for path in sorted(root.rglob("*.py"))
        if imports_cronexpr(
            path.read_text(encoding="utf-8"),
            ".".join(path.relative_to(root.parent).with_suffix("").parts),
        )
    ]
    assert importers == ["cronplus/core/schedule.py"]


@pytest.mark.parametrize(
    ("expression", "first"),
    [("0 12 * * 7/1", "2026-01-04T12:00:00+00:00"), ("0 12 * * 7/3", "2026-01-04T12:00:00+00:00")],
    ids=["sunday-as-7-stepped-by-1", "sunday-as-7-stepped-by-3"],
)
def test_a_day_of_week_step_from_7_means_sunday(expression: str, first: str) -> None:
    schedule = Schedule.parse(expression, zone=ZoneInfo("UTC"), job_name="s")
    after = datetime(2026, 1, 1, tzinfo=UTC)
    assert schedule.next_after(after).isoformat() == first


# --- separators and steps beyond the field (Debian cron) ---------------------------------------


@pytest.mark.parametrize(
    ("char", "name"),
    [
        ("\u00a0", "U+00A0 NO-BREAK SPACE"),
        ("\u2003", "U+2003 EM SPACE"),
        ("\u3000", "U+3000 IDEOGRAPHIC SPACE"),
        ("\u0085", "U+0085 NEXT LINE (NEL)"),
        ("\u202f", "U+202F NARROW NO-BREAK SPACE"),
        ("\u2028", "U+2028 LINE SEPARATOR"),
        ("\u1680", "U+1680 OGHAM SPACE MARK"),
        ("\n", "U+000A LINE FEED"),
        ("\r", "U+000D CARRIAGE RETURN"),
        ("\v", "U+000B LINE TABULATION"),
        ("\f", "U+000C FORM FEED"),
        ("\x1f", "U+001F UNIT SEPARATOR"),
    ],
    ids=lambda value: value.split()[0] if value.startswith("U+") else "char",
)
def test_fields_are_separated_by_ascii_spaces_and_tabs_only(char: str, name: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse(f"0{char}3 * * *")
    assert str(caught.value) == f"{name} between fields; separate fields with spaces or tabs"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 3 * * *\u00a0", "U+00A0 NO-BREAK SPACE after the last field"),
        ("\u3000@daily", "U+3000 IDEOGRAPHIC SPACE before the first field"),
        ("0 3 * * * \u2003 ", "U+2003 EM SPACE after the last field"),
        ("\u00a0", "U+00A0 NO-BREAK SPACE instead of fields"),
        ("0\t3\u00a0* * *", "U+00A0 NO-BREAK SPACE between fields"),
    ],
    ids=["trailing", "leading-before-a-macro", "trailing-among-spaces", "alone", "after-a-tab"],
)
def test_a_stray_separator_is_named_where_it_stands(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse(expression)
    assert str(caught.value) == f"{message}; separate fields with spaces or tabs"


@pytest.mark.parametrize(
    ("expression", "same_as"),
    [
        ("0\t3\t*\t*\t*", "0 3 * * *"),
        (" \t0  3 *\t \t* *\t", "0 3 * * *"),
        ("30\t0 3 * * *", "30 0 3 * * *"),
    ],
    ids=["tabs", "mixed-runs-and-edges", "tab-in-six-fields"],
)
def test_tabs_and_runs_of_blanks_separate_fields(expression: str, same_as: str) -> None:
    assert parse(expression).has_seconds is parse(same_as).has_seconds
    assert fires(expression, NEW_YORK, "2026-03-07T00:00:00-05:00", 3) == fires(
        same_as, NEW_YORK, "2026-03-07T00:00:00-05:00", 3
    )


@pytest.mark.parametrize(
    ("expression", "expected"),
    [  # after 2026-01-01T00:00:30Z, a Thursday
        ("*/100 * * * *", ["2026-01-01T01:00:00+00:00", "2026-01-01T02:00:00+00:00"]),
        ("0-59/61 * * * *", ["2026-01-01T01:00:00+00:00", "2026-01-01T02:00:00+00:00"]),
        ("5-50/100 * * * *", ["2026-01-01T00:05:00+00:00", "2026-01-01T01:05:00+00:00"]),
        ("7/60 * * * *", ["2026-01-01T00:07:00+00:00", "2026-01-01T01:07:00+00:00"]),
        ("0 */24 * * *", ["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"]),
        ("0 12-23/99 * * *", ["2026-01-01T12:00:00+00:00", "2026-01-02T12:00:00+00:00"]),
        ("0 0 */31 * *", ["2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00"]),
        ("0 0 1 */12 *", ["2027-01-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00"]),
        ("0 0 * * */7", ["2026-01-04T00:00:00+00:00", "2026-01-11T00:00:00+00:00"]),
        ("0 0 * * 1-5/9", ["2026-01-05T00:00:00+00:00", "2026-01-12T00:00:00+00:00"]),
        ("*/60 0 0 * * *", ["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"]),
        (f"*/{'9' * 40} * * * *", ["2026-01-01T01:00:00+00:00", "2026-01-01T02:00:00+00:00"]),
    ],
    ids=[
        "star-100-minutes", "range-61-minutes", "range-from-5", "start-7-step-60", "star-24-hours",
        "range-99-hours", "star-31-days", "star-12-months", "star-7-weekdays", "range-9-weekdays",
        "star-60-seconds", "forty-digit-step",
    ],
)  # fmt: skip
def test_a_step_wider_than_the_range_keeps_only_its_first_value(
    expression: str, expected: list[str]
) -> None:
    assert fires(expression, "UTC", "2026-01-01T00:00:30Z", 2) == expected
    after = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    assert parse(expression).next_after(after).isoformat() == expected[0]


def test_a_hashed_step_wider_than_the_field_is_one_hashed_value() -> None:
    def hourly(expression: str) -> list[str]:
        return fires(expression, "UTC", "2026-01-01T00:00:00Z", 3, job_name="backup")

    assert hourly("H/100 * * * *") == hourly("H/60 * * * *") == hourly("H * * * *")
    assert len({fire[14:16] for fire in hourly("H/100 * * * *")}) == 1


def test_a_stray_separator_reaches_validate_with_its_place() -> None:
    text = 'jobs:\n  backup:\n    schedule: "0\u00a03 * * *"\n    command: x\n'
    with pytest.raises(ConfigError) as caught:
        loads(text, path=Path("crontab.yaml"), env={"HOME": "/home/op", "TZ": "UTC"}, euid=1000)
    assert [str(issue) for issue in caught.value.issues] == [
        "crontab.yaml:3:15: jobs.backup.schedule: U+00A0 NO-BREAK SPACE between fields; "
        "separate fields with spaces or tabs"
    ]

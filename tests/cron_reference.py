"""A brute-force reference for cron schedules: slow, plain and obviously correct.

It shares no code with ``cronplus.core.schedule``. It follows the rules in docs/schedules.md
literally: it steps real instants one minute (or one second) at a time through a window,
reads the zone's wall clock at each step, and fires

- wildcard jobs whenever the wall clock shows a matching time;
- fixed-time jobs once for each matching wall time, at the first step where the wall
  clock reaches that time or jumps past it (so a time skipped by a gap fires at the jump,
  and a time shown twice fires on its first showing only).
"""

from __future__ import annotations

import calendar
import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# (lowest, highest) of each field, seconds first; what `*` covers; where `H` may land.
LIMITS = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
STAR = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]
HASH = [(0, 59), (0, 59), (0, 23), (1, 28), (1, 12), (0, 6)]


def hashed(job_name: str, field_number: int) -> int:
    digest = hashlib.sha256(f"{job_name}:{field_number}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def number(text: str, field_number: int) -> int:
    text = text.lower()
    if field_number == 4 and text in MONTHS:
        return MONTHS.index(text) + 1
    if field_number == 5 and text in WEEKDAYS:
        return WEEKDAYS.index(text)
    return int(text)


def plain_values(item: str, field_number: int, job_name: str) -> set[int]:
    """The numbers one list item stands for (no L, W or #)."""
    step = 1
    has_step = "/" in item
    if has_step:
        item, step_text = item.split("/")
        step = int(step_text)
    if item in ("*", "?"):
        low, high = STAR[field_number]
    elif item.upper().startswith("H"):
        if item.upper() == "H":
            low, high = HASH[field_number]
        else:
            inside = item[2:-1]
            low, high = (number(part, field_number) for part in inside.split("-"))
        size = high - low + 1
        if has_step:
            low = low + hashed(job_name, field_number) % min(step, size)
        else:
            low = high = low + hashed(job_name, field_number) % size
    elif "-" in item:
        low, high = (number(part, field_number) for part in item.split("-"))
        if field_number == 5 and high == 0 < low:  # "fri-sun": Sunday also ends the week
            high = 7  # but "sun-sun" (0-0) is Sunday alone, not the whole week
    else:
        low = number(item, field_number)
        high = max(STAR[field_number][1], low) if has_step else low  # 7/2: Sunday
    values = set(range(low, high + 1, step))
    if field_number == 5 and 7 in values:
        values = (values - {7}) | {0}
    return values


@dataclass
class Field:
    values: set[int]
    day_rules: list[str]
    starts_with_star: bool


def parse_field(text: str, field_number: int, job_name: str) -> Field:
    values: set[int] = set()
    rules: list[str] = []
    for item in text.split(","):
        upper = item.upper()
        is_day_rule = field_number == 3 and (upper.startswith("L") or upper.endswith("W"))
        is_day_rule |= field_number == 5 and ("#" in upper or upper.endswith("L"))
        if is_day_rule:
            rules.append(upper)
        else:
            values |= plain_values(item, field_number, job_name)
    return Field(values, rules, text.startswith(("*", "?")))


def weekday(day: date) -> int:
    """Sunday 0 .. Saturday 6, as cron counts."""
    return (day.weekday() + 1) % 7


def month_length(day: date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def nearest_weekday(year: int, month: int, target: int) -> int | None:
    """Quartz ``W``: the Monday-Friday nearest ``target``, without leaving the month."""
    length = calendar.monthrange(year, month)[1]
    if target > length:
        return None
    candidates = [d for d in range(1, length + 1) if weekday(date(year, month, d)) not in (0, 6)]
    # Closest first; on a tie (cannot happen for a weekend day) the earlier day.
    return min(candidates, key=lambda d: (abs(d - target), d))


def dom_rule_matches(rule: str, day: date) -> bool:
    length = month_length(day)
    if rule == "L":
        return day.day == length
    if rule.startswith("L-"):
        return day.day == length - int(rule[2:])
    if rule == "LW":
        last_weekday = max(
            d for d in range(1, length + 1) if weekday(date(day.year, day.month, d)) not in (0, 6)
        )
        return day.day == last_weekday
    return day.day == nearest_weekday(day.year, day.month, int(rule[:-1]))


def dow_rule_matches(rule: str, day: date) -> bool:
    if "#" in rule:
        which, nth = rule.split("#")
        wanted = number(which, 5) % 7
        return weekday(day) == wanted and (day.day - 1) // 7 + 1 == int(nth)
    wanted = number(rule[:-1], 5) % 7
    return weekday(day) == wanted and day.day + 7 > month_length(day)


class Reference:
    """One expression, matched field by field against naive wall times."""

    def __init__(self, expression: str, job_name: str) -> None:
        texts = expression.split()
        if texts[0].startswith("@"):
            texts = MACROS[texts[0].lower()].split()
        self.has_seconds = len(texts) == 6
        if not self.has_seconds:
            texts = ["0", *texts]
        self.fields = [parse_field(text, n, job_name) for n, text in enumerate(texts)]
        self.wildcard = texts[1].startswith("*") or texts[2].startswith("*")
        self._days: dict[date, bool] = {}

    def day_matches(self, day: date) -> bool:
        if day not in self._days:
            dom, month, dow = self.fields[3], self.fields[4], self.fields[5]
            by_dom = day.day in dom.values or any(dom_rule_matches(r, day) for r in dom.day_rules)
            by_dow = weekday(day) in dow.values or any(
                dow_rule_matches(r, day) for r in dow.day_rules
            )
            if dom.starts_with_star or dow.starts_with_star:
                by_day = by_dom and by_dow
            else:
                by_day = by_dom or by_dow
            self._days[day] = by_day and day.month in month.values
        return self._days[day]

    def matches(self, wall: datetime) -> bool:
        second, minute, hour = self.fields[0], self.fields[1], self.fields[2]
        return (
            wall.second in second.values
            and wall.minute in minute.values
            and wall.hour in hour.values
            and self.day_matches(wall.date())
        )


def reference_fires(
    expression: str, zone: ZoneInfo, job_name: str, start: datetime, end: datetime
) -> list[datetime]:
    """Every fire in ``(start, end]``, found by visiting each minute (or second) of it."""
    reference = Reference(expression, job_name)
    step = timedelta(seconds=1 if reference.has_seconds else 60)
    # Walk the day before too, a minute at a time, so the fixed-time rule knows which wall
    # times the clock already showed (no zone has moved back by a whole day).
    first = start.astimezone(UTC).replace(second=0, microsecond=0)
    instant = first - timedelta(days=1)
    latest_wall: datetime | None = None
    fires = []
    while instant <= end:
        wall = instant.astimezone(zone).replace(tzinfo=None)
        if instant > start and shows_a_fire(reference, latest_wall, wall, step):
            fires.append(instant)
        if latest_wall is None or wall > latest_wall:
            latest_wall = wall
        instant += step if instant >= first else timedelta(minutes=1)
    return fires


def shows_a_fire(
    reference: Reference, latest_wall: datetime | None, wall: datetime, step: timedelta
) -> bool:
    """Does the clock, moving from ``latest_wall`` (the latest time shown) to ``wall``, fire?"""
    if reference.wildcard:
        return reference.matches(wall)
    if latest_wall is None or wall <= latest_wall:
        return False
    # Every wall time after the latest one shown, up to this one, is shown (or jumped over)
    # for the first time right now.
    candidate = latest_wall + step
    while candidate <= wall:
        if reference.matches(candidate):
            return True
        candidate += step
    return False

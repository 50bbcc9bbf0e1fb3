"""Cron expressions: the grammar, and matching fields in naive wall time.

Only ``cronplus/core/schedule.py`` imports this module (a test in tests/test_schedule.py checks
it), so the grammar could be swapped for a library; zones and DST are schedule.py's. The
rules are in docs/schedules.md. In short: 5 fields (minute hour day-of-month month
day-of-week), 6 with seconds first, or a macro, separated by ASCII spaces and tabs only;
names, ranges, lists and steps (``7/10`` is ``7-max/10``; a step wider than the range keeps
its first value); ``?`` is ``*`` in the day fields; ``L``, ``L-3``, ``LW``, ``15W`` in
day-of-month; ``5L`` (last Friday) and ``5#3`` (third Friday) in day-of-week; ``H``,
``H/15``, ``H(0-29)`` hash sha256(f"{job_name}:{field}"), the field counted seconds-first
(0-5) so a 5-field and a 6-field form agree.

No cron library: croniter 7 took 180 us to parse and step one expression (10,000 jobs:
1.8 s) and follows none of the DST rules. Fields compile to bitmasks and a sorted tuple of
minutes of the day; searches jump to the next matching day and time, never walk.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import date
from typing import TypeAlias

from cronplus.core.model import ScheduleError
from cronplus.core.words import never_fires

_SEC, _MIN, _HOUR, _DOM, _MONTH, _DOW = range(6)
FIELDS = (  # (name, lowest, highest), seconds first
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
_STAR_SPAN = {_DOW: (0, 6)}
_HASH_SPAN = {_DOM: (1, 28), _DOW: (0, 6)}  # H days stay within 1-28: every month has them
_MONTH_NAMES = "jan feb mar apr may jun jul aug sep oct nov dec".split()  # noqa: SIM905
_DAY_NAMES = "sun mon tue wed thu fri sat".split()  # noqa: SIM905
_NAMES = {
    _MONTH: {name: number for number, name in enumerate(_MONTH_NAMES, 1)},
    _DOW: {name: number for number, name in enumerate(_DAY_NAMES)},
}
_NAME_HINT = {_MONTH: " or jan-dec", _DOW: " or sun-sat"}
_ALLOWED = {_DOM: "a day, L, L-n, LW or nW here", _DOW: "a weekday, wL or w#n here"}
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
REBOOT = "@reboot"
FIELD_NAMES = {_MONTH: tuple(_MONTH_NAMES), _DOW: tuple(_DAY_NAMES)}
"""The names each field takes, by field index (month 1 = jan, weekday 0 = sun)."""
MACRO_NAMES = (*_MACROS, REBOOT)
_HASHED = re.compile(r"H(?:\((\w+)-(\w+)\))?", re.IGNORECASE)
_OTHER_SPACE = re.compile(r"[^\S \t]")  # whitespace that str.split() would split on, cron not
_CONTROL_NAMES = {  # unicodedata has no names for control characters
    "\n": "LINE FEED",
    "\v": "LINE TABULATION",
    "\f": "FORM FEED",
    "\r": "CARRIAGE RETURN",
    "\x1c": "FILE SEPARATOR",
    "\x1d": "GROUP SEPARATOR",
    "\x1e": "RECORD SEPARATOR",
    "\x1f": "UNIT SEPARATOR",
    "\x85": "NEXT LINE (NEL)",
}

_DAY = 86_400
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
YEARS_28 = 28 * 146_097 * _DAY // 400
"""28 Gregorian years in seconds: every date pattern that can happen at all happens within it."""
LAST_YEAR = 9000
"""Searches stop at the end of this year."""
_CHECK_FROM = (date(2000, 1, 1).toordinal() - _EPOCH_ORDINAL) * _DAY
_WEEKS = sum(1 << (7 * week) for week in range(5))  # repeats a 7-bit week pattern 5 times
_ALL_DAYS, _ALL_MONTHS = (1 << 32) - 2, (1 << 13) - 2

Special: TypeAlias = tuple[str, int, int]
"""An ``L``, ``W`` or ``#`` item: (kind, day or weekday, occurrence)."""


# --- parsing ------------------------------------------------------------------------------


def parse(expression: str, *, job_name: str) -> Matcher:
    """Compile ``expression``, or raise ``ScheduleError`` saying what is wrong."""
    words = _words(expression)
    if [word.lower() for word in words] == [REBOOT]:
        return AT_START
    texts = _split(words, expression)
    fields = [
        _parse_field(index, text, job_name if "h" in text.lower() else "")
        for index, text in enumerate(texts)
    ]
    star = [text.startswith(("*", "?")) for text in texts]
    matcher = Matcher(
        seconds=fields[_SEC][0],
        minutes=fields[_MIN][0],
        hours=fields[_HOUR][0],
        dom=fields[_DOM][0],
        dom_special=fields[_DOM][1],
        months=fields[_MONTH][0],
        dow=fields[_DOW][0],
        dow_special=fields[_DOW][1],
        and_days=star[_DOM] or star[_DOW],
        wildcard=star[_MIN] or star[_HOUR],
        has_seconds=len(words) == 6,
    )
    first = matcher.next_wall(_CHECK_FROM)
    if first is None or first >= _CHECK_FROM + YEARS_28:
        raise ScheduleError(never_fires(matcher))
    return matcher


def _words(expression: str) -> list[str]:
    """The fields as written, separated by ASCII spaces and tabs only, as cron separates them."""
    other = _OTHER_SPACE.search(expression)
    if other is not None:
        char, before, after = other[0], expression[: other.start()], expression[other.end() :]
        code = f"U+{ord(char):04X} {_CONTROL_NAMES.get(char) or unicodedata.name(char)}"
        raise ScheduleError(f"{code} {_place(before, after)}; separate fields with spaces or tabs")
    return expression.split()


def _place(before: str, after: str) -> str:
    if before.strip() and after.strip():
        return "between fields"
    if before.strip() or after.strip():
        return "after the last field" if before.strip() else "before the first field"
    return "instead of fields"


def _split(texts: list[str], expression: str) -> list[str]:
    if texts and texts[0].startswith("@"):
        if texts[0].lower() not in _MACROS or len(texts) > 1:
            raise ScheduleError(
                f"unknown macro {expression.strip()!r}; expected {', '.join(_MACROS)} or {REBOOT}"
            )
        texts = _MACROS[texts[0].lower()].split()
    if len(texts) not in (5, 6):
        raise ScheduleError(f"expected 5 fields, or 6 with seconds first, got {len(texts)}")
    return texts if len(texts) == 6 else ["0", *texts]


@functools.lru_cache(maxsize=4096)
def _parse_field(index: int, text: str, job_name: str) -> tuple[int, tuple[Special, ...]]:
    """One field -> (bitmask of its plain values, its L/W/# items)."""
    mask, specials = 0, []
    for item in text.split(","):
        if not item:
            raise _error(index, f"empty item in {text!r}; expected a comma-separated list")
        special = _parse_special(index, item)
        if special is None:
            mask |= _parse_item(index, item, job_name)
        else:
            specials.append(special)
    if index == _DOW and mask & 0x80:
        mask = (mask | 1) & 0x7F  # 7 is Sunday too
    return mask, tuple(specials)


def _parse_item(index: int, item: str, job_name: str) -> int:
    base, slash, step_text = item.partition("/")
    step = _step(index, step_text, item) if slash else 1
    low, high = _STAR_SPAN.get(index, FIELDS[index][1:])
    if base == "?" and index not in (_DOM, _DOW):
        raise _error(index, "'?' is only allowed in the day-of-month and day-of-week fields")
    if base[:1] in ("H", "h"):
        low, high = _hashed(index, base, job_name, step if slash else 0)
    elif "-" in base:
        low, high = (_value(index, part, item) for part in base.split("-", 1))
        if index == _DOW and high == 0 < low:
            high = 7  # fri-sun: Sunday ends the week as well as starting it
        if low > high:
            raise _error(index, f"range {base} runs backwards; expected low-high")
    elif base not in ("*", "?"):
        low = _value(index, base, item)
        # 7/2 in day-of-week starts past the 0-6 span: it still means Sunday (7), stepped.
        high = max(high, low) if slash else low
    return sum(1 << value for value in range(low, high + 1, step))


def _parse_special(index: int, item: str) -> Special | None:
    """``L``, ``L-n``, ``LW``, ``nW`` in day-of-month; ``wL`` and ``w#n`` in day-of-week."""
    upper = item.upper()
    marked = "#" in upper or upper.startswith("L") or upper.endswith(("L", "W"))
    names = _NAMES.get(index, {})
    # "jul" is no L, nor is the end of "apr-jul".
    named_end = "#" not in upper and item.lower().rpartition("-")[2] in names
    if not marked or item.lower() in names or (named_end and not upper.startswith("L")):
        return None
    if index == _DOM and "#" not in upper:
        if upper in ("L", "LW"):
            return (upper, 0, 0)
        if upper.startswith("L-"):
            return ("L", _number(index, item[2:], item, (0, 30)), 0)
        if upper.endswith("W"):
            return ("W", _value(index, item[:-1], item), 0)
    if index == _DOW and "#" in upper:
        day, _, nth = item.partition("#")
        return ("#", _value(index, day, item) % 7, _number(index, nth, item, (1, 5), "occurrence "))
    if index == _DOW and upper.startswith("L"):
        raise _error(index, f"{item!r}: expected the weekday before L, such as 5L (last Friday)")
    if index == _DOW and upper.endswith("L"):
        return ("L", _value(index, item[:-1], item) % 7, 0)
    raise _error(index, f"{item!r}: expected {_ALLOWED.get(index, 'no L, W or # here')}")


def _hashed(index: int, base: str, job_name: str, step: int) -> tuple[int, int]:
    """``H`` or ``H(a-b)``: (value, value); with a step: (hashed first value, last value)."""
    match = _HASHED.fullmatch(base)
    if match is None:
        raise _error(index, f"{base!r} is not a hash; expected H, H(low-high) or H/step")
    low, high = _HASH_SPAN.get(index, FIELDS[index][1:])
    if match[1] is not None:
        low, high = _value(index, match[1], base), _value(index, match[2], base)
        if low > high:
            raise _error(index, f"range in {base} runs backwards; expected H(low-high)")
    digest = hashlib.sha256(f"{job_name}:{index}".encode()).digest()
    spread = int.from_bytes(digest[:8], "big")
    if step:
        return low + spread % min(step, high - low + 1), high
    return low + spread % (high - low + 1), low + spread % (high - low + 1)


def _value(index: int, token: str, item: str) -> int:
    name, low, high = FIELDS[index]
    named = _NAMES.get(index, {}).get(token.lower())
    if named is not None:
        return named
    if not (token.isascii() and token.isdigit()):
        what = f"a number or a {name} name" if index in _NAMES else "a number"
        where = repr(token) if token == item else f"{token!r} in {item!r}"
        raise _error(
            index, f"{where} is not {what}; expected {low}-{high}{_NAME_HINT.get(index, '')}"
        )
    if not low <= int(token) <= high:
        raise _error(index, f"{int(token)} is out of range {low}-{high}")
    return int(token)


def _step(index: int, token: str, item: str) -> int:
    """A step of 1 or more. As in Debian cron, one wider than the range keeps only its first
    value (``*/100`` in minutes is minute 0); every step from 60, the widest field, acts alike."""
    if not (token.isascii() and token.isdigit()):
        raise _error(index, f"step {token!r} in {item!r} is not a number; expected 1 or more")
    digits = token.lstrip("0")
    if not digits:
        raise _error(index, f"step 0 in {item!r} is out of range; expected 1 or more")
    return 60 if len(digits) > 2 else min(int(digits), 60)


def _number(index: int, token: str, item: str, bounds: tuple[int, int], what: str = "") -> int:
    low, high = bounds
    if not (token.isascii() and token.isdigit()):
        raise _error(index, f"{what}{token!r} in {item!r} is not a number; expected {low}-{high}")
    if not low <= int(token) <= high:
        raise _error(index, f"{what}{int(token)} in {item!r} is out of range {low}-{high}")
    return int(token)


def _error(index: int, problem: str) -> ScheduleError:
    return ScheduleError(f"{FIELDS[index][0]} field: {problem}")


# --- matching naive wall times ----------------------------------------------------------------
# A wall time is an int: seconds since 1970-01-01 00:00 on the zone's wall clock.


@dataclass(frozen=True, kw_only=True, slots=True)
class Matcher:
    """The compiled fields: which wall times match, found by jumping, never by walking."""

    seconds: int
    minutes: int
    hours: int
    dom: int
    dom_special: tuple[Special, ...]
    months: int
    dow: int
    dow_special: tuple[Special, ...]
    and_days: bool
    """Vixie cron: when either day field starts with ``*``, a day must match both."""
    wildcard: bool
    has_seconds: bool
    reboot: bool = False
    """``@reboot``: no wall time matches; the job runs at each daemon start instead."""
    clock: tuple[int, ...] = field(init=False)
    """The matching minutes of the day (hour * 60 + minute), sorted."""
    every_day: bool = field(init=False)
    per_day: int = field(init=False)

    def __post_init__(self) -> None:
        every_day = (self.months, self.dom, self.dow) == (_ALL_MONTHS, _ALL_DAYS, 0x7F)
        clock = _clock(self.hours, self.minutes)
        object.__setattr__(self, "clock", clock)
        plain = not (self.dom_special or self.dow_special)
        object.__setattr__(self, "every_day", every_day and plain)
        object.__setattr__(self, "per_day", len(clock) * self.seconds.bit_count())

    def next_wall(self, low: int) -> int | None:
        """The first matching wall time at or after ``low``."""
        if not self.per_day:
            return None  # @reboot: no time of any day matches
        day, second = divmod(low, _DAY)
        time = self._next_time(second) if self._day_matches(day) else -1
        if time >= 0:
            return day * _DAY + time
        found = self._next_day(day + 1)
        return None if found is None else found * _DAY + self._next_time(0)

    def prev_wall(self, high: int) -> int | None:
        """The last matching wall time at or before ``high``."""
        if not self.per_day:
            return None
        day, second = divmod(high, _DAY)
        time = self._prev_time(second) if self._day_matches(day) else -1
        if time >= 0:
            return day * _DAY + time
        found = self._prev_day(day - 1)
        return None if found is None else found * _DAY + self._prev_time(_DAY - 1)

    def count_walls(self, low: int, high: int) -> int:
        """How many matching wall times lie in ``[low, high]``."""
        if high < low:
            return 0
        (first, start), (last, stop) = divmod(low, _DAY), divmod(high + 1, _DAY)
        count = self.per_day * self._count_days(first, last - 1)
        count += self._day_matches(last) * self._times_below(stop)
        return count - self._day_matches(first) * self._times_below(start)

    def _next_time(self, second: int) -> int:
        """The first matching second of the day at or after ``second``, or -1."""
        minute, second = divmod(second, 60)
        index = bisect_left(self.clock, minute)
        if index < len(self.clock) and self.clock[index] == minute:
            found = _next_bit(self.seconds, second)
            if found >= 0:
                return minute * 60 + found
            index += 1
        return (
            self.clock[index] * 60 + _next_bit(self.seconds, 0) if index < len(self.clock) else -1
        )

    def _prev_time(self, second: int) -> int:
        """The last matching second of the day at or before ``second``, or -1."""
        minute, second = divmod(second, 60)
        index = bisect_right(self.clock, minute) - 1
        if index >= 0 and self.clock[index] == minute:
            found = _prev_bit(self.seconds, second)
            if found >= 0:
                return minute * 60 + found
            index -= 1
        return self.clock[index] * 60 + self.seconds.bit_length() - 1 if index >= 0 else -1

    def _times_below(self, second: int) -> int:
        """How many matching seconds of the day come before ``second`` (0 to 86400)."""
        minute, second = divmod(second, 60)
        index = bisect_left(self.clock, minute)
        count = index * self.seconds.bit_count()
        if index < len(self.clock) and self.clock[index] == minute:
            count += (self.seconds & ((1 << second) - 1)).bit_count()
        return count

    def _day_matches(self, day: int) -> bool:
        if self.every_day:
            return True
        found = date.fromordinal(day + _EPOCH_ORDINAL)
        return bool(self._month_days(found.year, found.month) >> found.day & 1)

    def _next_day(self, day: int) -> int | None:
        """The first matching day (days since 1970) at or after ``day``."""
        if self.every_day:
            return day
        start = date.fromordinal(day + _EPOCH_ORDINAL)
        year, month, first = start.year, start.month, start.day
        while year <= LAST_YEAR:
            days = self._month_days(year, month) >> first
            if days:
                found = first + (days & -days).bit_length() - 1
                return date(year, month, found).toordinal() - _EPOCH_ORDINAL
            year, month, first = (year + 1, 1, 1) if month == 12 else (year, month + 1, 1)
        return None

    def _prev_day(self, day: int) -> int | None:
        """The last matching day (days since 1970) at or before ``day``."""
        if self.every_day:
            return day
        start = date.fromordinal(day + _EPOCH_ORDINAL)
        year, month, last = start.year, start.month, start.day
        while year > 1:
            days = self._month_days(year, month) & ((2 << last) - 1)
            if days:
                return date(year, month, days.bit_length() - 1).toordinal() - _EPOCH_ORDINAL
            year, month, last = (year - 1, 12, 31) if month == 1 else (year, month - 1, 31)
        return None

    def _count_days(self, first: int, last: int) -> int:
        """How many matching days lie in ``[first, last]``, a month at a time."""
        if self.every_day or first > last:
            return max(last - first + 1, 0)
        count = 0
        while first <= last:
            start = date.fromordinal(first + _EPOCH_ORDINAL)
            month_end = first + _month_size(start.year, start.month) - start.day
            days = self._month_days(start.year, start.month) >> start.day
            count += (days & ((1 << (min(last, month_end) - first + 1)) - 1)).bit_count()
            first = month_end + 1
        return count

    def _month_days(self, year: int, month: int) -> int:
        """Bit d is set for each day d of the month that matches the day and month fields."""
        if not self.months >> month & 1:
            return 0
        size = _month_size(year, month)
        valid = (2 << size) - 2
        first = date(year, month, 1).isoweekday() % 7  # cron's weekday of day 1, Sunday 0
        dom = self.dom & valid
        for special in self.dom_special:
            dom |= _dom_special(special, size, first)
        week = ((self.dow >> first) | (self.dow << (7 - first))) & 0x7F  # bit i: day i + 1
        dow = (week * _WEEKS << 1) & valid
        for special in self.dow_special:
            dow |= _dow_special(special, size, first)
        return dom & dow if self.and_days else dom | dow


@functools.lru_cache(maxsize=4096)
def _clock(hours: int, minutes: int) -> tuple[int, ...]:
    return tuple(hour * 60 + minute for hour in _bits(hours) for minute in _bits(minutes))


def _dom_special(special: Special, size: int, first: int) -> int:
    """``L-n``; ``LW`` and ``nW``: the nearest Monday-Friday, never leaving the month (Quartz)."""
    kind, day, _ = special
    if kind == "L":
        return 1 << (size - day) if size - day >= 1 else 0
    if kind == "LW":
        day = size
    elif day > size:
        return 0
    weekday = (first + day - 1) % 7
    if weekday == 6:
        day = day - 1 if day > 1 else day + 2
    elif weekday == 0:
        day = day + 1 if day < size else day - 2
    return 1 << day


def _dow_special(special: Special, size: int, first: int) -> int:
    """``wL``: the month's last such weekday; ``w#n``: its n-th one, if the month has it."""
    kind, weekday, nth = special
    if kind == "L":
        return 1 << (size - (first + size - 1 - weekday) % 7)
    day = 1 + (weekday - first) % 7 + 7 * (nth - 1)
    return 1 << day if day <= size else 0


def _month_size(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _next_bit(mask: int, index: int) -> int:
    rest = mask >> index
    return index + (rest & -rest).bit_length() - 1 if rest else -1


def _prev_bit(mask: int, index: int) -> int:
    return (mask & ((2 << index) - 1)).bit_length() - 1


def _bits(mask: int) -> list[int]:
    return [value for value in range(mask.bit_length()) if mask >> value & 1]


AT_START = Matcher(
    seconds=1,
    minutes=0,
    hours=0,
    dom=_ALL_DAYS,
    dom_special=(),
    months=_ALL_MONTHS,
    dow=0x7F,
    dow_special=(),
    and_days=True,
    wildcard=False,
    has_seconds=False,
    reboot=True,
)
"""What ``@reboot`` compiles to: every day, but no minute of it."""

"""The English cronplus writes: a schedule's sentence (``describe()``), the never-fires
message, and what YAML made of a value (``describe_value()``, for ``got ...`` in errors).

It reads the compiled fields through ``Fields``, so it needs no import of the grammar.
"""

from __future__ import annotations

from datetime import date
from typing import Protocol


class Fields(Protocol):
    """The compiled fields of a cron expression, as bit masks (bit v set: value v matches)."""

    @property
    def seconds(self) -> int: ...
    @property
    def minutes(self) -> int: ...
    @property
    def hours(self) -> int: ...
    @property
    def dom(self) -> int: ...
    @property
    def dom_special(self) -> tuple[tuple[str, int, int], ...]: ...
    @property
    def months(self) -> int: ...
    @property
    def dow(self) -> int: ...
    @property
    def dow_special(self) -> tuple[tuple[str, int, int], ...]: ...
    @property
    def and_days(self) -> bool: ...
    @property
    def clock(self) -> tuple[int, ...]:
        """The matching minutes of the day (hour * 60 + minute), sorted."""

    @property
    def reboot(self) -> bool:
        """``@reboot``: no wall time, the job runs at each daemon start."""


_ALL_DAYS, _ALL_MONTHS = (1 << 32) - 2, (1 << 13) - 2

_MONTH_LONG = ["", *"January February March April May June July August".split()]  # noqa: SIM905
_MONTH_LONG += "September October November December".split()  # noqa: SIM905
_DAY_LONG = "Sunday Monday Tuesday Wednesday Thursday Friday Saturday".split()  # noqa: SIM905
_NTH = ("", "first", "second", "third", "fourth", "fifth")


AT_START = "at daemon start"
"""When a ``@reboot`` job runs, in ``list``, ``next`` and the log."""


def describe(matcher: Fields) -> str:
    """The schedule in English, for the ``list`` table."""
    if matcher.reboot:
        return AT_START
    days, weekdays = _describe_days(matcher), _describe_weekdays(matcher)
    if days and weekdays:
        days = f" on {days} {'if it is' if matcher.and_days else 'or'} {weekdays}"
    elif days or weekdays:
        plain_range = " through " in weekdays and not matcher.dow_special
        days = f", {weekdays}" if plain_range else f" on {days or weekdays}"
    return _describe_time(matcher) + days + _describe_months(matcher.months)


def _describe_time(matcher: Fields) -> str:
    seconds, minutes, hours = _bits(matcher.seconds), _bits(matcher.minutes), _bits(matcher.hours)
    if len(matcher.clock) <= 4:
        tail = f":{seconds[0]:02}" if len(seconds) == 1 and seconds[0] else ""
        at = _join(
            [f"{h:02}:{m:02}{tail}" for h, m in (divmod(time, 60) for time in matcher.clock)]
        )
        return f"at {at}" if len(seconds) == 1 else f"{_every(seconds, 60, 'second')} during {at}"
    phrase = _every(minutes, 60, "minute")
    contiguous = hours == list(range(hours[0], hours[-1] + 1))
    if phrase.startswith("at") and contiguous:
        phrase += " of every hour"
    if seconds != [0]:
        second_phrase = _every(seconds, 60, "second")
        if len(minutes) < 60:
            phrase = f"{second_phrase}, {phrase}"
        else:
            phrase = second_phrase + (" of every minute" if second_phrase.startswith("at") else "")
    if len(hours) == 24:
        return phrase
    if contiguous:
        return f"{phrase} from {hours[0]:02}:00 through {hours[-1]:02}:59"
    step = _step_of(hours, 24)
    if step:
        return f"{phrase} of every {_ordinal(step)} hour"
    return f"{phrase} in hours {_join(hours)}"


def _describe_days(matcher: Fields) -> str:
    if matcher.dom == _ALL_DAYS and matcher.and_days and not matcher.dom_special:
        return ""
    days, parts = _bits(matcher.dom), []
    step = _step_of([day - 1 for day in days], 31)
    if days:
        parts.append(
            f"every {_ordinal(step)} day" if step else f"day{'s' * (len(days) > 1)} {_join(days)}"
        )
    for kind, day, _ in matcher.dom_special:
        if kind == "L":
            parts.append(f"the {_ordinal(day + 1)}-to-last day" if day else "the last day")
        else:
            parts.append(f"the weekday nearest day {day}" if day else "the last weekday")
    return f"{_join(parts)} of the month"


def _describe_weekdays(matcher: Fields) -> str:
    if matcher.dow == 0x7F and matcher.and_days and not matcher.dow_special:
        return ""
    days, parts = _bits(matcher.dow), []
    if len(days) >= 3 and days == list(range(days[0], days[-1] + 1)):
        parts.append(f"{_DAY_LONG[days[0]]} through {_DAY_LONG[days[-1]]}")
    elif days:
        parts.append(_join([_DAY_LONG[day] for day in days]))
    for kind, day, nth in matcher.dow_special:
        parts.append(f"the {'last' if kind == 'L' else _NTH[nth]} {_DAY_LONG[day]} of the month")
    return _join(parts)


def _describe_months(months: int) -> str:
    chosen = _bits(months)
    if months == _ALL_MONTHS:
        return ""
    if len(chosen) >= 3 and chosen == list(range(chosen[0], chosen[-1] + 1)):
        return f", {_MONTH_LONG[chosen[0]]} through {_MONTH_LONG[chosen[-1]]}"
    return " in " + _join([_MONTH_LONG[month] for month in chosen])


def _every(values: list[int], count: int, unit: str) -> str:
    step = _step_of(values, count)
    if len(values) == count:
        return f"every {unit}"
    if step:
        return f"every {step} {unit}s"
    return f"at {unit} {values[0]}" if len(values) == 1 else f"at {unit}s {_join(values)}"


def _step_of(values: list[int], count: int) -> int:
    """k when ``values`` are exactly 0, k, 2k, ... below ``count`` (k > 1), else 0."""
    if len(values) < 2 or values[0] != 0 or values[1] == 1:
        return 0
    return values[1] if values == list(range(0, count, values[1])) else 0


def _ordinal(number: int) -> str:
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10 if number // 10 != 1 else 0, "th")
    return f"{number}{suffix}"


def _join(items: list[int] | list[str], word: str = "and") -> str:
    texts = [str(item) for item in items]
    return texts[0] if len(texts) == 1 else f"{', '.join(texts[:-1])} {word} {texts[-1]}"


def never_fires(matcher: Fields) -> str:
    """Why an expression never fires, for its ``ScheduleError``."""
    days = _bits(matcher.dom)
    if matcher.dow == 0x7F and days and not matcher.dom_special and not matcher.dow_special:
        months = _join([_MONTH_LONG[month] for month in _bits(matcher.months)], "or")
        noun = f"day {days[0]} does" if len(days) == 1 else f"days {_join(days)} do"
        return f"never fires: {noun} not exist in {months}"
    return "never fires: no date within 28 years matches the day and month fields"


def _bits(mask: int) -> list[int]:
    return [value for value in range(mask.bit_length()) if mask >> value & 1]


def describe_value(value: object) -> str:
    """What YAML made of a value, for ``got ...`` in a message."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the {'integer' if isinstance(value, int) else 'number'} {value}"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, date):
        return f"the date {value.isoformat()}"
    kinds: dict[type, str] = {list: "a list", dict: "a mapping", bytes: "binary data"}
    kind = kinds.get(type(value), type(value).__name__)
    return kind.replace("a ", "an empty ", 1) if value in ([], {}) else kind

"""The JSON Schema pattern of a cron expression: cronplus's grammar as one regex.

``expression()`` is the grammar of ``cronplus/core/cronexpr.py`` (docs/schedules.md) as one
regex, built from the parser's own field table (through ``schedule.py``, the one importer of
``cronexpr``). It may take more than the parser does where a regex cannot say it (a range
that runs backwards, day 31 in February), never less; tests/test_schema.py holds it to the
parser, edge by edge and with generated expressions. The regex keeps to
what ECMA-262 (the editors') and Python's ``re`` read alike: no flags, no ``\\d``, ``\\s``
or ``\\w``, no named groups, nothing escaped that needs no escape.
"""

from __future__ import annotations

from cronplus.core import schedule

_SEC, _MIN, _HOUR, _DOM, _MONTH, _DOW = range(6)
FIELDS = schedule.FIELDS
NAMES = schedule.FIELD_NAMES
MACROS = schedule.MACRO_NAMES

# The parser compares names with str.lower() and finds its L, W and # marks with str.upper(),
# which read two non-ASCII characters as ASCII: U+212A KELVIN SIGN lowers to k ('@wee\u212aly'
# is @weekly), and the ligatures U+FB02 and U+FB04 upper to ...L ('5\ufb02' is 5L). The
# pattern takes what the parser takes; a test finds these in Python's case tables.
_LOWERS_TO = {"k": "\\u212a"}
_LAST = "[lL\\ufb02\\ufb04]"
_BLANK = "[ \\t]"  # cron's separators: ASCII space and tab, nothing else
_STEP = "0*[1-9][0-9]*"  # any width: one wider than the field keeps its first value


def expression() -> str:
    """The anchored pattern of a whole expression: a macro, or 5 fields, or 6 with seconds."""
    fields = [_field(index) for index in range(6)]
    five = f"{_BLANK}+".join(fields[_MIN:])
    macros = "|".join(_word(macro) for macro in MACROS)
    return f"^{_BLANK}*(?:{macros}|(?:{fields[_SEC]}{_BLANK}+)?{five}){_BLANK}*$"


def _field(index: int) -> str:
    """A comma-separated list of items, none empty."""
    value = _value(index)
    bases = [r"\*", f"{value}(?:-{value})?", rf"[hH](?:\({value}-{value}\))?"]
    bases += [r"\?"] if index in (_DOM, _DOW) else []
    items = [f"(?:{'|'.join(bases)})(?:/{_STEP})?", *_specials(index, value)]
    item = f"(?:{'|'.join(items)})"
    return f"{item}(?:,{item})*"


def _specials(index: int, value: str) -> list[str]:
    """``L``, ``LW``, ``L-n`` and ``nW`` in day-of-month; ``wL`` and ``w#n`` in day-of-week."""
    if index == _DOM:
        return [f"{_word('l')}(?:{_word('w')}|-{_number(0, 30)})?", f"{value}{_word('w')}"]
    if index == _DOW:
        return [f"{value}(?:{_LAST}|#{_number(1, 5)})"]
    return []


def _value(index: int) -> str:
    """A number in the field's range (leading zeros allowed), or a name where it has names."""
    _, low, high = FIELDS[index]
    names = NAMES.get(index, ())
    return (
        f"(?:{'|'.join([_number(low, high), *map(_word, names)])})" if names else _number(low, high)
    )


def _number(low: int, high: int) -> str:
    """Digits whose value is in ``low``..``high`` (below 100), after any leading zeros."""
    units_by_tens: dict[int, list[int]] = {}
    for number in range(low, high + 1):
        units_by_tens.setdefault(number // 10, []).append(number % 10)
    tens_by_units: dict[tuple[int, ...], list[int]] = {}
    for tens, units in units_by_tens.items():
        if tens:  # a one-digit number has no tens digit to match: 0* took the zeros
            tens_by_units.setdefault(tuple(units), []).append(tens)
    parts = [_digits(units_by_tens[0])] if 0 in units_by_tens else []
    parts += [_digits(tens) + _digits(list(units)) for units, tens in tens_by_units.items()]
    return f"0*{parts[0]}" if len(parts) == 1 else f"0*(?:{'|'.join(parts)})"


def _digits(digits: list[int]) -> str:
    """One digit of ``digits`` (ascending) as a class, runs of three or more as ranges."""
    runs: list[list[int]] = []
    for digit in digits:
        if runs and runs[-1][-1] == digit - 1:
            runs[-1].append(digit)
        else:
            runs.append([digit])
    text = "".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else "".join(map(str, r)) for r in runs)
    return text if len(digits) == 1 else f"[{text}]"


def _word(word: str) -> str:
    """``word`` in any case, as the parser's str.lower() compares it."""
    return "".join(
        f"[{char}{char.upper()}{_LOWERS_TO.get(char, '')}]" if char.isalpha() else char
        for char in word
    )

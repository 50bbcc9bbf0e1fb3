"""cronplus.schema.json: shipped equal to what the file models generate, and it describes them."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
import tzdata  # type: ignore[import-untyped]
from hypothesis import event, given, settings
from hypothesis import strategies as st

from cronplus.config import cronpattern
from cronplus.config.fields import zone_names
from cronplus.config.loader import SCHEMA_PATH, loads, main, parse_duration, schema, schema_text
from cronplus.core.model import (
    Catchup,
    ConfigError,
    Job,
    LogFormat,
    Overlap,
    ScheduleError,
    Settings,
)
from cronplus.core.schedule import Schedule

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "crontab.md"


def docs_example() -> str:
    """The whole-file example in docs/crontab.md (the one from DESIGN section 1)."""
    section = DOCS.read_text(encoding="utf-8").split("## A whole file", 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` (bare or in a one-item ``allOf``) to its definition."""
    refs = [node, *node.get("allOf", [])]
    for item in refs:
        if "$ref" in item:
            name = item["$ref"].removeprefix("#/definitions/")
            return {**node, **schema()["definitions"][name]}  # type: ignore[index]
    return node


def problems(node: dict[str, Any], value: object, where: str = "") -> list[str]:
    """A small draft-07 check of the keywords the cronplus schema uses."""
    node = resolve(node)
    if "anyOf" in node:
        tried = [(option, problems(option, value, where)) for option in node["anyOf"]]
        if any(not found for _, found in tried):
            return []
        # a value that is not null failed the one option that is not null: say why
        left = [found for option, found in tried if option.get("type") != "null"]
        return left[0] if len(left) == 1 else [f"{where}: no anyOf option fits"]
    if value not in node.get("enum", [value]) or value != node.get("const", value):
        return [f"{where}: {value!r} is not allowed"]
    if "type" in node and not has_type(node["type"], value):
        return [f"{where}: expected {node['type']}"]
    if isinstance(value, str) and not re.search(node.get("pattern", ""), value):
        return [f"{where}: {value!r} does not match"]
    if isinstance(value, int | float) and value < node.get("minimum", value):
        return [f"{where}: below minimum"]
    if isinstance(value, list):
        items = node.get("items", {})
        return [p for i, item in enumerate(value) for p in problems(items, item, f"{where}[{i}]")]
    if isinstance(value, dict):
        return object_problems(node, value, where)
    return []


def has_type(kind: str, value: object) -> bool:
    if isinstance(value, bool):  # a bool is an int in Python, never in JSON Schema
        return kind == "boolean"
    types: dict[str, Any] = {"object": dict, "array": list, "string": str, "integer": int}
    types |= {"number": int | float, "null": type(None)}
    return isinstance(value, types.get(kind, ()))


def object_problems(node: dict[str, Any], value: dict[str, Any], where: str) -> list[str]:
    found = [f"{where}: missing {key}" for key in node.get("required", []) if key not in value]
    patterns = node.get("patternProperties", {})
    for key, item in value.items():
        named = [sub for pattern, sub in patterns.items() if re.search(pattern, key)]
        sub = node.get("properties", {}).get(key) or (named[0] if named else None)
        if sub is None and node.get("additionalProperties") is False:
            found.append(f"{where}.{key}: not allowed")
        elif sub is not None:
            found += problems(sub, item, f"{where}.{key}")
    return found


def walk(node: object) -> list[dict[str, Any]]:
    """Every mapping in the schema, depth first."""
    if isinstance(node, list):
        return [found for item in node for found in walk(item)]
    if not isinstance(node, dict):
        return []
    return [node, *(found for item in node.values() for found in walk(item))]


def definition(name: str) -> dict[str, Any]:
    return schema()["definitions"][name]  # type: ignore[index, no-any-return]


def test_the_shipped_schema_is_what_the_models_generate() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text()
    assert main(["--check-schema"]) == 0


def test_the_top_level_schema_links_to_the_shipped_one() -> None:
    link = ROOT / "cronplus.schema.json"

    assert link.is_symlink()
    assert link.resolve() == SCHEMA_PATH.resolve()


def test_the_schema_is_draft_07_with_every_reference_resolvable() -> None:
    generated = schema()
    nodes = walk(generated)
    refs = [node["$ref"] for node in nodes if "$ref" in node]
    definitions = cast("dict[str, Any]", generated["definitions"])

    assert generated["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert not [node for node in nodes if "$defs" in node]
    assert refs and all(ref.removeprefix("#/definitions/") in definitions for ref in refs)
    assert all(len(node) == 1 for node in nodes if "$ref" in node), "draft-07 ignores $ref siblings"


def test_the_schema_accepts_the_documented_example() -> None:
    import yaml

    example = docs_example()

    assert problems(schema(), yaml.safe_load(example)) == []
    assert loads(example, path=Path("/srv/crontab.yaml"), env={"HOME": "/home/op"}).jobs


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"settings": {"max_concurrent": 0}}, ".settings.max_concurrent: below minimum"),
        ({"settings": {"log_format": "xml"}}, ".settings.log_format: 'xml' is not allowed"),
        ({"defaults": {"schedule": "@daily"}}, ".defaults.schedule: not allowed"),
        ({"jobs": {"a": {"command": "x"}}}, ".jobs.a: missing schedule"),
        ({"jobs": {"a b": {"schedule": "@daily", "command": "x"}}}, ".jobs.a b: not allowed"),
        (
            {"jobs": {"a": {"schedule": "@daily", "command": "x", "overlap": "never"}}},
            ".jobs.a.overlap: 'never' is not allowed",
        ),
        (
            {"jobs": {"a": {"schedule": "@daily", "command": "x", "retires": 2}}},
            ".jobs.a.retires: not allowed",
        ),
        (
            {"jobs": {"a": {"schedule": "@daily", "command": "x", "timeout": "5 min"}}},
            ".jobs.a.timeout: no anyOf option fits",
        ),
    ],
    ids=[
        "range",
        "enum",
        "defaults-schedule",
        "required",
        "job-name",
        "job-enum",
        "unknown-key",
        "duration",
    ],
)
def test_the_schema_rejects_what_the_loader_rejects(change: dict[str, Any], expected: str) -> None:
    document: dict[str, Any] = {"jobs": {}, **change}

    assert expected in problems(schema(), document)


def test_the_schema_describes_every_settings_field_of_the_model() -> None:
    settings = definition("SettingsFile")

    assert set(settings["properties"]) == {field.name for field in dataclasses.fields(Settings)}
    assert schema()["required"] == ["jobs"]


def test_the_schema_describes_every_job_field_of_the_model() -> None:
    job, defaults = definition("JobFile"), definition("JobFields")
    from_model = {field.name for field in dataclasses.fields(Job)} - {"name", "retry", "target"}
    retry = {"retries", "retry_delay", "retry_backoff", "retry_max_delay"}
    targets = {"http", "celery", "rq", "amqp"}

    assert set(job["properties"]) == from_model | retry | targets
    assert set(defaults["properties"]) == from_model - {"schedule", "command"} | retry
    assert job["required"] == ["schedule"]
    kinds = ("command", "http", "celery", "rq", "amqp")
    assert job["oneOf"] == [{"required": [key]} for key in kinds]


@pytest.mark.parametrize(
    ("name", "enum"),
    [("Overlap", Overlap), ("Catchup", Catchup), ("LogFormat", LogFormat)],
    ids=str,
)
def test_the_schema_enums_are_the_model_enums(
    name: str, enum: type[Overlap | Catchup | LogFormat]
) -> None:
    assert definition(name)["enum"] == [member.value for member in enum]


DURATIONS = [
    "90s",
    "5m",
    "1h30m",
    "2d",
    "500ms",
    "0.5s",
    "45",
    "1d2h3m4s5ms",
    "",
    "5 min",
    "30m1h",
    "-5s",
    "1w",
]


@pytest.mark.parametrize("text", DURATIONS, ids=repr)
def test_the_schema_duration_pattern_agrees_with_the_parser(text: str) -> None:
    string = definition("JobFields")["properties"]["kill_grace"]["anyOf"][0]
    in_schema = len(text) >= string["minLength"] and re.search(string["pattern"], text) is not None
    try:
        parse_duration(text)
        parses = True
    except ValueError:
        parses = False

    assert in_schema == parses


# --- schedule: the pattern and the parser -------------------------------------------------------


@functools.cache
def schedule_pattern() -> re.Pattern[str]:
    return re.compile(definition("JobFile")["properties"]["schedule"]["pattern"])


def parses(expression: str) -> bool:
    try:
        Schedule.parse(expression, zone=ZoneInfo("UTC"), job_name="backup")
    except ScheduleError:
        return False
    return True


def matches(expression: str) -> bool:
    return schedule_pattern().search(expression) is not None


# The grammar as docs/schedules.md gives it, written apart from cronpattern's table.
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MACROS = (
    "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly", "@reboot",
)  # fmt: skip
SPANS = [(0, 59, ()), (0, 59, ()), (0, 23, ()), (1, 31, ()), (1, 12, MONTHS), (0, 7, DAYS)]


def spellings(word: str) -> list[str]:
    return [word, word.upper(), word.title()]


def value_pool(field: int) -> list[str]:
    """Every value of the field, some with leading zeros, and its names in three cases."""
    low, high, names = SPANS[field]
    numbers = [str(n) for n in range(low, high + 1)] + ["0" + str(low), "00" + str(high)]
    return numbers + [spelling for name in names for spelling in spellings(name)]


def range_pool(field: int) -> list[str]:
    low, high, names = SPANS[field]
    ranges = [f"{a}-{b}" for a in range(low, high + 1, 3) for b in range(a, high + 1, 4)]
    ranges += [f"{a}-{b}" for a, b in zip(names, names[2:], strict=False)]
    return [*ranges, *(["fri-sun", "Sat-0", "5-0"] if field == 5 else [])]


SHAPES = ["*", "{v}", "{v}", "{r}", "{r}", "H", "h", "H({r})", "{v}/{s}", "*/{s}", "{r}/{s}"]
SHAPES += ["H/{s}", "H({r})/{s}"]
DAY_SHAPES = {
    3: ["?", "?/{s}", "L", "l", "LW", "lw", "L-{n}", "l-0{n}", "{v}W", "{v}w"],
    5: ["?", "?/{s}", "{v}L", "{v}l", "{v}#{k}", "{v}#0{k}"],
}
STEPS = ["1", "2", "7", "15", "59", "60", "61", "100", "007"]
# What is a little wrong: the parser refuses most of these, the pattern must follow it.
ODD_SHAPES = ["?", "L", "W", "#", "{v}L", "{v}W", "L{v}", "{v}#{n}", "L-{v}", "{v}/0", "{r}-{v}"]
ODD_VALUES = ["60", "24", "32", "13", "8", "00", "jan", "sun", "foo", "-1", "1_0"]


def items(field: int) -> st.SearchStrategy[str]:
    """Items of the field, one in forty of them odd (out of range, misplaced, malformed)."""
    shapes = SHAPES + DAY_SHAPES.get(field, []) * 2
    good = st.builds(
        str.format,
        st.sampled_from(shapes),
        v=st.sampled_from(value_pool(field)),
        r=st.sampled_from(range_pool(field)),
        s=st.sampled_from(STEPS),
        n=st.integers(0, 30).map(str),
        k=st.integers(1, 5).map(str),
    )
    odd = st.builds(
        str.format,
        st.sampled_from(ODD_SHAPES + SHAPES),
        v=st.sampled_from(ODD_VALUES),
        r=st.sampled_from(range_pool(field)),
        s=st.sampled_from(STEPS),
        n=st.integers(0, 40).map(str),
    )
    return st.one_of(*[good] * 39, odd)


ITEMS = [st.lists(items(field), min_size=1, max_size=3).map(",".join) for field in range(6)]
BLANKS = st.sampled_from([" ", " ", " ", "  ", "\t", " \t"])


@st.composite
def generated_expressions(draw: st.DrawFn) -> str:
    """Expressions by the docs' grammar, some of them a little wrong."""
    if draw(st.integers(0, 9)) == 0:
        word = draw(st.sampled_from([*MACROS, "@often", "@daily *", "@hourly 5"]))
        return draw(st.sampled_from(spellings(word)))
    count = draw(st.sampled_from([5] * 8 + [6] * 6 + [4, 7]))
    fields = [min(position + (count < 6), 5) for position in range(count)]
    texts = [draw(ITEMS[field]) for field in fields]
    text = "".join(text + draw(BLANKS) for text in texts)
    return draw(st.sampled_from(["", " ", "\t"])) + text.rstrip(" \t") + draw(BLANKS)


@settings(max_examples=120, deadline=None)
@given(expression=generated_expressions())
def test_the_schedule_pattern_matches_every_generated_expression_the_parser_takes(
    expression: str,
) -> None:
    taken = parses(expression)
    event(f"the parser {'takes' if taken else 'refuses'} it")
    if taken:
        assert matches(expression)


CRON_CHARACTERS = " \t*?,-/#()0123456789LWHlwh@aAdDiIlLyYjJnNfFrRuU\n\u00a0"


@settings(max_examples=300, deadline=None)
@given(expression=st.text(CRON_CHARACTERS, max_size=24))
def test_the_schedule_pattern_matches_any_text_the_parser_takes(expression: str) -> None:
    if parses(expression):
        assert matches(expression)


BAD_SCHEDULES = [
    "61 * * * *",
    "* 24 * * *",
    "* * 32 * *",
    "* * * 13 *",
    "* * * * 8",
    "* * * foo *",
    "*/0 * * * *",
    "* * * *",
    "0 0 0 * * * *",
    "",
    " \t",
    "@often",
    "@daily *",
    "0\u00a00 * * *",
    "0 0 * * *\n0 1 * * *",
    "0,,5 * * * *",
    "0, * * * *",
    "0 0 * * L5",
    "0 0 * * 5#6",
    "0 0 L-31 * *",
    "0 0 ? * * *",
    "0 0 * jan-L *",
    "0 0 * * mon-fri/0",
    "0 0 1W,32W * *",
    "0 0 * * 5W",
    "0 0 H(0-32) * *",
    "0 -1 * * *",
    "0 ٣ * * *",
]


@pytest.mark.parametrize("expression", BAD_SCHEDULES, ids=repr)
def test_the_schedule_pattern_refuses_a_bad_field_as_the_parser_does(expression: str) -> None:
    assert not parses(expression)
    assert not matches(expression)


GOOD_SCHEDULES = [
    "*/20 9-17 * * 1-5",
    "00 03 * * *",
    "*/100 * * * *",
    "0-59/61 5-23/100 * * *",
    "7/10 * * * *",
    "30 0 0 * * *",
    "0 0 L,L-3,LW,15W,l-030 * *",
    "0 0 ? * MON-Fri,5L,fri#3,7l,0#01",
    "0 0 * JAN-jun/2,Dec sun-sat",
    "0 12 * * fri-sun",
    "H H(0-5)/2 H(1-28) * H",
    "\t0  0\t* *  * ",
    " @DAILY\t",
    "@Weekly",
    "@annually",
    "@reboot",
    " @REBOOT\t",
    "0 0 * apr-jul *",  # a range ending in jul is no L item
]


@pytest.mark.parametrize("expression", GOOD_SCHEDULES, ids=repr)
def test_the_schedule_pattern_matches_what_the_parser_takes(expression: str) -> None:
    assert parses(expression)
    assert matches(expression)


LOOSER = [
    ("0 0 31 2 *", "never fires: a regex cannot see the calendar"),
    ("5-1 * * * *", "a backwards range: a regex would list every pair of values"),
]


@pytest.mark.parametrize(("expression", "why"), LOOSER, ids=[e for e, _ in LOOSER])
def test_the_schedule_pattern_is_looser_than_the_parser_only_where_it_says(
    expression: str, why: str
) -> None:
    assert matches(expression), why


SPANS_NAMED = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
]


@pytest.mark.parametrize("field", range(6), ids=[name for name, _, _ in SPANS_NAMED])
def test_each_field_s_range_and_names_are_the_parser_s(field: int) -> None:
    name, low, high = cronpattern.FIELDS[field]

    def in_field(text: str) -> str:
        fields = ["0", "0", "0", "1", "1", "*"]
        fields[field] = text
        return " ".join(fields)

    names = cronpattern.NAMES.get(field, ())
    good = [str(low), str(high), f"{low}-{high}", *names, *(word.upper() for word in names)]
    bad = [str(high + 1), *([str(low - 1)] if low else []), "mon" if field != 5 else "jan"]
    assert (name, low, high) == SPANS_NAMED[field]
    assert [text for text in good if not (parses(in_field(text)) and matches(in_field(text)))] == []
    assert [text for text in bad if parses(in_field(text)) or matches(in_field(text))] == []


def test_every_macro_the_schema_names_is_one_the_parser_takes() -> None:
    assert [macro for macro in cronpattern.MACROS if not (parses(macro) and matches(macro))] == []
    assert set(cronpattern.MACROS) == set(MACROS)


def in_five(text: str, field: int) -> str:
    fields = ["0", "0", "1", "1", "*"]
    fields[field] = text
    return " ".join(fields)


@functools.cache
def ascii_cased() -> tuple[str, ...]:
    """Non-ASCII characters whose str.lower() or str.upper() holds an ASCII letter."""
    found: list[str] = []
    for start in range(0x80, sys.maxunicode + 1, 4096):
        chunk = "".join(map(chr, range(start, min(start + 4096, sys.maxunicode + 1))))
        if re.search("[A-Za-z]", chunk.lower() + chunk.upper()):
            found += [c for c in chunk if re.search("[A-Za-z]", c.lower() + c.upper())]
    return tuple(found)


def test_the_schedule_pattern_takes_the_non_ascii_letters_the_parser_takes() -> None:
    """The parser compares with str.lower() and str.upper(), so some non-ASCII letters pass."""
    words: list[tuple[str, int | None]] = [(macro, None) for macro in MACROS]
    words += [(name, 3) for name in MONTHS] + [(name, 4) for name in (*DAYS, "5L", "5#3")]
    words += [(word, 2) for word in ("L", "LW", "L-3", "15W")] + [("H(1-5)", 1)]
    probes = [
        spelled if field is None else in_five(spelled, field)
        for word, field in words
        for index, letter in enumerate(word)
        if letter.isalpha()
        for char in ascii_cased()
        for spelled in [word[:index] + char + word[index + 1 :]]
    ]
    taken = [expression for expression in probes if parses(expression)]

    assert [expression for expression in taken if not matches(expression)] == []


def test_the_schedule_pattern_reads_alike_in_python_and_in_an_editor_s_javascript() -> None:
    """ECMA-262 (the editors' regex) and Python's re must agree on every case above."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node here to run the pattern in ECMA-262's regex")
    cases = [*BAD_SCHEDULES, *GOOD_SCHEDULES, *(case for case, _ in LOOSER), "@wee\u212aly"]
    script = (
        "const [pattern, cases] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "const flags = ['', 'u'].map(f => new RegExp(pattern, f));"
        "console.log(JSON.stringify(cases.map(c => flags.map(r => r.test(c)))));"
    )
    found = subprocess.run(
        [node, "-e", script],
        input=json.dumps([schedule_pattern().pattern, cases]),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    in_python = [[matches(case)] * 2 for case in cases]
    assert json.loads(found.stdout) == in_python


# --- zones ---------------------------------------------------------------------------------------


def test_the_schema_s_zones_are_the_zones_tzdata_ships() -> None:
    shipped = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))["definitions"]["Zone"]["enum"]
    installed = list(zone_names())
    added, gone = sorted(set(installed) - set(shipped)), sorted(set(shipped) - set(installed))

    assert shipped == installed, (
        f"the installed tzdata {tzdata.__version__} (IANA {tzdata.IANA_VERSION}) lists other "
        f"zones than the shipped schema (new: {added}, gone: {gone}); the schema's zone names "
        "are tzdata's, so regenerate it: python -m cronplus.config.loader --write-schema"
    )


def test_every_zone_in_the_schema_is_one_the_loader_takes() -> None:
    refused = []
    for name in definition("Zone")["enum"]:
        try:
            ZoneInfo(name)
        except (KeyError, ValueError, OSError):
            refused.append(name)

    assert refused == []
    assert {"UTC", "Etc/UTC", "Europe/Berlin", "America/New_York"} <= set(zone_names())


@pytest.mark.parametrize(
    ("where", "value", "expected"),
    [
        ("defaults", "Europe/Berln", ".defaults.timezone: 'Europe/Berln' is not allowed"),
        ("job", "europe/berlin", ".jobs.a.timezone: 'europe/berlin' is not allowed"),
        ("job", "", ".jobs.a.timezone: '' is not allowed"),
        ("job", "local", ".jobs.a.timezone: 'local' is not allowed"),
    ],
    ids=["defaults-typo", "job-case", "empty", "local"],
)
def test_the_schema_refuses_a_zone_the_loader_refuses(
    where: str, value: str, expected: str
) -> None:
    job = {"schedule": "@daily", "command": "x"}
    document: dict[str, Any] = {"jobs": {"a": {**job, "timezone": value}}}
    if where == "defaults":
        document = {"defaults": {"timezone": value}, "jobs": {"a": job}}
    text = json.dumps(document)

    assert expected in problems(schema(), document)
    with pytest.raises(ConfigError, match=r"unknown time zone|expected an IANA zone"):
        loads(text, path=Path("/srv/crontab.yaml"), env={"HOME": "/home/op"})

"""cronplus.schema.json: shipped equal to what the file models generate, and it describes them."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, cast

import pytest

from cronplus.config.loader import SCHEMA_PATH, loads, main, parse_duration, schema, schema_text
from cronplus.core.model import Catchup, Job, LogFormat, Overlap, Settings

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
    from_model = {field.name for field in dataclasses.fields(Job)} - {"name", "retry"}
    retry = {"retries", "retry_delay", "retry_backoff", "retry_max_delay"}

    assert set(job["properties"]) == from_model | retry
    assert set(defaults["properties"]) == from_model - {"schedule", "command"} | retry
    assert job["required"] == ["schedule", "command"]


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

"""The jobs every benchmark gives a daemon, the same on every run, and when they fire.

``job_specs(n)`` mixes 16 expressions (``H``, ``L``, ``W``, ``#``, macros) and 10 zones
(Lord_Howe, Chatham, Dublin, Sao_Paulo among them); a ``Schedule`` says what each job's
expression becomes for a run (moved into a quiet month, one instant, every minute);
``cronplus_crontab`` writes them as cronplus reads them (peers.py writes the peers' files).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from random import Random
from zoneinfo import ZoneInfo

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Sao_Paulo",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Europe/Dublin",
    "America/Los_Angeles",
]
EXPRESSIONS = [
    "*/5 * * * *",
    "0 * * * *",
    "30 2 * * *",
    "15 9-17 * * 1-5",
    "0 0 1 * *",
    "0 3 * * sun",
    "*/20 9-17 * * mon-fri",
    "H H * * *",
    "H/15 * * * *",
    "0 0 L * *",
    "0 12 15W * *",
    "0 9 * * 5#3",
    "0,30 2 * * *",
    "5 4 * * 0",
    "@hourly",
    "@daily",
]
PORTABLE = [e for e in EXPRESSIONS if not re.search(r"[HLW#]", e)]
"""The expressions every peer reads: Debian cron has no H, L, W or #."""
MACROS = {  # spelled out, so that their month field can be moved
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """One job as every daemon gets it."""

    name: str
    expression: str
    """5 fields or a macro, read in ``zone``."""
    zone: str


def job_specs(n: int, *, expressions: Sequence[str] = EXPRESSIONS, seed: int = 7) -> list[JobSpec]:
    """``n`` jobs, each an expression and a zone drawn from ``seed``: the same on every call."""
    rng = Random(seed)
    return [
        JobSpec(name=f"job-{i:05d}", expression=rng.choice(expressions), zone=rng.choice(ZONES))
        for i in range(n)
    ]


Schedule = Callable[[JobSpec, ZoneInfo], str]
"""A job's expression as written for a daemon that reads it in the given zone."""


def as_generated(spec: JobSpec, _zone: ZoneInfo) -> str:
    return spec.expression


def idle_from(today: datetime) -> Schedule:
    """Each job's own expression moved into the month half a year after ``today``: nothing
    fires for months."""
    month = str((today.month + 5) % 12 + 1)

    def schedule(spec: JobSpec, _zone: ZoneInfo) -> str:
        fields = MACROS.get(spec.expression, spec.expression).split()
        fields[-2] = month  # the month field, with or without seconds
        return " ".join(fields)

    return schedule


def minute_at(instant: datetime) -> Schedule:
    """Fire once, at ``instant`` (a whole minute), read in the daemon's zone for the job."""

    def schedule(_spec: JobSpec, zone: ZoneInfo) -> str:
        local = instant.astimezone(zone)
        return f"{local.minute} {local.hour} {local.day} {local.month} *"

    return schedule


def second_at(instant: datetime) -> Schedule:
    """Fire once, at ``instant`` (a whole second): cronplus alone reads seconds."""

    def schedule(spec: JobSpec, zone: ZoneInfo) -> str:
        return f"{instant.astimezone(zone).second} {minute_at(instant)(spec, zone)}"

    return schedule


def every(grain: str) -> Schedule:
    """Every minute (``* * * * *``), or every second (6 fields, cronplus alone)."""
    expression = "* * * * * *" if grain == "second" else "* * * * *"
    return lambda _spec, _zone: expression


def cronplus_crontab(
    jobs: Sequence[JobSpec],
    schedule: Schedule,
    command: Sequence[str | Path] | str,
    *,
    concurrent: int | None = None,
    settings: Sequence[str] = (),
    each: Sequence[str] = (),
) -> str:
    """``jobs`` as cronplus reads them, each running ``command`` (an argv, or a shell line),
    ``max_concurrent: concurrent`` (all of them by default); ``settings`` and ``each`` are
    more lines for the settings and for every job."""
    # A JSON list is a YAML flow list, and a JSON string a YAML double-quoted one.
    run = json.dumps(command if isinstance(command, str) else [str(arg) for arg in command])
    lines = ["settings:", f"  max_concurrent: {concurrent or max(16, len(jobs))}", *settings]
    lines.append("jobs:")
    for spec in jobs:
        lines += [
            f"  {spec.name}:",
            f'    schedule: "{schedule(spec, ZoneInfo(spec.zone))}"',
            f"    timezone: {spec.zone}",
            *(f"    {line}" for line in each),
            f"    command: {run}",
        ]
    return "\n".join(lines) + "\n"

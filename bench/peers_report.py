"""The peers benchmark's figures: kept as JSON, told as markdown tables against the targets.

``Results`` holds every raw figure of one run of bench_peers.py; ``report`` turns it into
the block of RESULTS.md's ``## peers``: the issue's targets with cronplus, each peer, their
ratios and the verdict, then a table per measurement.
"""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import (
    BURST_STATS,
    Record,
    Section,
    cell,
    markdown_table,
    per_second,
    percentile,
    said,
    shown,
)
from peers import PEERS_DIR, YACRON_VERSION, cron_version
from procs import Check

SECTION = Section("## peers", "bench_peers.py")


@dataclass(frozen=True, kw_only=True)
class Idle:
    """One daemon's startup and its idle window (None: not ready within the slow limit)."""

    startup: float | None
    rss_mb: float | None
    hwm_mb: float | None
    cpu_ms: float | None
    """CPU per 60 s of the window (schedstat)."""
    wakeups: float | None
    """Context switches per 60 s of the window."""


@dataclass(frozen=True, kw_only=True)
class Results:
    """Every figure of one run, by daemon name and job count."""

    grain: str
    slow_limit: float
    checks: dict[str, dict[int, list[Check]]]
    daemons: dict[str, dict[int, list[Idle]]]
    bursts: dict[str, dict[int, list[list[float]]]]
    """Per burst, each job's lateness in seconds."""
    every: dict[str, list[float]]
    """Lateness in seconds of each start of the periodic job."""
    spawn: dict[str, list[tuple[float, float]]]
    """Per loop and repeat: seconds to the last start, and until all were reaped."""
    spawn_n: int
    header: str = ""

    @property
    def names(self) -> list[str]:
        return list(self.daemons)


def save(results: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(results), indent=1) + "\n")


def load(path: Path) -> Results:
    raw: dict[str, Any] = json.loads(path.read_text())

    def by_size(table: dict[str, dict[str, Any]], kind: Callable[[Any], Any]) -> Any:
        return {
            name: {int(n): [kind(run) for run in runs] for n, runs in sizes.items()}
            for name, sizes in table.items()
        }

    return Results(
        grain=raw["grain"],
        slow_limit=raw["slow_limit"],
        checks=by_size(raw["checks"], lambda run: Check(**run)),
        daemons=by_size(raw["daemons"], lambda run: Idle(**run)),
        bursts=by_size(raw["bursts"], list),
        every=raw["every"],
        spawn={name: [(a, b) for a, b in runs] for name, runs in raw["spawn"].items()},
        spawn_n=raw["spawn_n"],
        header=raw["header"],
    )


def header(
    record: Record, names: Sequence[str], argv: Sequence[str], *, cronplus: Path | None
) -> str:
    """The section's header: the host, the versions measured (cronplus as the interpreter
    that runs it), the command."""
    from cronplus import __version__

    versions = [f"cronplus {__version__} (run by {shown(cronplus)})"] if cronplus else []
    if "yacron" in names:
        versions.append(f"yacron {YACRON_VERSION} (PyPI, in bench/out/{PEERS_DIR.name}/yacron)")
    if "cron" in names:
        versions.append(f"Debian cron {cron_version()} (`cron -f` in a private mount namespace)")
    kernel = said(["uname", "-r"])
    note = f"- versions: {', '.join(versions)}; Python {platform.python_version()}, Linux {kernel}"
    return record.header(f"python bench/bench_peers.py {' '.join(argv)}", note)


# --- the targets ----------------------------------------------------------------------------

Value = float | str | None
"""One figure of one daemon: a number, why there is none (the slow limit), or None: not
measured."""
Figure = Callable[[Results, str], Value]


def _median(values: Sequence[float | None], *, missing: str) -> Value:
    """The median of the known values; ``missing`` if there were runs but none had one."""
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else missing if values else None


def check_s(n: int) -> Figure:
    return lambda r, name: _median(
        [c.seconds for c in r.checks.get(name, {}).get(n, [])], missing=f"> {r.slow_limit:g} s"
    )


def idle_figure(n: int, pick: Callable[[Idle], float | None], missing: str = "not ready") -> Figure:
    def figure(r: Results, name: str) -> Value:
        why = missing.format(limit=r.slow_limit)
        return _median([pick(i) for i in r.daemons.get(name, {}).get(n, [])], missing=why)

    return figure


def burst_s(n: int, stat: str) -> Figure:
    return lambda r, name: _median(
        [BURST_STATS[stat](late) for late in r.bursts.get(name, {}).get(n, [])], missing="–"
    )


def every_s(q: float) -> Figure:
    def figure(r: Results, name: str) -> Value:
        late = r.every.get(name, [])
        return percentile(late, q) if late else None

    return figure


@dataclass(frozen=True)
class Target:
    """One row of the issue's table: what is measured, in which unit, below which limit."""

    what: str
    figure: Figure
    unit: str
    limit: float | None = None


def startup_s(n: int) -> Figure:
    return idle_figure(n, lambda i: i.startup, "> {limit:g} s")


TARGETS = (
    Target("config check, 1,000 jobs", check_s(1000), "s", 0.3),
    Target("config check, 10,000 jobs", check_s(10000), "s", 1.0),
    Target("startup, 1,000 jobs", startup_s(1000), "s", 0.5),
    Target("startup, 10,000 jobs", startup_s(10000), "s", 1.0),
    Target("steady RSS, 10,000 jobs", idle_figure(10000, lambda i: i.rss_mb), "MB", 60.0),
    Target("idle CPU per 60 s, 1,000 jobs", idle_figure(1000, lambda i: i.cpu_ms), "ms", 1.0),
    Target("idle CPU per 60 s, 10,000 jobs", idle_figure(10000, lambda i: i.cpu_ms), "ms", 1.0),
    Target("burst of 1,000: last start", burst_s(1000, "last"), "s", 0.45),
    Target("burst of 100: p99 start", burst_s(100, "p99"), "s", 0.06),
    Target("one job every {grain}: p50", every_s(50), "s"),
    Target("one job every {grain}: p99", every_s(99), "s", 0.01),
    Target("one job every {grain}: max", every_s(100), "s"),
)


def _number(value: Value, unit: str) -> str:
    if value is None or isinstance(value, str):
        return value or "–"
    digits = 1 if unit == "MB" or value >= 100 else 3 if value >= 0.01 else 4
    return f"{value:,.{digits}f} {unit}"


def _known(value: Value) -> float | None:
    return value if isinstance(value, float | int) else None


def _ratio(mine: float | None, theirs: float | None) -> str:
    return "–" if mine is None or not theirs else f"{mine / theirs:.3g}"


def _beats(mine: float | None, best: float | None) -> str:
    """How many times lower cronplus's figure is than the best peer's (all are costs)."""
    if mine is None or best is None:
        return "–"
    if mine == 0:
        return "∞×" if best else "even"
    times = best / mine
    return f"**{times:.3g}× lower**" if times >= 1 else f"{1 / times:.3g}× higher"


def _verdict(mine: float | None, limit: float | None) -> str:
    if limit is None or mine is None:
        return "–"
    return "yes" if mine < limit else "**no**"


def targets_table(r: Results) -> str:
    """The issue's rows: each daemon's figure, cronplus's ratio to each peer, the verdict."""
    peers = [name for name in r.names if name != "cronplus"]
    headers = ["figure", "target", *r.names, *(f"cronplus ÷ {peer}" for peer in peers)]
    rows = []
    for target in TARGETS:
        values = {name: target.figure(r, name) for name in r.names}
        if all(value is None for value in values.values()):
            continue
        mine = _known(values.get("cronplus"))
        theirs = {peer: _known(values[peer]) for peer in peers}
        best = min((v for v in theirs.values() if v is not None), default=None)
        rows.append(
            [
                target.what.format(grain=r.grain),
                "–" if target.limit is None else f"< {target.limit:g} {target.unit}",
                *(_number(values[name], target.unit) for name in r.names),
                *(_ratio(mine, theirs[peer]) for peer in peers),
                _beats(mine, best),
                _verdict(mine, target.limit),
            ]
        )
    return markdown_table([*headers, "best peer ÷ cronplus", "met"], rows)


# --- the detailed tables ----------------------------------------------------------------------


def checks_table(r: Results) -> str:
    rows = []
    for name, by_size in r.checks.items():
        for n, runs in by_size.items():
            if not runs:
                rows.append([f"{n:,}", name, "no check command", "–"])
                continue
            timed_out = any(run.seconds is None for run in runs)
            seconds = f"> {r.slow_limit:g}" if timed_out else cell(c.seconds for c in runs)
            rows.append([f"{n:,}", name, seconds, cell((c.peak_mb for c in runs), digits=1)])
    return markdown_table(["jobs", "daemon", "time, s", "peak RSS, MB"], rows)


def daemons_table(r: Results) -> str:
    rows = []
    for name, by_size in r.daemons.items():
        for n, runs in sorted(by_size.items()):
            startups = [i.startup for i in runs]
            startup = cell(startups) if any(startups) else f"> {r.slow_limit:g}"
            rows.append(
                [
                    f"{n:,}",
                    name,
                    startup + (f" ({len(runs)} run)" if len(runs) == 1 else ""),
                    cell((i.rss_mb for i in runs), digits=1),
                    cell((i.hwm_mb for i in runs), digits=1),
                    cell(i.cpu_ms for i in runs),
                    cell((i.wakeups for i in runs), digits=1),
                ]
            )
    headers = ["jobs", "daemon", "startup, s", "VmRSS, MB", "VmHWM, MB"]
    return markdown_table([*headers, "idle CPU, ms per 60 s", "wake-ups per 60 s"], rows)


def bursts_table(r: Results) -> str:
    rows = [
        [f"{n:,}", name, *(cell(stat(late) for late in runs) for stat in BURST_STATS.values())]
        for n in sorted({n for by_size in r.bursts.values() for n in by_size})
        for name, by_size in r.bursts.items()
        if (runs := by_size.get(n, []))
    ]
    return markdown_table(["jobs", "daemon", *(f"{s}, s" for s in BURST_STATS)], rows)


def every_table(r: Results) -> str:
    rows = [
        [name, str(len(late)), *(f"{percentile(late, q):.4f}" for q in (50, 99, 100))]
        for name, late in r.every.items()
    ]
    return markdown_table(["daemon", "starts", "p50, s", "p99, s", "max, s"], rows)


def spawn_table(r: Results) -> str:
    rows = [
        [
            name,
            cell(t[0] for t in runs),
            cell(t[1] for t in runs),
            per_second(r.spawn_n, (t[0] for t in runs)),
        ]
        for name, runs in r.spawn.items()
    ]
    return markdown_table(["loop", "last started, s", "all reaped, s", "starts/s"], rows)


def report(r: Results) -> str:
    grain = "minute" if r.grain == "minute" else "second (cronplus alone)"
    return (
        f"{r.header}\n\nMedians over the repeats, (min–max) in the tables below; every "
        f"figure is a cost, so lower is better. Bursts and the periodic job fire on a whole "
        f"{grain}.\n\n{targets_table(r)}\n\n"
        f"Config check of the idle crontab (spawn to exit; peak RSS of that process):\n\n"
        f"{checks_table(r)}\n\n"
        f"Daemons with N jobs of which none is due for months: startup (spawn to ready), "
        f"then one idle window per repeat with all sizes of a daemon side by side:\n\n"
        f"{daemons_table(r)}\n\n"
        f"N jobs due at one instant, lateness of their starts (stamp minus instant):\n\n"
        f"{bursts_table(r)}\n\n"
        f"One job due every {r.grain}, lateness of each start:\n\n{every_table(r)}\n\n"
        f"The bare spawn limit: {r.spawn_n:,} children of the same payload in flight, no "
        f"scheduler:\n\n{spawn_table(r)}\n"
    )

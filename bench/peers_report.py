"""The peers benchmark's figures: kept as JSON, told as markdown tables against the targets.

``Results`` holds every raw figure of one run of bench_peers.py; ``report`` turns it into
the ``## peers`` section of bench/RESULTS.md: the machine and versions, the issue's
targets with cronplus, each peer, their ratios and the verdict, then a table per row.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_runonce import (
    cell,
    load_average,
    machine,
    markdown_table,
    percentile,
    shown,
    update_results,
)
from peers import PEERS_DIR, YACRON_VERSION, cron_version

HEADING = "## peers"
OWNER = "bench_peers.py"

__all__ = ["Check", "Idle", "Results", "header", "load_average", "report", "save"]


@dataclass(frozen=True, kw_only=True)
class Check:
    """One config check: seconds from spawn to exit and the command's own peak RSS (both
    None: stopped at the slow limit)."""

    seconds: float | None
    peak_mb: float | None


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


# --- the header ---------------------------------------------------------------------------


def header(
    loadavg: str,
    names: Sequence[str],
    argv: Sequence[str],
    *,
    cronplus: Path | None,
    began: datetime,
    code: str,
) -> str:
    """The machine, the versions measured (cronplus as the interpreter ``cronplus`` runs it)
    and the command."""
    from cronplus import __version__

    versions = [f"cronplus {__version__} (run by {shown(cronplus)})"] if cronplus else []
    if "yacron" in names:
        versions.append(f"yacron {YACRON_VERSION} (PyPI, in bench/out/{PEERS_DIR.name}/yacron)")
    if "cron" in names:
        versions.append(f"Debian cron {cron_version()} (`cron -f` in a private mount namespace)")
    kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    return (
        f"{machine(loadavg, began=began, code=code)}\n- versions: {', '.join(versions)}; Python "
        f"{platform.python_version()}, Linux {kernel}\n"
        f"- command: `python bench/bench_peers.py {' '.join(argv)}`"
    )


# --- figures --------------------------------------------------------------------------------

Value = float | str | None
"""One figure of one daemon: a number, why there is none (the slow limit), or None: not
measured."""
Figure = Callable[["Results", str], Value]


def _median(values: Sequence[float | None], *, missing: str) -> Value:
    """The median of the known values; ``missing`` if there were runs but none had one."""
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else missing if values else None


def check_s(n: int) -> Figure:
    def figure(r: Results, name: str) -> Value:
        runs = r.checks.get(name, {}).get(n, [])
        return _median([c.seconds for c in runs], missing=f"> {r.slow_limit:g} s")

    return figure


def idle_figure(n: int, pick: Callable[[Idle], float | None]) -> Figure:
    def figure(r: Results, name: str) -> Value:
        runs = r.daemons.get(name, {}).get(n, [])
        return _median([pick(i) for i in runs], missing="not ready")

    return figure


def startup_s(n: int) -> Figure:
    def figure(r: Results, name: str) -> Value:
        runs = r.daemons.get(name, {}).get(n, [])
        return _median([i.startup for i in runs], missing=f"> {r.slow_limit:g} s")

    return figure


def rss_mb(n: int) -> Figure:
    return idle_figure(n, lambda i: i.rss_mb)


def idle_ms(n: int) -> Figure:
    return idle_figure(n, lambda i: i.cpu_ms)


BURST_STATS: dict[str, Callable[[list[float]], float]] = {
    "first": min,
    "median": statistics.median,
    "p99": lambda late: percentile(late, 99),
    "last": max,
}


def burst_s(n: int, stat: str) -> Figure:
    def figure(r: Results, name: str) -> Value:
        runs = r.bursts.get(name, {}).get(n, [])
        return _median([BURST_STATS[stat](late) for late in runs], missing="–")

    return figure


def every_s(q: float) -> Figure:
    def figure(r: Results, name: str) -> Value:
        late = r.every.get(name, [])
        return percentile(late, q) if late else None

    return figure


@dataclass(frozen=True, kw_only=True)
class Target:
    """One row of the issue's table: what is measured, in which unit, below which limit."""

    what: str
    figure: Figure
    unit: str
    limit: float | None = None


TARGETS = (
    Target(what="config check, 1,000 jobs", figure=check_s(1000), unit="s", limit=0.3),
    Target(what="config check, 10,000 jobs", figure=check_s(10000), unit="s", limit=1.0),
    Target(what="startup, 1,000 jobs", figure=startup_s(1000), unit="s", limit=0.5),
    Target(what="startup, 10,000 jobs", figure=startup_s(10000), unit="s", limit=1.0),
    Target(what="steady RSS, 10,000 jobs", figure=rss_mb(10000), unit="MB", limit=60.0),
    Target(what="idle CPU per 60 s, 1,000 jobs", figure=idle_ms(1000), unit="ms", limit=1.0),
    Target(what="idle CPU per 60 s, 10,000 jobs", figure=idle_ms(10000), unit="ms", limit=1.0),
    Target(what="burst of 1,000: last start", figure=burst_s(1000, "last"), unit="s", limit=0.45),
    Target(what="burst of 100: p99 start", figure=burst_s(100, "p99"), unit="s", limit=0.06),
    Target(what="one job every {grain}: p50", figure=every_s(50), unit="s"),
    Target(what="one job every {grain}: p99", figure=every_s(99), unit="s", limit=0.01),
    Target(what="one job every {grain}: max", figure=every_s(100), unit="s"),
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
    names = r.names
    peers = [name for name in names if name != "cronplus"]
    headers = ["figure", "target", *names, *(f"cronplus ÷ {peer}" for peer in peers)]
    headers += ["best peer ÷ cronplus", "met"]
    rows = []
    for target in TARGETS:
        values = {name: target.figure(r, name) for name in names}
        if all(value is None for value in values.values()):
            continue
        mine = _known(values.get("cronplus"))
        theirs = {peer: _known(values[peer]) for peer in peers}
        best = min((v for v in theirs.values() if v is not None), default=None)
        limit = "–" if target.limit is None else f"< {target.limit:g} {target.unit}"
        rows.append(
            [
                target.what.format(grain=r.grain),
                limit,
                *(_number(values[name], target.unit) for name in names),
                *(_ratio(mine, theirs[peer]) for peer in peers),
                _beats(mine, best),
                _verdict(mine, target.limit),
            ]
        )
    return markdown_table(headers, rows)


# --- the detailed tables ----------------------------------------------------------------------


def _spread(values: Sequence[float | None], scale: float = 1.0, digits: int = 3) -> str:
    known = [value for value in values if value is not None]
    return cell(known, scale, digits) if known else "–"


def checks_table(r: Results) -> str:
    rows = []
    for name, by_size in r.checks.items():
        for n, runs in by_size.items():
            if not runs:
                rows.append([f"{n:,}", name, "no check command", "–"])
                continue
            timed_out = any(run.seconds is None for run in runs)
            seconds = f"> {r.slow_limit:g}" if timed_out else _spread([c.seconds for c in runs])
            rows.append([f"{n:,}", name, seconds, _spread([c.peak_mb for c in runs], digits=1)])
    return markdown_table(["jobs", "daemon", "time, s", "peak RSS, MB"], rows)


def daemons_table(r: Results) -> str:
    rows = []
    for name, by_size in r.daemons.items():
        for n, runs in sorted(by_size.items()):
            startups = [i.startup for i in runs]
            startup = _spread(startups) if any(startups) else f"> {r.slow_limit:g}"
            rows.append(
                [
                    f"{n:,}",
                    name,
                    startup + (f" ({len(runs)} run)" if len(runs) == 1 else ""),
                    _spread([i.rss_mb for i in runs], digits=1),
                    _spread([i.hwm_mb for i in runs], digits=1),
                    _spread([i.cpu_ms for i in runs]),
                    _spread([i.wakeups for i in runs], digits=1),
                ]
            )
    headers = ["jobs", "daemon", "startup, s", "VmRSS, MB", "VmHWM, MB"]
    headers += ["idle CPU, ms per 60 s", "wake-ups per 60 s"]
    return markdown_table(headers, rows)


def bursts_table(r: Results) -> str:
    rows = []
    sizes = sorted({n for by_size in r.bursts.values() for n in by_size})
    for n in sizes:
        for name, by_size in r.bursts.items():
            runs = by_size.get(n, [])
            if runs:
                stats = [_spread([stat(late) for late in runs]) for stat in BURST_STATS.values()]
                rows.append([f"{n:,}", name, *stats])
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
            _spread([run[0] for run in runs]),
            _spread([run[1] for run in runs]),
            f"{r.spawn_n / statistics.median(run[0] for run in runs):,.0f}",
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


def write_section(path: Path, body: str) -> None:
    update_results(path, HEADING, body, owner=OWNER)

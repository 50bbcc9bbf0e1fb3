"""PNG charts of one bench_peers.py run: lateness distributions, and costs against N.

    python bench/charts.py [bench/out/peers.json] [bench/figures]

``lateness.png``: for each burst size and the periodic job, the share of starts made by a
given lateness (all repeats pooled), one line per daemon, the target dashed.
``scaling.png``: startup, steady RSS and idle CPU against the number of jobs, log-log, one
line per daemon (medians over the repeats). Needs matplotlib (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from harness import BENCH, BUILD_DIR, launch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from peers_report import Idle, Results, load

COLORS = {"cronplus": "tab:blue", "yacron": "tab:orange", "Debian cron": "tab:green"}
BURST_TARGETS = {100: 0.06, 1000: 0.45}
"""Seconds: p99 of 100 and the last of 1,000 (the issue's targets)."""
EVERY_TARGET = 0.01
FLOOR = 1e-4
"""Lateness below 0.1 ms is drawn at 0.1 ms: a log axis has no zero."""


def _finish(ax: Axes, **labels: str) -> None:
    ax.set(**labels)
    # A label at every minor tick of a log axis is a smear.
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")


def _lateness_panel(ax: Axes, title: str, lines: dict[str, list[float]], target: float) -> None:
    for name, late in lines.items():
        if late:
            ordered = sorted(max(value, FLOOR) for value in late)
            shares = [(i + 1) / len(ordered) for i in range(len(ordered))]
            ax.step(ordered, shares, where="post", label=name, color=COLORS.get(name))
    ax.axvline(target, linestyle="--", color="grey", label=f"target {target:g} s")
    ax.set_ylim(0, 1.02)
    _finish(ax, xscale="log", title=title, xlabel="lateness, s", ylabel="share of starts")


def _scaling_panel(
    ax: Axes, r: Results, pick: Callable[[Idle], float | None], title: str, unit: str
) -> None:
    for name, by_size in r.daemons.items():
        points = [
            (n, statistics.median(known))
            for n, runs in sorted(by_size.items())
            if (known := [value for value in map(pick, runs) if value is not None])
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", label=name, color=COLORS.get(name))
    _finish(ax, xscale="log", yscale="log", title=title, xlabel="jobs", ylabel=unit)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw(r: Results, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    sizes = sorted({n for by_size in r.bursts.values() for n in by_size})
    fig, axes = plt.subplots(1, len(sizes) + 1, figsize=(5 * (len(sizes) + 1), 4))
    for ax, n in zip(axes, sizes, strict=False):
        pooled = {
            name: [late for run in by_size.get(n, []) for late in run]
            for name, by_size in r.bursts.items()
        }
        _lateness_panel(ax, f"{n:,} jobs due at once", pooled, BURST_TARGETS.get(n, 0.45))
    _lateness_panel(axes[-1], f"one job every {r.grain}", r.every, EVERY_TARGET)
    lateness = _save(fig, folder / "lateness.png")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    _scaling_panel(axes[0], r, lambda i: i.startup, "startup", "s")
    _scaling_panel(axes[1], r, lambda i: i.rss_mb, "steady RSS", "MB")
    # An idle CPU of exactly 0 has no place on a log axis: drawn at 1 µs.
    _scaling_panel(
        axes[2],
        r,
        lambda i: None if i.cpu_ms is None else max(i.cpu_ms, 1e-3),
        "idle CPU per 60 s",
        "ms",
    )
    return [lateness, _save(fig, folder / "scaling.png")]


def main() -> None:
    args = sys.argv[1:]
    source = Path(args[0]) if args else BUILD_DIR / "peers.json"
    folder = Path(args[1]) if len(args) > 1 else BENCH / "figures"
    for path in draw(load(source), folder):
        print(f"wrote {path}")


if __name__ == "__main__":
    launch(main)

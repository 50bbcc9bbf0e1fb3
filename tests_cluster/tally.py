"""Counting a scenario's starts: expected, run, twice, lost (and early, off-schedule, stale),
and the table row that shows them.

A slot *runs* when its succeeding attempt starts: any attempt of a plain job, a retry
(attempt 2 or later) of a retrying job, whose first attempt fails by design. A slot runs
*twice* when two succeeding attempts started (the job's effect happened twice). A slot is
*stale* when a node started an attempt of it after another node had started one since
its own: the pattern a paused or fenced-off node leaves when it acts on a claim it lost.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

from tests_cluster.lab import Start

Slot = tuple[str, datetime]
"""(job, scheduled instant)."""


@dataclass(frozen=True, kw_only=True)
class Tally:
    """What a scenario's window held; ``allowed`` of ``twice`` are doubles it permits."""

    expected: int
    run: int
    recorded: int
    """Expected slots that did not run but are recorded as the scenario permits (missed by
    their ``catchup``, interrupted by a stop)."""
    twice: int
    allowed: int
    lost: int
    early: int
    off_schedule: int
    stale: int
    late_max_s: float

    @property
    def failures(self) -> list[str]:
        out = []
        if self.run + self.recorded != self.expected:
            out.append(f"run {self.run} + recorded {self.recorded} != expected {self.expected}")
        if self.twice > self.allowed:
            out.append(f"{self.twice - self.allowed} slot(s) ran twice")
        for name in ("lost", "early", "off_schedule", "stale"):
            if value := getattr(self, name):
                out.append(f"{name.replace('_', '-')}: {value}")
        return out


def count(
    starts: list[Start],
    *,
    expected: set[Slot],
    counted: Callable[[str, datetime], bool],
    retrying: Collection[str],
    either: Collection[Slot] = (),
    recorded: Collection[Slot] = (),
    allowed: Callable[[list[Start]], bool] | None = None,
) -> tuple[Tally, dict[str, list[Slot]]]:
    """The tally of ``starts`` whose (job, slot) is ``counted``, against ``expected``; and
    the slots behind each failing count, for a failure message.

    ``either``: slots that may run or not (a transition), never twice. ``early`` counts
    every start before its slot, in the window or not (a fast clock runs future slots)."""
    by_slot: dict[Slot, list[Start]] = defaultdict(list)
    for start in sorted(starts, key=lambda s: s.at):
        if counted(start.job, start.slot):
            by_slot[(start.job, start.slot)].append(start)
    good = {
        key: [s for s in rows if s.attempt > 1 or s.job not in retrying]
        for key, rows in by_slot.items()
    }
    ran = {key for key, rows in good.items() if rows}
    twice = {key for key, rows in good.items() if len(rows) > 1}
    permitted = {key for key in twice if allowed is not None and allowed(good[key])}
    lost = expected - ran - set(recorded)
    stale = {key for key, rows in by_slot.items() if _returns(rows)}
    early = [s for s in starts if s.at < s.slot]
    off = set(by_slot) - expected - set(either)
    late = [(by_slot[key][0].at - key[1]).total_seconds() for key in expected & ran]
    tally = Tally(
        expected=len(expected),
        run=len(expected & ran),
        recorded=len((expected & set(recorded)) - ran),
        twice=len(twice),
        allowed=len(permitted),
        lost=len(lost),
        early=len(early),
        off_schedule=len(off),
        stale=len(stale),
        late_max_s=max(late, default=0.0),
    )
    detail = {
        "twice": sorted(twice - permitted),
        "lost": sorted(lost),
        "early": sorted({(s.job, s.slot) for s in early}),
        "off-schedule": sorted(off),
        "stale": sorted(stale),
    }
    return tally, {k: v for k, v in detail.items() if v}


def _returns(rows: list[Start]) -> bool:
    """Whether a node started again after another node started since its own start."""
    seen: list[str] = []
    for row in rows:
        if seen and seen[-1] != row.node and row.node in seen:
            return True
        if not seen or seen[-1] != row.node:
            seen.append(row.node)
    return False


def per_node(starts: Iterable[Start]) -> str:
    shares = Counter(s.node for s in starts)
    return "/".join(f"{node} {n}" for node, n in sorted(shares.items())) or "none"


HEADER = (
    "| scenario | expected | run | recorded | twice (allowed) | lost | early | off-schedule"
    " | stale | latest first start s | result | what happened |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def row(name: str, tally: Tally, *, ok: bool, note: str) -> str:
    t = tally
    return (
        f"| {name} | {t.expected} | {t.run} | {t.recorded} | {t.twice} ({t.allowed})"
        f" | {t.lost} | {t.early} | {t.off_schedule} | {t.stale} | {t.late_max_s:.2f}"
        f" | {'pass' if ok else '**FAIL**'} | {note} |"
    )

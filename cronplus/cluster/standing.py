"""A cluster node's standing: whether it may claim, by its clock and its job definitions.

Each heartbeat measures the node's clock against the database's and tells the cluster's
definitions (``pg/definitions.py``); ``Standing`` follows the measured offset on the node's
corrected clock, refuses past ``cluster.MAX_CLOCK_SKEW`` and while the definitions differ,
and logs each change once. ``node.Node`` asks it before claiming. docs/cluster.md, "Clocks"
and "When the files differ", has the rules.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cronplus.clock import CorrectedClock
from cronplus.cluster.decisions import (
    CORRECTION_STEP,
    MAX_CLOCK_SKEW,
    Beat,
    clock_refusal,
    definitions_hash,
)
from cronplus.core.model import Crontab
from cronplus.observe.logs import EventLog


class Standing:
    """What keeps node ``name`` from claiming, if anything, as its last heartbeat told."""

    def __init__(self, name: str, log: EventLog, corrected: CorrectedClock | None) -> None:
        """``corrected``: the daemon's clock, kept corrected by the measured offset."""
        self._name = name
        self._log = log
        self._corrected = corrected
        self.definitions_refusal: str | None = None
        """Why this node's job definitions keep it from claiming, if they do."""
        self.clock_refusal: str | None = None
        """Why this node's clock keeps it from claiming, if it does."""
        self.measured: float | None = None
        """The last measured offset of this node's clock to the database's, seconds."""
        self._hashed: tuple[Crontab | None, str] = (None, "")

    @property
    def refusal(self) -> str | None:
        return self.definitions_refusal or self.clock_refusal

    def hashed(self, crontab: Crontab) -> str:
        """``crontab``'s definitions hash, computed once per loaded file."""
        if self._hashed[0] is not crontab:
            self._hashed = (crontab, definitions_hash(crontab.jobs))
        return self._hashed[1]

    def stamp(self, crontab: Crontab) -> datetime | None:
        """The file's modification time on the database's clock; None (publish nothing)
        while this node's clock is refused: its file's time is suspect too."""
        modified = crontab.modified
        if modified is None or self.clock_refusal is not None:
            return None
        return modified - self._corrected.offset if self._corrected else modified

    def judge_clock(self, beat: Beat) -> None:
        """Follow the measured offset (within a step of noise); refuse past the bound."""
        self.measured = beat.clock_offset
        corrected = self._corrected
        if corrected is not None:
            applied = corrected.offset.total_seconds()
            if abs(beat.clock_offset - applied) > max(beat.clock_error, CORRECTION_STEP):
                corrected.offset = timedelta(seconds=beat.clock_offset)
        refusal = clock_refusal(self._name, beat.clock_offset, beat.clock_error)
        if refusal is not None and self.clock_refusal is None:
            self._log.error("clock_skewed", refusal, clock_offset=round(beat.clock_offset, 3))
        elif refusal is None and self.clock_refusal is not None:
            self._log.info(
                "clock_agrees",
                f"node {self._name}: its clock is within {MAX_CLOCK_SKEW:g}s of the cluster"
                " database's again; claiming",
                clock_offset=round(beat.clock_offset, 3),
            )
        self.clock_refusal = refusal

    def judge_definitions(self, beat: Beat, mine: str) -> None:
        """Refuse to claim while this node's job definitions differ from the cluster's."""
        if beat.definitions == mine:
            if self.definitions_refusal is not None:
                self._log.info(
                    "definitions_agree",
                    f"node {self._name}: job definitions agree with the cluster again; claiming",
                    definitions=mine[:12],
                )
            self.definitions_refusal = None
            return
        refusal = (
            f"node {self._name} refuses to claim slots: its job definitions (hash"
            f" {mine[:12]}) differ from the cluster's ({beat.definitions[:12]}, set by node"
            f" {beat.set_by}, run by {', '.join(beat.holders) or 'no live node'}), which came"
            " from a newer file or a `cronplus cluster deploy`; make the crontab files agree"
            " (only settings.cluster.node and settings.cluster.tags may differ), or run"
            " `cronplus cluster deploy` with this file to make it the cluster's"
        )
        if refusal != self.definitions_refusal:
            self._log.error("definitions_differ", refusal, definitions=mine[:12])
        self.definitions_refusal = refusal

"""Attempts in flight: noted in the store once the loop turn that started them is over.

The ``in_flight`` rows let the next start record an attempt cut off by a crash as
``interrupted`` (docs/daemon.md, "Stopping"). Each is a transaction of its own (30 µs on
SQLite), and a burst starts a thousand attempts in one loop turn: noting each as it started
put 30 ms into the last start of such a burst. So the rows are written right after the
turn's starts, in start order. A crash inside that turn leaves those attempts unrecorded,
as a crash between a spawn and its row always could; their slots are in the ledger already
and are not run again either way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from cronplus.state.store import Store


@dataclass(frozen=True, kw_only=True)
class Started:
    """One attempt as ``Store.begin_attempt`` notes it."""

    job: str
    scheduled_at: datetime
    attempt: int
    started_at: datetime
    pid: int | None


class InFlight:
    """Notes started attempts in ``store`` after the current loop turn."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: list[tuple[Started, asyncio.Future[int]]] = []

    def note(self, started: Started) -> asyncio.Future[int]:
        """The id of the attempt's row to come, for ``Store.end_attempt``."""
        loop = asyncio.get_running_loop()
        if not self._pending:
            loop.call_soon(self._flush)  # runs after the tasks already due: the turn's starts
        noted: asyncio.Future[int] = loop.create_future()
        self._pending.append((started, noted))
        return noted

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for started, noted in pending:
            if noted.cancelled():
                continue  # its task was cancelled: nothing will end the row, so none is made
            try:
                noted.set_result(
                    self._store.begin_attempt(
                        job=started.job,
                        scheduled_at=started.scheduled_at,
                        attempt=started.attempt,
                        started_at=started.started_at,
                        pid=started.pid,
                    )
                )
            except Exception as error:  # a StateError, or a bug: the attempt's task raises it
                noted.set_exception(error)

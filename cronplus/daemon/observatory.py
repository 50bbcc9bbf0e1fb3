"""What the daemon shows the outside: alerts, pings, metrics, health and the control socket.

``Observatory`` wires them for one daemon: its ``events`` go to the engine (alerts, pings,
metrics and the table of running attempts hear every attempt), ``tick`` is called by the
loop (heartbeat, dead-man alerts, next-run series), ``earliest`` folds the dead-man
deadlines into the loop's wake-up, and it answers the control socket (``status``, ``run``).
docs/observability.md describes all of it for operators.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cronplus import __version__
from cronplus.clock import Clock
from cronplus.core.model import Crontab, Job, Outcome, RunResult, Slot, Trigger, iso_utc
from cronplus.engine.engine import Engine
from cronplus.engine.events import EngineEvents, Fanout
from cronplus.engine.slotrun import SlotRun
from cronplus.observe.alerts import Alert, AlertBook
from cronplus.observe.control import ControlServer, socket_path
from cronplus.observe.logs import EventLog
from cronplus.observe.metrics import Metrics, MetricsServer
from cronplus.observe.notifiers import Dispatcher, Mailer, build_routes
from cronplus.observe.pings import Pinger
from cronplus.run.runner import Runner
from cronplus.state.store import Store

CLOSE_GRACE = 5.0
"""Seconds that alerts and pings still under way get when the daemon stops."""


class AlertRelay:
    """Engine events to ``AlertBook`` decisions to the ``Dispatcher``."""

    def __init__(self, book: AlertBook, dispatcher: Dispatcher, *, clock: Clock) -> None:
        self.book, self.dispatcher, self._clock = book, dispatcher, clock

    def attempt_started(
        self, *, job: Job, slot: Slot, attempt: int, pid: int | None, at: datetime
    ) -> None:
        return

    def attempt_finished(
        self, *, job: Job, result: RunResult, retry_at: datetime | None, stopped: bool
    ) -> None:
        now = self._clock.now()
        alerts = self.book.attempt_finished(
            job, result, retry_at=retry_at, stopped=stopped, now=now
        )
        self._send(job, alerts)

    def slots_missed(self, *, job: Job, result: RunResult, count: int) -> None:
        self._send(job, self.book.slots_missed(job, result, count=count, now=self._clock.now()))

    def _send(self, job: Job, alerts: list[Alert]) -> None:
        for alert in alerts:
            self.dispatcher.send(alert, job.notifiers(alert.kind))


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """A running attempt, as ``status`` shows it."""

    job: str
    slot: Slot
    attempt: int
    pid: int | None
    started_at: datetime


class AttemptTable:
    """The attempts running now (an ``EngineEvents`` observer)."""

    def __init__(self) -> None:
        self.running: dict[tuple[str, int], Attempt] = {}

    def attempt_started(
        self, *, job: Job, slot: Slot, attempt: int, pid: int | None, at: datetime
    ) -> None:
        entry = Attempt(job=job.name, slot=slot, attempt=attempt, pid=pid, started_at=at)
        self.running[(slot.run_id, attempt)] = entry

    def attempt_finished(
        self, *, job: Job, result: RunResult, retry_at: datetime | None, stopped: bool
    ) -> None:
        self.running.pop((result.run_id, result.attempt), None)

    def slots_missed(self, *, job: Job, result: RunResult, count: int) -> None:
        return


@dataclass(frozen=True, kw_only=True)
class Reload:
    """The last load or reload of the crontab."""

    at: datetime
    why: str
    ok: bool
    error: str | None = None


class Observatory:
    """Alerts, pings, metrics and the control socket of one daemon."""

    def __init__(
        self,
        path: Path,
        crontab: Crontab,
        *,
        store: Store,
        clock: Clock,
        env: Mapping[str, str],
        log: EventLog,
    ) -> None:
        self.path, self.crontab = path, crontab
        self._state = crontab.settings.state  # a reload's new state waits for the next start
        self._clock, self._env, self._log = clock, env, log
        self._host = socket.gethostname()
        self._runner = Runner()
        self._mailer: Mailer | None = None
        newest = store.last_outcomes()
        book = AlertBook(newest)
        self.alerts = AlertRelay(book, Dispatcher({}, clock=clock, log=log), clock=clock)
        self._install_routes(crontab)
        self.pinger = Pinger(crontab.settings.pings, clock=clock, log=log, env=env)
        self.attempts = AttemptTable()
        self.metrics = Metrics() if crontab.settings.metrics else None
        if self.metrics is not None:
            self.metrics.seed_last_success(
                {name: at for name, (outcome, at) in newest.items() if outcome.ok}
            )
        observers: list[EngineEvents] = [self.attempts, self.alerts, self.pinger]
        if self.metrics is not None:
            observers.append(self.metrics)
        self.events = Fanout(observers)
        self._started = (clock.now(), clock.monotonic())
        self.last_reload = Reload(at=clock.now(), why="start", ok=True)
        self._beat: float | None = None
        self._engine: Engine | None = None
        self._reload: Callable[[str], Reload] | None = None
        self._metrics_server: MetricsServer | None = None
        self._control: ControlServer | None = None

    def _install_routes(self, crontab: Crontab) -> None:
        old = self._mailer
        smtp = crontab.settings.smtp
        if old is None or smtp is None or old.smtp != smtp:
            self._mailer = None if smtp is None else Mailer(smtp, env=self._env, host=self._host)
            if old is not None:
                old.close()
        self.alerts.dispatcher.routes = build_routes(
            crontab.notifiers,
            runner=self._runner,
            env=self._env,
            workdir=crontab.path.parent,
            host=self._host,
            mailer=self._mailer,
        )

    # --- life cycle ----------------------------------------------------------------------

    async def start(
        self, engine: Engine, *, now: datetime, reload: Callable[[str], Reload]
    ) -> None:
        """Open the metrics port and the control socket; watch the dead-man periods.
        ``reload`` is the daemon's, for ``cronplus reload``."""
        self._engine, self._reload = engine, reload
        self.alerts.book.watch(engine.crontab.jobs, now=now)
        address = self.crontab.settings.metrics
        if self.metrics is not None and address is not None:
            self._metrics_server = MetricsServer(self.metrics, address, clock=self._clock)
            self._log.info(
                "metrics_listening",
                f"metrics on http://{address.host}:{self._metrics_server.port}/metrics",
                host=address.host,
                port=self._metrics_server.port,
            )
        self._control = await ControlServer.start(socket_path(self._state), self, log=self._log)

    def tick(self, now: datetime, monotonic: float) -> None:
        """The loop's pass: beat, fire dead-man alerts that are due, publish next runs."""
        self.beat(monotonic)
        for alert in self.alerts.book.due(now=now):
            job = self._job(alert.job)
            if job is not None:
                self.alerts.dispatcher.send(alert, job.notifiers(alert.kind))
        if self.metrics is not None and self._engine is not None:
            self.metrics.schedule({s.job.name: s.next_due for s in self._engine.jobs()})

    def beat(self, monotonic: float) -> None:
        """The loop is alive (a pass, or an idle slice that needed none)."""
        self._beat = monotonic
        if self.metrics is not None:
            self.metrics.heartbeat(monotonic)

    def earliest(self, next_due: datetime | None) -> datetime | None:
        """The loop's next wake-up: the engine's next slot or a dead-man deadline."""
        deadline = self.alerts.book.next_deadline()
        return min((t for t in (next_due, deadline) if t is not None), default=None)

    def reloaded(self, crontab: Crontab | None, *, why: str, error: str | None) -> Reload:
        """After a reload: ``crontab`` is the new file, or None when it was rejected."""
        now = self._clock.now()
        self.last_reload = Reload(at=now, why=why, ok=crontab is not None, error=error)
        if self.metrics is not None:
            self.metrics.reloaded(ok=crontab is not None)
        if crontab is None:
            return self.last_reload
        if crontab.settings.metrics != self.crontab.settings.metrics:
            self._log.warning(
                "restart_needed",
                "settings.metrics changed: the metrics listener changes at the next start",
            )
        self.crontab = crontab
        self._install_routes(crontab)
        self.pinger.delivery = crontab.settings.pings
        self.alerts.book.watch(crontab.jobs, now=now)
        return self.last_reload

    async def close(self) -> None:
        """Stop listening; give alerts and pings under way ``CLOSE_GRACE`` to finish."""
        self._beat = None
        if self.metrics is not None:
            self.metrics.heartbeat(None)
        if self._control is not None:
            await self._control.close()
        await self.alerts.dispatcher.close(CLOSE_GRACE)
        await self.pinger.close(CLOSE_GRACE)
        if self._metrics_server is not None:
            self._metrics_server.close()
        if self._mailer is not None:
            self._mailer.close()

    def _job(self, name: str) -> Job | None:
        try:
            return self.crontab.job(name)
        except KeyError:
            return None

    # --- the control socket --------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``cronplus status --json`` prints."""
        now, mono = self._clock.now(), self._clock.monotonic()
        engine = self._engine
        states = engine.jobs() if engine is not None else []
        running = sorted(self.attempts.running.values(), key=lambda a: a.started_at)
        return {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": iso_utc(self._started[0]),
            "uptime_s": round(mono - self._started[1], 3),
            "config": str(self.path.absolute()),
            "state": str(self._state),
            "last_reload": {
                "at": iso_utc(self.last_reload.at),
                "why": self.last_reload.why,
                "ok": self.last_reload.ok,
                "error": self.last_reload.error,
            },
            "heartbeat_age_s": None if self._beat is None else round(mono - self._beat, 3),
            "queued": engine.queued if engine is not None else 0,
            "running": [_attempt_row(a, now) for a in running],
            "jobs": [_job_row(s.job, s.next_due, running) for s in states],
        }

    def jobs(self) -> dict[str, Any]:
        """The definitions this daemon runs, disabled ones too, with their next slots:
        what ``cronplus list`` shows when the file on disk is rejected."""
        engine = self._engine
        crontab = engine.crontab if engine is not None else self.crontab
        due = {s.job.name: s.next_due for s in engine.jobs()} if engine is not None else {}
        return {
            "config": str(self.path.absolute()),
            "state": str(self._state),
            "jobs": [_definition(job, due.get(job.name)) for job in crontab.jobs],
        }

    def reload(self) -> dict[str, Any]:
        """``cronplus reload``: the daemon reloads its file now; ``ok`` false, and the
        file's errors in ``rejected``, when it was rejected (the old jobs run on)."""
        if self._reload is None or self._engine is None or self._engine.stopping:
            return {"error": "the daemon is stopping"}
        done = self._reload("cronplus reload")
        return {"ok": done.ok, "config": str(self.path.absolute()), "rejected": done.error}

    async def run_job(self, name: str) -> dict[str, Any]:
        """Run ``name`` now through the engine (its overlap policy holds); answer when done."""
        engine = self._engine
        job = self._job(name)
        if engine is None or engine.stopping:
            return {"error": "the daemon is stopping"}
        if job is None:
            return {"error": f"no such job in {self.path}: {name}"}
        now = self._clock.now()
        slot = now  # to the microsecond: its own run id, as `cronplus run`'s
        runs = engine.start_slots([(job, slot)], now=now, trigger=Trigger.DAEMON)
        if not runs:
            return _summary(job.name, slot, None, Outcome.SKIPPED_OVERLAP)
        run = runs[0]
        if run.task is not None:
            await asyncio.wait([run.task])
        return _summary(job.name, slot, run, Outcome.INTERRUPTED)


def _attempt_row(attempt: Attempt, now: datetime) -> dict[str, Any]:
    return {
        "job": attempt.job,
        "run_id": attempt.slot.run_id,
        "scheduled_at": iso_utc(attempt.slot.scheduled_at),
        "attempt": attempt.attempt,
        "pid": attempt.pid,
        "started_at": iso_utc(attempt.started_at),
        "age_s": round((now - attempt.started_at).total_seconds(), 3),
    }


def _job_row(job: Job, next_due: datetime | None, running: list[Attempt]) -> dict[str, Any]:
    return {
        "job": job.name,
        "next_run": None if next_due is None else iso_utc(next_due),
        "next_run_local": None
        if next_due is None
        else next_due.astimezone(job.timezone).isoformat(),
        "running": sum(1 for attempt in running if attempt.job == job.name),
    }


def _definition(job: Job, next_due: datetime | None) -> dict[str, Any]:
    return {
        "job": job.name,
        "schedule": job.schedule,
        "timezone": job.timezone.key,
        "enabled": job.enabled,
        "next_run": None if next_due is None else iso_utc(next_due),
        "next_run_local": None
        if next_due is None
        else next_due.astimezone(job.timezone).isoformat(),
    }


def _summary(job: str, slot: datetime, run: SlotRun | None, otherwise: Outcome) -> dict[str, Any]:
    """The shape of one entry of ``run-once --json``'s ``runs``."""
    last = run.results[-1] if run is not None and run.results else None
    return {
        "job": job,
        "scheduled_at": iso_utc(slot),
        "outcome": str(last.outcome if last else otherwise),
        "attempts": len(run.results) if run is not None else 0,
        "exit_code": last.exit_code if last else None,
        "duration_s": last.duration_s if last else 0.0,
    }

"""The daemon: the scheduler loop, signals, config reload, and systemd notifications.

The loop keeps no timer per job: it asks the engine for the earliest due instant, sleeps
until then (in slices of at most 30 s, whose ends re-read the wall clock, so clock steps
and suspends are seen within a slice) and ticks. SIGHUP or a change to the file reloads;
SIGTERM and SIGINT stop the jobs within ``shutdown_grace`` and exit 0.
"""

from __future__ import annotations

import asyncio
import heapq
import signal
from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from cronplus.clock import Clock
from cronplus.config import loader
from cronplus.core import collector, plan
from cronplus.core.model import ConfigError, Crontab, Job, RunResult, Slot, iso_utc
from cronplus.core.schedule import Reboot
from cronplus.daemon.observatory import Observatory, Reload
from cronplus.daemon.sdnotify import Notifier
from cronplus.daemon.watch import ConfigWatcher
from cronplus.engine.admission import SlotGate
from cronplus.engine.engine import Engine
from cronplus.engine.events import Fanout
from cronplus.observe.logs import EventLog, internal_errors
from cronplus.run.runner import Runner
from cronplus.state.store import Store

NEXT_RUNS_SHOWN = 10
"""How many jobs' next runs the start-up logs, soonest first."""
PRECISE_AFTER = 0.1
"""Seconds: a shorter sleep ends late by at most 0.1 ms, and is not split in two."""


class StatusFeed:
    """Sends systemd the status line once a loop turn's attempts have started or ended, so
    ``systemctl status`` never counts a job that is done (an idle daemon would otherwise
    show it until its next wake-up, up to 30 s later)."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self._due = False

    def attempt_started(
        self, *, job: Job, slot: Slot, attempt: int, pid: int | None, at: datetime
    ) -> None:
        self._changed()

    def attempt_finished(
        self, *, job: Job, result: RunResult, retry_at: datetime | None, stopped: bool
    ) -> None:
        self._changed()

    def slots_missed(self, *, job: Job, result: RunResult, count: int) -> None:
        return

    def _changed(self) -> None:
        # One datagram per loop turn, not one per attempt of a burst.
        if not self._due and self._daemon.notifier.enabled:
            self._due = True
            asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        self._due = False
        self._daemon.notifier.status(self._daemon.status_line())


class Daemon:
    """One running scheduler over one crontab file and one state store."""

    def __init__(
        self,
        path: Path,
        crontab: Crontab,
        *,
        store: Store,
        clock: Clock,
        env: Mapping[str, str],
        gate: SlotGate | None = None,
    ) -> None:
        self.path = path
        self._store = store
        self._clock = clock
        self._log = EventLog()
        self.notifier = Notifier.from_env(env)
        self.observe = Observatory(path, crontab, store=store, clock=clock, env=env, log=self._log)
        self.engine = Engine(
            crontab,
            store=store,
            runner=Runner(),
            clock=clock,
            base_env=env,
            log=self._log,
            gate=gate,
            events=Fanout([self.observe.events, StatusFeed(self)]),
        )
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._sleeper: asyncio.Task[None] | None = None
        """The loop's task while it sleeps, for ``_wake_up`` to cancel that sleep."""
        self._interrupted = False
        """``_wake_up`` has cancelled the sleep (and nobody else has)."""
        watchdog = self.notifier.watchdog_interval()
        self._cap = min(plan.MAX_SLEEP, watchdog) if watchdog else plan.MAX_SLEEP
        """The longest sleep: DESIGN's 30 s, or less to keep systemd's watchdog fed."""
        self._wall, self._mono = clock.now(), clock.monotonic()
        """The clocks' last reading, by a pass or an idle slice: the base of a jump."""

    async def run(self) -> None:
        # What a thread or asyncio would print raw (a traceback on stderr, once per failed
        # accept) becomes a throttled event, so a log_format: json log stays JSON.
        with internal_errors(self._log, monotonic=self._clock.monotonic):
            await self._run()

    async def _run(self) -> None:
        # systemd shows the last STATUS= it got, a previous run's included, until a new one.
        self.notifier.status(f"starting: {len(self.engine.crontab.jobs)} jobs")
        try:
            await self._start_up()
        finally:
            # What start-up built lives as long as the daemon: out of the collector's sight,
            # a later pass walks only what came after. A failed start-up settles too, so
            # the clean-up after it runs with the collector on.
            collector.settle()
        try:
            await self._serve()
        finally:
            # Also when the run is cancelled (by a program that embeds the daemon): the
            # control socket's file and the metrics port go with it.
            await self.observe.close()
        self._log.info("stopped", "cronplus daemon stopped")

    async def _serve(self) -> None:
        """From the signal handlers to the end of the shutdown."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")
        watcher = ConfigWatcher(self.path, on_change=partial(self.reload, "file change"))
        watcher.start()
        self._log.info(
            "started",
            f"cronplus daemon started with {self.engine.job_count()} jobs from {self.path}",
            config=str(self.path),
            jobs=self.engine.job_count(),
            watcher=watcher.kind,
        )
        self._log_next_runs()
        self.notifier.ready(self.status_line())
        try:
            await self._loop()
        finally:
            watcher.close()
        self.notifier.stopping()
        grace = self.engine.crontab.settings.shutdown_grace
        running = len(self.engine.running())
        self._log.info(
            "stopping", f"stopping: {running} running job(s), grace {grace}", running=running
        )
        await self.engine.shutdown(grace)

    def _log_next_runs(self) -> None:
        """When the first jobs run next, in their own zones: what an operator who just
        started the daemon wants to see; ``cronplus list`` has all of them."""
        # The soonest few, not a sort of every job: start-up is measured (bench/RESULTS.md).
        due = [(s.next_due, s.job, s.schedule) for s in self.engine.jobs() if s.next_due]
        for at, job, schedule in heapq.nsmallest(
            NEXT_RUNS_SHOWN, due, key=lambda each: (each[0], each[1].name)
        ):
            local = at.astimezone(job.timezone)
            reboot = isinstance(schedule, Reboot)
            when = "at this start of the daemon (@reboot), that is" if reboot else "next"
            self._log.info(
                "next_run",
                f"job {job.name} runs {when} at {local.isoformat()} ({job.timezone})",
                job=job.name,
                next_run=iso_utc(at),
            )
        if len(due) > NEXT_RUNS_SHOWN:
            more = len(due) - NEXT_RUNS_SHOWN
            self._log.info("next_run", f"and {more} more jobs: cronplus list shows them all")

    async def _start_up(self) -> None:
        """Record the attempts a crash cut off, schedule every job, start the observers."""
        now = self._clock.now()
        for result in self._store.take_interrupted(now=now):
            self._log.warning(
                "interrupted",
                f"job {result.job}: the attempt for {iso_utc(result.scheduled_at)} was cut off "
                "by a crash or kill of the daemon; it is recorded interrupted and not re-run",
                job=result.job,
                run_id=result.run_id,
                scheduled_at=iso_utc(result.scheduled_at),
                attempt=result.attempt,
            )
        self.engine.load_jobs(now=now, ledger=self._store.ledger())
        await self.observe.start(self.engine, now=now, reload=self.reload)

    async def _loop(self) -> None:
        while not self._stop.is_set():
            now, mono_now = self._clock.now(), self._clock.monotonic()
            self._note_jump(now, mono_now)
            with collector.paused():  # a burst's tasks and processes leave no cycles
                if self.engine.tick(now):
                    # Let the started slots spawn before anything else, their jobs' next
                    # slots included (Timetable.push_deferred).
                    await asyncio.sleep(0)
            self.observe.tick(now, mono_now)
            self._report_alive()
            target, precise = self._next_wake(now)
            await self._sleep(target, precise=precise)

    def _next_wake(self, now: datetime) -> tuple[datetime, bool]:
        """When the loop wakes next: a due instant (a slot or a dead-man deadline: True),
        or the cap from now (False)."""
        due = self.observe.earliest(self.engine.next_due())
        target = plan.sleep_target(due, now=now, cap=self._cap)
        return target, target == due

    def _report_alive(self) -> None:
        if self.notifier.enabled:  # the status line is for systemd only; skip the work
            self.notifier.alive(self.status_line())

    def _jump(self, now: datetime, mono_now: float) -> timedelta | None:
        """How far the wall clock jumped since the clocks' last reading, if it did."""
        return plan.clock_jump(
            wall_before=self._wall, wall_now=now, mono_before=self._mono, mono_now=mono_now
        )

    def _note_jump(self, now: datetime, mono_now: float) -> None:
        jump = self._jump(now, mono_now)
        self._wall, self._mono = now, mono_now
        if jump is None:
            return
        direction = "forward" if jump.total_seconds() > 0 else "back"
        self._log.warning(
            "clock_jump",
            f"the wall clock moved {direction} by {abs(jump)} (suspend, NTP or a manual step); "
            + (
                "slots passed meanwhile follow each job's catchup"
                if direction == "forward"
                else "slots already handled are not run again"
            ),
            seconds=round(jump.total_seconds(), 3),
        )

    async def _sleep(self, target: datetime, *, precise: bool) -> None:
        """Sleep until ``target`` (a due instant, ``precise``), or while nothing comes due
        within a slice; ``_wake_up`` cuts it short.

        The loop's own task sleeps, and ``_wake_up`` cancels that sleep: an idle daemon's
        whole cost is its wake-ups, and a sleep in a task of its own, awaited with
        ``asyncio.wait``, took five turns of the event loop (five ``epoll_wait`` calls) per
        wake-up instead of two (bench/RESULTS.md, "daemon").
        """
        if not self._wake.is_set():
            task = asyncio.current_task()
            assert task is not None  # the loop runs as a task
            self._sleeper = task
            try:
                await self._nap(target, precise=precise)
            except asyncio.CancelledError:
                # Only the cancel that _wake_up asked for ends here; any other goes on.
                if not self._interrupted or task.uncancel() > 0:
                    raise
            finally:
                self._sleeper = None
                self._interrupted = False
        self._wake.clear()

    async def _nap(self, target: datetime, *, precise: bool) -> None:
        cap = self._cap
        if not precise:
            await self._clock.sleep_while(self._idle_slice, every=cap)
            return
        ahead = (target - self._clock.now()).total_seconds()
        if ahead > PRECISE_AFTER:
            # Linux ends a long poll timeout up to 0.1 % late (0.5 % when niced: the
            # kernel's select_estimate_accuracy), 30 ms after 30 s. So stop 1 % short, then
            # sleep the rest, whose slack is microseconds. A target is at most 1 % past the
            # cap (plan.sleep_target), so the first sleep is within it.
            early = target - timedelta(seconds=ahead / 100)
            await self._clock.sleep_until(early, max_seconds=cap)
        await self._clock.sleep_until(target, max_seconds=cap, precise=True)

    def _idle_slice(self) -> bool:
        """The end of a slice of an idle sleep, run from the clock's timer: the clocks are
        read and the loop is alive, as in a pass; sleep on unless the wall clock jumped or
        something comes due within the next slice, which the loop's pass then handles.

        No task is resumed for it, which took a third to a half off an idle wake-up's CPU,
        and a tick would find nothing due anyway (docs/daemon.md, "The loop").
        """
        now, mono_now = self._clock.now(), self._clock.monotonic()
        self.observe.beat(mono_now)
        self._report_alive()
        if self._jump(now, mono_now) is not None:
            return False  # the pass's _note_jump reports it, from the same reading before
        self._wall, self._mono = now, mono_now
        _, due_soon = self._next_wake(now)
        return not due_soon

    def _log_reboot_waits(self, added: list[str], changed: list[str], *, why: str) -> None:
        """A ``@reboot`` job runs at a start of the daemon, never for a reload: say so for
        each one the reload added or changed that has no slot left in this start."""
        touched = {*added, *changed}
        if not touched:
            return
        for state in self.engine.jobs():
            name = state.job.name
            if name in touched and isinstance(state.schedule, Reboot) and not state.next_due:
                how = "added" if name in added else "changed"
                self._log.info(
                    "reboot_waits",
                    f"job {name} runs at daemon start (@reboot): the reload ({why}) that "
                    f"{how} it does not run it; the next start of the daemon will",
                    job=name,
                )

    def _wake_up(self) -> None:
        self._wake.set()
        if self._sleeper is not None and not self._interrupted:
            self._interrupted = True
            self._sleeper.cancel()

    def status_line(self) -> str:
        """``STATUS=``: the jobs, the attempts whose processes run now, the next slot."""
        upcoming = self.engine.upcoming()
        running = len(self.observe.attempts.running)
        text = f"{self.engine.job_count()} jobs, {running} running"
        if upcoming:
            text += f", next {upcoming[1]} at {iso_utc(upcoming[0])}"
        return text

    def stop(self, why: str) -> None:
        self._log.info("stop_requested", f"{why}: stopping", signal=why)
        self._stop.set()
        self._wake_up()

    def reload(self, why: str) -> Reload:
        """Parse and validate the file, then swap; a bad file keeps the old jobs running.

        systemd hears ``RELOADING=1`` before and ``READY=1`` after, whatever the reload's
        outcome (a rejected file leaves the service running its old jobs), so ``systemctl
        status`` shows the reload and ``Type=notify-reload`` would wait for it.
        """
        self.notifier.reloading(monotonic_s=self._clock.monotonic())
        try:
            return self._reload(why)
        finally:
            self.notifier.ready(self.status_line())

    def _reload(self, why: str) -> Reload:
        try:
            crontab = loader.load(self.path)
        except ConfigError as error:
            self._log.error(
                "reload_failed",
                f"reload ({why}) rejected, the old jobs keep running:\n{error}",
                config=str(self.path),
                errors=len(error.issues),
            )
            return self.observe.reloaded(None, why=why, error=str(error))
        now = self._clock.now()
        old_state = self.engine.crontab.settings.state
        added, removed, changed = self.engine.reload(crontab, now=now)
        done = self.observe.reloaded(crontab, why=why, error=None)
        self._log.info(
            "reloaded",
            f"reloaded {self.path} ({why}): {len(added)} added, {len(removed)} removed, "
            f"{len(changed)} changed",
            added=",".join(added) or None,
            removed=",".join(removed) or None,
            changed=",".join(changed) or None,
        )
        self._log_reboot_waits(added, changed, why=why)
        if crontab.settings.state != old_state:
            self._log.warning(
                "restart_needed",
                "settings.state changed: the daemon keeps the database it opened until a restart",
            )
        self._wake_up()
        return done

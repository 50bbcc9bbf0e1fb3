"""The engine: plan -> run -> record, for the daemon loop, ``run-once`` and ``run`` alike.

It owns the runs in flight, the ``max_concurrent`` queue, retries and overlap; which job is
due when is the ``Timetable``'s. Decisions come from ``plan.py``; processes from
``runner.py``; time from a ``Clock``; records go to a ``Store``. The daemon calls
``tick(now)`` from its loop, so a slot is due in exactly the same way whether the daemon or
a test asks.
"""

from __future__ import annotations

import asyncio
import random
import traceback
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from cronplus.clock import Clock
from cronplus.core import plan
from cronplus.core.model import (
    Crontab,
    Job,
    Outcome,
    Output,
    Overlap,
    RunResult,
    Slot,
    Trigger,
    iso_utc,
)
from cronplus.core.schedule import Reboot
from cronplus.engine import runlog
from cronplus.engine.admission import Limiter, LocalGate, SlotGate
from cronplus.engine.events import NO_EVENTS, EngineEvents
from cronplus.engine.inflight import InFlight, Started
from cronplus.engine.output import RunOutput
from cronplus.engine.slotrun import SlotRun
from cronplus.engine.timetable import JobState, Timetable, compile_job
from cronplus.observe.logs import EventLog
from cronplus.run import secrets
from cronplus.run.runner import (
    ProcessResult,
    Runner,
    RunningProcess,
    command_for,
    kept_text,
    passed_on,
)
from cronplus.state.store import Store
from cronplus.targets.dispatch import Dispatcher, RunningTarget, secrets_of

ONE_SECOND = timedelta(seconds=1)
"""Slots fall on whole seconds, so two slots of one job are at least this far apart."""


class _Fenced(Exception):
    """The slot gate refused an attempt at its start: the slot is another process's."""


def _in_flight_row(noted: asyncio.Future[int] | None) -> int | None:
    """The id of an attempt's in-flight row, if one was made; a note still to come is
    cancelled, so that none is."""
    if noted is None:
        return None
    if not noted.done():
        noted.cancel()
        return None
    if noted.cancelled() or noted.exception() is not None:
        return None
    return noted.result()


def _trigger(state: JobState, slot: datetime, *, now: datetime) -> Trigger:
    """How a slot the timetable found due started: ``@reboot``'s is the daemon's start,
    however late its first tick came."""
    if isinstance(state.schedule, Reboot):
        return Trigger.START
    return Trigger.SCHEDULE if now - slot < plan.ON_TIME else Trigger.CATCHUP


class Engine:
    """Drives jobs: decides what is due, starts it within limits, retries and records."""

    def __init__(
        self,
        crontab: Crontab,
        *,
        store: Store,
        runner: Runner,
        clock: Clock,
        base_env: Mapping[str, str],
        log: EventLog,
        rng: random.Random | None = None,
        events: EngineEvents = NO_EVENTS,
        gate: SlotGate | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.crontab = crontab
        self._gate: SlotGate = gate or LocalGate()
        self._events = events
        self._store = store
        self._in_flight = InFlight(store)
        self._runner = runner
        self._dispatcher = dispatcher or Dispatcher(env=base_env)
        self._clock = clock
        self._base_env = passed_on(base_env)  # filtered once, copied per attempt
        self._log = log
        self._rng = rng or random.Random()
        self._limiter = Limiter(crontab.settings.max_concurrent)
        self._table = Timetable()
        self._runs: set[SlotRun] = set()
        self._hide_base = secrets.Redactor(self._base_env)
        self._hiders: dict[str, tuple[Job, secrets.Redactor]] = {}
        self.stopping = False

    # --- the timetable ----------------------------------------------------------------

    def load_jobs(self, *, now: datetime, ledger: Mapping[str, datetime]) -> None:
        """Start scheduling every enabled job; a job the ledger knows resumes from it.

        A job the ledger does not know enters it now: if the daemon stops before the job's
        first slot, the next start catches up the slots it missed meanwhile (with no row
        they would count as never due)."""
        self._table.load(self.crontab.jobs, now=now, ledger=ledger)
        jobs = self.crontab.jobs
        entering = [(job.name, now) for job in jobs if job.enabled and job.name not in ledger]
        if entering:
            self._store.advance_ledger(entering)

    def next_due(self) -> datetime | None:
        """The earliest instant any job is due."""
        return self._table.next_due()

    def upcoming(self) -> tuple[datetime, str] | None:
        """The earliest due instant and its job."""
        return self._table.upcoming()

    def jobs(self) -> list[JobState]:
        return self._table.states()

    def job_count(self) -> int:
        return len(self._table)

    @property
    def queued(self) -> int:
        return self._limiter.queued

    def running(self) -> list[SlotRun]:
        return [run for run in self._runs if run.alive]

    # --- the pass ------------------------------------------------------------------

    def tick(self, now: datetime) -> list[SlotRun]:
        """Start everything due at ``now``; the ledger is committed before anything starts.

        The next slot of a job started on time is found after the starts (``next_due``).
        """
        decisions: list[tuple[JobState, plan.Pending, datetime | None]] = []
        for when, state in self._table.due(now):
            after: datetime | None = None
            # On time and the only slot due (under a second late there can be no later one:
            # slots are whole seconds apart): what plan.pending decides, without its
            # searches (a burst's time per job).
            on_time = now - when < ONE_SECOND and when > state.handled
            if not on_time:
                after = state.schedule.next_after(when)
                on_time = after is not None and after > now and now - when < plan.ON_TIME
            if on_time:
                decision = plan.Pending(run=(when,), missed=0, handled=when)
            else:
                decision = plan.pending(state.job, state.schedule, handled=state.handled, now=now)
                after = None
            decisions.append((state, decision, after))
        ledger = [(s.job.name, d.handled) for s, d, _ in decisions if d.handled is not None]
        if ledger:  # an idle wake-up writes nothing
            self._store.advance_ledger(ledger)
        started: list[SlotRun | None] = []
        for state, decision, following in decisions:
            self._report_missed(state.job, decision, now=now)
            started.extend(self._launch_in_order(state, decision.run, now=now))
            if decision.handled is not None:
                state.handled = max(state.handled, decision.handled)
            if following is None:
                self._table.push_later(state)
            else:
                self._table.push(state, following)
        return [run for run in started if run is not None]

    def start_slots(
        self,
        slots: Iterable[tuple[Job, datetime]],
        *,
        now: datetime,
        trigger: Trigger = Trigger.RUN,
    ) -> list[SlotRun]:
        """Run given slots now, outside the schedule (``run-once``, ``run JOB``, a cluster's
        takeover); ``trigger`` says which in history."""
        runs: list[SlotRun] = []
        for job, slot in slots:
            state = self._table.get(job.name) or JobState(
                job=job, schedule=compile_job(job), handled=now
            )
            run = self._launch(state, slot, now=now, trigger=trigger)
            if run is not None:
                runs.append(run)
        return runs

    def _launch_in_order(
        self, state: JobState, slots: tuple[datetime, ...], *, now: datetime
    ) -> list[SlotRun | None]:
        """Launch several slots of one job; unless ``overlap: allow``, one after another.

        Catch-up can make several slots due at once; under ``forbid`` or ``replace`` they
        run in order instead of skipping or killing each other.
        """
        runs: list[SlotRun | None] = []
        previous: SlotRun | None = None
        for slot in slots:
            trigger = _trigger(state, slot, now=now)
            if previous is not None and state.job.overlap is not Overlap.ALLOW:
                run: SlotRun | None = self._start_run(
                    state, slot, waits_for=[previous], trigger=trigger
                )
            else:
                run = self._launch(state, slot, now=now, trigger=trigger)
            runs.append(run)
            previous = run or previous
        return runs

    def _launch(
        self, state: JobState, slot: datetime, *, now: datetime, trigger: Trigger
    ) -> SlotRun | None:
        job = state.job
        self._drop_pending_retries(state, slot)
        alive = [run for run in state.runs if run.alive]
        action = plan.overlap_action(job.overlap, alive=bool(alive))
        if action is plan.OverlapAction.SKIP:
            self._record_skip(job, slot, now=now, busy=alive[0])
            return None
        if action is plan.OverlapAction.REPLACE_THEN_START:
            for old in alive:
                self._stop(old, Outcome.KILLED, f"replaced by the slot {iso_utc(slot)}", job)
            return self._start_run(state, slot, waits_for=alive, trigger=trigger)
        return self._start_run(state, slot, waits_for=[], trigger=trigger)  # allow: both run

    def _start_run(
        self, state: JobState, slot: datetime, *, waits_for: list[SlotRun], trigger: Trigger
    ) -> SlotRun:
        job = state.job
        run = SlotRun(job=job, slot=slot, trigger=trigger)
        if job.output is Output.LOG:
            run.output = RunOutput(self._log, job, Slot(job=job.name, scheduled_at=slot))
        run.task = asyncio.create_task(self._claimed(run, state, waits_for=waits_for))
        state.runs.append(run)
        self._runs.add(run)
        run.task.add_done_callback(lambda _: self._forget(state, run))
        return run

    def _forget(self, state: JobState, run: SlotRun) -> None:
        self._runs.discard(run)
        if run in state.runs:
            state.runs.remove(run)

    def _drop_pending_retries(self, state: JobState, slot: datetime) -> None:
        for run in state.runs:
            if run.waiting_retry and run.task is not None:
                self._log.warning(
                    "retry_dropped",
                    f"job {run.job.name}: pending retry dropped, its next slot has come",
                    job=run.job.name,
                    run_id=Slot(job=run.job.name, scheduled_at=run.slot).run_id,
                    scheduled_at=iso_utc(run.slot),
                    next_slot=iso_utc(slot),
                )
                run.task.cancel()

    def _stop(self, run: SlotRun, outcome: Outcome, reason: str, job: Job) -> None:
        run.stop_as, run.stop_reason = outcome, reason
        if run.process is not None:
            run.process.terminate(job.kill_grace.total_seconds())

    def fence_slot(self, job: str, slot: datetime, *, reason: str) -> None:
        """This process lost the slot to another (a cluster node's lease ran out): its
        running attempt stops as ``fenced``, a retry or start waiting here is dropped."""
        for run in list(self._runs):
            if run.job.name != job or run.slot != slot or run.stop_as is not None:
                continue
            if run.process is not None:
                self._stop(run, Outcome.FENCED, reason, run.job)
            elif run.task is not None:
                run.task.cancel()

    def stop_slot(self, job: str, slot: datetime, *, reason: str) -> None:
        """Stop the run of one slot as ``killed`` (another node's slot replaces it)."""
        for run in list(self._runs):
            if run.job.name == job and run.slot == slot and run.stop_as is None:
                self._stop(run, Outcome.KILLED, reason, run.job)

    # --- one slot: attempts and retries --------------------------------------------

    async def _claimed(self, run: SlotRun, state: JobState, *, waits_for: list[SlotRun]) -> None:
        try:
            run.claiming = True
            claim = await self._gate.claim(run.job, run.slot)
            run.claiming = False
            if claim is None:
                return  # another node runs it, or this one may not (the gate logs why)
            run.claim = claim
            try:
                await self._run_slot(run, state, waits_for=waits_for)
            finally:
                claim.release(started=bool(run.results))
        except Exception as error:  # a bug or a failing store: nobody awaits this task
            self._crashed(run, error)

    async def _run_slot(self, run: SlotRun, state: JobState, *, waits_for: list[SlotRun]) -> None:
        for old in waits_for:
            if old.task is not None:
                run.waited = True
                await asyncio.wait([old.task])
        if run.job.jitter > timedelta(0):
            run.waited = True
            delay = self._rng.uniform(0, run.job.jitter.total_seconds())
            await self._sleep_until(self._clock.now() + timedelta(seconds=delay))
        # A Celery task or RQ job still queued at the next slot is stale: it expires then.
        expires = state.schedule.next_after(run.slot) if run.job.target is not None else None
        attempt = 1
        while True:
            run.attempt = attempt
            try:
                result = await self._attempt(run, attempt, expires=expires)
            except _Fenced:
                return  # the slot is another's now (the gate logged why)
            stopped = run.stop_as is not None
            if result.outcome.ok or stopped:
                self._events.attempt_finished(
                    job=run.job, result=result, retry_at=None, stopped=stopped
                )
                return
            retry = plan.retry_at(
                run.job.retry,
                failed_attempts=attempt,
                finished_at=result.finished_at,
                next_slot=state.schedule.next_after(run.slot),
            )
            runlog.log_failure(self._log, run.job, result, retry_at=retry)
            self._events.attempt_finished(job=run.job, result=result, retry_at=retry, stopped=False)
            if retry is None:
                return
            run.attempt, run.waiting_retry = attempt + 1, True
            await self._sleep_until(retry)
            run.waiting_retry = False
            attempt += 1

    async def _sleep_until(self, when: datetime) -> None:
        while self._clock.now() < when:
            await self._clock.sleep_until(when, max_seconds=plan.MAX_SLEEP)

    async def _attempt(
        self, run: SlotRun, attempt: int, *, expires: datetime | None = None
    ) -> RunResult:
        job = run.job
        slot = Slot(job=job.name, scheduled_at=run.slot)
        if self._limiter.full:
            run.waited = True
            ranked = f", priority {job.priority}" if job.priority else ""
            self._log.info(
                "queued",
                f"job {job.name} waits for a free place"
                f" (max_concurrent {self._limiter.limit}{ranked})",
                job=job.name,
                run_id=slot.run_id,
                queued=self._limiter.queued + 1,
                priority=job.priority or None,
            )
        await self._limiter.acquire(priority=job.priority)
        hide = self._redactor(job)
        try:
            claim = run.claim  # set by _claimed before any attempt
            if claim is not None and await claim.confirm(attempt, waited=run.waited) is not None:
                raise _Fenced
            run.started_at = started_at = self._clock.now()
            process: RunningProcess | RunningTarget
            if job.target is None:
                process = self._runner.start(command_for(job, slot, attempt, self._base_env))
            else:
                process = self._dispatcher.start(
                    job, slot, attempt, now=started_at, expires=expires
                )
            process.mask_secrets(hide)
            if run.output is not None:
                process.send_lines(run.output.attempt(attempt))
            run.process = process
            runlog.log_started(self._log, job, slot, attempt, pid=process.pid, how=run.trigger)
            # The rest waits for the next loop turn: the other slots due now spawn first.
            await asyncio.sleep(0)
            run.noted = noted = self._in_flight.note(
                Started(
                    job=job.name,
                    scheduled_at=run.slot,
                    attempt=attempt,
                    started_at=started_at,
                    pid=process.pid,
                )
            )
            self._events.attempt_started(
                job=job, slot=slot, attempt=attempt, pid=process.pid, at=started_at
            )
            outcome = await process.wait()
            run.process = None
        finally:
            self._limiter.release()
        run.ended = result = self._result(run, attempt, started_at, outcome, hide)
        attempt_id = await noted
        self._store.end_attempt(attempt_id, result, keep=self.crontab.settings.history_keep)
        run.noted = run.ended = run.started_at = None
        run.results.append(result)
        if result.outcome.ok:
            runlog.log_succeeded(self._log, job, result)
        return result

    def _redactor(self, job: Job) -> secrets.Redactor:
        """The job's ``Redactor``, kept while the job is unchanged: the secrets of its
        ``env`` are found once, those of the daemon's environment once for all jobs."""
        known = self._hiders.get(job.name)
        if known is None or known[0] is not job:
            hide = secrets.Redactor(job.env, secrets_of(job.target), base=self._hide_base)
            known = self._hiders[job.name] = (job, hide)
        return known[1]

    def _result(
        self,
        run: SlotRun,
        attempt: int,
        started_at: datetime,
        process: ProcessResult,
        hide: secrets.Redactor,
    ) -> RunResult:
        outcome, reason = process.outcome, process.reason
        if run.stop_as is not None and not outcome.ok:
            outcome, reason = run.stop_as, run.stop_reason
        # Everything shown later (logs, history, alerts) comes from this record; the
        # runner masked the output before cutting the tail from it.
        job = run.job
        shown = job.output is Output.LOG  # the alerts' stdout tail, whatever history keeps
        keep = job.output_keep if shown else 0
        return RunResult(
            job=run.job.name,
            scheduled_at=run.slot,
            attempt=attempt,
            started_at=started_at,
            finished_at=self._clock.now(),
            outcome=outcome,
            exit_code=process.exit_code,
            signal=process.signal,
            duration_s=round(process.duration_s, 6),
            stderr_tail=process.stderr_tail,
            stdout_tail=process.stdout_tail if shown else "",
            reason=hide(reason),
            stdout=kept_text(process.stdout, keep=keep, size=process.stdout_size) if keep else "",
            stderr=kept_text(process.stderr, keep=keep, size=process.stderr_size) if keep else "",
            trigger=run.trigger,
            response=process.response,
        )

    # --- a run that failed inside cronplus --------------------------------------------

    def _crashed(self, run: SlotRun, error: Exception) -> None:
        """An exception ended the run's task: log it with the run, stop what it started,
        and record the attempt it was on as failed, unless history has that one already
        (then only the work after it failed). The daemon goes on."""
        job, hide = run.job, self._redactor(run.job)
        reason = hide(f"cronplus failed while running it: {type(error).__name__}: {error}")
        if run.process is not None:
            run.process.terminate(job.kill_grace.total_seconds())  # nobody will wait for it
        where = hide("".join(traceback.format_exception(error)).rstrip())
        runlog.log_crashed(
            self._log, job, run.slot, attempt=run.attempt, reason=reason, where=where
        )
        if run.results and run.results[-1].attempt == run.attempt:
            return
        result = runlog.crashed(
            job,
            run.slot,
            attempt=run.attempt,
            started_at=run.started_at,
            ended=run.ended,
            now=self._clock.now(),
            reason=reason,
        )
        self._record_crash(run, result)

    def _record_crash(self, run: SlotRun, result: RunResult) -> None:
        noted, run.noted = run.noted, None
        keep = self.crontab.settings.history_keep
        try:
            row = _in_flight_row(noted)
            if row is None:
                self._store.record(result, keep=keep)
            else:
                self._store.end_attempt(row, result, keep=keep)
            run.results.append(result)
            self._events.attempt_finished(job=run.job, result=result, retry_at=None, stopped=False)
        except Exception as error:  # the store or an observer that failed the run fails again
            why = self._redactor(run.job)(f"{type(error).__name__}: {error}")
            runlog.log_unrecorded(self._log, result, why=why)

    # --- stopping ------------------------------------------------------------------

    async def shutdown(self, grace: timedelta) -> None:
        """Stop every run: SIGTERM each job group, SIGKILL after ``grace``; record them."""
        self.stopping = True
        runs = list(self._runs)
        for run in runs:
            if run.process is not None:
                run.stop_as, run.stop_reason = Outcome.INTERRUPTED, "the daemon stopped"
                run.process.terminate(grace.total_seconds())
            elif run.task is not None:
                run.task.cancel()
        tasks = [run.task for run in runs if run.task is not None]
        if tasks:
            await asyncio.wait(tasks)
        self._dispatcher.close()

    async def wait_idle(self) -> None:
        """Wait until every run started so far has finished (with its retries)."""
        while tasks := [run.task for run in self._runs if run.task is not None]:
            await asyncio.wait(tasks)

    # --- reload --------------------------------------------------------------------

    def reload(self, crontab: Crontab, *, now: datetime) -> tuple[list[str], list[str], list[str]]:
        """Swap in a new, already validated crontab; return (added, removed, changed) names.

        Unchanged jobs keep their ledger position, pending retries and running processes.
        A changed job keeps its running process and starts its new schedule from now; a
        removed job's running process finishes, its pending retries are dropped.
        """
        old = {state.job.name: state.job for state in self._table.states()}
        new = {job.name: job for job in crontab.jobs if job.enabled}
        added = [name for name in new if name not in old]
        removed = [name for name in old if name not in new]
        changed = [name for name in new if name in old and new[name] != old[name]]
        for name in removed:
            self._drop_pending_retries(self._table.remove(name), now)
            self._hiders.pop(name, None)
        for name in changed:
            self._table.replace(new[name], now=now)
        for name in added:
            self._table.add(new[name], handled=now)
        if added:  # as at a start: a new job is in the ledger from now
            self._store.advance_ledger([(name, now) for name in added])
        self.crontab = crontab
        self._limiter.set_limit(crontab.settings.max_concurrent)
        return added, removed, changed

    # --- records of slots that did not run -----------------------------------------

    def _record_skip(self, job: Job, slot: datetime, *, now: datetime, busy: SlotRun) -> None:
        result = runlog.skipped(job, slot, busy_slot=busy.slot, now=now)
        self._store.record(result, keep=self.crontab.settings.history_keep)
        self._events.slots_missed(job=job, result=result, count=1)
        runlog.log_skipped(self._log, job, result)

    def _report_missed(self, job: Job, decision: plan.Pending, *, now: datetime) -> None:
        result = runlog.missed(job, decision, now=now)
        if result is None:
            return
        self._store.record(result, keep=self.crontab.settings.history_keep)
        self._events.slots_missed(job=job, result=result, count=decision.missed)
        runlog.log_missed(self._log, job, decision)

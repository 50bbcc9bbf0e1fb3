"""The commands that start runs: ``run-once`` and ``run`` (``history`` reads them)."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cronplus.cli.context import (
    EXIT_JOB_FAILED,
    Context,
    config_option,
    log_format_option,
    now_utc,
    open_store,
    parse_time,
    pass_context,
    select_jobs,
)
from cronplus.core.model import Crontab, Job, RunResult, Trigger, iso_utc
from cronplus.core.plan import first_in_minute
from cronplus.engine.timetable import compile_job
from cronplus.observe import logs

if TYPE_CHECKING:
    from cronplus.engine.slotrun import SlotRun


@click.command("run-once")
@config_option
@log_format_option
@click.option("--at", "at_text", help="Run the minute that holds this time (default: now).")
@click.option("--job", "job_names", multiple=True, help="Only this job (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print what would run; run nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def run_once(
    ctx: Context,
    config_path: Path | None,
    log_format: str | None,
    at_text: str | None,
    job_names: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
) -> None:
    """One scheduling pass: run every job with a slot in the minute that holds --at."""
    crontab = ctx.load(config_path)
    ctx.setup_logs(crontab, log_format)
    at = parse_time(at_text) if at_text else now_utc()
    slots = []
    for job in select_jobs(crontab, job_names):
        slot = first_in_minute(compile_job(job), at) if job.enabled else None
        if slot is not None:
            slots.append((job, slot))
    if dry_run:
        _print_dry_run(at, slots, as_json)
        return
    runs = _run_slots(crontab, slots, at=at, trigger=Trigger.RUN_ONCE)
    _finish_runs(at, runs, as_json)


@click.command("run")
@config_option
@log_format_option
@click.argument("job_name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--via-daemon", is_flag=True, help="Ask the running daemon (alerts, pings too).")
@pass_context
def run_job(
    ctx: Context,
    config_path: Path | None,
    log_format: str | None,
    job_name: str,
    as_json: bool,
    via_daemon: bool,
) -> None:
    """Run one job now, through the same path as the daemon (env, timeout, retries, history)."""
    if via_daemon:  # the daemon runs its own definition: a file rejected on disk is no bar
        reading = ctx.load_for_reading(config_path)
        if reading.crontab is not None:
            select_jobs(reading.crontab, [job_name])  # a typo, with the close name
        answer = reading.ask_daemon({"command": "run", "job": job_name}, timeout=None)
        _print_summaries(now_utc(), [answer], as_json)
        return
    crontab = ctx.load(config_path)
    ctx.setup_logs(crontab, log_format)
    (job,) = select_jobs(crontab, [job_name])
    # The instant to the microsecond: two runs in one second (or a run in the second of a
    # scheduled slot) are two runs, each with its own run id, not one run's attempts.
    now = now_utc()
    runs = _run_slots(crontab, [(job, now)], trigger=Trigger.RUN)
    if (unsent := _unsent(job)) is not None:
        click.echo(unsent, err=True)
    _finish_runs(now, runs, as_json)


def _unsent(job: Job) -> str | None:
    """What ``run`` (not ``--via-daemon``) did not send for ``job``, said plainly: the
    alerts and pings are the daemon's, and "does my alert work?" must not fail quietly."""
    routes = sorted({*job.on_failure, *job.on_retry, *job.on_recovery, *job.on_missed})
    unsent = [f"alerts (to {', '.join(routes)})"] if routes else []
    unsent += ["healthchecks pings"] if job.ping_url else []
    if not unsent:
        return None
    return (
        f"note: cronplus run sends no {' or '.join(unsent)}: the daemon sends them;"
        f" to test them, run it through the daemon: cronplus run {job.name} --via-daemon"
    )


def _run_slots(
    crontab: Crontab,
    slots: list[tuple[Job, datetime]],
    *,
    trigger: Trigger,
    at: datetime | None = None,
) -> list[SlotRun]:
    """Run ``slots`` to their end. With ``at`` (``run-once --at``), all of the run's time
    (retry instants, jitter, history rows) is on a timeline that starts at ``at`` and moves
    at real speed, so a retry is due before the job's next slot on that timeline too."""
    # The engine, asyncio and the runner are imported by the commands that run jobs only:
    # `validate` is most of its time importing, and needs none of them.
    import asyncio

    from cronplus.clock import CorrectedClock, SystemClock
    from cronplus.engine.engine import Engine
    from cronplus.run.runner import Runner

    async def run() -> list[SlotRun]:
        store = open_store(crontab)
        try:
            clock = CorrectedClock(SystemClock())
            if at is not None:
                clock.offset = clock.now() - at
            engine = Engine(
                crontab,
                store=store,
                runner=Runner(),
                clock=clock,
                base_env=os.environ,
                log=logs.EventLog(),
            )
            runs = engine.start_slots(slots, now=clock.now(), trigger=trigger)
            await engine.wait_idle()
            return runs
        finally:
            store.close()

    return asyncio.run(run())


def _print_dry_run(at: datetime, slots: list[tuple[Job, datetime]], as_json: bool) -> None:
    if as_json:
        runs = [{"job": job.name, "scheduled_at": iso_utc(slot)} for job, slot in slots]
        click.echo(json.dumps({"at": iso_utc(at), "dry_run": True, "runs": runs}, indent=2))
        return
    for job, slot in slots:
        local = slot.astimezone(job.timezone).isoformat()
        click.echo(f"would run {job.name} for {iso_utc(slot)} ({local} local)")
    if not slots:
        click.echo(f"nothing is due in the minute of {iso_utc(at)}")


def _finish_runs(at: datetime, runs: list[SlotRun], as_json: bool) -> None:
    _print_summaries(at, [_summary(run) for run in runs], as_json)


def _print_summaries(at: datetime, summary: list[dict[str, object]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"at": iso_utc(at), "runs": summary}, indent=2))
    else:
        for row in summary:
            ended = row.get("response") or f"exit {row['exit_code']}"
            click.echo(
                f"{row['job']}: {row['outcome']} after {row['attempts']} attempt(s), "
                f"{ended}, {row['duration_s']}s (slot {row['scheduled_at']})"
            )
        if not summary:
            click.echo(f"nothing is due in the minute of {iso_utc(at)}")
    if any(row["outcome"] != "succeeded" for row in summary):
        sys.exit(EXIT_JOB_FAILED)


def _summary(run: SlotRun) -> dict[str, object]:
    last: RunResult | None = run.results[-1] if run.results else None
    return {
        "job": run.job.name,
        "scheduled_at": iso_utc(run.slot),
        "outcome": str(last.outcome) if last else "interrupted",
        "attempts": len(run.results),
        "exit_code": last.exit_code if last else None,
        "duration_s": last.duration_s if last else 0.0,
        "response": last.response or None if last else None,
    }

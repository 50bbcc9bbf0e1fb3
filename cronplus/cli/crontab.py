"""The commands that read the crontab: ``validate``, ``list`` and ``next``; and ``schema``,
the JSON Schema of the file."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

from cronplus.cli.context import (
    Context,
    Reading,
    config_option,
    format_table,
    now_utc,
    parse_time,
    pass_context,
    select_jobs,
)
from cronplus.core.model import Job, UsageError, iso_utc
from cronplus.core.schedule import Reboot, Schedule
from cronplus.core.words import AT_START
from cronplus.engine.timetable import compile_job

MAX_UNTIL_FIRES = 100_000


@click.command()
@config_option
@pass_context
def validate(ctx: Context, config_path: Path | None) -> None:
    """Check the crontab; print OK or every error (exit 2)."""
    crontab = ctx.load(config_path)
    click.echo(f"OK: {len(crontab.jobs)} jobs")


@click.command()
def schema() -> None:
    """Print the crontab's JSON Schema (draft-07), for an editor: save it and point the
    file's ``# yaml-language-server: $schema=`` line or the editor's settings at it."""
    from cronplus.config.loader import SCHEMA_PATH

    click.echo(SCHEMA_PATH.read_text(encoding="utf-8"), nl=False)


@click.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def list_jobs(ctx: Context, config_path: Path | None, as_json: bool) -> None:
    """A table of jobs: schedule, its meaning, zone, next run and last outcome. When the file
    on disk is rejected: the running daemon's jobs, else the names the state knows."""
    reading = ctx.load_for_reading(config_path)
    if reading.crontab is not None:
        now = now_utc()
        last = _last_outcomes(reading)
        rows = [_job_row(job, now, last.get(job.name)) for job in reading.crontab.jobs]
    else:
        rows = _known_rows(reading)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    headers = ["JOB", "SCHEDULE", "MEANING", "ZONE", "NEXT (LOCAL)", "NEXT (UTC)", "LAST"]
    keys = ["job", "schedule", "meaning", "timezone", "next_local", "next_utc", "last_outcome"]
    table = [[str(row[key] or "-") for key in keys] for row in rows]
    click.echo(format_table(headers, table))


def _last_outcomes(reading: Reading) -> dict[str, str]:
    store = reading.open_store()
    try:
        return {name: str(outcome) for name, (outcome, _) in store.last_outcomes().items()}
    finally:
        store.close()


def _known_rows(reading: Reading) -> list[dict[str, object]]:
    """For a rejected file: the definitions the running daemon runs, else (no daemon) the
    job names the state database knows, from its history and ledger, with their last
    outcome. The rows keep the usual keys; what is unknown is null."""
    from cronplus.observe import control

    try:
        answer = control.ask(control.socket_path(reading.state), {"command": "jobs"}, timeout=10)
    except control.NoDaemon as error:
        answer = {"error": str(error)}
    last = {} if reading.cluster else _last_outcomes(reading)
    if "error" not in answer:
        click.echo(f"(the jobs the running daemon runs, as it loaded {answer['config']})", err=True)
        return [_daemon_row(job, last.get(job["job"])) for job in answer["jobs"]]
    names = set(last) if reading.cluster else set(last) | _ledger_names(reading)
    click.echo(
        f"({answer['error']}: only the names of the jobs the state database knows)", err=True
    )
    return [_named_row(name, last.get(name)) for name in sorted(names)]


def _ledger_names(reading: Reading) -> set[str]:
    store = reading.open_store()
    try:
        return set(store.ledger())
    finally:
        store.close()


def _daemon_row(job: dict[str, Any], last: str | None) -> dict[str, object]:
    from cronplus.core.schedule import Schedule

    meaning = "disabled"
    if job["enabled"]:
        zone = ZoneInfo(job["timezone"])
        meaning = Schedule.for_job(job["schedule"], zone=zone, job_name=job["job"]).describe()
    return {
        "job": job["job"],
        "schedule": job["schedule"],
        "meaning": meaning,
        "timezone": job["timezone"],
        "next_local": job["next_run_local"],
        "next_utc": job["next_run"],
        "last_outcome": last,
    }


def _named_row(name: str, last: str | None) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(_ROW_KEYS)
    return {**row, "job": name, "last_outcome": last}


_ROW_KEYS = ("job", "schedule", "meaning", "timezone", "next_local", "next_utc", "last_outcome")


def _job_row(job: Job, now: datetime, last: str | None) -> dict[str, object]:
    schedule = compile_job(job)
    upcoming = schedule.next_after(now) if job.enabled else None
    return {
        "job": job.name,
        "schedule": job.schedule,
        "meaning": schedule.describe() if job.enabled else "disabled",
        "timezone": job.timezone.key,
        "next_local": upcoming.astimezone(job.timezone).isoformat() if upcoming else None,
        "next_utc": iso_utc(upcoming) if upcoming else None,
        "last_outcome": last,
    }


@click.command("next")
@config_option
@click.argument("jobs", nargs=-1)
@click.option("--after", "after_text", help="Strictly after this time (default: now).")
@click.option("--until", "until_text", help="Every fire up to this time.")
@click.option("-n", "count", type=click.IntRange(min=1), default=None, help="Fires per job [5].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def next_fires(
    ctx: Context,
    config_path: Path | None,
    jobs: tuple[str, ...],
    after_text: str | None,
    until_text: str | None,
    count: int | None,
    as_json: bool,
) -> None:
    """Upcoming fire instants, per job, sorted by time."""
    if until_text and count:
        raise UsageError("give --until or -n, not both")
    crontab = ctx.load(config_path)
    after = parse_time(after_text) if after_text else now_utc()
    until = parse_time(until_text) if until_text else None
    rows, at_start = [], []
    for job in select_jobs(crontab, jobs):
        schedule = compile_job(job)
        if isinstance(schedule, Reboot):  # no instant: it runs when the daemon starts
            at_start.append(job.name)
            continue
        for at in _fires(schedule, job, after=after, until=until, count=count or 5):
            rows.append((at, job.name, at.astimezone(job.timezone).isoformat()))
    rows.sort()
    if as_json:  # instants only: a @reboot job has none
        body = [{"job": name, "at": iso_utc(at), "local": local} for at, name, local in rows]
        click.echo(json.dumps(body, indent=2))
        return
    table = [[iso_utc(at), local, name] for at, name, local in rows]
    table += [[AT_START, "-", name] for name in sorted(at_start)]
    click.echo(format_table(["AT (UTC)", "LOCAL", "JOB"], table))


def _fires(
    schedule: Schedule, job: Job, *, after: datetime, until: datetime | None, count: int
) -> list[datetime]:
    fires: list[datetime] = []
    for at in schedule.iter_after(after):
        if (until is not None and at > until) or (until is None and len(fires) >= count):
            break
        if len(fires) >= MAX_UNTIL_FIRES:
            raise UsageError(f"more than {MAX_UNTIL_FIRES} fires for {job.name}: narrow --until")
        fires.append(at)
    return fires

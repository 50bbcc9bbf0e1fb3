"""The commands that read the crontab: ``validate``, ``list`` and ``next``; and ``schema``,
the JSON Schema of the file."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import click

from cronplus.cli.context import (
    Context,
    config_option,
    format_table,
    now_utc,
    open_store,
    parse_time,
    pass_context,
    select_jobs,
)
from cronplus.core.model import Crontab, Job, UsageError, iso_utc
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
    """A table of jobs: schedule, its meaning, zone, next run and last outcome."""
    crontab = ctx.load(config_path)
    now = now_utc()
    last = _last_outcomes(crontab)
    rows = [_job_row(job, now, last.get(job.name)) for job in crontab.jobs]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    headers = ["JOB", "SCHEDULE", "MEANING", "ZONE", "NEXT (LOCAL)", "NEXT (UTC)", "LAST"]
    keys = ["job", "schedule", "meaning", "timezone", "next_local", "next_utc", "last_outcome"]
    table = [[str(row[key] or "-") for key in keys] for row in rows]
    click.echo(format_table(headers, table))


def _last_outcomes(crontab: Crontab) -> dict[str, str]:
    store = open_store(crontab, readonly=True)
    try:
        return {name: str(outcome) for name, (outcome, _) in store.last_outcomes().items()}
    finally:
        store.close()


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
    rows = []
    for job in select_jobs(crontab, jobs):
        for at in _fires(job, after=after, until=until, count=count or 5):
            rows.append((at, job.name, at.astimezone(job.timezone).isoformat()))
    rows.sort()
    if as_json:
        body = [{"job": name, "at": iso_utc(at), "local": local} for at, name, local in rows]
        click.echo(json.dumps(body, indent=2))
        return
    table = [[iso_utc(at), local, name] for at, name, local in rows]
    click.echo(format_table(["AT (UTC)", "LOCAL", "JOB"], table))


def _fires(job: Job, *, after: datetime, until: datetime | None, count: int) -> list[datetime]:
    fires: list[datetime] = []
    for at in compile_job(job).iter_after(after):
        if (until is not None and at > until) or (until is None and len(fires) >= count):
            break
        if len(fires) >= MAX_UNTIL_FIRES:
            raise UsageError(f"more than {MAX_UNTIL_FIRES} fires for {job.name}: narrow --until")
        fires.append(at)
    return fires

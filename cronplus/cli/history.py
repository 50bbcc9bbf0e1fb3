"""The commands that read what ran: ``history`` (a run a row, or its attempts and output)
and ``logs`` (a job's output, its last run by default).

A run is one slot of one job: its attempts are folded into one row that says how it
started, how it ended and why. Output comes from the history rows, which keep each
attempt's head and tail of stdout and stderr (``output_keep``), secrets masked; it is shown
with its control characters escaped, as the log shows them, so a job cannot drive the
operator's terminal.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click

from cronplus.cli.context import (
    Context,
    config_option,
    format_table,
    pass_context,
    select_jobs,
)
from cronplus.core.model import Crontab, RunResult, UsageError, iso_utc
from cronplus.observe.logs import printable
from cronplus.run.exits import how_it_ended
from cronplus.state.store import Store

Fetch = Callable[[int], list[RunResult]]
"""Reads the newest ``n`` history rows (attempts) of whatever was asked."""


@click.command()
@config_option
@click.option("--job", "job_name", help="Only this job.")
@click.option("--failed", is_flag=True, help="Only runs with an attempt that did not succeed.")
@click.option("-n", "limit", type=click.IntRange(min=1), default=20, help="How many runs [20].")
@click.option("--attempts", is_flag=True, help="A row per attempt instead of per run.")
@click.option("--output", "run_id", metavar="RUN_ID", help="The output of this run's attempts.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object an attempt).")
@pass_context
def history(
    ctx: Context,
    config_path: Path | None,
    job_name: str | None,
    failed: bool,
    limit: int,
    attempts: bool,
    run_id: str | None,
    as_json: bool,
) -> None:
    """Recent runs from the state database, newest first: one row a run, its attempts
    folded (--attempts unfolds them), with how it started and why it ended so."""
    reading = ctx.load_for_reading(config_path)
    store = reading.open_store()
    try:
        if run_id is not None:
            rows = store.history(run_id=run_id, limit=10_000)
            if not rows:
                raise UsageError(f"no run {run_id} in the history of {reading.path}")
            _show_output(list(reversed(rows)), as_json)
            return
        fetch: Fetch = lambda n: store.history(job=job_name, failed_only=failed, limit=n)  # noqa: E731
        runs = newest_runs(fetch, limit)
        if job_name is not None and not runs:
            _check_job(reading.crontab, store, job_name)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([_attempt_row(row) for run in runs for row in run], indent=2))
        return
    if attempts:
        cells = [_attempt_cells(row) for run in runs for row in run]
        head = ["FINISHED", "JOB", "SCHEDULED", "ATTEMPT", "OUTCOME", "EXIT", "DURATION_S"]
        click.echo(format_table([*head, "STARTED_BY", "REASON"], cells))
        return
    head = ["FINISHED", "JOB", "SCHEDULED", "OUTCOME", "ATTEMPTS", "EXIT", "DURATION_S"]
    click.echo(format_table([*head, "STARTED_BY", "REASON"], [_run_cells(run) for run in runs]))


@click.command()
@config_option
@click.argument("job_name")
@click.option("-n", "limit", type=click.IntRange(min=1), default=1, help="How many runs [1].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object an attempt).")
@pass_context
def logs(ctx: Context, config_path: Path | None, job_name: str, limit: int, as_json: bool) -> None:
    """The output of JOB's newest run (-n: of its newest runs), each attempt's stdout and
    stderr as history keeps them."""
    reading = ctx.load_for_reading(config_path)
    store = reading.open_store()
    try:
        runs = newest_runs(lambda n: store.history(job=job_name, limit=n), limit)
        if not runs:
            _check_job(reading.crontab, store, job_name)
    finally:
        store.close()
    if not runs:
        click.echo(f"{job_name} has not run yet (no history in {reading.state})")
        return
    _show_output([row for run in reversed(runs) for row in reversed(run)], as_json)


# --- reading runs ---------------------------------------------------------------------


def newest_runs(fetch: Fetch, count: int) -> list[list[RunResult]]:
    """The newest ``count`` runs, each its attempts newest first, from rows newest first.

    A run's attempts lie near each other but may be interleaved with other jobs' rows, so
    rows are read until one more run than asked begins (or history ends): every run shown
    then has all its attempts."""
    want = count * 4
    while True:
        rows = fetch(want)
        runs: dict[str, list[RunResult]] = {}
        for row in rows:
            runs.setdefault(row.run_id, []).append(row)
        if len(runs) > count or len(rows) < want:
            return list(runs.values())[:count]
        want *= 4


def _check_job(crontab: Crontab | None, store: Store, name: str) -> None:
    """A name in neither the file nor the history is a typo: say so, with the close one.
    A job gone from the file keeps its history; with the file rejected, nothing is said."""
    if crontab is not None and not store.history(job=name, limit=1):
        select_jobs(crontab, [name])


# --- showing them ---------------------------------------------------------------------


def _attempt_row(row: RunResult) -> dict[str, object]:
    return {
        "run_id": row.run_id,
        "job": row.job,
        "scheduled_at": iso_utc(row.scheduled_at),
        "attempt": row.attempt,
        "started_at": iso_utc(row.started_at),
        "finished_at": iso_utc(row.finished_at),
        "outcome": str(row.outcome),
        "exit_code": row.exit_code,
        "signal": row.signal,
        "duration_s": row.duration_s,
        "stderr_tail": row.stderr_tail,
        "reason": _reason(row) or None,
        "trigger": None if row.trigger is None else str(row.trigger),
        "response": row.response or None,
    }


def _reason(row: RunResult) -> str:
    """Why, in words: the record's reason, else how the process ended; nothing for a
    success that needs no words."""
    if row.outcome.ok:
        return row.reason
    return row.reason or how_it_ended(row)


def _cell(value: object) -> str:
    return "-" if value is None or value == "" else printable(str(value)).replace("\n", " ")


def _attempt_cells(row: RunResult) -> list[str]:
    values = (
        iso_utc(row.finished_at),
        row.job,
        iso_utc(row.scheduled_at),
        row.attempt,
        row.outcome,
        row.exit_code,
        row.duration_s,
        row.trigger,
        _reason(row) or row.response,
    )
    return [_cell(value) for value in values]


def _run_cells(run: list[RunResult]) -> list[str]:
    last, first = run[0], run[-1]
    tries = str(len(run)) if len(run) == last.attempt else f"{len(run)} (of {last.attempt})"
    values = (
        iso_utc(last.finished_at),
        last.job,
        iso_utc(last.scheduled_at),
        last.outcome,
        tries,
        last.exit_code,
        round(sum(row.duration_s for row in run), 6),
        first.trigger,
        _reason(last) or last.response,
    )
    return [_cell(value) for value in values]


def _show_output(rows: list[RunResult], as_json: bool) -> None:
    """Each attempt, oldest first: a line that says which and how it ended, then its
    stdout and stderr."""
    if as_json:
        body = [_attempt_row(row) | {"stdout": row.stdout, "stderr": row.stderr} for row in rows]
        click.echo(json.dumps(body, indent=2))
        return
    for row in rows:
        how = f"{row.outcome}, {_reason(row) or row.response or how_it_ended(row)}"
        started = f", {row.trigger}" if row.trigger is not None else ""
        click.echo(
            f"== {row.run_id} attempt {row.attempt}: {printable(how)}{started},"
            f" {row.duration_s:g}s, finished {iso_utc(row.finished_at)}"
        )
        for stream, text in (("stdout", row.stdout), ("stderr", row.stderr)):
            if text:
                click.echo(f"-- {stream}:")
                click.echo(printable(text).rstrip("\n"))
        if not (row.stdout or row.stderr):
            click.echo("(no output kept)" if row.attempt else "(not started)")

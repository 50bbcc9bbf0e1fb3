"""The ``cronplus`` command: parse arguments, wire objects, map errors to exit codes.

Exit codes: 0 success; 1 a job failed (after its retries); 2 usage, config or state error.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cronplus import __version__, config, logs
from cronplus.model import (
    CronplusError,
    Crontab,
    Job,
    LogFormat,
    RunResult,
    UsageError,
    iso_utc,
)
from cronplus.plan import first_in_minute
from cronplus.schedule import Schedule

if TYPE_CHECKING:
    from cronplus.engine import SlotRun
    from cronplus.state import Store

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE = 0, 1, 2
F = TypeVar("F", bound=Callable[..., Any])


def _config_option(func: F) -> F:
    """``-c/--config`` is accepted before or after the command name."""
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="The crontab (default: $CRONPLUS_CONFIG, else ./crontab.yaml).",
    )(func)


def _log_format_option(func: F) -> F:
    return click.option(
        "--log-format",
        type=click.Choice([f.value for f in LogFormat]),
        default=None,
        help="Log lines on stderr: text or json (default: settings.log_format).",
    )(func)


class Context:
    """What the group's options leave for the command."""

    def __init__(self, config_path: Path | None, log_format: str | None) -> None:
        self.config_path = config_path
        self.log_format = log_format

    def path(self, override: Path | None) -> Path:
        chosen = override or self.config_path or os.environ.get("CRONPLUS_CONFIG")
        return Path(chosen or "crontab.yaml")

    def load(self, override: Path | None) -> Crontab:
        return config.load(self.path(override))

    def setup_logs(self, crontab: Crontab, override: str | None) -> None:
        chosen = override or self.log_format
        logs.configure(LogFormat(chosen) if chosen else crontab.settings.log_format)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cronplus")
@_config_option
@_log_format_option
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, log_format: str | None) -> None:
    """cronplus: cron with per-job time zones, DST-correct schedules, retries and history."""
    ctx.obj = Context(config_path, log_format)


pass_context = click.make_pass_decorator(Context)


@cli.command()
@_config_option
@pass_context
def validate(ctx: Context, config_path: Path | None) -> None:
    """Check the crontab; print OK or every error (exit 2)."""
    crontab = ctx.load(config_path)
    click.echo(f"OK: {len(crontab.jobs)} jobs")


@cli.command("list")
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def list_jobs(ctx: Context, config_path: Path | None, as_json: bool) -> None:
    """A table of jobs: schedule, its meaning, zone, next run and last outcome."""
    crontab = ctx.load(config_path)
    now = _now()
    last = _last_outcomes(crontab)
    rows = [_job_row(job, now, last.get(job.name)) for job in crontab.jobs]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    headers = ["JOB", "SCHEDULE", "MEANING", "ZONE", "NEXT (LOCAL)", "NEXT (UTC)", "LAST"]
    keys = ["job", "schedule", "meaning", "timezone", "next_local", "next_utc", "last_outcome"]
    table = [[str(row[key] or "-") for key in keys] for row in rows]
    click.echo(_format_table(headers, table))


def open_store(crontab: Crontab, *, readonly: bool = False) -> Store:
    """The SQLite state file; in cluster mode the cluster's PostgreSQL database."""
    if crontab.settings.cluster is not None:
        from cronplus.pg.store import PgStore

        return PgStore.open(crontab.settings.cluster.dsn, readonly=readonly)
    from cronplus.sqlite_store import SqliteStore

    return SqliteStore.open(crontab.settings.state, readonly=readonly)


def _last_outcomes(crontab: Crontab) -> dict[str, str]:
    store = open_store(crontab, readonly=True)
    try:
        return {name: str(outcome) for name, (outcome, _) in store.last_outcomes().items()}
    finally:
        store.close()


def _job_row(job: Job, now: datetime, last: str | None) -> dict[str, object]:
    schedule = _compiled(job)
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


def _format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def parse_time(text: str) -> datetime:
    """ISO 8601; without an offset the time is in the host's zone (DESIGN section 3)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"cannot read the time {text!r}: expected ISO 8601, e.g. 2026-03-08T02:30 "
            "or 2026-03-08T07:30:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=config.host_zone(os.environ))
    return moment.astimezone(UTC)


@cli.command("next")
@_config_option
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
    after = parse_time(after_text) if after_text else _now()
    until = parse_time(until_text) if until_text else None
    rows = []
    for job in _select(crontab, jobs):
        for at in _fires(job, after=after, until=until, count=count or 5):
            rows.append((at, job.name, at.astimezone(job.timezone).isoformat()))
    rows.sort()
    if as_json:
        body = [{"job": name, "at": iso_utc(at), "local": local} for at, name, local in rows]
        click.echo(json.dumps(body, indent=2))
        return
    table = [[iso_utc(at), local, name] for at, name, local in rows]
    click.echo(_format_table(["AT (UTC)", "LOCAL", "JOB"], table))


MAX_UNTIL_FIRES = 100_000


def _fires(job: Job, *, after: datetime, until: datetime | None, count: int) -> list[datetime]:
    fires: list[datetime] = []
    for at in _compiled(job).iter_after(after):
        if (until is not None and at > until) or (until is None and len(fires) >= count):
            break
        if len(fires) >= MAX_UNTIL_FIRES:
            raise UsageError(f"more than {MAX_UNTIL_FIRES} fires for {job.name}: narrow --until")
        fires.append(at)
    return fires


def _select(crontab: Crontab, names: Sequence[str]) -> list[Job]:
    known = {job.name for job in crontab.jobs}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UsageError(f"no such job in {crontab.path}: {', '.join(unknown)}")
    wanted = set(names)
    return [job for job in crontab.jobs if not wanted or job.name in wanted]


@cli.command("run-once")
@_config_option
@_log_format_option
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
    at = parse_time(at_text) if at_text else _now()
    slots = []
    for job in _select(crontab, job_names):
        slot = first_in_minute(_compiled(job), at) if job.enabled else None
        if slot is not None:
            slots.append((job, slot))
    if dry_run:
        _print_dry_run(at, slots, as_json)
        return
    runs = _run_slots(crontab, slots)
    _finish_runs(at, runs, as_json)


@cli.command("run")
@_config_option
@_log_format_option
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
    crontab = ctx.load(config_path)
    ctx.setup_logs(crontab, log_format)
    (job,) = _select(crontab, [job_name])
    now = _now().replace(microsecond=0)
    if via_daemon:
        answer = _ask_daemon(crontab, {"command": "run", "job": job_name}, timeout=None)
        _print_summaries(now, [answer], as_json)
        return
    runs = _run_slots(crontab, [(job, now)])
    _finish_runs(now, runs, as_json)


def _run_slots(crontab: Crontab, slots: list[tuple[Job, datetime]]) -> list[SlotRun]:
    # The engine, asyncio and the runner are imported by the commands that run jobs only:
    # `validate` is most of its time importing, and needs none of them.
    import asyncio

    from cronplus.clock import SystemClock
    from cronplus.engine import Engine
    from cronplus.runner import Runner

    async def run() -> list[SlotRun]:
        store = open_store(crontab)
        try:
            clock = SystemClock()
            engine = Engine(
                crontab,
                store=store,
                runner=Runner(),
                clock=clock,
                base_env=os.environ,
                log=logs.EventLog(),
            )
            runs = engine.start_slots(slots, now=clock.now())
            await engine.wait_idle()
            return runs
        finally:
            store.close()

    return asyncio.run(run())


def _now() -> datetime:
    from cronplus.clock import SystemClock  # imports asyncio: only when a command needs now

    return SystemClock().now()


def _compiled(job: Job) -> Schedule:
    """``engine.compile_job``, without importing the engine."""
    return Schedule.for_job(job.schedule, zone=job.timezone, job_name=job.name)


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
            click.echo(
                f"{row['job']}: {row['outcome']} after {row['attempts']} attempt(s), "
                f"exit {row['exit_code']}, {row['duration_s']}s (slot {row['scheduled_at']})"
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
    }


@cli.command()
@_config_option
@click.option("--job", "job_name", help="Only this job.")
@click.option("--failed", is_flag=True, help="Only attempts that did not succeed.")
@click.option("-n", "limit", type=click.IntRange(min=1), default=20, help="How many [20].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def history(
    ctx: Context,
    config_path: Path | None,
    job_name: str | None,
    failed: bool,
    limit: int,
    as_json: bool,
) -> None:
    """Recent attempts from the state database, newest first."""
    crontab = ctx.load(config_path)
    store = open_store(crontab, readonly=True)
    try:
        rows = store.history(job=job_name, failed_only=failed, limit=limit)
    finally:
        store.close()
    body = [_history_row(row) for row in rows]
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    keys = ["finished_at", "job", "scheduled_at", "attempt", "outcome", "exit_code", "duration_s"]
    table = [["-" if row[key] is None else str(row[key]) for key in keys] for row in body]
    click.echo(_format_table([key.upper() for key in keys], table))


def _history_row(row: RunResult) -> dict[str, object]:
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
    }


@cli.command()
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def status(ctx: Context, config_path: Path | None, as_json: bool) -> None:
    """The running daemon: uptime, last reload, next runs, running attempts, queue."""
    from cronplus import control

    answer = _ask_daemon(ctx.load(config_path), {"command": "status"}, timeout=10.0)
    click.echo(json.dumps(answer, indent=2) if as_json else control.format_status(answer))


def _ask_daemon(crontab: Crontab, request: dict[str, Any], *, timeout: float | None) -> Any:
    """The daemon's answer; no daemon is exit 1, a refused request (unknown job) exit 2."""
    from cronplus import control

    try:
        answer = control.ask(control.socket_path(crontab.settings.state), request, timeout=timeout)
    except control.NoDaemon as error:
        click.echo(str(error), err=True)
        sys.exit(EXIT_JOB_FAILED)
    if "error" in answer:
        raise UsageError(str(answer["error"]))
    return answer


@cli.command()
@_config_option
@_log_format_option
@pass_context
def daemon(ctx: Context, config_path: Path | None, log_format: str | None) -> None:
    """The long-running scheduler (stop with SIGTERM, reload with SIGHUP)."""
    from cronplus import forkload

    path = ctx.path(config_path)
    # The parse's garbage stays out of the daemon's heap; the daemon's imports meanwhile.
    crontab = forkload.load(path, meanwhile=partial(importlib.import_module, "cronplus.daemon"))
    ctx.setup_logs(crontab, log_format)
    from cronplus.daemon import run_daemon

    sys.exit(run_daemon(path, crontab, env=os.environ))


@cli.group()
def db() -> None:
    """The state database's schema."""


@db.command("migrate")
@_config_option
@pass_context
def db_migrate(ctx: Context, config_path: Path | None) -> None:
    """Create or upgrade the schema: the cluster's PostgreSQL database, else the SQLite file."""
    crontab = ctx.load(config_path)
    if crontab.settings.cluster is None:
        from cronplus.sqlite_store import SCHEMA_VERSION, SqliteStore

        SqliteStore.open(crontab.settings.state).close()  # opening to write migrates
        click.echo(f"{crontab.settings.state}: schema at version {SCHEMA_VERSION}")
        return
    from cronplus.pg import schema

    dsn = crontab.settings.cluster.dsn
    before, after = schema.migrate(dsn)
    was = f"was {before}" if before != after else "already"
    click.echo(f"{schema.describe_dsn(dsn)}: schema at version {after} ({was})")


@cli.group("cluster")
def cluster_group() -> None:
    """The nodes sharing one PostgreSQL database (settings.cluster)."""


@cluster_group.command("status")
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def cluster_status(ctx: Context, config_path: Path | None, as_json: bool) -> None:
    """Nodes, their heartbeats, tags and running jobs; whether their job definitions agree."""
    from cronplus.cluster import definitions_hash
    from cronplus.pg.store import cluster_status as read_status

    crontab = ctx.load(config_path)
    if crontab.settings.cluster is None:
        raise UsageError(f"{crontab.path}: settings.cluster is not set; there is no cluster")
    status = read_status(crontab.settings.cluster.dsn)
    body = _status_body(status, mine=definitions_hash(crontab.jobs))
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    headers = ["NODE", "STATE", "HEARTBEAT", "HOST", "PID", "TAGS", "DEFINITIONS", "RUNNING"]
    click.echo(_format_table(headers, [_status_cells(node) for node in body["nodes"]]))
    click.echo(
        f"cluster definitions: {body['definitions']} (set by {body['set_by']});"
        f" this file: {body['this_file']}"
    )


def _status_body(status: Any, *, mine: str) -> dict[str, Any]:
    def state(node: Any) -> str:
        return "live" if node.live else "stopped" if node.stopped else "lost"

    running = [
        {
            "node": r.node,
            "job": r.job,
            "scheduled_at": iso_utc(r.scheduled_at),
            "attempt": r.attempt,
            "started_at": iso_utc(r.started_at) if r.started_at else None,
        }
        for r in status.running
    ]
    nodes = [
        {
            "node": n.name,
            "state": state(n),
            "heartbeat_age_s": round(n.heartbeat_age_s, 1),
            "host": n.host,
            "pid": n.pid,
            "tags": sorted(n.tags),
            "definitions": n.definitions[:12],
            "agrees": n.definitions == status.definitions,
            "running": [r for r in running if r["node"] == n.name],
        }
        for n in status.nodes
    ]
    short = status.definitions[:12] if status.definitions else None
    return {
        "definitions": short,
        "set_by": status.definitions_set_by,
        "this_file": mine[:12],
        "nodes": nodes,
    }


def _status_cells(node: dict[str, Any]) -> list[str]:
    runs = ", ".join(f"{r['job']}@{r['scheduled_at']}" for r in node["running"])
    agrees = "" if node["agrees"] else " (differs)"
    return [
        node["node"],
        node["state"],
        f"{node['heartbeat_age_s']}s ago",
        node["host"],
        str(node["pid"]),
        ",".join(node["tags"]) or "-",
        node["definitions"] + agrees,
        f"{len(node['running'])}" + (f": {runs}" if runs else ""),
    ]


@cli.group()
def service() -> None:
    """Install cronplus as a systemd or launchd service."""


@service.command("install")
@_config_option
@click.option("--user", "kind", flag_value="user", default=True, help="A systemd user unit.")
@click.option("--system", "kind", flag_value="system", help="A systemd system unit.")
@click.option("--launchd", "kind", flag_value="launchd", help="A launchd LaunchAgent.")
@pass_context
def service_install(ctx: Context, config_path: Path | None, kind: str) -> None:
    """Write the unit (or plist) with this installation's absolute paths."""
    from cronplus import service as services

    path = ctx.path(config_path)
    config.load(path)  # never install a service on a broken crontab
    chosen: services.ServiceKind = "user" if kind == "user" else "system"
    if kind == "launchd":
        chosen = "launchd"
    written = services.install(
        chosen, executable=services.locate_executable(), config=path, home=Path.home()
    )
    click.echo(f"wrote {written}")
    for command in services.next_commands(chosen, written):
        click.echo(f"  {command}")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: every cronplus error becomes its message on stderr and exit 2."""
    try:
        cli.main(args=argv, prog_name="cronplus", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(EXIT_USAGE)
    except CronplusError as error:
        click.echo(str(error), err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    sys.exit(EXIT_OK)

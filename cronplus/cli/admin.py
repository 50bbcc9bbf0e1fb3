"""The commands that look after an installation: daemon, status, reload, db, cluster
(status, deploy), service.

Each imports the daemon, the control socket, the stores or the service templates inside
its body, so ``validate`` (which imports this module to register them) pays for none.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

import click

from cronplus.cli.context import (
    EXIT_USAGE,
    Context,
    adopt_legacy_state,
    ask_daemon,
    config_option,
    format_table,
    log_format_option,
    pass_context,
)
from cronplus.config import loader
from cronplus.core.model import UsageError, iso_utc


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def status(ctx: Context, config_path: Path | None, as_json: bool) -> None:
    """The running daemon: uptime, last reload, state, next runs, running attempts, queue.
    A rejected file on disk is said on stderr; the daemon is asked all the same."""
    from cronplus.observe import control

    answer = ctx.load_for_reading(config_path).ask_daemon({"command": "status"}, timeout=10.0)
    click.echo(json.dumps(answer, indent=2) if as_json else control.format_status(answer))


@click.command()
@config_option
@pass_context
def reload(ctx: Context, config_path: Path | None) -> None:
    """Have the running daemon reload its crontab now; exit 2 when it rejects the file.

    What ``systemctl reload cronplus`` runs (``ExecReload=``): it returns once the daemon
    has loaded the file, and fails, naming the errors, when the file is rejected; the old
    jobs run on either way.
    """
    answer = ask_daemon(ctx.load(config_path), {"command": "reload"}, timeout=RELOAD_TIMEOUT)
    if not answer["ok"]:
        click.echo(
            f"the daemon rejected {answer['config']}; its previous jobs keep running:\n"
            f"{answer['rejected']}",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    click.echo(f"reloaded {answer['config']}")


RELOAD_TIMEOUT = 120.0
"""Seconds ``reload`` waits for the daemon: a reload of 10,000 jobs takes about one."""


@click.command()
@config_option
@log_format_option
@pass_context
def daemon(ctx: Context, config_path: Path | None, log_format: str | None) -> None:
    """The long-running scheduler (stop with SIGTERM, reload with SIGHUP)."""
    from cronplus.core import collector
    from cronplus.daemon import forkload

    collector.hold()  # start-up builds what lasts; Daemon.run settles it (collector.py)
    path = ctx.path(config_path)
    # The parse's garbage stays out of the daemon's heap; the daemon's imports meanwhile.
    crontab = forkload.load(
        path, meanwhile=partial(importlib.import_module, "cronplus.daemon.start")
    )
    ctx.setup_logs(crontab, log_format)
    if (adopted := adopt_legacy_state(crontab, env=os.environ)) is not None:
        from cronplus.observe.logs import EventLog

        event, message = adopted
        log = EventLog()
        (log.info if event == "state_adopted" else log.warning)(event, message)
    from cronplus.daemon.start import run_daemon

    sys.exit(run_daemon(path, crontab, env=os.environ))


@click.group()
def db() -> None:
    """The state database's schema."""


@db.command("migrate")
@config_option
@pass_context
def db_migrate(ctx: Context, config_path: Path | None) -> None:
    """Create or upgrade the schema: the cluster's PostgreSQL database, else the SQLite file."""
    crontab = ctx.load(config_path)
    if crontab.settings.cluster is None:
        from cronplus.state.sqlite import SCHEMA_VERSION, SqliteStore

        if (adopted := adopt_legacy_state(crontab, env=os.environ)) is not None:
            click.echo(adopted[1], err=True)
        SqliteStore.open(crontab.settings.state).close()  # opening to write migrates
        click.echo(f"{crontab.settings.state}: schema at version {SCHEMA_VERSION}")
        return
    from cronplus.cluster.pg import schema

    dsn = crontab.settings.cluster.dsn
    before, after = schema.migrate(dsn)
    was = f"was {before}" if before != after else "already"
    click.echo(f"{schema.describe_dsn(dsn)}: schema at version {after} ({was})")


@db.command("path")
@config_option
@pass_context
def db_path(ctx: Context, config_path: Path | None) -> None:
    """Print the state database's path (settings.state, else this crontab's default); its
    daemon's control socket is beside it. It answers for a rejected file too."""
    click.echo(ctx.load_for_reading(config_path).state)


@click.group("cluster")
def cluster_group() -> None:
    """The nodes sharing one PostgreSQL database (settings.cluster)."""


@cluster_group.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def cluster_status(ctx: Context, config_path: Path | None, as_json: bool) -> None:
    """Nodes, their heartbeats, tags and running jobs; whether their job definitions agree."""
    from cronplus.cluster.decisions import definitions_hash
    from cronplus.cluster.pg.store import cluster_status as read_status

    crontab = ctx.load(config_path)
    if crontab.settings.cluster is None:
        raise UsageError(f"{crontab.path}: settings.cluster is not set; there is no cluster")
    status = read_status(crontab.settings.cluster.dsn)
    body = _status_body(status, mine=definitions_hash(crontab.jobs))
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    headers = ["NODE", "STATE", "HEARTBEAT", "HOST", "PID", "TAGS", "DEFINITIONS", "CLOCK"]
    headers.append("RUNNING")
    click.echo(format_table(headers, [_status_cells(node) for node in body["nodes"]]))
    for node in body["nodes"]:
        if node["refusing"] and node["state"] == "live":
            click.echo(node["refusing"])
    click.echo(
        f"cluster definitions: {body['definitions']} (set by {body['set_by']});"
        f" this file: {body['this_file']}"
    )


@cluster_group.command("deploy")
@config_option
@pass_context
def cluster_deploy(ctx: Context, config_path: Path | None) -> None:
    """Make this file's job definitions the cluster's: the nodes whose files agree claim,
    the others refuse until theirs do (docs/cluster.md, "When the files differ")."""
    from cronplus.cluster.decisions import definitions_hash
    from cronplus.cluster.pg.definitions import deploy

    crontab = ctx.load(config_path)
    if crontab.settings.cluster is None:
        raise UsageError(f"{crontab.path}: settings.cluster is not set; there is no cluster")
    mine = definitions_hash(crontab.jobs)
    before = deploy(crontab.settings.cluster.dsn, mine, node=crontab.settings.cluster.node)
    was = "already" if before == mine else f"was {before[:12] if before else 'none'}"
    click.echo(f"cluster definitions: {mine[:12]} ({was}), from {crontab.path}")


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
            "clock_offset_s": None if n.clock_offset is None else round(n.clock_offset, 3),
            "refusing": n.refusing,
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
        "-" if node["clock_offset_s"] is None else f"{node['clock_offset_s']:+.3f}s",
        f"{len(node['running'])}" + (f": {runs}" if runs else ""),
    ]


@click.group()
def service() -> None:
    """Install cronplus as a systemd or launchd service."""


@service.command("install")
@config_option
@click.option("--user", is_flag=True, help="A systemd user unit (the default, except on macOS).")
@click.option("--system", is_flag=True, help="A systemd system unit.")
@click.option("--launchd", is_flag=True, help="A launchd LaunchAgent (the default on macOS).")
@click.option(
    "--print",
    "--dry-run",
    "preview",
    is_flag=True,
    help="Print the file on stdout, where it would go and what to run next on stderr; "
    "write nothing.",
)
@pass_context
def service_install(
    ctx: Context,
    config_path: Path | None,
    user: bool,
    system: bool,
    launchd: bool,
    preview: bool,
) -> None:
    """Write the unit (or plist) with this installation's absolute paths."""
    from cronplus.daemon import service as services

    flags: dict[services.ServiceKind, bool] = {"user": user, "system": system, "launchd": launchd}
    chosen = services.choose_kind([k for k, on in flags.items() if on], platform=sys.platform)
    path = ctx.path(config_path)
    crontab = loader.load(path)  # never install a service on a broken crontab
    paths = {"executable": services.locate_executable(), "config": path, "home": Path.home()}
    grace = crontab.settings.shutdown_grace
    if preview:
        destination, text = services.render(chosen, **paths, shutdown_grace=grace)
        click.echo(f"would write {destination}, then run:", err=True)
        for command in services.next_commands(chosen, destination):
            click.echo(f"  {command}", err=True)
        click.echo(text, nl=False)
        return
    written = services.install(chosen, **paths, shutdown_grace=grace)
    click.echo(f"wrote {written}")
    for command in services.next_commands(chosen, written):
        click.echo(f"  {command}")

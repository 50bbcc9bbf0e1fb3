"""What every ``cronplus`` command shares: the group's context, its options and helpers.

The helpers here import only what ``validate`` needs; the store, the clock (asyncio) and
the control socket are imported inside the functions that use them, so a command pays
for what it touches (``python -X importtime -m cronplus validate`` shows it).
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from cronplus.config import loader
from cronplus.core.model import Crontab, Job, LogFormat, UsageError
from cronplus.observe import logs

if TYPE_CHECKING:
    from cronplus.state.store import Store

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE = 0, 1, 2
F = TypeVar("F", bound=Callable[..., Any])


def config_option(func: F) -> F:
    """``-c/--config`` is accepted before or after the command name."""
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="The crontab (default: $CRONPLUS_CONFIG, else ./crontab.yaml).",
    )(func)


def log_format_option(func: F) -> F:
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
        return loader.load(self.path(override))

    def setup_logs(self, crontab: Crontab, override: str | None) -> None:
        chosen = override or self.log_format
        logs.configure(LogFormat(chosen) if chosen else crontab.settings.log_format, env=os.environ)


pass_context = click.make_pass_decorator(Context)


def open_store(crontab: Crontab, *, readonly: bool = False) -> Store:
    """The SQLite state file; in cluster mode the cluster's PostgreSQL database."""
    if crontab.settings.cluster is not None:
        from cronplus.cluster.pg.store import PgStore

        return PgStore.open(crontab.settings.cluster.dsn, readonly=readonly)
    from cronplus.state.sqlite import SqliteStore

    return SqliteStore.open(crontab.settings.state, readonly=readonly)


def ask_daemon(crontab: Crontab, request: dict[str, Any], *, timeout: float | None) -> Any:
    """The daemon's answer; no daemon is exit 1, a refused request (unknown job) exit 2."""
    from cronplus.observe import control

    try:
        answer = control.ask(control.socket_path(crontab.settings.state), request, timeout=timeout)
    except control.NoDaemon as error:
        click.echo(str(error), err=True)
        sys.exit(EXIT_JOB_FAILED)
    if "error" in answer:
        raise UsageError(str(answer["error"]))
    return answer


def parse_time(text: str) -> datetime:
    """ISO 8601, then optionally a zone name (``2026-03-08T02:30 America/New_York``); without
    an offset or a zone the time is in the host's zone (DESIGN section 3). A wall time that a
    zone skips or repeats reads as the first (``fold=0``), as a naive time always has."""
    stamp, _, zone_name = text.strip().partition(" ")
    zone = _zone(zone_name.strip(), text) if zone_name.strip() else None
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        raise UsageError(
            f"cannot read the time {text!r}: expected ISO 8601, e.g. 2026-03-08T02:30, "
            "2026-03-08T07:30:00Z or 2026-03-08T02:30 America/New_York"
        ) from None
    if zone is not None and moment.tzinfo is not None:
        raise UsageError(f"the time {text!r} has both an offset and a zone; give one")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone or loader.host_zone(os.environ))
    return moment.astimezone(UTC)


def _zone(name: str, text: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"cannot read the time {text!r}: {name!r} is not a time zone name"
            " (e.g. America/New_York, Europe/Berlin, UTC)"
        ) from None


def now_utc() -> datetime:
    from cronplus.clock import SystemClock  # imports asyncio: only when a command needs now

    return SystemClock().now()


def select_jobs(crontab: Crontab, names: Sequence[str]) -> list[Job]:
    known = {job.name for job in crontab.jobs}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UsageError(
            f"no such job in {crontab.path}: {', '.join(unknown)}{_hint(unknown, known)}"
        )
    wanted = set(names)
    return [job for job in crontab.jobs if not wanted or job.name in wanted]


def _hint(unknown: Sequence[str], known: set[str]) -> str:
    """``; did you mean backup?`` for the first unknown name that is close to a job's."""
    for name in unknown:
        if close := difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6):
            return f"; did you mean {close[0]}?"
    return ""


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )

"""What every ``cronplus`` command shares: the group's context, its options and helpers.

The helpers here import only what ``validate`` needs; the store, the clock (asyncio) and
the control socket are imported inside the functions that use them, so a command pays
for what it touches (``python -X importtime -m cronplus validate`` shows it).
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from cronplus.config import loader
from cronplus.core.model import ConfigError, Crontab, Job, LogFormat, StateError, UsageError
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


LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
"""``--log-level``: the least level of the event lines written (``info``: all of them)."""


def log_format_option(func: F) -> F:
    return click.option(
        "--log-format",
        type=click.Choice([f.value for f in LogFormat]),
        default=None,
        help="Log lines on stderr: text or json (default: settings.log_format).",
    )(func)


class Context:
    """What the group's options leave for the command."""

    def __init__(
        self, config_path: Path | None, log_format: str | None, log_level: str = "info"
    ) -> None:
        self.config_path = config_path
        self.log_format = log_format
        self.log_level = log_level

    def path(self, override: Path | None) -> Path:
        chosen = override or self.config_path or os.environ.get("CRONPLUS_CONFIG")
        return Path(chosen or "crontab.yaml")

    def load(self, override: Path | None) -> Crontab:
        return loader.load(self.path(override))

    def load_for_reading(self, override: Path | None) -> Reading:
        """For a command that only reads (``status``, ``list``, ``history``, ``run
        --via-daemon``): the crontab, or, when the file on disk is rejected, where its
        state database and its daemon are, with the rejection said on stderr first."""
        path = self.path(override)
        try:
            crontab = loader.load(path)
        except ConfigError as error:
            return _rejected(path, error)
        cluster = crontab.settings.cluster is not None
        return Reading(path=path, crontab=crontab, state=crontab.settings.state, cluster=cluster)

    def setup_logs(self, crontab: Crontab | None, override: str | None) -> None:
        """``--log-format``, else the file's ``settings.log_format`` (text without a file)."""
        chosen = override or self.log_format
        fallback = crontab.settings.log_format if crontab is not None else LogFormat.TEXT
        level = LOG_LEVELS[self.log_level]
        logs.configure(LogFormat(chosen) if chosen else fallback, level=level, env=os.environ)


pass_context = click.make_pass_decorator(Context)


@dataclass(frozen=True, kw_only=True)
class Reading:
    """What a reading command works from: the crontab, or None when the file on disk is
    rejected (``rejected``, its errors), and where the state and the daemon are either way."""

    path: Path
    crontab: Crontab | None
    state: Path
    """The SQLite state; its daemon's control socket is beside it (``<state>.sock``)."""
    cluster: bool
    rejected: ConfigError | None = None

    def open_store(self) -> Store:
        """The state database, to read."""
        if self.crontab is not None:
            return open_store(self.crontab, readonly=True)
        if self.cluster:
            raise UsageError(
                f"{self.path}: rejected, and its state is the cluster's database"
                " (settings.cluster), which cronplus reaches only through a file that loads;"
                " fix the file (cronplus validate), or ask the daemon: cronplus status"
            )
        from cronplus.state.sqlite import SqliteStore

        _note_legacy(self.state, self.path)
        return SqliteStore.open(self.state, readonly=True)

    def ask_daemon(self, request: dict[str, Any], *, timeout: float | None) -> Any:
        """As ``ask_daemon``, on this state's control socket."""
        return _ask(self.state, self.path, request, timeout=timeout)


def _rejected(path: Path, error: ConfigError) -> Reading:
    """The rejection on stderr, then where the state is: ``settings.state`` as the file
    spells it where that can be read, else the default for this file."""
    default = loader.default_state(
        os.environ, euid=os.geteuid(), platform=sys.platform, config=path
    )
    try:
        declared, cluster = loader.declared_state(path, env=os.environ)
        guess = None
    except ValueError as why:
        declared, cluster, guess = None, False, str(why)
    state = declared or default
    if state is None:
        raise error  # nowhere to look: as if it were a command that needs the file
    click.echo(
        f"{path}: the file on disk is rejected (a running daemon keeps its previous jobs);"
        f" showing what the state database and the daemon know. Its errors:\n{error}",
        err=True,
    )
    if guess is not None:
        click.echo(f"(settings.state unknown: {guess}; reading the default {state})", err=True)
    return Reading(path=path, crontab=None, state=state, cluster=cluster, rejected=error)


def open_store(crontab: Crontab, *, readonly: bool = False) -> Store:
    """The SQLite state file; in cluster mode the cluster's PostgreSQL database."""
    if crontab.settings.cluster is not None:
        from cronplus.cluster.pg.store import PgStore

        return PgStore.open(crontab.settings.cluster.dsn, readonly=readonly)
    from cronplus.state.sqlite import SqliteStore

    if readonly:
        _note_legacy(crontab.settings.state, crontab.path)
    return SqliteStore.open(crontab.settings.state, readonly=readonly)


def ask_daemon(crontab: Crontab, request: dict[str, Any], *, timeout: float | None) -> Any:
    """The daemon's answer; no daemon is exit 1, a refused request (unknown job) exit 2."""
    return _ask(crontab.settings.state, crontab.path, request, timeout=timeout)


def _ask(state: Path, config: Path, request: dict[str, Any], *, timeout: float | None) -> Any:
    from cronplus.observe import control

    try:
        answer = control.ask(control.socket_path(state), request, timeout=timeout)
    except control.NoDaemon as error:
        click.echo(str(error), err=True)
        _note_legacy(state, config)
        sys.exit(EXIT_JOB_FAILED)
    if "error" in answer:
        raise UsageError(str(answer["error"]))
    return answer


# --- the shared state of older versions (docs/state.md, "Migration") ---------------------


def _legacy_of(state: Path, config: Path, env: Mapping[str, str]) -> Path | None:
    """The shared ``state.db`` beside the crontab ``config``'s own default state, if it
    waits to be adopted: ``state`` is that default, it does not exist yet, the old one does."""
    own = loader.default_state(env, euid=os.geteuid(), platform=sys.platform, config=config)
    legacy = state.with_name(loader.LEGACY_STATE_NAME)
    if state != own or state.exists() or not legacy.exists():
        return None
    return legacy


def _note_legacy(state: Path, config: Path) -> None:
    if (legacy := _legacy_of(state, config, os.environ)) is not None:
        click.echo(
            f"note: {state} (this crontab's state) does not exist yet, and {legacy}, the state"
            " older cronplus versions shared, does: the daemon adopts it at its next start"
            ' (docs/state.md, "Migration")',
            err=True,
        )


def adopt_legacy_state(crontab: Crontab, *, env: Mapping[str, str]) -> tuple[str, str] | None:
    """Make the shared ``state.db`` of older versions this crontab's own state, once:
    only for a crontab on the default state whose own file does not exist yet, and only
    if the old ledger names one of its jobs (the ledger is written by daemons only).

    The old database's daemon lock is held throughout, so no daemon uses it meanwhile and
    no second crontab adopts it: the loser of a race finds it gone. Returns the log event
    and its message, or None when there was nothing to adopt.
    """
    state = crontab.settings.state
    if crontab.settings.cluster is not None:
        return None
    if (legacy := _legacy_of(state, crontab.path, env)) is None:
        return None
    from cronplus.state import files

    files.private_folder(legacy, create=False)
    lock = files.private_file(files.sibling(legacy, ".lock"))
    try:
        _lock_legacy(lock, legacy, state)
        if _legacy_of(state, crontab.path, env) is None:
            return None  # adopted by another crontab's daemon meanwhile
        return _adopt(legacy, state, {job.name for job in crontab.jobs})
    finally:
        os.close(lock)


def _lock_legacy(lock: int, legacy: Path, state: Path) -> None:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(lock, 32, 0).decode(errors="replace").strip() or "?"
        raise StateError(
            f"{legacy}: the state older cronplus versions shared between crontabs is in use"
            f" by a daemon (pid {pid}); stop it and start this one again: the first daemon"
            f" whose jobs its ledger names adopts it (this one as {state});"
            ' docs/state.md, "Migration"'
        ) from None


def _adopt(legacy: Path, state: Path, jobs: set[str]) -> tuple[str, str]:
    from cronplus.state.files import sibling
    from cronplus.state.sqlite import SqliteStore

    store = SqliteStore.open(legacy, readonly=True)
    try:
        known = set(store.ledger())
    finally:
        store.close()
    if not known & jobs:
        return "state_not_adopted", (
            f"{legacy}, the state older cronplus versions shared, names none of this crontab's"
            f" jobs in its ledger, so it stays; this crontab starts {state} afresh (to adopt"
            f" it anyway, stop the daemon, then: mv {legacy} {state})"
        )
    # The log first: a crash between the two leaves the old file to adopt again, whose
    # log is then already in place beside its new name. SQLite rebuilds -shm from the log.
    for suffix in ("-wal", ""):
        with contextlib.suppress(FileNotFoundError):
            os.rename(sibling(legacy, suffix), sibling(state, suffix))
    for suffix in ("-shm", ".writers", ".sock", ".lock"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sibling(legacy, suffix))
    return "state_adopted", (
        f"adopted {legacy}, the state older cronplus versions shared, as this crontab's"
        f" own: {state}"
    )


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

"""The ``cronplus`` command: parse arguments, wire objects, map errors to exit codes.

Exit codes: 0 success; 1 a job failed (after its retries); 2 usage, config or state error.
The commands live beside this module, one noun each: ``crontab`` (validate, list,
next), ``runs`` (run-once, run), ``history`` (history, logs) and ``admin`` (daemon, status, reload,
db, cluster, service); ``context`` holds what they share.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import click

from cronplus import __version__
from cronplus.cli import admin, crontab, history, runs
from cronplus.cli.context import (
    EXIT_OK,
    EXIT_USAGE,
    LOG_LEVELS,
    Context,
    config_option,
    log_format_option,
)
from cronplus.core.model import CronplusError
from cronplus.observe import journal


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cronplus")
@config_option
@log_format_option
@click.option(
    "--log-level",
    type=click.Choice(list(LOG_LEVELS)),
    default="info",
    show_default=True,
    help="The least level of event lines on stderr (warning: no job output or starts).",
)
@click.pass_context
def cli(
    ctx: click.Context, config_path: Path | None, log_format: str | None, log_level: str
) -> None:
    """cronplus: cron with per-job time zones, DST-correct schedules, retries and history."""
    ctx.obj = Context(config_path, log_format, log_level)


for _command in (
    crontab.validate,
    crontab.list_jobs,
    crontab.next_fires,
    crontab.schema,
    runs.run_once,
    runs.run_job,
    history.history,
    history.logs,
    admin.status,
    admin.reload,
    admin.daemon,
    admin.db,
    admin.cluster_group,
    admin.service,
):
    cli.add_command(_command)


def run() -> NoReturn:
    """The installed ``cronplus`` command: ``main()``, then out without the interpreter's
    teardown when nothing is left to finish.

    Freeing a process's heap of modules, models and jobs one object at a time took about
    25 ms of a 0.24 s ``validate`` of 1,000 jobs (bench/RESULTS.md, "floors"). So once
    stdout and stderr are flushed and no other thread runs (none to join, no executor with
    queued work), the exit code is handed straight to ``os._exit``. The commands close their
    databases and files themselves; nothing of cronplus's waits for ``atexit``. Anything
    else (another thread alive, a pipe closed under us) takes the usual way out.
    """
    try:
        main()
    except SystemExit as done:
        if isinstance(done.code, int | None) and threading.active_count() == 1 and _flushed():
            os._exit(done.code or 0)
        raise
    raise AssertionError("main() returned instead of exiting")


def _flushed() -> bool:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe or stream: let the interpreter report it
        return False
    return True


def main(argv: Sequence[str] | None = None) -> None:
    """Run one command and exit (``SystemExit``, whose code ``run`` hands on): every
    cronplus error becomes its message on stderr and exit 2."""
    try:
        cli.main(args=argv, prog_name="cronplus", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(EXIT_USAGE)
    except CronplusError as error:
        text = str(error)
        if journal.is_journal(sys.stderr, os.environ):  # under systemd: an error, not info
            text = journal.prefixed(text, logging.ERROR)
        click.echo(text, err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    sys.exit(EXIT_OK)

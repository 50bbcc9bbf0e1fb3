"""How an attempt ended, in an operator's words: the outcome of an exit status, why a
program could not be started, and what the limits wrapper reported.

``runner.py`` gathers the facts (the exit status, the ``OSError`` of a failed spawn, the
wrapper's status pipe, whether cronplus stopped the attempt); this module says what they
mean, the same way for ``history``, the failure log and alerts.
"""

from __future__ import annotations

import errno
import os
import signal
from enum import Enum

from cronplus.core.model import Outcome, RunResult
from cronplus.run import limit_exec
from cronplus.run.command import Command

_TOO_MANY_FILES = (
    "too many open files (each running job holds 3 file descriptors; "
    "raise the daemon's limit: ulimit -n, LimitNOFILE=)"
)


def spawn_failure_reason(error: OSError, program: str, workdir: str) -> str:
    """Why a command could not be started, in the words an operator searches for."""
    # Popen reports a failed chdir with the workdir as the file name.
    if error.filename == workdir:
        if isinstance(error, FileNotFoundError):
            return f"workdir does not exist: {workdir}"
        if isinstance(error, NotADirectoryError):
            return f"workdir is not a directory: {workdir}"
        if isinstance(error, PermissionError):
            return f"permission denied: workdir {workdir}"
        return f"cannot enter workdir {workdir}: {error.strerror}"
    if isinstance(error, FileNotFoundError):
        if "/" in program and os.path.exists(os.path.join(workdir, program)):
            return f"cannot run {program}: its #! interpreter was not found"
        return f"command not found: {program}"
    if isinstance(error, PermissionError):
        return f"permission denied: {program}"
    if error.errno in (errno.EMFILE, errno.ENFILE):
        return f"cannot start {program}: {_TOO_MANY_FILES}"
    return f"cannot start {program}: {error.strerror or error}"


def lost_output_reason(program: str) -> str:
    """Why an attempt was killed at its start: its output pipes could not be taken back
    from parking (parking.py), for want of descriptors."""
    return f"killed at its start, its output unreadable: {program}: {_TOO_MANY_FILES}"


def how_it_ended(result: RunResult) -> str:
    """``exit 7``, ``signal 9``, or the reason when there was no exit (a missing command)."""
    if result.signal is not None:
        return f"signal {result.signal}"
    if result.exit_code is not None:
        return f"exit {result.exit_code}"
    return result.reason or str(result.outcome)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Stop(Enum):
    """Why cronplus stopped the main child, if it did."""

    NONE = "none"
    """It ran until it ended by itself."""
    TIMEOUT = "timeout"
    """It ran past ``Command.timeout``."""
    TERMINATE = "terminate"
    """``RunningProcess.terminate()`` was called (overlap ``replace``, shutdown)."""


def wrapper_failure(status: bytes, command: Command) -> str | None:
    """Why the limits wrapper could not start the job's program, in ``Runner.start``'s words."""
    found = limit_exec.read_failure(status)
    if found is None:
        return None
    stage, number = found
    program, workdir = command.argv[0], os.fspath(command.workdir)
    if stage == "exec":
        error = OSError(number, os.strerror(number), program)
        return spawn_failure_reason(error, program, workdir)
    if stage == "cwd":  # entered as the job's user, after the switch
        error = OSError(number, os.strerror(number), workdir)
        return spawn_failure_reason(error, program, workdir)
    if stage == "lookup" and command.account is not None and number == errno.ENOENT:
        gone = f"user {command.account.name!r}"
        if command.group is not None:
            gone += f" or group {command.group!r}"
        return f"cannot start {program}: {gone} is no longer in the user database"
    return f"cannot start {program}: {stage} failed: {os.strerror(number)}"


def judge(code: int, stop: Stop, command: Command) -> tuple[Outcome, str]:
    """The outcome of an exit status (``Popen.returncode``: negative for a signal)."""
    ended = f"; ended by {signal_name(-code)}" if code < 0 else f"; exited with {code}"
    if stop is Stop.TIMEOUT:
        return Outcome.TIMED_OUT, f"timed out after {command.timeout:g}s{ended}"
    if stop is Stop.TERMINATE:
        return Outcome.KILLED, f"terminated by cronplus{ended}"
    if code < 0:
        return Outcome.KILLED, f"killed by {signal_name(-code)}"
    if code in command.success_codes:
        return Outcome.SUCCEEDED, ""
    return Outcome.FAILED, f"exit code {code} is not a success code"

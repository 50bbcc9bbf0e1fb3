"""The exec wrapper of a job with limits or a user: set them, switch, enter, exec the job.

Python 3.11's ``Popen`` sets no resource limits except through ``preexec_fn``, which runs
Python code between fork and exec (unsafe in a daemon with threads: a lock another thread
held at the fork stays held in the child) and turns off the vfork fast path. So for a job
with limits the runner starts this file instead, ``python -I -S limit_exec.py OPTIONS --
ARGV``: a fresh interpreter with no threads sets each limit, then the user, then execs ARGV
in its own place (same pid, process group and pipes). Standard library only, run by path
with ``-I -S``, so it starts in about 10 ms; jobs with neither limits nor a user never
pay that.

A job with ``user:`` always starts here, so that, as root before the switch, the user is
looked up at this run (a changed uid, gid or group list counts now, not at the next
reload; a slow user database stalls this child, never the daemon's loop), and the job's
folder is entered after the switch (a job never holds a folder its user could not
enter). Every module is imported before the switch: the user may not be able to read the
interpreter's files.

Options (the environment never travels in argv, where ``ps`` shows it):

    --rlimit=NAME:SOFT:HARD   setrlimit(RLIMIT_NAME); never above the hard limit we got
    --user=NAME               look NAME up; setgroups (its own groups), setgid, setuid
    --group=NAME              with --user: this primary group instead of the user's own
    --cwd=PATH                enter PATH after the switch
    --lc-ctype=VALUE | --no-lc-ctype
                              LC_CTYPE as the job's environment had it
    --status-fd=N             a failure is written there as "STAGE ERRNO" before exit 127;
                              a successful exec closes it, which tells the runner
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import resource
import sys
import warnings  # noqa: F401  os.execvp's PATH search imports it: now, while root can read it

# Each import is paid at every start of a job with limits: typing's costs 3 ms, and
# signal.py's 5 ms (it builds enums), so the C module underneath it does the work.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from typing import NoReturn
else:
    import _signal as signal

FAILED_EXIT = 127
"""Our exit status when the job's program could not be started (as a shell's)."""
USAGE_EXIT = 2


class Plan:
    """What to do before the exec (a plain class: ``dataclasses`` costs milliseconds to import)."""

    def __init__(self) -> None:
        self.rlimits: list[tuple[str, int, int]] = []
        self.user: str | None = None
        self.group: str | None = None
        self.cwd: str | None = None
        self.restore: dict[str, str | None] = {}
        """Variables to put back as the job had them (None: unset)."""
        self.status_fd: int | None = None


def parse(args: list[str]) -> tuple[Plan, list[str]]:
    """The plan and the job's argv; a ``ValueError`` names the bad option."""
    plan = Plan()
    for index, arg in enumerate(args):
        if arg == "--":
            if index + 1 == len(args):
                raise ValueError("nothing to run after --")
            return plan, args[index + 1 :]
        name, _, value = arg.partition("=")
        try:
            _option(plan, name, value)
        except (ValueError, IndexError):
            raise ValueError(f"bad option {arg!r}") from None
    raise ValueError("expected OPTIONS -- ARGV")


def _option(plan: Plan, name: str, value: str) -> None:
    if name == "--rlimit":
        which, soft, hard = value.split(":")
        if not hasattr(resource, f"RLIMIT_{which}"):
            raise ValueError(which)
        plan.rlimits.append((which, int(soft), int(hard)))
    elif name == "--user" and value:
        plan.user = value
    elif name == "--group" and value:
        plan.group = value
    elif name == "--cwd" and value:
        plan.cwd = value
    elif name == "--lc-ctype":
        plan.restore["LC_CTYPE"] = value
    elif name == "--no-lc-ctype" and not value:
        plan.restore["LC_CTYPE"] = None
    elif name == "--status-fd":
        plan.status_fd = int(value)
    else:
        raise ValueError(name)


def run(plan: Plan, argv: list[str]) -> NoReturn:
    """Apply the plan and exec ``argv``; on failure report it and exit 127."""
    stage = "setrlimit"
    try:
        # The interpreter ignores these two at start; an ignored signal stays ignored
        # across exec, and `yes | head` needs SIGPIPE.
        for ignored in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(ignored, signal.SIG_DFL)
        for which, soft, hard in plan.rlimits:
            _lower(getattr(resource, f"RLIMIT_{which}"), soft, hard)
        if plan.user is not None:
            stage = "lookup"
            identity = _lookup(plan.user, plan.group)
            stage = "user"
            _switch(*identity)
        if plan.cwd is not None:
            stage = "cwd"
            os.chdir(plan.cwd)
        _restore(plan.restore)
        stage = "exec"
        if plan.status_fd is not None:
            os.set_inheritable(plan.status_fd, False)
        os.execvp(argv[0], argv)
    except (OSError, ValueError) as error:
        number = error.errno if isinstance(error, OSError) and error.errno else errno.EINVAL
        _report(plan.status_fd, stage, number, argv[0])
    os._exit(FAILED_EXIT)


def _lower(which: int, soft: int, hard: int) -> None:
    """Lower a limit; a limit above the hard one we were given stays at that one."""
    _, current = resource.getrlimit(which)
    if current != resource.RLIM_INFINITY:
        hard = min(hard, current)
    resource.setrlimit(which, (min(soft, hard), hard))


def _lookup(user: str, group: str | None) -> tuple[int, int, list[int]]:
    """(uid, gid, groups) of ``user`` now; ENOENT when it or ``group`` is gone."""
    try:
        entry = pwd.getpwnam(user)
        gid = grp.getgrnam(group).gr_gid if group is not None else entry.pw_gid
    except KeyError:
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT)) from None
    return entry.pw_uid, gid, os.getgrouplist(user, entry.pw_gid)


def _switch(uid: int, gid: int, groups: list[int]) -> None:
    # Groups first: once the uid is not root's, neither may change.
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)


def _restore(saved: dict[str, str | None]) -> None:
    # The interpreter sets LC_CTYPE=C.UTF-8 at start when the locale is C (PEP 538); the
    # job gets what it was given instead.
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _report(status_fd: int | None, stage: str, number: int, program: str) -> None:
    if status_fd is None:
        sys.stderr.write(f"cannot start {program}: {stage}: {os.strerror(number)}\n")
        return
    try:
        os.write(status_fd, f"{stage} {number}".encode())
    except OSError:
        return  # the runner is gone; nobody is left to tell


def read_failure(data: bytes) -> tuple[str, int] | None:
    """What ``--status-fd`` received: (stage, errno), or None when the exec succeeded."""
    stage, _, number = data.decode("ascii", "replace").partition(" ")
    if not stage:
        return None
    return stage, int(number) if number.isdigit() else errno.EINVAL


def main(args: list[str]) -> NoReturn:
    try:
        plan, argv = parse(args)
    except ValueError as error:
        sys.stderr.write(f"limit_exec: {error}; usage: OPTIONS -- ARGV\n")
        os._exit(USAGE_EXIT)
    run(plan, argv)


if __name__ == "__main__":
    main(sys.argv[1:])

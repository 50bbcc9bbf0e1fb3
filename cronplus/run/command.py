"""What one attempt runs and what it gave back: ``Command``, ``ProcessResult``, the job's env.

Pure values and their construction from a job and a slot; ``runner.py`` starts the
process. A job's environment is built, not inherited (docs/running.md, "Environment"):
cron's small one (``PATH``, the locale, ``TZ``, the user's ``HOME``, ``USER``, ``LOGNAME``,
``SHELL``), the daemon's variables the job names in ``inherit_env``, its own ``env``
(``env_file`` and secrets included), and the ``CRONPLUS_*`` run variables, which are always
cronplus's. Nothing else of the daemon's environment reaches a job: not another job's
``from_env`` source, not a password or DSN, never the service manager's variables
(``NOTIFY_SOCKET``, ``WATCHDOG_*``, ``LISTEN_*``), even when named.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cronplus.core.model import Account, Job, Limits, Outcome, Slot, iso_utc
from cronplus.host import accounts

DEFAULT_OUTPUT_LIMIT = 64 * 1024
"""Bytes kept at the head and at the tail of each stream, by default."""
DEFAULT_DRAIN_GRACE = 0.5
"""Seconds we keep reading after the main child's exit while a grandchild holds a pipe."""
STDERR_TAIL_LINES = 20
STDERR_TAIL_BYTES = 4096
CONTROL_VARIABLES = frozenset({"NOTIFY_SOCKET"})
"""The daemon's own service-manager variables, never passed on to a job."""
CONTROL_PREFIXES = ("WATCHDOG_", "LISTEN_")
OTHER_USER_PATH = "/usr/local/bin:/usr/bin:/bin"
"""``PATH`` of a job run as another user: root's ``PATH`` may name folders only root may
write, or trust."""
KEPT = frozenset({"PATH", "LANG", "LANGUAGE", "TZ"})
"""The daemon's variables every job gets (with ``LC_*``): where programs are, the
locale, the host's zone. ``PATH`` only for jobs of the daemon's own user."""

NO_LIMITS = Limits()


@dataclass(frozen=True, kw_only=True)
class Command:
    """Everything needed to start one attempt; ``env`` is the complete environment."""

    argv: tuple[str, ...]
    workdir: Path
    env: Mapping[str, str]
    timeout: float | None
    """Seconds the attempt may run, or ``None`` for no limit."""
    kill_grace: float
    """Seconds between SIGTERM and SIGKILL when the attempt is stopped."""
    success_codes: frozenset[int]
    output_limit: int = DEFAULT_OUTPUT_LIMIT
    limits: Limits = NO_LIMITS
    account: Account | None = None
    """Run as this user (the daemon must be root)."""
    group: str | None = None
    """With ``account``: the job's ``group:``, looked up by name at each run."""

    def __post_init__(self) -> None:
        checks = (
            ("argv", bool(self.argv), "at least the program name"),
            ("timeout", self.timeout is None or self.timeout > 0, "seconds > 0 or None"),
            ("kill_grace", self.kill_grace >= 0, "seconds >= 0"),
            ("output_limit", self.output_limit >= 0, "bytes >= 0"),
        )
        where = f" for {self.argv[0]!r}" if self.argv else ""
        for name, ok, expected in checks:
            if not ok:
                got = getattr(self, name)
                raise ValueError(f"Command.{name}{where}: expected {expected}, got {got!r}")


@dataclass(frozen=True, kw_only=True)
class ProcessResult:
    """How one attempt ended, as the runner saw it."""

    outcome: Outcome
    """SUCCEEDED, FAILED, TIMED_OUT or KILLED (KILLED also when ``terminate()`` stopped it)."""
    exit_code: int | None
    signal: int | None
    duration_s: float
    """From the spawn to the main child's exit, on the monotonic clock."""
    pid: int | None
    stdout: bytes
    """Head + ``b"\\n[... N bytes dropped ...]\\n"`` + tail when the output was cut, with
    the secrets given to ``RunningProcess.mask_secrets`` as ``***``, masked before the
    cut; the tails below are cut from these masked bytes."""
    stderr: bytes
    reason: str = ""
    limit: str = ""
    stdout_size: int = 0
    """Bytes the job wrote on stdout in all, kept or not."""
    stderr_size: int = 0
    """The limit the attempt hit (``memory``, ``cpu_time``, ...), if it hit one."""
    response: str = ""
    """A target's answer (``HTTP 200``, ``confirmed``, a task's state); a process: empty."""

    @property
    def stderr_tail(self) -> str:
        """The last 20 lines (at most 4 KiB) of stderr, decoded with replacement."""
        return tail_text(self.stderr)

    @property
    def stdout_tail(self) -> str:
        """The last 20 lines (at most 4 KiB) of stdout, decoded with replacement."""
        return tail_text(self.stdout)


def kept_text(data: bytes, *, keep: int, size: int) -> str:
    """What a history row keeps of one stream (``Job.output_keep``): all of ``data`` within
    ``keep`` bytes, else its first and last ``keep // 2`` around a line counting the bytes
    of the stream (``size`` in all) not kept. ``data`` is masked already: a cut through it
    goes through ``***`` at worst, never through a secret."""
    if len(data) <= keep:
        return data.decode("utf-8", errors="replace")
    half = keep // 2
    head, tail = data[:half], _from_boundary(data[len(data) - half :])
    middle = f"\n[... {max(size - 2 * half, 0)} bytes not kept ...]\n"
    return head.decode("utf-8", errors="replace") + middle + tail.decode("utf-8", errors="replace")


def _from_boundary(chunk: bytes) -> bytes:
    """``chunk`` less the UTF-8 continuation bytes a cut left at its start (at most 3)."""
    skip = 0
    while skip < min(3, len(chunk)) and 0x80 <= chunk[skip] <= 0xBF:
        skip += 1
    return chunk[skip:]


def tail_text(
    data: bytes, *, lines: int = STDERR_TAIL_LINES, max_bytes: int = STDERR_TAIL_BYTES
) -> str:
    """The end of some output as text; bytes that are not UTF-8 become U+FFFD."""
    chunk = data[-max_bytes:]
    if len(data) > max_bytes:
        # The cut may land inside a UTF-8 sequence: drop its continuation bytes rather than
        # start the text with a replacement character.
        chunk = _from_boundary(chunk)
    text = chunk.decode("utf-8", errors="replace").rstrip("\n")
    return "\n".join(text.split("\n")[-lines:])


# --- building a command from a job -----------------------------------------------------


def is_control_variable(name: str) -> bool:
    """Whether ``name`` belongs to the daemon's service manager (systemd) and not to jobs."""
    return name in CONTROL_VARIABLES or name.startswith(CONTROL_PREFIXES)


class PassedOn(dict[str, str]):
    """The daemon's environment minus its control variables: what ``inherit_env`` draws
    from, and the two bases every job's environment starts from (built once, on first use,
    so a burst copies a few variables per attempt, not the daemon's whole environment:
    bench/RESULTS.md, "What bounds the burst")."""

    @functools.cached_property
    def kept(self) -> dict[str, str]:
        """The locale and ``TZ``: what every job gets of the daemon's."""
        return {
            name: value
            for name, value in self.items()
            if (name in KEPT and name != "PATH") or name.startswith("LC_")
        }

    @functools.cached_property
    def own_user(self) -> dict[str, str]:
        """A job of the daemon's own user: ``kept``, the daemon's ``PATH``, its login."""
        path = {"PATH": self["PATH"]} if "PATH" in self else {"PATH": os.defpath}
        return {**self.kept, **path, **accounts.own_environment(os.geteuid(), self)}

    @functools.cached_property
    def other_user(self) -> dict[str, str]:
        """A job of another user (its login comes from its account): ``kept`` and a
        ``PATH`` of the system's own folders."""
        return {**self.kept, "PATH": OTHER_USER_PATH}


def passed_on(base: Mapping[str, str]) -> PassedOn:
    """``base`` without the daemon's control variables."""
    if isinstance(base, PassedOn):
        return base
    return PassedOn(
        (name, value)
        for name, value in base.items()
        if name not in CONTROL_VARIABLES and not name.startswith(CONTROL_PREFIXES)
    )


def job_environment(base: Mapping[str, str], job: Job, slot: Slot, attempt: int) -> dict[str, str]:
    """The environment one attempt runs with, built from the daemon's ``base`` (the
    module's docstring says what of it).

    A job with ``user:`` gets that user's ``HOME``, ``USER``, ``LOGNAME`` and ``SHELL``; its
    own ``env`` may still set them, and anything else, even a control variable, but not
    the ``CRONPLUS_*`` variables. ``base`` may already be ``passed_on`` (the engine's, made
    once).
    """
    if attempt < 1:
        raise ValueError(
            f"job_environment for job {job.name!r}: attempt must be >= 1, got {attempt}"
        )
    daemon = passed_on(base)
    if job.user is None:
        env = dict(daemon.own_user)
    else:
        env = dict(daemon.other_user)
        env.update(accounts.environment(job.user))
    for name in job.inherit_env:
        if name in daemon:
            env[name] = daemon[name]
    env.update(job.env)
    env["CRONPLUS_JOB"] = job.name
    env["CRONPLUS_SCHEDULED_AT"] = iso_utc(slot.scheduled_at)
    env["CRONPLUS_ATTEMPT"] = str(attempt)
    env["CRONPLUS_RUN_ID"] = slot.run_id
    return env


def command_for(job: Job, slot: Slot, attempt: int, base_env: Mapping[str, str]) -> Command:
    """The command for one attempt of ``job`` at ``slot``."""
    return Command(
        argv=job.argv,
        workdir=job.workdir,
        env=job_environment(base_env, job, slot, attempt),
        timeout=None if job.timeout is None else job.timeout.total_seconds(),
        kill_grace=job.kill_grace.total_seconds(),
        success_codes=job.success_codes,
        output_limit=job.output_limit,
        limits=job.limits,
        account=job.user,
        group=job.group,
    )

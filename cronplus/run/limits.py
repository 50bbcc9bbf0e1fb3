"""Per-job resource limits: reading them, starting a job under them, knowing it hit one.

| limit | without ``cgroup`` (each process) | with ``cgroup: true`` (the whole scope) |
| --- | --- | --- |
| ``memory`` | RLIMIT_DATA | ``MemoryMax=`` (and ``MemorySwapMax=0``) |
| ``cpu_time`` | RLIMIT_CPU | RLIMIT_CPU |
| ``open_files`` | RLIMIT_NOFILE | RLIMIT_NOFILE |
| ``processes`` | RLIMIT_NPROC (per *user*) | ``TasksMax=`` |
| ``cpu_quota`` | (an error) | ``CPUQuota=`` |

Rlimits are set in the child by the exec wrapper (``limit_exec.py``); a scope is made by
``systemd-run --scope``, which then execs the job (or the wrapper). docs/running.md says
what each limit means for a job and its children, and why these choices.
"""

from __future__ import annotations

import functools
import math
import os
import pwd
import re
import shutil
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cronplus.core.model import Account, Limits
from cronplus.core.words import describe_value
from cronplus.host import accounts, cgroups

WRAPPER = str(Path(__file__).with_name("limit_exec.py"))
CPU_KILL_AFTER = 1
"""CPU seconds between SIGXCPU (the limit) and SIGKILL (the hard limit)."""
MIN_MEMORY = 1024 * 1024
SYSTEMD_RUNTIME = Path("/run/systemd/system")
"""Exists when systemd is the service manager (sd_booted(3))."""

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
SIZE_PATTERN = r"^(\d+(?:\.\d+)?)([KMGT]?)$"
"""A number and a unit; also the JSON Schema's pattern, so no named groups."""
PERCENT_PATTERN = r"^(\d+(?:\.\d+)?)%$"
_SIZE, _PERCENT = re.compile(SIZE_PATTERN), re.compile(PERCENT_PATTERN)
_SIZE_HINT = "a size such as 512M, 2G or 1.5G (K, M, G, T: powers of 1024)"

# What a program prints when one of these limits refused it something. The kernel only
# refuses (ENOMEM, EAGAIN, EMFILE); what the program then does is up to it, so its last
# words are the evidence. Compared in lower case.
_MEMORY_WORDS = (
    "memoryerror",
    "cannot allocate memory",
    "out of memory",
    "bad_alloc",
    "memory allocation of",
    "outofmemoryerror",
    "memory exhausted",
)
_PROCESS_WORDS = (
    "cannot fork",
    "can't fork",
    "fork: retry",
    "resource temporarily unavailable",
    "can't start new thread",
)
_FILE_WORDS = ("too many open files",)


# --- reading (for config/loader.py) --------------------------------------------------------------


def parse_bytes(value: object, *, at_most: int) -> int:
    """``64K``, ``1M``, ``0``, or a number of bytes, up to ``at_most`` (a job's output
    sizes: ``output_limit``, ``output_log_limit``, ``output_keep``)."""
    size = _bytes(value, "a size such as 64K or 1M (K, M, G: powers of 1024)")
    if size > at_most:
        raise ValueError(f"expected at most {at_most >> 20}M, got {size} bytes")
    return size


def _bytes(value: object, hint: str) -> int:
    integer = isinstance(value, int) and not isinstance(value, bool)
    text = str(value).strip() if isinstance(value, str) or integer else ""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"expected {hint}, got {describe_value(value)}")
    amount, unit = match.groups()
    return math.ceil(float(amount) * _UNITS[unit])


def parse_size(value: object) -> int:
    """``512M``, ``2G``, ``1.5G``, or a number of bytes; at least 1M."""
    size = _bytes(value, _SIZE_HINT)
    text = str(value).strip()
    if size < MIN_MEMORY:
        hint = f"; did you mean {text}M?" if not text[-1:].isalpha() else ""
        raise ValueError(f"expected at least 1M, got {size} bytes{hint}")
    return size


def parse_cpu_time(seconds: float) -> int:
    """Whole seconds, rounded up: the kernel counts CPU time in seconds."""
    if seconds < 1:
        raise ValueError(
            f"expected at least 1s (the kernel counts whole seconds), got {seconds:g}s"
        )
    return math.ceil(seconds)


def parse_percent(value: object) -> float:
    """``50%`` of one CPU, ``200%`` of two."""
    match = _PERCENT.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None or float(match[1]) <= 0:
        raise ValueError(
            f"expected a percentage of one CPU such as 50% or 200%, got {describe_value(value)}"
        )
    return float(match[1])


def merged(defaults: Mapping[str, Any] | None, job: Mapping[str, Any] | None) -> Limits:
    """``defaults.limits`` and the job's ``limits``, key by key, the job's winning."""
    return Limits(**{**(defaults or {}), **(job or {})})


def format_size(size: int) -> str:
    """The largest unit that writes ``size`` whole: ``64M``, ``1536K``."""
    for unit in ("T", "G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size} bytes"


# --- rules between fields (config/loader.py reports them at their place) -------------------------


def cross_problems(
    name: str,
    defaults: Mapping[str, Any],
    job: Mapping[str, Any],
    *,
    euid: int,
    env: Mapping[str, str],
    platform: str = sys.platform,
) -> list[tuple[tuple[str, ...], str]]:
    """(place, message) for each rule a job breaks between ``limits``, ``user``, ``group``
    and the host; a key is placed where it is written, the job's own before ``defaults``'.
    A limit the host would not enforce is one of them: nothing runs silently unlimited."""

    def place(*key: str) -> tuple[str, ...]:
        owner = job if _has(job, key) else defaults
        return (("jobs", name) if owner is job else ("defaults",)) + key

    limits = {**_mapping(defaults.get("limits")), **_mapping(job.get("limits"))}
    user = job.get("user", defaults.get("user"))
    found: list[tuple[tuple[str, ...], str]] = []
    if ("group" in job or "group" in defaults) and user is None:
        found.append((place("group"), "group: needs user: (the user whose groups the job gets)"))
    if "cpu_quota" in limits and limits.get("cgroup") is not True:
        found.append((place("limits", "cpu_quota"), "cpu_quota needs cgroup: true (CPUQuota=)"))
    if limits.get("cgroup") is True:
        if why := systemd_problem(euid=euid, env=env):
            found.append((place("limits", "cgroup"), why))
        else:
            found += [
                (place("limits", key), f"{key} cannot be enforced in a scope: {why}")
                for key, controller in cgroups.CONTROLLERS.items()
                if key in limits and (why := cgroups.missing(controller, euid=euid))
            ]
    elif "memory" in limits and platform == "darwin":
        why = "memory cannot be enforced on macOS, which ignores RLIMIT_DATA"
        found.append((place("limits", "memory"), why))
    if "processes" in limits and limits.get("cgroup") is not True and _runs_as_root(user, euid):
        why = (
            "processes is not enforced for a job that runs as root (the kernel exempts it):"
            " set user: to a dedicated user, or cgroup: true"
        )
        found.append((place("limits", "processes"), why))
    return found


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _has(owner: Mapping[str, Any], key: tuple[str, ...]) -> bool:
    value: object = owner
    for step in key:
        if not isinstance(value, dict) or step not in value:
            return False
        value = value[step]
    return True


def _runs_as_root(user: object, euid: int) -> bool:
    if not isinstance(user, str):
        return euid == accounts.ROOT_UID
    try:
        return pwd.getpwnam(user).pw_uid == accounts.ROOT_UID
    except KeyError:
        return False  # the user field reports it


def systemd_problem(*, euid: int, env: Mapping[str, str]) -> str | None:
    """Why ``cgroup: true`` cannot work on this host, or None."""
    if shutil.which("systemd-run", path=env.get("PATH", os.defpath)) is None:
        return "cgroup: true needs systemd-run, which is not on PATH"
    if not SYSTEMD_RUNTIME.is_dir():
        why = f"it is not ({SYSTEMD_RUNTIME} is missing)"
        return f"cgroup: true needs systemd as the service manager, and {why}"
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if euid != accounts.ROOT_UID and not (runtime and Path(runtime, "systemd").is_dir()):
        return (
            "cgroup: true as a user needs that user's systemd (systemd --user), and there is none"
        )
    return None


# --- starting a job under its limits ------------------------------------------------------


def rlimits(limits: Limits) -> list[tuple[str, int, int]]:
    """(RLIMIT name without its prefix, soft, hard) for each limit the child sets."""
    found: list[tuple[str, int, int]] = []
    if limits.memory is not None and not limits.cgroup:
        found.append(("DATA", limits.memory, limits.memory))
    if limits.cpu_time is not None:
        found.append(("CPU", limits.cpu_time, limits.cpu_time + CPU_KILL_AFTER))
    if limits.open_files is not None:
        found.append(("NOFILE", limits.open_files, limits.open_files))
    if limits.processes is not None and not limits.cgroup:
        found.append(("NPROC", limits.processes, limits.processes))
    return found


def needs_wrapper(limits: Limits, account: Account | None) -> bool:
    """Whether the job starts through ``limit_exec.py``: for rlimits, and for any user
    (looked up at each run, and its folder entered after the switch: limit_exec.py)."""
    return account is not None or bool(rlimits(limits))


def launch(
    argv: tuple[str, ...],
    *,
    limits: Limits,
    account: Account | None,
    env: Mapping[str, str],
    euid: int,
    status_fd: int | None,
    group: str | None = None,
    workdir: str | None = None,
) -> list[str]:
    """What ``Popen`` runs. ``status_fd`` is the wrapper's status pipe when
    ``needs_wrapper``, else None; ``group`` is the job's ``group:`` and ``workdir`` its
    folder, both for the wrapper of a job with a user (which enters the folder itself)."""
    scope = (
        scope_argv(limits, euid=euid, env=env, bound_to=_own_unit(euid)) if limits.cgroup else []
    )
    if status_fd is None:
        return [*scope, *argv]
    wrapper = [sys.executable, "-I", "-S", WRAPPER, f"--status-fd={status_fd}"]
    wrapper += [f"--rlimit={which}:{soft}:{hard}" for which, soft, hard in rlimits(limits)]
    if account is not None:
        wrapper.append(f"--user={account.name}")
        wrapper += [f"--group={group}"] if group is not None else []
        wrapper += [f"--cwd={workdir}"] if workdir is not None else []
    lc_ctype = env.get("LC_CTYPE")
    wrapper.append("--no-lc-ctype" if lc_ctype is None else f"--lc-ctype={lc_ctype}")
    return [*scope, *wrapper, "--", *argv]


def scope_argv(
    limits: Limits, *, euid: int, env: Mapping[str, str], bound_to: str | None
) -> list[str]:
    """``systemd-run --scope`` with the scope's limits; it execs what follows ``--``.

    ``bound_to`` is the daemon's own service: the scope gets ``BindsTo=`` it, so the
    service manager stops the job when the daemon's service stops, fails or is restarted
    (a crash, a watchdog kill), instead of leaving it beside the restarted daemon.
    """
    argv = ["systemd-run", "--scope", "--quiet", "--collect"]
    if euid != accounts.ROOT_UID:
        argv.append("--user")
    if job := env.get("CRONPLUS_JOB"):
        argv.append(f"--description=cronplus job {job}")
    if bound_to is not None:
        argv += ["-p", f"BindsTo={bound_to}"]
    if limits.memory is not None:
        # Without swap, MemoryMax= is the job's memory, not a point where it starts to swap.
        argv += ["-p", f"MemoryMax={limits.memory}", "-p", "MemorySwapMax=0"]
    if limits.cpu_quota is not None:
        argv += ["-p", f"CPUQuota={limits.cpu_quota:g}%"]
    if limits.processes is not None:
        argv += ["-p", f"TasksMax={limits.processes}"]
    return [*argv, "--"]


@functools.cache
def _own_unit(euid: int) -> str | None:
    return cgroups.own_unit(euid=euid)  # the daemon never moves to another unit


# --- knowing a job hit a limit --------------------------------------------------------------


def verdict(
    limits: Limits, *, signal_number: int | None, stderr_tail: str
) -> tuple[str, str] | None:
    """(limit, reason) when an attempt that did not succeed shows it hit one of its limits;
    the reason starts with the limit's name. None when nothing points at a limit."""
    if limits.cpu_time is not None and signal_number == signal.SIGXCPU:
        return "cpu_time", f"cpu_time: used up its {limits.cpu_time}s of CPU time (SIGXCPU)"
    if limits.memory is not None:
        size = format_size(limits.memory)
        if limits.cgroup and signal_number == signal.SIGKILL:
            return (
                "memory",
                f"memory: killed by SIGKILL in its {size} scope (the OOM killer's signal)",
            )
        if word := _said(stderr_tail, _MEMORY_WORDS):
            return "memory", f"memory: ran out of its {size} memory limit (stderr: {word!r})"
    if limits.processes is not None and (word := _said(stderr_tail, _PROCESS_WORDS)):
        return (
            "processes",
            f"processes: could not start more than its {limits.processes} (stderr: {word!r})",
        )
    if limits.open_files is not None and (word := _said(stderr_tail, _FILE_WORDS)):
        return "open_files", f"open_files: ran out of its {limits.open_files} (stderr: {word!r})"
    return None


def _said(text: str, words: tuple[str, ...]) -> str | None:
    """The first of ``words`` in ``text``, as ``text`` writes it."""
    lower = text.lower()
    for word in words:
        if (at := lower.find(word)) >= 0:
            return text[at : at + len(word)]
    return None

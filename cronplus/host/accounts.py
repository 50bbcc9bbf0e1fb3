"""The users jobs run as: finding them in the user database, and what a switch sets.

Only a daemon running as root may run a job as another user (``user:``, ``group:``). The
user database is read when the crontab is loaded (``validate``, start, reload), to refuse
an unknown user or group and to give the job its ``HOME``, ``USER``, ``LOGNAME`` and
``SHELL``; never in the daemon's loop, where a slow NSS source (LDAP) would stall every
job. The switch itself looks the user up again at each run, in the child: the exec wrapper
(``limit_exec.py``) does it as root, then switches, then enters the job's folder, so a
changed uid, gid or group list counts at once.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Mapping
from dataclasses import replace
from typing import NamedTuple

from cronplus.core.model import Account
from cronplus.core.words import describe_value

ROOT_UID = 0


class Group(NamedTuple):
    """A ``group:`` as the group database knows it."""

    name: str
    gid: int


def lookup_user(name: object, *, euid: int) -> Account:
    """The account named ``name`` with its own primary group; a ``ValueError`` says why not."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"expected a user name, got {_describe(name)}")
    if euid != ROOT_UID:
        raise ValueError(
            f"running as user {name!r} needs the daemon to run as root, and it runs as"
            f" uid {euid}; remove user:, or run cronplus as root"
        )
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ValueError(
            f"unknown user {name!r}: not in the user database (getent passwd)"
        ) from None
    return Account(
        name=entry.pw_name,
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        groups=tuple(os.getgrouplist(entry.pw_name, entry.pw_gid)),
        home=entry.pw_dir,
        shell=entry.pw_shell or "/bin/sh",
    )


def lookup_group(name: object) -> Group:
    """The group named ``name``; a ``ValueError`` says why not."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"expected a group name, got {_describe(name)}")
    try:
        return Group(name, grp.getgrnam(name).gr_gid)
    except KeyError:
        raise ValueError(
            f"unknown group {name!r}: not in the group database (getent group)"
        ) from None


def job_user(user: Account | None, group: Group | None) -> tuple[Account | None, str | None]:
    """A job's ``user`` and ``group`` fields: ``group:`` becomes the primary group; the
    supplementary groups stay the user's own. (``group:`` without ``user:`` is refused by
    ``limits.cross_problems`` before this.)"""
    if user is None or group is None:
        return user, None
    return replace(user, gid=group.gid), group.name


def _describe(value: object) -> str:
    return "an empty string" if isinstance(value, str) else describe_value(value)


def environment(account: Account) -> dict[str, str]:
    """What a login sets for the user, and cron too: ``HOME``, ``USER``, ``LOGNAME``,
    ``SHELL``."""
    return {
        "HOME": account.home,
        "USER": account.name,
        "LOGNAME": account.name,
        "SHELL": account.shell,
    }


def own_environment(euid: int, env: Mapping[str, str]) -> dict[str, str]:
    """``environment()`` of the user the daemon runs as, from the user database (as cron
    does: a ``HOME`` kept by ``sudo -E`` is not root's); from ``env`` where the database
    has no entry for ``euid`` (a container's arbitrary uid)."""
    try:
        entry = pwd.getpwuid(euid)
    except KeyError:
        names = ("HOME", "USER", "LOGNAME", "SHELL")
        return {name: env[name] for name in names if name in env}
    account = Account(
        name=entry.pw_name,
        uid=euid,
        gid=entry.pw_gid,
        groups=(),
        home=entry.pw_dir,
        shell=entry.pw_shell or "/bin/sh",
    )
    return environment(account)

"""Trusting files as root: whether a crontab or a secrets file is safe to read and obey.

A daemon that runs as root runs whatever its crontab says as root, and hands a job the
environment its ``env_file:`` holds (``LD_PRELOAD`` included). So, like cron, it refuses a
file that someone else could have written: one writable by its group or by others, or owned
by anyone but root (or the user the daemon runs as), or a symlink to such a file. As any
other user the daemon can only hurt itself, and nothing is checked.

The directories above the file are not checked; keep them root's too (docs/running.md).
"""

from __future__ import annotations

import os
import pwd
import shlex
import stat
from pathlib import Path

ROOT_UID = 0


def refusal(path: Path, *, euid: int) -> str | None:
    """Why a daemon running as ``euid`` must not trust ``path``, with the command that fixes
    it; None when the file is fine, when the daemon is not root, or when it cannot be read
    (the reader says why)."""
    if euid != ROOT_UID:
        return None
    try:
        info = os.stat(path)  # follows symlinks: the target is what gets read
    except OSError:
        return None
    target = Path(os.path.realpath(path))
    named = (
        f"{path} (a symlink to {target})" if target != Path(os.path.abspath(path)) else str(path)
    )
    quoted = shlex.quote(str(target))
    if info.st_uid not in (ROOT_UID, euid):
        owner = _user_name(info.st_uid)
        return f"{named} is owned by {owner}, not root; fix: chown root {quoted}"
    writers = _writers(info.st_mode)
    if writers:
        mode = stat.S_IMODE(info.st_mode)
        return f"{named} is writable by {writers} (mode {mode:04o}); fix: chmod go-w {quoted}"
    return None


def _writers(mode: int) -> str:
    """Who besides the owner may write a file of this mode, in words."""
    who = [
        name for bit, name in ((stat.S_IWGRP, "its group"), (stat.S_IWOTH, "others")) if mode & bit
    ]
    return " and ".join(who)


def _user_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"

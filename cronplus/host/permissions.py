"""Trusting files as root: a crontab or a secrets file is checked on the very descriptor read.

A daemon that runs as root runs whatever its crontab says as root, and hands a job the
environment its ``env_file:`` holds (``LD_PRELOAD`` included). So, like cron, it refuses a
file that someone else could have written or swapped. ``read`` opens the file once, walking
its path one component at a time from ``/`` (``openat`` with ``O_NOFOLLOW``), and checks what
each step opened before taking the next; the bytes come from the last descriptor, so nothing
can be swapped in between the check and the read. On the way:

- every folder (up to ``/``, and those a symlink leads through) is owned by root (or the
  daemon's user) and not writable by its group or others, unless it is sticky and root's
  (``/tmp``): whoever may rename entries in a folder may swap the file;
- every symlink is owned by root or the daemon's user: in a sticky folder anyone may make
  one, and its target is whatever its maker chose;
- the file itself is a regular file owned by root or the daemon's user, not writable by its
  group or others, with one hard link (anyone may hard-link a file they cannot write).

As any other user the daemon can only hurt itself, and nothing is refused; the file is still
opened once and read through the same size cap. ``open_folder`` gives the state store a
folder opened by the same walk. docs/running.md, "Files cronplus trusts as root", says why.
"""

from __future__ import annotations

import errno
import os
import pwd
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

ROOT_UID = 0

_KIB = 1024
_MIB = 1024 * _KIB


@dataclass(frozen=True)
class Cap:
    """The most cronplus reads of one kind of file: past it, the file is refused unread."""

    what: str
    size: int


CRONTAB = Cap("a crontab", 4 * _MIB)
"""Ten thousand jobs take about 1 MiB."""
ENV_FILE = Cap("an env_file", 256 * _KIB)
"""A job's whole environment must fit the kernel's ``ARG_MAX`` (2 MiB on Linux)."""
SECRET = Cap("a secret file", 64 * _KIB)
"""A password, a token, a key or a connection string; one variable may hold 128 KiB."""


class Refused(Exception):
    """A file a root daemon must not trust; the message names it, says why and gives the fix."""


class TooLarge(Exception):
    """A file over its ``Cap``; the message says the cap (the caller names the file)."""


_MAX_LINKS = 40
"""Symlinks followed on one path before giving up, as the kernel does (``ELOOP``)."""

_STEP = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
"""Each component of a walk: a symlink fails (``ELOOP``), a FIFO does not block the open."""

_CHUNK = _MIB


def read(path: Path, *, euid: int, cap: Cap) -> bytes:
    """The bytes of ``path``, read from the one descriptor whose trust was checked.

    Raises ``Refused`` (only when ``euid`` is root), ``TooLarge``, or ``OSError`` with the
    path (a directory is ``IsADirectoryError``).
    """
    return read_stat(path, euid=euid, cap=cap)[0]


def read_stat(path: Path, *, euid: int, cap: Cap) -> tuple[bytes, os.stat_result]:
    """``read``, and the file's status from the descriptor the bytes came from."""
    if euid == ROOT_UID:
        fd, real = _walk(path, euid)
        try:
            _check_file(os.fstat(fd), _named(path, real), real, euid)
        except BaseException:
            os.close(fd)
            raise
    else:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _read_capped(fd, path, cap)
    finally:
        os.close(fd)


def open_folder(path: Path, *, euid: int) -> int:
    """A descriptor of the folder ``path``; for root, every folder above it and every symlink
    on the way passed the checks above. Its own owner and mode are the caller's to judge."""
    if euid != ROOT_UID:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fd, real = _walk(path, euid)
    if not stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), real)
    return fd


# --- the walk ---------------------------------------------------------------------------


def _walk(path: Path, euid: int) -> tuple[int, str]:
    """Open ``path`` from ``/`` one component at a time, checking each folder before anything
    in it is opened and each symlink before it is followed: the last descriptor and its real
    path. ``..`` goes back to the folder the walk came from, as the kernel does."""
    chain = [_opened_folder(os.open("/", _STEP), "/", str(path), euid)]
    pending = list(reversed(Path(path).absolute().parts[1:]))
    links = 0
    try:
        while pending:
            name = pending.pop()
            if name == "..":
                if len(chain) > 1:
                    os.close(chain.pop()[0])
                continue
            folder_fd, folder = chain[-1]
            entry = os.path.join(folder, name)
            try:
                fd = os.open(name, _STEP, dir_fd=folder_fd)
            except OSError as error:
                if error.errno != errno.ELOOP:
                    raise _located(error, entry) from None
                links += 1
                text = _trusted_link(folder_fd, name, entry, path, euid, links)
                if text.startswith("/"):
                    _close(chain[1:])
                    del chain[1:]
                pending.extend(
                    reversed([part for part in text.split("/") if part not in ("", ".")])
                )
                continue
            if not pending:
                return fd, entry
            chain.append(_opened_folder(fd, entry, str(path), euid))
        return os.dup(chain[-1][0]), chain[-1][1]  # the path ended in "/" or ".."
    finally:
        _close(chain)


def _opened_folder(fd: int, folder: str, path: str, euid: int) -> tuple[int, str]:
    try:
        _check_folder(os.fstat(fd), folder, path, euid)
    except BaseException:
        os.close(fd)
        raise
    return fd, folder


def _close(chain: list[tuple[int, str]]) -> None:
    for fd, _ in chain:
        os.close(fd)


def _located(error: OSError, entry: str) -> OSError:
    """The same error, naming the component that failed rather than the name in its folder."""
    return type(error)(error.errno, error.strerror, entry)


def _trusted_link(folder_fd: int, name: str, entry: str, path: Path, euid: int, links: int) -> str:
    if links > _MAX_LINKS:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
    info = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    if info.st_uid not in (ROOT_UID, euid):
        where = "a symlink" if entry == os.path.abspath(path) else f"a symlink on the way to {path}"
        raise Refused(
            f"{entry}, {where}, is owned by {user_name(info.st_uid)}, not root;"
            f" fix: chown -h root {shlex.quote(entry)}"
        )
    return os.readlink(name, dir_fd=folder_fd)


# --- the checks -------------------------------------------------------------------------


def _check_folder(info: os.stat_result, folder: str, path: str, euid: int) -> None:
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), folder)
    where = f"{folder}, a folder above {path},"
    quoted = shlex.quote(folder)
    if info.st_uid not in (ROOT_UID, euid):
        owner = user_name(info.st_uid)
        raise Refused(
            f"{where} is owned by {owner}, not root, who could swap what it holds;"
            f" fix: chown root {quoted}"
        )
    writers = _writers(info.st_mode)
    sticky = bool(info.st_mode & stat.S_ISVTX) and info.st_uid == ROOT_UID
    if writers and not sticky:  # in a sticky folder of root's, only root may swap root's file
        mode = stat.S_IMODE(info.st_mode)
        raise Refused(
            f"{where} is writable by {writers} (mode {mode:04o}), who could swap what it"
            f" holds; fix: chmod go-w {quoted}"
        )


def _check_file(info: os.stat_result, named: str, real: str, euid: int) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), real)
    quoted = shlex.quote(real)
    if info.st_uid not in (ROOT_UID, euid):
        owner = user_name(info.st_uid)
        raise Refused(f"{named} is owned by {owner}, not root; fix: chown root {quoted}")
    writers = _writers(info.st_mode)
    if writers:
        mode = stat.S_IMODE(info.st_mode)
        raise Refused(
            f"{named} is writable by {writers} (mode {mode:04o}); fix: chmod go-w {quoted}"
        )
    if not stat.S_ISREG(info.st_mode):
        raise Refused(f"{named} is not a regular file; fix: point cronplus at a regular file")
    if info.st_nlink != 1:
        raise Refused(
            f"{named} has {info.st_nlink} hard links, and anyone may hard-link a file they"
            f" cannot write; fix: cp -p {quoted} {quoted}.new && mv {quoted}.new {quoted}"
        )


def _named(path: Path, real: str) -> str:
    return f"{path} (a symlink to {real})" if real != os.path.abspath(path) else str(path)


def _read_capped(fd: int, path: Path, cap: Cap) -> tuple[bytes, os.stat_result]:
    """At most ``cap.size`` bytes; one more means the file is too large (never read whole)."""
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if stat.S_ISREG(info.st_mode) and info.st_size > cap.size:
        raise TooLarge(_too_large(cap))
    chunks: list[bytes] = []
    total = 0
    while total <= cap.size:
        chunk = os.read(fd, min(cap.size + 1 - total, _CHUNK))
        if not chunk:
            return b"".join(chunks), info
        chunks.append(chunk)
        total += len(chunk)
    raise TooLarge(_too_large(cap))


def _too_large(cap: Cap) -> str:
    size = f"{cap.size // _MIB} MiB" if cap.size % _MIB == 0 else f"{cap.size // _KIB} KiB"
    return f"it is larger than {size}, the most cronplus reads of {cap.what}"


def _writers(mode: int) -> str:
    """Who besides the owner may write a file of this mode, in words."""
    who = [
        name for bit, name in ((stat.S_IWGRP, "its group"), (stat.S_IWOTH, "others")) if mode & bit
    ]
    return " and ".join(who)


def user_name(uid: int) -> str:
    """``cronplus-attacker (uid 999)``, or ``uid 999`` where the user database has no name."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"

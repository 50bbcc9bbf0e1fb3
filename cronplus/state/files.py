"""The state folder and its files: private to the daemon's user, opened without following links.

docs/state.md ("The state folder") has the table of what is checked. A refusal is a
``StateError`` naming the folder or the file and the fix; nothing is repaired, since what
is in the folder may be someone else's. ``sqlite.py`` checks its folder and opens its
files here; a cluster node (``clusterd.py``) checks the folder it keeps its own files in.
"""

from __future__ import annotations

import errno
import os
import pwd
import shlex
import stat
from contextlib import suppress
from pathlib import Path

from cronplus.core.model import StateError
from cronplus.host import permissions


def private_folder(path: Path, *, create: bool) -> None:
    """Check the folder of the state database ``path`` (made 0700 first, with any missing
    folders above it, when ``create``): this user's own and closed to others, and for root
    reached only through folders others cannot change (``permissions.open_folder``).

    Once it is, no one else can plant or swap a file in it, so SQLite may open its files
    by name (it cannot be handed a descriptor).
    """
    folder = path.parent
    try:
        if create:
            _make_folders(folder)
        fd = permissions.open_folder(folder, euid=os.geteuid())
    except permissions.Refused as refused:
        raise StateError(f"{path}: refusing the state folder: {refused}") from None
    except OSError as error:
        raise cannot_open(path, error.strerror or str(error)) from error
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    _check_private(info, folder)


def _make_folders(folder: Path) -> None:
    for missing in reversed([folder, *folder.parents]):
        if missing.exists():
            continue
        with suppress(FileExistsError):  # another process made it first
            missing.mkdir(mode=0o700)
            missing.chmod(0o700)  # the umask may have changed the mode


def _check_private(info: os.stat_result, folder: Path) -> None:
    """The state folder is refused, never repaired: what is in it may be someone else's."""
    me, quoted = os.geteuid(), shlex.quote(str(folder))
    if info.st_uid != me:
        raise StateError(
            f"{folder}: the state folder is owned by {permissions.user_name(info.st_uid)},"
            f" not by {permissions.user_name(me)}, whom cronplus runs as, so that user could"
            f" change the ledger and the history; fix: point settings.state at a folder of"
            f" your own (cronplus makes it), or check its files and chown {_login(me)} {quoted}"
        )
    open_to = _open_to(info.st_mode)
    if open_to:
        mode = stat.S_IMODE(info.st_mode)
        raise StateError(
            f"{folder}: the state folder is open to {open_to} (mode {mode:04o}), and must be"
            f" this user's alone; fix: chmod 700 {quoted} (and check its files)"
        )


def _login(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _open_to(mode: int) -> str:
    who = [name for mask, name in ((0o070, "its group"), (0o007, "others")) if mode & mask]
    return " and ".join(who)


_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def private_file(path: Path, flags: int = os.O_RDWR) -> int:
    """Open a state file without following a symlink, creating it 0600 if ``flags`` write;
    one that is not a plain file of this user's with one link is refused."""
    try:
        if flags == os.O_RDONLY:
            fd = os.open(path, flags | _NO_FOLLOW)
        else:
            try:
                fd = os.open(path, flags | _NO_FOLLOW | os.O_CREAT | os.O_EXCL, 0o600)
                os.fchmod(fd, 0o600)
            except FileExistsError:
                fd = os.open(path, flags | _NO_FOLLOW)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise _symlink(path) from None
        raise cannot_open(path, error.strerror or str(error)) from error
    try:
        _check_state_file(os.fstat(fd), path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_siblings(path: Path) -> None:
    """SQLite opens its journal files by name: those already there must be plain files too."""
    for suffix in _JOURNALS:
        journal = sibling(path, suffix)
        try:
            info = os.stat(journal, follow_symlinks=False)
        except FileNotFoundError:
            continue
        except OSError as error:
            raise cannot_open(journal, error.strerror or str(error)) from error
        if stat.S_ISLNK(info.st_mode):
            raise _symlink(journal)
        _check_state_file(info, journal)


_JOURNALS = ("-wal", "-shm", "-journal")


def _check_state_file(info: os.stat_result, path: Path) -> None:
    me = os.geteuid()
    if not stat.S_ISREG(info.st_mode):
        raise StateError(f"{path}: is not a regular file; {move_aside(path)}")
    if info.st_uid != me:
        raise StateError(
            f"{path}: is owned by {permissions.user_name(info.st_uid)}, not by"
            f" {permissions.user_name(me)}, whom cronplus runs as, so what it holds may be"
            f" that user's; {move_aside(path)}"
        )
    if info.st_nlink != 1:
        raise StateError(
            f"{path}: has {info.st_nlink} hard links, and a state file must have one (another"
            f" name may be anyone's way to it); {move_aside(path)}"
        )


def _symlink(path: Path) -> StateError:
    quoted = shlex.quote(str(path))
    return StateError(
        f"{path}: is a symlink, and cronplus follows none in its state folder (it may point"
        f" at any file); fix: rm {quoted}, and point settings.state at the real database if"
        f" it led to one"
    )


def sibling(path: Path, suffix: str) -> Path:
    """The file beside the database ``path`` whose name adds ``suffix`` (``.lock``, ``-wal``)."""
    return path.with_name(path.name + suffix)


def move_aside(path: Path) -> str:
    """The fix for a broken or foreign state file, as the end of its message."""
    quoted = shlex.quote(str(path))
    return f"move it aside: mv {quoted} {quoted}.broken; cronplus starts a fresh one"


def cannot_open(path: Path, why: str) -> StateError:
    """A state file or folder the system would not open (``why``: its error)."""
    return StateError(
        f"{path}: cannot open it ({why}); make the file and its folder readable and writable"
        f" by this user (ls -l {shlex.quote(str(path))}), or point settings.state elsewhere"
    )

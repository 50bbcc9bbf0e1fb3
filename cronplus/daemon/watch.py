"""The config watcher: tells the daemon, within 2 s, that the crontab file has changed.

An effect module like ``runner.py``: it reads file metadata (``lstat``, ``readlink``) and,
on Linux, talks to inotify through ``ctypes`` on libc. It never reads the wall clock; its
timers run on the event loop's monotonic clock.

What counts as a change: what the crontab path names now differs from what it named at
the last report, by (target path, symlink texts, ``st_dev``, ``st_ino``, ``st_size``,
``st_mtime_ns``). So an in-place write, an editor's write-to-temp-then-rename, a symlink
swap (``ln -sfn new tmp && mv -T tmp crontab.yaml``) and a Kubernetes ConfigMap's ``..data``
swap all count; a ``chmod``, or touching another file in the folder, does not. A crontab
that vanishes is not reported (there is nothing to load, and the old jobs keep running);
its return is.

Two kinds, visible as ``ConfigWatcher.kind``:

- ``"inotify"`` (Linux): no polling at all, so an idle daemon costs no CPU. It watches
  every directory whose entries decide what the path names: the crontab's own folder,
  and the folder of each symlink met on the way to the real file (re-resolved after every
  change). Events are filtered by entry name, and a burst (an editor's save is several
  events) is reported once, ``settle`` seconds after the last event (or, for a writer
  that never pauses, ten ``settle`` periods after the first).
- ``"poll"``: where inotify is missing (macOS) or cannot be set up (out of file
  descriptors or inotify watches, an unreadable folder), a ``stat`` every
  ``poll_interval`` seconds. If re-arming inotify after a change fails, the watcher
  switches to polling for good; ``kind`` says so.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import logging
import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_log = logging.getLogger("cronplus.daemon.watch")

_MAX_LINKS = 40
"""Symlinks followed before giving up, as the kernel does (``ELOOP``)."""

_MAX_SETTLES = 10
"""A burst that never pauses is still reported this many ``settle`` periods after it began."""


# --- what the path names --------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Identity:
    """The file a path names at one moment; equal identities mean nothing to reload.

    Two writes of the same size within one tick of the file system's mtime clock (a few
    ms) look equal; the contract accepts that rather than read the file on every event.
    """

    target: str
    links: tuple[str, ...]
    device: int
    inode: int
    size: int
    mtime_ns: int


@dataclass(frozen=True, kw_only=True)
class _Snapshot:
    """What the path names now (``None``: nothing), and the entries that decide it."""

    identity: _Identity | None
    spots: frozenset[tuple[str, str]]
    """(real directory, entry name): a change to any of these may change what is named."""


def _snapshot(path: Path) -> _Snapshot:
    """Resolve ``path`` one component at a time, noting every symlink met on the way.

    ``os.path.realpath`` would give the end of the chain but not the links in between, and
    a ConfigMap's ``..data`` link sits in the middle of the chain.
    """
    absolute = path.absolute()
    here = absolute.anchor
    pending = list(reversed(absolute.parts[1:]))
    spots: set[tuple[str, str]] = set()
    links: list[str] = []
    while pending:
        name = pending.pop()
        if name == "..":
            here = os.path.dirname(here)
            continue
        entry = os.path.join(here, name)
        try:
            info = os.lstat(entry)
        except OSError:  # missing, or a file where a folder was expected: watch for it
            spots.add((here, name))
            return _Snapshot(identity=None, spots=frozenset(spots))
        if stat.S_ISLNK(info.st_mode):
            spots.add((here, name))
            try:
                text = os.readlink(entry)
            except OSError:  # replaced since the lstat: its event is on the way
                return _Snapshot(identity=None, spots=frozenset(spots))
            links.append(text)
            if len(links) > _MAX_LINKS:
                return _Snapshot(identity=None, spots=frozenset(spots))
            here = _follow(here, text, pending)
        elif pending:
            here = entry
        else:
            spots.add((here, name))
            return _Snapshot(identity=_identity(entry, links, info), spots=frozenset(spots))
    # Only a path that is a folder (or "/") ends here; it names no file.
    return _Snapshot(identity=None, spots=frozenset(spots))


def _identity(target: str, links: list[str], info: os.stat_result) -> _Identity:
    return _Identity(
        target=target,
        links=tuple(links),
        device=info.st_dev,
        inode=info.st_ino,
        size=info.st_size,
        mtime_ns=info.st_mtime_ns,
    )


def _follow(here: str, text: str, pending: list[str]) -> str:
    """Queue a symlink's components to be walked; return the folder they start from."""
    parts = Path(text).parts
    if os.path.isabs(text):
        here, parts = parts[0], parts[1:]
    pending.extend(reversed(parts))
    return here


# --- inotify through libc -------------------------------------------------------------

_IN_ATTRIB = 0x00000004
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_FROM = 0x00000040
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_DELETE = 0x00000200
_IN_DELETE_SELF = 0x00000400
_IN_MOVE_SELF = 0x00000800
_IN_Q_OVERFLOW = 0x00004000
_IN_IGNORED = 0x00008000
_IN_ONLYDIR = 0x01000000
# inotify.h defines these two as the open(2) flags of the same names.
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC

_WATCH_MASK = (
    _IN_CLOSE_WRITE
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_MOVED_FROM
    | _IN_ATTRIB
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
    | _IN_ONLYDIR
)
# Events about the watched folder itself, not an entry in it: the folder was deleted or
# renamed (so the path may now lead elsewhere), or the kernel's queue overflowed.
_SELF_EVENTS = _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_Q_OVERFLOW

_EVENT_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len
_READ_SIZE = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class _Event:
    wd: int
    mask: int
    name: str


def _parse_events(buffer: bytes) -> list[_Event]:
    """Split what one ``read`` of an inotify fd returned into events."""
    events: list[_Event] = []
    offset = 0
    while offset + _EVENT_HEADER.size <= len(buffer):
        wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(buffer, offset)
        start = offset + _EVENT_HEADER.size
        # The name is NUL-padded to an alignment boundary; bytes after the first NUL are padding.
        raw = buffer[start : start + length].split(b"\0", 1)[0]
        events.append(_Event(wd=wd, mask=mask, name=os.fsdecode(raw)))
        offset = start + length
    return events


class _Libc:
    """The three inotify calls of libc, with errors raised as ``OSError``."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._init1 = lib.inotify_init1
        self._init1.argtypes = [ctypes.c_int]
        self._init1.restype = ctypes.c_int
        self._add_watch = lib.inotify_add_watch
        self._add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._add_watch.restype = ctypes.c_int
        self._rm_watch = lib.inotify_rm_watch
        self._rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        self._rm_watch.restype = ctypes.c_int

    def init(self) -> int:
        return _checked(self._init1(_IN_NONBLOCK | _IN_CLOEXEC), "inotify_init1")

    def add_watch(self, fd: int, directory: str) -> int:
        wd = self._add_watch(fd, os.fsencode(directory), _WATCH_MASK)
        return _checked(wd, f"inotify_add_watch {directory}")

    def rm_watch(self, fd: int, wd: int) -> None:
        if self._rm_watch(fd, wd) < 0 and ctypes.get_errno() != errno.EINVAL:
            _checked(-1, "inotify_rm_watch")
        # EINVAL: the kernel already dropped the watch (its folder was deleted).


def _checked(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


@functools.cache
def _libc() -> _Libc | None:
    """libc's inotify, or ``None`` where libc has none (macOS)."""
    try:
        lib = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    return _Libc(lib) if hasattr(lib, "inotify_init1") else None


# --- the watcher ----------------------------------------------------------------------


class ConfigWatcher:
    """Calls ``on_change()`` on the event loop when the crontab at ``path`` changes.

    ``kind`` is ``"inotify"`` or ``"poll"``; it is settled by ``start()``, which falls back
    to ``"poll"`` (and logs why, also kept in ``fallback_reason``) if inotify cannot be set
    up. It can also fall back later, if re-arming the watches after a change fails.
    ``settle`` only applies to inotify; ``poll_interval`` only to polling.
    """

    def __init__(
        self,
        path: Path,
        *,
        on_change: Callable[[], object],
        force_poll: bool = False,
        settle: float = 0.1,
        poll_interval: float = 1.0,
    ) -> None:
        _require_positive("settle", settle)
        _require_positive("poll_interval", poll_interval)
        self.path = path
        self.kind = "inotify"
        self.fallback_reason = ""
        """Why ``kind`` is ``"poll"``; empty while it is ``"inotify"``."""
        if force_poll:
            self.kind, self.fallback_reason = "poll", "force_poll=True"
        elif _libc() is None:
            self.kind, self.fallback_reason = "poll", "this libc has no inotify"
        self._on_change = on_change
        self._settle = settle
        self._poll_interval = poll_interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seen: _Identity | None = None
        self._fd = -1
        self._watches: dict[int, frozenset[str]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._burst_began: float | None = None
        self._closed = False

    def start(self) -> None:
        """Begin watching; needs a running event loop. No thread: the loop does the waiting."""
        if self._closed:
            raise RuntimeError(f"ConfigWatcher for {self.path} is closed; make a new one")
        if self._loop is not None:
            raise RuntimeError(f"ConfigWatcher for {self.path} is already started")
        self._loop = asyncio.get_running_loop()
        if self.kind == "inotify" and self._start_inotify():
            return
        self._seen = _snapshot(self.path).identity
        self._schedule_poll()

    def close(self) -> None:
        """Stop watching and release the inotify fd; no ``on_change`` comes after this."""
        self._closed = True
        self._cancel_timer()
        self._close_inotify()

    # --- inotify ---

    def _start_inotify(self) -> bool:
        """Set up inotify; False (having switched ``kind`` to poll) if that cannot be done."""
        libc = _libc()
        assert libc is not None and self._loop is not None
        try:
            self._fd = libc.init()
            self._seen = self._arm().identity
        except OSError as error:
            self._fall_back(error)
            return False
        self._loop.add_reader(self._fd, self._on_readable)
        return True

    def _arm(self) -> _Snapshot:
        """Watch the folders that decide what the path names; drop watches no longer needed.

        The snapshot is taken again after the watches are up: a change racing with this is
        then either in the snapshot or arrives as an event.
        """
        snapshot = _snapshot(self.path)
        for _ in range(3):
            self._watch(snapshot.spots)
            again = _snapshot(self.path)
            if again.spots == snapshot.spots:
                break
            snapshot = again  # the chain moved while we armed: follow it
        return again

    def _watch(self, spots: frozenset[tuple[str, str]]) -> None:
        libc = _libc()
        assert libc is not None
        watches: dict[int, set[str]] = {}
        for directory, name in spots:
            try:
                wd = libc.add_watch(self._fd, directory)
            except (FileNotFoundError, NotADirectoryError):
                continue  # gone since the snapshot: the next snapshot in _arm differs
            # Two spellings of one folder get one wd from the kernel, so names are merged.
            watches.setdefault(wd, set()).add(name)
        for wd in self._watches.keys() - watches.keys():
            libc.rm_watch(self._fd, wd)
        self._watches = {wd: frozenset(names) for wd, names in watches.items()}

    def _on_readable(self) -> None:
        try:
            buffer = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        relevant = False
        for event in _parse_events(buffer):
            relevant |= self._matters(event)  # no short cut: _matters forgets dropped watches
        if relevant:
            self._event_seen()

    def _matters(self, event: _Event) -> bool:
        if event.mask & _IN_IGNORED:
            # The kernel dropped a watch we still wanted (its folder is gone): re-arm.
            return self._watches.pop(event.wd, None) is not None
        if event.mask & _SELF_EVENTS:
            return True
        return event.name in self._watches.get(event.wd, frozenset())

    def _event_seen(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        if self._burst_began is None:
            self._burst_began = now
        due = min(now + self._settle, self._burst_began + self._settle * _MAX_SETTLES)
        self._cancel_timer()
        self._timer = self._loop.call_at(due, self._settled)

    def _settled(self) -> None:
        self._timer = None
        self._burst_began = None
        try:
            identity = self._arm().identity
        except OSError as error:
            self._fall_back(error)
            self._poll()
            return
        self._report_if_changed(identity)

    def _fall_back(self, error: OSError) -> None:
        self._close_inotify()
        self.kind = "poll"
        self.fallback_reason = str(error)
        _log.warning("watching %s by polling every %ss: %s", self.path, self._poll_interval, error)

    def _close_inotify(self) -> None:
        if self._fd < 0:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
        os.close(self._fd)  # closing the fd drops every watch on it
        self._fd = -1
        self._watches = {}

    # --- poll ---

    def _schedule_poll(self) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(self._poll_interval, self._poll)

    def _poll(self) -> None:
        self._schedule_poll()  # first, so a raising on_change does not end the polling
        self._report_if_changed(_snapshot(self.path).identity)

    # --- both ---

    def _report_if_changed(self, identity: _Identity | None) -> None:
        if identity is None or identity == self._seen:
            return
        self._seen = identity
        self._on_change()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _require_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(
            f"ConfigWatcher {name}: expected a positive number of seconds, got {value!r}"
        )

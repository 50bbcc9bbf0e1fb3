"""Descriptors held outside this process's table while a burst of jobs spawns.

Every spawn copies the daemon's descriptor table (``vfork`` without ``CLONE_FILES``) and
the child's ``close_fds`` walks the copy again, so a start costs in proportion to the
descriptors the daemon holds. In a burst of N starts in one loop turn the read ends of the
children already started pile up, and the last start copies 2N of them. A descriptor sent
over a Unix socket (``SCM_RIGHTS``) and not yet received keeps its pipe open without a slot
in the table. So the runner sends each few children's read ends to itself, closes its own
copies, and takes them all back, in order, on the next loop turn, before it reads from them
(docs/running.md, "Parking the read ends", has the figures).

Parking never changes what a job sees, only what a burst costs. ``park`` refuses, leaving
the ends in the table, where it cannot be done safely: no ``SOCK_SEQPACKET`` for
``AF_UNIX`` (macOS), no ``/proc/self/fd`` that counts the table, a send the kernel refuses
(a full buffer, its limit on descriptors in flight), or a table so full that taking
everything back could pass ``RLIMIT_NOFILE``. On a refusal the runner takes back what is
parked at once, so the next pipe that does not fit fails to open as it would without
parking. The limit is the process's, so the count of what is parked is too: the daemon
has two runners (the jobs', the notifiers').
"""

from __future__ import annotations

import array
import os
import resource
import socket
from collections import deque
from collections.abc import Sequence

BATCH = 32
"""Read ends a burst may hold in the table before the runner parks them."""

HEADROOM = 2 * BATCH + 16
"""Descriptors left free once everything parked is back: the ends of the batch not parked
yet (and of the next, while a park is being refused), a ``Popen``'s own (its exec-error
pipe, ``/dev/null``) and the daemon's few others."""

LOST = -1
"""Where ``take_back`` gives this instead of a descriptor, that end could not be received."""

_FD_DIR = "/proc/self/fd"
_INT = array.array("i").itemsize


def open_descriptors() -> int:
    """How many descriptors this process holds; 0 where the count is unknown.

    Linux 6.2 and later report the count as the size of ``/proc/self/fd``, in one ``stat``.
    """
    try:
        return os.stat(_FD_DIR).st_size
    except OSError:
        return 0


class Parking:
    """Parked descriptors, in flight on a socket pair of our own until ``take_back``."""

    _held_in_process = 0  # by every Parking: they all come back into the one table

    def __init__(self) -> None:
        self._pair: tuple[socket.socket, socket.socket] | None = None
        self._batches: deque[int] = deque()  # how many descriptors each message carries
        self._usable = hasattr(socket, "MSG_CMSG_CLOEXEC")  # Linux

    @property
    def held(self) -> int:
        return sum(self._batches)

    def park(self, fds: Sequence[int]) -> bool:
        """Hold ``fds`` outside the table and close them here; False, with ``fds`` left
        as they were, where that cannot be done safely."""
        if not self._usable or not fds:
            return False
        try:
            sender = self._sender()
        except OSError:
            self._usable = False
            return False
        in_table = open_descriptors()
        if in_table == 0:
            self._usable = False
            return False
        # Everything parked comes back at once, into the table as it is then.
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and in_table + Parking._held_in_process + HEADROOM > soft:
            return False
        try:
            socket.send_fds(sender, [b"p"], list(fds))
        except OSError:
            return False
        for fd in fds:
            os.close(fd)
        self._batches.append(len(fds))
        Parking._held_in_process += len(fds)
        return True

    def take_back(self) -> list[int]:
        """Every parked descriptor, new in the table and close-on-exec, in the order
        parked (``LOST`` for one the kernel could not install); the socket pair is closed."""
        taken: list[int] = []
        if self._pair is None:
            return taken
        receiver = self._pair[1]
        Parking._held_in_process -= self.held
        while self._batches:
            count = self._batches.popleft()
            taken.extend(_receive(receiver, count))
        for end in self._pair:
            end.close()
        self._pair = None
        return taken

    def _sender(self) -> socket.socket:
        if self._pair is None:
            # Message boundaries keep each batch apart, in order.
            pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            for end in pair:
                end.setblocking(False)  # a full buffer refuses the send; never wait on it
            self._pair = pair
        return self._pair[0]


def _receive(receiver: socket.socket, count: int) -> list[int]:
    """One batch of ``count`` descriptors; what did not fit in the table is ``LOST``.

    Not ``socket.recv_fds``: it cannot ask for close-on-exec (``MSG_CMSG_CLOEXEC``).
    """
    fds = array.array("i")
    try:
        _data, ancillary, _flags, _address = receiver.recvmsg(
            1, socket.CMSG_SPACE(count * _INT), socket.MSG_CMSG_CLOEXEC
        )
    except OSError:
        ancillary = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % _INT])
    # Past RLIMIT_NOFILE the kernel installs what fits, closes the rest and sets MSG_CTRUNC.
    return [*fds, *[LOST] * (count - len(fds))]

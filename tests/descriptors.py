"""This test process's descriptor table: how many it holds, and a soft limit that leaves
exactly so many free (Linux: counted in /proc/self/fd)."""

from __future__ import annotations

import errno
import os
import resource


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def free_descriptor_slots() -> int:
    opened: list[int] = []
    try:
        while True:
            opened.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as error:
        assert error.errno == errno.EMFILE, error
    finally:
        for fd in opened:
            os.close(fd)
    return len(opened)


def limit_descriptors(free: int, hard: int) -> None:
    """Lower the soft RLIMIT_NOFILE until exactly ``free`` more descriptors can be opened."""
    limit = open_fds()
    for _ in range(50):
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        have = free_descriptor_slots()
        if have == free:
            return
        limit += free - have
    raise AssertionError(f"could not leave exactly {free} descriptors free")

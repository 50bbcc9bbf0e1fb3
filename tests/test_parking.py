"""Parking descriptors outside the table: real pipes, a real socket pair, the real limit.

Linux-only: the table is counted through ``/proc/self/fd``.
"""

from __future__ import annotations

import errno
import os
import resource
import sys
from collections.abc import Iterator

import pytest
from descriptors import limit_descriptors

from cronplus.run.parking import HEADROOM, LOST, Parking, open_descriptors

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or open_descriptors() == 0,
    reason="parks only where /proc/self/fd counts the table (Linux 6.2 and later)",
)


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as error:
        assert error.errno == errno.EBADF
        return False
    return True


@pytest.fixture
def soft_limit() -> Iterator[int]:
    """This process's soft RLIMIT_NOFILE, restored after the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_open_descriptors_counts_the_table() -> None:
    before = open_descriptors()
    pipes = [os.pipe() for _ in range(10)]
    try:
        assert open_descriptors() == before + 20
    finally:
        for fd in (fd for pipe in pipes for fd in pipe):
            os.close(fd)
    assert open_descriptors() == before


def test_parked_ends_leave_the_table_and_come_back_in_order_with_what_was_written() -> None:
    pipes = [os.pipe() for _ in range(5)]
    reads, writes = [r for r, _ in pipes], [w for _, w in pipes]
    parking = Parking()
    before = open_descriptors()
    assert parking.park(reads[:2])
    assert parking.park(reads[2:])
    assert not any(is_open(fd) for fd in reads)
    # Two of the socket pair are in the table; the five read ends are not.
    assert (open_descriptors(), parking.held) == (before - 5 + 2, 5)
    for i, fd in enumerate(writes):
        os.write(fd, f"pipe {i}".encode())
        os.close(fd)
    back = parking.take_back()
    assert (len(back), parking.held, open_descriptors()) == (5, 0, before - 5)
    assert [os.read(fd, 100) for fd in back] == [f"pipe {i}".encode() for i in range(5)]
    assert [os.read(fd, 100) for fd in back] == [b""] * 5  # the writers are closed
    assert not any(os.get_inheritable(fd) for fd in back)
    for fd in back:
        os.close(fd)


def test_nothing_parked_takes_back_nothing() -> None:
    parking = Parking()
    before = open_descriptors()
    assert not parking.park([])
    assert (parking.take_back(), open_descriptors()) == ([], before)


def test_a_table_too_full_to_take_everything_back_parks_nothing(soft_limit: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    read, write = os.pipe()
    parking = Parking()
    try:
        # Room for the table as it is and the headroom, not for one more: refused.
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_descriptors() + HEADROOM - 1, hard))
        assert not parking.park([read])
        assert is_open(read) and parking.held == 0
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_descriptors() + HEADROOM + 2, hard))
        assert parking.park([read])
        assert not is_open(read)
        [read] = parking.take_back()
    finally:
        os.close(read)
        os.close(write)


def test_the_room_left_counts_what_every_parking_in_the_process_holds(soft_limit: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    pipes = [os.pipe() for _ in range(20)]
    first, second = Parking(), Parking()
    try:
        # The first park fits (the table, its socket pair, the headroom); the second would
        # not once the first's 20 are counted, though they are out of the table.
        room = open_descriptors() + 2 + HEADROOM + 1
        resource.setrlimit(resource.RLIMIT_NOFILE, (room, hard))
        assert first.park([read for read, _ in pipes])
        assert not second.park([write for _, write in pipes])
        assert (first.held, second.held) == (20, 0)
        reads = first.take_back()
        assert second.park([write for _, write in pipes])
        writes = second.take_back()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft_limit, hard))
    for fd in [*reads, *writes]:
        os.close(fd)


def test_what_the_table_cannot_take_back_is_lost_and_said_to_be(soft_limit: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    pipes = [os.pipe() for _ in range(3)]
    parking = Parking()
    assert parking.park([read for read, _ in pipes])
    try:
        limit_descriptors(1, hard)  # room for one of the three
        back = parking.take_back()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft_limit, hard))
    assert back[0] != LOST and back[1:] == [LOST, LOST]
    os.write(pipes[0][1], b"kept")
    assert os.read(back[0], 10) == b"kept"
    with pytest.raises(BrokenPipeError):  # the lost ones' pipes have no reader left
        os.write(pipes[1][1], b"lost")
    for fd in [back[0], *(write for _, write in pipes)]:
        os.close(fd)

"""When the garbage collector may run: a pause restores what was before it, whatever
happens inside; a held start-up is settled, frozen and collecting again."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from cronplus.core import collector


@pytest.fixture(autouse=True)
def collecting() -> Iterator[None]:
    # What settle() froze stays frozen, as in every test that runs a Daemon: thawed, the
    # garbage of earlier tests would reach the collector, and its warnings, later.
    gc.enable()
    yield
    gc.enable()


def test_a_pause_stops_collection_inside_and_restores_it_after() -> None:
    with collector.paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_pause_inside_a_pause_leaves_the_outer_one_in_force() -> None:
    with collector.paused():
        with collector.paused():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_pause_restores_collection_when_its_block_raises() -> None:
    with pytest.raises(KeyError), collector.paused():
        raise KeyError("x")
    assert gc.isenabled()


def test_a_held_start_up_is_frozen_and_collecting_once_settled() -> None:
    collector.hold()
    built: list[list[int]] = [[] for _ in range(100)]
    assert not gc.isenabled()
    collector.settle()
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(built)

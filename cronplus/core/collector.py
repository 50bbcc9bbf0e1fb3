"""When CPython's cyclic garbage collector may run: not while cronplus builds what stays.

The collector is set off by how many containers were allocated, not by how much garbage
there is. Start-up (the imports, the unpickled crontab, every job's state) and a burst of
starts (a task, a process and its buffers for each job) allocate them by the hundred
thousand and leave no cycles to find, yet each pass walks every young value still alive:
80 ms of a 10,000-job start-up, and a pass every 100 ms through a burst of 1,000 starts
(bench/RESULTS.md, "daemon"). Reference counting frees the rest as before; what a pause
leaves in cycles waits for the next pass, except start-up's: about 100 objects, which the
freeze keeps for good (a pass to find them would cost 36-59 ms of the start-up).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No collection inside the block; the collector's state before it is restored."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def hold() -> None:
    """No collection until ``settle()``: a start-up that spans several functions."""
    gc.disable()


def settle() -> None:
    """What exists now lives as long as the process: it leaves the collector's sight
    (``gc.freeze``), so a later pass walks only newer values; collection resumes."""
    gc.freeze()
    gc.enable()

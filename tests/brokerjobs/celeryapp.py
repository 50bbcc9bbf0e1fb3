"""The Celery app of the test worker: ``python -m celery -A brokerjobs.celeryapp worker``.

The broker and the result backend come from ``CRONPLUS_TEST_BROKER`` and
``CRONPLUS_TEST_BACKEND``; ``worker_ready`` touches ``CRONPLUS_TEST_READY``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from celery import Celery  # type: ignore[import-untyped, unused-ignore]
from celery.signals import worker_ready  # type: ignore[import-untyped, unused-ignore]

app = Celery(
    "cronplus_test",
    broker=os.environ.get("CRONPLUS_TEST_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("CRONPLUS_TEST_BACKEND") or None,
)
app.conf.update(
    worker_enable_remote_control=False,  # no pidbox queues left on the broker
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_acks_late=False,
    worker_prefetch_multiplier=1,
)


def _append(line: dict[str, Any]) -> None:
    path = Path(os.environ["CRONPLUS_TEST_RECORD"])
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(line, sort_keys=True) + "\n")
        out.flush()
        os.fsync(out.fileno())


@app.task(name="cronplus_test.record", bind=True)  # type: ignore[untyped-decorator, unused-ignore]
def record(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Appends ``{"task_id", "args", "kwargs", "queue"}`` and returns it."""
    info = self.request.delivery_info or {}
    line = {
        "task_id": self.request.id,
        "args": list(args),
        "kwargs": dict(kwargs),
        "queue": info.get("routing_key"),
    }
    _append(line)
    return line


@app.task(name="cronplus_test.fail_once", bind=True)  # type: ignore[untyped-decorator, unused-ignore]
def fail_once(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Records every try; the first try of each task id raises, later ones succeed."""
    info = self.request.delivery_info or {}
    marker = Path(os.environ["CRONPLUS_TEST_RECORD"] + ".failed-" + str(self.request.id))
    line = {
        "task_id": self.request.id,
        "args": list(args),
        "kwargs": dict(kwargs),
        "queue": info.get("routing_key"),
        "failed": not marker.exists(),
    }
    _append(line)
    if line["failed"]:
        marker.touch()
        raise RuntimeError(f"cronplus_test.fail_once: first try of {self.request.id}")
    return line


def _tick() -> None:
    """Nothing: the timer only wakes the event loop, which checks for a shutdown then."""


@worker_ready.connect  # type: ignore[untyped-decorator, unused-ignore]
def _ready(sender: Any = None, **_: Any) -> None:
    # A warm shutdown (SIGTERM) only sets a flag that the event loop reads after its poll,
    # which otherwise sleeps until its next timer: up to 10 s. Wake it every 0.1 s.
    hub = getattr(sender, "hub", None)
    if hub is not None:
        hub.call_repeatedly(0.1, _tick)
    ready = os.environ.get("CRONPLUS_TEST_READY")
    if ready:
        Path(ready).write_text(str(os.getpid()))

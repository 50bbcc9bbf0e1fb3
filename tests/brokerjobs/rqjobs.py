"""The RQ job functions of the test worker: enqueue ``"brokerjobs.rqjobs.record"``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rq import get_current_job


def record(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Appends ``{"job_id", "args", "kwargs", "queue"}`` to ``$CRONPLUS_TEST_RECORD``."""
    job = get_current_job()
    line: dict[str, Any] = {
        "job_id": job.id if job is not None else None,
        "args": list(args),
        "kwargs": dict(kwargs),
        "queue": job.origin if job is not None else None,
    }
    with Path(os.environ["CRONPLUS_TEST_RECORD"]).open("a", encoding="utf-8") as out:
        out.write(json.dumps(line, sort_keys=True) + "\n")
        out.flush()
        os.fsync(out.fileno())
    return line


def fail_once(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Records every try; the first try of each job id raises, later ones succeed."""
    line = record(*args, **kwargs)
    marker = Path(os.environ["CRONPLUS_TEST_RECORD"] + ".failed-" + str(line["job_id"]))
    if not marker.exists():
        marker.touch()
        raise RuntimeError(f"brokerjobs.rqjobs.fail_once: first try of {line['job_id']}")
    return line

"""A run's output in the event log: ``RunOutput`` takes the lines of each of its attempts
as they come and logs them as ``job_output`` events, within the job's budget.

A line is logged with its job, run id, attempt and stream, its text as the message; stdout
at ``info``, stderr at the job's ``stderr_level``. The budget, ``output_log_limit`` bytes a
run (all its attempts, both streams), keeps a chatty job from flooding the log: the line
that would pass it is not logged, one ``output_not_logged`` warning says so, and the rest of
the run's lines cost nothing more. History keeps each attempt's head and tail all the same
(``Job.output_keep``), so ``cronplus logs JOB`` still shows how it ended.
"""

from __future__ import annotations

import logging

from cronplus.core.model import Job, OutputLevel, Slot
from cronplus.observe.logs import EventLog
from cronplus.run.limits import format_size

_LEVELS = {OutputLevel.INFO: logging.INFO, OutputLevel.WARNING: logging.WARNING}


class RunOutput:
    """The log's share of one run's output: what is left of its budget, across attempts."""

    __slots__ = ("_fields", "_job", "_left", "_log", "_stderr_level")

    def __init__(self, log: EventLog, job: Job, slot: Slot) -> None:
        self._log = log
        self._job = job
        self._left = job.output_log_limit
        self._stderr_level = _LEVELS[job.stderr_level]
        self._fields: dict[str, object] = {"job": job.name, "run_id": slot.run_id}

    def attempt(self, attempt: int) -> AttemptOutput:
        """The sink of one attempt's lines (``RunningProcess.send_lines``)."""
        return AttemptOutput(self, attempt)

    def take(self, stream: str, text: str, *, dropped: int, attempt: int) -> bool:
        cost = len(text.encode("utf-8", errors="replace")) + 1
        if cost > self._left:
            if self._left >= 0:
                self._over(attempt)
            return False
        self._left -= cost
        level = self._stderr_level if stream == "stderr" else logging.INFO
        if dropped:
            text = f"{text} [... {dropped} more bytes of this line not logged]"
        self._log.emit(level, "job_output", text, **self._fields, attempt=attempt, stream=stream)
        return True

    def _over(self, attempt: int) -> None:
        self._left = -1  # said once a run
        limit = format_size(self._job.output_log_limit)  # as the file writes it: 64K
        self._log.warning(
            "output_not_logged",
            f"job {self._job.name}: its output passed output_log_limit ({limit} a run);"
            f" the rest of this run's lines are not logged (history keeps each attempt's"
            f" head and tail: cronplus logs {self._job.name})",
            **self._fields,
            attempt=attempt,
            output_log_limit=self._job.output_log_limit,
        )


class AttemptOutput:
    """``LineSink`` of one attempt: its lines go to the run's ``RunOutput``."""

    __slots__ = ("_attempt", "_run")

    def __init__(self, run: RunOutput, attempt: int) -> None:
        self._run = run
        self._attempt = attempt

    def line(self, stream: str, text: str, *, dropped: int) -> bool:
        return self._run.take(stream, text, dropped=dropped, attempt=self._attempt)

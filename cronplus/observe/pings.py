"""Healthchecks-style pings for jobs with a ``ping_url``.

Per run (a slot with its retries): ``POST URL/start`` when the first attempt starts; after
the last attempt ``POST URL`` on success, ``URL/<exit code>`` on a failure with a non-zero
exit code, else ``URL/fail`` (a timeout, a signal, a command that could not start, or a
failing exit 0 under ``success_codes``). Every ping carries ``rid``: a UUID derived from the
run id, since healthchecks.io accepts only UUIDs there. A failure's body is the stderr
tail, cut (from the front) to the server's ``Ping-Body-Limit`` when it sent one.

The URL is a secret: it appears in no log line, no error and no job environment. The pings
of one run go out in order (the result waits for the start ping) and never hold up the job.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from cronplus.clock import Clock
from cronplus.core.model import Delivery, Job, RunResult, Slot
from cronplus.observe import webclient
from cronplus.observe.logs import EventLog
from cronplus.observe.notifiers import Background, deliver

RID_NAMESPACE = uuid.UUID("5d0c7f4e-8f7b-4c1e-9a59-0c2f1c3e7a11")
"""Fixed forever: the same run id always gives the same ``rid``."""
DEFAULT_BODY_LIMIT = 10_000
"""Bytes of body sent until the server names its own limit (healthchecks' old default)."""


def rid(run_id: str) -> str:
    """The ``rid`` of a run: a UUID (version 5) of its run id."""
    return str(uuid.uuid5(RID_NAMESPACE, run_id))


def ping_address(base: str, *, run_id: str, result: RunResult | None) -> str:
    """The URL to ping: the start of a run (``result`` None) or its end."""
    suffix = "/start" if result is None else _end_suffix(result)
    parts = urlsplit(base)
    query = "&".join(q for q in (parts.query, f"rid={rid(run_id)}") if q)
    path = parts.path.rstrip("/") + suffix if suffix else parts.path
    return urlunsplit((parts.scheme, parts.netloc, path, query, parts.fragment))


def _end_suffix(result: RunResult) -> str:
    if result.outcome.ok:
        return ""
    # healthchecks reads /0 as success, so a failing exit 0 must say /fail.
    if result.exit_code is not None and result.exit_code != 0:
        return f"/{result.exit_code}"
    return "/fail"


def failure_body(stderr_tail: str, limit: int) -> bytes:
    """The end of the stderr tail in at most ``limit`` bytes, cut on a UTF-8 boundary."""
    data = stderr_tail.encode("utf-8")
    if len(data) <= limit:
        return data
    cut = data[len(data) - limit :] if limit > 0 else b""
    while cut and 0x80 <= cut[0] <= 0xBF:
        cut = cut[1:]  # a continuation byte: the character began before the cut
    return cut


class Pinger:
    """Sends the pings of jobs that have a ``ping_url`` (an ``EngineEvents`` observer)."""

    def __init__(
        self,
        delivery: Delivery,
        *,
        clock: Clock,
        log: EventLog,
        env: Mapping[str, str] = webclient.NO_ENVIRONMENT,
    ) -> None:
        """``env``: where the proxy variables are read (the daemon's environment)."""
        self.delivery = delivery
        self._clock, self._log, self._env = clock, log, env
        self._starts: dict[str, asyncio.Task[None]] = {}
        self._background = Background(log)
        self._limits: dict[str, int] = {}

    def attempt_started(
        self, *, job: Job, slot: Slot, attempt: int, pid: int | None, at: datetime
    ) -> None:
        if job.ping_url and attempt == 1:
            address = ping_address(job.ping_url, run_id=slot.run_id, result=None)
            task = self._background.spawn(self._ping(job.name, address, b"", "start"))
            self._starts[slot.run_id] = task
            task.add_done_callback(lambda _: self._starts.pop(slot.run_id, None))

    def attempt_finished(
        self, *, job: Job, result: RunResult, retry_at: datetime | None, stopped: bool
    ) -> None:
        if not job.ping_url or retry_at is not None:
            return
        start = self._starts.pop(result.run_id, None)
        address = ping_address(job.ping_url, run_id=result.run_id, result=result)
        self._background.spawn(self._end(start, job.name, address, result))

    def slots_missed(self, *, job: Job, result: RunResult, count: int) -> None:
        return  # the ping server notices a missing ping by itself

    async def _end(
        self, start: asyncio.Task[None] | None, job: str, address: str, result: RunResult
    ) -> None:
        if start is not None:
            await asyncio.wait([start])  # in order, and the start's answer names the limit
        if result.outcome.ok:
            await self._ping(job, address, b"", "success")
            return
        limit = self._limits.get(job, DEFAULT_BODY_LIMIT)
        await self._ping(job, address, failure_body(result.stderr_tail, limit), "failure")

    async def _ping(self, job: str, address: str, body: bytes, kind: str) -> None:
        async def once() -> None:
            answer = await webclient.post(
                address, body, env=self._env, headers={"Content-Type": "text/plain"}
            )
            limit = answer.headers.get("ping-body-limit", "")
            if limit.isdigit():
                self._limits[job] = int(limit)
            if not answer.ok:
                raise webclient.HttpError(f"the server answered HTTP {answer.status}")

        def failed(number: int, why: str, final: bool) -> None:
            tries = self.delivery.retries + 1
            text = f"job {job}: {kind} ping, try {number}/{tries} failed: {why}"
            if final:
                self._log.error("ping_lost", f"{text}; giving up", job=job, ping=kind, error=why)
            else:
                self._log.warning("ping_retry", text, job=job, ping=kind, error=why)

        await deliver(once, self.delivery, clock=self._clock, on_failure=failed)

    async def close(self, grace: float) -> None:
        """Give pings under way ``grace`` seconds, then cancel the rest."""
        await self._background.close(grace)

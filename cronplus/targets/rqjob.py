"""``rq:`` targets: ``Queue.enqueue`` with the slot's run id as the job id (the ``rq``
extra; RQ 3's ``unique`` enqueue).

RQ's job ids are letters, digits, ``_`` and ``-``, so the run id is written with ``@``,
``:`` and ``.`` as ``_`` (``backup@2026-03-08T07:00:00Z`` is ``backup_2026-03-08T07_00_00Z``);
a job name with other characters gets 8 hex digits of the run id's SHA-256 after it. The
exact run id is in the job's ``meta`` (``cronplus_run_id``). Enqueued with ``unique``, a
second attempt of a slot whose job is already in Redis does not enqueue it again: the
attempt succeeds, answering ``already enqueued``; a job that failed or was stopped is
requeued instead (RQ's ``requeue``), so a retry runs it again. Redis connections are kept per URL.
"""

from __future__ import annotations

import hashlib
import re
import threading
from datetime import UTC
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import DuplicateJobError
from rq.job import Job as RqJob
from rq.job import JobStatus
from rq.results import Result

from cronplus.core.targets import RqTarget, Target
from cronplus.targets.call import Call, Delivery, TargetFailed, Threads

_PLAIN = re.compile(r"[A-Za-z0-9_-]+")


def job_id(run_id: str) -> str:
    """The RQ job id of ``run_id`` (the module's docstring)."""
    name, _, at = run_id.rpartition("@")
    written = f"{name}_{at}".replace(":", "_").replace(".", "_")
    if _PLAIN.fullmatch(name):
        return written
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", written)
    return f"{safe}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"


def _results_key(ident: str) -> str:
    """The Redis stream of the job's results (RQ's ``Result.get_key``)."""
    results: Any = Result  # its classmethods are untyped
    return str(results.get_key(ident))


class RqSender:
    def __init__(self) -> None:
        self._connections: dict[str, Redis] = {}
        self._lock = threading.Lock()

    def _redis(self, url: str) -> Redis:
        with self._lock:
            found = self._connections.get(url)
            if found is None:
                found = self._connections[url] = Redis.from_url(
                    url, socket_connect_timeout=10, socket_timeout=30
                )
            return found

    async def send(self, target: Target, call: Call, threads: Threads) -> Delivery:
        assert isinstance(target, RqTarget)
        ident = job_id(call.run_id)
        try:
            # The job's results so far: a wait reads only the ones after this attempt's.
            seen = await threads.call(lambda: self._last_result(target, ident))
            response = await threads.call(lambda: self._enqueue(target, call, ident))
            if target.wait is None:
                return Delivery(response=response)
            seconds = max(1, round(target.wait.timeout.total_seconds()))
            return await threads.call(lambda: self._wait(target, ident, seconds, seen))
        except RedisError as error:
            raise TargetFailed(f"Redis failed: {type(error).__name__}: {error}") from None

    def _enqueue(self, target: RqTarget, call: Call, ident: str) -> str:
        queue = Queue(target.queue, connection=self._redis(target.redis))
        extra: dict[str, Any] = {}
        if target.job_timeout is not None:
            extra["timeout"] = max(1, round(target.job_timeout.total_seconds()))
        if call.expires is not None:  # still queued at the next slot: stale
            left = (call.expires - call.sent_at.astimezone(UTC)).total_seconds()
            extra["ttl"] = max(1, round(left))
        try:
            queue.enqueue_call(
                target.func,
                args=list(target.args),
                kwargs=dict(target.kwargs),
                job_id=ident,
                unique=True,
                meta={"cronplus_run_id": call.run_id, "cronplus_attempt": call.attempt},
                description=f"cronplus {call.run_id}",
                **extra,
            )
        except DuplicateJobError:
            return self._again(target, ident)
        return f"job {ident} enqueued on {target.queue}"

    def _again(self, target: RqTarget, ident: str) -> str:
        """The slot's job is in Redis already (an earlier attempt, or a crash after the
        enqueue): a job that failed or was stopped is requeued, any other is left be."""
        job = RqJob.fetch(ident, connection=self._redis(target.redis))
        status = job.get_status()
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            job.requeue()
            return f"job {ident} requeued after it {status.value}"
        return f"job {ident} already enqueued"

    def _last_result(self, target: RqTarget, ident: str) -> str:
        """The id of the newest entry in the job's results stream, or ``0-0``."""
        redis: Any = self._redis(target.redis)  # redis-py's stream replies are loosely typed
        newest = redis.xrevrange(_results_key(ident), "+", "-", count=1)
        return str(newest[0][0].decode()) if newest else "0-0"

    def _wait(self, target: RqTarget, ident: str, seconds: int, seen: str) -> Delivery:
        """The first result after ``seen`` (RQ's ``latest_result`` would give a requeued
        job's old failure at once)."""
        redis: Any = self._redis(target.redis)
        job = RqJob.fetch(ident, connection=redis)
        got = redis.xread({_results_key(ident): seen}, count=1, block=seconds * 1000)
        result = None
        if got:
            result_id, payload = got[0][1][0]
            result = Result.restore(ident, result_id.decode(), payload, connection=redis)
        if result is None:
            raise TargetFailed(
                f"job {ident} did not finish within {seconds}s (status {job.get_status()})",
                response=f"job {ident} {job.get_status()}",
            )
        if result.type is Result.Type.SUCCESSFUL:
            value = repr(result.return_value).encode()
            return Delivery(response=f"job {ident} finished", body=value)
        why = (result.exc_string or "").strip().splitlines()
        raise TargetFailed(
            f"job {ident} {result.type.name.lower()}: {why[-1] if why else 'no reason'}",
            response=f"job {ident} {result.type.name.lower()}",
            body=(result.exc_string or "").encode(),
        )

    def close(self) -> None:
        with self._lock:
            for connection in self._connections.values():
                connection.close()
            self._connections.clear()

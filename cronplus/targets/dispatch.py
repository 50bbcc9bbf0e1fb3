"""One attempt sent to a target: ``Dispatcher.start`` gives a ``RunningTarget``.

A ``RunningTarget`` answers the engine as a ``RunningProcess`` does (``done``, ``wait()``,
``terminate()``, ``mask_secrets()``, ``send_lines()``, ``pid`` None), so slots, retries,
overlap, timeouts, alerts and history are the same for every target. Each kind has one
``Sender`` (``httpcall.py``, ``celerytask.py``, ``rqjob.py``, ``amqppublish.py``), made on
first use and kept with its connections for the daemon's life. A sender's client library
is imported only there, so a crontab without such a target never loads it; a missing
extra is a clear failure of the attempt (and ``validate`` says so first).

The attempt's ``timeout`` bounds the whole exchange: an attempt that passes it is
``timed_out``. A sender whose client blocks runs it on the dispatcher's threads; past the
timeout the engine goes on, and the thread finishes (or fails) on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

from cronplus.core.model import Job, Outcome, Slot
from cronplus.core.targets import HttpTarget, Target, TargetKind
from cronplus.run.command import ProcessResult
from cronplus.run.lines import LineSink
from cronplus.run.secrets import NO_SECRETS, Redactor, Secret
from cronplus.targets.call import BODY_KEPT, Call, Delivery, TargetFailed, Threads

DEFAULT_TIMEOUT = 30.0
"""Seconds a target may take to answer when neither the target nor the job says."""
THREADS = 16
"""Threads for the senders whose client library blocks (Celery, RQ, pika)."""

_T = TypeVar("_T")


class Sender(Protocol):
    async def send(self, target: Target, call: Call, threads: Threads) -> Delivery: ...

    def close(self) -> None: ...


def _load(kind: TargetKind) -> Sender:
    """The sender of ``kind``, imported here so a client library loads only when used."""
    if kind is TargetKind.HTTP:
        from cronplus.targets import httpcall

        return httpcall.HttpSender()
    if kind is TargetKind.CELERY:
        from cronplus.targets import celerytask

        return celerytask.CelerySender()
    if kind is TargetKind.RQ:
        from cronplus.targets import rqjob

        return rqjob.RqSender()
    from cronplus.targets import amqppublish

    return amqppublish.AmqpSender()


def secrets_of(target: Target | None) -> dict[str, str]:
    """The target's strings a ``Redactor`` masks: those the crontab gave as secrets, a
    URL's password, the signing key, the values of ``Authorization``, ``Proxy-Authorization``
    and ``Cookie`` headers, and of headers whose names look secret (``X-Api-Key``), as a
    job's environment would be searched."""
    if target is None:
        return {}
    found: dict[str, str] = {}
    for name in ("url", "broker", "backend", "redis", "body"):
        value = getattr(target, name, None)
        if isinstance(value, str) and value:
            found[name] = value
            password = _password(value)
            if password:
                found[f"{name} password"] = Secret(password)
    for name, value in getattr(target, "headers", {}).items():
        found[name] = Secret(value) if name.lower() in _CREDENTIALS else value
    if isinstance(target, HttpTarget) and target.signature is not None:
        found["signing key"] = Secret(target.signature.key)
    return found


_CREDENTIALS = frozenset({"authorization", "proxy-authorization", "cookie"})


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def deadline(job: Job) -> float:
    """Seconds an attempt of ``job``'s target may take: an ``http`` timeout, else the job's
    ``timeout``, else ``DEFAULT_TIMEOUT`` (with a ``wait``, that wait's on top)."""
    target = job.target
    if isinstance(target, HttpTarget) and target.timeout is not None:
        return target.timeout.total_seconds()
    if job.timeout is not None:
        return job.timeout.total_seconds()
    wait = getattr(target, "wait", None)
    return DEFAULT_TIMEOUT + (0.0 if wait is None else wait.timeout.total_seconds())


class Dispatcher:
    """Starts attempts of jobs that have a ``target``; one per engine."""

    def __init__(self, *, env: Mapping[str, str], threads: int = THREADS) -> None:
        self._env = env
        self._senders: dict[TargetKind, Sender] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._threads = threads
        self._running: set[RunningTarget] = set()

    def start(
        self, job: Job, slot: Slot, attempt: int, *, now: datetime, expires: datetime | None
    ) -> RunningTarget:
        target = job.target
        assert target is not None, "a job without a target is a command"
        call = Call(
            job=job.name,
            run_id=slot.run_id,
            scheduled_at=slot.scheduled_at,
            attempt=attempt,
            sent_at=now,
            expires=expires,
            timeout=deadline(job),
            env=self._env,
        )
        running = RunningTarget(call)
        self._running.add(running)
        running.begin(self._send(target, call), on_done=self._running.discard)
        return running

    @property
    def running(self) -> list[RunningTarget]:
        return list(self._running)

    async def call(self, work: Callable[[], _T]) -> _T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="cronplus-target")
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    async def _send(self, target: Target, call: Call) -> Delivery:
        sender = self._senders.get(target.kind)
        if sender is None:
            sender = self._senders[target.kind] = _load(target.kind)
        return await sender.send(target, call, self)

    def close(self) -> None:
        """Close every sender's connections and let the threads end."""
        for sender in self._senders.values():
            sender.close()
        self._senders.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class RunningTarget:
    """One attempt at a target in flight; the engine's side of it is ``RunningProcess``'s."""

    pid: int | None = None

    def __init__(self, call: Call) -> None:
        self.call = call
        self._hide: Redactor = NO_SECRETS
        self._started = time.monotonic()
        self._stopped = False
        self._task: asyncio.Task[ProcessResult] | None = None

    def begin(self, sending: object, *, on_done: Callable[[RunningTarget], None]) -> None:
        assert asyncio.iscoroutine(sending)
        self._task = asyncio.get_running_loop().create_task(self._run(sending))
        self._task.add_done_callback(lambda _: on_done(self))

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def wait(self) -> ProcessResult:
        assert self._task is not None
        return await asyncio.shield(self._task)

    def mask_secrets(self, hide: Redactor) -> None:
        self._hide = hide

    def send_lines(self, sink: LineSink) -> None:
        """A target writes no lines while it runs: its answer is in the attempt's record."""

    def terminate(self, grace: float) -> None:
        """Stop waiting for the target (``overlap: replace``, the daemon stopping)."""
        if self._task is not None and not self._task.done():
            self._stopped = True
            self._task.cancel()

    async def _run(self, sending: object) -> ProcessResult:
        assert asyncio.iscoroutine(sending)
        timeout = self.call.timeout
        try:
            async with asyncio.timeout(timeout):
                delivery: Delivery = await sending
        except TimeoutError:
            return self._result(Outcome.TIMED_OUT, f"no answer within {timeout:g}s")
        except asyncio.CancelledError:
            if not self._stopped:
                raise
            return self._result(Outcome.KILLED, "stopped before the target answered")
        except TargetFailed as failed:
            return self._result(
                Outcome.FAILED, failed.reason, response=failed.response, body=failed.body
            )
        return self._result(Outcome.SUCCEEDED, "", response=delivery.response, body=delivery.body)

    def _result(
        self, outcome: Outcome, reason: str, *, response: str = "", body: bytes = b""
    ) -> ProcessResult:
        kept = self._hide.mask(body[:BODY_KEPT], cut_after=len(body) > BODY_KEPT)
        return ProcessResult(
            outcome=outcome,
            exit_code=None,
            signal=None,
            duration_s=time.monotonic() - self._started,
            pid=None,
            stdout=kept,
            stderr=b"",
            reason=self._hide(reason),
            stdout_size=len(body),
            response=self._hide(response),
        )

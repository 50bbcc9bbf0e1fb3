"""``celery:`` targets: ``send_task`` by name (the ``celery`` extra), as beat would send it.

The task id is the slot's run id (the same on every retry of the slot, so a worker can
drop a duplicate); ``expires`` is the job's next slot, so a task still queued then is not
run; headers ``cronplus_run_id``, ``cronplus_job`` and ``cronplus_attempt`` ride along.
Success is the broker's confirm: on AMQP, publisher confirms (``confirm_publish``); on
Redis, the push. Celery's own publish retries are off: a refused send fails the attempt
and the job's ``retries`` take over. With ``wait``, the attempt waits for the task's state
in the result backend and succeeds only on ``SUCCESS``; a retry, which has the same task
id, first forgets the result of the try before it. One app, with its connection
pool, is kept per broker and backend.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout

from cronplus.core.targets import CeleryTarget, Target
from cronplus.targets.call import Call, Delivery, TargetFailed, Threads


class CelerySender:
    def __init__(self) -> None:
        self._apps: dict[tuple[str, str | None], Celery] = {}
        self._lock = threading.Lock()

    def _app(self, target: CeleryTarget) -> Celery:
        key = (target.broker, target.backend)
        with self._lock:
            app = self._apps.get(key)
            if app is None:
                app = Celery(
                    "cronplus", broker=target.broker, backend=target.backend, set_as_current=False
                )
                app.conf.update(
                    # The broker's confirm, and no reconnecting loop of kombu's own: a
                    # refused connection fails the attempt, and the job's retries decide.
                    broker_transport_options={"confirm_publish": True, "max_retries": 0},
                    broker_connection_timeout=10,
                    broker_connection_retry_on_startup=False,
                    task_serializer="json",
                    result_serializer="json",
                    accept_content=["json"],
                )
                self._apps[key] = app
            return app

    async def send(self, target: Target, call: Call, threads: Threads) -> Delivery:
        assert isinstance(target, CeleryTarget)
        app = self._app(target)
        options: dict[str, Any] = {}
        if target.queue is not None:
            options["queue"] = target.queue
        if target.priority is not None:
            options["priority"] = target.priority
        if call.expires is not None:  # seconds from now: the engine's clock may be --at's
            options["expires"] = max(1.0, (call.expires - call.sent_at).total_seconds())

        def publish() -> Any:
            if target.wait is not None and call.attempt > 1:
                # A retry has the same task id: forget the failed try's result first, so
                # the wait below is for this try's.
                app.AsyncResult(call.run_id).forget()
            return app.send_task(
                target.task,
                args=list(target.args),
                kwargs=dict(target.kwargs),
                task_id=call.run_id,
                retry=False,
                headers={
                    "cronplus_run_id": call.run_id,
                    "cronplus_job": call.job,
                    "cronplus_attempt": call.attempt,
                },
                **options,
            )

        try:
            result = await threads.call(publish)
        except Exception as error:  # kombu's and the transports' errors have no one base
            raise TargetFailed(f"the broker refused the task: {_why(error)}") from None
        if target.wait is None:
            return Delivery(response=f"task {call.run_id} sent")
        seconds = target.wait.timeout.total_seconds()

        def wait() -> Any:
            return result.get(timeout=seconds, propagate=False, disable_sync_subtasks=False)

        try:
            value = await threads.call(wait)
        except CeleryTimeout:
            raise TargetFailed(
                f"task {call.run_id} gave no result within {seconds:g}s (state {result.state})",
                response=f"task {result.state}",
            ) from None
        except Exception as error:
            raise TargetFailed(f"the result backend failed: {_why(error)}") from None
        state = result.state
        if state != "SUCCESS":
            raise TargetFailed(
                f"task {call.run_id} ended {state}: {value!r}",
                response=f"task {state}",
                body=str(result.traceback or "").encode(),
            )
        return Delivery(response="task SUCCESS", body=repr(value).encode())

    def close(self) -> None:
        with self._lock:
            for app in self._apps.values():
                app.close()
            self._apps.clear()


def _why(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__

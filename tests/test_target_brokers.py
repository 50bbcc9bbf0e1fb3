"""Celery, RQ and AMQP targets against the real brokers, with real workers.

A real Celery worker on RabbitMQ and a real RQ worker on Redis run each task; RabbitMQ's
own queue holds the AMQP messages. The tests check that each slot's work ran once, under
its run id: through a retry after the broker refused (``brokers.Gate``), with ``wait`` for
the result, and across a restart of the installed daemon (marked ``brokers``: workers and
daemons take seconds, so ``make test-brokers`` runs them). Where a broker does not answer
they skip, saying so; CI (``CRONPLUS_REQUIRE_BROKERS=1``) fails them instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import installed
import pytest
from brokers import (
    Gate,
    broker_missing,
    celery_worker,
    package_missing,
    queue_name,
    rabbitmq_url,
    redis_url,
    rq_worker,
    wait_recorded,
)
from conftest import Cronplus, Daemon
from targetrun import T0, run_slot, target_job

from cronplus.core.model import Outcome
from cronplus.core.targets import AmqpTarget, CeleryTarget, RqTarget, Wait
from cronplus.state.sqlite import SqliteStore
from cronplus.targets import amqppublish, rqjob

__all__ = ["queue_name", "rabbitmq_url", "redis_url"]  # the fixtures, for these tests

pytestmark = pytest.mark.brokers  # workers take seconds to start: make test-brokers

RUN_ID = "hook@2026-01-01T07:00:00Z"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore.open(tmp_path / "state.db")
    yield opened
    opened.close()


def gate(url: str, *, refuse: int) -> Gate:
    parts = urlsplit(url)
    return Gate(parts.hostname or "127.0.0.1", parts.port or 5672, refuse=refuse)


# --- Celery on RabbitMQ -----------------------------------------------------------------


def test_a_celery_task_is_sent_once_under_its_run_id_after_the_broker_refused(
    tmp_path: Path, store: SqliteStore, rabbitmq_url: str, queue_name: str
) -> None:
    with celery_worker(tmp_path, rabbitmq_url, queue_name) as worker:
        down = gate(rabbitmq_url, refuse=1)
        try:
            target = CeleryTarget(
                broker=down.url(rabbitmq_url),
                task="cronplus_test.record",
                args=(1, "two"),
                kwargs={"three": 3},
                queue=queue_name,
            )
            rows = run_slot(tmp_path, store, target_job(target, retries=2, timeout=20))
        finally:
            down.close()
        (done,) = wait_recorded(worker.record, 1)
    assert [(r.attempt, r.outcome) for r in rows] == [(1, Outcome.FAILED), (2, Outcome.SUCCEEDED)]
    assert rows[0].reason.startswith("the broker refused the task: ")
    assert rows[1].response == f"task {RUN_ID} sent"
    assert done == {
        "task_id": RUN_ID,
        "args": [1, "two"],
        "kwargs": {"three": 3},
        "queue": queue_name,
    }


def test_celery_wait_records_the_tasks_state_from_the_result_backend(
    tmp_path: Path, store: SqliteStore, rabbitmq_url: str, redis_url: str, queue_name: str
) -> None:
    with celery_worker(tmp_path, rabbitmq_url, queue_name, backend_url=redis_url):
        ok = CeleryTarget(
            broker=rabbitmq_url,
            backend=redis_url,
            task="cronplus_test.record",
            queue=queue_name,
            wait=Wait(timeout=timedelta(seconds=15)),
        )
        (row,) = run_slot(tmp_path, store, target_job(ok, timeout=30))
        assert (row.outcome, row.response) == (Outcome.SUCCEEDED, "task SUCCESS")
        assert RUN_ID in row.stdout  # the task's return value: its record
        failing = CeleryTarget(
            broker=rabbitmq_url,
            backend=redis_url,
            task="cronplus_test.fail_once",
            queue=queue_name,
            wait=Wait(timeout=timedelta(seconds=15)),
        )
        rows = run_slot(tmp_path, store, target_job(failing, name="flaky", retries=1, timeout=30))
    assert [(r.outcome, r.response) for r in rows] == [
        (Outcome.FAILED, "task FAILURE"),
        (Outcome.SUCCEEDED, "task SUCCESS"),
    ]


# --- RQ on Redis --------------------------------------------------------------------------


def test_an_rq_job_is_enqueued_once_under_its_run_id_after_redis_refused(
    tmp_path: Path, store: SqliteStore, redis_url: str, queue_name: str
) -> None:
    with rq_worker(tmp_path, redis_url, queue_name) as worker:
        down = gate(redis_url, refuse=1)
        try:
            target = RqTarget(
                redis=down.url(redis_url),
                func="brokerjobs.rqjobs.record",
                queue=queue_name,
                args=(7,),
                kwargs={"k": "v"},
                wait=Wait(timeout=timedelta(seconds=15)),
            )
            rows = run_slot(tmp_path, store, target_job(target, retries=2, timeout=30))
        finally:
            down.close()
        records = wait_recorded(worker.record, 1)
    ident = "hook_2026-01-01T07_00_00Z"
    assert [(r.attempt, r.outcome) for r in rows] == [(1, Outcome.FAILED), (2, Outcome.SUCCEEDED)]
    assert rows[0].reason.startswith("Redis failed: ConnectionError")
    assert rows[1].response == f"job {ident} finished"
    assert records == [{"job_id": ident, "args": [7], "kwargs": {"k": "v"}, "queue": queue_name}]


def test_an_rq_retry_requeues_the_job_that_failed_and_waits_for_it(
    tmp_path: Path, store: SqliteStore, redis_url: str, queue_name: str
) -> None:
    with rq_worker(tmp_path, redis_url, queue_name) as worker:
        target = RqTarget(
            redis=redis_url,
            func="brokerjobs.rqjobs.fail_once",
            queue=queue_name,
            job_timeout=timedelta(seconds=30),
            wait=Wait(timeout=timedelta(seconds=15)),
        )
        rows = run_slot(tmp_path, store, target_job(target, retries=1, timeout=40))
        records = wait_recorded(worker.record, 2)
    ident = rqjob.job_id(RUN_ID)
    assert [(r.outcome, r.response) for r in rows] == [
        (Outcome.FAILED, f"job {ident} failed"),
        (Outcome.SUCCEEDED, f"job {ident} finished"),
    ]
    assert "RuntimeError: brokerjobs.rqjobs.fail_once: first try of" in rows[0].reason
    assert [r["job_id"] for r in records] == [ident, ident]  # run again, under its id


def test_a_second_attempt_of_an_enqueued_rq_job_does_not_enqueue_it_again(
    tmp_path: Path, store: SqliteStore, redis_url: str, queue_name: str
) -> None:
    package_missing("rq", "redis")
    broker_missing("redis", redis_url)
    target = RqTarget(redis=redis_url, func="brokerjobs.rqjobs.record", queue=queue_name)
    (first,) = run_slot(tmp_path, store, target_job(target))
    again = run_slot(tmp_path, store, target_job(target))  # the same slot, as after a crash
    ident = rqjob.job_id(RUN_ID)
    assert first.response == f"job {ident} enqueued on {queue_name}"
    assert again[-1].response == f"job {ident} already enqueued"
    from redis import Redis

    with Redis.from_url(redis_url) as redis:
        assert redis.llen(f"rq:queue:{queue_name}") == 1


def test_a_celery_style_url_names_the_slash_vhost_for_pika() -> None:
    assert amqppublish.vhost_url("amqp://u:p@h:5672//") == "amqp://u:p@h:5672/%2F"
    assert amqppublish.vhost_url("amqp://h//?heartbeat=5") == "amqp://h/%2F?heartbeat=5"
    assert amqppublish.vhost_url("amqp://h/%2F") == "amqp://h/%2F"
    assert amqppublish.vhost_url("amqp://h/prod") == "amqp://h/prod"


def test_rq_job_ids_are_the_run_ids_in_rqs_alphabet() -> None:
    assert rqjob.job_id("backup@2026-03-08T07:00:00Z") == "backup_2026-03-08T07_00_00Z"
    dotted = rqjob.job_id("db.backup@2026-03-08T07:00:00Z")
    assert dotted.startswith("db_backup_2026-03-08T07_00_00Z-") and len(dotted) == 39
    assert dotted != rqjob.job_id("db_backup@2026-03-08T07:00:00Z")


# --- AMQP on RabbitMQ ---------------------------------------------------------------------


def _declare(url: str, queue: str) -> None:
    import pika

    with pika.BlockingConnection(pika.URLParameters(amqppublish.vhost_url(url))) as connection:
        connection.channel().queue_declare(queue, durable=True)


def _drain(url: str, queue: str) -> list[tuple[Any, bytes]]:
    import pika

    got: list[tuple[Any, bytes]] = []
    with pika.BlockingConnection(pika.URLParameters(amqppublish.vhost_url(url))) as connection:
        channel = connection.channel()
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return got
            got.append((properties, body))


def test_an_amqp_message_is_confirmed_persistent_and_carries_its_run_id(
    tmp_path: Path, store: SqliteStore, rabbitmq_url: str, queue_name: str
) -> None:
    package_missing("pika")
    broker_missing("rabbitmq", rabbitmq_url)
    _declare(rabbitmq_url, queue_name)
    down = gate(rabbitmq_url, refuse=1)
    try:
        target = AmqpTarget(
            url=down.url(rabbitmq_url), routing_key=queue_name, body='{"n": 1}', headers={"a": "b"}
        )
        rows = run_slot(tmp_path, store, target_job(target, retries=1, timeout=20))
    finally:
        down.close()
    assert [(r.attempt, r.outcome) for r in rows] == [(1, Outcome.FAILED), (2, Outcome.SUCCEEDED)]
    assert rows[1].response == f"confirmed, message {RUN_ID}"
    ((properties, body),) = _drain(rabbitmq_url, queue_name)
    assert (body, properties.message_id, properties.delivery_mode) == (b'{"n": 1}', RUN_ID, 2)
    assert properties.headers["cronplus_run_id"] == RUN_ID and properties.headers["a"] == "b"
    assert properties.content_type == "application/json"


def test_an_amqp_message_no_queue_takes_fails_the_attempt(
    tmp_path: Path, store: SqliteStore, rabbitmq_url: str, queue_name: str
) -> None:
    package_missing("pika")
    broker_missing("rabbitmq", rabbitmq_url)
    target = AmqpTarget(url=rabbitmq_url, routing_key=queue_name + "-nobody")
    (row,) = run_slot(tmp_path, store, target_job(target, timeout=20))
    assert (row.outcome, row.response) == (Outcome.FAILED, "returned")
    assert row.reason.startswith("no queue took the message (exchange '', routing key ")


# --- across a restart of the installed daemon ---------------------------------------------

WINDOW_S = 3.0
"""Seconds the daemon runs before and after its restart."""


def _block(kind: str, rabbit: str, redis: str, queue: str) -> str:
    if kind == "celery":
        return f'celery: {{broker: "{rabbit}", task: cronplus_test.record, queue: {queue}}}'
    if kind == "rq":
        return f'rq: {{redis: "{redis}", func: brokerjobs.rqjobs.record, queue: {queue}}}'
    return f'amqp: {{url: "{rabbit}", routing_key: {queue}}}'


def _received(kind: str, worker_record: Path | None, rabbit: str, queue: str) -> list[str]:
    """The ids of the work the far side got: task ids, RQ job ids or message ids."""
    if kind == "amqp":
        return [str(properties.message_id) for properties, _ in _drain(rabbit, queue)]
    assert worker_record is not None
    records = wait_recorded(worker_record, 1, settle=1.0)
    return [str(r.get("task_id") or r.get("job_id")) for r in records]


@pytest.mark.parametrize("kind", ["celery", "rq", "amqp"])
def test_every_slot_is_sent_once_under_its_run_id_across_a_daemon_restart(
    tmp_path: Path, rabbitmq_url: str, redis_url: str, queue_name: str, kind: str
) -> None:
    package_missing({"celery": "celery", "rq": "rq", "amqp": "pika"}[kind])
    broker_missing(
        "redis" if kind == "rq" else "rabbitmq", redis_url if kind == "rq" else rabbitmq_url
    )
    cp = Cronplus(tmp_path, installed.targets_script)
    cp.write(f"""\
        settings:
          shutdown_grace: 2s
        jobs:
          tick:
            schedule: "* * * * * *"
            catchup: all
            overlap: allow              # a slow first send must not skip the next slot
            retries: 2
            retry_delay: 1s
            {_block(kind, rabbitmq_url, redis_url, queue_name)}
        """)
    if kind == "amqp":
        _declare(rabbitmq_url, queue_name)
    worker: Callable[[], Any]
    if kind == "celery":
        worker = lambda: celery_worker(tmp_path, rabbitmq_url, queue_name)  # noqa: E731
    elif kind == "rq":
        worker = lambda: rq_worker(tmp_path, redis_url, queue_name)  # noqa: E731
    else:
        import contextlib

        worker = contextlib.nullcontext
    with worker() as running:
        for _ in range(2):  # run, stop (slots pass while it is down), start again
            daemon = Daemon(cp)
            time.sleep(WINDOW_S)
            assert daemon.stop() == 0, daemon.text()
            time.sleep(1.5)
        record = getattr(running, "record", None)
        got = _received(kind, record, rabbitmq_url, queue_name)
    history = json.loads(cp.run("history", "--json", "-n", "1000").stdout)
    sent = [row for row in history if row["outcome"] == "succeeded"]
    ids = [row["run_id"] for row in sent]
    # Every slot from the first to the last, the down time's caught up: none lost.
    slots = sorted(datetime.fromisoformat(row["scheduled_at"]) for row in sent)
    assert slots == [slots[0] + timedelta(seconds=i) for i in range(len(slots))], ids
    assert len(slots) >= 2 * WINDOW_S
    want = sorted(rqjob.job_id(i) if kind == "rq" else i for i in ids)
    assert sorted(got) == want  # each sent once, none twice, under its run id
    assert len(set(got)) == len(got)
    assert slots[0] > T0

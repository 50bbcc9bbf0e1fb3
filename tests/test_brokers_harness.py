"""The broker harness of ``brokers.py`` works against the real RabbitMQ and Redis."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from brokers import (
    REQUIRE_ENV,
    broker_missing,
    celery_client,
    celery_worker,
    package_missing,
    queue_name,
    rabbitmq_url,
    redis_url,
    rq_worker,
    wait_recorded,
)

__all__ = ["queue_name", "rabbitmq_url", "redis_url"]  # fixtures of brokers.py

pytestmark = pytest.mark.brokers  # real workers: make test-brokers


def test_celery_worker_records_a_task_sent_by_name(
    tmp_path: Path, rabbitmq_url: str, redis_url: str, queue_name: str
) -> None:
    task_id = "job@2026-01-01T00:00:00Z"  # a cronplus run id, as it is
    with celery_worker(tmp_path, rabbitmq_url, queue_name, backend_url=redis_url) as worker:
        with celery_client(rabbitmq_url, redis_url) as app:
            sent = time.monotonic()
            result = app.send_task(
                "cronplus_test.record",
                args=[1],
                kwargs={"a": 2},
                task_id=task_id,
                queue=queue_name,
            )
            assert result.get(timeout=10)["task_id"] == task_id  # through the Redis backend
        records = wait_recorded(worker.record, 1, timeout=10)
        assert time.monotonic() - sent < 5
    assert records == [{"task_id": task_id, "args": [1], "kwargs": {"a": 2}, "queue": queue_name}]


def test_rq_worker_records_an_enqueued_job(tmp_path: Path, redis_url: str, queue_name: str) -> None:
    from redis import Redis
    from rq import Queue

    job_id = "job-2026-01-01T00-00-00Z"  # RQ takes only [A-Za-z0-9_-]
    with rq_worker(tmp_path, redis_url, queue_name) as worker, Redis.from_url(redis_url) as conn:
        sent = time.monotonic()
        job = Queue(queue_name, connection=conn).enqueue(
            "brokerjobs.rqjobs.record", 1, a=2, job_id=job_id
        )
        assert job.id == job_id
        records = wait_recorded(worker.record, 1, timeout=10)
        assert time.monotonic() - sent < 5
    assert records == [{"job_id": job_id, "args": [1], "kwargs": {"a": 2}, "queue": queue_name}]


@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
def test_a_silent_broker_skips_or_fails_when_required(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "redis://127.0.0.1:1/0" if kind == "redis" else "amqp://guest:guest@127.0.0.1:1//"
    name = {"redis": "Redis", "rabbitmq": "RabbitMQ"}[kind]
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"no {name} answers on 127.0.0.1:1;"):
        broker_missing(kind, url)
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=r"\[CRONPLUS_REQUIRE_BROKERS=1 makes this"):
        broker_missing(kind, url)


def test_a_missing_package_skips_or_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="'cronplus_no_such_package' is not importable"):
        package_missing("cronplus_no_such_package")
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=r"\[CRONPLUS_REQUIRE_BROKERS=1 makes this"):
        package_missing("cronplus_no_such_package")

"""Real brokers and real workers for the tests of cronplus's Celery and RQ targets.

RabbitMQ (``amqp://guest:guest@127.0.0.1:5672//``) carries the Celery tasks and Redis
(``redis://127.0.0.1:6379/N``) the RQ jobs and Celery's results. A test that needs one and
finds it silent is skipped, or failed where ``CRONPLUS_REQUIRE_BROKERS=1`` (CI).

Isolation, for ``pytest -n 2`` and for two pytest runs at once on one machine:

- every test gets its own queue name (``queue_name``), deleted from RabbitMQ at the end;
- every pytest process leases a Redis database of its own (1..15; the lease is a key in
  database 0, ``cronplus-test:redis-db:N``, with a TTL), flushed after each test.

The workers run as subprocesses with ``tests/`` on ``PYTHONPATH``, so they import the task
modules of ``tests/brokerjobs/``; each execution appends a JSON line to ``Worker.record``::

    def test_sends(tmp_path, rabbitmq_url, redis_url, queue_name):
        with celery_worker(tmp_path, rabbitmq_url, queue_name, backend_url=redis_url) as w:
            with celery_client(rabbitmq_url, redis_url) as app:
                app.send_task("cronplus_test.record", args=[1], task_id="t1", queue=queue_name)
            assert [r["task_id"] for r in wait_recorded(w.record, 1)] == ["t1"]
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

import pytest

__all__ = [
    "RABBITMQ_URL",
    "REDIS_SERVER",
    "REQUIRE_ENV",
    "Gate",
    "Worker",
    "broker_missing",
    "celery_client",
    "celery_worker",
    "delete_rabbitmq_queues",
    "package_missing",
    "queue_name",
    "rabbitmq_url",
    "recorded",
    "redis_url",
    "rq_worker",
    "wait_recorded",
]

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_SERVER = "redis://127.0.0.1:6379"
REQUIRE_ENV = "CRONPLUS_REQUIRE_BROKERS"
RECORD_ENV = "CRONPLUS_TEST_RECORD"

TESTS_DIR = Path(__file__).resolve().parent
CELERY_APP = "brokerjobs.celeryapp"
RQ_RECORD = "brokerjobs.rqjobs.record"
READY_TIMEOUT = 20.0  # seconds a worker may take to come up
STOP_TIMEOUT = 10.0  # seconds to reap a worker after its SIGKILL
LEASE_TTL = 6 * 3600  # seconds a Redis database stays leased to a pytest process that died
REDIS_DBS = range(1, 16)  # database 0 holds only the leases

_checked: dict[tuple[str, str], str | None] = {}


# -- skip or fail ----------------------------------------------------------------------------


def _unavailable(message: str) -> NoReturn:
    """Skips the test, or fails it where ``CRONPLUS_REQUIRE_BROKERS=1``."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message} [{REQUIRE_ENV}=1 makes this a failure]", pytrace=False)
    pytest.skip(message)


def package_missing(*names: str) -> None:
    """Skips (or fails) unless every named Python package imports: celery, rq, pika, redis."""
    for name in names:
        key = ("package", name)
        if key not in _checked:
            try:
                importlib.import_module(name)
            except ImportError as error:
                _checked[key] = (
                    f"the Python package {name!r} is not importable ({error}); "
                    f"install it into the venv: .venv/bin/pip install {name}"
                )
            else:
                _checked[key] = None
        problem = _checked[key]
        if problem is not None:
            _unavailable(problem)


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _redis_problem(url: str) -> str | None:
    host, port = _host_port(url, 6379)
    where = f"no Redis answers on {host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.settimeout(1.0)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = sock.recv(64)
    except OSError as error:
        return f"{where}; {error} (start redis-server to run this test)"
    if not reply.startswith(b"+PONG"):
        return f"{where}; PING got {reply!r} instead of +PONG"
    return None


def _amqp_params(url: str) -> Any:
    import pika  # type: ignore[import-untyped, unused-ignore]

    parts = urlsplit(url)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return pika.ConnectionParameters(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5672,
        virtual_host=vhost,
        credentials=pika.PlainCredentials(
            unquote(parts.username or "guest"), unquote(parts.password or "guest")
        ),
        connection_attempts=1,
        socket_timeout=1.0,
        stack_timeout=2.0,
        blocked_connection_timeout=2.0,
    )


def _rabbitmq_problem(url: str) -> str | None:
    host, port = _host_port(url, 5672)
    where = f"no RabbitMQ answers on {host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=1.0):
            pass
    except OSError as error:
        return f"{where}; {error} (start rabbitmq-server to run this test)"
    import pika

    try:
        connection = pika.BlockingConnection(_amqp_params(url))
    except Exception as error:  # pika raises many kinds: AMQPConnectionError, auth, ...
        return f"{where}; the TCP port is open but an AMQP connection failed: {error!r}"
    connection.close()
    return None


def broker_missing(kind: str, url: str) -> None:
    """Skips (or fails) the test unless the broker at ``url`` answers, within about 1 s.

    ``kind`` is ``"redis"`` (TCP connect and PING) or ``"rabbitmq"`` (TCP connect and an
    AMQP connection with pika). Each answer is remembered for the pytest process.
    """
    if kind == "redis":
        package_missing("redis")
        check = _redis_problem
    elif kind == "rabbitmq":
        package_missing("pika")
        check = _rabbitmq_problem
    else:
        raise ValueError(f"broker_missing: unknown kind {kind!r} (redis or rabbitmq)")
    key = (kind, url)
    if key not in _checked:
        _checked[key] = check(url)
    problem = _checked[key]
    if problem is not None:
        _unavailable(problem)


# -- RabbitMQ --------------------------------------------------------------------------------


def delete_rabbitmq_queues(url: str, names: list[str]) -> None:
    """Deletes these queues, and the direct exchanges of the same name that Celery declares."""
    import pika

    try:
        connection = pika.BlockingConnection(_amqp_params(url))
    except Exception:
        return  # the broker went away: nothing to clean
    try:
        for name in names:
            for delete in ("queue_delete", "exchange_delete"):
                # A failed delete closes the channel, so each gets its own.
                channel = connection.channel()
                with contextlib.suppress(Exception):
                    if delete == "queue_delete":
                        channel.queue_delete(queue=name)
                    else:
                        channel.exchange_delete(exchange=name)
                if channel.is_open:
                    channel.close()
    finally:
        with contextlib.suppress(Exception):
            connection.close()


@pytest.fixture
def rabbitmq_url() -> str:
    """``amqp://guest:guest@127.0.0.1:5672//``; skips (or fails) if RabbitMQ is silent."""
    broker_missing("rabbitmq", RABBITMQ_URL)
    return RABBITMQ_URL


@pytest.fixture
def queue_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A queue name of this test alone; deleted from RabbitMQ at the end if it was used."""
    name = f"cronplus-test-{uuid.uuid4().hex[:16]}"
    yield name
    if "rabbitmq_url" in request.fixturenames:
        delete_rabbitmq_queues(RABBITMQ_URL, [name])


# -- Redis -----------------------------------------------------------------------------------

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) end
return 0
"""


@dataclass
class _Lease:
    db: int
    key: str
    token: str


def _lease_key(db: int) -> str:
    return f"cronplus-test:redis-db:{db}"


class _Held:
    """This process's lease, once taken."""

    lease: _Lease | None = None
    atexit_registered = False


def _release_lease() -> None:
    from redis import Redis

    lease = _Held.lease
    if lease is None:
        return
    _Held.lease = None
    with contextlib.suppress(Exception):
        with Redis.from_url(f"{REDIS_SERVER}/{lease.db}", socket_timeout=2.0) as conn:
            conn.flushdb()
        with Redis.from_url(REDIS_SERVER + "/0", socket_timeout=2.0) as leases:
            leases.eval(_RELEASE, 1, lease.key, lease.token)


def _redis_lease() -> _Lease:
    """The Redis database (1..15) of this pytest process, leased on first use.

    Released (flushed, its lease key deleted) when the process exits; a lease of a process
    that was killed expires after ``LEASE_TTL``. Each use renews it.
    """
    from redis import Redis

    with Redis.from_url(REDIS_SERVER + "/0", socket_timeout=2.0) as leases:
        held = _Held.lease
        if held is not None:
            if leases.eval(_RENEW, 1, held.key, held.token, str(LEASE_TTL)):
                return held
            _Held.lease = None  # expired and maybe taken: lease another
        token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        for db in REDIS_DBS:
            if leases.set(_lease_key(db), token, nx=True, ex=LEASE_TTL):
                break
        else:
            _unavailable(f"every Redis database 1..15 on {REDIS_SERVER} is leased by other tests")
    with Redis.from_url(f"{REDIS_SERVER}/{db}", socket_timeout=2.0) as conn:
        conn.flushdb()  # whatever a killed run left behind
    if not _Held.atexit_registered:
        atexit.register(_release_lease)
        _Held.atexit_registered = True
    _Held.lease = _Lease(db, _lease_key(db), token)
    return _Held.lease


@pytest.fixture
def redis_url() -> Iterator[str]:
    """``redis://127.0.0.1:6379/N``: a database of this pytest process alone, flushed after."""
    from redis import Redis

    broker_missing("redis", REDIS_SERVER + "/0")
    url = f"{REDIS_SERVER}/{_redis_lease().db}"
    yield url
    with Redis.from_url(url, socket_timeout=2.0) as conn:
        conn.flushdb()


# -- records ---------------------------------------------------------------------------------


def recorded(path: Path) -> list[dict[str, Any]]:
    """The JSON lines the task modules appended to ``path``: one per execution, in order."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    # A line is whole once its newline is written: the last piece is empty or still partial.
    return [json.loads(line) for line in lines[:-1] if line]


def wait_recorded(
    path: Path, count: int, timeout: float = 10.0, settle: float = 0.3
) -> list[dict[str, Any]]:
    """Polls until ``count`` records are there, then ``settle`` seconds more for extra ones.

    Returns every record (so ``len(...) == count`` tells "exactly"); fails after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = recorded(path)
        if len(records) >= count:
            break
        if time.monotonic() > deadline:
            pytest.fail(
                f"{len(records)} of {count} records in {path} after {timeout} s: {records}",
                pytrace=False,
            )
        time.sleep(0.02)
    if settle > 0:
        time.sleep(settle)
        records = recorded(path)
    return records


# -- workers ---------------------------------------------------------------------------------


@dataclass
class Worker:
    """A running worker subprocess: where it records, where it logs, how long it took."""

    kind: str
    queue: str
    record: Path
    log: Path
    process: subprocess.Popen[bytes]
    name: str
    startup: float = 0.0  # seconds from start to ready
    env: dict[str, str] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        return recorded(self.record)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _worker_env(record: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CRONPLUS_")}
    paths = [str(TESTS_DIR), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env[RECORD_ENV] = str(record)
    env.update(extra)
    return env


def _stop(process: subprocess.Popen[bytes], cold: signal.Signals, grace: float) -> None:
    """Stops the worker and its process group (its work horses too), each step bounded.

    SIGTERM (a warm shutdown) first; after ``grace`` seconds the worker's cold-shutdown
    signal (``cold``); after 3 s more SIGKILL. rq 3.0.0 with redis 8.2.0 can hang in a warm
    shutdown for up to 60 s (its pubsub thread waits for a subscription that is gone), and
    its second SIGTERM, more than 1 s after the first, ends it at once.
    """
    steps = [(signal.SIGTERM, grace), (cold, 3.0)]
    for signum, wait in steps:
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
    # Whatever is left of the group (a horse a shutdown left behind) goes now.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def _run_worker(
    kind: str,
    tmp_path: Path,
    queue: str,
    name: str,
    argv: list[str],
    extra_env: dict[str, str],
    ready: Any,
    timeout: float,
    cold: signal.Signals,
    grace: float,
) -> Iterator[Worker]:
    folder = tmp_path / f"{kind}-{name}"
    folder.mkdir(parents=True)
    record = folder / "record.jsonl"
    log = folder / "worker.log"
    env = _worker_env(record, extra_env)
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=folder,
            start_new_session=True,  # its own process group, for _stop
        )
    worker = Worker(kind, queue, record, log, process, name, env=env)
    try:
        deadline = started + timeout
        while not ready(worker):
            if process.poll() is not None:
                pytest.fail(
                    f"the {kind} worker exited ({process.returncode}) before it was ready:\n"
                    + worker.log_tail(),
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the {kind} worker was not ready after {timeout} s:\n" + worker.log_tail(),
                    pytrace=False,
                )
            time.sleep(0.05)
        worker.startup = time.monotonic() - started
        yield worker
    finally:
        _stop(process, cold, grace)


@contextlib.contextmanager
def celery_worker(
    tmp_path: Path,
    broker_url: str,
    queue: str,
    backend_url: str | None = None,
    *,
    timeout: float = READY_TIMEOUT,
) -> Iterator[Worker]:
    """A real ``celery worker`` (solo pool) consuming ``queue``; ready once it says so.

    It runs ``tests/brokerjobs/celeryapp.py``: tasks ``cronplus_test.record`` and
    ``cronplus_test.fail_once``. ``backend_url`` (e.g. ``redis_url``) stores their results.
    """
    package_missing("celery")
    broker_missing("rabbitmq" if broker_url.startswith("amqp") else "redis", broker_url)
    name = f"cronplus-test-{uuid.uuid4().hex[:12]}"
    ready_file = tmp_path / f"celery-{name}.ready"
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        CELERY_APP,
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "-Q",
        queue,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n",
        f"{name}@%h",
        "--loglevel=INFO",
    ]
    extra = {
        "CRONPLUS_TEST_BROKER": broker_url,
        "CRONPLUS_TEST_BACKEND": backend_url or "",
        "CRONPLUS_TEST_READY": str(ready_file),
    }
    with _run_worker(
        "celery",
        tmp_path,
        queue,
        name,
        argv,
        extra,
        lambda _worker: ready_file.exists(),  # celeryapp's worker_ready handler writes it
        timeout,
        signal.SIGQUIT,  # celery's cold shutdown
        5.0,
    ) as worker:
        yield worker


@contextlib.contextmanager
def rq_worker(
    tmp_path: Path, redis_url: str, queue: str, *, timeout: float = READY_TIMEOUT
) -> Iterator[Worker]:
    """A real ``rq worker`` (no ``--burst``: it stays up) on ``queue``; ready once it is idle.

    Enqueue ``"brokerjobs.rqjobs.record"`` to have a job recorded.
    """
    package_missing("rq", "redis")
    broker_missing("redis", redis_url)
    from redis import Redis
    from rq import Queue
    from rq import Worker as RqWorker

    name = f"cronplus-test-{uuid.uuid4().hex[:12]}"
    argv = [
        sys.executable,
        "-m",
        "rq.cli",
        "worker",
        "--url",
        redis_url,
        "--name",
        name,
        "--logging_level",
        "INFO",
        queue,
    ]
    with Redis.from_url(redis_url, socket_timeout=2.0) as conn:

        def ready(_worker: Worker) -> bool:
            return any(
                w.name == name and w.get_state() == "idle"
                for w in RqWorker.all(queue=Queue(queue, connection=conn))
            )

        with _run_worker(
            "rq", tmp_path, queue, name, argv, {}, ready, timeout, signal.SIGTERM, 1.2
        ) as worker:
            yield worker


@contextlib.contextmanager
def celery_client(broker_url: str, backend_url: str | None = None) -> Iterator[Any]:
    """A ``celery.Celery`` app to send tasks by name with; its connections closed after."""
    package_missing("celery")
    from celery import Celery  # type: ignore[import-untyped, unused-ignore]

    app = Celery(
        "cronplus_test_client", broker=broker_url, backend=backend_url, set_as_current=False
    )
    app.conf.broker_connection_retry_on_startup = True
    try:
        yield app
    finally:
        app.close()


# -- a broker that refuses -------------------------------------------------------------------


class Gate:
    """A TCP forwarder on 127.0.0.1 to a broker that refuses the first ``refuse``
    connections (accepts and closes them at once), then forwards every byte both ways:
    a broker that was down for an attempt, then came back."""

    def __init__(self, host: str, port: int, *, refuse: int) -> None:
        self.upstream = (host, port)
        self.refuse = refuse
        self.refused = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, url: str) -> str:
        """``url`` (its user, password and path) pointed at the gate instead."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return parts._replace(netloc=netloc).geturl()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.refused < self.refuse:
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed = True
        self._server.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

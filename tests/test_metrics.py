"""Metrics: a real scrape of /metrics parsed by Prometheus's own text parser, /healthz, and
the listener's bounds played against it with real sockets."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import resource
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from descriptors import limit_descriptors
from prometheus_client.parser import text_string_to_metric_families
from sockets import closed_by_server, wait_until

from cronplus.clock import FakeClock, SystemClock
from cronplus.core.model import Job, ListenAddress, Outcome, RunResult, Slot
from cronplus.observe.httplistener import HttpBounds
from cronplus.observe.logs import EventLog
from cronplus.observe.metrics import STALE_AFTER, Metrics, MetricsServer

T0 = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
NAMES = {
    "cronplus_job_runs",
    "cronplus_job_missed_runs",
    "cronplus_job_running",
    "cronplus_job_duration_seconds",
    "cronplus_job_last_success_timestamp_seconds",
    "cronplus_job_next_run_timestamp_seconds",
    "cronplus_config_last_reload_successful",
    "cronplus_build_info",
}


def job(name: str) -> Job:
    return Job(
        name=name,
        schedule="0 * * * *",
        timezone=ZoneInfo("UTC"),
        command="secret-command --token=abc",
        env={"API_KEY": "k3y"},
    )


def result(name: str, outcome: Outcome, *, attempt: int = 1, seconds: float = 2.0) -> RunResult:
    return RunResult(
        job=name,
        scheduled_at=T0,
        attempt=attempt,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=seconds),
        outcome=outcome,
        duration_s=seconds,
    )


@pytest.fixture
def served() -> Iterator[tuple[Metrics, MetricsServer, FakeClock]]:
    metrics, clock = Metrics(), FakeClock(T0)
    server = MetricsServer(metrics, ListenAddress(host="127.0.0.1", port=0), clock=clock)
    yield metrics, server, clock
    server.close()


def get(server: MetricsServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(server: MetricsServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = get(server, "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name in NAMES, family.name
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_every_job_has_its_series_at_zero_from_the_first_schedule(
    served: tuple[Metrics, MetricsServer, FakeClock],
) -> None:
    metrics, server, _ = served
    metrics.schedule({"backup": T0 + timedelta(hours=1), "paused": None})
    samples = scrape(server)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    for name in ("backup", "paused"):
        for outcome in ("succeeded", "failed", "timed_out", "killed", "interrupted", "fenced"):
            assert value("cronplus_job_runs_total", job_name=name, outcome=outcome) == 0
        for reason in ("missed", "skipped_overlap"):
            assert value("cronplus_job_missed_runs_total", job_name=name, reason=reason) == 0
        assert value("cronplus_job_running", job_name=name) == 0
        assert value("cronplus_job_duration_seconds_count", job_name=name) == 0
        assert value("cronplus_job_last_success_timestamp_seconds", job_name=name) == 0
    metrics.seed_last_success({"backup": T0})
    metrics.schedule({"backup": T0 + timedelta(hours=1), "paused": None})
    samples = scrape(server)
    assert value("cronplus_job_last_success_timestamp_seconds", job_name="backup") == T0.timestamp()


def test_a_scrape_shows_runs_misses_durations_and_times_by_job(
    served: tuple[Metrics, MetricsServer, FakeClock],
) -> None:
    metrics, server, _ = served
    backup, report = job("backup"), job("report")
    slot = Slot(job="backup", scheduled_at=T0)
    metrics.attempt_started(job=backup, slot=slot, attempt=1, pid=10, at=T0)
    metrics.attempt_finished(
        job=backup,
        result=result("backup", Outcome.FAILED),
        retry_at=T0 + timedelta(minutes=1),
        stopped=False,
    )
    metrics.attempt_started(job=backup, slot=slot, attempt=2, pid=11, at=T0)
    metrics.attempt_finished(
        job=backup, result=result("backup", Outcome.SUCCEEDED, attempt=2, seconds=40.0),
        retry_at=None, stopped=False,
    )  # fmt: skip
    metrics.attempt_started(
        job=report, slot=Slot(job="report", scheduled_at=T0), attempt=1, pid=12, at=T0
    )
    metrics.slots_missed(job=report, result=result("report", Outcome.SKIPPED_OVERLAP), count=1)
    metrics.slots_missed(job=report, result=result("report", Outcome.MISSED), count=5)
    metrics.schedule({"backup": T0 + timedelta(hours=1), "report": None})
    samples = scrape(server)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("cronplus_job_runs_total", job_name="backup", outcome="succeeded") == 1
    # the failed attempt was retried: the run's outcome is the retry's
    assert value("cronplus_job_runs_total", job_name="backup", outcome="failed") == 0
    assert value("cronplus_job_missed_runs_total", job_name="report", reason="skipped_overlap") == 1
    assert value("cronplus_job_missed_runs_total", job_name="report", reason="missed") == 5
    assert value("cronplus_job_running", job_name="backup") == 0
    assert value("cronplus_job_running", job_name="report") == 1
    assert value("cronplus_job_duration_seconds_count", job_name="backup") == 2
    assert value("cronplus_job_duration_seconds_sum", job_name="backup") == 42.0
    assert value("cronplus_job_duration_seconds_bucket", job_name="backup", le="5.0") == 1
    success = (T0 + timedelta(seconds=40)).timestamp()
    assert value("cronplus_job_last_success_timestamp_seconds", job_name="backup") == success
    next_run = (T0 + timedelta(hours=1)).timestamp()
    assert value("cronplus_job_next_run_timestamp_seconds", job_name="backup") == next_run
    assert value("cronplus_config_last_reload_successful") == 1
    (build,) = [key for key in samples if key[0] == "cronplus_build_info"]
    assert dict(build[1])["version"] and samples[build] == 1
    text = get(server, "/metrics")[1]
    assert "secret-command" not in text and "k3y" not in text


def test_a_job_gone_or_with_no_next_fire_loses_its_next_run_series(
    served: tuple[Metrics, MetricsServer, FakeClock],
) -> None:
    metrics, server, _ = served
    metrics.schedule({"a": T0, "b": T0, "boot": T0})
    metrics.schedule({"b": T0, "boot": None})  # a gone; @reboot has run: no next fire
    names = {dict(labels).get("job_name") for name, labels in scrape(server) if "next_run" in name}
    assert names == {"b"}


def test_a_rejected_reload_shows_as_zero(served: tuple[Metrics, MetricsServer, FakeClock]) -> None:
    metrics, server, _ = served
    metrics.reloaded(ok=False)
    assert scrape(server)[("cronplus_config_last_reload_successful", ())] == 0


@pytest.mark.parametrize(
    ("beat_age", "stopped", "status", "says"),
    [
        (0.0, False, 200, "ok: the scheduler loop beat 0.0s ago"),
        (STALE_AFTER, False, 200, "ok"),
        (STALE_AFTER + 1, False, 503, f"last beat {STALE_AFTER + 1:.1f}s ago"),
        (0.0, True, 503, "the scheduler loop is not running"),
    ],
    ids=["fresh", "at-the-limit", "stale", "stopped"],
)
def test_healthz_answers_200_only_while_the_loop_heartbeat_is_fresh(
    served: tuple[Metrics, MetricsServer, FakeClock],
    beat_age: float,
    stopped: bool,
    status: int,
    says: str,
) -> None:
    metrics, server, clock = served
    metrics.heartbeat(None if stopped else clock.monotonic())
    clock.advance(timedelta(seconds=beat_age))
    code, text = get(server, "/healthz")
    assert (code, says in text) == (status, True), text


def test_a_taken_port_is_a_clear_error(served: tuple[Metrics, MetricsServer, FakeClock]) -> None:
    metrics, server, clock = served
    taken = ListenAddress(host="127.0.0.1", port=server.port)
    with pytest.raises(
        Exception, match=rf"settings.metrics: cannot listen on 127.0.0.1:{server.port}"
    ):
        MetricsServer(metrics, taken, clock=clock)


# --- the listener's bounds: what one client may cost it --------------------------------------


class Keep(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def bounded(bounds: HttpBounds) -> Iterator[tuple[MetricsServer, list[logging.LogRecord]]]:
    """A server on the real clock (its deadlines are real time) with ``bounds``, and the
    records it logged."""
    records: list[logging.LogRecord] = []
    handler = Keep(records)
    logger = logging.getLogger(f"cronplus.test.metrics.{id(records)}")
    logger.addHandler(handler)
    logger.propagate = False
    metrics = Metrics()
    metrics.heartbeat(SystemClock().monotonic())
    address = ListenAddress(host="127.0.0.1", port=0)
    server = MetricsServer(
        metrics, address, clock=SystemClock(), log=EventLog(logger), bounds=bounds
    )
    try:
        yield server, records
    finally:
        server.close()
        logger.removeHandler(handler)


def events(records: list[logging.LogRecord], name: str) -> list[logging.LogRecord]:
    return [r for r in records if getattr(r, "cronplus_event", None) == name]


def exchange(server: MetricsServer, request: bytes, *, timeout: float = 10) -> bytes:
    """Send ``request`` and read until the server closes (``b"reset"``: with a reset)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
            return b"".join(iter(lambda: sock.recv(65536), b""))
        except ConnectionResetError:
            return b"reset"


def test_at_the_cap_the_oldest_connection_makes_room_and_a_scrape_is_answered() -> None:
    with bounded(HttpBounds(connections=4)) as (server, records):
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(10)]
        try:
            wait_until(lambda: sum(closed_by_server(s) for s in idle) == 6)
            assert not any(closed_by_server(s) for s in idle[6:])  # the newest four stay
            assert get(server, "/healthz")[0] == 200  # and a scrape still gets in
            wait_until(lambda: sum(closed_by_server(s) for s in idle) == 7)
        finally:
            for sock in idle:
                sock.close()
    at_cap = [r for r in events(records, "metrics_busy") if "cap" in r.getMessage()]
    assert len(at_cap) == 1  # seven closes, one line


def trickle(sock: socket.socket, data: bytes, every: float) -> bool:
    """Send ``data`` a byte at a time until the server answers; True if it did."""
    for byte in data:
        if select.select([sock], [], [], every)[0]:
            return True
        sock.send(bytes([byte]))
    return False


def test_a_request_sent_a_byte_at_a_time_is_cut_off_at_its_deadline() -> None:
    head = b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 200  # 10 s of trickle
    with (
        bounded(HttpBounds(request_timeout=0.5)) as (server, records),
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
    ):
        answered = trickle(sock, head, every=0.05)
        answer = sock.recv(65536)
    assert answered and answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer
    (refused,) = events(records, "metrics_bad_request")
    assert refused.getMessage() == (
        "metrics listener refused a request (408): no whole request within 0.5s"
    )


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", 405),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 413),
        (b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 413),
        (b"\x16\x03\x01 hello TLS\r\n\r\n", 400),
    ],
    ids=["head-too-large", "post", "body", "chunked-body", "not-http"],
)
def test_what_the_listener_does_not_serve_is_refused_with_its_status(
    request_bytes: bytes, status: int
) -> None:
    with bounded(HttpBounds()) as (server, records):
        answers = [exchange(server, request_bytes) for _ in range(20)]
    # Past max_head the rest is never read, and closing on unread bytes resets the
    # connection, which may overtake the answer.
    shown = {f"HTTP/1.1 {status} ".encode()} | ({b"reset"} if status == 431 else set())
    assert all(any(a.startswith(s) for s in shown) for a in answers), answers[0]
    (refused,) = events(records, "metrics_bad_request")  # twenty refusals, one line
    assert vars(refused)["cronplus_fields"]["status"] == status


def test_head_answers_the_headers_alone() -> None:
    with bounded(HttpBounds()) as (server, _):
        answer = exchange(server, b"HEAD /healthz HTTP/1.0\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: " in head
    assert body == b""


def test_new_connections_are_taken_at_the_rate_and_all_answered() -> None:
    bounds = HttpBounds(connections=16, accepts_per_second=20)  # a burst of 8, then 20/s
    with bounded(bounds) as (server, records):
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(
                pool.map(lambda _: exchange(server, b"GET /healthz HTTP/1.1\r\n\r\n"), range(16))
            )
        took = time.monotonic() - started
    assert all(a.startswith(b"HTTP/1.1 200 ") for a in answers)
    assert took >= (16 - 8) / 20 * 0.9  # held to the rate: never faster than it allows
    assert len(events(records, "metrics_busy")) == 1


def thread_cpu(stat: int) -> float:
    """CPU seconds of the thread whose ``/proc/self/task/TID/stat`` is open as ``stat``
    (opened before: past the limit nothing more can be)."""
    fields = os.pread(stat, 4096, 0).decode().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_out_of_descriptors_the_listener_pauses_instead_of_spinning() -> None:
    with bounded(HttpBounds(accept_pause=1.0)) as (server, records):
        (thread,) = [t for t in threading.enumerate() if t.name == "cronplus-metrics"]
        stat = os.open(f"/proc/self/task/{thread.native_id}/stat", os.O_RDONLY)
        client = socket.socket()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        before = thread_cpu(stat)
        try:
            limit_descriptors(0, hard)
            client.connect(("127.0.0.1", server.port))  # in the backlog; accept() fails
            time.sleep(1.5)
            spent = thread_cpu(stat) - before
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            os.close(stat)
        client.settimeout(10)
        client.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
        answer = b"".join(iter(lambda: client.recv(65536), b""))
        client.close()
    assert spent < 0.5, spent  # the old listener spun here at a whole CPU
    assert answer.startswith(b"HTTP/1.1 200 ")  # taken once descriptors were back
    (failed,) = events(records, "metrics_accept_failed")
    assert "Too many open files" in failed.getMessage()


def test_scrapes_past_the_accept_burst_are_all_answered(
    served: tuple[Metrics, MetricsServer, FakeClock],
) -> None:
    # The listener's deadlines and accept rate run on real time, not on the FakeClock that
    # /healthz is judged by (which never moves here).
    _, server, _ = served
    assert [get(server, "/healthz")[0] for _ in range(80)] == [503] * 80

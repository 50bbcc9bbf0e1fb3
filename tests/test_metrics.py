"""Metrics: a real scrape of /metrics parsed by Prometheus's own text parser, and /healthz."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cronplus.clock import FakeClock
from cronplus.metrics import STALE_AFTER, Metrics, MetricsServer
from cronplus.model import Job, ListenAddress, Outcome, RunResult, Slot

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
    assert (
        "cronplus_job_runs_total",
        (("job_name", "backup"), ("outcome", "failed")),
    ) not in samples
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


def test_a_job_that_leaves_the_schedule_loses_its_next_run_series(
    served: tuple[Metrics, MetricsServer, FakeClock],
) -> None:
    metrics, server, _ = served
    metrics.schedule({"a": T0, "b": T0})
    metrics.schedule({"b": T0})
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

"""docs/alert-rules.yml under ``promtool test rules``, on series a real ``Metrics`` exposes.

Each scenario drives a ``Metrics`` through a timeline of engine events, scrapes its text
exposition once a minute, and hands promtool those samples as input series. promtool's
clock starts at the Unix epoch, so the events happen on that clock too: a success at
minute 10 has a last-success value of 600.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cronplus.core.model import Job, Outcome, RunResult, Slot
from cronplus.observe.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docs" / "alert-rules.yml"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SCRAPE = {"job": "cronplus", "instance": "host:9100"}

Timeline = dict[int, Callable[[Metrics], None]]
"""Minute -> what happens at its start, before that minute's scrape."""


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = (
            "promtool is not installed; to run these tests, install Debian's prometheus"
            " package (or put its promtool on PATH)"
        )
        if os.environ.get("CRONPLUS_REQUIRE_PROMTOOL") == "1":
            pytest.fail(message + " [CRONPLUS_REQUIRE_PROMTOOL=1 makes this a failure]")
        pytest.skip(message)
    return found


def job(name: str) -> Job:
    return Job(name=name, schedule="0 * * * *", command="true", timezone=ZoneInfo("UTC"))


def finished(name: str, outcome: Outcome, minute: int) -> Callable[[Metrics], None]:
    def event(metrics: Metrics) -> None:
        at = EPOCH + timedelta(minutes=minute)
        metrics.attempt_started(
            job=job(name), slot=Slot(job=name, scheduled_at=at), attempt=1, pid=1, at=at
        )
        result = RunResult(
            job=name, scheduled_at=at, attempt=1, started_at=at, finished_at=at,
            outcome=outcome, exit_code=0 if outcome.ok else 1, duration_s=0.0,
        )  # fmt: skip
        metrics.attempt_finished(job=job(name), result=result, retry_at=None, stopped=False)

    return event


def started(*names: str) -> Callable[[Metrics], None]:
    """A daemon start: every job's series come from the first schedule of the loop."""
    return lambda metrics: metrics.schedule({name: None for name in names})


def input_series(timeline: Timeline, minutes: int) -> list[dict[str, str]]:
    """The samples of each series, a scrape a minute; ``_`` before a series existed."""
    metrics, values = Metrics(), dict[str, list[str]]()
    for minute in range(minutes):
        if minute in timeline:
            timeline[minute](metrics)
        for family in text_string_to_metric_families(metrics.exposition().decode()):
            for sample in family.samples:
                labels = {**sample.labels, **SCRAPE}
                inner = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
                series = values.setdefault(f"{sample.name}{{{inner}}}", ["_"] * minute)
                series.append(repr(float(sample.value)))
    up = f'up{{instance="{SCRAPE["instance"]}",job="cronplus"}}'
    values[up] = ["1"] * minutes
    return [{"series": name, "values": " ".join(row)} for name, row in values.items()]


def run_promtool(tmp_path: Path, series: list[dict[str, str]], tests: list[object]) -> None:
    spec = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": tests}],
    }
    path = tmp_path / "test.yml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    done = subprocess.run(
        [promtool(), "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


SUMMARIES = {
    "CronJobFailing": "cron job {job_name} ended {outcome} in the last hour",
    "CronJobStale": "cron job {job_name} has not succeeded for 26 hours, or ever",
}


def alert(name: str, minute: int, *firing: dict[str, str]) -> dict[str, object]:
    """What promtool must find firing at ``minute``: labels and the rendered summary."""
    return {
        "eval_time": f"{minute}m",
        "alertname": name,
        "exp_alerts": [
            {
                "exp_labels": {**labels, **SCRAPE},
                "exp_annotations": {"summary": SUMMARIES[name].format(**labels)},
            }
            for labels in firing
        ],
    }


def test_the_rules_are_valid() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 rules found" in done.stdout


def test_the_first_failure_after_a_start_fires_the_failing_rule(tmp_path: Path) -> None:
    # A series born at 1 is no increase to Prometheus: it is the zero from the start that
    # lets the first failure count.
    timeline = {0: started("backup", "report"), 10: finished("backup", Outcome.FAILED, 10)}
    failing = {"severity": "warning", "job_name": "backup", "outcome": "failed"}
    run_promtool(
        tmp_path,
        input_series(timeline, 30),
        [alert("CronJobFailing", 9), alert("CronJobFailing", 15, failing)],
    )


def test_a_job_that_never_succeeded_fires_the_stale_rule(tmp_path: Path) -> None:
    day = 26 * 60
    timeline = {
        0: started("backup", "report"),
        day + 30: finished("report", Outcome.SUCCEEDED, day + 30),
    }
    backup = {"severity": "warning", "job_name": "backup"}
    report = {"severity": "warning", "job_name": "report"}
    run_promtool(
        tmp_path,
        input_series(timeline, day + 60),
        [
            alert("CronJobStale", day - 1),
            alert("CronJobStale", day + 10, backup, report),
            alert("CronJobStale", day + 40, backup),  # report succeeded at day + 30
        ],
    )

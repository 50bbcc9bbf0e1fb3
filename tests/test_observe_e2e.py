"""End to end: ``status``, ``run --via-daemon``, metrics, pings and alerts of a real daemon."""

from __future__ import annotations

import json
import stat
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cronplus, Daemon
from loopback import HttpRecorder
from prometheus_client.parser import text_string_to_metric_families

from cronplus.config.loader import state_name
from cronplus.observe.control import socket_path

SLOW = '  slow:\n    schedule: "*/2 * * * * *"\n    timezone: UTC\n    command: "sleep 1.5"\n'


def state_of(cp: Cronplus) -> str:
    return f"{cp.env['XDG_STATE_HOME']}/cronplus/{state_name(cp.config)}"


def status_of(cp: Cronplus) -> dict[str, Any]:
    status = cp.json("status")
    assert isinstance(status, dict)
    return status


@pytest.fixture
def http() -> Iterator[HttpRecorder]:
    server = HttpRecorder()
    yield server
    server.close()


def test_status_shows_the_daemon_its_jobs_and_a_running_attempt(
    cronplus: Cronplus, daemons: Callable[..., Daemon]
) -> None:
    cronplus.write(f"jobs:\n{SLOW}")
    daemon = daemons()
    daemon.wait_event("attempt_succeeded")
    daemon.wait_for(lambda: status_of(cronplus)["running"] != [])
    status = status_of(cronplus)
    assert status["pid"] == daemon.proc.pid
    assert status["config"] == str(cronplus.config)
    assert status["last_reload"] == {**status["last_reload"], "why": "start", "ok": True}
    assert [job["job"] for job in status["jobs"]] == ["slow"]
    (running,) = status["running"]
    assert running["job"] == "slow" and running["attempt"] == 1
    assert isinstance(running["pid"], int) and 0 <= running["age_s"] < 2
    text = cronplus.run("status")
    assert text.returncode == 0
    assert f"pid {daemon.proc.pid}" in text.stdout and "slow" in text.stdout
    mode = stat.S_IMODE(socket_path(Path(state_of(cronplus))).stat().st_mode)
    assert mode == 0o600
    assert daemon.stop() == 0


def test_status_and_run_via_daemon_without_a_daemon_say_so_and_exit_1(cronplus: Cronplus) -> None:
    cronplus.write(f"jobs:\n{SLOW}")
    for args in (["status"], ["run", "slow", "--via-daemon"]):
        done = cronplus.run(*args)
        assert done.returncode == 1
        assert "no cronplus daemon is running" in done.stderr
        assert "Traceback" not in done.stderr


def test_run_via_daemon_runs_the_job_in_the_daemon_and_reports_its_outcome(
    cronplus: Cronplus, daemons: Callable[..., Daemon]
) -> None:
    marker = cronplus.dir / "ran.txt"
    cronplus.write(
        "jobs:\n"
        "  manual:\n"
        '    schedule: "0 0 1 1 *"\n'
        f'    command: "echo $CRONPLUS_RUN_ID >> {marker}"\n'
        "  broken:\n"
        '    schedule: "0 0 1 1 *"\n'
        '    command: "exit 3"\n'
    )
    daemon = daemons()
    daemon.wait_event("started")
    done = cronplus.run("run", "manual", "--via-daemon", "--json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["runs"]
    assert (row["job"], row["outcome"], row["attempts"]) == ("manual", "succeeded", 1)
    assert marker.read_text().strip() == f"manual@{row['scheduled_at']}"
    assert daemon.count("attempt_succeeded") == 1  # the daemon ran it, not the command
    failed = cronplus.run("run", "broken", "--via-daemon")
    assert failed.returncode == 1 and "broken: failed after 1 attempt(s), exit 3" in failed.stdout
    unknown = cronplus.run("run", "nosuch", "--via-daemon")
    assert unknown.returncode == 2
    assert daemon.stop() == 0


def test_a_real_scrape_of_the_daemon_parses_and_health_is_200(
    cronplus: Cronplus, daemons: Callable[..., Daemon]
) -> None:
    cronplus.write(
        "settings:\n  metrics: 127.0.0.1:0\njobs:\n"
        '  tick:\n    schedule: "* * * * * *"\n    timezone: UTC\n    command: "true"\n'
    )
    daemon = daemons()
    daemon.wait_event("attempt_succeeded", count=2)
    (listening,) = [e for e in daemon.events() if e["event"] == "metrics_listening"]
    base = f"http://127.0.0.1:{listening['port']}"
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as answer:
        families = {f.name: f for f in text_string_to_metric_families(answer.read().decode())}
    runs = families["cronplus_job_runs"].samples
    assert any(
        s.labels == {"job_name": "tick", "outcome": "succeeded"} and s.value >= 2 for s in runs
    )
    (next_run,) = families["cronplus_job_next_run_timestamp_seconds"].samples
    assert next_run.labels == {"job_name": "tick"} and next_run.value > 0
    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as answer:
        assert answer.status == 200
    assert daemon.stop() == 0


def test_a_failing_job_pings_and_alerts_and_the_ping_url_stays_secret(
    cronplus: Cronplus, daemons: Callable[..., Daemon], http: HttpRecorder
) -> None:
    seen_env = cronplus.dir / "env.txt"
    ping = f"{http.url}/ping/SECRET-7f3a"
    cronplus.write(
        "settings:\n  pings: {timeout: 2s, retries: 0}\n"
        f"notifiers:\n  hook: {{webhook: '{http.url}/hook', timeout: 2s}}\n"
        "jobs:\n"
        "  flaky:\n"
        '    schedule: "0 0 1 1 *"\n'
        f'    command: "env > {seen_env}; echo boom >&2; exit 5"\n'
        "    on_failure: [hook]\n"
        f"    ping_url: {ping}\n"
    )
    daemon = daemons()
    daemon.wait_event("started")
    assert cronplus.run("run", "flaky", "--via-daemon").returncode == 1
    requests = http.wait_for(3)
    paths = sorted(request.path.split("?")[0] for request in requests)
    assert paths == ["/hook", "/ping/SECRET-7f3a/5", "/ping/SECRET-7f3a/start"]
    end = next(r for r in requests if r.path.startswith("/ping/SECRET-7f3a/5"))
    assert end.body == b"boom" and "rid=" in end.path
    alert = json.loads(next(r for r in requests if r.path == "/hook").body)
    assert (alert["alert"], alert["job"], alert["exit_code"]) == ("failure", "flaky", 5)
    assert daemon.stop() == 0
    assert "SECRET" not in daemon.text()
    assert "SECRET" not in seen_env.read_text()
    history = cronplus.run("history", "--json").stdout
    assert "SECRET" not in history and "SECRET" not in cronplus.run("list", "--json").stdout


def test_the_dead_man_alert_fires_once_on_time_in_a_real_daemon(
    cronplus: Cronplus, daemons: Callable[..., Daemon], http: HttpRecorder
) -> None:
    cronplus.write(
        f"notifiers:\n  hook: {{webhook: '{http.url}/hook', timeout: 2s}}\n"
        "jobs:\n"
        "  yearly:\n"
        '    schedule: "0 0 1 1 *"\n'
        '    command: "true"\n'
        "    on_failure: [hook]\n"
        "    alert_if_no_success_for: 1s\n"
    )
    daemon = daemons()
    daemon.wait_event("started")
    (request,) = http.wait_for(1, timeout=5)  # the loop woke for the deadline, not in 30 s
    alert = json.loads(request.body)
    assert (alert["alert"], alert["job"], alert["last_success"]) == ("no_success", "yearly", None)
    daemon.wait_event("alert_sent")
    time.sleep(2.5)  # more than two periods: still the one alert
    assert len(http.requests) == 1
    assert daemon.stop() == 0

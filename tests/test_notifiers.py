"""Notifiers and pings against real servers on 127.0.0.1: HTTP (ok, 500, hanging) and SMTP."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from loopback import HttpRecorder, SmtpRecorder, make_certificate

from cronplus.clock import FakeClock
from cronplus.core.model import (
    AlertKind,
    Delivery,
    Job,
    Outcome,
    RunResult,
    Slot,
    SmtpSecurity,
    SmtpSettings,
)
from cronplus.observe.alerts import Alert
from cronplus.observe.logs import LOGGER_NAME, EventLog
from cronplus.observe.notifiers import (
    CommandNotifier,
    DeliveryError,
    Dispatcher,
    EmailNotifier,
    Mailer,
    RecordingNotifier,
    Route,
    WebhookNotifier,
)
from cronplus.observe.pings import Pinger, failure_body, ping_address, rid
from cronplus.run.runner import Runner

T0 = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
FAST = Delivery(timeout=timedelta(seconds=0.3), retries=2, retry_delay=timedelta(seconds=0.01))


def alert(**fields: object) -> Alert:
    base: dict[str, object] = {
        "kind": AlertKind.FAILURE,
        "job": "backup",
        "at": T0,
        "message": "job backup failed after 3 attempt(s) (exit 7)",
        "run_id": "backup@2026-03-08T07:00:00Z",
        "scheduled_at": T0,
        "attempt": 3,
        "max_attempts": 3,
        "outcome": Outcome.FAILED,
        "exit_code": 7,
        "duration_s": 1.5,
        "stderr_tail": "disk full\nno space left",
        "stdout_tail": "copied 3 of 4 files",
    }
    return Alert(**{**base, **fields})  # type: ignore[arg-type]


@pytest.fixture
def http() -> Iterator[HttpRecorder]:
    server = HttpRecorder()
    yield server
    server.close()


def dispatch(route: Route, sent: Alert) -> None:
    async def scenario() -> None:
        dispatcher = Dispatcher({route.name: route}, clock=FakeClock(T0), log=EventLog())
        dispatcher.send(sent, [route.name])
        await dispatcher.close(30)

    asyncio.run(scenario())


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "cronplus_event", None) == name]


# --- webhook ------------------------------------------------------------------------------


def test_a_webhook_posts_the_documented_json_body(http: HttpRecorder) -> None:
    route = Route(
        name="chat", notifier=WebhookNotifier(http.url + "/hook", host="box"), delivery=FAST
    )
    dispatch(route, alert())
    (request,) = http.wait_for(1)
    assert request.path == "/hook"
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.body)
    assert body == {
        "version": 1,
        "alert": "failure",
        "job": "backup",
        "host": "box",
        "at": "2026-03-08T07:00:00Z",
        "message": "job backup failed after 3 attempt(s) (exit 7)",
        "run_id": "backup@2026-03-08T07:00:00Z",
        "scheduled_at": "2026-03-08T07:00:00Z",
        "attempt": 3,
        "max_attempts": 3,
        "outcome": "failed",
        "exit_code": 7,
        "signal": None,
        "duration_s": 1.5,
        "reason": None,
        "stderr_tail": "disk full\nno space left",
        "stdout_tail": "copied 3 of 4 files",
        "retry_at": None,
        "missed": None,
        "last_success": None,
    }


@pytest.mark.parametrize(
    ("mode", "why"),
    [("fail", "the server answered HTTP 500"), ("hang", "no answer within 0.3s")],
    ids=["server-answers-500", "server-hangs"],
)
def test_a_failing_webhook_is_tried_a_bounded_number_of_times_and_logged(
    http: HttpRecorder, caplog: pytest.LogCaptureFixture, mode: str, why: str
) -> None:
    http.mode = mode
    secret = "/hooks/T0KEN-s3cret"
    route = Route(
        name="chat", notifier=WebhookNotifier(http.url + secret, host="box"), delivery=FAST
    )
    began = time.monotonic()
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        dispatch(route, alert())
    elapsed = time.monotonic() - began
    assert len(http.wait_for(3)) == 3  # one try and two retries, then no more
    retries, lost = events(caplog, "alert_retry"), events(caplog, "alert_lost")
    assert [r.getMessage().split(": try ")[1][:3] for r in retries] == ["1/3", "2/3"]
    assert len(lost) == 1 and why in lost[0].getMessage() and "giving up" in lost[0].getMessage()
    assert all(secret not in r.getMessage() for r in caplog.records)
    assert elapsed < 3 * 0.3 + 2.0  # each try ends at its timeout, hung or not


def test_a_webhook_that_fails_once_is_delivered_by_its_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = RecordingNotifier(failures=1)
    route = Route(name="flaky", notifier=flaky, delivery=FAST)
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        dispatch(route, alert())
    assert flaky.tries == 2 and len(flaky.sent) == 1
    assert len(events(caplog, "alert_retry")) == 1 and len(events(caplog, "alert_sent")) == 1
    assert not events(caplog, "alert_lost")


def test_sending_returns_at_once_while_the_server_hangs(http: HttpRecorder) -> None:
    http.mode = "hang"
    hang = Delivery(timeout=timedelta(seconds=5), retries=0)
    route = Route(name="slow", notifier=WebhookNotifier(http.url, host="box"), delivery=hang)

    async def scenario() -> float:
        dispatcher = Dispatcher({"slow": route}, clock=FakeClock(T0), log=EventLog())
        began = time.monotonic()
        dispatcher.send(alert(), ["slow"])
        returned = time.monotonic() - began
        await dispatcher.close(0.2)  # a stopping daemon waits no longer than its grace
        return returned

    assert asyncio.run(scenario()) < 0.05


# --- command --------------------------------------------------------------------------------


DUMP = 'env | grep -E "^(CRONPLUS_|NOTIFY_SOCKET)" > {0}; printf %s "$CRONPLUS_ALERT_JSON" > {0}.j'


def test_a_command_notifier_gets_the_alert_in_its_environment(tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    notifier = CommandNotifier(
        ("/bin/sh", "-c", DUMP.format(out)),
        runner=Runner(),
        base_env={"PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": "/run/systemd/notify"},
        workdir=tmp_path,
        timeout=timedelta(seconds=5),
        host="box",
    )
    dispatch(Route(name="page", notifier=notifier, delivery=FAST), alert(stderr_tail="a\x00b"))
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert env["CRONPLUS_ALERT"] == "failure"
    assert env["CRONPLUS_JOB"] == "backup"
    assert env["CRONPLUS_OUTCOME"] == "failed"
    assert env["CRONPLUS_EXIT_CODE"] == "7"
    assert env["CRONPLUS_RUN_ID"] == "backup@2026-03-08T07:00:00Z"
    assert env["CRONPLUS_STDERR_TAIL"] == "ab"  # a NUL cannot travel in the environment
    assert "NOTIFY_SOCKET" not in env
    assert json.loads(Path(f"{out}.j").read_text())["exit_code"] == 7


@pytest.mark.parametrize(
    ("script", "timeout", "why"),
    [
        ("echo nope >&2; exit 3", 5.0, "exit code 3 is not a success code: nope"),
        ("sleep 30", 0.3, "timed out after 0.3s"),
    ],
    ids=["exits-3", "outlives-its-timeout"],
)
def test_a_failing_command_notifier_raises_a_delivery_error(
    tmp_path: Path, script: str, timeout: float, why: str
) -> None:
    notifier = CommandNotifier(
        ("/bin/sh", "-c", script),
        runner=Runner(),
        base_env={"PATH": "/usr/bin:/bin"},
        workdir=tmp_path,
        timeout=timedelta(seconds=timeout),
        host="box",
    )
    began = time.monotonic()
    with pytest.raises(DeliveryError, match=why):
        asyncio.run(notifier.send(alert()))
    assert time.monotonic() - began < timeout + 3


# --- email --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.mark.parametrize("security", [SmtpSecurity.STARTTLS, SmtpSecurity.TLS], ids=str)
def test_an_email_reaches_the_smtp_server_over_tls_with_a_login(
    certificate: tuple[Path, Path], tmp_path: Path, security: SmtpSecurity
) -> None:
    cert, key = certificate
    tls = "implicit" if security is SmtpSecurity.TLS else "starttls"
    server = SmtpRecorder(cert, key, tls=tls, password="pw1")
    secret = tmp_path / "password"
    secret.write_text("pw1\n")
    from_env = security is SmtpSecurity.STARTTLS  # one case each way
    smtp = SmtpSettings(
        host="127.0.0.1",
        port=server.port,
        security=security,
        sender="cron@example.com",
        username="cron",
        password_env="SMTP_PASSWORD" if from_env else None,
        password_file=None if from_env else secret,
        ca_file=cert,
    )
    mailer = Mailer(smtp, env={"SMTP_PASSWORD": "pw1"}, host="box")
    notifier = EmailNotifier(("ops@example.com",), mailer=mailer, timeout=timedelta(seconds=10))
    try:
        asyncio.run(notifier.send(alert()))
    finally:
        mailer.close()
        server.close()
    (mail,) = server.mails
    assert mail.sender == "cron@example.com" and mail.recipients == ["ops@example.com"]
    assert server.logins == [("cron", True)]
    message = email.message_from_bytes(mail.content, policy=email.policy.default)
    assert message["Subject"] == "[cronplus] backup: failure on box"
    text = message.get_body().get_content()  # type: ignore[union-attr]
    assert "job backup failed after 3 attempt(s) (exit 7)" in text
    assert "exit_code: 7" in text and "no space left" in text


@pytest.mark.parametrize(
    ("smtp", "why"),
    [
        (
            {"password_env": "NOT_SET"},
            "settings.smtp.password_env: NOT_SET is not set in the daemon's environment",
        ),
        (
            {"password_file": Path("/nonexistent/pw")},
            "settings.smtp.password_file: cannot read /nonexistent/pw: No such file",
        ),
    ],
    ids=["env-variable-missing", "password-file-missing"],
)
def test_a_password_that_cannot_be_read_is_a_delivery_error_naming_its_source(
    smtp: dict[str, object], why: str
) -> None:
    settings = SmtpSettings(
        host="127.0.0.1",
        port=1,
        sender="cron@example.com",
        username="cron",
        **smtp,  # type: ignore[arg-type]
    )
    mailer = Mailer(settings, env={}, host="box")
    notifier = EmailNotifier(("ops@example.com",), mailer=mailer, timeout=timedelta(seconds=1))
    try:
        with pytest.raises(DeliveryError, match=why):
            asyncio.run(notifier.send(alert()))
    finally:
        mailer.close()


def test_a_server_without_starttls_gets_no_mail_in_the_clear(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    server = SmtpRecorder(cert, key, tls="none", password="pw1")  # offers no STARTTLS
    wants_tls = SmtpSettings(
        host="127.0.0.1", port=server.port, sender="cron@example.com", ca_file=cert
    )
    mailer = Mailer(wants_tls, env={}, host="box")
    notifier = EmailNotifier(("ops@example.com",), mailer=mailer, timeout=timedelta(seconds=2))
    try:
        with pytest.raises(DeliveryError, match="STARTTLS extension not supported"):
            asyncio.run(notifier.send(alert()))
    finally:
        mailer.close()
        server.close()
    assert server.mails == []


# --- pings --------------------------------------------------------------------------------

RUN_ID = "backup@2026-03-08T07:00:00Z"


def result(outcome: Outcome, exit_code: int | None, stderr: str = "") -> RunResult:
    return RunResult(
        job="backup",
        scheduled_at=T0,
        attempt=1,
        started_at=T0,
        finished_at=T0,
        outcome=outcome,
        exit_code=exit_code,
        stderr_tail=stderr,
    )


@pytest.mark.parametrize(
    ("base", "ended", "expected"),
    [
        ("https://hc.example/u1", None, "https://hc.example/u1/start?rid={rid}"),
        ("https://hc.example/u1", result(Outcome.SUCCEEDED, 0), "https://hc.example/u1?rid={rid}"),
        ("https://hc.example/u1", result(Outcome.SUCCEEDED, 3), "https://hc.example/u1?rid={rid}"),
        ("https://hc.example/u1/", result(Outcome.FAILED, 7), "https://hc.example/u1/7?rid={rid}"),
        ("https://hc.example/u1", result(Outcome.FAILED, 0), "https://hc.example/u1/fail?rid={rid}"),
        ("https://hc.example/u1", result(Outcome.TIMED_OUT, None), "https://hc.example/u1/fail?rid={rid}"),
        ("https://hc.example/k/slug?create=1", None, "https://hc.example/k/slug/start?create=1&rid={rid}"),
    ],
    ids=["start", "success", "success-code-3", "exit-7", "failing-exit-0", "timeout", "query-kept"],
)  # fmt: skip
def test_the_ping_address_says_start_success_or_the_failure(
    base: str, ended: RunResult | None, expected: str
) -> None:
    assert ping_address(base, run_id=RUN_ID, result=ended) == expected.format(rid=rid(RUN_ID))


def test_the_rid_is_a_stable_uuid_of_the_run_id() -> None:
    assert rid(RUN_ID) == rid(RUN_ID) != rid("backup@2026-03-08T08:00:00Z")
    assert len(rid(RUN_ID)) == 36 and rid(RUN_ID).count("-") == 4


@pytest.mark.parametrize(
    ("tail", "limit", "expected"),
    [
        ("short", 100, b"short"),
        ("0123456789", 4, b"6789"),
        ("ab€", 2, b""),  # the euro sign's 3 bytes do not fit in 2: nothing half-cut
        ("a€b", 4, "€b".encode()),
        ("abc", 0, b""),
    ],
    ids=["fits", "keeps-the-end", "no-half-character", "whole-character", "zero-limit"],
)
def test_the_failure_body_keeps_the_end_of_stderr_within_the_limit(
    tail: str, limit: int, expected: bytes
) -> None:
    assert failure_body(tail, limit) == expected


def ping_job(url: str) -> Job:
    return Job(
        name="backup",
        schedule="0 * * * *",
        timezone=ZoneInfo("UTC"),
        command="true",
        ping_url=url,
    )


def run_pings(pinger: Pinger, job: Job, ended: RunResult) -> None:
    async def scenario() -> None:
        slot = Slot(job=job.name, scheduled_at=T0)
        pinger.attempt_started(job=job, slot=slot, attempt=1, pid=1, at=T0)
        pinger.attempt_finished(job=job, result=ended, retry_at=None, stopped=False)
        await pinger.close(30)

    asyncio.run(scenario())


def test_a_run_pings_start_then_its_exit_code_with_the_stderr_tail_in_the_server_limit(
    http: HttpRecorder,
) -> None:
    http.body_limit = 5
    job = ping_job(http.url + "/ping/uuid-1")
    pinger = Pinger(FAST, clock=FakeClock(T0), log=EventLog())
    run_pings(pinger, job, result(Outcome.FAILED, 7, "it broke badly"))
    start, end = http.wait_for(2)
    assert start.path == f"/ping/uuid-1/start?rid={rid(RUN_ID)}" and start.body == b""
    assert end.path == f"/ping/uuid-1/7?rid={rid(RUN_ID)}"
    assert end.body == b"badly"  # the server said Ping-Body-Limit: 5


def test_a_ping_server_that_fails_is_retried_boundedly_and_the_url_never_logged(
    http: HttpRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    http.mode = "fail"
    job = ping_job(http.url + "/ping/SECRET-uuid")
    pinger = Pinger(FAST, clock=FakeClock(T0), log=EventLog())
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        run_pings(pinger, job, result(Outcome.SUCCEEDED, 0))
    assert len(http.wait_for(6)) == 6  # start and success, three tries each
    assert len(events(caplog, "ping_lost")) == 2
    assert "HTTP 500" in events(caplog, "ping_lost")[0].getMessage()
    assert all(
        "SECRET" not in r.getMessage() and "SECRET" not in str(r.__dict__) for r in caplog.records
    )


def test_a_hanging_ping_server_holds_up_nothing_beyond_the_timeout(http: HttpRecorder) -> None:
    http.mode = "hang"
    job = ping_job(http.url + "/ping/uuid-2")
    once = Delivery(timeout=timedelta(seconds=0.2), retries=0)
    pinger = Pinger(once, clock=FakeClock(T0), log=EventLog())
    began = time.monotonic()
    run_pings(pinger, job, result(Outcome.SUCCEEDED, 0))
    assert time.monotonic() - began < 2.0
    paths = [request.path.split("?")[0] for request in http.wait_for(2)]
    assert paths == ["/ping/uuid-2/start", "/ping/uuid-2"]  # in order, the start first

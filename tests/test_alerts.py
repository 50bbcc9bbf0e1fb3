"""Alert decisions (pure), the engine raising them on a fake clock, and their crontab keys."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cronplus.clock import FakeClock
from cronplus.config import loader
from cronplus.config.alerting import listen_address
from cronplus.core.model import (
    AlertKind,
    ConfigError,
    Crontab,
    Delivery,
    Job,
    ListenAddress,
    NotifierKind,
    Outcome,
    RetryPolicy,
    RunResult,
    Settings,
    SmtpSecurity,
)
from cronplus.daemon.observatory import AlertRelay
from cronplus.engine.engine import Engine
from cronplus.observe.alerts import AlertBook
from cronplus.observe.logs import EventLog
from cronplus.observe.notifiers import Dispatcher, RecordingNotifier, Route
from cronplus.run.runner import Runner
from cronplus.state.sqlite import SqliteStore

T0 = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
H = timedelta(hours=1)
S = timedelta(seconds=1)


def job(**fields: object) -> Job:
    base = Job(
        name="backup",
        schedule="0 * * * *",
        timezone=ZoneInfo("UTC"),
        command="true",
        on_failure=("ops",),
        on_retry=("chat",),
        on_missed=("chat",),
        on_recovery=("ops",),
        retry=RetryPolicy(retries=2),
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def result(outcome: Outcome, *, attempt: int = 1, at: datetime = T0, code: int = 1) -> RunResult:
    return RunResult(
        job="backup",
        scheduled_at=at,
        attempt=attempt,
        started_at=at,
        finished_at=at + S,
        outcome=outcome,
        exit_code=0 if outcome.ok else code,
    )


# --- decisions ------------------------------------------------------------------------------

# (history's newest outcome, this attempt's outcome, retry scheduled, stopped by cronplus,
#  the alerts raised)
DECISIONS = [
    (None, Outcome.FAILED, True, False, ["retry"]),
    (None, Outcome.FAILED, False, False, ["failure"]),
    (None, Outcome.TIMED_OUT, False, False, ["failure"]),
    (None, Outcome.KILLED, False, False, ["failure"]),
    (None, Outcome.KILLED, False, True, []),
    (None, Outcome.INTERRUPTED, False, True, []),
    (None, Outcome.SUCCEEDED, False, False, []),
    (Outcome.FAILED, Outcome.SUCCEEDED, False, False, ["recovery"]),
    (Outcome.TIMED_OUT, Outcome.SUCCEEDED, False, False, ["recovery"]),
    (Outcome.SUCCEEDED, Outcome.SUCCEEDED, False, False, []),
    (Outcome.SKIPPED_OVERLAP, Outcome.SUCCEEDED, False, False, []),
    (Outcome.FAILED, Outcome.FAILED, True, False, ["retry"]),
]


@pytest.mark.parametrize(
    ("before", "outcome", "retried", "stopped", "expected"),
    DECISIONS,
    ids=[
        "failed-attempt-with-a-retry",
        "failed-run",
        "timed-out-run",
        "killed-run",
        "replaced-run",
        "shutdown",
        "plain-success",
        "success-after-failure",
        "success-after-timeout",
        "success-after-success",
        "success-after-a-skip",
        "retry-while-failing",
    ],
)
def test_an_ended_attempt_raises_the_alert_its_outcome_calls_for(
    before: Outcome | None, outcome: Outcome, retried: bool, stopped: bool, expected: list[str]
) -> None:
    book = AlertBook({} if before is None else {"backup": (before, T0 - H)})
    retry_at = T0 + timedelta(minutes=5) if retried else None
    alerts = book.attempt_finished(
        job(), result(outcome), retry_at=retry_at, stopped=stopped, now=T0
    )
    assert [str(alert.kind) for alert in alerts] == expected


def test_a_failure_alert_carries_the_run_and_says_what_happened() -> None:
    (alert,) = AlertBook({}).attempt_finished(
        job(), result(Outcome.FAILED, attempt=3, code=7), retry_at=None, stopped=False, now=T0
    )
    assert (
        alert.message == "job backup failed after 3 attempt(s) (exit 7), slot 2026-03-08T07:00:00Z"
    )
    assert (alert.run_id, alert.attempt, alert.max_attempts) == (
        "backup@2026-03-08T07:00:00Z",
        3,
        3,
    )


def test_only_the_first_success_after_a_failure_is_a_recovery() -> None:
    book = AlertBook({})
    kinds = []
    for outcome in [Outcome.FAILED, Outcome.SUCCEEDED, Outcome.SUCCEEDED, Outcome.FAILED]:
        alerts = book.attempt_finished(job(), result(outcome), retry_at=None, stopped=False, now=T0)
        kinds += [str(alert.kind) for alert in alerts]
    assert kinds == ["failure", "recovery", "failure"]


def test_missed_slots_make_one_alert_with_their_count() -> None:
    missed = replace(result(Outcome.MISSED), attempt=0, reason="7 slot(s) missed from A to B")
    (alert,) = AlertBook({}).slots_missed(job(), missed, count=7, now=T0)
    assert (alert.kind, alert.missed, alert.attempt) == (AlertKind.MISSED, 7, None)
    assert alert.message == "job backup: 7 slot(s) missed: 7 slot(s) missed from A to B"


@pytest.mark.parametrize(
    ("kind", "notifiers"),
    [
        (AlertKind.FAILURE, ("ops",)),
        (AlertKind.RETRY, ("chat",)),
        (AlertKind.MISSED, ("chat",)),
        (AlertKind.RECOVERY, ("ops",)),
        (AlertKind.NO_SUCCESS, ("ops",)),
    ],
    ids=str,
)
def test_each_alert_kind_goes_to_its_own_notifiers(
    kind: AlertKind, notifiers: tuple[str, ...]
) -> None:
    assert job().notifiers(kind) == notifiers


# --- the dead-man alert -----------------------------------------------------------------------


def watched(
    period: timedelta, seen: dict[str, tuple[Outcome, datetime]] | None = None
) -> AlertBook:
    book = AlertBook(seen or {})
    book.watch([job(alert_if_no_success_for=period)], now=T0)
    return book


def test_the_dead_man_alert_fires_once_and_only_a_success_re_arms_it() -> None:
    book = watched(26 * H)
    assert book.next_deadline() == T0 + 26 * H
    assert book.due(now=T0 + 26 * H - S) == []
    (alert,) = book.due(now=T0 + 26 * H)
    assert alert.kind is AlertKind.NO_SUCCESS
    assert alert.message == "job backup has not succeeded for 1d2h (last success: none seen)"
    assert book.next_deadline() is None  # quiet: nothing to wake for
    assert book.due(now=T0 + 100 * H) == []
    failed = result(Outcome.FAILED, at=T0 + 101 * H)
    book.attempt_finished(job(), failed, retry_at=None, stopped=False, now=T0 + 101 * H)
    assert book.due(now=T0 + 200 * H) == []  # a failure does not re-arm it
    success = result(Outcome.SUCCEEDED, at=T0 + 201 * H)
    (recovery,) = book.attempt_finished(
        job(), success, retry_at=None, stopped=False, now=T0 + 201 * H
    )
    assert recovery.kind is AlertKind.RECOVERY  # it had fired: the success is a recovery
    assert book.next_deadline() == success.finished_at + 26 * H
    (again,) = book.due(now=success.finished_at + 26 * H)
    assert again.last_success == success.finished_at


def test_the_dead_man_count_starts_from_the_last_success_in_history() -> None:
    book = watched(2 * H, {"backup": (Outcome.SUCCEEDED, T0 - H)})
    assert book.next_deadline() == T0 + H


def test_a_reload_keeps_the_count_and_a_new_period_applies_to_it() -> None:
    book = watched(2 * H)
    book.watch([job(alert_if_no_success_for=3 * H)], now=T0 + H)
    assert book.next_deadline() == T0 + 3 * H
    book.watch([job(alert_if_no_success_for=None)], now=T0 + H)
    assert book.next_deadline() is None


# --- the engine raising them -----------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore.open(tmp_path / "state.db")
    yield opened
    opened.close()


def run_engine(tmp_path: Path, store: SqliteStore, the_job: Job) -> dict[str, RecordingNotifier]:
    """One slot, run to its end with retries on a fake clock; what each notifier got."""
    clock = FakeClock(T0)
    fakes = {"ops": RecordingNotifier(), "chat": RecordingNotifier()}
    routes = {
        name: Route(name=name, notifier=fake, delivery=Delivery()) for name, fake in fakes.items()
    }
    tab = Crontab(
        path=tmp_path / "crontab.yaml",
        settings=Settings(state=tmp_path / "state.db"),
        jobs=(the_job,),
    )

    async def scenario() -> None:
        dispatcher = Dispatcher(routes, clock=clock, log=EventLog())
        relay = AlertRelay(AlertBook({}), dispatcher, clock=clock)
        engine = Engine(
            tab,
            store=store,
            runner=Runner(drain_grace=0.1),
            clock=clock,
            base_env={"PATH": "/usr/bin:/bin"},
            log=EventLog(),
            events=relay,
        )
        engine.start_slots([(the_job, T0)], now=clock.now())
        await engine.wait_idle()
        await dispatcher.close(10)

    asyncio.run(scenario())
    return fakes


def test_the_engine_alerts_each_retry_then_the_failure(tmp_path: Path, store: SqliteStore) -> None:
    failing = job(
        command="echo broken >&2; exit 4",
        workdir=tmp_path,
        retry=RetryPolicy(retries=2, delay=30 * S),
    )
    fakes = run_engine(tmp_path, store, failing)
    retries = fakes["chat"].sent
    assert [(a.kind, a.attempt) for a in retries] == [(AlertKind.RETRY, 1), (AlertKind.RETRY, 2)]
    assert [a.retry_at for a in retries] == [T0 + 30 * S, T0 + 90 * S]  # 30 s, then doubled
    (failure,) = fakes["ops"].sent
    assert (failure.kind, failure.attempt, failure.exit_code) == (AlertKind.FAILURE, 3, 4)
    assert failure.stderr_tail == "broken"


def test_the_engine_alerts_a_skipped_slot_as_missed(tmp_path: Path, store: SqliteStore) -> None:
    slow = job(command="sleep 0.3", workdir=tmp_path)
    clock = FakeClock(T0)
    chat = RecordingNotifier()
    routes = {"chat": Route(name="chat", notifier=chat, delivery=Delivery())}
    tab = Crontab(
        path=tmp_path / "c.yaml", settings=Settings(state=tmp_path / "s.db"), jobs=(slow,)
    )

    async def scenario() -> None:
        dispatcher = Dispatcher(routes, clock=clock, log=EventLog())
        relay = AlertRelay(AlertBook({}), dispatcher, clock=clock)
        engine = Engine(
            tab,
            store=store,
            runner=Runner(),
            clock=clock,
            base_env={},
            log=EventLog(),
            events=relay,
        )
        engine.load_jobs(now=clock.now(), ledger={})
        engine.start_slots([(slow, T0)], now=clock.now())
        engine.start_slots([(slow, T0 + H)], now=clock.now())  # while the first is alive
        await engine.wait_idle()
        await dispatcher.close(10)

    asyncio.run(scenario())
    (missed,) = chat.sent
    assert (missed.kind, missed.missed, missed.outcome) == (
        AlertKind.MISSED,
        1,
        Outcome.SKIPPED_OVERLAP,
    )


# --- the crontab keys --------------------------------------------------------------------------

FULL = """\
settings:
  state: ./state.db
  metrics: "[::1]:9100"
  smtp:
    host: mail.example.com
    security: tls
    sender: cron@example.com
    username: cron
    password_env: SMTP_PASSWORD
  pings: {timeout: 3s, retries: 4}
notifiers:
  ops: {email: [ops@example.com, oncall@example.com], timeout: 20s}
  chat: {webhook: "https://chat.example.com/hooks/T0KEN", retries: 1, retry_delay: 2s}
  page: {command: [/usr/local/bin/page, --urgent]}
defaults:
  on_failure: [ops]
jobs:
  backup:
    schedule: "0 3 * * *"
    command: backup.sh
    on_retry: [chat]
    on_recovery: [ops, chat]
    alert_if_no_success_for: 26h
    ping_url: https://hc-ping.example.com/5f1e
  quiet:
    schedule: "0 4 * * *"
    command: "true"
    on_failure: []
"""


def load(text: str) -> Crontab:
    return loader.loads(text, path=Path("/etc/cronplus/crontab.yaml"), env={"HOME": "/root"})


def test_every_alert_key_loads_into_the_model() -> None:
    tab = load(FULL)
    backup, quiet = tab.jobs
    assert backup.on_failure == ("ops",) and quiet.on_failure == ()
    assert (backup.on_retry, backup.on_recovery) == (("chat",), ("ops", "chat"))
    assert backup.alert_if_no_success_for == 26 * H
    assert backup.ping_url == "https://hc-ping.example.com/5f1e"
    assert "5f1e" not in repr(backup)  # a secret stays out of reprs
    settings = tab.settings
    assert settings.metrics == ListenAddress(host="::1", port=9100)
    assert settings.smtp is not None and settings.smtp.security is SmtpSecurity.TLS
    assert settings.smtp.port == 465  # the TLS port when none is given
    assert settings.pings == Delivery(timeout=3 * S, retries=4, retry_delay=S)
    ops, chat, page = (tab.notifiers[name] for name in ("ops", "chat", "page"))
    assert (ops.kind, ops.to, ops.delivery.timeout) == (
        NotifierKind.EMAIL,
        ("ops@example.com", "oncall@example.com"),
        20 * S,
    )
    assert (chat.kind, chat.url, chat.delivery.retries) == (
        NotifierKind.WEBHOOK,
        "https://chat.example.com/hooks/T0KEN",
        1,
    )
    assert (page.kind, page.argv) == (NotifierKind.COMMAND, ("/usr/local/bin/page", "--urgent"))


BAD = [
    (
        "unknown-notifier",
        "notifiers: {ops: {webhook: 'https://x.example'}}\n"
        "jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    on_failure: [ops, pager]\n",
        "crontab.yaml:6:23: jobs.a.on_failure[1]: no notifier named 'pager' under notifiers:; "
        "expected one of ops",
    ),
    (
        "two-kinds",
        "notifiers:\n  ops: {webhook: 'https://x.example', command: [x]}\njobs: {}\n",
        "crontab.yaml:2:3: notifiers.ops: expected exactly one of command, webhook or email, "
        "got command and webhook",
    ),
    (
        "email-without-smtp",
        "notifiers:\n  ops: {email: [ops@example.com]}\njobs: {}\n",
        "crontab.yaml:2:9: notifiers.ops.email: an email notifier needs settings.smtp (the "
        "server to send through)",
    ),
    (
        "dead-man-with-nowhere-to-go",
        "jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    alert_if_no_success_for: 1h\n",
        "crontab.yaml:5:5: jobs.a.alert_if_no_success_for: the dead-man alert goes to the "
        "on_failure notifiers, and this job has none",
    ),
    (
        "ping-url-not-http",
        "jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    ping_url: ftp://SECRET\n",
        "crontab.yaml:5:15: jobs.a.ping_url: expected an http:// or https:// URL with a host",
    ),
    (
        "password-in-both-places",
        "settings:\n  smtp: {host: m, sender: a@b.c, username: u, password_env: P, "
        "password_file: /p}\njobs: {}\n",
        "crontab.yaml:2:64: settings.smtp.password_file: give password_env or password_file, "
        "not both",
    ),
    (
        "password-itself",
        "settings:\n  smtp: {host: m, sender: a@b.c, username: u, password: hunter2}\njobs: {}\n",
        "crontab.yaml:2:34: settings.smtp.username: a username needs password_env or "
        "password_file (never the password itself)\n"
        "crontab.yaml:2:47: settings.smtp.password: unknown key 'password', did you mean "
        "'password_env'?",
    ),
    (
        "bad-metrics-address",
        "settings: {metrics: 'localhost'}\njobs: {}\n",
        "crontab.yaml:1:21: settings.metrics: expected HOST:PORT such as 127.0.0.1:9746 (or a "
        "port alone), got 'localhost'",
    ),
    (
        "header-injection-in-an-address",
        'settings:\n  smtp: {host: m, sender: "a@b.c\\nBcc: x@y.z"}\njobs: {}\n',
        "crontab.yaml:2:27: settings.smtp.sender: expected an e-mail address such as "
        "ops@example.com, got 'a@b.c\\nBcc: x@y.z'",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in BAD], ids=[i for i, _, _ in BAD]
)
def test_a_bad_alert_key_is_reported_at_its_place(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(text)
    assert str(caught.value).replace("/etc/cronplus/", "") == expected
    assert "SECRET" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:9746", ListenAddress(host="127.0.0.1", port=9746)),
        ("0.0.0.0:80", ListenAddress(host="0.0.0.0", port=80)),
        ("[::1]:9746", ListenAddress(host="::1", port=9746)),
        ("metrics.local:9746", ListenAddress(host="metrics.local", port=9746)),
        (9746, ListenAddress(host="127.0.0.1", port=9746)),
        ("127.0.0.1:0", ListenAddress(host="127.0.0.1", port=0)),
    ],
    ids=["loopback", "every-address", "ipv6", "name", "bare-port", "any-port"],
)
def test_a_listen_address_is_host_and_port(value: object, expected: ListenAddress) -> None:
    assert listen_address(value) == expected


@pytest.mark.parametrize("value", ["localhost", "1.2.3.4:99999", ":", "a b:1", True], ids=str)
def test_a_listen_address_without_a_port_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        listen_address(value)

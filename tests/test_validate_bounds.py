"""What validate accepts, a run can do: values past what a run could survive (an instant out
of datetime's range, an integer past SQLite's, an argument the kernel refuses at exec, a
password sent in clear over the wire) are errors at load, named at their place."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cronplus.config.loader import loads
from cronplus.core import plan
from cronplus.core.model import ConfigError, RetryPolicy

ENV = {"HOME": "/home/op", "TZ": "UTC", "SMTP_PASSWORD": "x"}


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        loads(textwrap.dedent(text), path=Path("crontab.yaml"), env=ENV, euid=1000)
    return [f"{issue.path}: {issue.message}" for issue in caught.value.issues]


def job(fields: str, command: str = "command: ['true']") -> str:
    return f"jobs:\n  a:\n    schedule: '@daily'\n    {command}\n    {fields}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("settings: {history_keep: 9223372036854775808}\n" + job("timeout: 1m"),
         "settings.history_keep: expected an integer <= 1000000"),
        ("settings: {max_concurrent: 10000000}\n" + job("timeout: 1m"),
         "settings.max_concurrent: expected an integer <= 100000"),
        (job("jitter: 100000000d"), "jobs.a.jitter: duration '100000000d' is too long"),
        (job("timeout: 3651d"), "jobs.a.timeout: duration '3651d' is too long"),
        (job("retries: 1000000"), "jobs.a.retries: expected an integer <= 1000"),
        (job("retry_backoff: 1000.0"), "jobs.a.retry_backoff: expected a number <= 100"),
        (job("timeout: 1m", "command: ['echo', " + repr("x" * 131072) + "]"),
         "jobs.a.command[1]: this argument is longer than the 127 KiB the kernel passes"),
        (job("timeout: 1m", 'command: "echo \\0 nul"'),
         "jobs.a.command: the command holds a NUL character, which exec cannot pass"),
        (job("timeout: 1m", "command: [" + ", ".join(["'" + "y" * 100_000 + "'"] * 11) + "]"),
         "jobs.a.command: the arguments together are longer than the 1024 KiB"),
        (job('env: {A: "x\\0y"}'), "jobs.a.env.A: the value holds a NUL character"),
    ],
    ids=["history-keep-past-sqlite", "max-concurrent", "jitter-past-datetime", "timeout",
         "retries", "backoff", "argument-past-max-arg-strlen", "nul", "argv-past-arg-max",
         "env-nul"],
)  # fmt: skip
def test_a_value_no_run_could_survive_is_refused_at_load(text: str, expected: str) -> None:
    found = problems(text)

    assert len(found) == 1 and found[0].startswith(expected), found


@pytest.mark.parametrize(
    ("host", "refused"),
    [("mail.example.org", True), ("192.0.2.7", True), ("localhost", False),
     ("127.0.0.1", False), ("[::1]", False)],
    ids=["remote-name", "remote-address", "localhost", "loopback-v4", "loopback-v6"],
)  # fmt: skip
def test_a_login_in_clear_text_to_another_host_is_refused(host: str, refused: bool) -> None:
    smtp = (
        f"settings:\n  smtp: {{host: '{host}', sender: c@example.org, security: none,"
        " username: cron, password_env: SMTP_PASSWORD}\n"
    )
    text = smtp + job("timeout: 1m")

    if not refused:
        loads(text, path=Path("crontab.yaml"), env=ENV, euid=1000)
        return
    assert problems(text) == [
        f"settings.smtp.security: security: none would send the password to {host} in clear"
        " text; use starttls or tls (security: none with a login is only for a relay on this"
        " host)"
    ]


def test_the_largest_values_accepted_leave_every_instant_in_range() -> None:
    loaded = loads(
        "settings: {history_keep: 1000000}\n"
        + job(
            "retries: 1000\n    retry_backoff: 100.0\n    jitter: 3650d\n    retry_max_delay: 3650d"
        ),
        path=Path("crontab.yaml"),
        env=ENV,
        euid=1000,
    )
    (one,) = loaded.jobs
    finished = datetime(9000, 1, 1, tzinfo=UTC)

    last = plan.retry_at(one.retry, failed_attempts=1000, finished_at=finished, next_slot=None)

    assert last == finished + timedelta(days=3650)
    assert (
        plan.retry_delay(RetryPolicy(retries=1000, backoff=100.0), 1000) == RetryPolicy().max_delay
    )
    assert datetime(9000, 1, 1, tzinfo=UTC) + one.jitter < datetime.max.replace(tzinfo=UTC)

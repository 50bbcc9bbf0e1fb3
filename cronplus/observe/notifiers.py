"""Notifiers: delivering alerts by command, webhook or e-mail, never blocking the loop.

A ``Notifier`` makes one try at one alert. The ``Dispatcher`` gives each alert and notifier
its own asyncio task: every try runs under ``asyncio.timeout``, failed tries are retried a
bounded number of times with a doubling delay, and each failure is logged (by notifier
name: URLs and addresses can be secrets). The engine only ever hands an alert over.

- ``command``: an argv started through ``Runner`` (the only place processes start), with
  the alert in ``CRONPLUS_*`` environment variables; its own timeout ends its group.
- ``webhook``: a JSON POST over asyncio streams (``webclient.py`` says why not urllib).
- ``email``: ``smtplib`` (STARTTLS, TLS or plain, then AUTH) in a pool of two threads of
  its own. smtplib is the tested SMTP client the standard library has; a thread cannot be
  cancelled, so a hung server may keep one until its socket timeout (the notifier's), but
  the pool is not the loop's default executor, so a hung mail server never delays the
  lookups a webhook needs, and the caller is released at its timeout all the same.

``RecordingNotifier`` is the fake for tests: it keeps what it was sent and can fail.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, Protocol

from cronplus.clock import Clock
from cronplus.core.model import Delivery, NotifierConfig, NotifierKind, SmtpSecurity, SmtpSettings
from cronplus.host import permissions
from cronplus.observe import webclient
from cronplus.observe.alerts import Alert
from cronplus.observe.logs import EventLog
from cronplus.run.runner import Command, Runner, is_control_variable
from cronplus.run.secrets import read_trusted_text, redactor

MAX_DELIVERIES = 32
"""Deliveries under way at once; a burst of failures waits its turn beyond this."""


class DeliveryError(Exception):
    """One try that failed; the message names no secret and is logged as it is."""


class Notifier(Protocol):
    """Delivers one alert, once; raises ``DeliveryError`` (or ``TimeoutError``) on failure."""

    async def send(self, alert: Alert) -> None: ...


# --- command ----------------------------------------------------------------------------


def alert_environment(base: Mapping[str, str], alert: Alert, *, host: str) -> dict[str, str]:
    """The daemon's environment less its control variables, plus the alert's variables."""
    env = {name: value for name, value in base.items() if not is_control_variable(name)}
    body = alert.body(host=host)
    for key in ("alert", "job", "host", "message", "run_id", "scheduled_at", "attempt"):
        env[f"CRONPLUS_{key.upper()}"] = _text(body[key])
    for key in ("outcome", "exit_code", "signal", "reason", "stderr_tail", "stdout_tail", "missed"):
        env[f"CRONPLUS_{key.upper()}"] = _text(body[key])
    env["CRONPLUS_ALERT_JSON"] = json.dumps(body, ensure_ascii=False)
    # A NUL cannot travel in the environment; a job's stderr may hold one.
    return {name: value.replace("\x00", "") for name, value in env.items()}


def _text(value: object) -> str:
    return "" if value is None else str(value)


class CommandNotifier:
    """Runs ``argv`` with the alert in its environment; exit 0 is a delivery."""

    def __init__(
        self,
        argv: tuple[str, ...],
        *,
        runner: Runner,
        base_env: Mapping[str, str],
        workdir: Path,
        timeout: timedelta,
        host: str,
    ) -> None:
        self._argv, self._runner, self._base_env = argv, runner, base_env
        self._workdir, self._timeout, self._host = workdir, timeout.total_seconds(), host

    async def send(self, alert: Alert) -> None:
        command = Command(
            argv=self._argv,
            workdir=self._workdir,
            env=alert_environment(self._base_env, alert, host=self._host),
            timeout=self._timeout,
            kill_grace=1.0,
            success_codes=frozenset({0}),
        )
        process = self._runner.start(command)
        # Its stderr goes into the log: the daemon's secrets are masked there as in a job's.
        process.mask_secrets(redactor(command.env))
        try:
            result = await process.wait()
        except asyncio.CancelledError:
            process.terminate(0.0)  # our caller gave up on it: so does its process group
            raise
        if not result.outcome.ok:
            tail = f": {result.stderr_tail}" if result.stderr_tail else ""
            raise DeliveryError(f"{self._argv[0]}: {result.reason or result.outcome}{tail}")


# --- webhook ----------------------------------------------------------------------------


class WebhookNotifier:
    """POSTs ``Alert.body()`` as JSON; any 2xx answer is a delivery."""

    def __init__(
        self, url: str, *, host: str, env: Mapping[str, str] = webclient.NO_ENVIRONMENT
    ) -> None:
        """``env``: where the proxy variables are read (the daemon's environment)."""
        self._url, self._host, self._env = url, host, env

    async def send(self, alert: Alert) -> None:
        body = json.dumps(alert.body(host=self._host), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        try:
            answer = await webclient.post(self._url, body, env=self._env, headers=headers)
        except webclient.HttpError as error:
            raise DeliveryError(str(error)) from None
        if not answer.ok:
            raise DeliveryError(f"the server answered HTTP {answer.status}")


# --- email ------------------------------------------------------------------------------


class Mailer:
    """``settings.smtp`` and the two threads that talk to it."""

    def __init__(self, smtp: SmtpSettings, *, env: Mapping[str, str], host: str) -> None:
        self.smtp, self._env, self.host = smtp, env, host
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cronplus-smtp")

    def password(self) -> str | None:
        """Read at each send, so a rotated secret needs no reload."""
        smtp = self.smtp
        if smtp.password_env is not None:
            value = self._env.get(smtp.password_env)
            if value is None:
                raise DeliveryError(
                    f"settings.smtp.password_env: {smtp.password_env} is not set in the "
                    "daemon's environment"
                )
            return value
        if smtp.password_file is not None:
            try:  # checked as root trusts it, on the descriptor it is read from
                text = read_trusted_text(smtp.password_file, "a password", permissions.SECRET)
            except ValueError as error:
                raise DeliveryError(f"settings.smtp.password_file: {error}") from None
            return text.rstrip("\r\n")
        return None

    async def send(self, message: EmailMessage, *, timeout: float) -> None:
        password = self.password()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._pool, lambda: _smtp_send(self.smtp, message, password, timeout)
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _smtp_send(
    smtp: SmtpSettings, message: EmailMessage, password: str | None, timeout: float
) -> None:
    """Runs in a mail thread. STARTTLS is required when asked for, never skipped."""
    context = ssl.create_default_context(cafile=smtp.ca_file)
    try:
        client = (
            smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=timeout, context=context)
            if smtp.security is SmtpSecurity.TLS
            else smtplib.SMTP(smtp.host, smtp.port, timeout=timeout)
        )
        with client:
            if smtp.security is SmtpSecurity.STARTTLS:
                client.starttls(context=context)
            if smtp.username is not None:
                client.login(smtp.username, password or "")
            client.send_message(message)
    except (smtplib.SMTPException, OSError) as error:
        raise DeliveryError(f"SMTP {smtp.host}:{smtp.port}: {_smtp_why(error)}") from None


def _smtp_why(error: Exception) -> str:
    if isinstance(error, smtplib.SMTPResponseException):
        text = error.smtp_error
        words = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        return f"{error.smtp_code} {words}"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


class EmailNotifier:
    """Mails the alert to ``to`` through the ``Mailer``."""

    def __init__(self, to: tuple[str, ...], *, mailer: Mailer, timeout: timedelta) -> None:
        self._to, self._mailer, self._timeout = to, mailer, timeout.total_seconds()

    async def send(self, alert: Alert) -> None:
        await self._mailer.send(self.message(alert), timeout=self._timeout)

    def message(self, alert: Alert) -> EmailMessage:
        host = self._mailer.host
        message = EmailMessage()
        message["Subject"] = f"[cronplus] {alert.job}: {alert.kind} on {host}"
        message["From"] = self._mailer.smtp.sender
        message["To"] = ", ".join(self._to)
        message["Date"] = format_datetime(alert.at)
        message["Message-ID"] = make_msgid(domain=host or None)
        body = alert.body(host=host)
        details = [
            f"{key}: {value}"
            for key, value in body.items()
            if value is not None and key not in ("message", "stderr_tail", "stdout_tail")
        ]
        tail = f"\n\nstderr (tail):\n{alert.stderr_tail}" if alert.stderr_tail else ""
        tail += f"\n\nstdout (tail):\n{alert.stdout_tail}" if alert.stdout_tail else ""
        message.set_content(f"{alert.message}\n\n" + "\n".join(details) + tail + "\n")
        return message


# --- the fake ---------------------------------------------------------------------------


class RecordingNotifier:
    """Keeps every alert it is sent; the first ``failures`` tries fail."""

    def __init__(self, *, failures: int = 0) -> None:
        self.sent: list[Alert] = []
        self.tries = 0
        self._failures = failures

    async def send(self, alert: Alert) -> None:
        self.tries += 1
        if self.tries <= self._failures:
            raise DeliveryError(f"try {self.tries} fails on purpose")
        self.sent.append(alert)


# --- delivery ---------------------------------------------------------------------------


async def deliver(
    attempt: Callable[[], Awaitable[None]],
    policy: Delivery,
    *,
    clock: Clock,
    on_failure: Callable[[int, str, bool], None],
) -> bool:
    """Try ``attempt`` up to ``1 + policy.retries`` times, each within ``policy.timeout``.

    ``on_failure(try, why, final)`` hears each failed try. True once a try succeeded.
    """
    tries = policy.retries + 1
    for number in range(1, tries + 1):
        try:
            async with asyncio.timeout(policy.timeout.total_seconds()):
                await attempt()
        except (DeliveryError, webclient.HttpError) as error:
            why = str(error)
        except TimeoutError:
            why = f"no answer within {policy.timeout.total_seconds():g}s"
        else:
            return True
        on_failure(number, why, number == tries)
        if number < tries:
            delay = policy.retry_delay * 2 ** (number - 1)
            await clock.sleep_until(clock.now() + delay, max_seconds=delay.total_seconds())
    return False


@dataclass(frozen=True, kw_only=True)
class Route:
    """A named notifier and how hard to try it."""

    name: str
    notifier: Notifier
    delivery: Delivery


class Background:
    """Tasks nobody awaits: kept referenced, errors logged, ended boundedly on close."""

    def __init__(self, log: EventLog | None = None) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = log or EventLog()

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self._log.error("background_error", f"a background delivery crashed: {error!r}")

    async def close(self, grace: float) -> None:
        """Give the tasks under way ``grace`` seconds, then cancel the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)


class Dispatcher:
    """Hands alerts to notifiers as background tasks; ``close`` waits for them, boundedly."""

    def __init__(self, routes: Mapping[str, Route], *, clock: Clock, log: EventLog) -> None:
        self.routes = dict(routes)
        self._clock, self._log = clock, log
        self._background = Background(log)
        self._slots = asyncio.Semaphore(MAX_DELIVERIES)

    def send(self, alert: Alert, names: Iterable[str]) -> None:
        """Start delivering ``alert`` to each named notifier; returns at once."""
        for name in names:
            route = self.routes.get(name)
            if route is None:  # config/loader.py refuses unknown names; a reload may race a run
                self._log.error("alert_lost", f"no notifier named {name!r}", notifier=name)
                continue
            self._background.spawn(self._deliver(route, alert))

    async def _deliver(self, route: Route, alert: Alert) -> None:
        fields = {"notifier": route.name, "alert": str(alert.kind), "job": alert.job}

        def failed(number: int, why: str, final: bool) -> None:
            tries = route.delivery.retries + 1
            what = f"alert {alert.kind} for job {alert.job} via {route.name}"
            text = f"{what}: try {number}/{tries} failed: {why}"
            if final:
                self._log.error("alert_lost", f"{text}; giving up", **fields, error=why)
            else:
                self._log.warning("alert_retry", text, **fields, error=why)

        async with self._slots:
            sent = await deliver(
                lambda: route.notifier.send(alert),
                route.delivery,
                clock=self._clock,
                on_failure=failed,
            )
        if sent:
            self._log.info(
                "alert_sent",
                f"alert {alert.kind} for job {alert.job} sent via {route.name}",
                **fields,
            )

    async def close(self, grace: float) -> None:
        """Give deliveries under way ``grace`` seconds, then cancel the rest."""
        await self._background.close(grace)


def build_routes(
    notifiers: Mapping[str, NotifierConfig],
    *,
    runner: Runner,
    env: Mapping[str, str],
    workdir: Path,
    host: str,
    mailer: Mailer | None,
) -> dict[str, Route]:
    """A ``Route`` per configured notifier (config/loader.py has checked each one is complete)."""
    routes = {}
    for name, config in notifiers.items():
        notifier: Notifier
        if config.kind is NotifierKind.COMMAND:
            notifier = CommandNotifier(
                config.argv,
                runner=runner,
                base_env=env,
                workdir=workdir,
                timeout=config.delivery.timeout,
                host=host,
            )
        elif config.kind is NotifierKind.WEBHOOK:
            notifier = WebhookNotifier(config.url, host=host, env=env)
        else:
            if mailer is None:
                raise ValueError(f"notifiers.{name}: email needs settings.smtp")
            notifier = EmailNotifier(config.to, mailer=mailer, timeout=config.delivery.timeout)
        routes[name] = Route(name=name, notifier=notifier, delivery=config.delivery)
    return routes

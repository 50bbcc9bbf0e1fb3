"""What a job sends instead of running a process: its target (docs/targets.md).

A job has one target: ``command`` (``Job.command``, the process the runner starts) or one
of these, in ``Job.target``. Every target goes through the same slots, retries, overlap,
catch-up, alerts, pings and history as a process; the slot's run id is its idempotency key
(``CRONPLUS_RUN_ID`` for a process; a header, a task id, a job id or a message id here), so
a receiver can drop a duplicate.

Strings that may hold a secret (a URL with a password, a header, a signing key) are
``secrets.Secret`` when the crontab said ``{from_env: ...}`` or ``{from_file: ...}``; a URL's
password is masked wherever the URL is shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum


class TargetKind(StrEnum):
    """What ``job_started`` lines name (its ``target`` field)."""

    COMMAND = "command"
    HTTP = "http"
    CELERY = "celery"
    RQ = "rq"
    AMQP = "amqp"


@dataclass(frozen=True, kw_only=True)
class Signature:
    """An HMAC of the request: ``header: sha256=HEX`` over ``TIMESTAMP.BODY``."""

    key: str = field(repr=False)
    header: str = "X-Cronplus-Signature"


@dataclass(frozen=True, kw_only=True)
class HttpTarget:
    """``http:``: one request; success is a status in ``success_codes`` (else any 2xx)."""

    url: str = field(repr=False)
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    body: str = field(default="", repr=False)
    timeout: timedelta | None = None
    """The request's deadline, instead of the job's ``timeout``."""
    success_codes: frozenset[int] = frozenset()
    """Empty: 200 to 299."""
    signature: Signature | None = None
    verify_tls: bool = True
    ca_file: str | None = None
    """A PEM bundle to verify the server with instead of the system's."""

    kind = TargetKind.HTTP


@dataclass(frozen=True, kw_only=True)
class Wait:
    """``wait:``: wait for the task's result, at most ``timeout``, and record its state."""

    timeout: timedelta


@dataclass(frozen=True, kw_only=True)
class CeleryTarget:
    """``celery:``: ``send_task(task, args, kwargs)`` with the run id as the task id and
    ``expires`` at the job's next slot; success is the broker's confirm (``wait``: the
    task's ``SUCCESS`` in the result backend)."""

    broker: str = field(repr=False)
    task: str
    args: tuple[object, ...] = ()
    kwargs: Mapping[str, object] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    backend: str | None = field(default=None, repr=False)
    wait: Wait | None = None

    kind = TargetKind.CELERY


@dataclass(frozen=True, kw_only=True)
class RqTarget:
    """``rq:``: ``Queue(queue).enqueue(func, ...)`` with the run id as the job id; success
    is the job on the queue (``wait``: the job ``finished``)."""

    redis: str = field(repr=False)
    func: str
    queue: str = "default"
    args: tuple[object, ...] = ()
    kwargs: Mapping[str, object] = field(default_factory=dict)
    job_timeout: timedelta | None = None
    """RQ's own ``job_timeout`` for the work on the worker."""
    wait: Wait | None = None

    kind = TargetKind.RQ


@dataclass(frozen=True, kw_only=True)
class AmqpTarget:
    """``amqp:``: one persistent message with publisher confirms; the run id is its
    ``message_id``; success is the broker's ack (a nack or a return is a failure)."""

    url: str = field(repr=False)
    exchange: str = ""
    routing_key: str
    body: str = field(default="", repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    content_type: str = "application/json"

    kind = TargetKind.AMQP


Target = HttpTarget | CeleryTarget | RqTarget | AmqpTarget
"""Everything a job can send that is not a process."""

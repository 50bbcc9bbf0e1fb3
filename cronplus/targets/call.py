"""What a sender gets and gives: ``Call`` (one attempt's identity), ``Delivery`` (the
target's answer) and ``TargetFailed`` (its refusal, with the reason history shows)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from cronplus.core.model import iso_utc

BODY_KEPT = 16 * 1024
"""Bytes of a response body an attempt's record keeps (its head)."""

_T = TypeVar("_T")


@dataclass(frozen=True, kw_only=True)
class Call:
    """One attempt's identity, as a target sees it."""

    job: str
    run_id: str
    """``job@2026-03-08T07:00:00Z``: the idempotency key."""
    scheduled_at: datetime
    attempt: int
    sent_at: datetime
    """When the attempt started, on the engine's clock (a signature's timestamp)."""
    expires: datetime | None
    """The job's next slot after this one: a task still queued then is stale."""
    timeout: float
    """Seconds the attempt may take in all (``deadline``)."""
    env: Mapping[str, str]
    """The daemon's environment: proxies (``HTTPS_PROXY``, ``NO_PROXY``) come from it."""

    @property
    def scheduled(self) -> str:
        return iso_utc(self.scheduled_at)


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """What the target answered when it took the work."""

    response: str
    """A line for history and logs: ``HTTP 200``, ``task SUCCESS``, ``confirmed``."""
    body: bytes = b""
    """An answer worth keeping (a response body, a task's result), kept as the stdout."""


class TargetFailed(Exception):
    """The target refused or never answered; the message is the attempt's reason (it
    must not name a password, a token in a URL or a signing key)."""

    def __init__(self, reason: str, *, response: str = "", body: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.response = response
        self.body = body


class Threads(Protocol):
    """How a sender runs a blocking call off the loop."""

    async def call(self, work: Callable[[], _T]) -> _T: ...

"""Prometheus metrics and ``/healthz``: the only importer of ``prometheus_client``.

``Metrics`` is an ``EngineEvents`` observer that keeps the series below in a registry of
its own; ``MetricsServer`` serves them (``GET /metrics``) and the loop's health (``GET
/healthz``) from a thread. A thread, not the event loop: a loop that hangs cannot answer
for itself, but this thread still can, with 503, once the loop's heartbeat is older than
``STALE_AFTER``. Labels are job names and outcomes only: never a command, an environment
value or a URL.

The thread is ``httplistener.Listener``'s (one selector, not a thread per connection):
any local user can connect, so what a client may cost is bounded by its ``HttpBounds``.
What a path is answered with is ``answer``, here.

Series (docs/observability.md): ``cronplus_job_runs_total{job_name,outcome}``,
``cronplus_job_missed_runs_total{job_name,reason}``, ``cronplus_job_running{job_name}``,
``cronplus_job_duration_seconds{job_name}`` (histogram, per attempt),
``cronplus_job_last_success_timestamp_seconds{job_name}``,
``cronplus_job_next_run_timestamp_seconds{job_name}``,
``cronplus_config_last_reload_successful``, ``cronplus_build_info{version,python}``.
"""

from __future__ import annotations

import platform
import socket
import threading
from collections.abc import Mapping
from datetime import datetime
from functools import partial

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from cronplus import __version__
from cronplus.clock import Clock
from cronplus.core import plan
from cronplus.core.model import CronplusError, Job, ListenAddress, Outcome, RunResult, Slot
from cronplus.observe.httplistener import PLAIN_TEXT, HttpBounds, Listener
from cronplus.observe.logs import EventLog

STALE_AFTER = 2 * plan.MAX_SLEEP
"""``/healthz`` fails once the loop has not beaten for this long: it beats (a pass, or an
idle slice's end) at least every ``MAX_SLEEP`` seconds, so twice that means it is stuck or
gone."""
RUN_OUTCOMES = tuple(
    str(outcome) for outcome in Outcome if outcome not in (Outcome.MISSED, Outcome.SKIPPED_OVERLAP)
)
"""The outcomes a run ends with; the other two are ``missed`` reasons."""
MISSED_REASONS = (str(Outcome.MISSED), str(Outcome.SKIPPED_OVERLAP))
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
"""Seconds: cron jobs run from a blink to hours."""


class Metrics:
    """The daemon's series, fed by engine events and by the loop."""

    def __init__(self) -> None:
        # Without this every counter also exports a `_created` series, names the issue
        # does not list and dashboards do not use.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        job, reg = ["job_name"], self.registry
        self.runs = Counter(
            "cronplus_job_runs",
            "Runs by final outcome (after retries)",
            [*job, "outcome"],
            registry=reg,
        )
        self.missed = Counter(
            "cronplus_job_missed_runs", "Slots that did not run", [*job, "reason"], registry=reg
        )
        self.running = Gauge("cronplus_job_running", "Attempts running now", job, registry=reg)
        self.duration = Histogram(
            "cronplus_job_duration_seconds",
            "Attempt durations",
            job,
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.last_success = Gauge(
            "cronplus_job_last_success_timestamp_seconds",
            "When a run last succeeded",
            job,
            registry=reg,
        )
        self.next_run = Gauge(
            "cronplus_job_next_run_timestamp_seconds", "When the job is next due", job, registry=reg
        )
        self.reload_ok = Gauge(
            "cronplus_config_last_reload_successful",
            "1 if the last load or reload took",
            registry=reg,
        )
        build = Gauge(
            "cronplus_build_info", "cronplus's version", ["version", "python"], registry=reg
        )
        build.labels(__version__, platform.python_version()).set(1)
        self.reload_ok.set(1)
        self._scheduled: set[str] = set()
        self._seeded: set[str] = set()
        self._beat: float | None = None
        self._clock_offset: Gauge | None = None
        self._refusing: Gauge | None = None

    # --- engine events -------------------------------------------------------------------

    def attempt_started(
        self, *, job: Job, slot: Slot, attempt: int, pid: int | None, at: datetime
    ) -> None:
        self.running.labels(job.name).inc()

    def attempt_finished(
        self, *, job: Job, result: RunResult, retry_at: datetime | None, stopped: bool
    ) -> None:
        self.running.labels(job.name).dec()
        self.duration.labels(job.name).observe(result.duration_s)
        if retry_at is None:
            self.runs.labels(job.name, str(result.outcome)).inc()
        if result.outcome.ok:
            self.last_success.labels(job.name).set(result.finished_at.timestamp())

    def slots_missed(self, *, job: Job, result: RunResult, count: int) -> None:
        self.missed.labels(job.name, str(result.outcome)).inc(count)

    # --- the loop ------------------------------------------------------------------------

    def seed_last_success(self, last: Mapping[str, datetime]) -> None:
        for name, at in last.items():
            self.last_success.labels(name).set(at.timestamp())

    def schedule(self, next_runs: Mapping[str, datetime | None]) -> None:
        """Each scheduled job's next fire; jobs gone since the last call, or with no next
        fire now, lose the series.
        A job seen for the first time gets all its series at zero, so that its first
        failure after a start is an increase, and a job that never succeeded has a last
        success of 0, which a staleness rule sees (docs/observability.md)."""
        was, self._scheduled = self._scheduled, set()
        for name, at in next_runs.items():
            if name not in self._seeded:
                self._seed(name)
            if at is not None:
                self.next_run.labels(name).set(at.timestamp())
                self._scheduled.add(name)
        # Gone from the file, or with no next fire any more (@reboot once it ran).
        for name in was - self._scheduled:
            self.next_run.remove(name)

    def _seed(self, name: str) -> None:
        for outcome in RUN_OUTCOMES:
            self.runs.labels(name, outcome)
        for reason in MISSED_REASONS:
            self.missed.labels(name, reason)
        self.running.labels(name)
        self.duration.labels(name)
        self.last_success.labels(name)  # 0 until a success, or the newest history row's
        self._seeded.add(name)

    def reloaded(self, *, ok: bool) -> None:
        self.reload_ok.set(1 if ok else 0)

    def cluster_beat(self, *, clock_offset: float, refusing: str | None) -> None:
        """A cluster node's heartbeat: its clock against the database's, and whether it
        refuses to claim (the series exist only on cluster nodes)."""
        if self._clock_offset is None:
            self._clock_offset = Gauge(
                "cronplus_cluster_clock_offset_seconds",
                "This node's clock minus the cluster database's, at its last heartbeat",
                registry=self.registry,
            )
            self._refusing = Gauge(
                "cronplus_cluster_refusing",
                "1 while this node refuses to claim slots (its clock or its definitions)",
                registry=self.registry,
            )
        self._clock_offset.set(clock_offset)
        assert self._refusing is not None
        self._refusing.set(0 if refusing is None else 1)

    def heartbeat(self, monotonic: float | None) -> None:
        """The loop is alive at this monotonic instant; None: it has stopped."""
        self._beat = monotonic

    def health(self, monotonic_now: float) -> tuple[bool, str]:
        if self._beat is None:
            return False, "the scheduler loop is not running"
        age = monotonic_now - self._beat
        if age > STALE_AFTER:
            return False, f"the scheduler loop last beat {age:.1f}s ago (limit {STALE_AFTER:g}s)"
        return True, f"ok: the scheduler loop beat {age:.1f}s ago"

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def answer(metrics: Metrics, clock: Clock, path: str) -> tuple[int, bytes, str]:
    """The status, body and content type for a ``GET`` of ``path``."""
    path = path.split("?", 1)[0]
    if path == "/metrics":
        return 200, metrics.exposition(), CONTENT_TYPE_PLAIN_0_0_4
    if path == "/healthz":
        ok, text = metrics.health(clock.monotonic())
        return (200 if ok else 503), f"{text}\n".encode(), PLAIN_TEXT
    return 404, b"not found: try /metrics or /healthz\n", PLAIN_TEXT


class MetricsServer:
    """Serves ``/metrics`` and ``/healthz`` on ``address`` from a thread of its own."""

    def __init__(
        self,
        metrics: Metrics,
        address: ListenAddress,
        *,
        clock: Clock,
        log: EventLog | None = None,
        bounds: HttpBounds | None = None,
    ) -> None:
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        bounds = bounds or HttpBounds()
        try:
            self._sock = socket.create_server(
                (address.host, address.port), family=family, backlog=bounds.connections
            )
        except OSError as error:
            raise CronplusError(
                f"settings.metrics: cannot listen on {address.host}:{address.port}: "
                f"{error.strerror or error}"
            ) from None
        self._listener = Listener(
            self._sock, partial(answer, metrics, clock), log or EventLog(), bounds
        )
        self._thread = threading.Thread(
            target=self._listener.serve, name="cronplus-metrics", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose, for port 0)."""
        return int(self._sock.getsockname()[1])

    def close(self) -> None:
        self._listener.wake()
        self._thread.join()
        self._sock.close()

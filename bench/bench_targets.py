"""How fast a daemon hands N slots due at one instant to each kind of target, beside a
burst of processes.

    python bench/bench_targets.py [--sizes 1000,10000] [--targets command,http,celery,rq,amqp]
                                  [--repeats 3] [--lead 6] [--max-concurrent 10000]
                                  [--rabbitmq URL] [--redis URL] [--quick]
                                  [--cronplus-python PYTHON] [--write-results [FILE]]

Every daemon is a real ``cronplus daemon`` (procs.py's ``DaemonRun``) from this checkout's
wheel with its ``celery``, ``rq`` and ``amqp`` extras, installed anew unless
``--cronplus-python`` names one. Each run is gen.py's N jobs, all due at one whole second
``--lead`` s after the crontab is written, each with one target: ``command: "true"`` (the
reference), ``http:`` (POST to a receiver on 127.0.0.1 in a process of its own), ``celery:``
(on RabbitMQ), ``rq:`` (on Redis) or ``amqp:`` (on RabbitMQ). One more job, ``warm``, sends to
the same kind 2 s before the instant (its own path or queue), so that the burst finds the
sender's client library imported and its connection open, as a daemon that has run a while
does. Nothing consumes the messages: each run's queues are deleted after it.

When the last of the N was handed over is read where it arrives: the receiver's clock at
each request (http); the broker's queue length reaching N (celery and amqp: a passive
``queue_declare``'s ``message_count``; rq: ``LLEN rq:queue:NAME``), polled every
``POLL`` s; for the processes, the last ``job_started`` line's ``ts`` (the daemon logs it
once the process is spawned). The daemon's own word, the last ``attempt_succeeded`` line's
``ts``, is shown beside it for every kind. The daemon's CPU (schedstat, all its threads)
runs from just before the instant (the warm job done) until its last ``attempt_succeeded``
line was read.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import resource
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from gen import cronplus_crontab, job_specs, second_at
from harness import (
    BENCH,
    BUILD_DIR,
    Failed,
    Record,
    Section,
    alternate,
    cell,
    fresh,
    install_venv,
    launch,
    listed,
    markdown_table,
    numbers,
    parser,
    shown,
    verdict,
)
from procs import DaemonRun, no_child_left, raise_fd_limit, usage

SECTION = Section("## targets", "bench_targets.py")
KINDS = ("command", "http", "celery", "rq", "amqp")
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672"
"""Without a virtual host: Celery's URL gets ``//``, pika's ``/%2F`` (the vhost ``/``)."""
REDIS = "redis://127.0.0.1:6379/0"
STARTUP_TIMEOUT = 120.0
"""Seconds a daemon may take to log ``started`` before the benchmark gives up."""
WARM_BEFORE = 2
"""Seconds before the instant that the ``warm`` job sends."""
BURST_TIMEOUT = 120.0
"""Seconds after the instant by which every slot must have succeeded."""
POLL = 0.005
"""Seconds between two looks at a broker's queue length."""
BACKLOG = 16384
"""The receiver's listen backlog (the kernel caps it at net.core.somaxconn)."""
WARM = "warm"
FAILURES = ("attempt_failed", "run_failed", "run_crashed", "record_failed", "skipped_overlap")
GOAL_MS = 1000.0
"""The issue's goal: 10,000 HTTP or Celery dispatches in under 1 s."""
GOALS = ("http", "celery")
GOAL_SLOTS = 10_000


def install_with_targets(venv: Path = BUILD_DIR / "cronplus-targets") -> Path:
    """This checkout as a wheel with the targets' extras, in a venv of its own; its python."""
    return install_venv(venv, f"{BENCH.parent}[celery,rq,amqp]") / "python"


# --- the receiver of the http target ----------------------------------------------------

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK"


def _receive(pipe: Connection) -> None:
    """A process of its own: an HTTP server on 127.0.0.1 that notes (CLOCK_REALTIME) when
    each request other than ``/warm`` had arrived whole; told to stop, it sends them."""
    arrivals: list[float] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            at = time.time()
            if head.split(b" ", 2)[1] != b"/warm":
                arrivals.append(at)
            writer.write(ANSWER)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0, backlog=BACKLOG)
        pipe.send(server.sockets[0].getsockname()[1])
        told = asyncio.Event()
        asyncio.get_running_loop().add_reader(pipe.fileno(), told.set)
        await told.wait()
        pipe.recv()
        server.close()
        pipe.send(arrivals)

    asyncio.run(serve())


class Receiver:
    """The http target's receiver, in a spawned process (not this one's GIL)."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, theirs = context.Pipe()
        self.process = context.Process(target=_receive, args=(theirs,), daemon=True)
        self.process.start()
        if not self._pipe.poll(30):
            self.process.kill()
            raise Failed("the HTTP receiver did not start in 30 s")
        self.port: int = self._pipe.recv()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def arrivals(self) -> list[float]:
        """Every request's arrival; the receiver stops."""
        self._pipe.send("stop")
        if not self._pipe.poll(30):
            self.process.kill()
            raise Failed("the HTTP receiver did not answer in 30 s")
        got: list[float] = self._pipe.recv()
        self.process.join(10)
        return got

    def close(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(10)


# --- the brokers ------------------------------------------------------------------------


def _pika_parameters(rabbitmq: str) -> Any:
    import pika  # type: ignore[import-untyped, unused-ignore]

    parameters = pika.URLParameters(f"{rabbitmq}/%2F")
    parameters.socket_timeout = 5
    return parameters


@contextlib.contextmanager
def rabbitmq_channel(rabbitmq: str) -> Iterator[Any]:
    import pika

    try:
        connection = pika.BlockingConnection(_pika_parameters(rabbitmq))
    except Exception as error:  # pika raises many kinds: AMQPConnectionError, auth, ...
        raise Failed(f"no RabbitMQ answers at {rabbitmq}: {error!r}") from None
    try:
        yield connection.channel()
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def rabbitmq_length(rabbitmq: str, queue: str) -> tuple[Callable[[], int], Callable[[], None]]:
    """A reader of ``queue``'s ready messages (0 while it does not exist) on a connection of
    its own, for one thread, and the closing of that connection."""
    import pika

    connection = pika.BlockingConnection(_pika_parameters(rabbitmq))
    channel = [connection.channel()]

    def length() -> int:
        try:
            declared = channel[0].queue_declare(queue=queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker:  # 404: not declared yet
            channel[0] = connection.channel()
            return 0
        return int(declared.method.message_count)

    def close() -> None:
        with contextlib.suppress(Exception):
            connection.close()

    return length, close


def delete_rabbitmq(rabbitmq: str, names: list[str]) -> None:
    """These queues, and the direct exchanges of the same name that Celery declares."""
    with rabbitmq_channel(rabbitmq) as first:
        connection = first.connection
        for name in names:
            for delete in ("queue_delete", "exchange_delete"):
                channel = connection.channel()  # a failed delete closes its channel
                with contextlib.suppress(Exception):
                    getattr(channel, delete)(name)
                if channel.is_open:
                    channel.close()


def redis_client(url: str) -> Any:
    from redis import Redis
    from redis.exceptions import RedisError

    client = Redis.from_url(url, socket_timeout=5)
    try:
        client.ping()
    except RedisError as error:
        raise Failed(f"no Redis answers at {url}: {error!r}") from None
    return client


def delete_rq(url: str, names: list[str]) -> None:
    from rq import Queue

    client = redis_client(url)
    for name in names:
        Queue(name, connection=client).delete(delete_jobs=True)
    client.close()


def broker_versions(args: argparse.Namespace) -> str:
    kinds = set(args.targets)
    found = []
    if kinds & {"celery", "amqp"}:
        with rabbitmq_channel(args.rabbitmq) as channel:
            properties = channel.connection._impl.server_properties
            found.append(f"RabbitMQ {properties.get('version', '?')}")
    if "rq" in kinds:
        client = redis_client(args.redis)
        found.append(f"Redis {client.info('server')['redis_version']}")
        client.close()
    return ", ".join(found) or "none"


# --- one burst --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Burst:
    """One daemon's N slots due at one instant, sent to one kind of target."""

    handed: float | None = None
    """Seconds from the instant until the last of the N was where it goes (the module's
    docstring says how each kind is read)."""
    confirmed: float | None = None
    """Seconds from the instant to the ``ts`` of the last ``attempt_succeeded`` line."""
    cpu_s: float | None = None
    """The daemon's CPU (schedstat) from just before the instant to its last success."""
    receiver_cpu_s: float | None = None
    """The http receiver's CPU over the same span."""
    failure: str | None = None
    """Why the run gave no figures (a failed attempt, a timeout), the rest being None."""


def _ts(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["ts"])).timestamp()


def target_block(kind: str, queue: str, args: argparse.Namespace, port: int, warm: bool) -> str:
    """A job's target, as one line of YAML (a JSON object is a YAML flow mapping)."""
    name = f"{queue}-warm" if warm else queue
    if kind == "command":
        return 'command: "true"'
    if kind == "http":
        url = f"http://127.0.0.1:{port}/{'warm' if warm else 'hook'}"
        return f'http: {{url: "{url}", method: POST, body: "{{}}"}}'
    if kind == "celery":
        broker = f"{args.rabbitmq}//"
        return f'celery: {{broker: "{broker}", task: "bench.noop", queue: "{name}"}}'
    if kind == "rq":
        return f'rq: {{redis: "{args.redis}", func: "bench.noop", queue: "{name}"}}'
    url = f"{args.rabbitmq}/%2F"
    return f'amqp: {{url: "{url}", routing_key: "{name}", body: "{{}}"}}'


def crontab_text(
    kind: str, n: int, at: datetime, queue: str, args: argparse.Namespace, port: int
) -> str:
    """gen.py's N jobs due at ``at`` and one ``warm`` job 2 s before, each with ``kind``'s
    target instead of its command."""
    text = cronplus_crontab(
        job_specs(n), second_at(at), "true", concurrent=max(args.max_concurrent, 16)
    )
    run = '    command: "true"\n'
    assert text.count(run) == n
    text = text.replace(run, f"    {target_block(kind, queue, args, port, warm=False)}\n")
    warm = (at - timedelta(seconds=WARM_BEFORE)).astimezone(UTC)
    return text + (
        f"  {WARM}:\n"
        f'    schedule: "{warm.second} {warm.minute} {warm.hour} {warm.day} {warm.month} *"\n'
        "    timezone: UTC\n"
        f"    {target_block(kind, queue, args, port, warm=True)}\n"
    )


class Outcomes:
    """The daemon's lines of attempts as they come: a failure ends the run at once."""

    def __init__(self, daemon: DaemonRun) -> None:
        self.daemon = daemon
        self._read = 0
        self.succeeded: list[dict[str, object]] = []
        self.started: list[dict[str, object]] = []
        self.warm = False

    def until(self, n: int, timeout: float) -> None:
        """Until ``n`` slots of the burst have succeeded (or the warm job, ``n`` 0)."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.daemon.events[self._read :]
            self._read += len(events)
            for _, event in events:
                name = event.get("event")
                if name in FAILURES:
                    raise Failed(
                        f"daemon {self.daemon.pid}: {name} {event.get('job')}: "
                        f"{event.get('reason') or event.get('message')}"
                    )
                if event.get("job") == WARM:
                    self.warm = self.warm or name == "attempt_succeeded"
                elif name == "attempt_succeeded":
                    self.succeeded.append(event)
                elif name == "job_started":
                    self.started.append(event)
            if (n and len(self.succeeded) >= n) or (not n and self.warm):
                return
            if self.daemon.proc.poll() is not None:
                raise Failed(f"daemon {self.daemon.pid} exited:\n{self.daemon.log_tail()}")
            if time.monotonic() > deadline:
                got = f"{len(self.succeeded)} of {n} successes" if n else "no warm success"
                raise Failed(f"daemon {self.daemon.pid}: {got} in {timeout:g} s")
            time.sleep(0.02)


def watch_queue(length: Callable[[], int], n: int, stop: threading.Event) -> float | None:
    """When (CLOCK_REALTIME, taken as the look was sent) ``length`` first said ``n``."""
    while not stop.is_set():
        at = time.time()
        if length() >= n:
            return at
        time.sleep(POLL)
    return None


class QueueWatch:
    """A thread that notes when a broker's queue of the burst first held N messages."""

    def __init__(self, kind: str, queue: str, n: int, args: argparse.Namespace) -> None:
        if kind == "rq":
            client = redis_client(args.redis)
            key = f"rq:queue:{queue}"
            self._length: Callable[[], int] = lambda: int(client.llen(key))
            self._close: Callable[[], None] = client.close
        else:
            self._length, self._close = rabbitmq_length(args.rabbitmq, queue)
        self._n, self._stop = n, threading.Event()
        self._found: list[float | None] = []
        self._thread = threading.Thread(target=self._watch, name="queue-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        try:
            self._found.append(watch_queue(self._length, self._n, self._stop))
        finally:
            self._close()

    def last(self, kind: str) -> float:
        self._thread.join(10)
        self.stop()
        if not self._found or self._found[0] is None:
            raise Failed(f"the {kind} queue never held {self._n} messages")
        return self._found[0]

    def stop(self) -> None:
        self._stop.set()


def start_daemon(
    folder: Path, text: Callable[[datetime], str], args: argparse.Namespace, python: Path
) -> tuple[DaemonRun, Outcomes, datetime]:
    """A daemon whose burst falls ``--lead`` s from now, once its warm slot has succeeded."""
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1 + args.lead)
    crontab = folder / "crontab.yaml"
    crontab.write_text(text(at))
    daemon = DaemonRun(folder, crontab, python=python)
    daemon.ready(args.lead - WARM_BEFORE)
    if datetime.now(UTC) >= at - timedelta(seconds=WARM_BEFORE):
        daemon.stop()
        raise Failed("the daemon started after its warm slot: raise --lead")
    seen = Outcomes(daemon)
    seen.until(0, args.lead + 1)
    if datetime.now(UTC) >= at:
        daemon.stop()
        raise Failed("the warm slot was still sending at the instant: raise --lead")
    return daemon, seen, at


def burst(root: Path, kind: str, n: int, *, args: argparse.Namespace, python: Path) -> Burst:
    folder = fresh(root, f"{kind}-{n}")
    queue = f"cronplus-bench-{uuid.uuid4().hex[:10]}"
    queues = [queue, f"{queue}-warm"]
    receiver = Receiver() if kind == "http" else None
    watch: QueueWatch | None = None
    try:
        with no_child_left():  # a failed run leaves no daemon behind
            if kind == "amqp":  # the default exchange routes to a queue that exists
                with rabbitmq_channel(args.rabbitmq) as channel:
                    for name in queues:
                        channel.queue_declare(queue=name)
            port = receiver.port if receiver is not None else 0
            daemon, seen, at = start_daemon(
                folder, lambda at: crontab_text(kind, n, at, queue, args, port), args, python
            )
            if kind in ("celery", "amqp", "rq"):
                watch = QueueWatch(kind, queue, n, args)
            before = usage(daemon.pid)
            receiver_before = usage(receiver.pid).cpu_sched_ms if receiver is not None else 0.0
            seen.until(n, args.lead + 1 + BURST_TIMEOUT)
            cpu_s = (usage(daemon.pid).cpu_sched_ms - before.cpu_sched_ms) / 1000
            receiver_cpu_s = None
            if receiver is not None:
                receiver_cpu_s = (usage(receiver.pid).cpu_sched_ms - receiver_before) / 1000
            daemon.stop()
            slot = f"{at:%Y-%m-%dT%H:%M:%SZ}"
            wrong = [event for event in seen.succeeded if event.get("scheduled_at") != slot]
            if len(seen.succeeded) != n or wrong:
                got = f"{len(seen.succeeded)} successes, {len(wrong)} for another slot"
                raise Failed(f"{kind} burst of {n}: {got}")
            if receiver is not None:
                arrivals = receiver.arrivals()
                if len(arrivals) != n:
                    raise Failed(f"the receiver got {len(arrivals)} requests of {n}")
                last = max(arrivals)
            elif watch is not None:
                last = watch.last(kind)
            else:
                last = max(_ts(event) for event in seen.started)
            return Burst(
                handed=last - at.timestamp(),
                confirmed=max(_ts(event) for event in seen.succeeded) - at.timestamp(),
                cpu_s=cpu_s,
                receiver_cpu_s=receiver_cpu_s,
            )
    finally:
        if watch is not None:
            watch.stop()
        if receiver is not None:
            receiver.close()
        if kind in ("celery", "amqp"):
            delete_rabbitmq(args.rabbitmq, queues)
        elif kind == "rq":
            delete_rq(args.redis, queues)


# --- the report -------------------------------------------------------------------------

HOW = {
    "command": "last `job_started` line's `ts` (the process spawned)",
    "http": "the receiver's clock at the last request",
    "celery": "RabbitMQ's `message_count` reached N",
    "rq": "`LLEN rq:queue:NAME` reached N",
    "amqp": "RabbitMQ's `message_count` reached N",
}


def failures(runs: list[Burst]) -> str:
    failed = sum(run.failure is not None for run in runs)
    return f"{failed} of {len(runs)}"


def burst_table(results: dict[tuple[str, int], list[Burst]]) -> str:
    rows = []
    for (kind, n), runs in results.items():
        handed = [run.handed for run in runs if run.handed is not None]
        rate = f"{n / statistics.median(max(s, 1e-3) for s in handed):,.0f}" if handed else "–"
        rows.append(
            [
                kind,
                f"{n:,}",
                cell(handed, 1000, 0),
                rate,
                cell([run.confirmed for run in runs], 1000, 0),
                cell([run.cpu_s for run in runs], digits=2),
                cell([run.receiver_cpu_s for run in runs], digits=2),
                failures(runs),
                HOW[kind],
            ]
        )
    headers = [
        "target",
        "slots",
        "last handed over, ms",
        "handed over a second",
        "last `attempt_succeeded`, ms",
        "daemon CPU, s",
        "receiver CPU, s",
        "runs failed",
        "handed over: read as",
    ]
    return markdown_table(headers, rows)


def failure_lines(results: dict[tuple[str, int], list[Burst]]) -> str:
    return "\n".join(
        f"- {kind}, {n:,} slots: {run.failure}"
        for (kind, n), runs in results.items()
        for run in runs
        if run.failure is not None
    )


def goals_table(results: dict[tuple[str, int], list[Burst]]) -> str:
    rows = []
    for (kind, n), runs in results.items():
        handed = [run.handed for run in runs if run.handed is not None]
        if kind in GOALS and n == GOAL_SLOTS:
            measured = statistics.median(handed) * 1000 if handed else None
            rows.append(
                [
                    f"{n:,} {kind} slots: last handed over",
                    f"< {GOAL_MS:g} ms",
                    "every run failed" if measured is None else f"{measured:.0f} ms",
                    "**no**" if measured is None else verdict(measured, GOAL_MS),
                ]
            )
    return markdown_table(["what (medians)", "target", "measured", "met"], rows)


def report(results: dict[tuple[str, int], list[Burst]], args: argparse.Namespace) -> str:
    text = (
        f"N slots due at one instant, `settings: max_concurrent: {args.max_concurrent}`, each "
        f"slot one job of gen.py's (10 zones): from the instant until the last of the N was "
        f"handed over (read where it arrives) and until the daemon logged the last success, "
        f"and the daemon's CPU over the burst ({args.repeats} daemons per cell, alternating "
        f"targets, median (min–max)); nothing consumes the messages:\n\n"
        f"{burst_table(results)}\n"
    )
    failed = failure_lines(results)
    if failed:
        text += f"\nWhy runs failed (each its first line):\n\n{failed}\n"
    if any(kind in GOALS and n == GOAL_SLOTS for kind, n in results):
        text += f"\nThe issue's goal:\n\n{goals_table(results)}\n"
    return text


def way(root: Path, kind: str, args: argparse.Namespace, python: Path) -> Callable[[int], Burst]:
    """One run of ``kind``; a failed one is a row's note, not the end of the benchmark."""

    def run(n: int) -> Burst:
        try:
            return burst(root, kind, n, args=args, python=python)
        except Failed as failed:
            print(f"{kind}, {n:,} slots: {failed}", file=sys.stderr)
            return Burst(failure=str(failed).splitlines()[0])

    return run


def raise_fd_limits(n: int) -> None:
    """``raise_fd_limit``'s room for ``n`` children, past the hard limit where this process
    may raise it (root): 10,000 processes in flight hold 30,000 descriptors."""
    wanted = 4 * n + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, wanted))
    raise_fd_limit(n)


def main() -> None:
    args = parser(__doc__, SECTION, cronplus_python=True)
    args.add_argument("--sizes", type=numbers, default=[1000, 10000], help="slots due at once")
    args.add_argument("--targets", type=listed, default=list(KINDS), help=",".join(KINDS))
    args.add_argument("--repeats", type=int, default=3, help="daemons per target and size (3)")
    args.add_argument("--lead", type=float, default=6.0, help="s from start to the instant (6)")
    args.add_argument("--max-concurrent", type=int, default=10000, help="settings (10000)")
    args.add_argument("--rabbitmq", default=RABBITMQ, help=f"no vhost (default {RABBITMQ})")
    args.add_argument("--redis", default=REDIS, help=f"rq's Redis (default {REDIS})")
    args.add_argument("--quick", action="store_true", help="a smoke test: 200 slots, 1 repeat")
    chosen = args.parse_args()
    if chosen.quick:
        chosen.sizes, chosen.repeats = [200], 1
    unknown = set(chosen.targets) - set(KINDS)
    if unknown:
        raise Failed(f"unknown targets {sorted(unknown)}: choose from {','.join(KINDS)}")
    record = Record.begin()
    brokers = broker_versions(chosen)
    python = chosen.cronplus_python or install_with_targets()
    raise_fd_limits(max(chosen.sizes))
    results: dict[tuple[str, int], list[Burst]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-targets-") as tmp, no_child_left():
        root = Path(tmp)
        for n in chosen.sizes:
            ways = {kind: way(root, kind, chosen, python) for kind in chosen.targets}
            runs = alternate(ways, n, chosen.repeats, warm=not chosen.quick)
            results.update({(kind, n): runs[kind] for kind in chosen.targets})
    text = report(results, chosen)
    options = ["sizes", "targets", "repeats", "lead", "max_concurrent"]
    command = SECTION.command(chosen, options) + (" --quick" if chosen.quick else "")
    header = record.header(
        command,
        f"- cronplus run by: {shown(python)}",
        f"- brokers: {brokers}",
    )
    SECTION.publish(f"{header}\n\n{text}", chosen.write_results)


if __name__ == "__main__":
    launch(main)

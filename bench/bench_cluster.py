"""Cluster mode against single-host SQLite: claim overhead, sustainable slot rate, exact-once.

    python bench/bench_cluster.py [--dsn DSN] [--seconds 20] [--jobs 20]
                                  [--rates 25,50,100,200] [--rate-seconds 12]
                                  [--exact-once-seconds 60] [--skip overhead,rate,exact]

Every node is a real ``cronplus daemon`` subprocess with its own XDG_STATE_HOME; all of one
run's nodes share a fresh PostgreSQL schema (created on ``--dsn``, default
``$CRONPLUS_TEST_DSN`` or postgres@127.0.0.1:5432/test, and dropped afterwards). Jobs run
``true``. Lateness is ``started_at - scheduled_at`` from the history table: the time from the
due instant to the start, which in cluster mode includes the claim (and, for a slot whose
preferred node is another, that node's 300 ms place). The window opens 2 s after the last
node logged ``started``.

- **overhead**: ``--jobs`` jobs every 2 s for ``--seconds``: SQLite (one daemon), then
  cluster with 1, 3 and 5 nodes. Lateness median, p90, p99, max; the busiest node's share.
- **rate**: three nodes, N jobs every second (N slots/s) for ``--rate-seconds`` each, N from
  ``--rates``; the highest N whose p99 lateness stays within 1 s. SQLite beside it.
- **exact**: issue 6's run: 50 jobs every 2 s for ``--exact-once-seconds`` on three nodes;
  every (job, slot) started exactly once, and no node over 1.5 times its fair share.

Percentiles are nearest-rank. Prints markdown; writes nothing into the repository.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import conninfo

WARMUP_S = 2.0
"""Seconds between the last node's start and the measured window (every node heartbeats)."""
DRAIN_S = 3.0
"""Seconds the daemons run on after the window, so its late slots are counted too."""
MARKER = 'echo "$CRONPLUS_RUN_ID $NODE" >> started.txt'


@dataclass(frozen=True)
class Lateness:
    """Lateness figures of one run, in milliseconds, and the busiest node's share."""

    slots: int
    median: float
    p90: float
    p99: float
    worst: float
    busiest_share: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


def crontab(*, node: str | None, jobs: int, schedule: str, command: str) -> str:
    lines = ["settings:", "  shutdown_grace: 2s", f"  max_concurrent: {max(jobs * 2, 16)}"]
    if node is not None:
        lines += [
            "  cluster:",
            "    dsn: {from_env: CRONPLUS_BENCH_DSN}",
            f"    node: {node}",
            "    lease: 10s",
        ]
    lines.append("jobs:")
    for n in range(jobs):
        lines += [
            f"  job-{n:03}:",
            f'    schedule: "{schedule}"',
            "    timezone: UTC",
            "    overlap: allow",
            "    inherit_env: [NODE]  # a job's environment is built: the node's name passed on",
            f"    command: '{command}'",
        ]
    return "\n".join(lines) + "\n"


@contextmanager
def schema(admin: str) -> Iterator[str]:
    """A fresh schema on the server; the DSN that uses it."""
    name = f"bench_{secrets.token_hex(5)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield conninfo.make_conninfo(admin, options=f"-c search_path={name}")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


def cronplus(*args: str, env: dict[str, str], cwd: Path, **kwargs: object) -> list[str]:
    return [sys.executable, "-m", "cronplus", *args]


def run_nodes(
    folder: Path, *, nodes: int, jobs: int, schedule: str, seconds: float, dsn: str | None
) -> tuple[datetime, datetime]:
    """Start the daemons (cluster if ``dsn``), let them run, stop them; the window measured."""
    names = [f"n{i}" for i in range(nodes)] if dsn else [None]
    procs = []
    for name in names:
        config = folder / f"node-{name or 'sqlite'}.yaml"
        config.write_text(crontab(node=name, jobs=jobs, schedule=schedule, command=MARKER))
        env = dict(os.environ, XDG_STATE_HOME=str(folder / f"state-{name}"), NODE=str(name))
        env["CRONPLUS_BENCH_DSN"] = dsn or ""
        if dsn and name == names[0]:
            migrate = [sys.executable, "-m", "cronplus", "-c", str(config), "db", "migrate"]
            subprocess.run(migrate, env=env, cwd=folder, check=True, capture_output=True)
        argv = [sys.executable, "-m", "cronplus", "-c", str(config), "daemon"]
        log = (folder / f"log-{name}.txt").open("w")
        procs.append(subprocess.Popen(argv, env=env, cwd=folder, stderr=log))
    logs = [folder / f"log-{name}.txt" for name in names]
    deadline = time.monotonic() + 120
    while not all("cronplus daemon started" in log.read_text() for log in logs):
        if time.monotonic() > deadline or any(proc.poll() is not None for proc in procs):
            raise SystemExit(f"the daemons did not start; see {folder}/log-*.txt")
        time.sleep(0.1)
    begin = datetime.now(UTC) + timedelta(seconds=WARMUP_S)
    end = begin + timedelta(seconds=seconds)
    time.sleep(WARMUP_S + seconds + DRAIN_S)  # the window's last slots start, however late
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        if proc.wait(60) != 0:
            raise SystemExit(f"a daemon exited {proc.returncode}; see {folder}/log-*.txt")
    return begin, end


def history(folder: Path, dsn: str | None) -> list[tuple[str, datetime, datetime]]:
    """(job, scheduled_at, started_at) of every attempt."""
    query = "SELECT job, scheduled_at, started_at FROM history WHERE attempt > 0"
    if dsn:
        with psycopg.connect(dsn) as conn:
            return [(job, slot, start) for job, slot, start in conn.execute(query).fetchall()]
    db = sqlite3.connect(folder / "state-None" / "cronplus" / "state.db")
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    micro = timedelta(microseconds=1)
    rows = db.execute(query).fetchall()
    db.close()
    return [(job, epoch + slot * micro, epoch + start * micro) for job, slot, start in rows]


def starts(folder: Path) -> list[tuple[str, str]]:
    """(run id, node) per start, from the jobs' own marker file."""
    path = folder / "started.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(line.split()[0], line.split()[1]) for line in lines]


def measure(
    admin: str, *, nodes: int, jobs: int, schedule: str, seconds: float, cluster: bool
) -> Lateness:
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        folder = Path(tmp)
        with schema(admin) if cluster else _nothing() as dsn:
            begin, end = run_nodes(
                folder, nodes=nodes, jobs=jobs, schedule=schedule, seconds=seconds, dsn=dsn
            )
            rows = [(job, slot, start) for job, slot, start in history(folder, dsn)]
        late = [
            (start - slot).total_seconds() * 1000 for _, slot, start in rows if begin <= slot < end
        ]
        shares = Counter(node for run_id, node in starts(folder) if begin <= _slot(run_id) < end)
    busiest = max(shares.values()) / (sum(shares.values()) / max(len(shares), 1)) if shares else 0
    return Lateness(
        slots=len(late),
        median=percentile(late, 50),
        p90=percentile(late, 90),
        p99=percentile(late, 99),
        worst=max(late),
        busiest_share=busiest,
    )


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def _slot(run_id: str) -> datetime:
    return datetime.fromisoformat(run_id.partition("@")[2])


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def row(name: str, late: Lateness) -> str:
    return (
        f"| {name} | {late.slots} | {late.median:.1f} | {late.p90:.1f} | {late.p99:.1f}"
        f" | {late.worst:.1f} | {late.busiest_share:.2f} |"
    )


HEADER = (
    "| mode | slots | median ms | p90 ms | p99 ms | max ms | busiest node / fair share |\n"
    "| --- | --- | --- | --- | --- | --- | --- |"
)


def overhead(admin: str, *, jobs: int, seconds: float) -> None:
    print(f"\n### claim overhead: {jobs} jobs every 2 s for {seconds:g} s (due -> start)\n")
    print(HEADER)
    shape = {"jobs": jobs, "schedule": "*/2 * * * * *", "seconds": seconds}
    print(row("SQLite, one host", measure(admin, nodes=1, cluster=False, **shape)), flush=True)  # type: ignore[arg-type]
    for nodes in (1, 3, 5):
        late = measure(admin, nodes=nodes, cluster=True, **shape)  # type: ignore[arg-type]
        print(row(f"cluster, {nodes} node(s)", late), flush=True)


def rate(admin: str, *, rates: list[int], seconds: float) -> None:
    print(f"\n### slot rate: N jobs every second, {seconds:g} s each, p99 lateness\n")
    print("| slots/s | SQLite p99 ms | cluster (3 nodes) p99 ms | cluster median ms | within 1 s |")
    print("| --- | --- | --- | --- | --- |")
    best = 0
    for n in rates:
        shape = {"jobs": n, "schedule": "* * * * * *", "seconds": seconds}
        single = measure(admin, nodes=1, cluster=False, **shape)  # type: ignore[arg-type]
        three = measure(admin, nodes=3, cluster=True, **shape)  # type: ignore[arg-type]
        ok = three.p99 <= 1000
        best = n if ok else best
        print(
            f"| {n} | {single.p99:.0f} | {three.p99:.0f} | {three.median:.0f} | {verdict(ok)} |",
            flush=True,
        )
    print(f"\nhighest rate with p99 lateness within 1 s on three nodes: {best} slots/s")


def exact(admin: str, *, seconds: float) -> None:
    print(f"\n### exact-once: 50 jobs every 2 s for {seconds:g} s on three nodes\n")
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp, schema(admin) as dsn:
        folder = Path(tmp)
        begin, end = run_nodes(
            folder, nodes=3, jobs=50, schedule="*/2 * * * * *", seconds=seconds, dsn=dsn
        )
        ran = starts(folder)
    counts = Counter(run_id for run_id, _ in ran)
    window = [(run_id, node) for run_id, node in ran if begin <= _slot(run_id) < end]
    first = math.ceil(begin.timestamp() / 2) * 2
    expected = {
        f"job-{j:03}@{datetime.fromtimestamp(t, UTC).isoformat().replace('+00:00', 'Z')}"
        for j in range(50)
        for t in range(first, math.ceil(end.timestamp()), 2)
        if t < end.timestamp()
    }
    shares = Counter(node for _, node in window)
    fair = len(window) / 3
    print(f"- slots in the window: {len(expected)}; started: {len({r for r, _ in window})}")
    print(f"- started twice anywhere: {sum(1 for n in counts.values() if n > 1)}")
    print(f"- lost: {len(expected - {r for r, _ in window})}")
    print(
        f"- per node: {dict(sorted(shares.items()))};"
        f" busiest / fair: {max(shares.values()) / fair:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dsn = os.environ.get("CRONPLUS_TEST_DSN") or "postgresql://postgres@127.0.0.1:5432/test"
    parser.add_argument("--dsn", default=default_dsn)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--rates", default="25,50,100,200")
    parser.add_argument("--rate-seconds", type=float, default=12.0)
    parser.add_argument("--exact-once-seconds", type=float, default=60.0)
    parser.add_argument("--skip", default="")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    print(f"- {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"- load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if "overhead" not in skip:
        overhead(args.dsn, jobs=args.jobs, seconds=args.seconds)
    if "rate" not in skip:
        rate(args.dsn, rates=[int(n) for n in args.rates.split(",")], seconds=args.rate_seconds)
    if "exact" not in skip:
        exact(args.dsn, seconds=args.exact_once_seconds)


if __name__ == "__main__":
    main()

"""Cluster mode against single-host SQLite: claim overhead, sustainable slot rate, exact-once.

    python bench/bench_cluster.py [--dsn DSN] [--seconds 20] [--jobs 20]
                                  [--rates 25,50,100,200] [--rate-seconds 12]
                                  [--exact-once-seconds 60] [--skip overhead,rate,exact]

Every node is a real ``cronplus daemon`` of this interpreter; one run's nodes share a fresh
PostgreSQL schema on ``--dsn`` (default ``$CRONPLUS_TEST_DSN``), dropped afterwards. Lateness
is ``started_at - scheduled_at`` from the history table, the claim included; each job notes
its run id and node in a file, which gives the shares and the exact-once count (issue 6).
Prints markdown; RESULTS.md's ``## cluster`` is written from it by hand.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import shlex
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from gen import JobSpec, as_generated, cronplus_crontab
from harness import (
    Failed,
    Record,
    bench_env,
    checked,
    launch,
    listed,
    markdown_table,
    numbers,
    parser,
    percentile,
)
from procs import Child, no_child_left
from psycopg import conninfo

WARMUP_S = 2.0
"""Seconds between the last node's start and the measured window (every node heartbeats)."""
DRAIN_S = 3.0
"""Seconds the daemons run on after the window, so its late slots are counted too."""
STARTUP_TIMEOUT = 120.0


@dataclass(frozen=True)
class Load:
    """``jobs`` jobs on one ``schedule`` (6 fields, UTC), measured for ``seconds``."""

    jobs: int
    schedule: str
    seconds: float


@dataclass(frozen=True)
class Lateness:
    """Lateness figures of one run, in milliseconds, and the busiest node's share."""

    slots: int
    median: float
    p90: float
    p99: float
    worst: float
    busiest_share: float


class Node(Child):
    """One ``cronplus daemon`` of a run, ready when its log says it started."""

    def ready(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while "cronplus daemon started" not in (self.folder / "output.log").read_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise Failed(f"the daemon did not start:\n{self.log_tail()}")
            time.sleep(0.1)
        return time.perf_counter() - self.began


def crontab(node: str | None, load: Load, marker: Path) -> str:
    settings = ["  shutdown_grace: 2s"]
    if node is not None:
        settings += ["  cluster:", "    dsn: {from_env: CRONPLUS_BENCH_DSN}", f"    node: {node}"]
        settings.append("    lease: 10s")
    return cronplus_crontab(
        [
            JobSpec(name=f"job-{n:03}", expression=load.schedule, zone="UTC")
            for n in range(load.jobs)
        ],
        as_generated,
        f'echo "$CRONPLUS_RUN_ID $NODE" >> {shlex.quote(str(marker))}',
        concurrent=max(load.jobs * 2, 16),
        settings=settings,
        each=[
            "overlap: allow",
            "inherit_env: [NODE]  # a job's environment is built: its node named",
        ],
    )


@contextlib.contextmanager
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


def run_nodes(
    folder: Path, load: Load, *, nodes: int, dsn: str | None
) -> tuple[datetime, datetime]:
    """Start the daemons (cluster if ``dsn``), let them run, stop them; the window measured."""
    started: list[Node] = []
    with no_child_left():
        for name in [f"n{i}" for i in range(nodes)] if dsn else [None]:
            home = folder / f"node-{name or 'sqlite'}"
            home.mkdir()
            config = home / "crontab.yaml"
            config.write_text(crontab(name, load, folder / "started.txt"))
            env = bench_env(home / "state") | {"NODE": str(name), "CRONPLUS_BENCH_DSN": dsn or ""}
            if dsn and not started:
                checked([sys.executable, "-m", "cronplus", "-c", config, "db", "migrate"], env=env)
            started.append(
                Node([sys.executable, "-m", "cronplus", "-c", config, "daemon"], home, env)
            )
        for node in started:
            node.ready(STARTUP_TIMEOUT)
        begin = datetime.now(UTC) + timedelta(seconds=WARMUP_S)
        time.sleep(WARMUP_S + load.seconds + DRAIN_S)  # the window's last slots start, however late
        for node in started:
            node.terminate()
        for node in started:
            if (code := node.wait(60)) != 0:
                raise Failed(f"a daemon exited {code}:\n{node.log_tail()}")
    return begin, begin + timedelta(seconds=load.seconds)


def history(folder: Path, dsn: str | None) -> list[tuple[datetime, datetime]]:
    """(scheduled_at, started_at) of every attempt."""
    query = "SELECT scheduled_at, started_at FROM history WHERE attempt > 0"
    if dsn:
        with psycopg.connect(dsn) as conn:
            return [(slot, start) for slot, start in conn.execute(query).fetchall()]
    state = folder / "node-sqlite" / "state" / "cronplus"
    db = sqlite3.connect(next(state.glob("*.db")))  # the crontab's own (docs/state.md)
    epoch, micro = datetime(1970, 1, 1, tzinfo=UTC), timedelta(microseconds=1)
    rows = db.execute(query).fetchall()
    db.close()
    return [(epoch + slot * micro, epoch + start * micro) for slot, start in rows]


def starts(folder: Path) -> list[tuple[str, str]]:
    """(run id, node) per start, from the jobs' own marker file."""
    path = folder / "started.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(line.split()[0], line.split()[1]) for line in lines]


def _slot(run_id: str) -> datetime:
    return datetime.fromisoformat(run_id.partition("@")[2])


def measure(admin: str, load: Load, *, nodes: int, cluster: bool) -> Lateness:
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        folder = Path(tmp)
        with schema(admin) if cluster else contextlib.nullcontext() as dsn:
            begin, end = run_nodes(folder, load, nodes=nodes, dsn=dsn)
            slots = [(slot, start) for slot, start in history(folder, dsn) if begin <= slot < end]
        shares = Counter(node for run_id, node in starts(folder) if begin <= _slot(run_id) < end)
    late = [(start - slot).total_seconds() * 1000 for slot, start in slots]
    busiest = max(shares.values()) / (sum(shares.values()) / max(len(shares), 1)) if shares else 0
    return Lateness(
        slots=len(late),
        median=percentile(late, 50),
        p90=percentile(late, 90),
        p99=percentile(late, 99),
        worst=max(late),
        busiest_share=busiest,
    )


def overhead(admin: str, load: Load) -> None:
    print(
        f"\n### claim overhead: {load.jobs} jobs every 2 s for {load.seconds:g} s (due -> start)\n"
    )
    modes = [
        ("SQLite, one host", 1, False),
        *((f"cluster, {n} node(s)", n, True) for n in (1, 3, 5)),
    ]
    rows = []
    for name, nodes, cluster in modes:
        late = measure(admin, load, nodes=nodes, cluster=cluster)
        figures = (late.median, late.p90, late.p99, late.worst)
        rows.append(
            [name, str(late.slots), *(f"{ms:.1f}" for ms in figures), f"{late.busiest_share:.2f}"]
        )
    headers = ["mode", "slots", "median ms", "p90 ms", "p99 ms", "max ms"]
    print(markdown_table([*headers, "busiest node / fair share"], rows))


def rate(admin: str, rates: list[int], seconds: float) -> None:
    print(f"\n### slot rate: N jobs every second, {seconds:g} s each, p99 lateness\n")
    rows, best = [], 0
    for n in rates:
        load = Load(n, "* * * * * *", seconds)
        single = measure(admin, load, nodes=1, cluster=False)
        three = measure(admin, load, nodes=3, cluster=True)
        best = n if three.p99 <= 1000 else best
        within = "yes" if three.p99 <= 1000 else "**no**"
        rows.append(
            [str(n), f"{single.p99:.0f}", f"{three.p99:.0f}", f"{three.median:.0f}", within]
        )
    headers = ["slots/s", "SQLite p99 ms", "cluster (3 nodes) p99 ms", "cluster median ms"]
    print(markdown_table([*headers, "within 1 s"], rows))
    print(f"\nhighest rate with p99 lateness within 1 s on three nodes: {best} slots/s")


def exact(admin: str, seconds: float) -> None:
    print(f"\n### exact-once: 50 jobs every 2 s for {seconds:g} s on three nodes\n")
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp, schema(admin) as dsn:
        begin, end = run_nodes(Path(tmp), Load(50, "*/2 * * * * *", seconds), nodes=3, dsn=dsn)
        ran = starts(Path(tmp))
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
    print(f"- slots in the window: {len(expected)}; started: {len({r for r, _ in window})}")
    print(f"- started twice anywhere: {sum(1 for n in counts.values() if n > 1)}")
    print(f"- lost: {len(expected - {r for r, _ in window})}")
    busiest = max(shares.values()) / (len(window) / 3)
    print(f"- per node: {dict(sorted(shares.items()))}; busiest / fair: {busiest:.2f}")


def main() -> None:
    args = parser(__doc__)
    dsn = os.environ.get("CRONPLUS_TEST_DSN") or "postgresql://postgres@127.0.0.1:5432/test"
    args.add_argument("--dsn", default=dsn)
    args.add_argument("--seconds", type=float, default=20.0)
    args.add_argument("--jobs", type=int, default=20)
    args.add_argument("--rates", type=numbers, default=[25, 50, 100, 200])
    args.add_argument("--rate-seconds", type=float, default=12.0)
    args.add_argument("--exact-once-seconds", type=float, default=60.0)
    args.add_argument("--skip", type=listed, default=[])
    chosen = args.parse_args()
    command = f"python bench/bench_cluster.py {shlex.join(sys.argv[1:])}"
    print(Record.begin().header(command, span=False))
    if "overhead" not in chosen.skip:
        overhead(chosen.dsn, Load(chosen.jobs, "*/2 * * * * *", chosen.seconds))
    if "rate" not in chosen.skip:
        rate(chosen.dsn, chosen.rates, chosen.rate_seconds)
    if "exact" not in chosen.skip:
        exact(chosen.dsn, chosen.exact_once_seconds)


if __name__ == "__main__":
    launch(main)

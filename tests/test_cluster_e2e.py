"""Three real ``cronplus daemon`` nodes against one PostgreSQL database.

Every job appends ``$CRONPLUS_RUN_ID $NODE`` to one file when it starts, so the file is the
truth about what ran where. Windows are seconds long (issue 6's 60 s run is in
``bench/bench_cluster.py``); slots are every 1-2 s.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import privatepg
import pytest
from conftest import Cronplus, Daemon, clean_env, postgres_missing
from privatepg import PrivateServer

from cronplus.cluster.pg.store import PgStore
from cronplus.core.model import Outcome

pytestmark = pytest.mark.cluster

WINDOW_S = 8.0
"""How long the exact-once run lasts once every node is live."""


def crontab(
    node: str,
    *,
    jobs: int,
    schedule: str,
    command: str,
    lease: str = "4s",  # long enough that a loaded host never looks dead
    overlap: str = "allow",
    tags: str = "[]",
    job_lines: tuple[str, ...] = (),
) -> str:
    lines = [
        "settings:",
        "  shutdown_grace: 2s",
        "  max_concurrent: 64",
        "  cluster:",
        "    dsn: {from_env: CRONPLUS_TEST_CLUSTER_DSN}",
        f"    node: {node}",
        f"    lease: {lease}",
        f"    tags: {tags}",
        "defaults:",
        "  inherit_env: [NODE]  # a start names the node it ran on",
        "jobs:",
    ]
    for n in range(jobs):
        lines += [
            f"  job-{n:02}:",
            f'    schedule: "{schedule}"',
            "    timezone: UTC",
            f"    overlap: {overlap}",
            f"    command: '{command}'",
            *job_lines,
        ]
    return "\n".join(lines) + "\n"


class Cluster:
    """N node crontabs in one folder (so their job definitions agree) and their daemons."""

    def __init__(self, tmp_path: Path, dsn: str, names: tuple[str, ...] = ("a", "b", "c")):
        self.dir, self.dsn, self.names = tmp_path, dsn, names
        self.out = tmp_path / "started.txt"
        self.nodes: dict[str, Cronplus] = {}
        self.daemons: dict[str, Daemon] = {}
        for name in names:
            cp = Cronplus(tmp_path)
            cp.config = tmp_path / f"node-{name}.yaml"
            cp.env = clean_env(tmp_path / f"home-{name}") | {
                "CRONPLUS_TEST_CLUSTER_DSN": dsn,
                "NODE": name,
            }
            self.nodes[name] = cp

    def write(self, **shape: object) -> None:
        for name, cp in self.nodes.items():
            cp.config.write_text(crontab(name, **shape))  # type: ignore[arg-type]

    def migrate(self) -> None:
        done = self.nodes[self.names[0]].run("db", "migrate")
        assert done.returncode == 0, done.stderr

    def start(self, *names: str) -> None:
        for name in names or self.names:
            self.daemons[name] = Daemon(self.nodes[name])
        for daemon in self.daemons.values():
            daemon.wait_event("cluster_joined", timeout=20)

    def stop(self) -> None:
        for daemon in self.daemons.values():
            if daemon.proc.poll() is None:
                daemon.signal(signal.SIGTERM)
        for name, daemon in self.daemons.items():
            daemon.proc.wait(20)  # one SIGTERM each: stop() would send another
            assert daemon.stop() in (0, -signal.SIGKILL), daemon.text()
            assert "Traceback" not in daemon.text(), f"node {name}:\n{daemon.text()}"

    def kill_all(self) -> None:
        for daemon in self.daemons.values():
            daemon.kill()

    def starts(self) -> list[tuple[str, datetime, str]]:
        """(job, slot, node) per start, in file order."""
        rows = []
        for line in self.out.read_text().splitlines() if self.out.exists() else []:
            run_id, node = line.split()
            job, _, slot = run_id.partition("@")
            rows.append((job, datetime.fromisoformat(slot), node))
        return rows

    def claims(self, slots: set[tuple[str, datetime]]) -> str:
        """The claim rows of these slots, for a failure message."""
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            rows = conn.execute(
                "SELECT c.job, c.scheduled_at, c.node, c.status, c.takeovers, c.claimed_at,"
                " h.outcome, h.reason, h.started_at, h.finished_at FROM claims c"
                " LEFT JOIN history h ON h.job = c.job AND h.scheduled_at = c.scheduled_at"
            ).fetchall()
        return "\n".join(str(row) for row in rows if (row[0], row[1]) in slots) or "no claims"

    def events(self, name: str) -> list[dict[str, object]]:
        return [
            e for daemon in self.daemons.values() for e in daemon.events() if e["event"] == name
        ]


@pytest.fixture
def cluster(tmp_path: Path, postgres_dsn: str) -> Iterator[Cluster]:
    made = Cluster(tmp_path, postgres_dsn)
    yield made
    made.kill_all()


def every(start: datetime, end: datetime, step: int) -> set[datetime]:
    """The instants in [start, end) on multiples of ``step`` seconds."""
    first = int(start.timestamp()) // step * step
    if first < start.timestamp():
        first += step
    stop = math.ceil(end.timestamp())
    return {datetime.fromtimestamp(t, UTC) for t in range(first, stop, step) if t < end.timestamp()}


def now() -> datetime:
    return datetime.now(UTC)


def sleep_until(instant: datetime) -> None:
    time.sleep(max((instant - now()).total_seconds(), 0.0))


START = 'echo "$CRONPLUS_RUN_ID $NODE" >> started.txt'


def test_three_nodes_run_every_slot_exactly_once_and_share_it_fairly(cluster: Cluster) -> None:
    cluster.write(jobs=50, schedule="*/2 * * * * *", command=START)
    cluster.migrate()
    cluster.start()
    begin = now() + timedelta(seconds=2)  # every node has beaten by then
    end = begin + timedelta(seconds=WINDOW_S)
    sleep_until(begin + timedelta(seconds=WINDOW_S / 2))
    status = cluster.nodes["c"].json("cluster", "status")
    sleep_until(end + timedelta(seconds=1.5))
    cluster.stop()

    starts = cluster.starts()
    twice = [key for key, n in Counter((job, slot) for job, slot, _ in starts).items() if n > 1]
    assert twice == [], f"slots started twice: {twice[:5]}"
    window = [(job, slot, node) for job, slot, node in starts if begin <= slot < end]
    expected = {(f"job-{n:02}", slot) for n in range(50) for slot in every(begin, end, 2)}
    ran = {(job, slot) for job, slot, _ in window}
    assert ran == expected, f"lost, claims: {cluster.claims(expected - ran)}"
    shares = Counter(node for _, _, node in window)
    assert set(shares) == {"a", "b", "c"}
    assert max(shares.values()) <= 1.5 * len(window) / 3, shares
    history = cluster.nodes["b"].json("history", "-n", "5000")  # any node sees every run
    assert isinstance(history, list) and len(history) == len(starts)
    assert isinstance(status, dict)
    assert {(n["node"], n["state"], n["agrees"]) for n in status["nodes"]} == {
        ("a", "live", True),
        ("b", "live", True),
        ("c", "live", True),
    }
    assert status["definitions"] == status["this_file"]


SLOW = 'echo "$CRONPLUS_RUN_ID $NODE" >> started.txt; sleep 3'


def test_a_killed_nodes_slots_are_taken_over_after_its_lease_and_none_is_lost(
    cluster: Cluster,
) -> None:
    cluster.write(jobs=12, schedule="*/2 * * * * *", command=SLOW, lease="2s")
    cluster.migrate()
    cluster.start()
    begin = now() + timedelta(seconds=2)
    a = cluster.daemons["a"]
    a.wait_for(lambda: any(node == "a" and slot >= begin for _, slot, node in cluster.starts()))
    killed = now()
    a.kill()
    end = killed + timedelta(seconds=5)
    sleep_until(end + timedelta(seconds=1.5))
    cluster.stop()

    starts = cluster.starts()
    window = {(job, slot) for job, slot, _ in starts if begin <= slot < end}
    expected = {(f"job-{n:02}", slot) for n in range(12) for slot in every(begin, end, 2)}
    assert window == expected, f"lost, claims: {cluster.claims(expected - window)}"
    again = [key for key, n in Counter((job, slot) for job, slot, _ in starts).items() if n > 1]
    assert again, "no slot of the killed node was taken over"
    for job, slot in again:  # at-least-once only for the dead node's running slots
        nodes = [node for j, s, node in starts if (j, s) == (job, slot)]
        assert nodes[0] == "a" and len(nodes) == 2 and "a" not in nodes[1:], nodes
    takeovers = cluster.events("taken_over")
    assert {e["from_node"] for e in takeovers} == {"a"}
    # The lease ran from the node's last renewal, at most a third of a lease before the kill.
    assert all(when(e) >= killed + timedelta(seconds=1.3) for e in takeovers), "before the lease"
    history = cluster.nodes["b"].json("history", "-n", "1000")
    assert isinstance(history, list)
    assert any(row["outcome"] == "interrupted" for row in history)


def when(event: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00"))


def test_a_node_whose_job_definitions_differ_refuses_to_claim_until_they_agree(
    cluster: Cluster,
) -> None:
    cluster.write(jobs=3, schedule="* * * * * *", command=START)
    cluster.nodes["c"].config.write_text(
        crontab("c", jobs=3, schedule="*/5 * * * * *", command=START)
    )
    hour_ago = time.time() - 3600  # a stale file: older than the others, so never the cluster's
    os.utime(cluster.nodes["c"].config, (hour_ago, hour_ago))
    cluster.migrate()
    cluster.start("a", "b")  # their (newer) file becomes the cluster's definitions
    cluster.start("c")
    c = cluster.daemons["c"]
    c.wait_event("definitions_differ")
    status = cluster.nodes["a"].run("cluster", "status")
    time.sleep(1.5)
    assert "c" not in {node for _, _, node in cluster.starts()}
    cluster.nodes["c"].config.write_text(
        crontab("c", jobs=3, schedule="* * * * * *", command=START)
    )
    c.wait_event("definitions_agree")
    c.wait_for(lambda: "c" in {node for _, _, node in cluster.starts()}, timeout=10)
    cluster.stop()

    refusal = next(e for e in c.events() if e["event"] == "definitions_differ")
    assert "node c refuses to claim slots" in str(refusal["message"])
    assert "differ from the cluster's" in str(refusal["message"])
    lines = status.stdout.splitlines()
    header = ["NODE", "STATE", "HEARTBEAT", "HOST", "PID", "TAGS", "DEFINITIONS", "CLOCK"]
    header.append("RUNNING")
    assert lines[0].split() == header
    assert [line.split()[:2] for line in lines[1:4]] == [[n, "live"] for n in ("a", "b", "c")]
    assert "(differs)" in lines[3] and "(differs)" not in lines[1] + lines[2]


def test_run_on_keeps_a_job_on_the_nodes_with_its_tag(cluster: Cluster) -> None:
    for name, tags in (("a", "[gpu]"), ("b", "[]"), ("c", "[arm]")):
        # 11 untagged jobs x 3 slots: each node is someone's first choice many times over
        text = crontab(name, jobs=12, schedule="* * * * * *", command=START, tags=tags)
        cluster.nodes[name].config.write_text(
            text.replace("  job-03:", "  job-03:\n    run_on: [gpu]")
        )
    cluster.migrate()
    cluster.start()
    begin = now() + timedelta(seconds=1)
    end = begin + timedelta(seconds=3)
    sleep_until(end + timedelta(seconds=1))
    cluster.stop()

    starts = [(job, slot, node) for job, slot, node in cluster.starts() if begin <= slot < end]
    tagged = {(slot, node) for job, slot, node in starts if job == "job-03"}
    assert {node for _, node in tagged} == {"a"}
    assert {slot for slot, _ in tagged} == every(begin, end, 1)
    assert {node for job, _, node in starts if job != "job-03"} == {"a", "b", "c"}


REPLACED = 'echo "$CRONPLUS_RUN_ID $NODE" >> started.txt; sleep 30'


def test_replace_stops_the_old_run_on_whichever_node_it_runs(cluster: Cluster) -> None:
    cluster.write(jobs=3, schedule="*/2 * * * * *", command=REPLACED, overlap="replace")
    cluster.migrate()
    cluster.start()
    time.sleep(7)  # three slots: the first two runs are replaced
    cluster.stop()

    store = PgStore.open(cluster.dsn, readonly=True)
    rows = sorted(store.history(limit=200), key=lambda row: (row.job, row.started_at))
    store.close()
    killed = [row for row in rows if row.outcome is Outcome.KILLED]
    assert killed
    assert all(row.reason.startswith("replaced by the slot") for row in killed)
    assert len({node for _, _, node in cluster.starts()}) > 1  # replaced across nodes too
    assert all(row.finished_at - row.started_at < timedelta(seconds=10) for row in rows)


def test_an_unreachable_database_at_start_is_exit_2_without_the_password(tmp_path: Path) -> None:
    cp = Cronplus(tmp_path)
    cp.env["CRONPLUS_TEST_CLUSTER_DSN"] = "postgresql://cronplus:s3cr3t-pw@127.0.0.1:1/cluster"
    cp.write(crontab("a", jobs=1, schedule="* * * * *", command=START))

    done = cp.run("daemon", timeout=30)

    assert done.returncode == 2
    assert "cannot reach the cluster database" in done.stderr
    assert "host=127.0.0.1 port=1" in done.stderr
    assert "s3cr3t-pw" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


# --- a database restart, on a private server so other tests keep theirs -----------------------


@pytest.fixture
def private_postgres() -> Iterator[PrivateServer]:
    if (why := privatepg.why_not()) is not None:
        postgres_missing(why)
    with privatepg.running() as server:
        yield server


def test_nodes_reconnect_after_a_database_restart_and_nothing_runs_twice(
    tmp_path: Path, private_postgres: PrivateServer
) -> None:
    cluster = Cluster(tmp_path, private_postgres.dsn)
    try:
        cluster.write(jobs=10, schedule="* * * * * *", command=START, lease="3s")
        cluster.migrate()
        cluster.start()
        begin = now() + timedelta(seconds=1)
        sleep_until(begin + timedelta(seconds=2))
        private_postgres.restart()
        restarted = now()
        for daemon in cluster.daemons.values():
            daemon.wait_event("db_reconnected", timeout=20)
        end = restarted + timedelta(seconds=4)
        sleep_until(end + timedelta(seconds=1.5))
        cluster.stop()
    finally:
        cluster.kill_all()

    starts = cluster.starts()
    twice = [key for key, n in Counter((job, slot) for job, slot, _ in starts).items() if n > 1]
    assert twice == [], f"slots started twice: {twice[:5]}"
    ran = {(job, slot) for job, slot, _ in starts}
    expected = {(f"job-{n:02}", slot) for n in range(10) for slot in every(begin, end, 1)}
    assert expected <= ran, f"lost: {sorted(expected - ran)[:5]}"
    assert len(cluster.events("db_unavailable")) >= 3

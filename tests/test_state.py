"""The state database: one contract suite for every ``Store``, then what only SQLite does.

The contract suite runs against the ``store`` fixture, parametrized over implementations
(SQLite, and PostgreSQL in a fresh schema of its own where a server answers: see
``postgres_dsn`` in conftest.py), and says nothing about how a store keeps its rows.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from cronplus.cluster.pg.schema import migrate
from cronplus.cluster.pg.store import PgStore
from cronplus.core.model import Outcome, RunResult, StateError
from cronplus.state import sqlite as state  # SQLite's own schema and statements
from cronplus.state.sqlite import SCHEMA_VERSION, SqliteStore
from cronplus.state.store import Migration, Store

T0 = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
KEEP = 1000


def run(
    job: str,
    minute: int,
    outcome: Outcome = Outcome.SUCCEEDED,
    *,
    finished: int | None = None,
    attempt: int = 1,
) -> RunResult:
    """A run of ``job`` for the slot at T0+minute, finished at T0+``finished`` minutes."""
    slot = T0 + timedelta(minutes=minute)
    end = T0 + timedelta(minutes=minute if finished is None else finished, seconds=30)
    return RunResult(
        job=job,
        scheduled_at=slot,
        attempt=attempt,
        started_at=slot,
        finished_at=end,
        outcome=outcome,
        exit_code=0 if outcome is Outcome.SUCCEEDED else 1,
        duration_s=30.0,
    )


def slots_of(results: list[RunResult]) -> list[tuple[str, int]]:
    """(job, minute of the slot) per row: what the tables below compare."""
    return [(r.job, int((r.scheduled_at - T0) / timedelta(minutes=1))) for r in results]


# --- fixtures -------------------------------------------------------------------------

Opener = Callable[[], Store]
IMPLEMENTATIONS = ["sqlite", "postgres"]


@pytest.fixture(params=IMPLEMENTATIONS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens (again) one and the same store; every store it opened is closed afterwards."""
    opened: list[Store] = []

    dsn = ""
    if request.param == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        migrate(dsn)

    def opener() -> Store:
        store: Store
        if request.param == "postgres":
            store = PgStore.open(dsn)
        else:
            store = SqliteStore.open(tmp_path / "state" / "state.db")
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Opener) -> Store:
    return open_store()


# --- the contract: history ---------------------------------------------------------------


def test_a_recorded_run_reads_back_field_for_field(store: Store) -> None:
    berlin = timezone(timedelta(hours=1))
    result = RunResult(
        job="backup",
        scheduled_at=datetime(2026, 3, 8, 8, 0, tzinfo=berlin),
        attempt=3,
        started_at=datetime(2026, 3, 8, 7, 0, 0, 123456, tzinfo=UTC),
        finished_at=datetime(2026, 3, 8, 7, 0, 42, 654321, tzinfo=UTC),
        outcome=Outcome.KILLED,
        exit_code=None,
        signal=9,
        duration_s=42.530865,
        stderr_tail="disk full\nüñï €\n",
        reason="killed by signal 9",
    )
    store.record(result, keep=KEEP)

    [row] = store.history()

    assert row == result
    assert row.run_id == "backup@2026-03-08T07:00:00Z"
    assert [row.scheduled_at.utcoffset(), row.finished_at.tzinfo] == [timedelta(0), UTC]


def test_stdout_tail_is_not_kept(store: Store) -> None:
    store.record(replace(run("report", 0), stdout_tail="42 rows\n"), keep=KEEP)

    assert store.history()[0].stdout_tail == ""


def test_history_is_newest_first_by_finish_then_by_insertion(store: Store) -> None:
    # A retry of an early slot can finish after a later slot's run; ties keep insertion order.
    for result in (
        run("a", 0, finished=5),
        run("b", 1, finished=1),
        run("c", 2, finished=9),
        run("d", 3, finished=5),
    ):
        store.record(result, keep=KEEP)

    assert slots_of(store.history()) == [("c", 2), ("d", 3), ("a", 0), ("b", 1)]


HISTORY_ROWS = [
    run("backup", 0),
    run("report", 1, Outcome.FAILED),
    run("backup", 2, Outcome.TIMED_OUT),
    run("report", 3, Outcome.SKIPPED_OVERLAP),
    run("backup", 4),
    run("report", 5, Outcome.INTERRUPTED),
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            {},
            [
                ("report", 5),
                ("backup", 4),
                ("report", 3),
                ("backup", 2),
                ("report", 1),
                ("backup", 0),
            ],
        ),
        ({"job": "backup"}, [("backup", 4), ("backup", 2), ("backup", 0)]),
        ({"failed_only": True}, [("report", 5), ("backup", 2), ("report", 1)]),
        ({"job": "report", "failed_only": True}, [("report", 5), ("report", 1)]),
        ({"limit": 2}, [("report", 5), ("backup", 4)]),
        ({"job": "backup", "limit": 1}, [("backup", 4)]),
        ({"limit": 0}, []),
        ({"job": "nobody"}, []),
    ],
    ids=[
        "all",
        "one-job",
        "failed",
        "failed-of-one-job",
        "limit",
        "job-and-limit",
        "limit-0",
        "unknown-job",
    ],
)
def test_history_filters_by_job_failure_and_limit(
    store: Store, query: dict[str, Any], expected: list[tuple[str, int]]
) -> None:
    for result in HISTORY_ROWS:
        store.record(result, keep=KEEP)

    assert slots_of(store.history(**query)) == expected


@pytest.mark.parametrize(
    ("outcome", "counts_as_failed"),
    [
        (Outcome.SUCCEEDED, False),
        (Outcome.SKIPPED_OVERLAP, False),
        (Outcome.FAILED, True),
        (Outcome.TIMED_OUT, True),
        (Outcome.KILLED, True),
        (Outcome.MISSED, True),
        (Outcome.INTERRUPTED, True),
    ],
    ids=str,
)
def test_failed_only_keeps_every_outcome_but_success_and_overlap_skips(
    store: Store, outcome: Outcome, counts_as_failed: bool
) -> None:
    store.record(run("job", 0, outcome), keep=KEEP)

    assert len(store.history(failed_only=True)) == int(counts_as_failed)


def test_history_keep_trims_each_job_to_its_newest_rows(store: Store) -> None:
    for minute in range(6):
        store.record(run("busy", minute), keep=3)
    store.record(run("quiet", 0), keep=3)
    store.record(run("quiet", 1), keep=3)
    store.record(run("busy", 0, finished=99), keep=3)  # a late retry is the newest row

    kept = slots_of(store.history(limit=100))

    assert kept == [("busy", 0), ("busy", 5), ("busy", 4), ("quiet", 1), ("quiet", 0)]


def test_a_smaller_keep_trims_old_rows_on_the_next_insert(store: Store) -> None:
    for minute in range(5):
        store.record(run("job", minute), keep=10)
    store.record(run("job", 5), keep=2)

    assert slots_of(store.history()) == [("job", 5), ("job", 4)]


def test_last_outcomes_gives_each_jobs_newest_row(store: Store) -> None:
    for result in (
        run("backup", 0, Outcome.FAILED),
        run("backup", 1),
        run("report", 0, Outcome.TIMED_OUT, finished=7),
        run("report", 2),
    ):
        store.record(result, keep=KEEP)

    assert store.last_outcomes() == {
        "backup": (Outcome.SUCCEEDED, T0 + timedelta(minutes=1, seconds=30)),
        "report": (Outcome.TIMED_OUT, T0 + timedelta(minutes=7, seconds=30)),
    }


def test_an_empty_store_answers_empty(store: Store) -> None:
    assert [store.history(), store.last_outcomes(), store.ledger()] == [[], {}, {}]


def test_history_survives_reopening(open_store: Opener) -> None:
    first = open_store()
    first.record(run("backup", 0), keep=KEEP)
    first.close()

    assert slots_of(open_store().history()) == [("backup", 0)]


# --- the contract: ledger -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "then", "expected"),
    [(10, 20, 20), (20, 10, 20), (20, 20, 20)],
    ids=["forward", "backwards-is-ignored", "same"],
)
def test_the_ledger_never_moves_backwards(
    store: Store, first: int, then: int, expected: int
) -> None:
    store.advance_ledger([("backup", T0 + timedelta(minutes=first))])
    store.advance_ledger([("backup", T0 + timedelta(minutes=then))])

    assert store.ledger() == {"backup": T0 + timedelta(minutes=expected)}


def test_a_batch_advances_every_job_and_keeps_the_latest_of_repeats(store: Store) -> None:
    store.advance_ledger([("old", T0 + timedelta(days=1))])
    store.advance_ledger(
        [
            ("a", T0 + timedelta(minutes=5)),
            ("b", T0),
            ("a", T0 + timedelta(minutes=1)),
            ("old", T0),
        ]
    )

    assert store.ledger() == {
        "a": T0 + timedelta(minutes=5),
        "b": T0,
        "old": T0 + timedelta(days=1),
    }


def test_a_batch_that_fails_halfway_changes_nothing_and_the_store_goes_on(store: Store) -> None:
    store.advance_ledger([("job-0", T0)])

    def burst() -> Iterator[tuple[str, datetime]]:
        for n in range(500):
            yield f"job-{n}", T0 + timedelta(hours=1)
        yield "naive", datetime(2026, 3, 8, 9, 0)

    with pytest.raises(ValueError, match="ledger slot of naive must be an aware datetime"):
        store.advance_ledger(burst())
    store.advance_ledger([("after", T0)])  # and the store is still usable

    assert store.ledger() == {"job-0": T0, "after": T0}


def test_a_burst_of_a_thousand_jobs_is_recorded(store: Store) -> None:
    jobs = [f"job-{n:04}" for n in range(1000)]
    store.advance_ledger((job, T0) for job in jobs)
    for job in jobs:
        store.record(run(job, 0), keep=KEEP)

    assert [len(store.ledger()), len(store.last_outcomes()), len(store.history(limit=5000))] == [
        1000,
        1000,
        1000,
    ]


def test_the_ledger_survives_reopening(open_store: Opener) -> None:
    first = open_store()
    first.advance_ledger([("backup", T0)])
    first.close()

    assert open_store().ledger() == {"backup": T0}


# --- the contract: attempts in flight ---------------------------------------------------


def begin(store: Store, job: str = "backup", minute: int = 0, pid: int | None = 4242) -> int:
    slot = T0 + timedelta(minutes=minute)
    return store.begin_attempt(job=job, scheduled_at=slot, attempt=1, started_at=slot, pid=pid)


def test_an_ended_attempt_is_history_and_nothing_is_left_in_flight(open_store: Opener) -> None:
    first = open_store()
    attempt = begin(first)
    first.end_attempt(attempt, run("backup", 0), keep=KEEP)
    first.close()

    again = open_store()

    assert again.take_interrupted(now=T0 + timedelta(hours=1)) == []
    assert slots_of(again.history()) == [("backup", 0)]


def test_an_attempt_of_a_store_still_open_is_not_interrupted(store: Store) -> None:
    begin(store)

    assert store.take_interrupted(now=T0 + timedelta(hours=1)) == []


def test_attempts_left_open_become_interrupted_once_at_the_next_open(open_store: Opener) -> None:
    crashed = open_store()
    begin(crashed, "backup", 0, pid=4242)
    begin(crashed, "report", 1, pid=None)
    crashed.close()  # without end_attempt: as if the process had died
    now = T0 + timedelta(hours=1)

    again = open_store()
    taken = again.take_interrupted(now=now)

    assert [(r.job, r.outcome, r.started_at, r.finished_at) for r in taken] == [
        ("backup", Outcome.INTERRUPTED, T0, now),
        ("report", Outcome.INTERRUPTED, T0 + timedelta(minutes=1), now),
    ]
    assert [r.duration_s for r in taken] == [3600.0, 3540.0]
    assert "4242 may still be running" in taken[0].reason
    assert again.history(failed_only=True) == list(reversed(taken))
    assert again.take_interrupted(now=now) == []


def test_ending_an_attempt_that_was_taken_as_interrupted_still_records_it(
    open_store: Opener,
) -> None:
    crashed = open_store()
    attempt = begin(crashed)
    crashed.close()
    again = open_store()
    again.take_interrupted(now=T0 + timedelta(hours=1))

    again.end_attempt(attempt, run("backup", 0, finished=90), keep=KEEP)

    assert [r.outcome for r in again.history()] == [Outcome.SUCCEEDED, Outcome.INTERRUPTED]


# --- the contract: bad arguments --------------------------------------------------------

NAIVE = datetime(2026, 3, 8, 7, 0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.record(replace(run("backup", 0), scheduled_at=NAIVE), keep=KEEP),
         "scheduled_at of backup must be an aware datetime, got naive 2026-03-08T07:00:00"),
        (lambda s: s.record(replace(run("backup", 0), finished_at=NAIVE), keep=KEEP),
         "finished_at of backup must be an aware datetime"),
        (lambda s: s.advance_ledger([("backup", NAIVE)]),
         "ledger slot of backup must be an aware datetime"),
        (lambda s: s.begin_attempt(
            job="backup", scheduled_at=T0, attempt=1, started_at=NAIVE, pid=None),
         "started_at of backup must be an aware datetime"),
        (lambda s: s.take_interrupted(now=NAIVE), "now must be an aware datetime"),
        (lambda s: s.record(run("backup", 0), keep=0),
         "keep .history rows per job. must be at least 1, got 0"),
        (lambda s: s.history(limit=-1), "limit .history rows. must be 0 or more, got -1"),
    ],
    ids=["record-naive-slot", "record-naive-finish", "ledger-naive", "begin-naive",
         "take-naive", "keep-0", "negative-limit"],
)  # fmt: skip
def test_bad_arguments_are_refused_with_what_was_expected(
    store: Store, call: Callable[[Store], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call(store)

    assert [store.history(), store.ledger()] == [[], {}]


# --- SQLite: files, modes, WAL ----------------------------------------------------------


def sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o000, 0o077], ids=["022", "000", "077"])
def test_it_creates_the_files_0600_and_missing_folders_0700(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "new" / "deeper" / "state.db"
    old = os.umask(umask)
    try:
        store = SqliteStore.open(path)
        store.acquire_daemon_lock()
        store.record(run("backup", 0), keep=KEEP)
        files = {p.name: mode(p) for p in path.parent.iterdir()}
        store.close()
    finally:
        os.umask(old)

    assert files == {
        "state.db": 0o600,
        "state.db-wal": 0o600,
        "state.db-shm": 0o600,
        "state.db.lock": 0o600,
        "state.db.writers": 0o600,
    }
    assert [mode(tmp_path / "new"), mode(path.parent)] == [0o700, 0o700]


@pytest.mark.parametrize("readonly", [False, True], ids=["writing", "reading"])
def test_an_existing_folder_open_to_others_is_refused_and_keeps_its_mode(
    tmp_path: Path, readonly: bool
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    (shared / "state.db").touch(mode=0o600)

    with pytest.raises(StateError) as refused:
        SqliteStore.open(shared / "state.db", readonly=readonly)

    assert str(refused.value) == (
        f"{shared}: the state folder is open to its group and others (mode 0755), and must be"
        f" this user's alone; fix: chmod 700 {shared} (and check its files)"
    )
    assert mode(shared) == 0o755
    assert os.listdir(shared) == ["state.db"]


def test_the_database_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStore.open(path).close()

    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    raw.close()


def wal_frames(path: Path) -> int:
    """Frames in the -wal file: each commit appends at least one."""
    wal = sibling(path, "-wal").read_bytes()
    page_size = int.from_bytes(wal[8:12], "big")
    return (len(wal) - 32) // (24 + page_size)


def test_a_ledger_batch_of_a_thousand_jobs_is_one_small_transaction(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore.open(path)
    before = wal_frames(path)

    store.advance_ledger((f"job-{n:04}", T0) for n in range(1000))
    written = wal_frames(path) - before
    store.close()

    # One commit per job would append at least 1000 frames; one transaction only the
    # handful of ledger pages it touched.
    assert 0 < written < 50


def test_trimming_history_walks_the_per_job_index(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStore.open(path).close()

    with sqlite3.connect(path) as raw:
        plan = [
            row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {state._TRIM_HISTORY}", ("a", 3))
        ]
    raw.close()

    assert plan and all("SCAN" not in step for step in plan), plan
    assert any("history_by_job" in step for step in plan), plan


# --- SQLite: schema versions --------------------------------------------------------------


def user_version(path: Path) -> int:
    raw = sqlite3.connect(path)
    try:
        version: int = raw.execute("PRAGMA user_version").fetchone()[0]
        return version
    finally:
        raw.close()


def make_database(path: Path, *statements: str) -> None:
    raw = sqlite3.connect(path)
    for statement in statements:
        raw.execute(statement)
    raw.commit()
    raw.close()


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.write_bytes(b""),
        lambda p: make_database(
            p, "CREATE TABLE notes (text TEXT)", "INSERT INTO notes VALUES ('mine')"),
    ],
    ids=["empty-file", "version-0-database"],
)  # fmt: skip
def test_a_version_0_database_is_migrated_to_the_current_schema(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    path = tmp_path / "state.db"
    make(path)

    store = SqliteStore.open(path)
    store.record(run("backup", 0), keep=KEEP)
    store.close()

    assert user_version(path) == SCHEMA_VERSION == len(state.MIGRATIONS)
    with sqlite3.connect(path) as raw:
        tables = {
            row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    raw.close()
    assert {"history", "ledger", "in_flight"} <= tables


def test_a_later_migration_is_applied_on_top_of_existing_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore.open(path)
    store.advance_ledger([("backup", T0)])
    store.close()
    step = Migration(summary="a note per job", statements=("ALTER TABLE ledger ADD note TEXT",))

    raw = sqlite3.connect(path, isolation_level=None)
    reached = state.migrate(raw, (*state.MIGRATIONS, step))
    rows = raw.execute("SELECT job, note FROM ledger").fetchall()
    raw.close()

    assert [reached, user_version(path), rows] == [
        SCHEMA_VERSION + 1,
        SCHEMA_VERSION + 1,
        [("backup", None)],
    ]


def test_a_failing_migration_leaves_version_and_schema_as_they_were(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStore.open(path).close()
    broken = Migration(
        summary="half a step",
        statements=("CREATE TABLE extra (x INTEGER)", "ALTER TABLE nowhere ADD y INTEGER"),
    )

    raw = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="no such table: nowhere"):
        state.migrate(raw, (*state.MIGRATIONS, broken))
    tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    raw.close()

    assert user_version(path) == SCHEMA_VERSION
    assert "extra" not in tables


def test_reopening_a_current_database_runs_no_migration(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStore.open(path).close()
    before = path.read_bytes()

    SqliteStore.open(path).close()

    assert path.read_bytes() == before


# --- SQLite: read-only opening -------------------------------------------------------------


def test_reading_a_missing_database_answers_empty_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "state.db"

    store = SqliteStore.open(path, readonly=True)
    answers = [store.history(), store.last_outcomes(), store.ledger()]
    store.close()

    assert answers == [[], {}, {}]
    assert not (tmp_path / "nowhere").exists()


def test_reading_a_version_0_database_answers_empty_and_does_not_migrate(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"")

    store = SqliteStore.open(path, readonly=True)
    answers = [store.history(), store.ledger()]
    store.close()

    assert answers == [[], {}]
    assert [path.read_bytes(), user_version(path)] == [b"", 0]


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.record(run("backup", 0), keep=KEEP),
        lambda s: s.advance_ledger([("backup", T0)]),
        begin,
        lambda s: s.take_interrupted(now=T0),
        lambda s: s.end_attempt(1, run("backup", 0), keep=KEEP),
    ],
    ids=["record", "advance_ledger", "begin_attempt", "take_interrupted", "end_attempt"],
)
@pytest.mark.parametrize("exists", [True, False], ids=["existing", "missing"])
def test_a_read_only_store_refuses_to_write(
    tmp_path: Path, call: Callable[[SqliteStore], object], exists: bool
) -> None:
    path = tmp_path / "state.db"
    if exists:
        SqliteStore.open(path).close()
    store = SqliteStore.open(path, readonly=True)

    with pytest.raises(StateError, match=f"{path}: .* needs a store opened for writing"):
        call(store)
    store.close()


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    store.close()
    store.close()  # twice is harmless

    with pytest.raises(StateError, match=r"state\.db: reading history on a closed store"):
        store.history()


def test_one_process_opens_a_database_for_writing_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first = SqliteStore.open(path)

    with pytest.raises(StateError, match="already open for writing in this process"):
        SqliteStore.open(path)
    reader = SqliteStore.open(path, readonly=True)
    reader.close()
    first.close()
    SqliteStore.open(path).close()


# --- SQLite: other processes --------------------------------------------------------------

CHILD_PRELUDE = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from cronplus.core.model import StateError
from cronplus.state.sqlite import SqliteStore
path = Path(sys.argv[1])
slot = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
"""


def python(code: str, *args: str, prefix: tuple[str, ...] = ()) -> list[str]:
    return [*prefix, sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(code), *args]


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes a test starts; any still alive at the end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout):
            if stream:
                stream.close()


def start(children: list[subprocess.Popen[str]], code: str, *args: str) -> subprocess.Popen[str]:
    """Start a child that prints one line when it is ready, then waits on its stdin."""
    child = subprocess.Popen(
        python(textwrap.dedent(code) + "\nprint('ready', flush=True)\nsys.stdin.read()\n", *args),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    children.append(child)
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n"
    return child


def test_an_attempt_cut_off_by_kill_9_becomes_interrupted_and_its_slot_stays_handled(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    path = tmp_path / "state.db"
    child = start(
        children,
        """
        store = SqliteStore.open(path)
        store.advance_ledger([("backup", slot)])
        store.begin_attempt(job="backup", scheduled_at=slot, attempt=2, started_at=slot, pid=4242)
        """,
        str(path),
    )
    store = SqliteStore.open(path)
    now = T0 + timedelta(minutes=10)

    while_alive = store.take_interrupted(now=now)
    child.send_signal(signal.SIGKILL)
    child.wait()
    after_death = store.take_interrupted(now=now)
    store.close()

    assert while_alive == []
    assert [(r.job, r.attempt, r.outcome, r.finished_at) for r in after_death] == [
        ("backup", 2, Outcome.INTERRUPTED, now)
    ]
    assert f"cronplus (pid {child.pid}) ended" in after_death[0].reason
    reopened = SqliteStore.open(path, readonly=True)
    assert reopened.ledger() == {"backup": T0}
    assert reopened.history() == after_death
    reopened.close()


def test_a_second_daemon_on_the_same_database_is_refused_with_the_holders_pid(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    path = tmp_path / "state.db"
    holder = start(children, "SqliteStore.open(path).acquire_daemon_lock()", str(path))
    store = SqliteStore.open(path)

    with pytest.raises(StateError) as refused:
        store.acquire_daemon_lock()
    holder.kill()
    holder.wait()
    store.acquire_daemon_lock()  # free once the holder is gone, even killed
    store.acquire_daemon_lock()  # and taking it again is harmless
    written = sibling(path, ".lock").read_text()
    store.close()

    assert str(refused.value) == f"another cronplus daemon (pid {holder.pid}) already uses {path}"
    assert written == f"{os.getpid()}\n"


def test_readers_in_other_processes_read_while_this_one_writes(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore.open(path)
    for minute in range(3):
        store.record(run("backup", minute), keep=KEEP)
    store.close()
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM history")  # not committed: readers still see three rows

    readers = [
        subprocess.Popen(
            python("print(len(SqliteStore.open(path, readonly=True).history()))", str(path)),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    children.extend(readers)
    seen = [reader.communicate(timeout=30)[0] for reader in readers]
    writer.execute("ROLLBACK")
    writer.close()

    assert seen == ["3\n", "3\n"]


# --- SQLite: broken databases -----------------------------------------------------------


def garbage(path: Path) -> None:
    path.write_bytes(random.Random(7).randbytes(8192))


def garbage_first_page(path: Path) -> None:
    make_database(path, "CREATE TABLE notes (text TEXT)", "INSERT INTO notes VALUES ('x')")
    data = bytearray(path.read_bytes())
    data[100:4096] = random.Random(7).randbytes(3996)  # keep the 100-byte header
    path.write_bytes(bytes(data))


def future_version(path: Path) -> None:
    make_database(path, "CREATE TABLE history (id INTEGER)", "PRAGMA user_version = 99")


def directory(path: Path) -> None:
    path.mkdir()
    (path / "inside").write_text("mine")


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file at ``path`` (a file, or a directory's files), by name."""
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return {p.name: p.read_bytes() for p in files}


@pytest.mark.parametrize("readonly", [False, True], ids=["writing", "reading"])
@pytest.mark.parametrize(
    ("make", "says"),
    [
        (garbage, "not a readable SQLite database (file is not a database)"),
        (garbage_first_page, "not a readable SQLite database (database disk image is malformed)"),
        (future_version, "schema version 99 is newer than this cronplus knows (3); upgrade"),
        (directory, "is a directory, expected the SQLite state database file"),
    ],
    ids=["random-bytes", "garbage-first-page", "newer-schema", "a-directory"],
)  # fmt: skip
def test_a_broken_database_is_a_state_error_and_is_left_as_it_was(
    tmp_path: Path, make: Callable[[Path], None], says: str, readonly: bool
) -> None:
    path = tmp_path / "state.db"
    make(path)
    before = snapshot(path)

    with pytest.raises(StateError) as broken:
        SqliteStore.open(path, readonly=readonly)

    message = str(broken.value)
    assert message.startswith(f"{path}: ")
    assert says in message
    assert f"mv {path} {path}.broken; cronplus starts a fresh one" in message
    assert snapshot(path) == before
    assert not sibling(path, ".broken").exists()


def test_a_path_under_a_file_is_a_state_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a folder")
    path = tmp_path / "plain" / "state.db"

    with pytest.raises(StateError, match=f"{path}: cannot open it .Not a directory.; make the"):
        SqliteStore.open(path)


def without_file_permissions() -> tuple[str, ...]:
    """A command prefix under which chmod 000 is enforced, even for root."""
    if os.geteuid() != 0:
        return ()
    # root passes every permission check through these two capabilities; drop them.
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")


@pytest.mark.parametrize("readonly", [False, True], ids=["writing", "reading"])
def test_an_unreadable_database_is_a_state_error_naming_the_fix(
    tmp_path: Path, readonly: bool
) -> None:
    path = tmp_path / "state.db"
    SqliteStore.open(path).close()
    path.chmod(0o000)
    before = path.stat()

    child = subprocess.run(
        python(
            """
            try:
                SqliteStore.open(path, readonly=sys.argv[2] == "ro")
            except StateError as error:
                print(error)
            """,
            str(path),
            "ro" if readonly else "rw",
            prefix=without_file_permissions(),
        ),
        capture_output=True,
        text=True,
        check=True,
    )

    assert child.stdout == (
        f"{path}: cannot open it (Permission denied); make the file and its folder readable"
        f" and writable by this user (ls -l {path}), or point settings.state elsewhere\n"
    )
    assert (path.stat().st_mode, path.stat().st_size) == (before.st_mode, before.st_size)

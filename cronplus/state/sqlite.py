"""The SQLite store: ``Store`` on one SQLite file in WAL mode, its schema and its locks.

docs/state.md describes the schema, the files beside the database (``.lock``, ``.writers``)
and how to recover. Instants are stored with ``state.to_micros``. The folder and every file
in it are checked, and the files opened, by ``files`` before SQLite opens them.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from cronplus.core.model import Outcome, RunResult, StateError, Trigger
from cronplus.state.files import (
    cannot_open,
    check_siblings,
    move_aside,
    private_file,
    private_folder,
    sibling,
)
from cronplus.state.store import (
    NOT_FAILED,
    Migration,
    check_keep,
    from_micros,
    history_values,
    interrupted_result,
    to_micros,
)

BUSY_TIMEOUT_S = 5.0
"""How long a statement waits for another process's write lock before it is an error."""

# --- schema ---------------------------------------------------------------------------


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        summary="history, ledger and in-flight attempts",
        statements=(
            """CREATE TABLE history (
                id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, job TEXT NOT NULL,
                scheduled_at INTEGER NOT NULL, attempt INTEGER NOT NULL,
                started_at INTEGER NOT NULL, finished_at INTEGER NOT NULL,
                outcome TEXT NOT NULL, exit_code INTEGER, signal INTEGER,
                duration_s REAL NOT NULL, stderr_tail TEXT NOT NULL, reason TEXT NOT NULL)""",
            # One order means "newest" everywhere (listing, trimming, last outcome), and
            # this index serves it per job; trimming on insert costs `keep` index steps.
            "CREATE INDEX history_by_job ON history (job, finished_at, id)",
            "CREATE INDEX history_by_finish ON history (finished_at, id)",
            "CREATE TABLE ledger (job TEXT PRIMARY KEY, slot INTEGER NOT NULL) WITHOUT ROWID",
            # AUTOINCREMENT: an attempt id is never handed out twice, so a late
            # end_attempt cannot delete somebody else's row.
            """CREATE TABLE in_flight (
                id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL,
                scheduled_at INTEGER NOT NULL, attempt INTEGER NOT NULL,
                started_at INTEGER NOT NULL, pid INTEGER, owner_pid INTEGER NOT NULL)""",
        ),
    ),
    Migration(
        summary="each attempt's output, and how its run started",
        statements=(
            # Rows from before keep '' in each: no output kept, started by an unknown way.
            "ALTER TABLE history ADD COLUMN stdout TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE history ADD COLUMN stderr TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE history ADD COLUMN trigger TEXT NOT NULL DEFAULT ''",
        ),
    ),
    Migration(
        summary="what a target answered",
        statements=("ALTER TABLE history ADD COLUMN response TEXT NOT NULL DEFAULT ''",),
    ),
)
"""Schema versions in order: applying ``MIGRATIONS[n-1]`` takes ``user_version`` to n."""

SCHEMA_VERSION = len(MIGRATIONS)
READS_FROM = 1
"""The oldest version a read-only store reads without upgrading it."""


def migrate(db: sqlite3.Connection, migrations: tuple[Migration, ...]) -> int:
    """Bring ``db`` (opened with ``isolation_level=None``) up to ``len(migrations)``.

    Each step re-reads the version inside its write transaction, so two processes opening
    one fresh file apply every step once. Returns the version reached.
    """
    for version, step in enumerate(migrations, start=1):
        with _transaction(db):
            if _user_version(db) >= version:
                continue
            for statement in step.statements:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {version}")
    return _user_version(db)


# --- statements -----------------------------------------------------------------------

_NOT_FAILED = tuple(outcome.value for outcome in NOT_FAILED)

_COLUMNS = (
    "job, scheduled_at, attempt, started_at, finished_at, outcome, exit_code, signal,"
    " duration_s, stderr_tail, reason, stdout, stderr, trigger, response"
)
_INSERT_HISTORY = f"INSERT INTO history (run_id, {_COLUMNS}) VALUES ({', '.join('?' * 16)})"
_OLD_COLUMNS = {
    1: _COLUMNS.replace("stdout, stderr, trigger, response", "'', '', '', ''"),
    2: _COLUMNS.replace("response", "''"),
}
"""What a reader selects from an older file: version 1 has no output, trigger or response
columns, version 2 no response."""
_TRIM_HISTORY = (
    "DELETE FROM history WHERE job = ?1 AND id IN (SELECT id FROM history WHERE job = ?1"
    " ORDER BY finished_at DESC, id DESC LIMIT -1 OFFSET ?2)"
)
_ADVANCE_LEDGER = (
    "INSERT INTO ledger (job, slot) VALUES (?, ?)"
    " ON CONFLICT (job) DO UPDATE SET slot = max(slot, excluded.slot)"
)
_BEGIN_ATTEMPT = (
    "INSERT INTO in_flight (job, scheduled_at, attempt, started_at, pid, owner_pid)"
    " VALUES (?,?,?,?,?,?)"
)
_IN_FLIGHT = "SELECT id, job, scheduled_at, attempt, started_at, pid, owner_pid FROM in_flight"
# Hops from one distinct job to the next through the index instead of scanning every row,
# then takes each job's newest row: cost grows with jobs, not with history.
_LAST_OUTCOMES = """
    WITH RECURSIVE jobs(name) AS (
        SELECT min(job) FROM history
        UNION ALL
        SELECT (SELECT min(job) FROM history WHERE job > name) FROM jobs WHERE name IS NOT NULL)
    SELECT h.job, h.outcome, h.finished_at FROM jobs JOIN history AS h ON h.id = (
        SELECT id FROM history WHERE job = jobs.name ORDER BY finished_at DESC, id DESC LIMIT 1)
"""


def _history_params(result: RunResult) -> tuple[object, ...]:
    return history_values(result, to_micros)


def _history_query(
    *, job: str | None, failed_only: bool, run_id: str | None = None, version: int = 0
) -> str:
    where = ["job = :job"] if job is not None else []
    if run_id is not None:
        where.append("run_id = :run_id")
    if failed_only:
        where.append(f"outcome NOT IN {_NOT_FAILED!r}")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    columns = _OLD_COLUMNS.get(version, _COLUMNS)
    return f"SELECT {columns} FROM history{clause} ORDER BY finished_at DESC, id DESC LIMIT :n"


# --- errors ---------------------------------------------------------------------------


def _open_error(path: Path, error: sqlite3.Error) -> StateError:
    """Say what is wrong with the database file and what the operator can do about it."""
    name = getattr(error, "sqlite_errorname", "")
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return StateError(f"{path}: not a readable SQLite database ({error}); {move_aside(path)}")
    if name == "SQLITE_BUSY":
        return StateError(
            f"{path}: another process held the state database locked for more than"
            f" {BUSY_TIMEOUT_S:g}s ({error}); try again when it is done"
        )
    return cannot_open(path, str(error))


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    # mode=rw/ro: SQLite never creates the file itself (we made it 0600, or it must exist).
    # isolation_level=None: transactions are begun and committed explicitly, below.
    return sqlite3.connect(
        f"{path.absolute().as_uri()}?mode={mode}",
        uri=True,
        timeout=BUSY_TIMEOUT_S,
        isolation_level=None,
        check_same_thread=False,
    )


def _user_version(db: sqlite3.Connection) -> int:
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    return version


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so a transaction never fails halfway
    # with SQLITE_BUSY after it has read something.
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # some errors (a full disk) have already rolled it back
            db.execute("ROLLBACK")
        raise


# --- the SQLite store -------------------------------------------------------------------


class SqliteStore:
    """A ``Store`` on one SQLite file in WAL mode: one writer at a time, readers alongside.

    Open it with ``SqliteStore.open``. Calls are serialized, so threads may share a store.
    At most one writing store per database per process: the POSIX record lock that says
    this process is alive (docs/state.md, "Attempts in flight") is shared by the process.
    """

    _writing: ClassVar[set[tuple[int, Path]]] = set()
    """(pid, database) of the writing stores open in this process."""

    def __init__(
        self,
        *,
        path: Path,
        db: sqlite3.Connection,
        writable: bool,
        version: int = SCHEMA_VERSION,
    ) -> None:
        self._path = path
        self._db = db
        self._version = version  # read-only and older: fewer history columns
        self._mutex = threading.Lock()
        self._writers: int | None = None
        self._begun: set[int] = set()
        self._daemon_lock: int | None = None
        self._closed = False
        if writable:
            self._join_writers()

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> SqliteStore:
        """Open (to write: create and migrate) the database at ``path``.

        ``readonly`` never creates or migrates anything; a missing or never-initialized
        file reads as an empty store.
        """
        if path.is_dir():
            raise StateError(
                f"{path}: is a directory, expected the SQLite state database file;"
                f" point settings.state at a file, or {move_aside(path)}"
            )
        if readonly:
            return cls._open_readonly(path)
        private_folder(path, create=True)
        os.close(private_file(path))
        check_siblings(path)
        db = cls._checked(path, _connect(path, "rw"))
        try:
            if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
                raise StateError(f"{path}: SQLite refused to switch it to WAL mode")
            # NORMAL is durable in WAL mode except for the last commits on power loss.
            db.execute("PRAGMA synchronous = NORMAL")
            migrate(db, MIGRATIONS)
            return cls(path=path, db=db, writable=True)
        except sqlite3.Error as error:
            db.close()
            raise _open_error(path, error) from error
        except BaseException:
            db.close()
            raise

    @classmethod
    def _open_readonly(cls, path: Path) -> SqliteStore:
        if not path.exists():
            return cls._empty(path)
        private_folder(path, create=False)
        os.close(private_file(path, os.O_RDONLY))  # says "permission denied" if so
        check_siblings(path)
        db = cls._checked(path, _connect(path, "ro"))
        version = _user_version(db)
        if version >= READS_FROM:
            # A file the running (older) daemon has not upgraded yet reads as it is.
            return cls(path=path, db=db, writable=False, version=version)
        db.close()
        if version == 0:
            return cls._empty(path)
        raise StateError(
            f"{path}: schema version {version} is older than this cronplus reads"
            f" ({READS_FROM}); start `cronplus daemon` once to upgrade it"
        )

    @classmethod
    def _empty(cls, path: Path) -> SqliteStore:
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        migrate(db, MIGRATIONS)
        db.execute("PRAGMA query_only = ON")
        return cls(path=path, db=db, writable=False)

    @staticmethod
    def _checked(path: Path, db: sqlite3.Connection) -> sqlite3.Connection:
        """Read the schema version first: a broken file fails here, before any write."""
        try:
            version = _user_version(db)  # from the header; the schema read parses page 1
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as error:
            db.close()
            raise _open_error(path, error) from error
        if version > SCHEMA_VERSION:
            db.close()
            raise StateError(
                f"{path}: schema version {version} is newer than this cronplus knows"
                f" ({SCHEMA_VERSION}); upgrade cronplus, or {move_aside(path)}"
            )
        return db

    def _join_writers(self) -> None:
        key = (os.getpid(), self._path.absolute())
        try:
            if key in self._writing:
                raise StateError(f"{self._path}: already open for writing in this process")
            self._writers = private_file(sibling(self._path, ".writers"))
        except StateError:
            self._db.close()
            raise
        fcntl.lockf(self._writers, fcntl.LOCK_EX, 1, os.getpid())
        self._writing.add(key)

    def acquire_daemon_lock(self) -> None:
        """Be the one daemon on this database until ``close`` (or this process ends)."""
        if self._daemon_lock is not None:
            return
        fd = private_file(sibling(self._path, ".lock"))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateError(
                f"another cronplus daemon (pid {holder}) already uses {self._path}"
            ) from error
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._daemon_lock = fd

    # --- Store ---

    def record(self, result: RunResult, *, keep: int) -> None:
        check_keep(keep)
        with self._using("recording a run", writes=True), _transaction(self._db):
            self._insert(result, keep=keep)

    def history(
        self,
        *,
        job: str | None = None,
        failed_only: bool = False,
        limit: int = 20,
        run_id: str | None = None,
    ) -> list[RunResult]:
        if limit < 0:
            raise ValueError(f"limit (history rows) must be 0 or more, got {limit}")
        if run_id is not None:  # JOB@INSTANT: the job's index finds it
            job = run_id.rpartition("@")[0]
        query = _history_query(
            job=job, failed_only=failed_only, run_id=run_id, version=self._version
        )
        params = {"job": job, "n": limit, "run_id": run_id}
        with self._using("reading history"):
            rows = self._db.execute(query, params).fetchall()
        return [self._result(row) for row in rows]

    def last_outcomes(self) -> dict[str, tuple[Outcome, datetime]]:
        with self._using("reading last outcomes"):
            rows = self._db.execute(_LAST_OUTCOMES).fetchall()
        return {job: (Outcome(text), from_micros(at)) for job, text, at in rows}

    def ledger(self) -> dict[str, datetime]:
        with self._using("reading the ledger"):
            rows = self._db.execute("SELECT job, slot FROM ledger").fetchall()
        return {job: from_micros(slot) for job, slot in rows}

    def advance_ledger(self, slots: Iterable[tuple[str, datetime]]) -> None:
        pairs = ((job, to_micros(slot, f"ledger slot of {job}")) for job, slot in slots)
        with self._using("advancing the ledger", writes=True), _transaction(self._db):
            self._db.executemany(_ADVANCE_LEDGER, pairs)

    def begin_attempt(
        self,
        *,
        job: str,
        scheduled_at: datetime,
        attempt: int,
        started_at: datetime,
        pid: int | None,
    ) -> int:
        scheduled = to_micros(scheduled_at, f"scheduled_at of {job}")
        started = to_micros(started_at, f"started_at of {job}")
        with self._using("noting an attempt in flight", writes=True), _transaction(self._db):
            cursor = self._db.execute(
                _BEGIN_ATTEMPT, (job, scheduled, attempt, started, pid, os.getpid())
            )
        assert cursor.lastrowid is not None  # an INSERT always sets it
        self._begun.add(cursor.lastrowid)
        return cursor.lastrowid

    def end_attempt(self, attempt_id: int, result: RunResult, *, keep: int) -> None:
        # The result is recorded even if the in-flight row is gone: it is what happened.
        check_keep(keep)
        with self._using("recording a run", writes=True), _transaction(self._db):
            self._db.execute("DELETE FROM in_flight WHERE id = ?", (attempt_id,))
            self._insert(result, keep=keep)
        self._begun.discard(attempt_id)

    def take_interrupted(self, *, now: datetime) -> list[RunResult]:
        to_micros(now, "now")
        with self._using("taking interrupted attempts", writes=True), _transaction(self._db):
            rows = self._db.execute(_IN_FLIGHT).fetchall()
            dead = [row for row in rows if not self._owner_alive(row[0], row[-1])]
            results = [_interrupted(row, now=now) for row in dead]
            self._db.executemany("DELETE FROM in_flight WHERE id = ?", [(r[0],) for r in dead])
            self._db.executemany(_INSERT_HISTORY, [_history_params(r) for r in results])
        return results

    def close(self) -> None:
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._db.close()
            if self._writers is not None:
                os.close(self._writers)  # releases this process's record locks
                self._writing.discard((os.getpid(), self._path.absolute()))
            if self._daemon_lock is not None:
                os.close(self._daemon_lock)  # releases the flock

    # --- helpers ---

    @contextmanager
    def _using(self, action: str, *, writes: bool = False) -> Iterator[None]:
        """One call at a time; any SQLite failure becomes a StateError naming the file."""
        with self._mutex:
            if self._closed:
                raise StateError(f"{self._path}: {action} on a closed store")
            if writes and self._writers is None:
                raise StateError(f"{self._path}: {action} needs a store opened for writing")
            try:
                yield
            except sqlite3.Error as error:
                raise StateError(f"{self._path}: {action} failed: {error}") from error

    def _owner_alive(self, attempt_id: int, owner_pid: int) -> bool:
        assert self._writers is not None  # _using(writes=True) checked it
        if owner_pid == os.getpid():
            return attempt_id in self._begun
        try:  # the owner holds its byte in <db>.writers while it lives
            fcntl.lockf(self._writers, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, owner_pid)
        except OSError:
            return True  # EAGAIN or EACCES: held
        fcntl.lockf(self._writers, fcntl.LOCK_UN, 1, owner_pid)
        return False

    def _insert(self, result: RunResult, *, keep: int) -> None:
        self._db.execute(_INSERT_HISTORY, _history_params(result))
        self._db.execute(_TRIM_HISTORY, (result.job, keep))

    def _result(self, row: tuple[Any, ...]) -> RunResult:
        job, scheduled, attempt, started, finished, outcome, code, sig, secs, tail, why = row[:11]
        stdout, stderr, trigger, response = row[11:]
        return RunResult(
            job=job,
            scheduled_at=from_micros(scheduled),
            attempt=attempt,
            started_at=from_micros(started),
            finished_at=from_micros(finished),
            outcome=Outcome(outcome),
            exit_code=code,
            signal=sig,
            duration_s=secs,
            stderr_tail=tail,
            reason=why,
            stdout=stdout,
            stderr=stderr,
            trigger=Trigger(trigger) if trigger else None,
            response=response,
        )


def _interrupted(row: tuple[Any, ...], *, now: datetime) -> RunResult:
    _, job, scheduled, attempt, started, pid, owner_pid = row
    return interrupted_result(
        job=job,
        scheduled_at=from_micros(scheduled),
        attempt=attempt,
        started_at=from_micros(started),
        pid=pid,
        owner_pid=owner_pid,
        now=now,
    )

"""A crontab broken on disk: the reading commands still show the state and the running
daemon, and say the file is rejected; the commands that need its definitions refuse. And
the default state, which is each crontab's own, adopted once from the old shared one."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from conftest import Cronplus, Daemon

from cronplus.config.loader import LEGACY_STATE_NAME, state_name
from cronplus.state.sqlite import SqliteStore

GOOD = """\
settings:
  shutdown_grace: 2s
jobs:
  tick:
    schedule: "*/2 * * * * *"
    timezone: UTC
    command: ["true"]
  nightly:
    schedule: "30 2 * * *"
    timezone: America/New_York
    command: ["true"]
"""
BROKEN = GOOD.replace('"30 2 * * *"', '"not a schedule"')
AT = "2026-03-10T06:30:00Z"  # nightly's slot (02:30 EDT)


def own_state(cp: Cronplus) -> Path:
    return Path(cp.env["XDG_STATE_HOME"], "cronplus", state_name(cp.config))


def rejection(cp: Cronplus) -> list[str]:
    """The error lines ``validate`` prints for the file as it is."""
    done = cp.run("validate")
    assert done.returncode == 2
    return done.stderr.strip().splitlines()


def says_rejected(lines: list[str], stderr: str) -> bool:
    return "the file on disk is rejected" in stderr and all(
        line in stderr.splitlines() for line in lines
    )


def test_list_and_status_show_the_running_daemons_jobs_while_the_file_is_rejected(
    cronplus: Cronplus, daemons: Callable[..., Daemon]
) -> None:
    cronplus.write(GOOD)
    daemon = daemons()
    daemon.wait_event("started")
    cronplus.write(BROKEN)
    daemon.wait_event("reload_failed")

    listed, status = cronplus.run("list", "--json"), cronplus.run("status", "--json")
    path = cronplus.run("db", "path").stdout.strip()

    lines = rejection(cronplus)
    assert listed.returncode == 0, listed.stderr
    assert says_rejected(lines, listed.stderr)
    rows = {row["job"]: row for row in json.loads(listed.stdout)}
    assert rows["nightly"]["schedule"] == "30 2 * * *"  # the daemon's, not the file's
    assert rows["nightly"]["timezone"] == "America/New_York"
    assert rows["nightly"]["meaning"] and rows["nightly"]["next_utc"]
    assert rows["tick"]["next_local"]
    assert status.returncode == 0, status.stderr
    assert says_rejected(lines, status.stderr)
    body = json.loads(status.stdout)
    assert body["last_reload"]["ok"] is False
    assert body["state"] == path == str(own_state(cronplus))
    assert daemon.stop() == 0


def test_run_via_daemon_runs_the_daemons_definition_while_the_file_is_rejected(
    cronplus: Cronplus, daemons: Callable[..., Daemon]
) -> None:
    cronplus.write(GOOD)
    daemon = daemons()
    daemon.wait_event("started")
    cronplus.write(BROKEN)
    daemon.wait_event("reload_failed")

    done = cronplus.run("run", "nightly", "--via-daemon", "--json")

    assert done.returncode == 0, done.stderr
    assert says_rejected(rejection(cronplus), done.stderr)
    assert json.loads(done.stdout)["runs"][0]["outcome"] == "succeeded"
    assert daemon.stop() == 0


def test_list_without_a_daemon_names_the_jobs_the_state_knows(cronplus: Cronplus) -> None:
    cronplus.write(GOOD)
    assert cronplus.run("run-once", "--at", AT, "--job", "nightly").returncode == 0
    cronplus.write(BROKEN)

    done = cronplus.run("list", "--json")

    assert done.returncode == 0, done.stderr
    assert says_rejected(rejection(cronplus), done.stderr)
    assert "no cronplus daemon is running" in done.stderr
    assert json.loads(done.stdout) == [
        {
            "job": "nightly",
            "schedule": None,
            "meaning": None,
            "timezone": None,
            "next_local": None,
            "next_utc": None,
            "last_outcome": "succeeded",
        }
    ]


def test_history_reads_the_state_of_a_rejected_file(cronplus: Cronplus) -> None:
    cronplus.write(GOOD)
    assert cronplus.run("run-once", "--at", AT, "--job", "nightly").returncode == 0
    cronplus.write(BROKEN)

    done = cronplus.run("history", "--json")

    assert done.returncode == 0, done.stderr
    assert says_rejected(rejection(cronplus), done.stderr)
    assert [row["job"] for row in json.loads(done.stdout)] == ["nightly"]


def test_a_rejected_file_that_sets_its_state_is_read_there(cronplus: Cronplus) -> None:
    cronplus.write(GOOD.replace("settings:\n", "settings:\n  state: ./mine.db\n"))
    assert cronplus.run("run-once", "--at", AT, "--job", "nightly").returncode == 0
    cronplus.write(BROKEN.replace("settings:\n", "settings:\n  state: ./mine.db\n"))

    path, listed = cronplus.run("db", "path"), cronplus.run("list")

    assert path.stdout == f"{cronplus.dir / 'mine.db'}\n"
    assert listed.returncode == 0, listed.stderr
    assert "nightly" in listed.stdout and "succeeded" in listed.stdout
    assert not own_state(cronplus).exists()


def test_commands_that_need_the_definitions_refuse_a_rejected_file(cronplus: Cronplus) -> None:
    cronplus.write(BROKEN)
    lines = rejection(cronplus)

    for args in (("next",), ("run", "tick"), ("run-once",), ("db", "migrate")):
        done = cronplus.run(*args)
        assert (done.returncode, done.stderr.strip().splitlines()) == (2, lines), args


# --- the old shared state.db (docs/state.md, "Migration") ----------------------------------


def legacy_state(cp: Cronplus, *jobs: str) -> Path:
    """The one ``state.db`` every crontab shared before, its ledger naming ``jobs``."""
    legacy = own_state(cp).with_name(LEGACY_STATE_NAME)
    store = SqliteStore.open(legacy)
    store.advance_ledger([(job, datetime(2026, 3, 1, tzinfo=UTC)) for job in jobs])
    store.close()
    return legacy


def test_db_migrate_adopts_the_old_shared_state_once(cronplus: Cronplus) -> None:
    cronplus.write(GOOD)
    legacy = legacy_state(cronplus, "nightly", "gone")
    other = cronplus.dir / "other.yaml"
    other.write_text(cronplus.config.read_text())

    noted = cronplus.run("list")
    adopted = cronplus.run("db", "migrate")
    second = cronplus.run("-c", str(other), "db", "migrate")

    assert "the daemon adopts it at its next start" in noted.stderr
    assert adopted.returncode == 0, adopted.stderr
    assert f"adopted {legacy}" in adopted.stderr
    assert not legacy.exists() and own_state(cronplus).exists()
    store = SqliteStore.open(own_state(cronplus), readonly=True)
    assert set(store.ledger()) == {"nightly", "gone"}
    store.close()
    assert (second.returncode, "adopted" in second.stderr) == (0, False)


def test_the_old_state_stays_when_its_ledger_names_none_of_the_jobs(cronplus: Cronplus) -> None:
    cronplus.write(GOOD)
    legacy = legacy_state(cronplus, "someone-elses")

    done = cronplus.run("db", "migrate")

    assert done.returncode == 0, done.stderr
    assert "names none of this crontab's jobs" in done.stderr
    assert f"mv {legacy} {own_state(cronplus)}" in done.stderr
    assert legacy.exists()


def test_the_old_state_in_use_by_a_daemon_is_never_adopted(cronplus: Cronplus) -> None:
    cronplus.write(GOOD)
    legacy = legacy_state(cronplus, "nightly")
    lock = os.open(f"{legacy}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what an older daemon holds
        os.write(lock, b"4242")
        done = cronplus.run("db", "migrate")
    finally:
        os.close(lock)

    assert done.returncode == 2
    assert f"{legacy}: the state older cronplus versions shared" in done.stderr
    assert "in use by a daemon (pid 4242)" in done.stderr
    assert legacy.exists() and not own_state(cronplus).exists()


def test_the_daemon_adopts_the_old_shared_state_at_its_start(
    cronplus: Cronplus, daemons: Callable[..., Daemon]
) -> None:
    cronplus.write(GOOD)
    legacy = legacy_state(cronplus, "tick")

    daemon = daemons()
    daemon.wait_event("started")

    assert daemon.count("state_adopted") == 1
    assert not legacy.exists() and own_state(cronplus).exists()
    assert daemon.stop() == 0

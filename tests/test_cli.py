"""The ``cronplus`` command as a user runs it: real subprocesses, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Cronplus

from cronplus.config.loader import state_name

BACKUP = """\
jobs:
  backup:
    schedule: "0 3 * * *"
    timezone: America/New_York
    command: ["true"]
  report:
    schedule: "30 2 * * *"
    timezone: America/New_York
    command: "echo report"
"""


def test_validate_prints_ok_and_the_job_count(cronplus: Cronplus) -> None:
    cronplus.write(BACKUP)
    done = cronplus.run("validate")
    assert (done.returncode, done.stdout) == (0, "OK: 2 jobs\n")


def test_validate_prints_every_error_and_exits_2_without_a_traceback(cronplus: Cronplus) -> None:
    cronplus.write(
        """\
        jobs:
          a:
            schedule: "0 0 31 2 *"
            command: ["true"]
            retrys: 3
          b:
            schedule: "* * * * *"
            command: ["true"]
            timeout: soon
        """
    )
    done = cronplus.run("validate")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{cronplus.config}:3:15: jobs.a.schedule: ")
    assert lines[1].startswith(f"{cronplus.config}:5:5: jobs.a.retrys: ")
    assert "did you mean 'retries'" in lines[1]
    assert lines[2].startswith(f"{cronplus.config}:9:14: jobs.b.timeout: ")


def test_a_missing_file_is_exit_2_naming_it(cronplus: Cronplus) -> None:
    done = cronplus.run("validate")
    assert done.returncode == 2
    assert str(cronplus.config) in done.stderr
    assert "Traceback" not in done.stderr


def test_next_json_has_the_design_shape_across_spring_forward(cronplus: Cronplus) -> None:
    cronplus.write(BACKUP)
    body = cronplus.json("next", "--after", "2026-03-07T12:00:00Z", "-n", "2")
    assert body == [
        {"job": "backup", "at": "2026-03-08T07:00:00Z", "local": "2026-03-08T03:00:00-04:00"},
        {"job": "report", "at": "2026-03-08T07:00:00Z", "local": "2026-03-08T03:00:00-04:00"},
        {"job": "report", "at": "2026-03-09T06:30:00Z", "local": "2026-03-09T02:30:00-04:00"},
        {"job": "backup", "at": "2026-03-09T07:00:00Z", "local": "2026-03-09T03:00:00-04:00"},
    ]


def test_next_until_lists_every_fire_up_to_the_time(cronplus: Cronplus) -> None:
    cronplus.write(BACKUP)
    body = cronplus.json(
        "next", "backup", "--after", "2026-01-01T00:00:00Z", "--until", "2026-01-10T12:00:00Z"
    )
    assert isinstance(body, list)
    assert len(body) == 10  # 03:00 EST = 08:00Z, January 1 to 10
    assert {row["job"] for row in body} == {"backup"}


def test_next_without_an_offset_reads_the_time_in_the_host_zone(cronplus: Cronplus) -> None:
    cronplus.write(BACKUP)
    cronplus.env["TZ"] = "Asia/Tokyo"
    body = cronplus.json("next", "backup", "--after", "2026-06-01T15:59", "-n", "1")
    assert body == [
        {"job": "backup", "at": "2026-06-01T07:00:00Z", "local": "2026-06-01T03:00:00-04:00"}
    ]


def test_a_config_option_after_the_command_name_is_accepted(cronplus: Cronplus) -> None:
    cronplus.write(BACKUP)
    done = cronplus.run("validate", "-c", str(cronplus.config))
    assert done.returncode == 0


@pytest.mark.parametrize(
    "args",
    [
        ("next", "--until", "2026-01-01T00:00Z", "-n", "3"),
        ("next", "--after", "yesterday"),
        ("next", "nosuchjob"),
        ("history", "-n", "0"),
        ("frobnicate",),
    ],
    ids=["until-and-n", "bad-time", "unknown-job", "bad-count", "unknown-command"],
)
def test_usage_errors_exit_2_with_a_message(cronplus: Cronplus, args: tuple[str, ...]) -> None:
    cronplus.write(BACKUP)
    done = cronplus.run(*args)
    assert done.returncode == 2
    assert done.stderr.strip()
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "command", ["validate", "list", "next", "run-once", "run", "daemon", "history"]
)
def test_every_command_has_help(cronplus: Cronplus, command: str) -> None:
    done = cronplus.run(command, "--help")
    assert done.returncode == 0
    assert "Usage:" in done.stdout


def test_version(cronplus: Cronplus) -> None:
    done = cronplus.run("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("cronplus, version ")


def test_list_shows_the_schedule_in_words_zone_and_next_runs(cronplus: Cronplus) -> None:
    cronplus.write(BACKUP)
    rows = cronplus.json("list")
    assert isinstance(rows, list)
    backup = rows[0]
    assert backup["job"] == "backup"
    assert backup["timezone"] == "America/New_York"
    assert "03:00" in backup["meaning"]
    assert backup["next_utc"].endswith("Z")
    assert backup["last_outcome"] is None
    table = cronplus.run("list").stdout
    assert table.splitlines()[0].split()[:3] == ["JOB", "SCHEDULE", "MEANING"]


def test_run_once_on_a_spring_forward_night_runs_the_0230_job_at_0300(cronplus: Cronplus) -> None:
    cronplus.write(BACKUP)
    body = cronplus.json("run-once", "--at", "2026-03-08T03:00:20-04:00", "--job", "report")
    assert isinstance(body, dict)
    assert body["at"] == "2026-03-08T07:00:20Z"
    (run,) = body["runs"]
    assert run == {
        "job": "report",
        "scheduled_at": "2026-03-08T07:00:00Z",
        "outcome": "succeeded",
        "attempts": 1,
        "exit_code": 0,
        "duration_s": run["duration_s"],
        "response": None,
    }
    assert isinstance(run["duration_s"], float)


def test_run_once_runs_both_jobs_due_in_the_minute_and_records_history(cronplus: Cronplus) -> None:
    cronplus.write(BACKUP)
    body = cronplus.json("run-once", "--at", "2026-03-08T07:00:00Z")
    assert isinstance(body, dict)
    assert sorted(run["job"] for run in body["runs"]) == ["backup", "report"]
    history = cronplus.json("history")
    assert isinstance(history, list)
    assert sorted(row["job"] for row in history) == ["backup", "report"]
    assert set(history[0]) == {
        "run_id",
        "job",
        "scheduled_at",
        "attempt",
        "started_at",
        "finished_at",
        "outcome",
        "exit_code",
        "signal",
        "duration_s",
        "stderr_tail",
        "reason",
        "trigger",
        "response",
    }


def test_run_once_at_a_past_instant_retries_on_that_timeline(cronplus: Cronplus) -> None:
    # The retry is due 0.1 s after the first attempt on the --at timeline, long before the
    # job's next slot there; on the real clock it came after that slot and was dropped.
    cronplus.write(
        """\
        jobs:
          broken:
            schedule: "* * * * *"
            command: "exit 3"
            retries: 2
            retry_delay: 0.1s
        """
    )
    done = cronplus.run("run-once", "--json", "--at", "2020-01-01T00:00:10Z")
    assert done.returncode == 1
    assert json.loads(done.stdout)["runs"][0]["attempts"] == 3
    assert "no retries left" in done.stderr
    assert "its next slot comes before it" not in done.stderr
    failed = cronplus.json("history", "--failed", "--job", "broken")
    assert isinstance(failed, list)
    assert [row["attempt"] for row in failed] == [3, 2, 1]
    for row in failed:  # the rows are on the --at timeline, which moves at real speed
        assert row["scheduled_at"] == "2020-01-01T00:00:00Z"
        assert str(row["started_at"]).startswith("2020-01-01T00:00:1")


@pytest.mark.parametrize(
    ("at", "slot"),
    [
        ("2026-03-08T03:00 America/New_York", "2026-03-08T07:00:00Z"),
        ("2026-03-08T02:30 America/New_York", "2026-03-08T07:30:00Z"),  # skipped: as EST
        ("2026-11-01T01:30 America/New_York", "2026-11-01T05:30:00Z"),  # repeated: the first
        ("2026-07-01T12:00 UTC", "2026-07-01T12:00:00Z"),
    ],
    ids=["wall-time", "in-the-spring-gap", "in-the-autumn-fold", "utc"],
)
def test_at_takes_a_zone_name_after_the_time(cronplus: Cronplus, at: str, slot: str) -> None:
    cronplus.write(
        """\
        jobs:
          tick:
            schedule: "* * * * *"
            command: "true"
        """
    )
    body = cronplus.json("run-once", "--at", at, "--dry-run")
    assert isinstance(body, dict)
    assert body["at"] == slot
    assert body["runs"] == [{"job": "tick", "scheduled_at": slot}]


@pytest.mark.parametrize(
    ("at", "message"),
    [
        ("2026-03-08T03:00 Mars/Olympus", "'Mars/Olympus' is not a time zone name"),
        ("2026-03-08T03:00Z Europe/Berlin", "has both an offset and a zone"),
    ],
    ids=["unknown-zone", "offset-and-zone"],
)
def test_a_bad_zone_after_the_time_is_a_usage_error(
    cronplus: Cronplus, at: str, message: str
) -> None:
    cronplus.write(BACKUP)
    done = cronplus.run("next", "--after", at)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_schema_prints_the_shipped_json_schema_without_a_crontab(cronplus: Cronplus) -> None:
    done = cronplus.run("schema")  # no crontab.yaml in the folder: none is read
    assert done.returncode == 0, done.stderr
    shipped = Path(__file__).resolve().parent.parent / "cronplus.schema.json"
    assert done.stdout == shipped.read_text(encoding="utf-8")
    assert json.loads(done.stdout)["properties"]["jobs"]


def test_run_says_plainly_that_it_sent_no_alerts_nor_pings(cronplus: Cronplus) -> None:
    cronplus.write(
        """\
        notifiers:
          ops: {webhook: "http://127.0.0.1:9/hook"}
        jobs:
          watched:
            schedule: "0 0 1 1 *"
            command: "exit 4"
            on_failure: [ops]
            ping_url: "http://127.0.0.1:9/ping"
          quiet:
            schedule: "0 0 1 1 *"
            command: "true"
        """
    )
    done = cronplus.run("run", "watched")
    assert done.returncode == 1
    assert (
        "note: cronplus run sends no alerts (to ops) or healthchecks pings: the daemon sends"
        " them; to test them, run it through the daemon: cronplus run watched --via-daemon"
    ) in done.stderr
    quiet = cronplus.run("run", "quiet")
    assert quiet.returncode == 0 and "note:" not in quiet.stderr


def test_an_unknown_job_is_an_error_that_suggests_the_close_one(cronplus: Cronplus) -> None:
    cronplus.write(BACKUP)
    for args in (["history", "--job", "bakup"], ["run", "bakup"], ["next", "bakup"]):
        done = cronplus.run(*args)
        assert done.returncode == 2, args
        assert f"no such job in {cronplus.config}: bakup; did you mean backup?" in done.stderr
    far = cronplus.run("history", "--job", "zzz")
    assert far.returncode == 2 and far.stderr.strip().endswith(": zzz")
    assert cronplus.json("history", "--job", "backup") == []  # known, never ran: no error


def test_history_of_a_job_gone_from_the_file_is_still_shown(cronplus: Cronplus) -> None:
    cronplus.write(BACKUP)
    cronplus.run("run", "backup")
    cronplus.write(BACKUP.replace("backup", "renamed"))
    rows = cronplus.json("history", "--job", "backup")
    assert isinstance(rows, list) and [row["job"] for row in rows] == ["backup"]


def test_run_once_dry_run_runs_nothing(cronplus: Cronplus) -> None:
    cronplus.write(BACKUP)
    done = cronplus.run("run-once", "--at", "2026-03-08T07:00:00Z", "--dry-run")
    assert done.returncode == 0
    assert "would run backup for 2026-03-08T07:00:00Z" in done.stdout
    assert cronplus.json("history") == []


def test_run_once_exits_1_when_a_job_fails_after_its_retries(cronplus: Cronplus) -> None:
    cronplus.write(
        """\
        jobs:
          broken:
            schedule: "* * * * *"
            command: "echo oops >&2; exit 3"
            retries: 1
            retry_delay: 0.1s
        """
    )
    done = cronplus.run("run-once", "--json")
    assert done.returncode == 1
    assert '"attempts": 2' in done.stdout
    assert "WARNING job broken failed (attempt 1/2, exit 3" in done.stderr
    assert "ERROR job broken failed: no retries left" in done.stderr
    failed = cronplus.json("history", "--failed", "--job", "broken")
    assert isinstance(failed, list)
    assert [row["attempt"] for row in failed] == [2, 1]
    assert failed[0]["stderr_tail"].strip() == "oops"


def test_run_job_now_goes_through_the_same_path(cronplus: Cronplus) -> None:
    out = cronplus.dir / "env.txt"
    cronplus.write(
        f"""\
        jobs:
          show-env:
            schedule: "@yearly"
            command: "env | grep ^CRONPLUS_ | sort > {out}"
        """
    )
    done = cronplus.run("run", "show-env")
    assert done.returncode == 0, done.stderr
    names = [line.split("=")[0] for line in out.read_text().splitlines()]
    assert names == ["CRONPLUS_ATTEMPT", "CRONPLUS_JOB", "CRONPLUS_RUN_ID", "CRONPLUS_SCHEDULED_AT"]


def test_two_runs_of_a_job_are_two_runs_with_their_own_run_ids(cronplus: Cronplus) -> None:
    # Found in the first-minutes transcript: `run` and `run --via-daemon` in one second had
    # one run id (the slot cut to the second), so history showed one run of "2 (of 1)".
    cronplus.write(
        """\
        jobs:
          quick:
            schedule: "@yearly"
            command: "true"
        """
    )
    for _ in range(2):
        assert cronplus.run("run", "quick").returncode == 0
    history = cronplus.json("history")
    assert isinstance(history, list)
    ids = [row["run_id"] for row in history]
    assert len(ids) == 2 and len(set(ids)) == 2
    assert all(row["attempt"] == 1 for row in history)


def test_json_logs_have_stable_field_names(cronplus: Cronplus) -> None:
    cronplus.write(
        """\
        jobs:
          broken:
            schedule: "* * * * *"
            command: "exit 4"
        """
    )
    done = cronplus.run("run-once", "--log-format", "json")
    assert done.returncode == 1
    events = [json.loads(line) for line in done.stderr.splitlines()]
    failed = next(event for event in events if event["event"] == "attempt_failed")
    for key in ("job", "run_id", "scheduled_at", "attempt", "outcome", "exit_code", "duration_s"):
        assert key in failed
    assert (failed["job"], failed["outcome"], failed["exit_code"]) == ("broken", "failed", 4)


def test_a_corrupt_state_database_is_exit_2_and_left_untouched(cronplus: Cronplus) -> None:
    cronplus.write(BACKUP)
    state = cronplus.dir / "state" / "cronplus" / state_name(cronplus.config)
    state.parent.mkdir(parents=True, mode=0o700)
    garbage = b"this is not a database" * 100
    state.write_bytes(garbage)
    for args in (("history",), ("run-once", "--at", "2026-03-08T07:00:00Z")):
        done = cronplus.run(*args)
        assert done.returncode == 2
        assert str(state) in done.stderr
        assert "Traceback" not in done.stderr
    assert state.read_bytes() == garbage


def test_service_install_writes_a_user_unit_with_absolute_paths(cronplus: Cronplus) -> None:
    cronplus.write(BACKUP)
    home = cronplus.dir / "home"
    home.mkdir()
    cronplus.env["HOME"] = str(home)
    done = cronplus.run("service", "install", "--user")
    assert done.returncode == 0, done.stderr
    unit = home / ".config" / "systemd" / "user" / "cronplus.service"
    assert done.stdout.startswith(f"wrote {unit}")
    text = unit.read_text()
    assert "Type=notify" in text
    assert str(cronplus.config) in text
    assert "systemctl --user" in done.stdout


# --- the way out -------------------------------------------------------------------------

EXITING = """\
import atexit, sys, threading, time
from cronplus.cli.main import run
atexit.register(lambda: print("atexit ran", flush=True))
if sys.argv[1] == "thread":  # still at work when the command is done
    threading.Thread(target=lambda: (time.sleep(0.5), print("thread done"))).start()
sys.argv = ["cronplus", *sys.argv[2:]]
run()
"""


@pytest.mark.parametrize(
    ("thread", "args", "code", "out", "ran"),
    [
        ("none", ["--version"], 0, "cronplus, version", []),
        ("none", ["-c", "/no/such/crontab.yaml", "validate"], 2, "", []),
        ("thread", ["--version"], 0, "cronplus, version", ["thread done", "atexit ran"]),
    ],
    ids=["alone-ok", "alone-error", "with-a-thread"],
)
def test_the_command_skips_the_teardown_only_when_nothing_is_left_to_finish(
    thread: str, args: list[str], code: int, out: str, ran: list[str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", EXITING, thread, *args], capture_output=True, text=True
    )
    assert done.returncode == code, done.stderr
    lines = done.stdout.splitlines()
    printed = [line for line in lines if out and line.startswith(out)]
    assert len(printed) == (1 if out else 0), done.stdout
    # atexit ran only where the interpreter's way out was taken, after the thread's end
    assert [line for line in lines if line not in printed] == ran
    if code:
        assert "/no/such/crontab.yaml" in done.stderr  # flushed before the quick exit

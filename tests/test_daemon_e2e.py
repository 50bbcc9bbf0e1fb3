"""End to end: a real ``cronplus daemon`` process, with seconds schedules to stay fast."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import installed
from conftest import Cronplus, Daemon

FIRE = 'echo "$CRONPLUS_SCHEDULED_AT" >> {0}'


def fired(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def base_crontab(cp: Cronplus, jobs: str, settings: str = "") -> None:
    cp.write(f"settings:\n  shutdown_grace: 2s\n{settings}jobs:\n{jobs}")


def every_second(name: str, out: Path, extra: str = "") -> str:
    return (
        f"  {name}:\n"
        f'    schedule: "* * * * * *"\n'
        f"    timezone: UTC\n"
        f"    command: '{FIRE.format(out)}'\n"
        f"{extra}"
    )


def test_jobs_fire_on_their_seconds(cronplus: Cronplus, daemons: Callable[..., Daemon]) -> None:
    out = cronplus.dir / "fired.txt"
    base_crontab(cronplus, every_second("tick", out))
    daemon = daemons()
    daemon.wait_for(lambda: len(fired(out)) >= 3)
    assert daemon.stop() == 0
    slots = [datetime.fromisoformat(s) for s in fired(out)]
    assert len(slots) == len(set(slots))
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(slots))


def test_sighup_with_a_broken_file_keeps_the_old_jobs_firing(
    cronplus: Cronplus, daemons: Callable[..., Daemon]
) -> None:
    out = cronplus.dir / "fired.txt"
    base_crontab(cronplus, every_second("tick", out))
    daemon = daemons()
    daemon.wait_for(lambda: len(fired(out)) >= 1)
    cronplus.config.write_text(
        "jobs:\n  tick:\n    schedule: 'not a schedule'\n    command: true\n"
    )
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("reload_failed")
    failure = next(e for e in daemon.events() if e["event"] == "reload_failed")
    assert f"{cronplus.config}:3:15: jobs.tick.schedule:" in str(failure["message"])
    count = len(fired(out))
    daemon.wait_for(lambda: len(fired(out)) >= count + 2)
    assert daemon.stop() == 0


def test_reload_returns_once_the_daemon_has_the_new_jobs_and_exits_2_when_it_rejects(
    cronplus: Cronplus, daemons: Callable[..., Daemon]
) -> None:
    first, second = cronplus.dir / "first.txt", cronplus.dir / "second.txt"
    base_crontab(cronplus, every_second("first", first))
    alone = cronplus.run("reload")
    daemon = daemons()
    daemon.wait_event("started")

    base_crontab(cronplus, every_second("first", first) + every_second("second", second))
    accepted = cronplus.run("reload")
    # The daemon's environment lacks TOKEN, the command's has it: the file passes here and
    # is rejected there, as when an operator's shell differs from the service's.
    needs_token = "    env: {TOKEN: {from_env: TOKEN}}\n"
    base_crontab(cronplus, every_second("first", first, needs_token))
    cronplus.env["TOKEN"] = "s3cret"
    rejected = cronplus.run("reload")

    assert alone.returncode == 1  # no daemon yet: nothing reloaded
    assert "no cronplus daemon is running" in alone.stderr
    assert (accepted.returncode, accepted.stdout) == (0, f"reloaded {cronplus.config}\n")
    assert rejected.returncode == 2
    assert f"the daemon rejected {cronplus.config}; its previous jobs keep running" in (
        rejected.stderr
    )
    assert "jobs.first.env.TOKEN: from_env: the environment variable TOKEN is not set" in (
        rejected.stderr
    )
    count = len(fired(second))
    daemon.wait_for(lambda: len(fired(second)) >= count + 2)  # the accepted jobs run on
    whys = [e.get("message", "") for e in daemon.events() if e["event"] == "reloaded"]
    assert any("(cronplus reload)" in str(why) for why in whys)
    assert daemon.stop() == 0


def test_a_file_edit_adds_a_job(cronplus: Cronplus, daemons: Callable[..., Daemon]) -> None:
    first, second = cronplus.dir / "first.txt", cronplus.dir / "second.txt"
    base_crontab(cronplus, every_second("first", first))
    daemon = daemons()
    daemon.wait_event("started")
    base_crontab(cronplus, every_second("first", first) + every_second("second", second))
    daemon.wait_for(lambda: len(fired(second)) >= 1, timeout=10)
    reloaded = next(e for e in daemon.events() if e["event"] == "reloaded")
    assert reloaded["added"] == "second"
    assert daemon.stop() == 0


def test_sigterm_during_a_long_job_ends_it_within_the_grace(
    cronplus: Cronplus, daemons: Callable[..., Daemon]
) -> None:
    marker = cronplus.dir / "started.txt"
    base_crontab(
        cronplus,
        "  long:\n"
        '    schedule: "* * * * * *"\n'
        f"    command: \"trap '' TERM; touch {marker}; sleep 60\"\n",
    )
    daemon = daemons()
    daemon.wait_for(marker.exists)
    began = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - began < 2 + 3  # shutdown_grace, plus start-up slack
    history = cronplus.json("history")
    assert isinstance(history, list)
    assert history[0]["outcome"] == "interrupted"
    assert history[0]["signal"] == signal.SIGKILL


def test_kill_9_and_restart_loses_no_slot_and_repeats_none(
    cronplus: Cronplus, daemons: Callable[..., Daemon]
) -> None:
    out = cronplus.dir / "fired.txt"
    base_crontab(cronplus, every_second("tick", out, "    catchup: latest\n"))
    first = daemons()
    first.wait_for(lambda: len(fired(out)) >= 2)
    first.kill()
    time.sleep(2.5)
    second = daemons()
    count = len(fired(out))
    second.wait_for(lambda: len(fired(out)) >= count + 4)
    assert second.stop() == 0
    slots = sorted(datetime.fromisoformat(s) for s in fired(out))
    assert len(slots) == len(set(slots)), "a slot ran twice"
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert all(gap == timedelta(seconds=1) for gap in gaps), (
        f"a slot was lost: {slots}\n{second.text()}"
    )


def test_overlap_forbid_skips_while_the_run_is_alive(
    cronplus: Cronplus, daemons: Callable[..., Daemon]
) -> None:
    base_crontab(
        cronplus,
        '  slow:\n    schedule: "* * * * * *"\n    command: "sleep 2.2"\n    overlap: forbid\n',
    )
    daemon = daemons()
    daemon.wait_event("skipped_overlap", count=2)
    assert daemon.stop() == 0
    history = cronplus.json("history", "-n", "50")
    assert isinstance(history, list)
    outcomes = {row["outcome"] for row in history}
    assert "skipped_overlap" in outcomes


def test_a_second_daemon_on_the_same_state_exits_2(
    cronplus: Cronplus, daemons: Callable[..., Daemon]
) -> None:
    base_crontab(cronplus, every_second("tick", cronplus.dir / "fired.txt"))
    first = daemons()
    first.wait_event("started")
    second = subprocess.run(
        [str(installed.script()), "-c", str(cronplus.config), "daemon"],
        capture_output=True,
        text=True,
        env=cronplus.env,
        timeout=30,
    )
    assert second.returncode == 2
    assert f"(pid {first.proc.pid})" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.stop() == 0


def test_the_sample_crontab_is_valid(cronplus: Cronplus) -> None:
    sample = Path(__file__).parent.parent / "crontab.yaml"
    done = subprocess.run(
        [str(installed.script()), "-c", str(sample), "validate"],
        capture_output=True,
        text=True,
        env=cronplus.env,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK: ")
    assert os.path.exists(sample)


def test_the_start_says_when_the_soonest_jobs_run_next(
    cronplus: Cronplus, daemons: Callable[..., Daemon]
) -> None:
    shown = 10  # the daemon logs the ten soonest, then how many more
    yearly = "".join(
        f'  y{n:02}:\n    schedule: "0 0 1 1 *"\n    timezone: UTC\n    command: "true"\n'
        for n in range(11)
    )
    soon = '  soon:\n    schedule: "0 * * * * *"\n    timezone: America/New_York\n'
    base_crontab(cronplus, soon + '    command: "true"\n' + yearly)
    daemon = daemons()
    daemon.wait_event("started")
    daemon.wait_event("next_run", count=shown + 1)
    lines = [e for e in daemon.events() if e["event"] == "next_run"]
    assert daemon.stop() == 0

    first = lines[0]
    assert first["job"] == "soon"
    assert str(first["message"]).startswith("job soon runs next at ")
    assert str(first["message"]).endswith("(America/New_York)")
    assert str(first["next_run"]).endswith(":00Z")
    assert [line.get("job") for line in lines[1:shown]] == [f"y{n:02}" for n in range(shown - 1)]
    assert lines[shown]["message"] == "and 2 more jobs: cronplus list shows them all"
    assert len(lines) == shown + 1

"""A job with ``user:`` as a real second uid: its user looked up at each run, its folder
entered after the switch, and its start independent of what the user may read of the
interpreter. The suite runs as root here; elsewhere these tests skip (attacker.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

from attacker import Attacker, throwaway

from cronplus.config import loader
from cronplus.core.model import Job, Outcome, Slot
from cronplus.run.runner import ProcessResult, Runner, command_for


def job(folder: Path, body: str) -> Job:
    path = folder / "crontab.yaml"
    path.write_text(textwrap.dedent(body))
    return loader.load(path, env={"PATH": os.environ["PATH"], "HOME": "/root"}).jobs[0]


def run(one: Job) -> ProcessResult:
    async def scenario() -> ProcessResult:
        slot = Slot(job=one.name, scheduled_at=datetime.now(UTC).replace(microsecond=0))
        command = command_for(one, slot, 1, {"PATH": os.environ["PATH"]})
        return await asyncio.wait_for(Runner().start(command).wait(), 30)

    return asyncio.run(scenario())


def test_the_folder_is_entered_after_the_switch(attacker: Attacker, arena: Path) -> None:
    private = arena / "roots-only"
    private.mkdir(mode=0o700)
    reachable = attacker.owns(arena / "theirs")
    jobs = [
        job(arena, f"jobs:\n  a:\n    schedule: '@daily'\n    user: {attacker.name}\n"
                   f"    workdir: {folder}\n    command: pwd\n")
        for folder in (private, reachable)
    ]  # fmt: skip

    refused, entered = (run(one) for one in jobs)

    assert (refused.outcome, refused.reason) == (
        Outcome.FAILED,
        f"permission denied: workdir {private}",
    )
    assert entered.outcome is Outcome.SUCCEEDED, entered.reason
    assert entered.stdout.decode().strip() == str(reachable)


def test_the_users_groups_are_the_ones_it_has_at_the_run_not_at_the_load(
    attacker: Attacker, arena: Path
) -> None:
    group = "cronplus-test-late"
    subprocess.run(["groupadd", "--force", group], check=True)
    gid = int(subprocess.run(["getent", "group", group], capture_output=True, text=True,
                             check=True).stdout.split(":")[2])  # fmt: skip
    subprocess.run(["gpasswd", "--delete", attacker.name, group], capture_output=True)
    loaded = job(
        arena,
        f"jobs:\n  a:\n    schedule: '@daily'\n    user: {attacker.name}\n"
        "    workdir: /\n    command: id -G\n",
    )
    assert loaded.user is not None and gid not in loaded.user.groups
    subprocess.run(["gpasswd", "--add", attacker.name, group], capture_output=True, check=True)
    try:
        result = run(loaded)
    finally:
        subprocess.run(["gpasswd", "--delete", attacker.name, group], capture_output=True)

    assert result.outcome is Outcome.SUCCEEDED, result.reason
    assert gid in {int(g) for g in result.stdout.split()}


def test_a_user_gone_since_the_load_fails_the_attempt_saying_so(arena: Path) -> None:
    gone = throwaway("cronplus-test-gone")
    loaded = job(
        arena,
        f"jobs:\n  a:\n    schedule: '@daily'\n    user: {gone.name}\n"
        "    workdir: /\n    command: 'true'\n",
    )
    subprocess.run(["userdel", gone.name], check=True)

    result = run(loaded)

    assert (result.outcome, result.reason) == (
        Outcome.FAILED,
        f"cannot start /bin/sh: user '{gone.name}' is no longer in the user database",
    )


def test_a_user_job_with_limits_starts_though_the_user_cannot_read_the_interpreter(
    attacker: Attacker, arena: Path
) -> None:
    interpreter = os.path.realpath(sys.executable)
    readable = attacker.run(["test", "-r", interpreter]).returncode == 0
    loaded = job(
        arena,
        f"jobs:\n  a:\n    schedule: '@daily'\n    user: {attacker.name}\n"
        "    workdir: /\n    limits: {open_files: 64}\n    command: ['id', '-u']\n",
    )

    result = run(loaded)

    assert not readable, f"{interpreter} should be unreadable by {attacker.name} for this test"
    assert result.outcome is Outcome.SUCCEEDED, (result.reason, result.stderr)
    assert result.stdout.decode().strip() == str(attacker.uid)

"""Privilege: jobs run as another user, and what a root daemon refuses to trust.

The suite runs as root here, so the jobs really switch to ``nobody``; the rules for a
daemon that is not root are checked through the functions that take the daemon's uid.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import stat
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import Cronplus

from cronplus.config import loader
from cronplus.core.model import Account, ConfigError, Job, Limits, Outcome, Slot
from cronplus.host import accounts, permissions
from cronplus.run import limits
from cronplus.run.runner import ProcessResult, Runner, command_for, job_environment
from cronplus.state.sqlite import SqliteStore

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="switching users needs a daemon run as root")
SLOT = Slot(job="who", scheduled_at=datetime(2026, 3, 8, 7, 0, tzinfo=UTC))
NOBODY = pwd.getpwnam("nobody")
NOBODY_GROUPS = sorted(os.getgrouplist("nobody", NOBODY.pw_gid))


def load(tmp_path: Path, text: str, **env: str) -> Any:
    path = tmp_path / "crontab.yaml"
    path.write_text(textwrap.dedent(text))
    return loader.load(path, env={"HOME": str(tmp_path), **env})


def run_job(job: Job) -> ProcessResult:
    async def scenario() -> ProcessResult:
        command = command_for(job, SLOT, 1, {"PATH": os.environ["PATH"], "HOME": "/root"})
        return await asyncio.wait_for(Runner(drain_grace=0.2).start(command).wait(), 30)

    return asyncio.run(scenario())


# --- the account ------------------------------------------------------------------------------


def test_a_user_is_refused_when_the_daemon_is_not_root() -> None:
    with pytest.raises(
        ValueError, match="needs the daemon to run as root, and it runs as uid 1000"
    ):
        accounts.lookup_user("nobody", euid=1000)


@pytest.mark.parametrize(
    ("lookup", "message"),
    [
        (lambda: accounts.lookup_user("no-such-user-cronplus", euid=0), "unknown user"),
        (lambda: accounts.lookup_group("no-such-group-cronplus"), "unknown group"),
        (lambda: accounts.lookup_user(5, euid=0), "expected a user name, got the integer 5"),
        (lambda: accounts.lookup_group(""), "expected a group name, got an empty string"),
    ],
    ids=["unknown-user", "unknown-group", "not-a-name", "empty-group"],
)
def test_a_user_or_group_that_does_not_exist_is_named(lookup: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lookup()


def test_a_user_comes_with_its_own_groups_home_and_primary_group() -> None:
    account = accounts.lookup_user("nobody", euid=0)

    assert account == Account(
        name="nobody",
        uid=NOBODY.pw_uid,
        gid=NOBODY.pw_gid,
        groups=tuple(os.getgrouplist("nobody", NOBODY.pw_gid)),
        home=NOBODY.pw_dir,
        shell=NOBODY.pw_shell,
    )
    assert 0 not in account.groups or NOBODY.pw_gid == 0


def test_group_replaces_the_primary_group_and_keeps_the_users_own_supplementary_ones() -> None:
    account = accounts.lookup_user("nobody", euid=0)
    other = grp.getgrgid(0)

    user, group = accounts.job_user(account, accounts.Group(other.gr_name, other.gr_gid))

    assert user is not None and (user.gid, user.groups, group) == (0, account.groups, other.gr_name)


def test_the_job_gets_the_users_home_user_and_logname_and_its_own_env_wins() -> None:
    account = accounts.lookup_user("nobody", euid=0)
    job = Job(
        name="who",
        schedule="@daily",
        timezone=ZoneInfo("UTC"),
        command="true",
        user=account,
        env={"LOGNAME": "custom"},
    )

    env = job_environment({"HOME": "/root", "USER": "root", "LOGNAME": "root"}, job, SLOT, 1)

    assert (env["HOME"], env["USER"], env["LOGNAME"]) == (NOBODY.pw_dir, "nobody", "custom")


# --- a job run as nobody ------------------------------------------------------------------


@needs_root
@pytest.mark.parametrize(
    "limits_text",
    ["", "limits: {open_files: 64}"],
    ids=["switched-by-popen", "switched-by-the-limits-wrapper"],
)
def test_a_job_run_as_nobody_sees_its_uid_groups_and_home(tmp_path: Path, limits_text: str) -> None:
    crontab = load(
        tmp_path,
        f"""\
        jobs:
          who:
            schedule: "@daily"
            user: nobody
            workdir: /  # the test's folder is root's alone, and nobody enters it as nobody
            {limits_text}
            command: 'id -u; id -g; id -G; echo "$HOME $USER $LOGNAME"'
        """,
    )

    result = run_job(crontab.job("who"))

    uid, gid, groups, names = result.stdout.decode().splitlines()
    assert result.outcome is Outcome.SUCCEEDED, result.stderr
    assert (int(uid), int(gid)) == (NOBODY.pw_uid, NOBODY.pw_gid)
    assert sorted(int(g) for g in groups.split()) == NOBODY_GROUPS
    assert names == f"{NOBODY.pw_dir} nobody nobody"


@needs_root
def test_a_job_run_as_nobody_with_a_group_gets_that_primary_group(tmp_path: Path) -> None:
    group = grp.getgrgid(1)  # "daemon" on Debian; any group nobody is not in will do
    crontab = load(
        tmp_path,
        f"""\
        jobs:
          who:
            schedule: "@daily"
            user: nobody
            workdir: /
            group: {group.gr_name}
            command: 'id -g; id -G'
        """,
    )

    result = run_job(crontab.job("who"))

    gid, groups = result.stdout.decode().splitlines()
    assert int(gid) == group.gr_gid
    assert sorted(int(g) for g in groups.split()) == sorted({group.gr_gid, *NOBODY_GROUPS})


@needs_root
@pytest.mark.parametrize(
    ("job_text", "place", "message"),
    [
        ("user: no-such-user-cronplus", "jobs.a.user", "unknown user 'no-such-user-cronplus'"),
        (
            "user: nobody\n    group: no-such-group-cronplus",
            "jobs.a.group",
            "unknown group 'no-such-group-cronplus'",
        ),
        ("group: nogroup", "jobs.a.group", "group: needs user:"),
        (
            "limits: {processes: 5}",
            "jobs.a.limits.processes",
            "not enforced for a job that runs as root",
        ),
        ("limits: {cpu_quota: 50%}", "jobs.a.limits.cpu_quota", "cpu_quota needs cgroup: true"),
    ],
    ids=["unknown-user", "unknown-group", "group-without-user", "processes-as-root", "quota"],
)
def test_a_bad_user_group_or_limit_is_an_error_at_its_place(
    tmp_path: Path, job_text: str, place: str, message: str
) -> None:
    text = f'jobs:\n  a:\n    schedule: "@daily"\n    command: "true"\n    {job_text}\n'

    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)

    (issue,) = caught.value.issues
    line = 5 + job_text.count("\n")  # the last line of job_text holds the bad key
    assert (issue.file, issue.line, issue.path) == (str(tmp_path / "crontab.yaml"), line, place)
    assert message in issue.message


@pytest.mark.parametrize(
    ("defaults", "job", "euid", "env", "expected"),
    [
        ({}, {"limits": {"processes": 5}}, 1000, {}, []),
        ({}, {"limits": {"processes": 5}, "user": "nobody"}, 0, {}, []),
        (
            {"limits": {"processes": 5}},
            {},
            0,
            {},
            [(("defaults", "limits", "processes"), "processes is not enforced")],
        ),
        (
            {},
            {"limits": {"processes": 5}, "user": "root"},
            0,
            {},
            [(("jobs", "j", "limits", "processes"), "processes is")],
        ),
        (
            {"limits": {"cgroup": True}},
            {},
            0,
            {"PATH": "/nowhere"},
            [(("defaults", "limits", "cgroup"), "cgroup: true needs systemd-run")],
        ),
    ],
    ids=[
        "not-root-counts-the-user",
        "as-nobody",
        "in-defaults",
        "as-root-by-name",
        "no-systemd-run",
    ],
)
def test_cross_rules_are_placed_where_the_key_is_written(
    defaults: dict[str, Any],
    job: dict[str, Any],
    euid: int,
    env: dict[str, str],
    expected: list[tuple[tuple[str, ...], str]],
) -> None:
    found = limits.cross_problems("j", defaults, job, euid=euid, env=env)

    assert [loc for loc, _ in found] == [loc for loc, _ in expected]
    assert all(
        message.startswith(start) for (_, message), (_, start) in zip(found, expected, strict=True)
    )


def test_a_memory_limit_macos_would_not_enforce_is_refused_there() -> None:
    job = {"limits": {"memory": "64M"}}

    on_macos = limits.cross_problems("j", {}, job, euid=501, env={}, platform="darwin")
    on_linux = limits.cross_problems("j", {}, job, euid=1000, env={}, platform="linux")

    assert on_macos == [
        (
            ("jobs", "j", "limits", "memory"),
            "memory cannot be enforced on macOS, which ignores RLIMIT_DATA",
        )
    ]
    assert on_linux == []


def test_cgroup_without_systemd_as_the_service_manager_is_said_at_validate_time(
    tmp_path: Path,
) -> None:
    if limits.systemd_problem(euid=os.geteuid(), env=os.environ) is None:
        pytest.skip("systemd runs this host: cgroup: true is valid here")
    text = 'jobs:\n  a:\n    schedule: "@daily"\n    command: "true"\n    limits: {cgroup: true}\n'

    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, PATH=os.environ["PATH"])

    (issue,) = caught.value.issues
    assert issue.path == "jobs.a.limits.cgroup" and issue.message.startswith("cgroup: true needs")


# --- files a root daemon refuses ----------------------------------------------------------


def _file(tmp_path: Path, mode: int, owner: int = 0) -> Path:
    path = tmp_path / "crontab.yaml"
    path.write_text('jobs:\n  a:\n    schedule: "@daily"\n    command: "true"\n')
    path.chmod(mode)
    os.chown(path, owner, -1)
    return path


@needs_root
@pytest.mark.parametrize(
    ("mode", "owner", "reason"),
    [
        (0o644, 0, None),
        (0o600, 0, None),
        (0o664, 0, "is writable by its group (mode 0664); fix: chmod go-w {target}"),
        (0o646, 0, "is writable by others (mode 0646); fix: chmod go-w {target}"),
        (0o666, 0, "is writable by its group and others (mode 0666); fix: chmod go-w {target}"),
        (
            0o644,
            NOBODY.pw_uid,
            "is owned by nobody (uid 65534), not root; fix: chown root {target}",
        ),
    ],
    ids=["0644", "0600", "group-writable", "world-writable", "both", "owned-by-nobody"],
)
@pytest.mark.parametrize("via_symlink", [False, True], ids=["file", "symlink"])
def test_a_root_daemon_refuses_a_crontab_others_could_write(
    tmp_path: Path, mode: int, owner: int, reason: str | None, via_symlink: bool
) -> None:
    target = _file(tmp_path, mode, owner)
    path = target
    if via_symlink:
        path = tmp_path / "link.yaml"
        path.symlink_to(target)

    if reason is None:
        assert loader.load(path, env={"HOME": str(tmp_path)}).jobs
        return
    with pytest.raises(ConfigError) as caught:
        loader.load(path, env={"HOME": str(tmp_path)})

    (issue,) = caught.value.issues
    named = f"{path} (a symlink to {target})" if via_symlink else str(path)
    assert (issue.file, issue.line, issue.column) == (str(path), 1, 1)
    assert issue.message == f"refusing to load as root: {named} {reason.format(target=target)}"


def test_a_daemon_that_is_not_root_trusts_its_own_files(tmp_path: Path) -> None:
    path = _file(tmp_path, 0o666)

    assert permissions.read(path, euid=1000, cap=permissions.CRONTAB) == path.read_bytes()


@needs_root
def test_validate_says_the_refusal_and_its_fix_and_exits_2(cronplus: Cronplus) -> None:
    cronplus.write('jobs:\n  a:\n    schedule: "@daily"\n    command: "true"\n')
    cronplus.config.chmod(0o666)

    done = cronplus.run("validate")

    assert done.returncode == 2
    assert done.stderr == (
        f"{cronplus.config}:1:1: refusing to load as root: {cronplus.config} is writable by its"
        f" group and others (mode 0666); fix: chmod go-w {cronplus.config}\n"
    )


@needs_root
def test_a_root_daemon_refuses_an_env_file_others_could_write(tmp_path: Path) -> None:
    (tmp_path / "vars.env").write_text("LD_PRELOAD=/tmp/evil.so\n")
    (tmp_path / "vars.env").chmod(0o646)
    text = 'jobs:\n  a:\n    schedule: "@daily"\n    command: "true"\n    env_file: vars.env\n'

    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)

    (issue,) = caught.value.issues
    assert issue.path == "jobs.a.env_file"
    assert issue.message.startswith("refusing to read variables as root: ")
    assert issue.message.endswith(
        f"writable by others (mode 0646); fix: chmod go-w {tmp_path / 'vars.env'}"
    )


def test_the_state_folder_and_database_are_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "state.db"

    store = SqliteStore.open(path)
    try:
        store.advance_ledger([("a", SLOT.scheduled_at)])
        files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
    finally:
        store.close()

    folders = [stat.S_IMODE(p.stat().st_mode) for p in (path.parent, path.parent.parent)]
    assert folders == [0o700, 0o700]
    assert "state.db" in files and set(files.values()) == {0o600}, files


def test_a_job_without_user_keeps_no_limits_by_default(tmp_path: Path) -> None:
    crontab = load(tmp_path, 'jobs:\n  a:\n    schedule: "@daily"\n    command: "true"\n')

    assert (crontab.job("a").user, crontab.job("a").limits) == (None, Limits())

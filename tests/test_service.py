"""Service files: rendered paths, escaping, the shipped samples, and the installer.

Units are parsed with configparser and, where ``systemd-analyze`` exists, verified by
systemd itself (it resolves %h and checks that ExecStart's program exists).
"""

from __future__ import annotations

import configparser
import os
import plistlib
import re
import shlex
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import installed
import pytest
from conftest import Cronplus

from cronplus.core.model import CronplusError, Settings, UsageError
from cronplus.daemon.service import (
    KINDS,
    ServiceKind,
    choose_kind,
    install,
    locate_executable,
    next_commands,
    render,
    render_sample,
)

ROOT = Path(__file__).resolve().parent.parent
GRACE = Settings(state=Path("state.db")).shutdown_grace
"""The default ``shutdown_grace``, as a crontab that sets none gets it."""
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze exists only where systemd does"
)


def _unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string(text)
    return parser


def _exec_start(text: str) -> list[str]:
    """ExecStart's argv as systemd reads it: %% first, then quotes and escapes, then $$."""
    line = _unit(text)["Service"]["ExecStart"].replace("%%", "%")
    return [word.replace("$$", "$") for word in shlex.split(line)]


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("kind", "destination"),
    [
        ("system", "/etc/systemd/system/cronplus.service"),
        ("user", "{home}/.config/systemd/user/cronplus.service"),
        ("launchd", "{home}/Library/LaunchAgents/io.cronplus.daemon.plist"),
    ],
    ids=["system", "user", "launchd"],
)
def test_each_kind_renders_to_its_documented_destination(
    kind: ServiceKind, destination: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"

    path, _ = render(
        kind,
        executable=Path("/opt/cp/bin/cronplus"),
        config=Path("/c.yaml"),
        home=home,
        shutdown_grace=GRACE,
    )

    assert path == Path(destination.format(home=home))


def test_the_launch_agent_runs_the_daemon_with_absolute_paths_and_keeps_it_alive(
    tmp_path: Path,
) -> None:
    home = tmp_path / "Users" / "ana"
    executable = tmp_path / "venv" / "bin" / "cronplus"
    config = home / "crontab.yaml"

    _, text = render(
        "launchd", executable=executable, config=config, home=home, shutdown_grace=GRACE
    )
    agent = plistlib.loads(text.encode())

    assert agent["Label"] == "io.cronplus.daemon"
    assert agent["ProgramArguments"] == [str(executable), "-c", str(config), "daemon"]
    assert agent["RunAtLoad"] is True
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["ProcessType"] == "Background"
    assert agent["StandardErrorPath"] == str(home / "Library" / "Logs" / "cronplus.log")
    assert agent["ExitTimeOut"] > GRACE.total_seconds()
    assert all(
        Path(p).is_absolute() for p in (agent["ProgramArguments"][0], agent["ProgramArguments"][2])
    )


@pytest.mark.parametrize(
    "odd",
    ["A & B <x> \"q\" 's'", "two--hyphens", "caf\u00e9 \u2615", "$HOME %h ~"],
    ids=["xml-specials", "double-hyphen", "non-ascii", "shell-and-specifier-lookalikes"],
)
def test_the_launch_agent_carries_any_path_verbatim(odd: str, tmp_path: Path) -> None:
    home = tmp_path / odd
    executable = home / "bin" / "cronplus"
    config = home / "crontab.yaml"

    _, text = render(
        "launchd", executable=executable, config=config, home=home, shutdown_grace=GRACE
    )
    agent = plistlib.loads(text.encode())

    assert agent["ProgramArguments"] == [str(executable), "-c", str(config), "daemon"]
    assert agent["StandardOutPath"] == str(home / "Library" / "Logs" / "cronplus.log")


@pytest.mark.parametrize("kind", ["system", "user"], ids=["system", "user"])
def test_both_units_run_the_daemon_as_a_notify_service_that_stops_its_jobs_itself(
    kind: ServiceKind, tmp_path: Path
) -> None:
    executable = tmp_path / "bin" / "cronplus"
    config = tmp_path / "etc" / "crontab.yaml"

    _, text = render(
        kind, executable=executable, config=config, home=tmp_path / "home", shutdown_grace=GRACE
    )
    service = _unit(text)["Service"]

    assert _exec_start(text) == [str(executable), "-c", str(config), "daemon"]
    assert service["Type"] == "notify"
    # No /bin/kill (procps may be missing); the reload command waits and reports rejection.
    reload = shlex.split(service["ExecReload"].replace("%%", "%"))
    assert [word.replace("$$", "$") for word in reload] == [
        str(executable),
        "-c",
        str(config),
        "reload",
    ]
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"
    assert service["KillMode"] == "mixed"
    assert service["WatchdogSec"] == "60"
    assert float(service["TimeoutStopSec"].removesuffix("s")) > GRACE.total_seconds()


def _stop_timeout_s(kind: ServiceKind, text: str) -> int:
    """The seconds the service manager waits for a stop before SIGKILL, as the file says."""
    if kind == "launchd":
        timeout = plistlib.loads(text.encode())["ExitTimeOut"]
        assert isinstance(timeout, int)
        return timeout
    line = _unit(text)["Service"]["TimeoutStopSec"]
    assert line.endswith("s") and line[:-1].isdigit(), line
    return int(line[:-1])


@pytest.mark.parametrize("kind", KINDS, ids=KINDS)
@pytest.mark.parametrize(
    ("shutdown_grace", "timeout_s"),
    [
        (timedelta(seconds=30), 60),
        (timedelta(seconds=2), 32),
        (timedelta(milliseconds=1500), 32),
        (timedelta(minutes=10), 630),
        (timedelta(0), 30),
    ],
    ids=["default-30s", "2s", "fraction-rounds-up", "10m", "zero"],
)
def test_the_stop_timeout_is_shutdown_grace_plus_30_seconds(
    kind: ServiceKind, shutdown_grace: timedelta, timeout_s: int, tmp_path: Path
) -> None:
    _, text = render(
        kind,
        executable=Path("/b/cronplus"),
        config=Path("/c.yaml"),
        home=tmp_path,
        shutdown_grace=shutdown_grace,
    )

    assert _stop_timeout_s(kind, text) == timeout_s


SYSTEM_ONLY = {
    "StateDirectory": "cronplus",
    "StateDirectoryMode": "0700",
    "Environment": None,  # root's default state is /var/lib/cronplus without it
    "NoNewPrivileges": "no",
    "PrivateTmp": "no",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictRealtime": "yes",
    "LockPersonality": "yes",
}


def test_the_system_unit_keeps_state_in_var_lib_with_hardening_that_jobs_survive(
    tmp_path: Path,
) -> None:
    _, text = render(
        "system",
        executable=Path("/b/cronplus"),
        config=Path("/c.yaml"),
        home=tmp_path,
        shutdown_grace=GRACE,
    )
    unit = _unit(text)

    assert {key: unit["Service"].get(key) for key in SYSTEM_ONLY} == SYSTEM_ONLY
    # These would break ordinary cron jobs that write files or use the host's /tmp.
    assert not {"ProtectSystem", "ProtectHome", "ReadOnlyPaths"} & set(unit["Service"])
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_user_unit_has_no_system_only_settings_and_starts_with_the_user_manager(
    tmp_path: Path,
) -> None:
    _, text = render(
        "user",
        executable=Path("/b/cronplus"),
        config=Path("/c.yaml"),
        home=tmp_path,
        shutdown_grace=GRACE,
    )
    unit = _unit(text)

    assert not set(SYSTEM_ONLY) & set(unit["Service"])
    assert unit["Install"]["WantedBy"] == "default.target"


@pytest.mark.parametrize(
    ("executable", "config", "exec_start"),
    [
        (
            ".local/bin/cronplus",
            ".config/cronplus/crontab.yaml",
            "%h/.local/bin/cronplus -c %h/.config/cronplus/crontab.yaml daemon",
        ),
        (
            "/opt/cronplus/bin/cronplus",
            "crontab.yaml",
            "/opt/cronplus/bin/cronplus -c %h/crontab.yaml daemon",
        ),
        (
            "bin/cron%plus",
            "my jobs/100% $HOME.yaml",
            '%h/bin/cron%%plus -c "%h/my jobs/100%% $$HOME.yaml" daemon',
        ),
    ],
    ids=["both-in-home", "program-outside-home", "escaped-inside-home"],
)
def test_the_user_unit_writes_paths_inside_home_below_the_h_specifier(
    executable: str, config: str, exec_start: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"

    _, text = render(
        "user", executable=home / executable, config=home / config, home=home, shutdown_grace=GRACE
    )

    assert _unit(text)["Service"]["ExecStart"] == exec_start


@pytest.mark.parametrize(
    ("folder", "config_name"),
    [
        ("plain", "crontab.yaml"),
        ("with space", "my crontab.yaml"),
        ("per%cent", "100%.yaml"),
        ("dol$lar", "$HOME ${USER}.yaml"),
        ("semi;colon", ";"),
        ("plain", "quote\"d 'and' back\\slash.yaml"),
    ],
    ids=["plain", "space", "percent", "dollar", "semicolon", "quotes-and-backslash-in-config"],
)
def test_unit_paths_survive_systemd_quoting_and_substitution(
    folder: str, config_name: str, tmp_path: Path
) -> None:
    executable = tmp_path / folder / "cronplus"
    config = tmp_path / folder / config_name

    _, text = render(
        "system", executable=executable, config=config, home=tmp_path, shutdown_grace=GRACE
    )

    assert _exec_start(text) == [str(executable), "-c", str(config), "daemon"]


@needs_systemd_analyze
@pytest.mark.parametrize(
    "folder",
    ["plain", "with space", "per%cent", "dol$lar"],
    ids=["plain", "space", "percent", "dollar"],
)
def test_systemd_accepts_the_system_unit_and_finds_its_program(folder: str, tmp_path: Path) -> None:
    executable = _executable(tmp_path / folder / "cronplus")
    _, text = render(
        "system",
        executable=executable,
        config=tmp_path / "c.yaml",
        home=tmp_path,
        shutdown_grace=GRACE,
    )
    unit = tmp_path / "cronplus.service"
    unit.write_text(text, encoding="utf-8")

    verified = subprocess.run(
        [str(SYSTEMD_ANALYZE), "verify", str(unit)], capture_output=True, text=True
    )

    assert (verified.returncode, verified.stderr) == (0, "")


def _verify_user_unit(tmp_path: Path, *, manager_home: Path) -> subprocess.CompletedProcess[str]:
    """Render the user unit for ``tmp_path/home``; verify it under a manager whose %h is another."""
    home = tmp_path / "home"
    executable = _executable(home / ".local" / "bin" / "cronplus")
    _, text = render(
        "user", executable=executable, config=home / "c.yaml", home=home, shutdown_grace=GRACE
    )
    unit = tmp_path / "cronplus.service"
    unit.write_text(text, encoding="utf-8")
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "HOME": str(manager_home), "XDG_RUNTIME_DIR": str(runtime)}
    return subprocess.run(
        [str(SYSTEMD_ANALYZE), "--user", "verify", str(unit)],
        capture_output=True,
        text=True,
        env=env,
    )


@needs_systemd_analyze
def test_systemd_accepts_the_user_unit_and_finds_its_program_through_h(tmp_path: Path) -> None:
    verified = _verify_user_unit(tmp_path, manager_home=tmp_path / "home")

    assert (verified.returncode, verified.stderr) == (0, "")


@needs_systemd_analyze
def test_the_user_units_program_moves_with_the_managers_home(tmp_path: Path) -> None:
    verified = _verify_user_unit(tmp_path, manager_home=tmp_path / "elsewhere")

    assert verified.returncode != 0
    assert f"{tmp_path}/elsewhere/.local/bin/cronplus is not executable" in verified.stderr


def test_relative_paths_become_absolute_and_symlinks_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dotfiles").mkdir()
    (tmp_path / "dotfiles" / "crontab.yaml").write_text("jobs: {}\n", encoding="utf-8")
    (tmp_path / "crontab.yaml").symlink_to(tmp_path / "dotfiles" / "crontab.yaml")
    monkeypatch.chdir(tmp_path / "dotfiles")

    _, text = render(
        "system",
        executable=Path("../bin/cronplus"),
        config=Path("../crontab.yaml"),
        home=tmp_path,
        shutdown_grace=GRACE,
    )

    assert _exec_start(text) == [
        str(tmp_path / "bin" / "cronplus"),
        "-c",
        str(tmp_path / "crontab.yaml"),
        "daemon",
    ]


@pytest.mark.parametrize(
    ("kind", "executable", "config", "message"),
    [
        (
            "system",
            '/opt/"x"/cronplus',
            "/c.yaml",
            "executable path '/opt/\"x\"/cronplus': "
            "systemd does not accept quotes or backslashes in the program it starts",
        ),
        (
            "user",
            "/opt/x\\y/cronplus",
            "/c.yaml",
            "executable path '/opt/x\\\\y/cronplus': "
            "systemd does not accept quotes or backslashes in the program it starts",
        ),
        (
            "system",
            "/b/cronplus",
            "/etc/cron\nplus.yaml",
            "config path '/etc/cron\\nplus.yaml': contains a control character",
        ),
        (
            "launchd",
            "/b/cron\x07plus",
            "/c.yaml",
            "executable path '/b/cron\\x07plus': contains a control character",
        ),
        (
            "windows",
            "/b/cronplus",
            "/c.yaml",
            "service kind 'windows': expected one of user, system, launchd",
        ),
    ],
    ids=[
        "quote-in-program",
        "backslash-in-program",
        "newline-in-config",
        "bell-in-program",
        "unknown-kind",
    ],
)
def test_paths_a_service_file_cannot_carry_are_refused_with_a_clear_error(
    kind: ServiceKind, executable: str, config: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(UsageError) as raised:
        render(
            kind,
            executable=Path(executable),
            config=Path(config),
            home=tmp_path,
            shutdown_grace=GRACE,
        )

    assert str(raised.value).startswith(message)


@pytest.mark.parametrize(
    ("kind", "shipped"),
    [
        ("system", "systemd/cronplus.service"),
        ("user", "systemd/cronplus-user.service"),
        ("launchd", "launchd/io.cronplus.daemon.plist"),
    ],
    ids=["system", "user", "launchd"],
)
def test_the_shipped_files_are_the_templates_rendered_with_the_sample_paths(
    kind: ServiceKind, shipped: str
) -> None:
    text = (ROOT / shipped).read_text(encoding="utf-8")

    assert text == render_sample(kind), (
        f"{shipped} differs from render_sample({kind!r}); regenerate it as docs/service.md says"
    )
    assert not re.search(r"@[A-Z_]+@", text)


def test_the_shipped_system_unit_runs_the_documented_command() -> None:
    text = (ROOT / "systemd" / "cronplus.service").read_text(encoding="utf-8")

    assert _exec_start(text) == [
        "/usr/local/bin/cronplus",
        "-c",
        "/etc/cronplus/crontab.yaml",
        "daemon",
    ]


@pytest.mark.parametrize("kind", KINDS, ids=KINDS)
def test_install_writes_the_rendered_file_below_dest_root_and_replaces_it_whole(
    kind: ServiceKind, tmp_path: Path
) -> None:
    root, home = tmp_path / "root", tmp_path / "home"
    first = install(
        kind,
        executable=Path("/b/cronplus"),
        config=Path("/a.yaml"),
        home=home,
        shutdown_grace=GRACE,
        dest_root=root,
    )
    path = install(
        kind,
        executable=Path("/b/cronplus"),
        config=Path("/b.yaml"),
        home=home,
        shutdown_grace=GRACE,
        dest_root=root,
    )

    destination, text = render(
        kind,
        executable=Path("/b/cronplus"),
        config=Path("/b.yaml"),
        home=home,
        shutdown_grace=GRACE,
    )
    assert path == first == root / destination.relative_to("/")
    assert path.read_text(encoding="utf-8") == text
    assert path.stat().st_mode & 0o777 == 0o644
    assert os.listdir(path.parent) == [path.name]


def test_install_names_the_file_it_could_not_write(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.write_text("a file where a folder should be\n", encoding="utf-8")

    with pytest.raises(CronplusError) as raised:
        install(
            "user",
            executable=Path("/b/cronplus"),
            config=Path("/c.yaml"),
            home=Path("/home/ana"),
            shutdown_grace=GRACE,
            dest_root=root,
        )

    target = root / "home" / "ana" / ".config" / "systemd" / "user" / "cronplus.service"
    assert str(raised.value).startswith(f"cannot write the user service file {target}: ")


@pytest.mark.parametrize(
    ("kind", "commands"),
    [
        ("user", ("systemctl --user daemon-reload", "systemctl --user enable --now cronplus")),
        ("system", ("systemctl daemon-reload", "systemctl enable --now cronplus")),
        (
            "launchd",
            (
                "launchctl bootout gui/$(id -u)/io.cronplus.daemon 2>/dev/null || true",
                "launchctl bootstrap gui/$(id -u) "
                "'/Users/ana b/Library/LaunchAgents/io.cronplus.daemon.plist'",
            ),
        ),
    ],
    ids=["user", "system", "launchd"],
)
def test_next_commands_load_and_start_what_install_wrote(
    kind: ServiceKind, commands: tuple[str, ...]
) -> None:
    path, _ = render(
        kind,
        executable=Path("/b/cronplus"),
        config=Path("/c.yaml"),
        home=Path("/Users/ana b"),
        shutdown_grace=GRACE,
    )

    assert next_commands(kind, path) == commands


@pytest.mark.parametrize(
    ("asked", "platform", "kind"),
    [
        ([], "linux", "user"),
        ([], "darwin", "launchd"),
        ([], "freebsd14", "user"),
        (["system"], "darwin", "system"),
        (["user"], "darwin", "user"),
        (["launchd"], "linux", "launchd"),
        (["system", "system"], "linux", "system"),
    ],
    ids=[
        "linux-default",
        "macos-default",
        "other-default",
        "system-on-macos",
        "user-on-macos",
        "launchd-on-linux",
        "repeated-flag",
    ],
)
def test_the_kind_is_the_flag_given_else_the_platforms_default(
    asked: list[ServiceKind], platform: str, kind: ServiceKind
) -> None:
    assert choose_kind(asked, platform=platform) == kind


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        (["system", "launchd"], "service install: --system and --launchd conflict; "),
        (["user", "system"], "service install: --user and --system conflict; "),
        (
            ["user", "system", "launchd"],
            "service install: --user, --system and --launchd conflict; ",
        ),
    ],
    ids=["system-launchd", "user-system", "all-three"],
)
def test_two_kinds_at_once_are_a_usage_error_naming_both_flags(
    asked: list[ServiceKind], message: str
) -> None:
    with pytest.raises(UsageError) as raised:
        choose_kind(asked, platform="darwin")

    assert str(raised.value) == (
        f"{message}expected one of --user, --system, --launchd (default here: --launchd)"
    )


def test_locate_executable_finds_the_cronplus_command_of_this_installation() -> None:
    found = locate_executable()

    assert found.is_absolute()
    assert found.name == "cronplus"
    assert found.is_file()
    assert os.access(found, os.X_OK)


# --- `cronplus service install`, the installed program ------------------------------------

BACKUP = """\
settings:
  shutdown_grace: 2m
jobs:
  backup:
    schedule: "0 3 * * *"
    command: ["true"]
"""


def _home(cronplus: Cronplus) -> Path:
    home = cronplus.dir / "home"
    home.mkdir()
    cronplus.env["HOME"] = str(home)
    return home


@pytest.mark.parametrize("flag", ["--dry-run", "--print"], ids=["dry-run", "print"])
@pytest.mark.parametrize("kind", KINDS, ids=KINDS)
def test_a_preview_prints_the_file_where_it_goes_and_what_to_run_and_writes_nothing(
    flag: str, kind: ServiceKind, cronplus: Cronplus
) -> None:
    cronplus.write(BACKUP)
    home = _home(cronplus)

    done = cronplus.run("service", "install", f"--{kind}", flag)

    destination, text = render(
        kind,
        executable=installed.script(),
        config=cronplus.config,
        home=home,
        shutdown_grace=timedelta(minutes=2),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == text
    assert done.stderr == "".join(
        [f"would write {destination}, then run:\n"]
        + [f"  {command}\n" for command in next_commands(kind, destination)]
    )
    assert _stop_timeout_s(kind, done.stdout) == 150
    assert list(home.iterdir()) == []


def test_install_writes_the_stop_timeout_of_the_crontabs_shutdown_grace(
    cronplus: Cronplus,
) -> None:
    cronplus.write(BACKUP)
    home = _home(cronplus)

    done = cronplus.run("service", "install", "--launchd")

    plist = home / "Library" / "LaunchAgents" / "io.cronplus.daemon.plist"
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {plist}\n  launchctl bootout ")
    assert _stop_timeout_s("launchd", plist.read_text(encoding="utf-8")) == 150


def test_without_a_flag_linux_gets_the_systemd_user_unit(cronplus: Cronplus) -> None:
    cronplus.write(BACKUP)
    home = _home(cronplus)

    done = cronplus.run("service", "install", "--dry-run")

    unit = home / ".config" / "systemd" / "user" / "cronplus.service"
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(f"would write {unit}, then run:\n")


@pytest.mark.parametrize(
    "flags",
    [("--system", "--launchd"), ("--launchd", "--user", "--print")],
    ids=["system-launchd", "launchd-user-print"],
)
def test_conflicting_kinds_exit_2_naming_both_flags_before_reading_the_crontab(
    flags: tuple[str, ...], cronplus: Cronplus
) -> None:
    home = _home(cronplus)  # no crontab written: the flags are refused first

    done = cronplus.run("service", "install", *flags)

    named = [flag for flag in flags if flag != "--print"]
    assert done.returncode == 2
    assert done.stderr.startswith("service install: --")
    assert all(flag in done.stderr.splitlines()[0] for flag in named)
    assert "Traceback" not in done.stderr
    assert list(home.iterdir()) == []

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
from pathlib import Path

import pytest

from cronplus.core.model import CronplusError, Settings, UsageError
from cronplus.daemon.service import (
    KINDS,
    ServiceKind,
    install,
    locate_executable,
    next_commands,
    render,
    render_sample,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SHUTDOWN_GRACE_S = Settings(state=Path("state.db")).shutdown_grace.total_seconds()
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
        kind, executable=Path("/opt/cp/bin/cronplus"), config=Path("/c.yaml"), home=home
    )

    assert path == Path(destination.format(home=home))


def test_the_launch_agent_runs_the_daemon_with_absolute_paths_and_keeps_it_alive(
    tmp_path: Path,
) -> None:
    home = tmp_path / "Users" / "ana"
    executable = tmp_path / "venv" / "bin" / "cronplus"
    config = home / "crontab.yaml"

    _, text = render("launchd", executable=executable, config=config, home=home)
    agent = plistlib.loads(text.encode())

    assert agent["Label"] == "io.cronplus.daemon"
    assert agent["ProgramArguments"] == [str(executable), "-c", str(config), "daemon"]
    assert agent["RunAtLoad"] is True
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["ProcessType"] == "Background"
    assert agent["StandardErrorPath"] == str(home / "Library" / "Logs" / "cronplus.log")
    assert agent["ExitTimeOut"] > DEFAULT_SHUTDOWN_GRACE_S
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

    _, text = render("launchd", executable=executable, config=config, home=home)
    agent = plistlib.loads(text.encode())

    assert agent["ProgramArguments"] == [str(executable), "-c", str(config), "daemon"]
    assert agent["StandardOutPath"] == str(home / "Library" / "Logs" / "cronplus.log")


@pytest.mark.parametrize("kind", ["system", "user"], ids=["system", "user"])
def test_both_units_run_the_daemon_as_a_notify_service_that_stops_its_jobs_itself(
    kind: ServiceKind, tmp_path: Path
) -> None:
    executable = tmp_path / "bin" / "cronplus"
    config = tmp_path / "etc" / "crontab.yaml"

    _, text = render(kind, executable=executable, config=config, home=tmp_path / "home")
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
    assert float(service["TimeoutStopSec"].removesuffix("s")) > DEFAULT_SHUTDOWN_GRACE_S


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
        "system", executable=Path("/b/cronplus"), config=Path("/c.yaml"), home=tmp_path
    )
    unit = _unit(text)

    assert {key: unit["Service"].get(key) for key in SYSTEM_ONLY} == SYSTEM_ONLY
    # These would break ordinary cron jobs that write files or use the host's /tmp.
    assert not {"ProtectSystem", "ProtectHome", "ReadOnlyPaths"} & set(unit["Service"])
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_user_unit_has_no_system_only_settings_and_starts_with_the_user_manager(
    tmp_path: Path,
) -> None:
    _, text = render("user", executable=Path("/b/cronplus"), config=Path("/c.yaml"), home=tmp_path)
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

    _, text = render("user", executable=home / executable, config=home / config, home=home)

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

    _, text = render("system", executable=executable, config=config, home=tmp_path)

    assert _exec_start(text) == [str(executable), "-c", str(config), "daemon"]


@needs_systemd_analyze
@pytest.mark.parametrize(
    "folder",
    ["plain", "with space", "per%cent", "dol$lar"],
    ids=["plain", "space", "percent", "dollar"],
)
def test_systemd_accepts_the_system_unit_and_finds_its_program(folder: str, tmp_path: Path) -> None:
    executable = _executable(tmp_path / folder / "cronplus")
    _, text = render("system", executable=executable, config=tmp_path / "c.yaml", home=tmp_path)
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
    _, text = render("user", executable=executable, config=home / "c.yaml", home=home)
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
        "system", executable=Path("../bin/cronplus"), config=Path("../crontab.yaml"), home=tmp_path
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
        render(kind, executable=Path(executable), config=Path(config), home=tmp_path)

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
    assert not re.search(r"@[A-Z]+@", text)


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
        kind, executable=Path("/b/cronplus"), config=Path("/a.yaml"), home=home, dest_root=root
    )
    path = install(
        kind, executable=Path("/b/cronplus"), config=Path("/b.yaml"), home=home, dest_root=root
    )

    destination, text = render(
        kind, executable=Path("/b/cronplus"), config=Path("/b.yaml"), home=home
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
        kind, executable=Path("/b/cronplus"), config=Path("/c.yaml"), home=Path("/Users/ana b")
    )

    assert next_commands(kind, path) == commands


def test_locate_executable_finds_the_cronplus_command_of_this_installation() -> None:
    found = locate_executable()

    assert found.is_absolute()
    assert found.name == "cronplus"
    assert found.is_file()
    assert os.access(found, os.X_OK)

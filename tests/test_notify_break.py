"""The sample job, run as a real subprocess with stub notifiers first on PATH.

Each stub is a shell script that writes its argv, one per line, and the bus address it
was given into files beside it, then exits with a chosen code.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "notify_break.py"
TITLE, MESSAGE = "Take a break", "You are sitting for too long"
APPLESCRIPT_ARGS = [
    "-e",
    "on run argv",
    "-e",
    "display notification (item 2 of argv) with title (item 1 of argv)",
    "-e",
    "end run",
]
HOSTILE = 'It\'s "time" for $(rm -rf ~) `id`; a \\ break & <go> \u2615'


@dataclass(frozen=True, kw_only=True)
class Desktop:
    """A PATH of stub tools, an empty runtime folder, and what the stubs recorded."""

    bin: Path
    runtime: Path

    def stub(self, tool: str, *, exit_code: int = 0) -> None:
        log = self.bin / tool
        script = self.bin / f"{tool}-stub"
        script.write_text(
            "#!/bin/sh\n"
            f"printf '%s\\n' \"$@\" > '{log}.argv'\n"
            f"printf '%s\\n' \"${{DBUS_SESSION_BUS_ADDRESS-}}\" > '{log}.bus'\n"
            f"exit {exit_code}\n",
            encoding="utf-8",
        )
        script.chmod(0o755)
        script.rename(self.bin / tool)

    def argv(self, tool: str) -> list[str] | None:
        log = self.bin / f"{tool}.argv"
        return log.read_text(encoding="utf-8").splitlines() if log.exists() else None

    def bus(self, tool: str) -> str:
        return (self.bin / f"{tool}.bus").read_text(encoding="utf-8").strip()

    def run(
        self, *args: str, platform: str, bus: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": str(self.bin),
            "CRONPLUS_NOTIFY_PLATFORM": platform,
            "XDG_RUNTIME_DIR": str(self.runtime),
        }
        if bus is not None:
            env["DBUS_SESSION_BUS_ADDRESS"] = bus
        return subprocess.run(
            [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True
        )


@pytest.fixture
def desktop(tmp_path: Path) -> Desktop:
    (tmp_path / "bin").mkdir()
    (tmp_path / "runtime").mkdir()
    return Desktop(bin=tmp_path / "bin", runtime=tmp_path / "runtime")


@pytest.mark.parametrize(
    ("args", "title", "message"),
    [
        ((), TITLE, MESSAGE),
        (("--title", "Stretch", "--message", "Stand up"), "Stretch", "Stand up"),
        (("--title", HOSTILE, "--message", HOSTILE), HOSTILE, HOSTILE),
    ],
    ids=["defaults", "overridden", "quotes-and-substitutions-verbatim"],
)
def test_on_linux_with_a_session_bus_notify_send_gets_exactly_the_title_and_text(
    desktop: Desktop, args: tuple[str, ...], title: str, message: str
) -> None:
    desktop.stub("notify-send")
    desktop.stub("osascript")

    done = desktop.run(*args, platform="linux", bus="unix:path=/tmp/fake-bus")

    assert (done.returncode, done.stderr) == (0, "")
    assert desktop.argv("notify-send") == [title, message]
    assert desktop.bus("notify-send") == "unix:path=/tmp/fake-bus"
    assert desktop.argv("osascript") is None


@pytest.mark.parametrize(
    ("args", "title", "message"),
    [
        ((), TITLE, MESSAGE),
        (("--title", HOSTILE, "--message", HOSTILE), HOSTILE, HOSTILE),
    ],
    ids=["defaults", "quotes-and-substitutions-verbatim"],
)
def test_on_macos_osascript_gets_the_fixed_script_and_the_words_as_argv_items(
    desktop: Desktop, args: tuple[str, ...], title: str, message: str
) -> None:
    desktop.stub("osascript")
    desktop.stub("notify-send")

    done = desktop.run(*args, platform="darwin", bus="unix:path=/tmp/fake-bus")

    assert (done.returncode, done.stderr) == (0, "")
    assert desktop.argv("osascript") == [*APPLESCRIPT_ARGS, title, message]
    assert desktop.argv("notify-send") is None


def test_a_bus_socket_in_the_runtime_folder_is_found_and_handed_to_notify_send(
    desktop: Desktop,
) -> None:
    desktop.stub("notify-send")
    (desktop.runtime / "bus").touch()

    done = desktop.run(platform="linux")

    assert (done.returncode, done.stderr) == (0, "")
    assert desktop.argv("notify-send") == [TITLE, MESSAGE]
    assert desktop.bus("notify-send") == f"unix:path={desktop.runtime / 'bus'}"


@pytest.mark.parametrize(
    ("platform", "bus", "tools", "reason"),
    [
        ("linux", None, ["notify-send"], "no D-Bus session bus"),
        ("linux", "unix:path=/tmp/fake-bus", [], "notify-send is not on PATH"),
        ("darwin", None, ["notify-send"], "osascript is not on PATH"),
        ("win32", "unix:path=/tmp/fake-bus", ["notify-send", "osascript"], "platform 'win32'"),
    ],
    ids=["linux-without-bus", "linux-without-notify-send", "macos-without-osascript", "windows"],
)
def test_without_a_way_to_notify_it_logs_one_line_and_succeeds(
    desktop: Desktop, platform: str, bus: str | None, tools: list[str], reason: str
) -> None:
    for tool in tools:
        desktop.stub(tool)

    done = desktop.run(platform=platform, bus=bus)

    assert done.returncode == 0
    [line] = done.stderr.splitlines()
    assert line.startswith("notify_break: not shown (")
    assert reason in line
    assert line.endswith(f"): {TITLE}: {MESSAGE}")
    assert [desktop.argv(tool) for tool in tools] == [None] * len(tools)


@pytest.mark.parametrize(
    ("platform", "tool"),
    [("linux", "notify-send"), ("darwin", "osascript")],
    ids=["notify-send", "osascript"],
)
def test_a_notifier_that_fails_makes_the_job_fail_with_a_log_line(
    desktop: Desktop, platform: str, tool: str
) -> None:
    desktop.stub(tool, exit_code=3)

    done = desktop.run(platform=platform, bus="unix:path=/tmp/fake-bus")

    assert done.returncode == 1
    assert done.stderr == f"notify_break: {tool} failed with exit code 3\n"

#!/usr/bin/env python3
"""The sample job: a desktop notification that says "Take a break".

Standard library only, so any python3 runs it. The tool is chosen by the platform:

- macOS: ``osascript`` with a fixed AppleScript; the title and text travel as its argv
  items, never inside the script, so quotes or ``$(...)`` in them are harmless.
- Linux: ``notify-send TITLE TEXT`` when a session bus is reachable: either
  ``DBUS_SESSION_BUS_ADDRESS`` is set, or ``$XDG_RUNTIME_DIR/bus`` (else
  ``/run/user/$UID/bus``) exists.
- Anything else: one line on stderr and exit 0. A reminder nobody can see is not a failed
  job; a notifier that runs and fails is (exit 1).

``CRONPLUS_NOTIFY_PLATFORM`` (``darwin``, ``linux``) overrides ``sys.platform``, so the
macOS path can be tested on Linux; the tools are looked up on ``PATH``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

DEFAULT_TITLE = "Take a break"
DEFAULT_MESSAGE = "You are sitting for too long"
TOOL_TIMEOUT_S = 30

APPLESCRIPT = (
    "on run argv",
    "display notification (item 2 of argv) with title (item 1 of argv)",
    "end run",
)
"""Fixed lines for ``osascript -e``; the notification's words are ``argv``, not code."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env = os.environ
    platform = env.get("CRONPLUS_NOTIFY_PLATFORM") or sys.platform
    command, reason = notifier_command(platform, env, title=args.title, message=args.message)
    if command is None:
        _log(f"not shown ({reason}): {args.title}: {args.message}")
        return 0
    return _run(command, env=_child_env(env))


def notifier_command(
    platform: str, env: Mapping[str, str], *, title: str, message: str
) -> tuple[list[str] | None, str]:
    """The argv that shows the notification, or None and the reason none can be shown."""
    path = env.get("PATH", os.defpath)
    if platform == "darwin":
        tool = shutil.which("osascript", path=path)
        if tool is None:
            return None, "osascript is not on PATH"
        script = [arg for line in APPLESCRIPT for arg in ("-e", line)]
        return [tool, *script, title, message], ""
    if platform.startswith("linux"):
        if session_bus(env) is None:
            return None, "no D-Bus session bus: no desktop session to notify"
        tool = shutil.which("notify-send", path=path)
        if tool is None:
            return None, "notify-send is not on PATH (install libnotify-bin / libnotify)"
        return [tool, title, message], ""
    return None, f"no notifier known for platform {platform!r}"


def session_bus(env: Mapping[str, str]) -> str | None:
    """The D-Bus session bus address notify-send should use, or None if there is none."""
    address = env.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        return address
    runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    bus = Path(runtime, "bus")
    return f"unix:path={bus}" if bus.exists() else None


def _child_env(env: Mapping[str, str]) -> dict[str, str]:
    # A job started by a system daemon or cron has the bus socket but not the variable,
    # and notify-send does not look for the socket by itself without XDG_RUNTIME_DIR.
    child = dict(env)
    bus = session_bus(env)
    if bus is not None:
        child["DBUS_SESSION_BUS_ADDRESS"] = bus
    return child


def _run(command: list[str], *, env: Mapping[str, str]) -> int:
    tool = Path(command[0]).name
    try:
        done = subprocess.run(command, env=env, check=False, timeout=TOOL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        _log(f"{tool} failed: {error}")
        return 1
    if done.returncode != 0:
        _log(f"{tool} failed with exit code {done.returncode}")
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Show a 'take a break' desktop notification.")
    parser.add_argument("--title", default=DEFAULT_TITLE, help=f"default: {DEFAULT_TITLE!r}")
    parser.add_argument("--message", default=DEFAULT_MESSAGE, help=f"default: {DEFAULT_MESSAGE!r}")
    return parser


def _log(text: str) -> None:
    print(f"notify_break: {text}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

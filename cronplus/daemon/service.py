"""Service files: the systemd units and the launchd agent that run ``cronplus daemon``.

The templates ship inside the package (``cronplus/daemon/service_templates/``), so an installed
cronplus can write its own unit. ``@EXECUTABLE@``, ``@CONFIG@`` and ``@HOME@`` in them are
replaced by this installation's absolute paths, each escaped for the file it lands in, and
``@STOP_TIMEOUT@`` by the seconds a stop may take (``stop_timeout_s``: the crontab's
``shutdown_grace`` plus ``STOP_MARGIN``).
The repository's ``systemd/`` and ``launchd/`` files are ``render_sample(kind)``: the same
templates filled with the documented sample paths, and a test keeps them equal.

Nothing here runs systemctl or launchctl: ``install`` writes the file, and
``next_commands`` says what the operator runs next.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import escape as xml_escape

from cronplus.core.model import CronplusError, Settings, UsageError

ServiceKind = Literal["user", "system", "launchd"]
"""``user``: a systemd user unit; ``system``: a systemd system unit; ``launchd``: a LaunchAgent."""

KINDS: tuple[ServiceKind, ...] = ("user", "system", "launchd")

LABEL = "io.cronplus.daemon"
"""The launchd label, also the plist's file name."""

STOP_MARGIN = timedelta(seconds=30)
"""What a stop may take beyond ``shutdown_grace`` before the service manager sends SIGKILL:
the daemon kills what is left of its jobs at ``shutdown_grace``, then records those
attempts ``interrupted`` (a state database busy for seconds included) and exits."""


@dataclass(frozen=True, kw_only=True)
class _Flavour:
    template: str
    """A file name in ``cronplus/daemon/service_templates/``."""
    destination: str
    """Where the file is installed: absolute, or relative to the home folder."""
    sample: tuple[str, str, str]
    """The executable, config and home that ``render_sample`` fills in."""


_FLAVOURS: Mapping[str, _Flavour] = {
    "system": _Flavour(
        template="cronplus.service",
        destination="/etc/systemd/system/cronplus.service",
        sample=("/usr/local/bin/cronplus", "/etc/cronplus/crontab.yaml", "/root"),
    ),
    "user": _Flavour(
        template="cronplus-user.service",
        destination=".config/systemd/user/cronplus.service",
        sample=(
            "/home/you/.local/bin/cronplus",
            "/home/you/.config/cronplus/crontab.yaml",
            "/home/you",
        ),
    ),
    "launchd": _Flavour(
        template=f"{LABEL}.plist",
        destination=f"Library/LaunchAgents/{LABEL}.plist",
        sample=(
            "/Users/you/.local/bin/cronplus",
            "/Users/you/.config/cronplus/crontab.yaml",
            "/Users/you",
        ),
    ),
}

_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")

_FLAGS: Mapping[ServiceKind, str] = {"user": "--user", "system": "--system", "launchd": "--launchd"}


def default_kind(platform: str) -> ServiceKind:
    """The kind ``service install`` writes without a flag on ``platform`` (``sys.platform``):
    a LaunchAgent on macOS, a systemd user unit elsewhere."""
    return "launchd" if platform == "darwin" else "user"


def choose_kind(asked: Sequence[ServiceKind], *, platform: str) -> ServiceKind:
    """The one kind the flags ask for, else ``platform``'s default.

    Raises ``UsageError`` naming the flags when they ask for two different kinds.
    """
    kinds = list(dict.fromkeys(asked))
    for kind in kinds:
        _flavour(kind)
    if len(kinds) > 1:
        *rest, last = (_FLAGS[kind] for kind in kinds)
        flags = f"{', '.join(rest)} and {last}"
        raise UsageError(
            f"service install: {flags} conflict; expected one of "
            f"{', '.join(_FLAGS.values())} (default here: {_FLAGS[default_kind(platform)]})"
        )
    return kinds[0] if kinds else default_kind(platform)


def stop_timeout_s(shutdown_grace: timedelta) -> int:
    """Whole seconds a stop may take: ``shutdown_grace`` plus ``STOP_MARGIN``, rounded up
    (systemd's ``TimeoutStopSec=``, launchd's ``ExitTimeOut``)."""
    return math.ceil((shutdown_grace + STOP_MARGIN).total_seconds())


def render(
    kind: ServiceKind,
    *,
    executable: Path,
    config: Path,
    home: Path,
    shutdown_grace: timedelta,
) -> tuple[Path, str]:
    """The installed path of ``kind``'s service file and its text, for this installation.

    Relative paths are made absolute against the current folder, but symlinks are kept:
    a Homebrew or pipx link survives upgrades that move its target, and the daemon must
    watch the crontab's own path to notice a symlink swap. ``shutdown_grace`` is the
    crontab's: the service manager must wait longer than it before killing the daemon.
    """
    flavour = _flavour(kind)
    folder = _absolute(home, "home")
    program = _absolute(executable, "executable")
    crontab = _absolute(config, "config")
    timeout = str(stop_timeout_s(shutdown_grace))
    if kind == "launchd":
        values = {"EXECUTABLE": program, "CONFIG": crontab, "HOME": folder}
        escaped = {k: xml_escape(v) for k, v in values.items()}
        text = _fill(_template(flavour.template), {**escaped, "STOP_TIMEOUT": timeout})
    else:
        # The user manager knows the home folder as %h, so the unit survives a renamed home.
        base = folder if kind == "user" else None
        unit_values = {
            "EXECUTABLE": _unit_program(program, home=base),
            "CONFIG": _unit_argument(crontab, home=base),
            "STOP_TIMEOUT": timeout,
        }
        text = _fill(_template(flavour.template), unit_values)
    # An absolute destination ignores `home` when joined.
    return Path(folder, flavour.destination), text


def render_sample(kind: ServiceKind) -> str:
    """The file shipped in the repository's ``systemd/`` or ``launchd/`` folder.

    System: ``/usr/local/bin/cronplus`` and ``/etc/cronplus/crontab.yaml``; user: the same
    under ``%h`` (``~/.local/bin``, ``~/.config/cronplus``); launchd: those under
    ``/Users/you``, since launchd expands no ``~``. The stop timeout is the one of a
    crontab that leaves ``shutdown_grace`` at its default.
    """
    executable, config, home = _flavour(kind).sample
    grace = Settings(state=Path("state.db")).shutdown_grace
    paths = {"executable": Path(executable), "config": Path(config), "home": Path(home)}
    return render(kind, **paths, shutdown_grace=grace)[1]


def install(
    kind: ServiceKind,
    *,
    executable: Path,
    config: Path,
    home: Path,
    shutdown_grace: timedelta,
    dest_root: Path | None = None,
) -> Path:
    """Write ``kind``'s service file (creating folders) and return where it went.

    ``dest_root`` puts the file below another root (a package build, a test) instead of
    ``/``. An existing file is replaced whole, never left half-written.
    """
    destination, text = render(
        kind, executable=executable, config=config, home=home, shutdown_grace=shutdown_grace
    )
    target = destination if dest_root is None else dest_root / destination.relative_to("/")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _replace(target, text)
    except OSError as error:
        hint = ""
        if isinstance(error, PermissionError) and kind == "system":
            hint = "; the system unit needs root: sudo cronplus service install --system"
        raise CronplusError(
            f"cannot write the {kind} service file {target}: {error.strerror or error}{hint}"
        ) from error
    return target


def next_commands(kind: ServiceKind, path: Path) -> tuple[str, ...]:
    """The shell commands that load and start the installed file at ``path``, in order."""
    _flavour(kind)
    if kind == "user":
        return ("systemctl --user daemon-reload", "systemctl --user enable --now cronplus")
    if kind == "system":
        return ("systemctl daemon-reload", "systemctl enable --now cronplus")
    # bootstrap refuses a label that is already loaded, so a reinstall unloads it first.
    return (
        f"launchctl bootout gui/$(id -u)/{LABEL} 2>/dev/null || true",
        f"launchctl bootstrap gui/$(id -u) {shlex.quote(str(path))}",
    )


def locate_executable() -> Path:
    """The ``cronplus`` command of the running installation (beside its Python, or on PATH)."""
    beside = Path(sys.executable).parent / "cronplus"
    if beside.is_file():
        return Path(os.path.abspath(beside))
    found = shutil.which("cronplus")
    if found is None:
        raise CronplusError(
            f"cannot find the cronplus command next to {sys.executable} or on PATH; "
            "install the package (pip install cronplus) so the service has a program to run"
        )
    return Path(os.path.abspath(found))


def _flavour(kind: str) -> _Flavour:
    try:
        return _FLAVOURS[kind]
    except KeyError:
        raise UsageError(f"service kind {kind!r}: expected one of {', '.join(KINDS)}") from None


def _absolute(path: Path, what: str) -> str:
    text = str(path)
    # Neither a unit file nor a plist can carry a newline or other control character.
    if any(ord(char) < 32 or char == "\x7f" for char in text):
        raise UsageError(
            f"{what} path {text!r}: contains a control character; expected a plain path"
        )
    return os.path.abspath(text)


def _unit_program(path: str, *, home: str | None) -> str:
    """ExecStart's program: systemd rejects quotes and backslashes in it outright."""
    if any(char in "\"'\\" for char in path):
        raise UsageError(
            f"executable path {path!r}: systemd does not accept quotes or backslashes in "
            "the program it starts; expected cronplus installed under a plainer path"
        )
    return _unit_quote(_unit_path(path, home=home))


def _unit_argument(path: str, *, home: str | None) -> str:
    # systemd substitutes $VAR in arguments (not in the program), so a literal $ is $$.
    return _unit_quote(_unit_path(path, home=home).replace("$", "$$"))


def _unit_path(path: str, *, home: str | None) -> str:
    """``path`` with ``%`` escaped, written below ``%h`` when it lies in ``home``."""
    if home is not None and Path(path).is_relative_to(home):
        rest = Path(path).relative_to(home)
        return "%h" + ("" if rest == Path() else "/" + str(rest).replace("%", "%%"))
    return path.replace("%", "%%")


def _unit_quote(word: str) -> str:
    """One ExecStart word: double-quoted, with C escapes, when it holds blanks or quotes."""
    if not any(char.isspace() or char in "\"'\\" for char in word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fill(template: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def _template(name: str) -> str:
    return (resources.files("cronplus.daemon") / "service_templates" / name).read_text(
        encoding="utf-8"
    )


def _replace(target: Path, text: str) -> None:
    """Write ``text`` beside ``target``, then rename it over: readers see old or new, whole."""
    descriptor, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        temporary.chmod(0o644)
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise

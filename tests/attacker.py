"""An unprivileged local user who attacks a root daemon: a real second uid, not a mock.

``attacker`` (the fixture) is a throwaway system user, made with ``useradd`` the first time
and kept (``cronplus-attacker``: no home, no login shell); tests run its side as real
processes with its uid, gid and no supplementary groups (``Attacker.run``,
``Attacker.popen``). ``arena`` is a folder both sides reach: pytest's own ``tmp_path`` sits
below folders only root may enter, so the attacker's files live below ``/tmp`` instead,
in a root-owned 0755 folder made per test and removed after it.

These tests need root (to be the daemon that is attacked and to make the user); elsewhere
they skip, saying so.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

NAME = "cronplus-attacker"
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable


@dataclass(frozen=True)
class Attacker:
    """The unprivileged user: its ids, and ways to run code as it."""

    name: str
    uid: int
    gid: int

    def identity(self) -> dict[str, Any]:
        """``Popen`` keywords that run a child as this user, with no groups of root's."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def run(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """``argv`` run to its end as this user (text, output captured, no check)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("timeout", 60)
        return subprocess.run(argv, text=True, check=False, **self.identity(), **kwargs)

    def python(self, code: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Python ``code`` run as this user by the system's python3 (the test's own may sit
        below a folder only root may enter); ``-I``: nothing of the checkout is imported."""
        return self.run([SYSTEM_PYTHON, "-I", "-c", code, *args], **kwargs)

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """``argv`` started as this user, in the background."""
        return subprocess.Popen(argv, **self.identity(), **kwargs)

    def owns(self, path: Path, mode: int = 0o755) -> Path:
        """``path`` (made if missing) owned by this user with ``mode``."""
        if not path.exists():
            path.mkdir(parents=True)
        os.chown(path, self.uid, self.gid)
        path.chmod(mode)
        return path


def throwaway(name: str) -> Attacker:
    """The system user ``name``, made if missing (no home, no login shell); skips the test
    where that cannot be done."""
    if os.geteuid() != 0:
        pytest.skip(f"a second uid ({name}) needs root, to make it and to switch to it")
    with contextlib.suppress(KeyError):
        entry = pwd.getpwnam(name)
        return Attacker(entry.pw_name, entry.pw_uid, entry.pw_gid)
    if shutil.which("useradd") is None:
        pytest.skip(f"no useradd to make the user {name} with")
    made = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0 and b"already exists" not in made.stderr:  # another worker
        raise RuntimeError(f"useradd {name}: {made.stderr.decode(errors='replace')}")
    entry = pwd.getpwnam(name)
    return Attacker(entry.pw_name, entry.pw_uid, entry.pw_gid)


@pytest.fixture(scope="session")
def attacker() -> Attacker:
    return throwaway(NAME)


@pytest.fixture
def arena() -> Iterator[Path]:
    """A root-owned 0755 folder below /tmp that the attacker can reach (not write)."""
    folder = Path(tempfile.mkdtemp(prefix="cronplus-arena-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)

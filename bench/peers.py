"""The daemons cronplus is measured against, and cronplus itself, behind one interface.

Each gets gen.py's jobs in its own format and starts in the foreground in a fresh folder:
cronplus as procs.py's ``DaemonRun``; yacron from PyPI in its own virtual environment
(``bench/out/peers/yacron``); Debian cron as ``cron -f`` in a private mount namespace over
fresh folders, so the host's crontabs are neither read nor touched, with every expression
written in UTC (it has no per-job zone). A peer is ready when its ``@reboot`` job stamped.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from gen import JobSpec, Schedule, cronplus_crontab
from harness import (
    BUILD_DIR,
    Failed,
    bench_env,
    checked,
    install_venv,
    read_stamps,
    said,
)
from procs import Child, DaemonRun, NotReady

YACRON_VERSION = "0.19.0"
PEERS_DIR = BUILD_DIR / "peers"
CRON = Path("/usr/sbin/cron")
CRON_FILE_JOBS = 1000
"""Jobs per file in Debian cron's ``/etc/cron.d``: it ignores a file of over 10,000."""
POLL = 0.01
"""Seconds between looks at a stamp file."""

Argv = Sequence[str]


class Peer(Protocol):
    """One daemon under test."""

    name: str

    def write(self, folder: Path, jobs: Sequence[JobSpec], schedule: Schedule, argv: Argv) -> None:
        """Write ``jobs`` into ``folder`` in this daemon's format, each running ``argv``."""
        ...

    def check(self, folder: Path) -> list[str] | None:
        """The command that checks the written file, or None if the daemon has none."""
        ...

    def start(self, folder: Path, *, stamp: Path) -> Child: ...


class Cronplus:
    name = "cronplus"

    def __init__(self, python: Path) -> None:
        self.python = python
        """An interpreter that has cronplus installed."""

    def write(self, folder: Path, jobs: Sequence[JobSpec], schedule: Schedule, argv: Argv) -> None:
        (folder / "crontab.yaml").write_text(cronplus_crontab(jobs, schedule, argv))

    def check(self, folder: Path) -> list[str]:
        return [str(self.python), "-m", "cronplus", "-c", str(folder / "crontab.yaml"), "validate"]

    def start(self, folder: Path, *, stamp: Path) -> Child:
        return DaemonRun(folder, folder / "crontab.yaml", python=self.python)


class StampedRun(Child):
    """A peer whose ``@reboot`` job stamps ``folder/ready.txt`` when it is ready."""

    def ready(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while not (stamps := read_stamps(self.folder / "ready.txt")):
            exited = self.proc.poll() is not None
            if exited or time.monotonic() > deadline:
                self.kill()
                if not exited:
                    raise NotReady(f"{self.folder.name}: not ready within {timeout:g} s")
                raise Failed(
                    f"{self.folder.name}: the daemon exited {self.proc.returncode}:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(POLL)
        return stamps[0].at - self.began_at


def reboot_stamp(stamp: Path, folder: Path) -> Argv:
    return (str(stamp), str(folder / "ready.txt"))


def _yaml_block(argv: Argv) -> str:
    """``argv`` as a YAML block list: strictyaml, which yacron reads with, refuses flow lists."""
    return "".join(f"\n      - {json.dumps(arg)}" for arg in argv)


class Yacron:
    name = "yacron"

    def __init__(self, executable: Path) -> None:
        self.executable = executable

    def write(self, folder: Path, jobs: Sequence[JobSpec], schedule: Schedule, argv: Argv) -> None:
        lines = ["jobs:"]
        for spec in jobs:
            lines += [
                f"  - name: {spec.name}",
                f"    command:{_yaml_block(argv)}",
                f'    schedule: "{schedule(spec, ZoneInfo(spec.zone))}"',
                f"    timezone: {spec.zone}",
            ]
        (folder / "yacron.yaml").write_text("\n".join(lines) + "\n")

    def check(self, folder: Path) -> list[str]:
        return [str(self.executable), "-c", str(folder / "yacron.yaml"), "--validate-config"]

    def start(self, folder: Path, *, stamp: Path) -> Child:
        config = folder / "yacron.yaml"
        with config.open("a") as jobs:
            ready = _yaml_block(reboot_stamp(stamp, folder))
            jobs.write(f'  - name: ready\n    command:{ready}\n    schedule: "@reboot"\n')
        return StampedRun([self.executable, "-c", config], folder, bench_env(folder / "state"))


# Mounts fresh folders over everything cron reads or writes, then becomes cron (same pid).
_NAMESPACE = """
mount --bind "$1" /var/spool/cron/crontabs
mount --bind "$2" /etc/cron.d
mount --bind "$3" /etc/crontab
mount --bind "$4" /run
exec "$5" -f
"""


class DebianCron:
    name = "Debian cron"
    zone = ZoneInfo("UTC")

    def __init__(self, executable: Path = CRON) -> None:
        self.executable = executable

    def write(self, folder: Path, jobs: Sequence[JobSpec], schedule: Schedule, argv: Argv) -> None:
        command = shlex.join(argv)
        lines = [f"{schedule(spec, self.zone)} root {command}" for spec in jobs]
        (folder / "jobs.cron").write_text("\n".join(lines) + "\n")

    def check(self, folder: Path) -> None:
        return None  # cron has no command that checks a crontab without installing it

    def start(self, folder: Path, *, stamp: Path) -> Child:
        spool, crond, pids = (folder / name for name in ("spool", "cron.d", "run"))
        for place in (spool, crond, pids):
            place.mkdir(mode=0o700)
        (folder / "crontab").write_text("")
        # cron reads only root-owned files that no one else may write, named without dots,
        # and ignores a whole file of more than 10,000 entries: a file per 1,000 jobs.
        head = 'SHELL=/bin/sh\nPATH=/usr/bin:/bin\nMAILTO=""\n'
        lines = (folder / "jobs.cron").read_text().splitlines(keepends=True)
        ready = [f"@reboot root {shlex.join(reboot_stamp(stamp, folder))}\n"]
        parts = [lines[i : i + CRON_FILE_JOBS] for i in range(0, len(lines), CRON_FILE_JOBS)]
        for number, part in enumerate([ready, *parts]):
            jobs = crond / f"bench-{number:02d}"
            jobs.write_text(head + "".join(part))
            jobs.chmod(0o644)
        places = [spool, crond, folder / "crontab", pids, self.executable]
        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-euc", _NAMESPACE]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TZ": "UTC", "LANG": "C.UTF-8"}
        return StampedRun([*argv, "bench-cron", *places], folder, env)


def install_yacron(root: Path = PEERS_DIR, version: str = YACRON_VERSION) -> Path:
    """yacron ``version`` in a virtual environment of its own; returns its executable."""
    executable = root / "yacron" / "bin" / "yacron"
    if executable.exists() and said([executable, "--version"]) == version:
        return executable
    return install_venv(root / "yacron", f"yacron=={version}") / "yacron"


def install_cron() -> Path:
    """Debian's ``cron`` package (``apt-get``, as root); returns ``/usr/sbin/cron``."""
    if CRON.exists():
        return CRON
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Failed(
            "Debian cron: /usr/sbin/cron is missing and this is not root on a Debian-like "
            "host; install it (apt-get install cron) or leave it out with --peers"
        )
    checked(["apt-get", "update", "-q"])
    checked(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "cron"],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return CRON


def cron_version() -> str:
    return said(["dpkg-query", "-W", "-f", "${Version}", "cron"]) or "unknown"


def peers(names: Sequence[str], *, cronplus_python: Path | None) -> list[Peer]:
    """The daemons named (``cronplus``, ``yacron``, ``cron``), installing the peers.

    ``cronplus_python``: an interpreter that has cronplus, needed when cronplus is named.
    """
    chosen: list[Peer] = []
    for name in names:
        if name == "cronplus":
            if cronplus_python is None:
                raise Failed("cronplus: no interpreter given (install_cronplus makes one)")
            chosen.append(Cronplus(cronplus_python))
        elif name == "yacron":
            chosen.append(Yacron(install_yacron()))
        elif name == "cron":
            if os.geteuid() != 0 or shutil.which("unshare") is None:
                raise Failed(
                    "Debian cron runs under `unshare --mount`: run as root, or leave it out"
                )
            chosen.append(DebianCron(install_cron()))
        else:
            raise Failed(f"unknown daemon {name!r}; expected cronplus, yacron or cron")
    return chosen

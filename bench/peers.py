"""The daemons cronplus is measured against, and cronplus itself, behind one interface.

    python bench/peers.py install      # cronplus and yacron into bench/out/, cron via apt

Every daemon gets the same jobs (``JobSpec``: a name, a 5-field expression, a zone) written
in its own format, and starts in the foreground in a fresh folder of its own:

- **cronplus**: ``cronplus daemon --log-format json`` (bench_daemon.py's ``DaemonRun``);
  ready when its ``started`` line has been read. It runs as an operator installs it: this
  checkout built into a wheel and installed into a virtual environment of its own
  (bench_runonce.py's ``install_cronplus``: ``bench/out/cronplus``), bytecode compiled by
  pip, like yacron's.
- **yacron**: the PyPI package in its own virtual environment (``bench/out/peers/yacron``);
  each job gets its zone (``timezone:``). Ready when its ``@reboot`` job has stamped.
- **Debian cron**: ``cron -f`` from the ``cron`` package, in a private mount namespace
  (``unshare --mount``) with fresh folders bind-mounted over its spool, ``/etc/cron.d``,
  ``/etc/crontab`` and ``/run`` (its pid and reboot files), so the host's crontabs are
  neither read nor touched, and the mounts go with the namespace's last process. It has no
  per-job zone: it runs with ``TZ=UTC`` and every expression is written in UTC. Ready when
  its ``@reboot`` job has stamped (through ``/bin/sh -c``, as cron runs every job).

Stopping is by PID: SIGTERM, then SIGKILL after a grace.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from random import Random
from typing import ClassVar, Protocol
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_daemon import DaemonRun, moved_to_month
from bench_runonce import DEFAULT_BUILD_DIR, bench_env, install_cronplus
from gen import EXPRESSIONS, ZONES

YACRON_VERSION = "0.19.0"
PEERS_DIR = DEFAULT_BUILD_DIR / "peers"
CRON = Path("/usr/sbin/cron")
CRON_FILE_JOBS = 1000
"""Jobs per file in Debian cron's ``/etc/cron.d``: it ignores a file of over 10,000."""
PORTABLE = tuple(e for e in EXPRESSIONS if not re.search(r"[HLW#]", e))
"""gen.py's expressions that every daemon reads: Debian cron has no H, L, W or #."""
STOP_GRACE = 30.0
POLL = 0.01
"""Seconds between looks at a stamp file."""

Schedule = Callable[["JobSpec", ZoneInfo], str]
"""A job's expression as written for a daemon that reads it in the given zone."""
Argv = tuple[str, ...]


class PeerError(Exception):
    """A daemon could not be installed, started or stopped as the benchmark needs."""


class NotReady(PeerError):
    """A daemon took longer to start than the benchmark would wait; it has been killed."""


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """One job as every daemon gets it."""

    name: str
    expression: str
    """5 fields or a macro, read in ``zone``."""
    zone: str


def job_specs(n: int, *, seed: int = 7) -> list[JobSpec]:
    """``n`` jobs with gen.py's zones and its portable expressions, the same on every call."""
    rng = Random(seed)
    return [
        JobSpec(name=f"job-{i:05d}", expression=rng.choice(PORTABLE), zone=rng.choice(ZONES))
        for i in range(n)
    ]


def stamp_times(path: Path) -> list[float]:
    """When each stamp in ``path`` was written (CLOCK_REALTIME); none if there is no file.

    Only cronplus tells its jobs their name and slot; a peer's stamps read ``- -``, so the
    harness knows each slot from the schedule it wrote.
    """
    if not path.exists():
        return []
    times = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split()
        if len(words) != 3:
            raise ValueError(f"{path}:{number}: expected 'JOB SCHEDULED_AT SECONDS', got {line!r}")
        times.append(float(words[2]))
    return times


# --- schedules: when the jobs fire ------------------------------------------------------


def idle_in(month: int) -> Schedule:
    """Each job's own expression, moved into ``month``: nothing fires for months."""
    move = moved_to_month(month)
    return lambda spec, zone: move(spec.expression, zone)


def minute_at(instant: datetime) -> Schedule:
    """Fire once, at ``instant`` (a whole minute), read in the daemon's zone for the job."""

    def schedule(_spec: JobSpec, zone: ZoneInfo) -> str:
        local = instant.astimezone(zone)
        return f"{local.minute} {local.hour} {local.day} {local.month} *"

    return schedule


def second_at(instant: datetime) -> Schedule:
    """Fire once, at ``instant`` (a whole second): cronplus alone reads seconds."""

    def schedule(_spec: JobSpec, zone: ZoneInfo) -> str:
        local = instant.astimezone(zone)
        return f"{local.second} {local.minute} {local.hour} {local.day} {local.month} *"

    return schedule


def every(grain: str) -> Schedule:
    """Every minute (``* * * * *``), or every second (6 fields, cronplus alone)."""
    expression = "* * * * * *" if grain == "second" else "* * * * *"
    return lambda _spec, _zone: expression


# --- running daemons --------------------------------------------------------------------


class Running(Protocol):
    """A daemon started by ``Peer.start``."""

    pid: int
    began: float
    """``time.time()`` just before the spawn."""

    def ready(self, timeout: float) -> float:
        """Seconds from the spawn until the daemon was ready to fire (its own clock)."""
        ...

    def stop(self) -> None: ...


class Peer(Protocol):
    """One daemon under test."""

    name: str

    def write(self, folder: Path, jobs: Sequence[JobSpec], schedule: Schedule, argv: Argv) -> None:
        """Write ``jobs`` into ``folder`` in this daemon's format, each running ``argv``."""
        ...

    def check(self, folder: Path) -> list[str] | None:
        """The command that checks the written file, or None if the daemon has none."""
        ...

    def start(self, folder: Path, *, stamp: Path) -> Running: ...


class CronplusRun:
    """``cronplus daemon`` through bench_daemon's ``DaemonRun``."""

    def __init__(self, folder: Path, python: Path) -> None:
        self.began = time.time()
        self._run = DaemonRun(folder, folder / "crontab.yaml", python=python)
        self.pid = self._run.proc.pid

    def ready(self, timeout: float) -> float:
        try:
            return self._run.wait_for("started", timeout=timeout) - self._run.began
        except SystemExit as failed:  # DaemonRun's word for a daemon that exited or is late
            exited = self._run.proc.poll() is not None
            self._run.kill()
            raise (PeerError if exited else NotReady)(str(failed)) from None

    def stop(self) -> None:
        self._run.stop()


class Cronplus:
    name = "cronplus"

    def __init__(self, python: Path) -> None:
        self.python = python
        """An interpreter that has cronplus installed."""

    def write(self, folder: Path, jobs: Sequence[JobSpec], schedule: Schedule, argv: Argv) -> None:
        command = json.dumps(list(argv))  # a JSON list is a YAML flow list
        lines = ["settings:", f"  max_concurrent: {max(16, len(jobs))}", "jobs:"]
        for spec in jobs:
            lines += [
                f"  {spec.name}:",
                f'    schedule: "{schedule(spec, ZoneInfo(spec.zone))}"',
                f"    timezone: {spec.zone}",
                f"    command: {command}",
            ]
        (folder / "crontab.yaml").write_text("\n".join(lines) + "\n")

    def check(self, folder: Path) -> list[str]:
        return [str(self.python), "-m", "cronplus", "-c", str(folder / "crontab.yaml"), "validate"]

    def start(self, folder: Path, *, stamp: Path) -> Running:
        return CronplusRun(folder, self.python)


class StampedRun:
    """A peer process whose ``@reboot`` job stamps ``folder/ready.txt`` when it is ready."""

    alive: ClassVar[set[StampedRun]] = set()
    """Started and not yet stopped: killed on the way out if the benchmark fails."""

    def __init__(self, argv: list[str], folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self._log = (folder / "daemon.log").open("wb")
        self.began = time.time()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=folder,
        )
        self.pid = self.proc.pid
        self.alive.add(self)

    def ready(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while not (stamps := stamp_times(self.folder / "ready.txt")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                exited = self.proc.poll() is not None
                self.kill()
                if not exited:
                    raise NotReady(f"{self.folder.name}: not ready within {timeout:g} s")
                raise PeerError(
                    f"{self.folder.name}: the daemon exited {self.proc.returncode}:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(POLL)
        return stamps[0] - self.began

    def log_tail(self, size: int = 2000) -> str:
        return (self.folder / "daemon.log").read_bytes()[-size:].decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM, SIGKILL after a grace; either way the daemon is gone.

        yacron reads SIGTERM between its parses only: with 10,000 jobs, minutes later.
        """
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self._forget()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._forget()

    def _forget(self) -> None:
        self._log.close()
        self.alive.discard(self)


def reboot_stamp(stamp: Path, folder: Path) -> Argv:
    return (str(stamp), str(folder / "ready.txt"))


class Yacron:
    name = "yacron"

    def __init__(self, executable: Path) -> None:
        self.executable = executable

    def write(self, folder: Path, jobs: Sequence[JobSpec], schedule: Schedule, argv: Argv) -> None:
        # strictyaml, which yacron reads with, refuses YAML flow lists: block lists it is.
        command = "".join(f"\n      - {json.dumps(arg)}" for arg in argv)
        lines = ["jobs:"]
        for spec in jobs:
            lines += [
                f"  - name: {spec.name}",
                f"    command:{command}",
                f'    schedule: "{schedule(spec, ZoneInfo(spec.zone))}"',
                f"    timezone: {spec.zone}",
            ]
        (folder / "yacron.yaml").write_text("\n".join(lines) + "\n")

    def check(self, folder: Path) -> list[str]:
        return [str(self.executable), "-c", str(folder / "yacron.yaml"), "--validate-config"]

    def start(self, folder: Path, *, stamp: Path) -> Running:
        config = folder / "yacron.yaml"
        ready = "".join(f"\n      - {json.dumps(arg)}" for arg in reboot_stamp(stamp, folder))
        with config.open("a") as jobs:
            jobs.write(f'  - name: ready\n    command:{ready}\n    schedule: "@reboot"\n')
        argv = [str(self.executable), "-c", str(config)]
        return StampedRun(argv, folder, bench_env(folder / "state"))


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

    def start(self, folder: Path, *, stamp: Path) -> Running:
        spool, crond, run = (folder / name for name in ("spool", "cron.d", "run"))
        for place in (spool, crond, run):
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
        places = [str(p) for p in (spool, crond, folder / "crontab", run, self.executable)]
        argv = ["unshare", "--mount", "--propagation", "private", "--"]
        argv += ["sh", "-euc", _NAMESPACE, "bench-cron", *places]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TZ": "UTC", "LANG": "C.UTF-8"}
        return StampedRun(argv, folder, env)


def kill_left_over() -> None:
    """Kill every peer still running (a failed run): none outlives the benchmark."""
    for run in list(StampedRun.alive):
        run.kill()


# --- installing -------------------------------------------------------------------------


def install_yacron(root: Path = PEERS_DIR, version: str = YACRON_VERSION) -> Path:
    """yacron ``version`` in a virtual environment of its own; returns its executable."""
    venv = root / "yacron"
    executable = venv / "bin" / "yacron"
    if executable.exists() and _yacron_version(executable) == version:
        return executable
    venv.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "venv", "--clear", str(venv)])
    _run([str(venv / "bin" / "pip"), "install", "--quiet", f"yacron=={version}"])
    return executable


def _yacron_version(executable: Path) -> str:
    done = subprocess.run([str(executable), "--version"], capture_output=True, text=True)
    return done.stdout.strip()


def install_cron() -> Path:
    """Debian's ``cron`` package (``apt-get``, as root); returns ``/usr/sbin/cron``."""
    if CRON.exists():
        return CRON
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PeerError(
            "Debian cron: /usr/sbin/cron is missing and this is not root on a Debian-like "
            "host; install it (apt-get install cron) or leave it out with --peers"
        )
    _run(["apt-get", "update", "-q"])
    _run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "cron"],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return CRON


def check_namespaces() -> None:
    """Debian cron runs in a private mount namespace: that needs root and ``unshare``."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        raise PeerError("Debian cron runs under `unshare --mount`: run as root, or leave it out")


def cron_version() -> str:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "cron"], capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise PeerError(f"{shlex.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")


def peers(names: Sequence[str], *, cronplus_python: Path | None) -> list[Peer]:
    """The daemons named (``cronplus``, ``yacron``, ``cron``), installing the peers.

    ``cronplus_python``: an interpreter that has cronplus (``install_cronplus`` makes one;
    the tests pass their own), needed when cronplus is named.
    """
    chosen: list[Peer] = []
    for name in names:
        if name == "cronplus":
            if cronplus_python is None:
                raise PeerError("cronplus: no interpreter given (install_cronplus makes one)")
            chosen.append(Cronplus(cronplus_python))
        elif name == "yacron":
            chosen.append(Yacron(install_yacron()))
        elif name == "cron":
            check_namespaces()
            chosen.append(DebianCron(install_cron()))
        else:
            raise PeerError(f"unknown daemon {name!r}; expected cronplus, yacron or cron")
    return chosen


def main() -> None:
    if sys.argv[1:] != ["install"]:
        raise SystemExit("usage: python bench/peers.py install")
    print(f"cronplus: {install_cronplus()}")
    print(f"yacron: {install_yacron()}")
    print(f"Debian cron: {install_cron()} ({cron_version()})")


if __name__ == "__main__":
    main()

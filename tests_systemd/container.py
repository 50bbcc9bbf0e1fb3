"""A real systemd to run the shipped units under: Debian bookworm's systemd 252, booted in a
``systemd-nspawn`` container over a root folder made with ``debootstrap``.

The root folder is made once per machine and kept (``ROOT``, about 370 MB; from nothing
about a minute to 3.5 minutes, depending on the mirror) and never written to after:
each boot runs over it with ``--volatile=overlay``, so whatever a test does inside is gone
at the next boot. cronplus goes in from the wheels built on the host
(``installed.wheelhouse()``, bound read-only at ``/wheels``), installed with ``--no-index``
into ``/opt/cronplus``, as an operator installs it with pip.

The container is driven from outside with ``nsenter -t PID -a``, PID being its init, with
an environment of its own (the host's ``PIP_*`` and the like stay out).

On a cgroup-v1 host nspawn mounts the controllers read-only; ``writable_controllers()``
remounts them read-write inside the container's mount namespace and re-executes systemd,
so that ``MemoryMax=`` bites.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

CACHE = Path(os.environ.get("CRONPLUS_SYSTEMD_CACHE", "/var/cache/cronplus-test"))
SUITE = "bookworm"
PACKAGES = "systemd,systemd-sysv,dbus,procps,libpam-systemd,python3,python3-venv"
ROOT = CACHE / SUITE
MIRROR = os.environ.get("CRONPLUS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_TOOLS = {"debootstrap": "debootstrap", "systemd-nspawn": "systemd-container"}
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER, UID = "op", 1000
"""The unprivileged user whose systemd --user runs the user unit."""
_AS_USER = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--init-groups"]


class CannotBoot(Exception):
    """This host cannot boot the container (the message says why)."""


def why_not() -> str | None:
    """Why this host cannot boot the container at all, or None."""
    if os.geteuid() != 0:
        return "booting a container needs root"
    if not Path("/proc/self/ns/mnt").exists() or os.uname().sysname != "Linux":
        return "systemd-nspawn needs Linux"
    missing = [name for name in HOST_TOOLS if shutil.which(name) is None]
    if missing and shutil.which("apt-get") is not None:
        packages = [HOST_TOOLS[name] for name in missing]
        done = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", *packages],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        if done.returncode != 0:
            return f"apt-get install {' '.join(packages)} failed: {done.stderr.strip()[-300:]}"
        missing = [name for name in HOST_TOOLS if shutil.which(name) is None]
    if missing:
        return f"{', '.join(missing)} not found (apt-get install debootstrap systemd-container)"
    return None


def root_folder() -> Path:
    """The bookworm root, made now if this machine has none (under a lock: two runs at
    once make it once; made beside and renamed, so a cut-off run leaves no half root)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (ROOT / "usr/lib/systemd/systemd").exists():
            return ROOT
        partial = ROOT.with_name(ROOT.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        argv = ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(partial)]
        done = subprocess.run(
            [*argv, MIRROR],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise CannotBoot(f"debootstrap failed: {(done.stdout + done.stderr)[-800:]}")
        partial.rename(ROOT)
    return ROOT


class Machine:
    """A booted container: run commands in it as root or as ``USER``."""

    def __init__(self, nspawn: subprocess.Popen[bytes], log: Path) -> None:
        self.nspawn, self.log = nspawn, log
        self.pid = self._init_pid()

    def _init_pid(self) -> int:
        deadline = time.monotonic() + 30
        children = Path(f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children")
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                raise CannotBoot(f"systemd-nspawn exited {self.nspawn.returncode}: {self.logs()}")
            with contextlib.suppress(OSError):
                found = children.read_text().split()
                if found:
                    return int(found[0])
            time.sleep(0.05)
        raise CannotBoot(f"the container's init never started: {self.logs()}")

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]

    def run(
        self,
        command: str,
        *,
        user: bool = False,
        check: bool = True,
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``sh -c command`` inside, as root or as ``USER`` (with its systemd --user's
        ``XDG_RUNTIME_DIR``); ``check``: a non-zero exit is an error showing the output."""
        base = {"PATH": PATH, "LANG": "C.UTF-8", "HOME": "/root", **(env or {})}
        if user:
            base |= {"HOME": f"/home/{USER}", "USER": USER, "XDG_RUNTIME_DIR": f"/run/user/{UID}"}
        argv = ["nsenter", "-t", str(self.pid), "-a", *(_AS_USER if user else [])]
        argv += ["env", "-i", *(f"{k}={v}" for k, v in base.items()), "sh", "-c", command]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(
                f"in the container{' as ' + USER if user else ''}: {command}\n"
                f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
            )
        return done

    def out(self, command: str, *, user: bool = False) -> str:
        """What ``command`` printed on stdout, stripped (a non-zero exit is an error)."""
        return self.run(command, user=user).stdout.strip()

    def wait_for(self, command: str, *, timeout: float = 20, user: bool = False) -> str:
        """Run ``command`` until it succeeds; its output."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.run(command, user=user, check=False)
            if done.returncode == 0:
                return done.stdout.strip()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out: {command}\n{done.stdout}{done.stderr}")
            time.sleep(0.1)

    def write(self, path: str, text: str, *, mode: int = 0o644, user: bool = False) -> None:
        """A file inside, written beside and renamed over (an inotify watcher sees it whole),
        by root or by ``USER`` (who then owns the folders made for it too)."""
        quoted = shlex.quote(path)
        script = (
            f"mkdir -p $(dirname {quoted}) && cat > {quoted}.new && chmod {mode:o} {quoted}.new"
            f" && mv {quoted}.new {quoted}"
        )
        argv = ["nsenter", "-t", str(self.pid), "-a", *(_AS_USER if user else [])]
        argv += ["env", "-i", f"PATH={PATH}", "sh", "-c", script]
        subprocess.run(argv, input=text, text=True, check=True, timeout=30)

    def writable_controllers(self) -> None:
        """Remount the cgroup-v1 controllers read-write in the container (nspawn mounts them
        read-only) and re-execute systemd, so scope limits bite; nothing on cgroup v2."""
        self.run(
            "[ -e /sys/fs/cgroup/cgroup.controllers ] || for c in memory pids cpu,cpuacct; do"
            " mount -o remount,bind,rw /sys/fs/cgroup/$c; done; systemctl daemon-reexec"
        )

    def stop(self) -> None:
        if self.nspawn.poll() is None:
            self.nspawn.send_signal(signal.SIGTERM)  # nspawn asks the container's init to halt
            try:
                self.nspawn.wait(30)
            except subprocess.TimeoutExpired:
                self.nspawn.kill()
                self.nspawn.wait(10)


@contextlib.contextmanager
def booted(wheels: Path, scratch: Path) -> Iterator[Machine]:
    """A booted container with cronplus installed from ``wheels`` and ``USER`` lingering."""
    root = root_folder()
    log = scratch / "nspawn.log"
    with log.open("wb") as out:
        nspawn = subprocess.Popen(
            [
                "systemd-nspawn",
                f"--directory={root}",
                "--boot",
                "--register=no",
                "--keep-unit",
                "--private-network",
                "--volatile=overlay",
                "--console=pipe",
                f"--machine=cronplus-test-{os.getpid()}",
                f"--bind-ro={wheels}:/wheels",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    machine = Machine(nspawn, log)
    try:
        machine.wait_for("systemctl is-system-running --wait | grep -qx running", timeout=60)
        machine.run(
            "python3 -m venv /opt/cronplus"
            " && /opt/cronplus/bin/pip install -q --no-index --find-links /wheels"
            " 'cronplus[cluster]' && ln -s /opt/cronplus/bin/cronplus /usr/local/bin/cronplus",
            timeout=180,
        )
        machine.run(f"useradd --create-home --uid {UID} {USER} && loginctl enable-linger {USER}")
        machine.wait_for(f"systemctl is-active user@{UID}.service")
        yield machine
    finally:
        machine.stop()

"""The host's control groups, as a ``cgroup: true`` job needs them: whether the controller
behind each scope limit is there for the service manager that makes the scope, and which
unit the daemon itself runs in, so its scopes can be bound to it.

A limit whose controller is missing would be accepted by ``systemd-run`` and then silently
not applied (a user manager without the memory controller takes ``MemoryMax=64M`` and lets
the job use 300 MB), so ``limits.cross_problems`` turns each missing controller into a
validate error. Where the controllers are:

- the unified hierarchy (cgroup v2, ``/sys/fs/cgroup/cgroup.controllers`` exists): root's
  manager has what the root cgroup lists; a user's manager has what its
  ``user@UID.service`` cgroup lists, which is what systemd delegated to it;
- the legacy or hybrid hierarchy (cgroup v1): root's manager has each controller mounted
  writable at ``/sys/fs/cgroup/NAME`` (a container may mount them read-only); a user's
  manager has none, as systemd delegates no v1 controller to an unprivileged manager.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
ROOT_UID = 0

CONTROLLERS = {"memory": "memory", "cpu_quota": "cpu", "processes": "pids"}
"""The controller that enforces each scope limit (MemoryMax=, CPUQuota=, TasksMax=)."""


@functools.cache
def missing(controller: str, *, euid: int, root: Path = ROOT) -> str | None:
    """Why a scope made by ``euid``'s service manager gets no ``controller``, or None.

    Read once per process and controller: the hierarchy does not change under a daemon.
    """
    if (root / "cgroup.controllers").is_file():
        return _missing_unified(controller, euid=euid, root=root)
    if euid != ROOT_UID:
        return (
            f"this host uses the legacy cgroup hierarchy (cgroup v1), where systemd gives a"
            f" user's manager no {controller} controller; run the job from the system daemon"
            " (root) with user:, or boot with the unified hierarchy"
            " (systemd.unified_cgroup_hierarchy=1)"
        )
    # A controller may share its mount: cpu at cpu,cpuacct (with a cpu symlink, mostly).
    mounts = sorted(m for m in root.glob("*") if controller in m.name.split(","))
    mount = next((m for m in mounts if m.is_dir()), None)
    if mount is None:
        return f"the {controller} controller is not mounted under {root}"
    if not os.access(mount, os.W_OK):
        return f"the {controller} controller at {mount} is read-only here (a container?)"
    return None


def _missing_unified(controller: str, *, euid: int, root: Path) -> str | None:
    if euid == ROOT_UID:
        where = root / "cgroup.controllers"
        fix = "enable it for the host"
    else:
        where = root / f"user.slice/user-{euid}.slice/user@{euid}.service/cgroup.controllers"
        fix = (
            "delegate it to user managers (systemctl edit user@.service: [Service]"
            " Delegate=cpu memory pids), or run the job from the system daemon with user:"
        )
    try:
        available = where.read_text(encoding="ascii").split()
    except OSError:
        return f"cannot tell which controllers this user's manager has ({where} is unreadable)"
    if controller in available:
        return None
    return f"the {controller} controller is not available there ({where} lacks it); {fix}"


def own_unit(*, euid: int, cgroup_file: Path = Path("/proc/self/cgroup")) -> str | None:
    """The systemd service this process runs in, as the manager that makes ``euid``'s
    scopes knows it (``cronplus.service`` of the system manager for root, of the user's
    own manager otherwise), or None: a login session's scope, another user's manager, no
    systemd at all."""
    try:
        lines = cgroup_file.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    paths = dict(line.split(":", 2)[1:] for line in lines if line.count(":") >= 2)
    # The unified line ("0::") where there is one, else systemd's named v1 hierarchy.
    parts = (paths.get("") or paths.get("name=systemd") or "").split("/")
    manager = [i for i, part in enumerate(parts) if part.startswith("user@")]
    if euid == ROOT_UID:
        ours = [] if manager else parts
    else:
        own = [i for i in manager if parts[i] == f"user@{euid}.service"]
        ours = parts[own[-1] + 1 :] if own else []
    services = [part for part in ours if part.endswith(".service")]
    return services[-1] if services else None

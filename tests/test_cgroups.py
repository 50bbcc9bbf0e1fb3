"""Which controllers a scope gets and which unit the daemon runs in, read off cgroup trees
laid out as the kernel and systemd lay them out (the real ones: tests_systemd/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cronplus.host import cgroups


def unified(root: Path, top: str, user: str | None = None) -> Path:
    root.mkdir()
    (root / "cgroup.controllers").write_text(top + "\n")
    if user is not None:
        manager = root / "user.slice/user-1000.slice/user@1000.service"
        manager.mkdir(parents=True)
        (manager / "cgroup.controllers").write_text(user + "\n")
    return root


@pytest.mark.parametrize(
    ("user", "euid", "controller", "problem"),
    [
        ("cpu memory pids", 0, "memory", None),
        ("cpu memory pids", 1000, "memory", None),
        ("pids", 1000, "memory", "the memory controller is not available there"),
        ("pids", 1000, "pids", None),
        (None, 1000, "cpu", "cannot tell which controllers this user's manager has"),
    ],
    ids=["root", "user-delegated", "user-not-delegated", "user-pids", "no-user-manager"],
)
def test_on_the_unified_hierarchy_a_user_has_what_systemd_delegated(
    tmp_path: Path, user: str | None, euid: int, controller: str, problem: str | None
) -> None:
    root = unified(tmp_path / "cgroup", "cpuset cpu io memory pids", user)

    found = cgroups.missing(controller, euid=euid, root=root)

    assert found is None if problem is None else problem in str(found)


def test_a_user_not_delegated_memory_is_told_how_to_delegate_it(tmp_path: Path) -> None:
    root = unified(tmp_path / "cgroup", "cpu memory pids", "pids")

    found = cgroups.missing("memory", euid=1000, root=root)

    assert found == (
        f"the memory controller is not available there ({root}/user.slice/user-1000.slice/"
        "user@1000.service/cgroup.controllers lacks it); delegate it to user managers"
        " (systemctl edit user@.service: [Service] Delegate=cpu memory pids), or run the job"
        " from the system daemon with user:"
    )


def test_on_the_legacy_hierarchy_root_needs_the_mount_and_a_user_gets_nothing(
    tmp_path: Path,
) -> None:
    root = tmp_path / "cgroup"
    for mount in ("memory", "cpu,cpuacct", "systemd"):
        (root / mount).mkdir(parents=True)

    assert cgroups.missing("memory", euid=0, root=root) is None
    assert cgroups.missing("cpu", euid=0, root=root) is None  # shares cpu,cpuacct
    assert cgroups.missing("pids", euid=0, root=root) == (
        f"the pids controller is not mounted under {root}"
    )
    assert "legacy cgroup hierarchy (cgroup v1)" in str(
        cgroups.missing("memory", euid=1000, root=root)
    )


@pytest.mark.parametrize(
    ("lines", "euid", "unit"),
    [
        ("0::/system.slice/cronplus.service", 0, "cronplus.service"),
        ("1:name=systemd:/system.slice/cronplus.service\n0::/system.slice/cronplus.service", 0,
         "cronplus.service"),
        ("9:memory:/\n1:name=systemd:/system.slice/cron-x.service", 0, "cron-x.service"),
        ("0::/user.slice/user-1000.slice/user@1000.service/app.slice/cronplus.service", 1000,
         "cronplus.service"),
        ("0::/user.slice/user-1000.slice/user@1000.service/app.slice/cronplus.service", 0, None),
        ("0::/system.slice/cronplus.service", 1000, None),
        ("0::/user.slice/user-1000.slice/session-4.scope", 1000, None),
        ("0::/", 0, None),
    ],
    ids=["system-v2", "system-hybrid", "system-v1", "user-manager", "root-in-a-user-manager",
         "user-in-the-system-manager", "login-session", "no-systemd"],
)  # fmt: skip
def test_the_daemons_own_unit_is_the_service_its_scopes_manager_knows(
    tmp_path: Path, lines: str, euid: int, unit: str | None
) -> None:
    (tmp_path / "cgroup").write_text(lines + "\n")

    assert cgroups.own_unit(euid=euid, cgroup_file=tmp_path / "cgroup") == unit
    assert cgroups.own_unit(euid=euid, cgroup_file=tmp_path / "missing") is None

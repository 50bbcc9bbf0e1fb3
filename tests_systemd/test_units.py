"""The shipped units under a real systemd 252: the system unit as root, the user unit under
``systemd --user``, each installed by ``cronplus service install`` from the wheel.

Each test writes its crontab, (re)starts the service and reads what systemd, the journal
and the processes say. A drop-in shortens ``RestartSec=`` (and, where a test says so,
``WatchdogSec=``), so a restart takes a second, not five.
"""

from __future__ import annotations

import json
import time

import pytest

from tests_systemd.container import UID, Machine

CRONTAB = "/etc/cronplus/crontab.yaml"
CP = f"cronplus -c {CRONTAB}"
DROP_IN = "/etc/systemd/system/cronplus.service.d/test.conf"


def every_second(name: str, command: str, extra: str = "") -> str:
    return (
        f"  {name}:\n    schedule: '* * * * * *'\n    timezone: UTC\n"
        f"    command: {json.dumps(command)}\n{extra}"
    )


def rarely(name: str, command: str | list[str], extra: str = "") -> str:
    return (
        f"  {name}:\n    schedule: '0 0 1 1 *'\n    timezone: UTC\n"
        f"    command: {json.dumps(command)}\n{extra}"
    )


def system_service(machine: Machine, jobs: str, *, drop_in: str = "", start: bool = True) -> None:
    """The system unit on a crontab of ``jobs``, started (and stopped first if it ran)."""
    machine.run("systemctl stop cronplus 2>/dev/null; systemctl reset-failed cronplus; true")
    machine.write(CRONTAB, f"settings:\n  shutdown_grace: 2s\njobs:\n{jobs}")
    machine.run(f"{CP} service install --system")
    machine.write(DROP_IN, f"[Service]\nRestartSec=1s\n{drop_in}")
    machine.run("systemctl daemon-reload")
    if start:
        machine.run("systemctl start cronplus")


def show(machine: Machine, *names: str, user: bool = False) -> dict[str, str]:
    manager = "systemctl --user" if user else "systemctl"
    text = machine.out(f"{manager} show cronplus {' '.join('-p ' + n for n in names)}", user=user)
    return dict(line.split("=", 1) for line in text.splitlines())


def journal(machine: Machine, *args: str) -> list[dict[str, str]]:
    text = machine.out(f"journalctl -u cronplus -o json --no-pager {' '.join(args)}")
    return [json.loads(line) for line in text.splitlines()]


def count(machine: Machine, marker: str) -> int:
    """Processes whose command line holds ``marker`` (``[h]og`` keeps the shell asking out)."""
    return int(machine.out(f"pgrep -c -f '[{marker[0]}]{marker[1:]}' || true") or 0)


def test_start_returns_once_ready_with_fresh_status_and_private_state(machine: Machine) -> None:
    system_service(machine, every_second("tick", "echo tick"))

    # systemctl start returned after READY=1: the daemon answers at once, and says so.
    status = json.loads(machine.out(f"{CP} status --json"))
    shown = show(machine, "ActiveState", "StatusText")
    machine.wait_for(f"{CP} history --json | grep -q succeeded")
    mode = machine.out("stat -c %a /var/lib/cronplus")

    assert [job["job"] for job in status["jobs"]] == ["tick"]
    assert shown["ActiveState"] == "active"
    assert shown["StatusText"].startswith("1 jobs, ")
    assert mode == "700"
    # Root's commands found the system daemon's state without XDG_STATE_HOME=/var/lib:
    # the crontab's own database (docs/state.md), which `db path` and `status` name.
    state = machine.out(f"{CP} db path").strip()
    assert state.startswith("/var/lib/cronplus/crontab-") and state == status["state"]
    name = state.rsplit("/", 1)[1]
    assert {name, f"{name}.sock"} <= set(machine.out("ls /var/lib/cronplus").split())


def test_the_journal_files_each_event_at_its_priority_and_keeps_a_message_whole(
    machine: Machine,
) -> None:
    system_service(machine, every_second("fail", "echo oops >&2; exit 3"))
    machine.wait_for("journalctl -u cronplus -p err --no-pager | grep -q 'no retries left'")
    machine.write(CRONTAB, "jobs:\n  a:\n    schedule: nope\n  b:\n    schedule: nope\n")
    machine.wait_for("journalctl -u cronplus -p err --no-pager | grep -q rejected")

    warnings = journal(machine, "-p", "warning")
    events = {(e.get("CRONPLUS_EVENT"), e["PRIORITY"]) for e in warnings}
    rejected = next(e for e in warnings if e.get("CRONPLUS_EVENT") == "reload_failed")

    assert {("attempt_failed", "4"), ("run_failed", "3"), ("reload_failed", "3")} <= events
    assert all(int(e["PRIORITY"]) <= 4 for e in warnings)  # -p warning: no info lines
    assert "attempt_succeeded" not in {e.get("CRONPLUS_EVENT") for e in warnings}
    # One entry for the reload's three lines (a heading and one error per job).
    assert rejected["MESSAGE"].count("\n") >= 2
    assert "jobs.a.schedule" in rejected["MESSAGE"] and "jobs.b" in rejected["MESSAGE"]
    assert rejected["CRONPLUS_CONFIG"] == CRONTAB


def test_reload_waits_for_the_daemon_and_fails_naming_the_errors_without_procps_kill(
    machine: Machine,
) -> None:
    machine.run("rm -f /usr/bin/kill /bin/kill")  # a minimal system without procps's kill
    system_service(machine, every_second("first", "echo 1 >> /tmp/first"))
    machine.run("systemd-analyze log-level debug")  # systemd then logs each notification
    try:
        machine.write(
            CRONTAB,
            "jobs:\n"
            + every_second("first", "echo 1 >> /tmp/first")
            + every_second("second", "echo 2 >> /tmp/second"),
        )
        machine.run("systemctl reload cronplus")  # returns once the daemon has the job
        machine.wait_for("test -s /tmp/second", timeout=5)
        machine.run("systemctl kill -s HUP cronplus")
        machine.wait_for(
            "journalctl -u cronplus --no-pager | grep -q 'RELOADING=1' && "
            "journalctl -u cronplus --no-pager | grep 'Got notification message' "
            "| grep -A100 RELOADING=1 | grep -q 'READY=1'"
        )
    finally:
        machine.run("systemd-analyze log-level info")
    machine.run("sed -i 's/\\* \\* \\* \\* \\* \\*/often/' " + CRONTAB)  # both jobs broken
    rejected = machine.run("systemctl reload cronplus", check=False)
    status = machine.out("systemctl status cronplus --no-pager || true")
    before = int(machine.out("wc -l < /tmp/first"))
    machine.wait_for(f"[ $(wc -l < /tmp/first) -ge {before + 2} ]")

    assert rejected.returncode != 0
    assert "ExecReload=/opt/cronplus/bin/cronplus -c /etc/cronplus/crontab.yaml reload" in status
    assert "status=2" in status
    assert show(machine, "ActiveState", "ReloadResult") == {
        "ActiveState": "active",
        "ReloadResult": "exit-code",
    }
    errors = machine.out("journalctl -u cronplus -p err --no-pager -o cat | grep -c schedule")
    assert int(errors) >= 2


HOG = "echo $$ >> /tmp/hog-starts; exec sleep 3001"  # the duration marks it


def test_a_scoped_job_does_not_outlive_a_killed_daemon_and_overlap_holds(
    machine: Machine,
) -> None:
    machine.run("rm -f /tmp/hog-starts")
    job = every_second("hog", HOG, "    overlap: forbid\n    limits: {cgroup: true}\n")
    system_service(machine, job)
    machine.wait_for("test -s /tmp/hog-starts")
    first = machine.out("head -n 1 /tmp/hog-starts")
    scope = machine.out("systemctl list-units --type=scope --no-legend | grep 'cronplus job hog'")
    scope_unit = scope.split()[0]
    binds = machine.out(f"systemctl show -p BindsTo --value {scope_unit}")

    machine.run("systemctl kill -s KILL --kill-who=main cronplus")  # a crash
    machine.wait_for(f"! kill -0 {first} 2>/dev/null", timeout=10)
    machine.wait_for("[ $(wc -l < /tmp/hog-starts) -ge 2 ]", timeout=20)  # restarted, ran again
    time.sleep(1.5)  # more slots come due while the new copy runs

    assert binds == "cronplus.service"
    assert count(machine, "sleep 3001") == 1
    assert show(machine, "NRestarts")["NRestarts"] == "1"
    assert machine.out("wc -l < /tmp/hog-starts") == "2"


def test_the_watchdog_kills_and_restarts_a_stopped_daemon(machine: Machine) -> None:
    system_service(machine, rarely("later", "true"), drop_in="WatchdogSec=3s\n")
    pid = show(machine, "MainPID")["MainPID"]

    machine.run(f"kill -STOP {pid}")
    machine.wait_for(
        f"[ $(systemctl show -p MainPID --value cronplus) != {pid} ] &&"
        " systemctl is-active cronplus",
        timeout=20,
    )

    assert "Watchdog timeout" in machine.out("journalctl -u cronplus --no-pager -o cat")
    assert show(machine, "NRestarts")["NRestarts"] == "1"


def test_a_bad_crontab_at_start_exits_2_and_is_not_restarted(machine: Machine) -> None:
    system_service(machine, rarely("a", "true"), start=False)
    machine.write(CRONTAB, "jobs:\n  a:\n    schedule: nope\n    command: 'true'\n")

    started = machine.run("systemctl start cronplus", check=False)
    time.sleep(3)  # three RestartSec= of 1 s: no restart may come
    shown = show(machine, "ActiveState", "ExecMainStatus", "NRestarts")
    errors = journal(machine, "-p", "err")

    assert started.returncode != 0
    assert shown == {"ActiveState": "failed", "ExecMainStatus": "2", "NRestarts": "0"}
    assert any("jobs.a.schedule" in e["MESSAGE"] for e in errors)


def test_stop_with_running_jobs_ends_within_the_grace_and_leaves_nothing(
    machine: Machine,
) -> None:
    stubborn = "trap '' TERM; sleep 300; : stop-marker"
    jobs = rarely("stubborn", stubborn) + rarely("plain", "sleep 300; : stop-marker")
    system_service(machine, jobs)
    for name in ("stubborn", "plain"):
        machine.run(f"nohup {CP} run {name} --via-daemon >/dev/null 2>&1 &")
    machine.wait_for("[ $(pgrep -c -f '[s]top-marker') -ge 2 ]")

    began = time.monotonic()
    machine.run("systemctl stop cronplus")
    took = time.monotonic() - began
    history = [
        json.loads(machine.out(f"{CP} history --json --job {name} -n 1"))[0]
        for name in ("stubborn", "plain")
    ]

    assert took < 2 + 5  # shutdown_grace 2s, then SIGKILL; far inside TimeoutStopSec
    assert count(machine, "stop-marker") == 0
    assert show(machine, "ActiveState", "Result") == {
        "ActiveState": "inactive",
        "Result": "success",
    }
    assert {(row["job"], row["outcome"]) for row in history} == {
        ("stubborn", "interrupted"),
        ("plain", "interrupted"),
    }


def test_the_status_line_counts_what_runs_now_also_right_after_a_restart(
    machine: Machine,
) -> None:
    system_service(machine, rarely("short", "sleep 1") + rarely("long", "sleep 300"))
    machine.run(f"nohup {CP} run long --via-daemon >/dev/null 2>&1 &")
    machine.wait_for("systemctl show -p StatusText --value cronplus | grep -q '1 running'")
    machine.run(f"{CP} run short --via-daemon")
    after_short = show(machine, "StatusText")["StatusText"]  # the long one still runs

    machine.run("systemctl restart cronplus")
    after_restart = show(machine, "StatusText")["StatusText"]

    assert after_short.startswith("2 jobs, 1 running")
    assert after_restart.startswith("2 jobs, 0 running")


MEMORY_HOG = ["python3", "-c", "b = bytearray(300 * 1024 * 1024); print(len(b))"]
LIMITED = "    limits: {cgroup: true, memory: 64M}\n"


def test_memory_limits_bite_as_root_and_validate_refuses_where_they_cannot(
    machine: Machine,
) -> None:
    crontab = f"jobs:\n{rarely('big', MEMORY_HOG, LIMITED)}"
    machine.write("/tmp/memory.yaml", crontab)
    refused = machine.run("cronplus -c /tmp/memory.yaml validate", check=False)

    machine.writable_controllers()
    machine.run("cronplus -c /tmp/memory.yaml validate")
    ran = machine.run("cronplus -c /tmp/memory.yaml run big", check=False)

    assert refused.returncode == 2
    assert "jobs.big.limits.memory: memory cannot be enforced in a scope:" in refused.stderr
    assert "read-only here" in refused.stderr
    assert ran.returncode == 1
    assert "memory: killed by SIGKILL in its 64M scope" in ran.stderr


USER_CRONTAB = "~/.config/cronplus/crontab.yaml"
USER_UNIT = "~/.config/systemd/user/cronplus.service"


def write_user_crontab(machine: Machine, jobs: str) -> None:
    """The user unit installed (on a crontab it accepts), then the crontab of ``jobs``."""
    machine.run(
        "systemctl --user stop cronplus; systemctl --user reset-failed cronplus; true", user=True
    )
    machine.write("/home/op/.config/cronplus/crontab.yaml", "jobs: {}\n", user=True)
    machine.run(f"cronplus -c {USER_CRONTAB} service install --user", user=True)
    machine.run("systemctl --user daemon-reload", user=True)
    machine.write("/home/op/.config/cronplus/crontab.yaml", f"jobs:\n{jobs}", user=True)


def test_the_user_unit_starts_reloads_and_stops(machine: Machine) -> None:
    write_user_crontab(machine, every_second("t", "echo t >> /tmp/op-ticks"))

    machine.run("systemctl --user start cronplus", user=True)
    machine.wait_for("test -s /tmp/op-ticks")
    machine.write(
        "/home/op/.config/cronplus/crontab.yaml",
        "jobs:\n"
        + every_second("t", "echo t >> /tmp/op-ticks")
        + every_second("u", "echo u >> /tmp/op-more"),
        user=True,
    )
    machine.run("systemctl --user reload cronplus", user=True)
    machine.wait_for("test -s /tmp/op-more", timeout=5)
    shown = show(machine, "ActiveState", "MainPID", user=True)
    owner = machine.out(f"stat -c %u /proc/{shown['MainPID']}")
    machine.run("systemctl --user stop cronplus", user=True)

    assert shown["ActiveState"] == "active"
    assert owner == str(UID)
    assert show(machine, "ActiveState", user=True)["ActiveState"] == "inactive"


@pytest.mark.parametrize("key", ["memory: 64M", "cpu_quota: 50%", "processes: 10"])
def test_under_a_user_manager_a_scope_limit_it_cannot_enforce_is_refused(
    machine: Machine, key: str
) -> None:
    write_user_crontab(machine, rarely("big", MEMORY_HOG, f"    limits: {{cgroup: true, {key}}}\n"))

    refused = machine.run(f"cronplus -c {USER_CRONTAB} validate", user=True, check=False)
    started = machine.run("systemctl --user start cronplus", user=True, check=False)
    shown = show(machine, "ActiveState", "ExecMainStatus", user=True)
    machine.run("systemctl --user reset-failed cronplus", user=True, check=False)

    name = key.split(":", maxsplit=1)[0]
    assert refused.returncode == 2
    assert f"jobs.big.limits.{name}: {name} cannot be enforced in a scope:" in refused.stderr
    assert started.returncode != 0
    assert shown == {"ActiveState": "failed", "ExecMainStatus": "2"}

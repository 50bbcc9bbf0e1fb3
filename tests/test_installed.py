"""The wheel as a new user gets it: every file of the package inside, and every command of
the README run from a fresh virtual environment outside the checkout, on the sample
crontab, and on a cluster crontab before and after the ``cluster`` extra is installed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import installed
import pytest
from conftest import clean_env

PACKAGE = installed.CHECKOUT / "cronplus"


def package_files() -> set[str]:
    """Every file of the package folder, as the wheel names it."""
    return {
        path.relative_to(installed.CHECKOUT).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_wheel_holds_every_file_of_the_package_folder() -> None:
    with zipfile.ZipFile(installed.wheel()) as wheel:
        inside = {name for name in wheel.namelist() if name.startswith("cronplus/")}

    assert package_files() - inside == set()
    assert {
        "cronplus/cluster/pg/store.py",
        "cronplus/config/cronplus.schema.json",
        "cronplus/py.typed",
    } <= inside
    assert {f"cronplus/daemon/service_templates/{name}" for name in ("cronplus.service",)} <= inside


class Operator:
    """A shell in a folder of its own, with the installed ``cronplus`` first on PATH."""

    def __init__(self, home: Path, bin_dir: Path) -> None:
        self.home, self.bin = home, bin_dir
        path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
        self.env = {**clean_env(home), "PATH": path, "HOME": str(home)}
        self.env.pop("VIRTUAL_ENV", None)
        self.env.pop("PYTHONPATH", None)

    def run(self, *args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["cronplus", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.home,
            timeout=120,
            check=False,
        )
        assert done.returncode in ok, f"cronplus {' '.join(args)}: {done.returncode}\n{done}"
        assert "Traceback" not in done.stderr, done.stderr
        return done

    @contextlib.contextmanager
    def daemon(self, *args: str) -> Iterator[subprocess.Popen[str]]:
        """A daemon of this installation, once it has started; stopped with SIGTERM (exit 0)."""
        log = (self.home / "daemon.log").open("w")
        proc = subprocess.Popen(
            ["cronplus", *args, "daemon"],
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
            env=self.env,
            cwd=self.home,
        )
        try:
            deadline = time.monotonic() + 30
            while "cronplus daemon started" not in self.log():
                assert proc.poll() is None, self.log()
                assert time.monotonic() < deadline, self.log()
                time.sleep(0.05)
            yield proc
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, self.log()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            log.close()

    def log(self) -> str:
        return (self.home / "daemon.log").read_text()


@pytest.fixture
def operator(tmp_path: Path) -> Operator:
    """A fresh virtual environment with plain ``cronplus`` (no extras), and a home
    folder holding a copy of the sample crontab and its script."""
    bin_dir = installed.new_venv(tmp_path / "venv")
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(installed.CHECKOUT / "crontab.yaml", home / "crontab.yaml")
    shutil.copytree(installed.CHECKOUT / "scripts", home / "scripts")
    return Operator(home, bin_dir)


def test_every_readme_command_runs_on_the_sample_from_the_installed_wheel(
    operator: Operator,
) -> None:
    where = operator.run("--version").stdout
    assert where.startswith("cronplus, version ")
    assert not Path(shutil.which("cronplus", path=operator.env["PATH"]) or "").is_relative_to(
        installed.CHECKOUT
    )

    assert operator.run("validate").stdout == "OK: 6 jobs\n"
    assert "disk-report" in operator.run("list").stdout
    assert len(json.loads(operator.run("list", "--json").stdout)) == 6
    fires = json.loads(operator.run("next", "disk-report", "-n", "3", "--json").stdout)
    assert [fire["job"] for fire in fires] == ["disk-report"] * 3
    once = json.loads(
        operator.run(
            "run-once", "--at", "2026-12-07T10:15:00Z", "--job", "disk-report", "--json"
        ).stdout
    )
    assert [(run["job"], run["outcome"]) for run in once["runs"]] == [("disk-report", "succeeded")]
    assert "succeeded" in operator.run("run", "hourly-spread").stdout
    history = json.loads(operator.run("history", "--json").stdout)
    assert {row["job"] for row in history} == {"disk-report", "hourly-spread"}
    assert "schema at version" in operator.run("db", "migrate").stdout

    with operator.daemon():
        status = json.loads(operator.run("status", "--json").stdout)
        assert len(status["jobs"]) == 6
        assert operator.run("reload").stdout.startswith("reloaded ")
        ran = operator.run("run", "disk-report", "--via-daemon").stdout
        assert "succeeded" in ran
    assert "cronplus daemon stopped" in operator.log()

    for kind in ("--user", "--system", "--launchd"):
        destination = {"--system": Path("/etc/systemd/system/cronplus.service")}.get(kind)
        before = destination.read_bytes() if destination and destination.exists() else None
        preview = operator.run("service", "install", kind, "--print")
        first = preview.stderr.splitlines()[0]  # then the commands that would follow
        written = Path(first.removeprefix("would write ").removesuffix(", then run:"))
        assert first.startswith("would write ")
        assert str(operator.bin / "cronplus") in preview.stdout
        if destination is None:  # in the home folder: nothing may be there
            assert written.is_relative_to(operator.home)
            assert not written.exists()
        else:
            assert written == destination
            assert (destination.read_bytes() if destination.exists() else None) == before


CLUSTER = """\
settings:
  cluster:
    dsn: {{from_env: CRONPLUS_TEST_CLUSTER_DSN}}
    node: {node}
jobs:
  tick:
    schedule: "0 3 * * *"
    timezone: UTC
    command: ["true"]
"""


def test_a_cluster_crontab_needs_the_extra_then_runs_its_commands(
    operator: Operator, postgres_dsn: str
) -> None:
    (operator.home / "cluster.yaml").write_text(CLUSTER.format(node="only"))
    operator.env["CRONPLUS_TEST_CLUSTER_DSN"] = postgres_dsn

    refused = operator.run("-c", "cluster.yaml", "validate", ok=(2,))
    assert "install the extra: pip install 'cronplus[cluster]'" in refused.stderr
    installed.add(operator.bin.parent, "cronplus[cluster]")

    assert operator.run("-c", "cluster.yaml", "validate").stdout == "OK: 1 jobs\n"
    assert "schema at version" in operator.run("-c", "cluster.yaml", "db", "migrate").stdout
    with operator.daemon("-c", "cluster.yaml"):
        nodes = json.loads(operator.run("-c", "cluster.yaml", "cluster", "status", "--json").stdout)
        assert [(n["node"], n["state"]) for n in nodes["nodes"]] == [("only", "live")]
        assert nodes["nodes"][0]["refusing"] is None
        assert abs(nodes["nodes"][0]["clock_offset_s"] or 0.0) < 1.0  # one host: one clock
        deployed = operator.run("-c", "cluster.yaml", "cluster", "deploy").stdout
        assert f"cluster definitions: {nodes['this_file']} (already)" in deployed
        status = json.loads(operator.run("-c", "cluster.yaml", "status", "--json").stdout)
        assert [job["job"] for job in status["jobs"]] == ["tick"]
    assert "Traceback" not in operator.log()

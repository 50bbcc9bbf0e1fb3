"""The layout rule of DESIGN section 6 is enforced by a lint, not by good intentions."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBES = {
    "subprocess": "import subprocess\n\nsubprocess.run(['true'], check=True)\n",
    "sleep": "import time\n\ntime.sleep(1)\n",
    "now": "from datetime import UTC, datetime\n\nprint(datetime.now(UTC))\n",
    "os.posix_spawn": "import os\n\nos.posix_spawn('/bin/true', ['true'], {})\n",
}


def ruff(path: Path) -> subprocess.CompletedProcess[str]:
    config = str(ROOT / "pyproject.toml")
    args = ["check", "--no-cache", "--config", config, "--select", "TID251", str(path)]
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize("name", sorted(PROBES), ids=sorted(PROBES))
def test_the_pure_core_may_not_read_the_clock_sleep_or_start_processes(
    name: str, tmp_path: Path
) -> None:
    probe = tmp_path / "cronplus" / "engine" / "engine.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(PROBES[name])
    done = ruff(probe)
    assert done.returncode == 1
    assert "TID251" in done.stdout


@pytest.mark.parametrize("module", ["clock.py", "run/runner.py"])
def test_only_the_clock_and_the_runner_are_exempt(module: str) -> None:
    done = ruff(ROOT / "cronplus" / module)
    assert done.returncode == 0, done.stdout


# --- the directions between the parts (pyproject.toml, [tool.importlinter]) ------------------

BREAKS = {
    "core-imports-cli": ("core/plan.py", "from cronplus.cli import main", "each part imports"),
    "run-imports-the-engine": ("run/capture.py", "import cronplus.engine.engine", "each part"),
    "a-circle-inside-a-part": ("engine/admission.py", "import cronplus.engine.engine", "circles"),
    "psycopg-outside-pg": ("state/sqlite.py", "import psycopg", "psycopg"),
}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).with_name("lint-imports")
    args = [str(lint), "--no-cache", "--config", str(root / "pyproject.toml")]
    return subprocess.run(args, capture_output=True, text=True, cwd=root, check=False)


def copy_of_the_package(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "cronplus", tmp_path / "cronplus", ignore=ignore)
    return tmp_path


def test_the_parts_keep_their_directions() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout
    assert "5 kept, 0 broken" in done.stdout


@pytest.mark.parametrize("name", sorted(BREAKS), ids=sorted(BREAKS))
def test_an_import_against_the_directions_breaks_a_contract(name: str, tmp_path: Path) -> None:
    module, line, contract = BREAKS[name]
    root = copy_of_the_package(tmp_path)
    target = root / "cronplus" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")

    done = lint_imports(root)

    assert done.returncode == 1, done.stdout
    broken = [row for row in done.stdout.splitlines() if " BROKEN" in row]
    assert any(contract in row for row in broken), done.stdout

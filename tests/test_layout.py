"""The layout rule of DESIGN section 6 is enforced by a lint, not by good intentions."""

from __future__ import annotations

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

"""The daemon's first load runs in a forked child (``forkload``, ``runner.call_in_child``):
the same ``Crontab`` or the same errors as ``loader.load``, computed elsewhere, and computed
here whenever the child cannot be trusted."""

from __future__ import annotations

import os
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from cronplus.config import loader
from cronplus.core.model import ConfigError
from cronplus.daemon import forkload
from cronplus.run.runner import call_in_child

RICH = """\
settings:
  max_concurrent: 4
  history_keep: 10
defaults:
  timezone: Europe/Berlin
  env: {LANG: C.UTF-8}
  retries: 2
notifiers:
  ops:
    command: ["true"]
jobs:
  backup:
    schedule: "30 2 * * *"
    command: [tar, czf, /tmp/backup.tgz, /etc]
    env: {TOKEN: "s3cret"}
    timeout: 10m
    on_failure: [ops]
    alert_if_no_success_for: 2d
  report:
    schedule: "H H * * 1-5"
    timezone: America/New_York
    command: "echo report"
    overlap: replace
    catchup: all
    success_codes: [0, 3]
  ping:
    schedule: "*/5 * * * *"
    command: ["true"]
    limits: {memory: 64M, open_files: 256}
"""

BROKEN = """\
jobs:
  backup:
    schedule: "61 * * * *"
    command: [tar]
    retries: three
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path


def write(folder: Path, text: str) -> Path:
    path = folder / "crontab.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_crontab_loaded_in_a_child_equals_one_loaded_here(env: Path) -> None:
    path = write(env, RICH)
    here = loader.load(path)
    apart = forkload.load(path)
    assert apart == here
    assert [job.name for job in apart.jobs] == ["backup", "report", "ping"]
    assert apart.jobs[0].env["TOKEN"] == "s3cret"


def test_a_bad_crontab_raises_the_same_errors_from_the_child(env: Path) -> None:
    path = write(env, BROKEN)
    with pytest.raises(ConfigError) as here:
        loader.load(path)
    with pytest.raises(ConfigError) as apart:
        forkload.load(path)
    assert apart.value.issues == here.value.issues
    assert str(apart.value) == str(here.value)


def test_the_child_computes_while_this_process_runs_meanwhile() -> None:
    calls: list[int] = []
    pid = call_in_child(os.getpid, meanwhile=lambda: calls.append(os.getpid()))
    assert pid != os.getpid()
    assert calls == [os.getpid()]


def fails_in_the_child_only(parent: int) -> Callable[[], str]:
    def compute() -> str:
        if os.getpid() != parent:
            raise RuntimeError("the child breaks")
        return "computed here"

    return compute


def unpicklable() -> Callable[[], int]:
    return lambda: 7


@pytest.mark.parametrize(
    ("compute", "check"),
    [
        (fails_in_the_child_only(os.getpid()), lambda result: result == "computed here"),
        (unpicklable, lambda result: callable(result) and result() == 7),
    ],
    ids=["child-raises", "result-cannot-be-pickled"],
)
def test_what_the_child_cannot_send_back_is_computed_here(
    compute: Callable[[], object], check: Callable[[object], bool]
) -> None:
    assert check(call_in_child(compute))


def test_an_error_of_the_computation_itself_is_raised_here_with_its_own_traceback() -> None:
    def broken() -> None:
        raise ValueError("broken everywhere")

    with pytest.raises(ValueError, match="broken everywhere"):
        call_in_child(broken)


def test_with_another_thread_running_nothing_is_forked() -> None:
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert call_in_child(os.getpid) == os.getpid()
    finally:
        stop.set()
        other.join()

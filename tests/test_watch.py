"""ConfigWatcher against real files: every case runs with inotify and with the stat poll."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from cronplus.daemon.watch import ConfigWatcher

SETTLE = 0.05
POLL = 0.05
NOTICE_WITHIN = 2.0
"""DESIGN section 5's promise; the tests wait this long at most for a report."""
QUIET = 0.2
"""How long a test keeps listening after a report, to catch a second one."""
SILENCE = 0.5
"""How long a test listens to prove nothing is reported."""

KINDS = pytest.mark.parametrize("force_poll", [False, True], ids=["inotify", "poll"])


class Calls:
    """The on_change callback: counts calls and lets a test wait for them."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1

    async def reach(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + NOTICE_WITHIN
        while self.count < count and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert self.count >= count, f"{count} report(s) expected, {self.count} came"


@asynccontextmanager
async def watching(
    path: Path, *, force_poll: bool, settle: float = SETTLE
) -> AsyncIterator[tuple[ConfigWatcher, Calls]]:
    calls = Calls()
    watcher = ConfigWatcher(
        path, on_change=calls, force_poll=force_poll, settle=settle, poll_interval=POLL
    )
    watcher.start()
    try:
        yield watcher, calls
    finally:
        watcher.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await scenario()

    asyncio.run(main())


def write(path: Path, text: str, mode: str = "w") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open(mode) as file:
        file.write(text)


def relink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically: ``ln -sfn target tmp && mv -T tmp link``."""
    temporary = link.with_name(link.name + ".tmp")
    temporary.symlink_to(target)
    os.replace(temporary, link)


def count_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- the cases: files laid out before the watcher starts, then changed while it runs ---


@dataclass(frozen=True, kw_only=True)
class Case:
    arrange: Callable[[Path], Path]
    """Makes the files under the root; returns the crontab path to watch."""
    act: Callable[[Path], None]
    """Changes files under the root while the watcher runs."""
    reports: int


def plain(root: Path) -> Path:
    write(root / "crontab.yaml", "jobs: {}\n")
    return root / "crontab.yaml"


def write_in_place(root: Path) -> None:
    # Several events (two close-writes and an attrib) that are one save.
    write(root / "crontab.yaml", "jobs:\n")
    write(root / "crontab.yaml", "  backup: {}\n", mode="a")
    os.chmod(root / "crontab.yaml", 0o600)


def write_temp_then_rename(root: Path) -> None:
    write(root / ".crontab.yaml.swp", "jobs:\n  backup: {}\n")
    os.replace(root / ".crontab.yaml.swp", root / "crontab.yaml")


def rename_away_then_write(root: Path) -> None:
    # vim with 'backupcopy=no': the old file becomes the backup, a new one is written.
    os.replace(root / "crontab.yaml", root / "crontab.yaml~")
    write(root / "crontab.yaml", "jobs:\n  backup: {}\n")


def linked(root: Path) -> Path:
    write(root / "a.yaml", "jobs: {}\n")
    write(root / "b.yaml", "jobs:\n  backup: {}\n")
    (root / "crontab.yaml").symlink_to("a.yaml")
    return root / "crontab.yaml"


def linked_elsewhere(root: Path) -> Path:
    write(root / "shared" / "a.yaml", "jobs: {}\n")
    (root / "etc").mkdir()
    (root / "etc" / "crontab.yaml").symlink_to("../shared/a.yaml")
    return root / "etc" / "crontab.yaml"


def configmap(root: Path) -> Path:
    """The layout a Kubernetes ConfigMap volume has: crontab.yaml -> ..data/ -> ..v1/."""
    write(root / "..v1" / "crontab.yaml", "jobs: {}\n")
    (root / "..data").symlink_to("..v1")
    (root / "crontab.yaml").symlink_to("..data/crontab.yaml")
    return root / "crontab.yaml"


def configmap_update(root: Path) -> None:
    write(root / "..v2" / "crontab.yaml", "jobs:\n  backup: {}\n")
    relink(root / "..data", "..v2")
    shutil.rmtree(root / "..v1")


def nested(root: Path) -> Path:
    write(root / "etc" / "crontab.yaml", "jobs: {}\n")
    return root / "etc" / "crontab.yaml"


def replace_folder(root: Path) -> None:
    write(root / "etc.new" / "crontab.yaml", "jobs:\n  backup: {}\n")
    os.replace(root / "etc", root / "etc.old")
    os.replace(root / "etc.new", root / "etc")


def not_there_yet(root: Path) -> Path:
    return root / "later" / "crontab.yaml"


def touch_neighbours(root: Path) -> None:
    write(root / "notes.txt", "hello\n")
    write(root / "crontab.yaml.bak", "jobs: {}\n")
    os.replace(root / "notes.txt", root / "notes.old")
    os.unlink(root / "crontab.yaml.bak")


CASES = {
    "an in-place write": Case(arrange=plain, act=write_in_place, reports=1),
    "an editor's write to a temp file and rename": Case(
        arrange=plain, act=write_temp_then_rename, reports=1
    ),
    "an editor's rename to a backup and write": Case(
        arrange=plain, act=rename_away_then_write, reports=1
    ),
    "a symlink swap": Case(
        arrange=linked, act=lambda root: relink(root / "crontab.yaml", "b.yaml"), reports=1
    ),
    "a write to the symlink's target": Case(
        arrange=linked, act=lambda root: write(root / "a.yaml", "jobs:\n"), reports=1
    ),
    "a write to a target in another folder": Case(
        arrange=linked_elsewhere,
        act=lambda root: write(root / "shared" / "a.yaml", "jobs:\n"),
        reports=1,
    ),
    "a ConfigMap ..data swap": Case(arrange=configmap, act=configmap_update, reports=1),
    "the crontab's folder replaced": Case(arrange=nested, act=replace_folder, reports=1),
    "a crontab whose folder appears later": Case(
        arrange=not_there_yet,
        act=lambda root: write(root / "later" / "crontab.yaml", "jobs: {}\n"),
        reports=1,
    ),
    "a chmod": Case(
        arrange=plain, act=lambda root: os.chmod(root / "crontab.yaml", 0o640), reports=0
    ),
    "other files in the folder changing": Case(arrange=plain, act=touch_neighbours, reports=0),
    "a write to a file the link does not point to": Case(
        arrange=linked, act=lambda root: write(root / "b.yaml", "jobs:\n"), reports=0
    ),
}


@KINDS
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_it_reports_a_change_once_and_nothing_else(
    tmp_path: Path, case: Case, force_poll: bool
) -> None:
    path = case.arrange(tmp_path)

    async def scenario() -> None:
        async with watching(path, force_poll=force_poll) as (_watcher, calls):
            case.act(tmp_path)
            if case.reports:
                await calls.reach(case.reports)
            await asyncio.sleep(QUIET if case.reports else SILENCE)
            assert calls.count == case.reports

    run(scenario)


# --- sequences --------------------------------------------------------------------------


@KINDS
def test_a_vanished_crontab_is_not_reported_but_its_return_is(
    tmp_path: Path, force_poll: bool
) -> None:
    path = plain(tmp_path)

    async def scenario() -> None:
        async with watching(path, force_poll=force_poll) as (_watcher, calls):
            path.unlink()
            await asyncio.sleep(QUIET)
            assert calls.count == 0
            write(path, "jobs:\n  backup: {}\n")
            await calls.reach(1)
            await asyncio.sleep(QUIET)
            assert calls.count == 1

    run(scenario)


@KINDS
def test_it_follows_the_symlink_to_its_new_target(tmp_path: Path, force_poll: bool) -> None:
    path = linked_elsewhere(tmp_path)
    write(tmp_path / "shared" / "b.yaml", "jobs:\n  backup: {}\n")

    async def scenario() -> None:
        async with watching(path, force_poll=force_poll) as (_watcher, calls):
            relink(path, "../shared/b.yaml")
            await calls.reach(1)
            write(tmp_path / "shared" / "a.yaml", "jobs:\n  the old target: {}\n")
            await asyncio.sleep(QUIET)
            assert calls.count == 1
            write(tmp_path / "shared" / "b.yaml", "jobs:\n")
            await calls.reach(2)

    run(scenario)


@KINDS
def test_it_notices_every_configmap_update_in_a_row(tmp_path: Path, force_poll: bool) -> None:
    path = configmap(tmp_path)

    async def scenario() -> None:
        async with watching(path, force_poll=force_poll) as (_watcher, calls):
            for version in range(2, 5):
                write(tmp_path / f"..v{version}" / "crontab.yaml", "jobs: {}\n" * version)
                relink(tmp_path / "..data", f"..v{version}")
                shutil.rmtree(tmp_path / f"..v{version - 1}")
                await calls.reach(version - 1)
            await asyncio.sleep(QUIET)
            assert calls.count == 3

    run(scenario)


@KINDS
def test_a_save_that_never_pauses_is_reported_while_it_goes_on(
    tmp_path: Path, force_poll: bool
) -> None:
    path = plain(tmp_path)

    async def scenario() -> None:
        async with watching(path, force_poll=force_poll, settle=0.05) as (_watcher, calls):
            # A write every 20 ms never leaves the 50 ms settle quiet; the cap of ten
            # settles (0.5 s) must still bring a report while the writes go on (2 s at most).
            for _ in range(100):
                write(path, "#\n", mode="a")
                await asyncio.sleep(0.02)
                if calls.count:
                    break
            assert calls.count == 1

    run(scenario)


# --- lifecycle --------------------------------------------------------------------------


@KINDS
def test_close_stops_reports_and_releases_the_fd(tmp_path: Path, force_poll: bool) -> None:
    path = plain(tmp_path)

    async def scenario() -> None:
        before = count_fds()
        calls = Calls()
        watcher = ConfigWatcher(path, on_change=calls, force_poll=force_poll, poll_interval=POLL)
        watcher.start()
        assert count_fds() == before + (watcher.kind == "inotify")
        write(path, "jobs:\n  backup: {}\n")
        watcher.close()
        watcher.close()
        assert count_fds() == before
        await asyncio.sleep(SILENCE)
        assert calls.count == 0

    run(scenario)


@pytest.mark.parametrize(
    ("force_poll", "kind"), [(False, "inotify"), (True, "poll")], ids=["linux", "forced"]
)
def test_the_kind_is_inotify_on_linux_unless_poll_is_forced(
    tmp_path: Path, force_poll: bool, kind: str
) -> None:
    async def scenario() -> None:
        async with watching(plain(tmp_path), force_poll=force_poll) as (watcher, _calls):
            assert watcher.kind == kind
            assert bool(watcher.fallback_reason) == force_poll

    run(scenario)


def test_it_polls_when_inotify_cannot_be_set_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = plain(tmp_path)

    async def scenario() -> None:
        calls = Calls()
        watcher = ConfigWatcher(path, on_change=calls, poll_interval=POLL)
        # Out of file descriptors: the next fd number would be at the limit, so
        # inotify_init1 fails with EMFILE.
        lowest_free = os.open(os.devnull, os.O_RDONLY)
        os.close(lowest_free)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
        try:
            watcher.start()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        try:
            assert watcher.kind == "poll"
            assert "inotify_init1" in watcher.fallback_reason
            write(path, "jobs:\n  backup: {}\n")
            await calls.reach(1)
        finally:
            watcher.close()

    with caplog.at_level(logging.WARNING, logger="cronplus.daemon.watch"):
        run(scenario)
    assert [str(path) in record.getMessage() for record in caplog.records] == [True]


UNWATCHABLE_CHILD = """
import asyncio, json, os, sys
from pathlib import Path
from cronplus.daemon.watch import ConfigWatcher

async def reach(seen: list[str], count: int) -> None:
    for _ in range(200):
        if len(seen) >= count:
            return
        await asyncio.sleep(0.01)

async def main() -> None:
    root = Path(sys.argv[1])
    seen = []
    watcher = ConfigWatcher(
        root / "crontab.yaml",
        on_change=lambda: seen.append(watcher.kind),
        settle=0.05,
        poll_interval=0.05,
    )
    watcher.start()
    started = watcher.kind
    (root / "tmp-link").symlink_to("locked/b.yaml")
    os.replace(root / "tmp-link", root / "crontab.yaml")
    await reach(seen, 1)
    (root / "locked" / "b.yaml").write_text("jobs:\\n  backup: {}\\n")
    await reach(seen, 2)
    watcher.close()
    print(json.dumps({"started": started, "seen": seen, "reason": watcher.fallback_reason}))

asyncio.run(main())
"""


def test_it_falls_back_to_polling_when_a_new_target_cannot_be_watched(tmp_path: Path) -> None:
    path = linked(tmp_path)
    write(tmp_path / "locked" / "b.yaml", "jobs:\n")
    (tmp_path / "locked").chmod(0o300)  # entries can be reached, the folder not read
    command = [sys.executable, "-c", UNWATCHABLE_CHILD, str(tmp_path)]
    if os.geteuid() == 0:
        # Root reads any folder; without capabilities it obeys the mode bits like anyone.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root, and no setpriv (util-linux) to drop capabilities")
        command = [setpriv, "--bounding-set=-all", "--", *command]
    try:
        child = subprocess.run(command, capture_output=True, text=True, timeout=10)
    finally:
        (tmp_path / "locked").chmod(0o700)
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    assert report["started"] == "inotify"
    assert report["seen"] == ["poll", "poll"]
    assert "Permission denied" in report["reason"]
    assert str(path) in child.stderr  # the warning names the crontab it now polls for


@pytest.mark.parametrize(
    ("settle", "poll_interval", "named"),
    [
        (0.0, 1.0, "settle"),
        (-1.0, 1.0, "settle"),
        (0.1, 0.0, "poll_interval"),
        (0.1, float("nan"), "poll_interval"),
    ],
    ids=["no settle", "negative settle", "no poll interval", "nan poll interval"],
)
def test_it_rejects_a_timing_that_is_not_positive(
    tmp_path: Path, settle: float, poll_interval: float, named: str
) -> None:
    with pytest.raises(ValueError, match=f"{named}: expected a positive number of seconds"):
        ConfigWatcher(
            tmp_path / "crontab.yaml",
            on_change=Calls(),
            settle=settle,
            poll_interval=poll_interval,
        )


def test_it_cannot_be_started_twice_or_after_close(tmp_path: Path) -> None:
    async def scenario() -> None:
        watcher = ConfigWatcher(plain(tmp_path), on_change=Calls())
        watcher.start()
        with pytest.raises(RuntimeError, match="already started"):
            watcher.start()
        watcher.close()
        with pytest.raises(RuntimeError, match="is closed"):
            watcher.start()

    run(scenario)

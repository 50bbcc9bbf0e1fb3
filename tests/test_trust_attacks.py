"""A local attacker against the files a root daemon trusts and the folder it keeps state in.

Every attack is played for real: the attacker is a second uid (``attacker.py``) whose own
processes plant, swap and link files; the daemon is the installed ``cronplus`` run as root,
or ``loader.load`` / ``SqliteStore.open`` in this root process where one call is the point.
A win would be root running the attacker's job (it writes a marker into a folder only root
may write), root reading a file the attacker chose, or root writing where the attacker chose.
docs/running.md ("Files cronplus trusts as root") and docs/state.md ("The state folder")
give the rules these tests hold the code to.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import installed
import pytest
from attacker import Attacker
from conftest import Cronplus, Daemon

from cronplus.config import loader
from cronplus.core.model import ConfigError, SmtpSettings, StateError
from cronplus.host import permissions
from cronplus.observe.notifiers import DeliveryError, Mailer
from cronplus.state.sqlite import SqliteStore

PYTHON = shutil.which("python3", path="/usr/bin:/usr/local/bin:/bin")
"""An interpreter the attacker may run (the test's own may sit below root's home)."""


def as_attacker(attacker: Attacker, code: str, *args: str) -> str:
    """Run ``code`` as the attacker; its output, or the test fails with its error."""
    if PYTHON is None:
        pytest.skip("no python3 the attacker's uid may run")
    done = attacker.run([PYTHON, "-I", "-c", textwrap.dedent(code), *args])
    assert done.returncode == 0, done.stderr
    return done.stdout


GOOD = """\
settings: {{state: {state}}}
jobs:
  good: {{schedule: "@yearly", command: "true"}}
"""
EVIL = """\
settings: {{state: {state}}}
jobs:
  good: {{schedule: "@yearly", command: "true"}}
  evil: {{schedule: "* * * * * *", command: "id -u >> {marker}"}}
"""

SWAPPER = """\
# As the attacker, in the crontab's folder: crontab.yaml leads to root's file through a
# chain of 38 symlinks (checking by path walks it slowly), and the last link's place, the
# tip, flips between root's file and the attacker's: a symlink swap, an atomic exchange
# (renameat2 RENAME_EXCHANGE), a hard link of the attacker's file over the name.
import ctypes, os, sys, time
os.chdir(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)

def exchange(a, b):
    if libc.renameat2(-100, a.encode(), -100, b.encode(), 2) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")

def point(name, target):
    os.symlink(target, name + ".tmp")
    os.rename(name + ".tmp", name)

os.rename("crontab.yaml", "good.yaml")
point("tip", "good.yaml")
for i in range(38, 0, -1):
    point(f"l{i}", "tip" if i == 38 else f"l{i + 1}")
point("crontab.yaml", "l1")
end, swaps = time.monotonic() + float(sys.argv[2]), 0
while time.monotonic() < end:
    for _ in range(100):
        point("tip", "evil.yaml")
        point("tip", "good.yaml")
    os.rename("good.yaml", "tip")
    for _ in range(100):
        exchange("tip", "evil.yaml")
        exchange("tip", "evil.yaml")
    os.rename("tip", "good.yaml")
    point("tip", "good.yaml")
    for _ in range(100):
        os.link("evil.yaml", "tip.tmp")
        os.rename("tip.tmp", "tip")
        point("tip", "good.yaml")
    swaps += 600
print(swaps)
"""


def reload_outcomes(daemon: Daemon) -> tuple[list[str], list[str]]:
    """The ``added`` field of every accepted reload, and the message of every rejected one."""
    events = daemon.events()
    loaded = [str(e.get("added") or "") for e in events if e.get("event") == "reloaded"]
    rejected = [str(e["message"]) for e in events if e.get("event") == "reload_failed"]
    return loaded, rejected


def test_an_attacker_swapping_crontabs_in_the_folder_never_gets_one_loaded(
    attacker: Attacker, arena: Path, cronplus: Cronplus, daemons: Callable[..., Daemon]
) -> None:
    if PYTHON is None:
        pytest.skip("no python3 the attacker's uid may run")
    conf, marker = arena / "conf", arena / "won"
    conf.mkdir(mode=0o755)
    state = cronplus.dir / "state" / "state.db"
    cronplus.config = conf / "crontab.yaml"
    cronplus.write(GOOD.format(state=state))
    daemon = daemons()
    daemon.wait_event("started")
    (conf / "evil.yaml").write_text(EVIL.format(state=state, marker=marker))
    os.chown(conf / "evil.yaml", attacker.uid, attacker.gid)
    # Handed over once the daemon runs (it would not start on such a folder): from now on
    # the attacker may rename anything in it. Against the old check by path, this swapper
    # had 9 of 58 reloads in 90 s load its crontab.
    attacker.owns(conf)

    swapper = attacker.run([PYTHON, "-I", "-c", SWAPPER, str(conf), "10"])
    time.sleep(1.5)  # the last burst's reload

    assert swapper.returncode == 0, swapper.stderr
    loaded, rejected = reload_outcomes(daemon)
    assert not marker.exists(), marker.read_text()
    assert all("evil" not in added for added in loaded), loaded
    assert len(rejected) >= 4, daemon.text()  # about one a second: the watcher's burst cap
    refusal = (
        f"refusing to load as root: {conf}, a folder above {cronplus.config}, is owned by"
        f" {attacker.name} (uid {attacker.uid}), not root, who could swap what it holds;"
        f" fix: chown root {conf}"
    )
    assert all(refusal in message for message in rejected), rejected[:3]
    assert daemon.stop() == 0


# --- a crontab the attacker planted, linked or can swap -------------------------------------


def refusal_of(cronplus: Cronplus) -> str:
    done = cronplus.run("validate")
    assert done.returncode == 2, done.stdout
    prefix = f"{cronplus.config}:1:1: refusing to load as root: "
    assert done.stderr.startswith(prefix), done.stderr
    return done.stderr.removeprefix(prefix).strip()


def roots_crontab(path: Path) -> Path:
    path.write_text('jobs:\n  a: {schedule: "@daily", command: "true"}\n')
    path.chmod(0o644)
    return path


def test_a_crontab_in_a_folder_the_attacker_owns_is_refused_though_the_file_is_roots(
    attacker: Attacker, arena: Path, cronplus: Cronplus
) -> None:
    conf = attacker.owns(arena / "conf")
    cronplus.config = roots_crontab(conf / "crontab.yaml")

    assert refusal_of(cronplus) == (
        f"{conf}, a folder above {cronplus.config}, is owned by {attacker.name}"
        f" (uid {attacker.uid}), not root, who could swap what it holds; fix: chown root {conf}"
    )


def test_a_folder_the_attackers_group_may_write_is_refused(
    attacker: Attacker, arena: Path, cronplus: Cronplus
) -> None:
    conf = arena / "conf"
    conf.mkdir()
    os.chown(conf, 0, attacker.gid)
    conf.chmod(0o775)
    cronplus.config = roots_crontab(conf / "crontab.yaml")

    assert refusal_of(cronplus) == (
        f"{conf}, a folder above {cronplus.config}, is writable by its group (mode 0775),"
        f" who could swap what it holds; fix: chmod go-w {conf}"
    )


def test_a_symlink_through_a_folder_the_attacker_owns_is_refused(
    attacker: Attacker, arena: Path, cronplus: Cronplus
) -> None:
    theirs = attacker.owns(arena / "theirs")
    roots_crontab(theirs / "crontab.yaml")
    cronplus.config = arena / "crontab.yaml"
    cronplus.config.symlink_to(theirs / "crontab.yaml")

    assert refusal_of(cronplus).startswith(f"{theirs}, a folder above {cronplus.config}, is owned")


@pytest.fixture
def sticky(arena: Path) -> Path:
    """A folder like /tmp: root's, world-writable and sticky."""
    folder = arena / "sticky"
    folder.mkdir()
    folder.chmod(0o1777)
    return folder


def test_roots_crontab_in_a_sticky_folder_of_roots_loads(sticky: Path, cronplus: Cronplus) -> None:
    cronplus.config = roots_crontab(sticky / "crontab.yaml")

    done = cronplus.run("validate")

    assert (done.returncode, done.stdout) == (0, "OK: 1 jobs\n"), done.stderr


def test_a_symlink_the_attacker_plants_in_a_sticky_folder_is_refused(
    attacker: Attacker, arena: Path, sticky: Path, cronplus: Cronplus
) -> None:
    other = roots_crontab(arena / "other.yaml")  # root's, but not the file root was told to read
    cronplus.config = sticky / "crontab.yaml"
    as_attacker(
        attacker,
        "import os, sys; os.symlink(sys.argv[1], sys.argv[2])",
        str(other),
        str(cronplus.config),
    )

    assert refusal_of(cronplus) == (
        f"{cronplus.config}, a symlink, is owned by {attacker.name} (uid {attacker.uid}),"
        f" not root; fix: chown -h root {cronplus.config}"
    )


def test_a_crontab_the_attacker_plants_in_a_sticky_folder_is_refused(
    attacker: Attacker, sticky: Path, cronplus: Cronplus
) -> None:
    cronplus.config = sticky / "crontab.yaml"
    as_attacker(
        attacker,
        "import sys; open(sys.argv[1], 'w').write('jobs: {a: {schedule: x, command: x}}')",
        str(cronplus.config),
    )

    assert refusal_of(cronplus) == (
        f"{cronplus.config} is owned by {attacker.name} (uid {attacker.uid}), not root;"
        f" fix: chown root {cronplus.config}"
    )


def test_a_crontab_with_a_second_hard_link_is_refused(tmp_path: Path, cronplus: Cronplus) -> None:
    # The attacker cannot make this link where fs.protected_hardlinks is on (Linux's
    # default); where it is off, or on macOS, anyone may hard-link a file they cannot write.
    roots_crontab(cronplus.config)
    os.link(cronplus.config, tmp_path / "elsewhere.yaml")

    assert refusal_of(cronplus) == (
        f"{cronplus.config} has 2 hard links, and anyone may hard-link a file they cannot"
        f" write; fix: cp -p {cronplus.config} {cronplus.config}.new"
        f" && mv {cronplus.config}.new {cronplus.config}"
    )


def test_roots_own_symlinks_are_followed_as_a_configmaps_are(tmp_path: Path) -> None:
    (tmp_path / "..v1").mkdir()
    roots_crontab(tmp_path / "..v1" / "crontab.yaml")
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "crontab.yaml").symlink_to("..data/crontab.yaml")

    assert [job.name for job in loader.load(tmp_path / "crontab.yaml", env={}).jobs] == ["a"]


def test_dot_dot_after_a_symlink_leads_where_the_kernel_goes(tmp_path: Path) -> None:
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "file").write_text("beside the link's target\n")
    (tmp_path / "file").write_text("beside the link\n")
    (tmp_path / "link").symlink_to(tmp_path / "real" / "sub")

    read = permissions.read(tmp_path / "link" / ".." / "file", euid=0, cap=permissions.SECRET)

    assert read == b"beside the link's target\n"


# --- secrets the attacker planted or linked ---------------------------------------------------


def plant(attacker: Attacker, sticky: Path, how: str, secret_of_roots: Path) -> Path:
    """``sticky/planted``: the attacker's own file, or its symlink to a secret of root's."""
    planted = sticky / "planted"
    if how == "file":
        code = "import sys; open(sys.argv[2], 'w').write('LD_PRELOAD=/tmp/evil.so\\n')"
    else:
        code = "import os, sys; os.symlink(sys.argv[1], sys.argv[2])"
    as_attacker(attacker, code, str(secret_of_roots), str(planted))
    return planted


def why_planted(attacker: Attacker, planted: Path, how: str) -> str:
    who = f"{attacker.name} (uid {attacker.uid}), not root"
    if how == "file":
        return f"{planted} is owned by {who}; fix: chown root {planted}"
    return f"{planted}, a symlink, is owned by {who}; fix: chown -h root {planted}"


@pytest.fixture
def secret_of_roots(arena: Path) -> Path:
    private = arena / "private"
    private.mkdir(mode=0o700)
    secret = private / "secret"
    secret.write_text("ROOT_TOKEN=root-only-7f3a\n")
    secret.chmod(0o600)
    return secret


SOURCES = {
    "env_file": ("env_file: {path}", "jobs.a.env_file", "refusing to read variables as root: "),
    "from_file": (
        "env: {{API_TOKEN: {{from_file: {path}}}}}",
        "jobs.a.env.API_TOKEN",
        "refusing to read a secret as root: ",
    ),
}


@pytest.mark.parametrize("how", ["file", "symlink"])
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_an_env_file_or_from_file_the_attacker_planted_is_refused(
    attacker: Attacker, sticky: Path, secret_of_roots: Path, tmp_path: Path, source: str, how: str
) -> None:
    planted = plant(attacker, sticky, how, secret_of_roots)
    field, place, prefix = SOURCES[source]
    crontab = tmp_path / "crontab.yaml"
    crontab.write_text(
        f'jobs:\n  a:\n    schedule: "@daily"\n    command: "true"\n'
        f"    {field.format(path=planted)}\n"
    )

    with pytest.raises(ConfigError) as caught:
        loader.load(crontab, env={"HOME": str(tmp_path)})

    (issue,) = caught.value.issues
    assert (issue.path, issue.message) == (place, prefix + why_planted(attacker, planted, how))
    assert "root-only" not in str(caught.value)


@pytest.mark.parametrize("how", ["file", "symlink"])
def test_a_cluster_dsn_from_a_file_the_attacker_planted_is_refused(
    attacker: Attacker, sticky: Path, secret_of_roots: Path, tmp_path: Path, how: str
) -> None:
    planted = plant(attacker, sticky, how, secret_of_roots)
    crontab = tmp_path / "crontab.yaml"
    crontab.write_text(
        f"settings:\n  cluster: {{dsn: {{from_file: {planted}}}}}\n"
        'jobs:\n  a: {schedule: "@daily", command: "true"}\n'
    )

    with pytest.raises(ConfigError) as caught:
        loader.load(crontab, env={"HOME": str(tmp_path)})

    found = {issue.path: issue.message for issue in caught.value.issues}
    expected = "refusing to read a connection string as root: " + why_planted(
        attacker, planted, how
    )
    assert found["settings.cluster.dsn"] == expected


@pytest.mark.parametrize("how", ["file", "symlink"])
def test_an_smtp_password_file_the_attacker_planted_is_refused_at_each_send(
    attacker: Attacker, sticky: Path, secret_of_roots: Path, how: str
) -> None:
    planted = plant(attacker, sticky, how, secret_of_roots)
    smtp = SmtpSettings(
        host="mail.example.com", sender="cron@example.com", username="cron", password_file=planted
    )
    mailer = Mailer(smtp, env={}, host="here")
    try:
        with pytest.raises(DeliveryError) as caught:
            mailer.password()
    finally:
        mailer.close()

    expected = "refusing to read a password as root: " + why_planted(attacker, planted, how)
    assert str(caught.value) == f"settings.smtp.password_file: {expected}"


def test_a_secret_file_root_owns_in_a_private_folder_is_read(secret_of_roots: Path) -> None:
    smtp = SmtpSettings(
        host="mail.example.com",
        sender="cron@example.com",
        username="cron",
        password_file=secret_of_roots,
    )
    mailer = Mailer(smtp, env={}, host="here")
    try:
        assert mailer.password() == "ROOT_TOKEN=root-only-7f3a"
    finally:
        mailer.close()


# --- the state folder ---------------------------------------------------------------------------


def daemon_on_state(cronplus: Cronplus, state: Path) -> subprocess.CompletedProcess[str]:
    """``cronplus daemon`` on a crontab whose state is ``state``: it must refuse and exit."""
    cronplus.write(
        f'settings: {{state: {state}}}\njobs:\n  a: {{schedule: "@yearly", command: "true"}}\n'
    )
    return cronplus.run("daemon", timeout=30)


@pytest.fixture
def roots_file(arena: Path) -> Path:
    """A file of root's the attacker would like truncated or overwritten."""
    target = arena / "precious"
    target.write_text("root's data\n")
    target.chmod(0o600)
    return target


@pytest.mark.parametrize(
    "then_closed", [False, True], ids=["folder-still-open", "folder-closed-later"]
)
def test_a_lock_symlink_the_attacker_planted_truncates_nothing(
    attacker: Attacker,
    arena: Path,
    cronplus: Cronplus,
    roots_file: Path,
    then_closed: bool,
) -> None:
    folder = arena / "state"
    folder.mkdir()
    folder.chmod(0o777)
    as_attacker(
        attacker,
        "import os, sys; os.symlink(sys.argv[1], sys.argv[2])",
        str(roots_file),
        str(folder / "state.db.lock"),
    )
    if then_closed:  # the operator closed the folder, but kept what was planted in it
        folder.chmod(0o700)

    done = daemon_on_state(cronplus, folder / "state.db")

    assert done.returncode == 2
    if then_closed:
        lock = folder / "state.db.lock"
        assert done.stderr.strip() == (
            f"{lock}: is a symlink, and cronplus follows none in its state folder (it may point"
            f" at any file); fix: rm {lock}, and point settings.state at the real database if"
            " it led to one"
        )
    else:
        assert done.stderr.strip() == (
            f"{folder}: the state folder is open to its group and others (mode 0777), and must"
            f" be this user's alone; fix: chmod 700 {folder} (and check its files)"
        )
    assert roots_file.read_text() == "root's data\n"


@pytest.mark.parametrize("name", ["state.db", "state.db-wal", "state.db-shm", "state.db.writers"])
def test_a_state_file_the_attacker_planted_is_refused(
    attacker: Attacker, arena: Path, cronplus: Cronplus, roots_file: Path, name: str
) -> None:
    folder = arena / "state"
    folder.mkdir()
    folder.chmod(0o777)
    planted = folder / name
    as_attacker(attacker, "import sys; open(sys.argv[1], 'wb').close()", str(planted))
    folder.chmod(0o700)

    done = daemon_on_state(cronplus, folder / "state.db")

    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"{planted}: is owned by {attacker.name} (uid {attacker.uid}), not by root (uid 0),"
        f" whom cronplus runs as, so what it holds may be that user's; move it aside:"
        f" mv {planted} {planted}.broken; cronplus starts a fresh one"
    )
    assert os.stat(planted).st_size == 0  # nothing of root's was written into it


def test_a_wal_symlink_the_attacker_planted_is_refused(
    attacker: Attacker, arena: Path, cronplus: Cronplus, roots_file: Path
) -> None:
    folder = arena / "state"
    folder.mkdir()
    folder.chmod(0o777)
    wal = folder / "state.db-wal"
    as_attacker(
        attacker, "import os, sys; os.symlink(sys.argv[1], sys.argv[2])", str(roots_file), str(wal)
    )
    folder.chmod(0o700)

    done = daemon_on_state(cronplus, folder / "state.db")

    assert done.returncode == 2
    assert done.stderr.startswith(f"{wal}: is a symlink, and cronplus follows none"), done.stderr
    assert roots_file.read_text() == "root's data\n"


@pytest.mark.parametrize(
    ("mode", "group", "open_to"),
    [(0o700, "attacker", None), (0o770, "attacker", "its group"), (0o707, "root", "others")],
    ids=["owned-by-the-attacker", "group-writable", "world-writable"],
)
def test_a_state_folder_the_attacker_owns_or_may_write_is_refused(
    attacker: Attacker, arena: Path, cronplus: Cronplus, mode: int, group: str, open_to: str | None
) -> None:
    folder = arena / "state"
    folder.mkdir()
    os.chown(
        folder, attacker.uid if open_to is None else 0, attacker.gid if group == "attacker" else 0
    )
    folder.chmod(mode)

    done = daemon_on_state(cronplus, folder / "state.db")

    assert done.returncode == 2
    if open_to is None:
        assert done.stderr.startswith(
            f"{folder}: the state folder is owned by {attacker.name} (uid {attacker.uid}), not by"
            " root (uid 0), whom cronplus runs as"
        ), done.stderr
    else:
        assert done.stderr.strip() == (
            f"{folder}: the state folder is open to {open_to} (mode {mode:04o}), and must be"
            f" this user's alone; fix: chmod 700 {folder} (and check its files)"
        )
    assert os.listdir(folder) == []


def test_a_state_folder_below_a_folder_the_attacker_owns_is_refused(
    attacker: Attacker, arena: Path
) -> None:
    theirs = attacker.owns(arena / "theirs")

    with pytest.raises(StateError) as refused:
        SqliteStore.open(theirs / "state" / "state.db")

    assert str(refused.value) == (
        f"{theirs / 'state' / 'state.db'}: refusing the state folder: {theirs}, a folder above"
        f" {theirs / 'state'}, is owned by {attacker.name} (uid {attacker.uid}), not root, who"
        f" could swap what it holds; fix: chown root {theirs}"
    )


# --- sizes ------------------------------------------------------------------------------


def validate_rss(cronplus: Cronplus) -> tuple[int, str, float, int]:
    """``cronplus validate`` as a child: its exit code, stderr, seconds and peak RSS (KiB)."""
    started = time.monotonic()
    child = subprocess.Popen(
        [str(installed.script()), "-c", str(cronplus.config), "validate"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=cronplus.env,
    )
    assert child.stderr is not None
    with child.stderr:
        stderr = child.stderr.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, stderr, time.monotonic() - started, usage.ru_maxrss


def validate_rss_of(cronplus: Cronplus, text: str) -> tuple[int, str, float, int]:
    small = Cronplus(cronplus.dir / "small")
    small.dir.mkdir()
    small.config.write_text(text)
    return validate_rss(small)


def test_a_crontab_of_one_100_mb_line_is_refused_quickly_in_little_memory(
    cronplus: Cronplus,
) -> None:
    with cronplus.config.open("wb") as out:
        out.write(b"jobs: {}\n# ")
        block = b"x" * (1 << 20)
        for _ in range(100):
            out.write(block)
    _, _, _, baseline = validate_rss_of(
        cronplus, "jobs:\n  a: {schedule: '@daily', command: 'true'}\n"
    )

    code, stderr, seconds, rss = validate_rss(cronplus)

    assert (code, stderr) == (
        2,
        f"{cronplus.config}:1:1: cannot read: it is larger than 4 MiB, the most cronplus reads"
        " of a crontab\n",
    )
    assert rss < baseline + 20 * 1024, (rss, baseline)  # KiB: nothing of the 100 MB was read
    assert seconds < 10


def test_only_one_byte_past_the_cap_is_read_from_an_endless_stream(tmp_path: Path) -> None:
    fifo = tmp_path / "endless"
    os.mkfifo(fifo)
    written: list[int] = []

    def feed() -> None:
        fd = os.open(fifo, os.O_WRONLY)
        try:
            for _ in range(64):  # 4 MiB, if the reader read on
                written.append(os.write(fd, b"y" * 65536))
        except BrokenPipeError:
            pass
        finally:
            os.close(fd)

    writer = threading.Thread(target=feed)
    writer.start()
    cap = permissions.Cap("a test stream", 96 * 1024)
    try:
        with pytest.raises(permissions.TooLarge, match="larger than 96 KiB, the most cronplus"):
            permissions.read(fifo, euid=1000, cap=cap)  # as a user: a FIFO is not refused
    finally:
        writer.join(10)
    assert sum(written) <= cap.size + 2 * 65536  # what was read, and the pipe's buffer


@pytest.mark.parametrize(
    ("size", "fits"), [(1000, True), (1001, False)], ids=["at-the-cap", "one-past"]
)
def test_a_file_at_its_cap_is_read_and_one_byte_more_is_refused(
    tmp_path: Path, size: int, fits: bool
) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"z" * size)
    cap = permissions.Cap("a test file", 1000)

    if fits:
        assert permissions.read(path, euid=os.geteuid(), cap=cap) == b"z" * size
    else:
        with pytest.raises(permissions.TooLarge):
            permissions.read(path, euid=os.geteuid(), cap=cap)


def test_an_env_file_over_its_cap_is_a_config_error_naming_file_and_cap(tmp_path: Path) -> None:
    env_file = tmp_path / "big.env"
    env_file.write_text("A=" + "a" * (256 * 1024) + "\n")
    crontab = tmp_path / "crontab.yaml"
    crontab.write_text(
        'jobs:\n  a:\n    schedule: "@daily"\n    command: "true"\n    env_file: big.env\n'
    )

    with pytest.raises(ConfigError) as caught:
        loader.load(crontab, env={"HOME": str(tmp_path)})

    (issue,) = caught.value.issues
    assert issue.message == (
        f"cannot read {env_file}: it is larger than 256 KiB, the most cronplus reads of an env_file"
    )

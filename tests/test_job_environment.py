"""A job's environment is built, not inherited: a root daemon full of secrets (an SMTP
password, every job's from_env sources, a cluster DSN, cloud keys, root's PATH) starts a
`user:` job as a real unprivileged user, which dumps what it got; and a job of the
daemon's own user gets only cron's small environment and what it names."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from attacker import Attacker
from conftest import Cronplus, Daemon

SCRIPT = (  # written beside, then renamed: every second's attempt replaces it whole
    "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1] + '.new', 'w'));"
    " os.replace(sys.argv[1] + '.new', sys.argv[1])"
)
DAEMON_SECRETS = {
    "SMTP_PASSWORD": "smtp-pass-8d1e",
    "OTHER_SOURCE": "other-jobs-source-77a0",
    "MINE_SOURCE": "mine-source-51c3",
    "CRONPLUS_CLUSTER_DSN": "postgresql://cron:dsn-pass-2b9f@db/cron",
    "AWS_SECRET_ACCESS_KEY": "aws-key-6f42",
    "PATH": "/root/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}
DUMP = [
    "python3",
    "-c",
    "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))",
]
BUILT = {"PATH", "LANG", "TZ", "HOME", "USER", "LOGNAME", "SHELL"}
RUN = {"CRONPLUS_JOB", "CRONPLUS_SCHEDULED_AT", "CRONPLUS_ATTEMPT", "CRONPLUS_RUN_ID"}


def crontab(arena: Path, attacker: Attacker) -> str:
    return f"""\
settings:
  shutdown_grace: 2s
  smtp: {{host: mail.example, sender: cron@example.org, username: cron,
          password_env: SMTP_PASSWORD}}
jobs:
  theirs:
    schedule: "* * * * * *"
    user: {attacker.name}
    command: {json.dumps([*DUMP, str(arena / "theirs.json")])}
    workdir: {arena}
    env: {{MINE: {{from_env: MINE_SOURCE}}}}
  other:
    schedule: "0 0 1 1 *"
    command: "true"
    env: {{OTHER: {{from_env: OTHER_SOURCE}}}}
  mine:
    schedule: "0 0 1 1 *"
    command: {json.dumps([*DUMP, str(arena / "mine.json")])}
    inherit_env: [AWS_SECRET_ACCESS_KEY]
"""


def test_a_user_job_gets_none_of_the_root_daemons_environment(
    cronplus: Cronplus,
    daemons: Callable[..., Daemon],
    attacker: Attacker,
    arena: Path,
) -> None:
    attacker.owns(arena, 0o755)
    cronplus.env.update(DAEMON_SECRETS)
    cronplus.env["LANG"] = "C.UTF-8"
    cronplus.write(crontab(arena, attacker))
    daemon = daemons()
    dump = arena / "theirs.json"
    daemon.wait_for(dump.exists)
    assert daemon.stop() == 0

    got = json.loads(dump.read_text())

    assert set(got) - {"PWD", "LC_CTYPE"} == BUILT | RUN | {"MINE"}
    assert got["PATH"] == "/usr/local/bin:/usr/bin:/bin"  # never root's
    assert got["USER"] == got["LOGNAME"] == attacker.name
    assert got["MINE"] == "mine-source-51c3"  # the source it names, and no other
    text = json.dumps(got)
    for name, value in DAEMON_SECRETS.items():
        if name not in ("PATH", "MINE_SOURCE"):
            assert value not in text, name


def test_a_job_of_the_daemons_own_user_gets_crons_environment_and_what_it_names(
    cronplus: Cronplus, attacker: Attacker, arena: Path
) -> None:
    cronplus.env.update(DAEMON_SECRETS)
    cronplus.write(crontab(arena, attacker))

    done = cronplus.run("run", "mine")

    assert done.returncode == 0, done.stderr
    got = json.loads((arena / "mine.json").read_text())
    assert set(got) - {"PWD", "LC_CTYPE", "LANG", "TZ"} == (BUILT - {"LANG", "TZ"}) | RUN | {
        "AWS_SECRET_ACCESS_KEY"
    }
    assert got["PATH"] == DAEMON_SECRETS["PATH"]  # its own user's PATH is the daemon's
    assert got["HOME"] == "/root"  # from the user database, whatever HOME said
    for name in ("SMTP_PASSWORD", "OTHER_SOURCE", "MINE_SOURCE", "CRONPLUS_CLUSTER_DSN"):
        assert DAEMON_SECRETS[name] not in json.dumps(got), name

"""Secrets: where they come from, and that no output path shows one.

The end-to-end tests plant a secret in every source (an ``env`` value with a secret-looking
name, ``env_file:``, ``{from_file:}``, ``{from_env:}``, the daemon's own environment), run
a job that prints them all to stderr and fails, and then grep every output cronplus has for
them: log lines as text and JSON, ``list``, ``history``, ``validate``, error messages and
the alerts the engine's events raise.
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import Cronplus

from cronplus.clock import SystemClock
from cronplus.config import loader
from cronplus.core.model import ConfigError, ConfigIssue, Job, RunResult
from cronplus.engine.engine import Engine
from cronplus.observe.alerts import AlertBook
from cronplus.observe.logs import EventLog
from cronplus.run import secrets
from cronplus.run.runner import Runner
from cronplus.run.secrets import Secret
from cronplus.state.sqlite import SqliteStore

PLANTED = {
    "FROM_FILE_VAR": "plant-envfile-6a1f",
    "API_TOKEN": "plant-inline-93bd",
    "DB_PASSWORD": "plant-fromfile-0c57",
    "UPSTREAM": "plant-fromenv-41d0",
    "GITHUB_TOKEN": "plant-daemon-22e8",
}
CRONTAB = """\
jobs:
  leak:
    schedule: "@daily"
    env_file: vars.env
    inherit_env: [GITHUB_TOKEN]
    env:
      API_TOKEN: plant-inline-93bd
      DB_PASSWORD: {from_file: db.pass}
      UPSTREAM: {from_env: UPSTREAM_CREDENTIAL}
      GREETING: hello
    command: >-
      echo "$GREETING $FROM_FILE_VAR $API_TOKEN $DB_PASSWORD $UPSTREAM $GITHUB_TOKEN" >&2;
      exit 3
"""
HIDDEN_TAIL = "hello *** *** *** *** ***"


def plant_files(folder: Path) -> None:
    (folder / "vars.env").write_text("# from the vault\nexport FROM_FILE_VAR=plant-envfile-6a1f\n")
    (folder / "db.pass").write_text("plant-fromfile-0c57\n")


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        leaked = [value for value in PLANTED.values() if value in text]
        assert not leaked, f"{leaked} in:\n{text}"


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Cronplus:
    """A crontab with a secret from every source, whose job has failed once (made once per
    module: each output path below only reads it)."""
    cronplus = Cronplus(tmp_path_factory.mktemp("planted"))
    plant_files(cronplus.dir)
    cronplus.env["UPSTREAM_CREDENTIAL"] = PLANTED["UPSTREAM"]
    cronplus.env["GITHUB_TOKEN"] = PLANTED["GITHUB_TOKEN"]
    cronplus.write(CRONTAB)
    done = cronplus.run("run", "leak")
    assert done.returncode == 1, done.stderr
    assert f"stderr_tail={json.dumps(HIDDEN_TAIL)}" in done.stderr
    assert_no_secret(done.stdout, done.stderr)
    return cronplus


@pytest.mark.parametrize(
    "args",
    [
        ("--log-format", "json", "run", "leak"),
        ("history", "--json"),
        ("list",),
        ("list", "--json"),
        ("validate",),
    ],
    ids=["json-logs", "history-json", "list", "list-json", "validate"],
)
def test_no_output_path_shows_a_planted_secret(planted: Cronplus, args: tuple[str, ...]) -> None:
    done = planted.run(*args)

    assert done.returncode in (0, 1), done.stderr
    assert_no_secret(done.stdout, done.stderr)
    if args[-1] == "--json" and args[0] == "history":
        assert {row["stderr_tail"] for row in json.loads(done.stdout)} == {HIDDEN_TAIL}
    if "json" in args and "run" in args:
        failed = [json.loads(line) for line in done.stderr.splitlines() if "stderr_tail" in line]
        assert failed and all(event["stderr_tail"] == HIDDEN_TAIL for event in failed)


def test_error_messages_hide_secret_values_at_their_places(cronplus: Cronplus) -> None:
    plant_files(cronplus.dir)
    (cronplus.dir / "broken.env").write_text("OK=1\nno equals sign plant-envfile-6a1f\n")
    cronplus.write(
        """\
        jobs:
          bad:
            schedule: "@daily"
            command: "true"
            env_file: broken.env
            env:
              API_TOKEN: 918273645
              SECRET_PIN: 12:34:56
              DB_PASSWORD: {from_file: missing.pass}
              UPSTREAM: {from_env: NOT_SET_ANYWHERE}
        """
    )

    done = cronplus.run("validate")

    assert done.returncode == 2
    assert_no_secret(done.stderr)
    for hidden in ("918273645", "12:34:56", "45296"):  # 12:34:56 is 45296 in base 60
        assert hidden not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 5
    assert "env_file: " in lines[0] and "broken.env, line 2: expected NAME=VALUE" in lines[0]
    assert lines[1].endswith(
        'jobs.bad.env.API_TOKEN: expected a string, got the integer ***; quote it: "***"'
    )
    assert lines[2].endswith("reads unquoted *** as the base-60 integer ***")
    assert lines[3].endswith(
        f"cannot read {cronplus.dir / 'missing.pass'}: No such file or directory"
    )
    assert lines[4].endswith(
        "from_env: the environment variable NOT_SET_ANYWHERE is not set or empty"
    )


def test_alerts_raised_from_the_engine_carry_no_secret(tmp_path: Path) -> None:
    plant_files(tmp_path)
    (tmp_path / "crontab.yaml").write_text(CRONTAB)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    env |= {"UPSTREAM_CREDENTIAL": PLANTED["UPSTREAM"], "GITHUB_TOKEN": PLANTED["GITHUB_TOKEN"]}
    crontab = loader.load(tmp_path / "crontab.yaml", env=env)
    heard: list[RunResult] = []

    class Heard:
        def attempt_started(self, **_: Any) -> None:
            return

        def attempt_finished(self, *, job: Job, result: RunResult, **_: Any) -> None:
            heard.append(result)

        def slots_missed(self, **_: Any) -> None:
            return

    async def scenario() -> None:
        store = SqliteStore.open(tmp_path / "state.db")
        clock = SystemClock()
        engine = Engine(
            crontab,
            store=store,
            runner=Runner(),
            clock=clock,
            base_env=env,
            log=EventLog(),
            events=Heard(),
        )
        engine.start_slots([(crontab.job("leak"), clock.now())], now=clock.now())
        await engine.wait_idle()
        store.close()

    asyncio.run(scenario())
    book = AlertBook({})
    (result,) = heard
    now = datetime.now(UTC)
    alerts = book.attempt_finished(
        crontab.job("leak"), result, retry_at=None, stopped=False, now=now
    )

    assert result.stderr_tail == HIDDEN_TAIL
    assert alerts and all(alert.stderr_tail == HIDDEN_TAIL for alert in alerts)
    assert_no_secret(*(json.dumps(alert.body(host="h")) for alert in alerts))


# --- the pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("API_TOKEN", True),
        ("db_password", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("SSH_KEY_PATH", True),
        ("HOME", False),
        ("LANG", False),
        ("PASS", False),
    ],
    ids=str,
)
def test_a_name_looks_secret_by_its_words_in_any_case(name: str, secret: bool) -> None:
    assert secrets.looks_secret(name) is secret


def test_a_secret_is_its_value_to_the_job_and_stars_to_a_repr() -> None:
    job = Job(
        name="j",
        schedule="@daily",
        timezone=ZoneInfo("UTC"),
        command="true",
        env=secrets.mark({"API_TOKEN": "plant-inline-93bd", "LANG": "C"}),
    )

    assert (
        job.env["API_TOKEN"] == "plant-inline-93bd"
        and f"{job.env['API_TOKEN']}" == "plant-inline-93bd"
    )
    assert "plant-inline-93bd" not in repr(job)
    assert "'API_TOKEN': '***'" in repr(job) and "'LANG': 'C'" in repr(job)


@pytest.mark.parametrize(
    ("text", "envs", "expected"),
    [
        ("token=abcd1234!", [{"API_TOKEN": "abcd1234"}], "token=***!"),
        ("abcd abcdefgh", [{"A_KEY": "abcd", "B_KEY": "abcdefgh"}], "*** ***"),
        ("on off", [{"DEBUG_KEY": "on"}], "on off"),
        ("x plain y", [{"NAME": Secret("plain")}], "x *** y"),
        ("x plain y", [{"NAME": "plain"}], "x plain y"),
        ("daemon wins", [{"GH_TOKEN": "daemon"}, {"OTHER": "wins"}], "*** wins"),
    ],
    ids=["by-name", "longest-first", "too-short", "from-a-source", "not-secret", "daemon-env"],
)
def test_redaction_hides_every_secret_value_in_a_text(
    text: str, envs: list[dict[str, str]], expected: str
) -> None:
    assert secrets.redactor(*envs)(text) == expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("A=1\n\n# comment\n  B = x\n", None),
        ("A=1\nexport B=two words\n", {"A": "1", "B": "two words"}),
        (
            "A='quoted # not a comment'\nB=\"x\"\nC='\n",
            {"A": "quoted # not a comment", "B": "x", "C": "'"},
        ),
        ("A=$HOME\n", {"A": "$HOME"}),
        ("A=\n", {"A": ""}),
    ],
    ids=["space-around-equals-is-an-error", "export", "quotes", "no-expansion", "empty"],
)
def test_an_env_file_is_name_equals_value_lines(
    tmp_path: Path, content: str, expected: dict[str, str] | None
) -> None:
    path = tmp_path / "vars.env"
    path.write_text(content)
    if expected is None:
        with pytest.raises(ValueError, match=r"vars.env, line 4: expected NAME=VALUE"):
            secrets.read_env_file(path)
        return
    found = secrets.read_env_file(path)
    assert found.values == expected
    assert all(isinstance(value, Secret) for value in found.values.values())


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"from_env": "MISSING"}, "from_env: the environment variable MISSING is not set or empty"),
        ({"from_env": ""}, "from_env: expected a non-empty string"),
        ({"from_file": "empty.txt"}, "empty.txt is empty; expected the secret"),
        ({"from_vault": "x"}, "expected a string, or a mapping with one key, from_env: VARIABLE"),
        ({"from_env": "A", "from_file": "b"}, "expected a string, or a mapping with one key"),
    ],
    ids=["unset", "empty-name", "empty-file", "unknown-source", "two-sources"],
)
def test_a_bad_secret_source_says_what_was_expected(
    tmp_path: Path, value: dict[str, object], message: str
) -> None:
    (tmp_path / "empty.txt").write_text("\n")

    with pytest.raises(ValueError, match=message):
        secrets.from_source(value, env={}, folder=tmp_path)


def test_a_secret_file_loses_one_final_line_break_and_keeps_the_rest(tmp_path: Path) -> None:
    (tmp_path / "pass").write_text(" two words \n\n")

    assert secrets.from_source({"from_file": "pass"}, env={}, folder=tmp_path) == " two words \n"


def test_sources_and_secret_names_become_secrets_and_the_rest_stays_plain(tmp_path: Path) -> None:
    plant_files(tmp_path)
    path = tmp_path / "crontab.yaml"
    path.write_text(CRONTAB)

    job = loader.load(path, env={"HOME": str(tmp_path), "UPSTREAM_CREDENTIAL": "u-1234"}).job(
        "leak"
    )

    kinds = {name: isinstance(value, Secret) for name, value in job.env.items()}
    assert kinds == {
        "FROM_FILE_VAR": True,
        "API_TOKEN": True,
        "DB_PASSWORD": True,
        "UPSTREAM": True,
        "GREETING": False,
    }
    assert (job.env_file, job.env["UPSTREAM"]) == (tmp_path / "vars.env", "u-1234")


def test_an_issue_at_a_secrets_place_loses_the_value_however_short() -> None:
    issues = [
        ConfigIssue("f", 1, 1, "jobs.a.env.API_KEY", 'got 12; quote it: "12"'),
        ConfigIssue("f", 2, 1, "jobs.a.env.OTHER", "got 12"),
    ]

    hidden = secrets.hide_in_issues(issues, {"jobs.a.env.API_KEY": ["12"]})

    assert [issue.message for issue in hidden] == ['got ***; quote it: "***"', "got 12"]


def test_env_values_merge_file_then_defaults_then_the_job(tmp_path: Path) -> None:
    (tmp_path / "vars.env").write_text("A=file\nB=file\nC=file\n")
    text = textwrap.dedent(
        """\
        defaults:
          env_file: vars.env
          env: {B: defaults, C: defaults}
        jobs:
          j:
            schedule: "@daily"
            command: "true"
            env: {C: job}
        """
    )
    path = tmp_path / "crontab.yaml"
    path.write_text(text)

    job = loader.load(path, env={"HOME": str(tmp_path)}).job("j")

    assert dict(job.env) == {"A": "file", "B": "defaults", "C": "job"}
    assert [isinstance(job.env[name], Secret) for name in "ABC"] == [True, False, False]


def test_a_config_error_never_carries_a_secret_in_its_repr(tmp_path: Path) -> None:
    path = tmp_path / "crontab.yaml"
    path.write_text(
        'jobs:\n  j:\n    schedule: "@daily"\n    command: "true"\n    env: {MY_SECRET: 1234567}\n'
    )

    with pytest.raises(ConfigError) as caught:
        loader.load(path, env={"HOME": str(tmp_path)})

    assert "1234567" not in str(caught.value) and "1234567" not in repr(caught.value.issues)

"""``settings.cluster`` and ``run_on`` in the crontab: values, defaults and every error."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from cronplus.config.loader import loads
from cronplus.core.model import ClusterSettings, ConfigError

SECRET = "postgresql://cron:pa55-w0rd@db.internal:5432/cron"
ENV = {"HOME": "/home/op", "TZ": "UTC", "CRONPLUS_DSN": SECRET}


def crontab(settings: str, jobs: str = '  backup:\n    command: ["true"]\n') -> str:
    schedule = '    schedule: "0 3 * * *"\n'
    body = jobs.replace("    command:", schedule + "    command:")
    return f"settings:\n{textwrap.indent(textwrap.dedent(settings), '  ')}jobs:\n{body}"


def load(text: str, tmp_path: Path) -> object:
    return loads(text, path=tmp_path / "crontab.yaml", env=ENV)


def errors(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(text, tmp_path)
    prefix = f"{tmp_path / 'crontab.yaml'}:"
    return [str(issue).removeprefix(prefix) for issue in caught.value.issues]


CLUSTER = """\
cluster:
  dsn: {dsn}
  node: web-1
"""


@pytest.mark.parametrize(
    ("dsn", "file_text"),
    [
        (f"'{SECRET}'", None),
        ("{from_env: CRONPLUS_DSN}", None),
        ("{from_file: secrets/dsn}", f"{SECRET}\n"),
    ],
    ids=["literal", "from-env", "from-file-relative-to-the-crontab"],
)
def test_the_dsn_comes_from_the_file_the_environment_or_a_file_beside_it(
    tmp_path: Path, dsn: str, file_text: str | None
) -> None:
    if file_text is not None:
        (tmp_path / "secrets").mkdir()
        (tmp_path / "secrets" / "dsn").write_text(file_text)

    loaded = load(crontab(CLUSTER.format(dsn=dsn)), tmp_path)

    assert loaded.settings.cluster == ClusterSettings(dsn=SECRET, node="web-1")  # type: ignore[attr-defined]


def test_tags_lease_and_run_on_are_read_and_defaults_give_run_on_to_every_job(
    tmp_path: Path,
) -> None:
    text = crontab(
        CLUSTER.format(dsn="{from_env: CRONPLUS_DSN}") + "  tags: [gpu, eu]\n  lease: 45s\n",
        '  a:\n    command: ["true"]\n  b:\n    command: ["true"]\n    run_on: [eu]\n',
    ).replace("jobs:\n", "defaults:\n  run_on: [gpu]\njobs:\n")

    loaded = load(text, tmp_path)

    cluster = loaded.settings.cluster  # type: ignore[attr-defined]
    assert (cluster.tags, cluster.lease) == (frozenset({"gpu", "eu"}), timedelta(seconds=45))
    assert [job.run_on for job in loaded.jobs] == [frozenset({"gpu"}), frozenset({"eu"})]  # type: ignore[attr-defined]


def test_without_a_cluster_there_is_none_and_no_job_has_tags(tmp_path: Path) -> None:
    loaded = load(crontab("max_concurrent: 2\n"), tmp_path)

    assert loaded.settings.cluster is None  # type: ignore[attr-defined]
    assert loaded.jobs[0].run_on == frozenset()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("settings", "jobs", "expected"),
    [
        (CLUSTER.format(dsn="{from_env: NOWHERE}"), None,
         "3:10: settings.cluster.dsn: the environment variable NOWHERE is not set or empty"),
        (CLUSTER.format(dsn="{from_file: missing.txt}"), None,
         "3:10: settings.cluster.dsn: cannot read {tmp}/missing.txt: No such file or directory"),
        (CLUSTER.format(dsn="{from_file: empty.txt}"), None,
         "3:10: settings.cluster.dsn: {tmp}/empty.txt is empty; expected a connection string"),
        (CLUSTER.format(dsn="5432"), None,
         "3:10: settings.cluster.dsn: expected a PostgreSQL connection string, or a mapping"
         " with one key, from_env: VARIABLE or from_file: PATH"),
        (CLUSTER.format(dsn="{from_env: A, from_file: b}"), None,
         "3:10: settings.cluster.dsn: expected a PostgreSQL connection string, or a mapping"
         " with one key, from_env: VARIABLE or from_file: PATH"),
        ("cluster:\n  node: a\n", None,
         "2:3: settings.cluster: missing key 'dsn': expected a PostgreSQL connection string,"
         " or from_env: VARIABLE or from_file: PATH"),
        ("cluster:\n  dsn: x\n", None,
         "2:3: settings.cluster: missing key 'node': expected this node's name, unique in the"
         " cluster"),
        (CLUSTER.format(dsn="x").replace("web-1", "web 1"), None,
         "4:11: settings.cluster.node: expected a name of letters, digits, '_', '.' and '-',"
         " got 'web 1'"),
        (CLUSTER.format(dsn="x") + "  lease: 500ms\n", None,
         "5:12: settings.cluster.lease: expected a lease of at least 1s"),
        (CLUSTER.format(dsn="x") + "  tag: [gpu]\n", None,
         "5:5: settings.cluster.tag: unknown key 'tag', did you mean 'tags'?"),
        (CLUSTER.format(dsn="x") + "  tags: [gpu, 'a b']\n", None,
         "5:17: settings.cluster.tags[1]: expected a name of letters, digits, '_', '.' and '-',"
         " got 'a b'"),
        ("max_concurrent: 2\n", "  backup:\n    command: [\"true\"]\n    run_on: [gpu]\n",
         "7:5: jobs.backup.run_on: run_on needs settings.cluster: its tags name the nodes of a"
         " cluster"),
        (CLUSTER.format(dsn="x"), "  backup:\n    command: [\"true\"]\n    run_on: []\n",
         "9:13: jobs.backup.run_on: expected at least one item, got an empty list"),
    ],
    ids=["env-unset", "file-missing", "file-empty", "a-number", "two-sources", "no-dsn",
         "no-node", "bad-node", "short-lease", "unknown-key", "bad-tag",
         "run-on-without-cluster", "empty-run-on"],
)  # fmt: skip
def test_bad_cluster_settings_are_reported_at_their_place(
    tmp_path: Path, settings: str, jobs: str | None, expected: str
) -> None:
    (tmp_path / "empty.txt").write_text("\n")
    text = crontab(settings, jobs) if jobs else crontab(settings)

    assert errors(text, tmp_path) == [expected.format(tmp=tmp_path)]


def test_the_dsn_never_shows_in_an_error_or_a_repr(tmp_path: Path) -> None:
    (tmp_path / "dsn").write_text(SECRET)
    bad = crontab(CLUSTER.format(dsn="{from_file: dsn}") + "  lease: nope\n")
    good = crontab(CLUSTER.format(dsn="{from_file: dsn}"))

    shown = "\n".join(errors(bad, tmp_path)) + repr(load(good, tmp_path))

    assert "pa55-w0rd" not in shown
    assert "settings.cluster.lease" in shown


WITHOUT_PSYCOPG = """\
import sys
sys.modules["psycopg"] = None  # what find_spec sees where the extra is not installed
from cronplus.cli.main import main
main(sys.argv[1:])
"""


def test_without_the_cluster_extra_a_cluster_crontab_fails_validate_naming_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crontab.yaml"
    path.write_text(crontab(CLUSTER.format(dsn="{from_env: CRONPLUS_DSN}")))

    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_PSYCOPG, "-c", str(path), "validate"],
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
        check=False,
    )

    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"{path}:2:3: settings.cluster: cluster mode needs PostgreSQL's driver psycopg, which is"
        " not installed; install the extra: pip install 'cronplus[cluster]'"
        " (or pipx install 'cronplus[cluster]')"
    ]


@pytest.mark.parametrize(
    ("dsn", "refused"),
    [
        ("postgresql://cron:pa/ss-9f@db.internal/cron", True),
        ("postgresql://cron:p@ss-9f@db.internal:5432/cron", True),
        ("postgres://cron:pa?ss-9f@db.internal/cron", False),  # libpq reads these right
        ("postgresql://cron:pa#ss-9f@[::1]:5432/cron", False),
        ("postgresql://cron:pa%2Fss-9f@db.internal/cron", False),
        ("postgresql://cron:pa:ss-9f@[::1]:5432/cron", False),
        ("postgresql://cron@db.internal/cron", False),
        ("host=db.internal user=cron password=pa/ss-9f", False),
    ],
    ids=["slash", "at", "question-mark", "hash", "encoded", "colon", "no-password", "key-value"],
)
def test_a_uri_password_libpq_would_misread_is_refused_without_showing_it(
    tmp_path: Path, dsn: str, refused: bool
) -> None:
    env = {**ENV, "CRONPLUS_DSN": dsn}
    text = crontab(CLUSTER.format(dsn="{from_env: CRONPLUS_DSN}"))

    if not refused:
        cluster = loads(text, path=tmp_path / "crontab.yaml", env=env).settings.cluster
        assert cluster is not None and cluster.dsn == dsn
        return
    with pytest.raises(ConfigError) as caught:
        loads(text, path=tmp_path / "crontab.yaml", env=env)
    (issue,) = caught.value.issues
    assert issue.path == "settings.cluster.dsn"
    assert "percent-encode it" in issue.message
    assert "ss-9f" not in str(caught.value)


def test_cluster_status_and_errors_never_show_a_misread_password() -> None:
    from cronplus.cluster.pg.schema import describe_dsn

    shown = describe_dsn("postgresql://cron:pa/ss-9f@db.internal/cron")

    assert shown == "postgresql (a settings.cluster.dsn whose password is not percent-encoded)"

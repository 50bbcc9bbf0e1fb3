"""cronplus.config.loader: YAML crontab text to a ``Crontab``, or every problem with its place."""

from __future__ import annotations

import re
import textwrap
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cronplus.config.loader import (
    declared_state,
    default_state,
    host_zone,
    load,
    loads,
    parse_duration,
    state_name,
)
from cronplus.core.model import (
    Catchup,
    ConfigError,
    Crontab,
    Job,
    LogFormat,
    Overlap,
    RetryPolicy,
    ScheduleError,
    Settings,
)
from cronplus.core.schedule import Schedule

FOLDER = Path("/srv/cron")
PATH = FOLDER / "crontab.yaml"
ENV = {"HOME": "/home/op", "TZ": "Asia/Tokyo"}
OPERATOR = 1000
OWN = "crontab-97f58ba5.db"
"""The default state's name for PATH: its stem and a hash of its absolute path."""
"""The uid these crontabs are loaded as (not root, whose default state is the system's)."""

DESIGN_EXAMPLE = """\
# yaml-language-server: $schema=./cronplus.schema.json
settings:                  # daemon-wide, all optional
  state: ~/.local/state/cronplus/state.db   # SQLite ledger + history (XDG_STATE_HOME)
  max_concurrent: 16       # global cap on running jobs; excess waits in FIFO order
  log_format: text         # text | json
  history_keep: 1000       # run records kept per job
  shutdown_grace: 30s      # SIGTERM to jobs, then SIGKILL after this
defaults:                  # any job field below except schedule and command
  timezone: Europe/Berlin
jobs:
  break-reminder:                      # the name: unique, [A-Za-z0-9_.-]+
    schedule: "*/20 9-17 * * 1-5"      # 5 fields, 6 with seconds FIRST, or @hourly/@daily/...
    timezone: America/New_York         # IANA zone; default: defaults.timezone, else the host's
    command: [python3, scripts/notify_break.py]   # list: exec'd as argv; string: `shell -c`
    shell: /bin/sh
    workdir: .                         # relative paths resolve against the crontab's folder
    env: {LANG: C.UTF-8}
    timeout: 10m                       # per attempt; "none" = no limit
    kill_grace: 10s                    # SIGTERM to the process group, SIGKILL after this
    retries: 3                         # extra attempts after a failed one
    retry_delay: 30s                   # before the first retry
    retry_backoff: 2.0                 # multiplier per further retry
    retry_max_delay: 10m
    success_codes: [0]
    overlap: forbid                    # allow | forbid | replace
    catchup: latest                    # skip | latest | all
    catchup_window: none               # only slots newer than this are caught up
    jitter: 0s                         # random start delay in [0, jitter]
    enabled: true
"""


def crontab(text: str, env: dict[str, str] = ENV) -> Crontab:
    return loads(textwrap.dedent(text), path=PATH, env=env, euid=OPERATOR)


def problems(text: str | bytes, env: dict[str, str] = ENV) -> list[str]:
    source = textwrap.dedent(text) if isinstance(text, str) else text
    with pytest.raises(ConfigError) as caught:
        loads(source, path=Path("crontab.yaml"), env=env, euid=OPERATOR)
    return [str(issue) for issue in caught.value.issues]


def schedule_error(expression: str) -> str:
    """What the schedule module says about ``expression``, which config passes on as is."""
    with pytest.raises(ScheduleError) as caught:
        Schedule.parse(expression, zone=ZoneInfo("UTC"), job_name="backup")
    return str(caught.value)


# --- a whole file -----------------------------------------------------------------------


def test_the_design_example_loads_every_field() -> None:
    loaded = loads(DESIGN_EXAMPLE, path=PATH, env=ENV, euid=OPERATOR)

    assert loaded.path == PATH
    assert loaded.settings == Settings(
        state=Path("/home/op/.local/state/cronplus/state.db"),
        max_concurrent=16,
        log_format=LogFormat.TEXT,
        history_keep=1000,
        shutdown_grace=timedelta(seconds=30),
    )
    assert loaded.jobs == (
        Job(
            name="break-reminder",
            schedule="*/20 9-17 * * 1-5",
            timezone=ZoneInfo("America/New_York"),
            command=("python3", "scripts/notify_break.py"),
            shell="/bin/sh",
            workdir=FOLDER,
            env={"LANG": "C.UTF-8"},
            timeout=timedelta(minutes=10),
            kill_grace=timedelta(seconds=10),
            retry=RetryPolicy(
                retries=3,
                delay=timedelta(seconds=30),
                backoff=2.0,
                max_delay=timedelta(minutes=10),
            ),
            success_codes=frozenset({0}),
            overlap=Overlap.FORBID,
            catchup=Catchup.LATEST,
            catchup_window=None,
            jitter=timedelta(0),
            enabled=True,
        ),
    )


def test_a_minimal_job_gets_every_documented_default() -> None:
    loaded = crontab("""
        jobs:
          backup:
            schedule: "0 3 * * *"
            command: backup.sh --all
    """)

    assert loaded.settings == Settings(
        state=Path("/home/op/.local/state/cronplus", OWN),
        max_concurrent=16,
        log_format=LogFormat.TEXT,
        history_keep=1000,
        shutdown_grace=timedelta(seconds=30),
    )
    assert loaded.jobs == (
        Job(
            name="backup",
            schedule="0 3 * * *",
            timezone=ZoneInfo("Asia/Tokyo"),
            command="backup.sh --all",
            shell="/bin/sh",
            workdir=FOLDER,
            env={},
            timeout=None,
            kill_grace=timedelta(seconds=10),
            retry=RetryPolicy(
                retries=0,
                delay=timedelta(seconds=30),
                backoff=2.0,
                max_delay=timedelta(minutes=10),
            ),
            success_codes=frozenset({0}),
            overlap=Overlap.FORBID,
            catchup=Catchup.LATEST,
            catchup_window=None,
            jitter=timedelta(0),
            enabled=True,
        ),
    )


def test_every_field_takes_its_other_values() -> None:
    loaded = crontab("""
        settings:
          state: /var/lib/cronplus/state.db
          max_concurrent: 1
          log_format: json
          history_keep: 5
          shutdown_grace: 1h30m
        jobs:
          report:
            schedule: "0 */5 * * * *"
            timezone: UTC
            command: "echo hi | mail root"
            shell: /bin/bash
            workdir: /tmp
            env: {A: "1", B: ""}
            timeout: 90
            kill_grace: 500ms
            retries: 5
            retry_delay: 0.5s
            retry_backoff: 1
            retry_max_delay: 2d
            success_codes: [0, 3, 255]
            overlap: replace
            catchup: all
            catchup_window: 12h
            jitter: 5m
            enabled: false
    """)

    assert loaded.settings == Settings(
        state=Path("/var/lib/cronplus/state.db"),
        max_concurrent=1,
        log_format=LogFormat.JSON,
        history_keep=5,
        shutdown_grace=timedelta(hours=1, minutes=30),
    )
    assert loaded.jobs == (
        Job(
            name="report",
            schedule="0 */5 * * * *",
            timezone=ZoneInfo("UTC"),
            command="echo hi | mail root",
            shell="/bin/bash",
            workdir=Path("/tmp"),
            env={"A": "1", "B": ""},
            timeout=timedelta(seconds=90),
            kill_grace=timedelta(milliseconds=500),
            retry=RetryPolicy(
                retries=5,
                delay=timedelta(milliseconds=500),
                backoff=1.0,
                max_delay=timedelta(days=2),
            ),
            success_codes=frozenset({0, 3, 255}),
            overlap=Overlap.REPLACE,
            catchup=Catchup.ALL,
            catchup_window=timedelta(hours=12),
            jitter=timedelta(minutes=5),
            enabled=False,
        ),
    )


@pytest.mark.parametrize(
    ("field", "value", "attribute", "expected"),
    [
        ("overlap", "allow", "overlap", Overlap.ALLOW),
        ("catchup", "skip", "catchup", Catchup.SKIP),
        ("timeout", "none", "timeout", None),
        ("command", "[ls, -l, 'a b']", "command", ("ls", "-l", "a b")),
        ("retry_backoff", "3", "retry", RetryPolicy(backoff=3.0)),
    ],
    ids=["overlap-allow", "catchup-skip", "timeout-none", "argv-with-spaces", "int-backoff"],
)
def test_a_field_value_becomes_its_model_value(
    field: str, value: str, attribute: str, expected: object
) -> None:
    fields = {"schedule": '"0 3 * * *"', "command": "x", field: value}
    body = "".join(f"    {key}: {text}\n" for key, text in fields.items())
    loaded = crontab(f"jobs:\n  a:\n{body}")

    assert getattr(loaded.jobs[0], attribute) == expected


def test_jobs_keep_the_file_order() -> None:
    loaded = crontab("""
        jobs:
          zeta: {schedule: "@daily", command: z}
          alpha: {schedule: "@daily", command: a}
          mid: {schedule: "@daily", command: m}
    """)

    assert [job.name for job in loaded.jobs] == ["zeta", "alpha", "mid"]


def test_keys_are_names_even_where_yaml_would_read_a_boolean_or_number() -> None:
    loaded = crontab("""
        jobs:
          yes:
            schedule: "@daily"
            command: x
            env: {ON: "1", 12: "a"}
          1.5: {schedule: "@daily", command: y}
    """)

    assert [job.name for job in loaded.jobs] == ["yes", "1.5"]
    assert loaded.jobs[0].env == {"ON": "1", "12": "a"}


def test_an_empty_jobs_section_is_a_crontab_without_jobs() -> None:
    assert crontab("settings:\ndefaults:\njobs:\n").jobs == ()


# --- defaults and paths -----------------------------------------------------------------------


def test_defaults_apply_to_every_job_and_a_jobs_own_value_wins() -> None:
    loaded = crontab("""
        defaults:
          timezone: Europe/Berlin
          retries: 2
          timeout: 5m
          env: {A: "1", B: "2"}
        jobs:
          own:
            schedule: "@daily"
            command: x
            retries: 0
            timezone: UTC
            env: {B: "3", C: "4"}
          inherits:
            schedule: "@daily"
            command: y
    """)
    own, inherits = loaded.jobs

    assert (own.retry.retries, own.timezone, own.timeout) == (
        0,
        ZoneInfo("UTC"),
        timedelta(minutes=5),
    )
    assert own.env == {"A": "1", "B": "3", "C": "4"}
    assert (inherits.retry.retries, inherits.timezone) == (2, ZoneInfo("Europe/Berlin"))
    assert inherits.env == {"A": "1", "B": "2"}


def test_yaml_merge_keys_and_anchors_are_followed() -> None:
    loaded = crontab("""
        jobs:
          first: &base
            schedule: "@hourly"
            command: [run, first]
            retries: 4
          second:
            <<: *base
            command: [run, second]
    """)

    assert loaded.jobs[1].schedule == "@hourly"
    assert loaded.jobs[1].retry.retries == 4
    assert loaded.jobs[1].command == ("run", "second")


@pytest.mark.parametrize(
    ("workdir", "expected"),
    [
        ("data/reports", FOLDER / "data/reports"),
        (".", FOLDER),
        ("/opt/jobs", Path("/opt/jobs")),
        ("'~'", Path("/home/op")),
        ("~/jobs", Path("/home/op/jobs")),
    ],
    ids=["relative", "dot", "absolute", "tilde", "tilde-slash"],
)
def test_a_workdir_resolves_against_the_crontabs_folder_or_home(
    workdir: str, expected: Path
) -> None:
    job = crontab(f"jobs:\n  a:\n    schedule: '@daily'\n    command: x\n    workdir: {workdir}\n")

    assert job.jobs[0].workdir == expected


def test_a_relative_defaults_workdir_resolves_against_the_crontabs_folder() -> None:
    loaded = crontab("defaults: {workdir: bin}\njobs: {a: {schedule: '@daily', command: x}}\n")

    assert loaded.jobs[0].workdir == FOLDER / "bin"


@pytest.mark.parametrize(
    ("state", "env", "expected"),
    [
        (None, {"HOME": "/home/op"}, f"/home/op/.local/state/cronplus/{OWN}"),
        (None, {"HOME": "/home/op", "XDG_STATE_HOME": "/xdg"}, f"/xdg/cronplus/{OWN}"),
        (
            None,
            {"HOME": "/home/op", "XDG_STATE_HOME": "rel"},
            f"/home/op/.local/state/cronplus/{OWN}",
        ),
        ("~/cp.db", {"HOME": "/home/op"}, "/home/op/cp.db"),
        ("db/cp.db", {"HOME": "/home/op"}, "/srv/cron/db/cp.db"),
        ("/var/lib/cp.db", {}, "/var/lib/cp.db"),
    ],
    ids=["home", "xdg", "relative-xdg-ignored", "tilde", "relative", "absolute"],
)
def test_the_state_path_follows_xdg_home_and_the_crontabs_folder(
    state: str | None, env: dict[str, str], expected: str
) -> None:
    settings = f"settings: {{state: {state}}}\n" if state else ""
    loaded = crontab(settings + "jobs: {}\n", env={**env, "TZ": "UTC"})

    assert loaded.settings.state == Path(expected)


@pytest.mark.parametrize(
    ("env", "platform", "expected"),
    [
        ({"HOME": "/root"}, "linux", f"/var/lib/cronplus/{OWN}"),
        ({"HOME": "/home/op"}, "linux", f"/var/lib/cronplus/{OWN}"),
        ({}, "linux", f"/var/lib/cronplus/{OWN}"),
        ({"HOME": "/var/root"}, "darwin", f"/var/db/cronplus/{OWN}"),
        (
            {"HOME": "/root", "XDG_STATE_HOME": "/srv/state"},
            "linux",
            f"/srv/state/cronplus/{OWN}",
        ),
    ],
    ids=["root", "sudo-kept-a-users-home", "no-home", "macos", "xdg-set-on-purpose"],
)
def test_roots_default_state_is_the_systems_whatever_home_says(
    env: dict[str, str], platform: str, expected: str
) -> None:
    assert default_state(env, euid=0, platform=platform, config=PATH) == Path(expected)


def test_each_crontab_has_its_own_default_state_named_after_it(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "releases").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    (real / "v1.yaml").touch()
    (real / "crontab.yaml").symlink_to(real / "v1.yaml")
    name = state_name(real / "crontab.yaml")

    assert re.fullmatch(r"crontab-[0-9a-f]{8}\.db", name)
    assert state_name(real / "other.yaml") != name
    assert state_name(real / "releases" / "crontab.yaml") != name
    # A path through a symlinked folder is the same file; a swap of the file keeps its state.
    assert state_name(tmp_path / "link" / "crontab.yaml") == name
    (real / "crontab.yaml").unlink()
    (real / "crontab.yaml").symlink_to(real / "releases")
    assert state_name(real / "crontab.yaml") == name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("settings:\n  state: db/s.db\njobs:\n  a: [\n", ("/srv/cron/db/s.db", False)),
        ("settings: {cluster: {dsn: x}, state: '~/s.db'}\njobs: [\n", ("/home/op/s.db", True)),
        ("settings:\n  smtp: {state: x}\njobs:\n  a: [\n", (None, False)),
        ("jobs:\n  a: {schedule: 5}\n", (None, False)),
    ],
    ids=["relative-before-a-syntax-error", "tilde-and-cluster", "nested-key", "no-settings"],
)
def test_a_broken_files_declared_state_is_read_from_its_yaml_events(
    tmp_path: Path, text: str, expected: tuple[str | None, bool]
) -> None:
    path = tmp_path / "crontab.yaml"
    path.write_text(text.replace("/srv/cron", str(tmp_path)))
    state, cluster = declared_state(path, env=ENV)

    want = expected[0] and expected[0].replace("/srv/cron", str(tmp_path))
    assert (str(state) if state else None, cluster) == (want, expected[1])


@pytest.mark.parametrize(
    "text",
    ["settings:\n  state: [\n", "jobs:\n  a: [\nsettings: {state: x}\n", "settings: {state: ~}\n"],
    ids=["breaks-inside-settings", "breaks-before-settings", "null"],
)
def test_a_broken_file_that_cannot_tell_its_state_says_so(tmp_path: Path, text: str) -> None:
    path = tmp_path / "crontab.yaml"
    path.write_text(text)
    with pytest.raises(ValueError):
        declared_state(path, env=ENV)


def test_a_state_without_home_or_xdg_or_setting_is_an_error() -> None:
    assert problems("jobs: {}\n", env={}) == [
        "crontab.yaml:1:1: settings.state: no default, as neither XDG_STATE_HOME nor HOME "
        "is set; set it"
    ]


def test_a_tilde_without_home_is_an_error() -> None:
    text = "settings: {state: /s.db}\njobs: {a: {schedule: '@daily', command: x, workdir: ~/x}}\n"

    assert problems(text, env={"TZ": "UTC"}) == [
        "crontab.yaml:2:53: jobs.a.workdir: cannot expand '~': HOME is not set"
    ]


def test_load_reads_the_file_and_resolves_against_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "crontab.yaml"
    path.write_text("jobs:\n  a: {schedule: '@daily', command: x, workdir: out}\n")

    loaded = load(path, env=ENV)

    assert loaded.path == path
    assert loaded.jobs[0].workdir == tmp_path / "out"


# --- host zone and durations ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        ("Europe/Berlin", "Europe/Berlin"),
        (":America/New_York", "America/New_York"),
        ("/usr/share/zoneinfo/Asia/Tokyo", "Asia/Tokyo"),
        (":/usr/share/zoneinfo/Australia/Lord_Howe", "Australia/Lord_Howe"),
        ("UTC", "UTC"),
    ],
    ids=["name", "colon-name", "path", "colon-path", "utc"],
)
def test_host_zone_follows_tz(tz: str, expected: str) -> None:
    assert host_zone({"TZ": tz}) == ZoneInfo(expected)


@pytest.mark.parametrize("tz", ["", "Mars/Olympus", "EST5EDT,M3.2.0,M11.1.0"], ids=str)
def test_host_zone_passes_over_a_tz_that_names_no_zone(tz: str) -> None:
    assert host_zone({"TZ": tz}) == host_zone({})


def test_a_job_without_zone_or_default_zone_runs_in_the_host_zone() -> None:
    loaded = crontab(
        "jobs: {a: {schedule: '@daily', command: x}}\n", env={**ENV, "TZ": ":Asia/Kolkata"}
    )

    assert loaded.jobs[0].timezone == ZoneInfo("Asia/Kolkata")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("500ms", timedelta(milliseconds=500)),
        ("0.5s", timedelta(milliseconds=500)),
        ("1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
        ("0s", timedelta(0)),
        ("45", timedelta(seconds=45)),
        (45, timedelta(seconds=45)),
        (1.5, timedelta(seconds=1.5)),
    ],
    ids=lambda case: repr(case) if not isinstance(case, timedelta) else "",
)
def test_parse_duration_reads_units_and_plain_seconds(
    text: str | int | float, expected: timedelta
) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "got"),
    [
        ("", "''"),
        ("5 minutes", "'5 minutes'"),
        ("30m1h", "'30m1h'"),
        ("-5s", "'-5s'"),
        ("1w", "'1w'"),
        ("5M", "'5M'"),
        (-1, "the integer -1"),
        (float("inf"), "the number inf"),
        (True, "the boolean true"),
    ],
    ids=[
        "empty",
        "words",
        "units-out-of-order",
        "negative",
        "weeks",
        "capital",
        "negative-int",
        "inf",
        "bool",
    ],
)
def test_parse_duration_rejects_what_is_not_a_duration(text: str | int | float, got: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)

    assert str(caught.value) == (
        f"expected a duration such as 90s, 5m, 1h30m, 2d, 500ms or a number of seconds, got {got}"
    )


# --- every problem, with its place ------------------------------------------------------------

JOB = 'jobs:\n  backup:\n    schedule: "0 3 * * *"\n    command: "true"\n'
"""A valid job; a case adds lines under it (line 5 on, fields at column 5)."""
DURATION = "a duration such as 90s, 5m, 1h30m, 2d, 500ms or a number of seconds"

ERRORS: list[tuple[str, str | bytes, list[str]]] = [
    (
        "unknown-job-key-with-suggestion",
        JOB + "    retires: 3\n",
        ["crontab.yaml:5:5: jobs.backup.retires: unknown key 'retires', did you mean 'retries'?"],
    ),
    (
        "unknown-settings-key-with-suggestion",
        "settings:\n  max_concurent: 4\njobs: {}\n",
        [
            "crontab.yaml:2:3: settings.max_concurent: unknown key 'max_concurent', "
            "did you mean 'max_concurrent'?"
        ],
    ),
    (
        "unknown-defaults-key-with-suggestion",
        "defaults:\n  time_zone: UTC\njobs: {}\n",
        ["crontab.yaml:2:3: defaults.time_zone: unknown key 'time_zone', did you mean 'timezone'?"],
    ),
    (
        "unknown-top-level-key",
        "colour: red\njobs: {}\n",
        [
            "crontab.yaml:1:1: colour: unknown key 'colour', "
            "expected one of defaults, jobs, notifiers, settings"
        ],
    ),
    (
        "schedule-in-defaults",
        "defaults:\n  schedule: '0 3 * * *'\njobs: {}\n",
        [
            "crontab.yaml:2:3: defaults.schedule: unknown key 'schedule': defaults hold every "
            "job field except schedule and command"
        ],
    ),
    (
        "duplicate-key",
        JOB + "    retries: 1\n    retries: 2\n",
        [
            "crontab.yaml:6:5: jobs.backup.retries: duplicate key 'retries': "
            "first given at line 5, column 5"
        ],
    ),
    (
        "duplicate-job-name",
        JOB + "  backup:\n    schedule: '0 4 * * *'\n    command: x\n",
        [
            "crontab.yaml:5:3: jobs.backup: duplicate job name 'backup': "
            "first given at line 2, column 3"
        ],
    ),
    (
        "word-for-an-integer",
        JOB + "    retries: three\n",
        ["crontab.yaml:5:14: jobs.backup.retries: expected an integer, got 'three'"],
    ),
    (
        "quoted-integer",
        "settings:\n  max_concurrent: '16'\njobs: {}\n",
        ["crontab.yaml:2:19: settings.max_concurrent: expected an integer, got '16'"],
    ),
    (
        "quoted-boolean",
        JOB + "    enabled: 'false'\n",
        ["crontab.yaml:5:14: jobs.backup.enabled: expected true or false, got 'false'"],
    ),
    (
        "float-for-an-integer",
        JOB + "    retries: 1.5\n",
        ["crontab.yaml:5:14: jobs.backup.retries: expected an integer, got the number 1.5"],
    ),
    (
        "jobs-as-a-list",
        "jobs:\n  - backup\n",
        ["crontab.yaml:2:3: jobs: expected a mapping, got a list"],
    ),
    (
        "empty-job",
        "jobs:\n  backup:\n",
        ["crontab.yaml:2:10: jobs.backup: expected a mapping, got an empty value"],
    ),
    (
        "bad-duration",
        JOB + "    kill_grace: 10 minutes\n",
        [f"crontab.yaml:5:17: jobs.backup.kill_grace: expected {DURATION}, got '10 minutes'"],
    ),
    (
        "bad-limit",
        JOB + "    timeout: -5s\n",
        [f"crontab.yaml:5:14: jobs.backup.timeout: expected {DURATION}, or none, got '-5s'"],
    ),
    (
        "zero-timeout",
        JOB + "    timeout: 0\n",
        [
            "crontab.yaml:5:14: jobs.backup.timeout: expected a positive duration, "
            "or none for no limit"
        ],
    ),
    (
        "base-60-duration",
        JOB + "    timeout: 1:30\n",
        [
            "crontab.yaml:5:14: jobs.backup.timeout: timeout must be quoted: "
            "YAML 1.1 reads unquoted 1:30 as the base-60 integer 90"
        ],
    ),
    (
        "unknown-zone",
        JOB + "    timezone: Europe/Berln\n",
        [
            "crontab.yaml:5:15: jobs.backup.timezone: unknown time zone 'Europe/Berln'; "
            "did you mean 'Europe/Berlin'?"
        ],
    ),
    (
        "zone-without-its-region",
        JOB + "    timezone: tokyo\n",
        [
            "crontab.yaml:5:15: jobs.backup.timezone: unknown time zone 'tokyo'; "
            "did you mean 'Asia/Tokyo'?"
        ],
    ),
    (
        "unknown-zone-far-from-any",
        "defaults:\n  timezone: Atlantis/Capital\njobs: {}\n",
        [
            "crontab.yaml:2:13: defaults.timezone: unknown time zone 'Atlantis/Capital'; "
            "expected an IANA zone name such as Europe/Berlin"
        ],
    ),
    (
        "bad-expression",
        "jobs:\n  backup:\n    schedule: '61 * * * *'\n    command: x\n",
        [f"crontab.yaml:3:15: jobs.backup.schedule: {schedule_error('61 * * * *')}"],
    ),
    (
        "never-firing-expression",
        "jobs:\n  backup:\n    schedule: '0 0 31 2 *'\n    command: x\n",
        [f"crontab.yaml:3:15: jobs.backup.schedule: {schedule_error('0 0 31 2 *')}"],
    ),
    (
        "unquoted-star-schedule",
        "jobs:\n  backup:\n    schedule: */5 * * * *   # every five minutes\n    command: x\n",
        [
            "crontab.yaml:3:15: jobs.backup.schedule: schedule must be quoted: "
            "YAML reads a leading '*' as an alias"
        ],
    ),
    (
        "unquoted-at-schedule",
        "jobs:\n  backup:\n    schedule: @daily\n    command: x\n",
        [
            "crontab.yaml:3:15: jobs.backup.schedule: schedule must be quoted: "
            "YAML reserves a leading '@'"
        ],
    ),
    (
        "base-60-schedule",
        "jobs:\n  backup:\n    schedule: 2:30\n    command: x\n",
        [
            "crontab.yaml:3:15: jobs.backup.schedule: schedule must be quoted: "
            "YAML 1.1 reads unquoted 2:30 as the base-60 integer 150"
        ],
    ),
    (
        "integer-schedule",
        "jobs:\n  backup:\n    schedule: 5\n    command: x\n",
        [
            "crontab.yaml:3:15: jobs.backup.schedule: "
            'expected a cron expression such as "0 3 * * *", got the integer 5; quote it: "5"'
        ],
    ),
    (
        "timestamp-schedule",
        "jobs:\n  backup:\n    schedule: 2026-03-08 02:30:00\n    command: x\n",
        [
            "crontab.yaml:3:15: jobs.backup.schedule: expected a cron expression such as "
            '"0 3 * * *", got the date 2026-03-08T02:30:00; quote it: "2026-03-08 02:30:00"'
        ],
    ),
    (
        "empty-file",
        "",
        ["crontab.yaml:1:1: the file is empty; expected a mapping with a 'jobs' key"],
    ),
    (
        "only-comments",
        "# nothing yet\n\n   # still nothing\n",
        ["crontab.yaml:1:1: the file holds only comments; expected a mapping with a 'jobs' key"],
    ),
    (
        "top-level-list",
        "- backup\n- report\n",
        ["crontab.yaml:1:1: expected a mapping with a 'jobs' key at the top level, got a list"],
    ),
    (
        "top-level-scalar",
        "just some words\n",
        [
            "crontab.yaml:1:1: expected a mapping with a 'jobs' key at the top level, "
            "got 'just some words'"
        ],
    ),
    (
        "syntax-error",
        "jobs:\n  backup:\n    schedule: '0 3 * * *'\n   command: x\n",
        [
            "crontab.yaml:4:4: not valid YAML: did not find expected key "
            "(while parsing a block mapping at line 2)"
        ],
    ),
    (
        "tab-indentation",
        "jobs:\n\tbackup: {}\n",
        [
            "crontab.yaml:2:1: not valid YAML: found character that cannot start any token "
            "(while scanning for the next token at line 2); YAML allows no tabs in indentation"
        ],
    ),
    (
        "two-documents",
        "jobs: {}\n---\njobs: {}\n",
        ["crontab.yaml:2:1: expected one YAML document, found two"],
    ),
    (
        "not-utf-8",
        b"jobs:\n  caf\xe9: {}\n",
        ["crontab.yaml:2:6: byte 0xe9 is not UTF-8; save the file as UTF-8"],
    ),
    (
        "control-character",
        "jobs:\n  ab\x07: {}\n",
        ["crontab.yaml:2:5: character U+0007 is not allowed in YAML"],
    ),
    (
        "missing-jobs",
        "settings: {max_concurrent: 2}\n",
        ["crontab.yaml:1:1: missing key 'jobs': expected a mapping of job names to jobs"],
    ),
    (
        "missing-schedule",
        "jobs:\n  backup:\n    command: x\n",
        [
            "crontab.yaml:2:3: jobs.backup: missing key 'schedule': "
            'expected a cron expression such as "0 3 * * *"'
        ],
    ),
    (
        "missing-command",
        "jobs:\n  backup:\n    schedule: '@daily'\n",
        [
            "crontab.yaml:2:3: jobs.backup: missing key 'command': "
            "expected a list of strings (argv) or a string (run by the shell),"
            " or one target instead: http, celery, rq or amqp"
        ],
    ),
    (
        "bad-job-name",
        "jobs:\n  back up:\n    schedule: '@daily'\n    command: x\n",
        [
            "crontab.yaml:2:3: jobs.back up: job name 'back up': "
            "expected letters, digits, '_', '.' and '-'"
        ],
    ),
    (
        "bad-enum",
        JOB + "    overlap: sometimes\n",
        [
            "crontab.yaml:5:14: jobs.backup.overlap: expected one of allow, forbid, replace, "
            "got 'sometimes'"
        ],
    ),
    (
        "bad-log-format",
        "settings: {log_format: xml}\njobs: {}\n",
        ["crontab.yaml:1:24: settings.log_format: expected one of text, json, got 'xml'"],
    ),
    (
        "env-number",
        JOB + "    env: {RETRIES: 3}\n",
        [
            "crontab.yaml:5:20: jobs.backup.env.RETRIES: expected a string, "
            'got the integer 3; quote it: "3"'
        ],
    ),
    (
        "env-boolean",
        JOB + "    env: {DEBUG: yes}\n",
        [
            "crontab.yaml:5:18: jobs.backup.env.DEBUG: expected a string, "
            'got the boolean true; quote it: "yes"'
        ],
    ),
    (
        "empty-env-value",
        JOB + "    env:\n      K:\n",
        ["crontab.yaml:6:9: jobs.backup.env.K: expected a string, got an empty value"],
    ),
    (
        "env-name-with-equals",
        JOB + "    env: {'A=B': x}\n",
        [
            "crontab.yaml:5:11: jobs.backup.env.A=B: environment variable name 'A=B': "
            "expected no '=' and no NUL"
        ],
    ),
    (
        "exit-code-out-of-range",
        JOB + "    success_codes: [0, 256]\n",
        [
            "crontab.yaml:5:24: jobs.backup.success_codes[1]: "
            "expected an integer <= 255, got the integer 256"
        ],
    ),
    (
        "no-exit-codes",
        JOB + "    success_codes: []\n",
        [
            "crontab.yaml:5:20: jobs.backup.success_codes: "
            "expected at least one item, got an empty list"
        ],
    ),
    (
        "negative-retries",
        JOB + "    retries: -1\n",
        ["crontab.yaml:5:14: jobs.backup.retries: expected an integer >= 0, got the integer -1"],
    ),
    (
        "backoff-below-one",
        JOB + "    retry_backoff: 0.5\n",
        [
            "crontab.yaml:5:20: jobs.backup.retry_backoff: "
            "expected a number >= 1.0, got the number 0.5"
        ],
    ),
    (
        "no-concurrency",
        "settings: {max_concurrent: 0}\njobs: {}\n",
        ["crontab.yaml:1:28: settings.max_concurrent: expected an integer >= 1, got the integer 0"],
    ),
    (
        "empty-argv",
        "jobs:\n  backup:\n    schedule: '@daily'\n    command: []\n",
        [
            "crontab.yaml:4:14: jobs.backup.command: expected a non-empty list of strings (argv) "
            "or string (run by the shell), got an empty list"
        ],
    ),
    (
        "number-in-argv",
        "jobs:\n  backup:\n    schedule: '@daily'\n    command: [sleep, 5]\n",
        [
            "crontab.yaml:4:22: jobs.backup.command[1]: expected a string, "
            'got the integer 5; quote it: "5"'
        ],
    ),
    (
        "alias-to-no-anchor",
        "jobs:\n  backup:\n    schedule: '@daily'\n    command: [*cmd]\n",
        [
            "crontab.yaml:4:15: jobs.backup.command[0]: "
            "alias '*cmd' names no anchor; quote the value"
        ],
    ),
    (
        "alias-inside-its-anchor",
        "jobs:\n  backup:\n    schedule: '@daily'\n    command: &c [x, *c]\n",
        ["crontab.yaml:4:21: jobs.backup.command[1]: alias '*c' is used inside its own anchor"],
    ),
    (
        "unsupported-tag",
        "jobs:\n  backup:\n    schedule: !cron '@daily'\n    command: x\n",
        ["crontab.yaml:3:15: jobs.backup.schedule: unsupported YAML tag '!cron'"],
    ),
    (
        "bare-tilde-is-null",
        JOB + "    workdir: ~\n",
        [
            "crontab.yaml:5:14: jobs.backup.workdir: "
            'expected a path, got an empty value; quote it: "~"'
        ],
    ),
    (
        "tilde-user",
        JOB + "    workdir: ~bob/jobs\n",
        ["crontab.yaml:5:14: jobs.backup.workdir: only '~' and '~/...' are expanded, not '~user'"],
    ),
    (
        "mapping-as-key",
        "jobs:\n  ? {a: 1}\n  : x\n",
        ["crontab.yaml:2:5: jobs: expected a name as key, got a mapping"],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS]
)
def test_a_bad_file_is_reported_at_the_place_of_the_problem(
    text: str | bytes, expected: list[str]
) -> None:
    assert problems(text) == expected


def test_every_problem_in_a_file_is_reported_at_once_in_file_order() -> None:
    assert problems("""
        settings:
          history_keep: none
        defaults:
          timezone: Europe/Pariss
        jobs:
          backup:
            schedule: */10 * * * *
            command: [tar, -c, 5]
            overlap: never
          report:
            schedule: '0 0 30 2 *'
            command: x
            retry: 3
    """) == [
        "crontab.yaml:3:17: settings.history_keep: expected an integer, got 'none'",
        "crontab.yaml:5:13: defaults.timezone: unknown time zone 'Europe/Pariss'; "
        "did you mean 'Europe/Paris'?",
        "crontab.yaml:8:15: jobs.backup.schedule: schedule must be quoted: "
        "YAML reads a leading '*' as an alias",
        "crontab.yaml:9:24: jobs.backup.command[2]: expected a string, got the integer 5; "
        'quote it: "5"',
        "crontab.yaml:10:14: jobs.backup.overlap: expected one of allow, forbid, replace, "
        "got 'never'",
        f"crontab.yaml:12:15: jobs.report.schedule: {schedule_error('0 0 30 2 *')}",
        "crontab.yaml:14:5: jobs.report.retry: unknown key 'retry', did you mean 'retries'?",
    ]


def test_a_missing_file_is_reported_by_name(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError) as caught:
        load(path, env=ENV)

    assert str(caught.value) == f"{path}:1:1: cannot read: No such file or directory"


def test_a_directory_is_reported_as_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, env=ENV)

    assert (
        str(caught.value) == f"{tmp_path}:1:1: cannot read: it is a directory; expected a YAML file"
    )


def test_a_file_that_is_not_utf_8_is_reported_at_its_first_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "crontab.yaml"
    path.write_bytes("jobs:\n  # é\n  x: {command: \xff}\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load(path, env=ENV)

    assert str(caught.value) == f"{path}:2:5: byte 0xe9 is not UTF-8; save the file as UTF-8"


YAMLISH = st.text(
    alphabet=st.sampled_from(list("jobs:schedule command-*@&!|>'\"{}[],#\n\t 0123~%"))
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(noise=YAMLISH, at=st.integers(min_value=0, max_value=len(DESIGN_EXAMPLE)))
def test_no_damage_to_a_file_escapes_as_anything_but_a_config_error(noise: str, at: int) -> None:
    damaged = DESIGN_EXAMPLE[:at] + noise + DESIGN_EXAMPLE[at:]
    try:
        loads(damaged, path=PATH, env=ENV, euid=OPERATOR)
    except ConfigError as error:
        assert error.issues, "a ConfigError always says what is wrong"
        assert all(issue.line >= 1 and issue.column >= 1 for issue in error.issues)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_no_bytes_escape_as_anything_but_a_config_error(data: bytes) -> None:
    try:
        loads(data, path=PATH, env=ENV, euid=OPERATOR)
    except ConfigError as error:
        assert error.issues

"""The crontab file: YAML text in, a valid ``Crontab`` out, or every problem at once.

Four steps, each collecting its problems instead of stopping at the first:

1. bytes to text: UTF-8, or the line and column of the first bad byte (``yamlsource``);
2. text to plain values with the place of every key and value kept beside them
   (``yamlsource``), so a pydantic location such as ``("jobs", "backup", "retries")`` maps
   back to ``line:col`` (``errors``);
3. values to checked values: one pydantic ``TypeAdapter`` over the file models
   (``models``, built from the field types in ``fields``; strict: a string is
   never coerced into a number), ``Schedule.parse`` for every job, and the rules between
   fields (here);
4. checked values to the frozen ``model.py`` types, with ``defaults:`` and the built-in
   defaults applied (here).

The same file models generate ``cronplus.schema.json`` (``python -m cronplus.config.loader
--write-schema``); a test keeps the shipped file equal to what they generate.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from pydantic import TypeAdapter, ValidationError

from cronplus.config import alerting, targetfields
from cronplus.config.errors import report
from cronplus.config.fields import parse_duration
from cronplus.config.models import (
    ClusterFile,
    CrontabFile,
    DeliveryFile,
    JobFields,
    JobFile,
    LimitsFile,
    NotifierFile,
    SettingsFile,
    SmtpFile,
)
from cronplus.config.yamlsource import Values, decode, read_yaml
from cronplus.core import collector
from cronplus.core.model import (
    ClusterSettings,
    ConfigError,
    ConfigIssue,
    Crontab,
    Job,
    RetryPolicy,
    ScheduleError,
    Settings,
)
from cronplus.core.schedule import Schedule
from cronplus.host import accounts, permissions
from cronplus.run import limits, secrets

__all__ = [  # the file models stay importable from here, where they used to live
    "SCHEMA_PATH",
    "ClusterFile",
    "CrontabFile",
    "DeliveryFile",
    "JobFields",
    "JobFile",
    "LimitsFile",
    "NotifierFile",
    "SettingsFile",
    "SmtpFile",
    "host_zone",
    "load",
    "loads",
    "main",
    "parse_duration",
    "schema",
    "schema_text",
]

SCHEMA_PATH = Path(__file__).with_name("cronplus.schema.json")
"""The shipped JSON Schema; ``python -m cronplus.config.loader --write-schema`` regenerates it."""


# --- the host's zone --------------------------------------------------------------------------


def host_zone(env: Mapping[str, str]) -> ZoneInfo:
    """The host's zone: ``TZ`` (with or without a leading ``:``), else the zone
    ``/etc/localtime`` links to, else ``/etc/timezone``, else UTC.

    A ``TZ`` that names no zone (a POSIX rule such as ``EST5EDT,M3.2.0,M11.1.0``, a typo)
    is passed over like an unset one.
    """
    for text in _host_zone_keys(env):
        key = text.strip().removeprefix(":")
        key = key.rpartition("zoneinfo/")[2] if key.startswith(("/", ".")) else key
        if key:
            with contextlib.suppress(KeyError, ValueError, OSError):
                return ZoneInfo(key)
    return ZoneInfo("UTC")


def _host_zone_keys(env: Mapping[str, str]) -> Iterator[str]:
    """Each source only when the one before it named no zone."""
    yield env.get("TZ", "")
    with contextlib.suppress(OSError):
        yield os.readlink("/etc/localtime")
    with contextlib.suppress(OSError, UnicodeDecodeError):
        yield Path("/etc/timezone").read_text(encoding="utf-8")


_ADAPTER: TypeAdapter[CrontabFile] = TypeAdapter(CrontabFile)


# --- checking and converting ----------------------------------------------------------------


def _check_schedules(values: Values, env: Mapping[str, str]) -> None:
    """Parse every job's schedule in its zone, on the raw values, beside pydantic's checks."""
    root = values.root if isinstance(values.root, dict) else {}
    defaults, jobs = root.get("defaults"), root.get("jobs")
    default_zone = defaults.get("timezone") if isinstance(defaults, dict) else None
    for name, raw in jobs.items() if isinstance(jobs, dict) else ():
        job = raw if isinstance(raw, dict) else {}
        expression, zone = job.get("schedule"), job.get("timezone", default_zone)
        if not isinstance(expression, str) or not expression.strip():
            continue  # pydantic reports it
        try:
            zone = host_zone(env) if zone is None else ZoneInfo(zone)
        except (KeyError, ValueError, OSError, TypeError):
            zone = ZoneInfo("UTC")  # pydantic reports the zone; the expression is still checked
        try:
            Schedule.for_job(expression, zone=zone, job_name=name)
        except ScheduleError as error:
            loc = ("jobs", name, "schedule")
            values.issue(values.place(loc)[1], loc, str(error))


def _check_run_on(values: Values) -> None:
    """Tags name the nodes of a cluster: without ``settings.cluster`` no node has any."""
    root = values.root if isinstance(values.root, dict) else {}
    settings, jobs = root.get("settings"), root.get("jobs")
    if isinstance(settings, dict) and "cluster" in settings:
        return
    names = jobs if isinstance(jobs, dict) else {}
    places = [("defaults", "run_on")] + [("jobs", name, "run_on") for name in names]
    why = "run_on needs settings.cluster: its tags name the nodes of a cluster"
    for loc in places:
        if _has(root, loc):
            values.issue(values.place(loc)[0], loc, why)


def _check_targets(values: Values) -> None:
    """A job has ``command`` or one target block, never two, never none; a target's
    client library (an extra) must be installed."""
    root = values.root if isinstance(values.root, dict) else {}
    jobs = root.get("jobs")
    for name, raw in jobs.items() if isinstance(jobs, dict) else ():
        if not isinstance(raw, dict):
            continue
        given = [key for key in ("command", *targetfields.KINDS) if key in raw]
        loc: tuple[str, ...] = ("jobs", name)
        if not given:
            why = (
                "missing key 'command': expected a list of strings (argv) or a string (run"
                " by the shell), or one target instead: http, celery, rq or amqp"
            )
            values.issue(values.place(loc)[0], loc, why)
        elif len(given) > 1:
            loc = ("jobs", name, given[1])
            why = f"a job has one target: {' and '.join(given)} are given; keep one"
            values.issue(values.place(loc)[0], loc, why)
        elif given[0] != "command" and (missing := targetfields.client_missing(given[0])):
            loc = ("jobs", name, given[0])
            values.issue(values.place(loc)[0], loc, missing)
        elif given[0] == "celery" and (problem := targetfields.celery_problem(raw["celery"])):
            loc = ("jobs", name, "celery", "wait")
            values.issue(values.place(loc)[0], loc, problem)


def _check_cluster_driver(values: Values) -> None:
    """``settings.cluster`` needs psycopg, which only the ``cluster`` extra installs."""
    root = values.root if isinstance(values.root, dict) else {}
    if not _has(root, ("settings", "cluster")):
        return
    from cronplus.config.dsn import driver_missing

    if (why := driver_missing()) is not None:
        loc = ("settings", "cluster")
        values.issue(values.place(loc)[0], loc, why)


def _check_alerts(values: Values) -> None:
    """Notifier names, kinds and the settings they need (``alerting.cross_check``)."""
    root = values.root if isinstance(values.root, dict) else {}
    for finding in alerting.cross_check(root):
        key_mark, mark, _ = values.place(finding.loc)
        values.issue((key_mark if finding.at_key else mark) or mark, finding.loc, finding.message)


def _check_containment(values: Values, env: Mapping[str, str], euid: int) -> None:
    """Rules between ``limits``, ``user``, ``group`` and the host (``limits.cross_problems``);
    a problem in ``defaults`` is reported once, not once per job."""
    root = values.root if isinstance(values.root, dict) else {}
    defaults, jobs = root.get("defaults"), root.get("jobs")
    defaults = defaults if isinstance(defaults, dict) else {}
    found: dict[tuple[tuple[str, ...], str], None] = {}
    for name, raw in jobs.items() if isinstance(jobs, dict) else ():
        job = raw if isinstance(raw, dict) else {}
        for problem in limits.cross_problems(name, defaults, job, euid=euid, env=env):
            found[problem] = None
    for loc, message in found:
        values.issue(values.place(loc)[0], loc, message)


def _hide_secrets(values: Values) -> list[ConfigIssue]:
    """The issues, with the values of secret-looking ``env`` names as ``***``."""
    hidden = {
        ".".join(loc): [str(value), values.place(loc)[2] or ""]
        for loc, value in secrets.env_places(values.root)
    }
    return secrets.hide_in_issues(values.issues, hidden)


def _has(root: dict[str, Any], loc: tuple[str, ...]) -> bool:
    container: Any = root
    for step in loc:
        if not isinstance(container, dict) or step not in container:
            return False
        container = container[step]
    return True


SYSTEM_STATE = {"linux": Path("/var/lib/cronplus"), "darwin": Path("/var/db/cronplus")}
"""Root's state folder where ``XDG_STATE_HOME`` is unset: the system unit's
``StateDirectory=`` on Linux, launchd's convention on macOS."""

LEGACY_STATE_NAME = "state.db"
"""The one default database every crontab shared before the default became the crontab's
own (docs/state.md, "Migration"); ``cronplus daemon`` adopts it once."""


def state_folder(env: Mapping[str, str], *, euid: int, platform: str) -> Path | None:
    """XDG's: ``$XDG_STATE_HOME/cronplus`` if it is absolute (the spec ignores it otherwise),
    else ``$HOME/.local/state/cronplus``; for root, the system's state folder instead of
    the home's, so ``sudo cronplus status`` finds the system daemon and a root run that kept
    a user's ``HOME`` (``sudo -E``) never keeps root's state in that user's folder."""
    xdg, home = env.get("XDG_STATE_HOME", ""), env.get("HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg, "cronplus")
    if euid == accounts.ROOT_UID:
        return SYSTEM_STATE.get(platform, SYSTEM_STATE["linux"])
    return Path(home, ".local", "state", "cronplus") if home else None


def state_name(config: Path) -> str:
    """The crontab's own database in the state folder: ``<stem>-<8 hex>.db``, the hash of
    its absolute path with the folder's symlinks resolved and the file name kept as given.

    Resolving the folder makes ``cd ~/.config/cronplus; cronplus status`` (the shell's
    working folder is always the resolved one) find the daemon that ``-c`` started with a
    path through a symlinked folder; the name is kept so that a symlink swap of the file
    (a deploy) keeps its state and the running daemon's control socket."""
    absolute = Path(os.path.abspath(config))
    canonical = Path(os.path.realpath(absolute.parent), absolute.name)
    digest = hashlib.sha256(os.fsencode(canonical)).hexdigest()[:8]
    return f"{absolute.stem[:64] or 'crontab'}-{digest}.db"


def default_state(env: Mapping[str, str], *, euid: int, platform: str, config: Path) -> Path | None:
    """``settings.state`` when the crontab ``config`` sets none: its own database in the
    state folder (``state_folder``, ``state_name``); None without HOME or XDG_STATE_HOME."""
    folder = state_folder(env, euid=euid, platform=platform)
    return None if folder is None else folder / state_name(config)


def declared_state(path: Path, *, env: Mapping[str, str]) -> tuple[Path | None, bool]:
    """Best effort, for a crontab that does not load: ``settings.state`` as the file spells
    it (``~`` expanded, relative to the crontab's folder) and whether it has
    ``settings.cluster``, read from the YAML events before any syntax error.

    ``(None, False)`` when the settings say neither; ``ValueError`` when the file cannot
    tell: unreadable, or its syntax breaks before the settings are done, or ``state`` is not
    a plain path. Nothing is checked here: this only finds where to look.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read it: {error}") from None
    found: dict[str, str | None] = {}
    try:
        _settings_keys(text, found)
    except yaml.YAMLError:
        if "done" not in found:
            raise ValueError("its YAML breaks before its settings end") from None
    state = found.get("state")
    if "state" in found and not state:
        raise ValueError("settings.state is not a plain path")
    if state is None:
        return None, "cluster" in found
    if state == "~" or state.startswith("~/"):
        if not env.get("HOME"):
            raise ValueError("settings.state starts with '~' and HOME is not set")
        state = env["HOME"] + state[1:]
    folder = Path(os.path.abspath(path)).parent
    return Path(folder, state), "cluster" in found


def _settings_keys(text: str, found: dict[str, str | None]) -> None:
    """Fill ``found`` from the top-level ``settings`` mapping: ``state`` (its scalar, or
    None when it is not one), ``cluster`` when present, and ``done`` once it is read whole
    (or the document is, without one)."""
    frames: list[list[Any]] = []  # per open collection: [is a mapping, expects a key, key]
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        is_scalar = isinstance(event, yaml.ScalarEvent | yaml.AliasEvent)
        if isinstance(event, yaml.CollectionEndEvent):
            frames.pop()
            if [frame[2] for frame in frames] == ["settings"] or not frames:
                found["done"] = "yes"
                return
        elif frames and frames[-1][0] and frames[-1][1] and is_scalar:
            frames[-1][1:] = [False, getattr(event, "value", None)]
            continue
        elif is_scalar or isinstance(event, yaml.CollectionStartEvent):
            place = [frame[2] for frame in frames]
            if place[:1] == ["settings"] and len(place) == 2 and place[1] in _DECLARED:
                found[place[1]] = _plain_text(event) if place[1] == "state" else None
            if place == ["settings"] and not isinstance(event, yaml.CollectionStartEvent):
                found["done"] = "yes"  # `settings:` with no mapping
                return
            if isinstance(event, yaml.CollectionStartEvent):
                frames.append([isinstance(event, yaml.MappingStartEvent), True, None])
                continue
        else:
            continue
        if frames and frames[-1][0]:
            frames[-1][1] = True
    found["done"] = "yes"


_DECLARED = ("state", "cluster")


def _plain_text(event: yaml.Event) -> str | None:
    """A scalar that YAML reads as a string, else None (a null, a tagged value, an alias)."""
    if not isinstance(event, yaml.ScalarEvent) or event.tag is not None:
        return None
    if event.style is None and event.value in ("", "~", "null", "Null", "NULL"):
        return None
    return event.value


_RETRY = {"retries": "retries", "retry_delay": "delay", "retry_backoff": "backoff"}
_RETRY["retry_max_delay"] = "max_delay"


def _crontab(
    file: CrontabFile, path: Path, folder: Path, env: Mapping[str, str], euid: int
) -> Crontab:
    state = default_state(env, euid=euid, platform=sys.platform, config=path)
    settings: dict[str, Any] = {"state": state, **(file.get("settings") or {})}
    if settings["state"] is None:
        why = "no default, as neither XDG_STATE_HOME nor HOME is set; set it"
        raise ConfigError([ConfigIssue(str(path), 1, 1, "settings.state", why)])
    defaults: dict[str, Any] = dict(file.get("defaults") or {})
    jobs = file.get("jobs") or {}
    if "timezone" not in defaults and any("timezone" not in job for job in jobs.values()):
        defaults["timezone"] = host_zone(env)
    if "cluster" in settings:
        cluster = dict(settings["cluster"])
        cluster["tags"] = frozenset(cluster.get("tags", ()))
        settings["cluster"] = ClusterSettings(**cluster)
    if "smtp" in settings:
        settings["smtp"] = alerting.smtp(settings["smtp"])
    settings["pings"] = alerting.delivery(settings.get("pings", {}), alerting.PING_DELIVERY)
    shared: dict[tuple[type, object], Any] = {}
    return Crontab(
        path=path,
        settings=Settings(**settings),
        jobs=tuple(_job(name, dict(job), defaults, folder, shared) for name, job in jobs.items()),
        notifiers=alerting.notifiers(file.get("notifiers") or {}),
    )


def _job(
    name: str,
    job: dict[str, Any],
    defaults: dict[str, Any],
    folder: Path,
    shared: dict[tuple[type, object], Any],
) -> Job:
    """The job's own value wins over ``defaults:``; ``env`` maps merge, the job's keys win.

    Equal values in ``_SHARED`` fields are one object across the jobs (``shared``): 10,000
    jobs hold a few dozen schedules, commands and policies, not 10,000 of each.
    """
    fields = {"workdir": folder, **defaults, **job}
    env_file: secrets.EnvFile | None = fields.get("env_file")
    fields["env"] = secrets.job_env(env_file, defaults.get("env"), job.get("env"))
    fields["env_file"] = env_file.path if env_file else None
    fields["limits"] = limits.merged(defaults.get("limits"), job.get("limits"))
    fields["user"], fields["group"] = accounts.job_user(fields.get("user"), fields.get("group"))
    retry = RetryPolicy(**{_RETRY[key]: fields.pop(key) for key in _RETRY if key in fields})
    if "success_codes" in fields:
        fields["success_codes"] = frozenset(fields["success_codes"])
    if "run_on" in fields:
        fields["run_on"] = frozenset(fields["run_on"])
    if "inherit_env" in fields:
        fields["inherit_env"] = tuple(fields["inherit_env"])
    alerting.job_fields(fields)
    for kind in targetfields.KINDS:
        if kind in fields:  # _check_targets saw to it that there is one, and no command
            fields["target"], fields["command"] = targetfields.build(kind, fields.pop(kind)), ""
    for key in _SHARED.intersection(fields):
        fields[key] = shared.setdefault((type(fields[key]), fields[key]), fields[key])
    retry = shared.setdefault((RetryPolicy, retry), retry)
    return Job(name=name, retry=retry, **fields)


_SHARED = frozenset({"schedule", "command", "limits", "success_codes", "timeout"})
"""Job fields whose values many jobs repeat (all hashable)."""


# --- the public surface -------------------------------------------------------------------


def load(path: Path, *, env: Mapping[str, str] | None = None, euid: int | None = None) -> Crontab:
    """Read and check the crontab at ``path``; ``env`` defaults to the process environment,
    ``euid`` (whom the jobs run as by default) to the process's."""
    euid = os.geteuid() if euid is None else euid
    try:
        # One open: the trust checks (as root) are made on the descriptor the bytes come from.
        data, info = permissions.read_stat(path, euid=euid, cap=permissions.CRONTAB)
    except permissions.Refused as refused:
        why = f"refusing to load as root: {refused}"
        raise ConfigError([ConfigIssue(str(path), 1, 1, "", why)]) from None
    except (OSError, permissions.TooLarge) as error:
        why = f"cannot read: {_unread(error)}"
        raise ConfigError([ConfigIssue(str(path), 1, 1, "", why)]) from None
    crontab = loads(data, path=path, env=os.environ if env is None else env, euid=euid)
    return replace(crontab, modified=datetime.fromtimestamp(info.st_mtime, UTC))


def _unread(error: OSError | permissions.TooLarge) -> str:
    if isinstance(error, IsADirectoryError):
        return "it is a directory; expected a YAML file"
    return str(error) if isinstance(error, permissions.TooLarge) else str(error.strerror)


def loads(
    text: str | bytes, *, path: Path, env: Mapping[str, str], euid: int | None = None
) -> Crontab:
    """Check crontab text; ``path`` names it in messages and anchors its relative paths;
    ``euid`` is the process's unless given."""
    euid = os.geteuid() if euid is None else euid
    file, folder = str(path), Path(os.path.abspath(path)).parent
    # A big crontab sets the collector off dozens of times (a third of the load time) to
    # find nothing: these values hold no cycles, as an alias into its own anchor is refused.
    with collector.paused():
        values = read_yaml(decode(text, file) if isinstance(text, bytes) else text, file)
        checked = None
        if values.root is not None or not values.issues:
            try:
                checked = _ADAPTER.validate_python(values.root, context=(env, folder))
            except ValidationError as error:
                for details in error.errors(include_url=False):
                    report(values, details)
            _check_schedules(values, env)
            _check_run_on(values)
            _check_targets(values)
            _check_cluster_driver(values)
            _check_alerts(values)
            _check_containment(values, env, euid)
        if values.issues or checked is None:
            raise ConfigError(_hide_secrets(values))
        return _crontab(checked, path, folder, env, euid)


def schema() -> dict[str, object]:
    """The draft-07 JSON Schema of a crontab, generated from the file models."""
    generated = _draft07(_ADAPTER.json_schema())
    return {"$schema": "http://json-schema.org/draft-07/schema#", **generated}


def schema_text() -> str:
    """``schema()`` exactly as the shipped ``cronplus.schema.json`` holds it."""
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"


def _draft07(node: Any) -> Any:
    """pydantic writes draft 2020-12: ``$defs``, and keywords beside a ``$ref``, which
    draft-07 ignores, so those go into an ``allOf``. A key pattern also closes its mapping."""
    if isinstance(node, list):
        return [_draft07(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {("definitions" if key == "$defs" else key): _draft07(v) for key, v in node.items()}
    if "patternProperties" in out:
        out.setdefault("additionalProperties", False)
    if "$ref" in out:
        ref = {"$ref": out.pop("$ref").replace("#/$defs/", "#/definitions/")}
        out = {"allOf": [ref], **out} if out else ref
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cronplus.config.loader --write-schema``, or ``--check-schema`` (1 if stale)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--write-schema"]:
        SCHEMA_PATH.write_text(schema_text(), encoding="utf-8")
        sys.stdout.write(f"wrote {SCHEMA_PATH}\n")
        return 0
    if args == ["--check-schema"]:
        shipped = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
        return 0 if shipped == schema_text() else 1
    sys.stderr.write("usage: python -m cronplus.config.loader --write-schema | --check-schema\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())

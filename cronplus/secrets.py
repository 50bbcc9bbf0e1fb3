"""Secrets in a job's environment: where they come from, and keeping them out of output.

A value of a job's ``env`` is secret when its name looks like one (``*TOKEN*``,
``*PASSWORD*``, ``*SECRET*``, ``*KEY*``, in any case) or when it came from a source meant
for secrets: ``env_file:``, ``{from_env: NAME}`` (the daemon's environment) or
``{from_file: PATH}``. Such values are ``Secret`` strings: a ``repr`` shows ``'***'``.

Wherever cronplus shows text a job or the crontab produced, secret values become ``***``:
the engine redacts each ``RunResult`` (stderr tail, reason) before it is logged, stored in
history or sent as an alert, and ``config`` redacts its error messages. The values of the
daemon's own variables with secret-looking names count too, since every job inherits them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from cronplus.model import ConfigIssue
from cronplus.permissions import refusal

MASK = "***"
SECRET_WORDS = ("TOKEN", "PASSWORD", "SECRET", "KEY")
MIN_REDACTED = 4
"""Shorter values are not searched for in output: ``on`` or ``1`` would mangle every line."""
SOURCES = ("from_env", "from_file")

_SECRET_NAME = re.compile("|".join(SECRET_WORDS), re.IGNORECASE)
_ENV_LINE = re.compile(r"(?:export\s+)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)")


class Secret(str):
    """A string whose value is a secret: itself to ``str()`` and to the job, ``'***'`` to
    ``repr()``, so a ``Job`` in a log line or a traceback shows no secret."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(MASK)


def looks_secret(name: str) -> bool:
    """Whether a variable's name says its value is a secret (``API_TOKEN``, ``db_password``)."""
    return _SECRET_NAME.search(name) is not None


def mark(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the values of secret-looking names made ``Secret``."""
    return {name: Secret(value) if looks_secret(name) else value for name, value in env.items()}


def secret_values(*envs: Mapping[str, str]) -> list[str]:
    """The values to hide, longest first (so a secret that contains another goes whole)."""
    found = {
        str(value)
        for env in envs
        for name, value in env.items()
        if (isinstance(value, Secret) or looks_secret(name)) and len(value) >= MIN_REDACTED
    }
    return sorted(found, key=lambda value: (-len(value), value))


def redact(text: str, values: Sequence[str]) -> str:
    """``text`` with every occurrence of each value replaced by ``***``."""
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def redactor(*envs: Mapping[str, str]) -> Callable[[str], str]:
    """A function that redacts the secrets of ``envs`` (a job's full environment)."""
    found: list[list[str]] = []

    def hide(text: str) -> str:
        # Most attempts leave nothing to hide (no stderr, no reason): finding the secrets of
        # a whole environment costs ~30 us, a burst of 1,000 starts would pay it for nothing.
        if not text:
            return text
        if not found:
            found.append(secret_values(*envs))
        return redact(text, found[0])

    return hide


# --- sources ----------------------------------------------------------------------------


def from_source(value: Mapping[str, object], *, env: Mapping[str, str], folder: Path) -> Secret:
    """``{from_env: NAME}`` or ``{from_file: PATH}``; a ``ValueError`` says what is wrong,
    never showing a value."""
    if len(value) != 1 or next(iter(value)) not in SOURCES:
        raise ValueError(f"expected a string, or a mapping with one key, {_SOURCES_HINT}")
    ((key, name),) = value.items()
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{key}: expected a non-empty string")
    if key == "from_env":
        if not env.get(name):
            raise ValueError(f"from_env: the environment variable {name} is not set or empty")
        return Secret(env[name])
    return Secret(read_secret_file(Path(folder, name)))


_SOURCES_HINT = "from_env: VARIABLE or from_file: PATH"


def read_secret_file(path: Path) -> str:
    """A file's whole text, less one final line break; an empty file is an error."""
    text = _read_trusted(path, "a secret")
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ValueError(f"{path} is empty; expected the secret")
    return text


@dataclass(frozen=True)
class EnvFile:
    """An ``env_file:`` as read when the crontab is loaded: its path and its variables."""

    path: Path
    values: Mapping[str, Secret] = field(default_factory=dict)


def read_env_file(path: Path) -> EnvFile:
    """``NAME=VALUE`` lines, as systemd's ``EnvironmentFile=`` reads the simple ones.

    Blank lines and lines starting with ``#`` are skipped, ``export`` is allowed, a value in
    matching single or double quotes loses them, and nothing is expanded. A bad line is
    named by its number only: its text may hold a secret.
    """
    values: dict[str, Secret] = {}
    for number, line in enumerate(_read_trusted(path, "variables").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ENV_LINE.fullmatch(stripped)
        if match is None:
            raise ValueError(
                f"{path}, line {number}: expected NAME=VALUE (a name of letters, digits and"
                " '_'), a comment or a blank line; the line is not shown, it may hold a secret"
            )
        values[match["name"]] = Secret(_unquote(match["value"]))
    return EnvFile(path=path, values=values)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _read_trusted(path: Path, what: str) -> str:
    why = refusal(path, euid=os.geteuid())
    if why is not None:
        raise ValueError(f"refusing to read {what} as root: {why}")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text"
        raise ValueError(f"cannot read {path}: {reason}") from None


def job_env(
    env_file: EnvFile | None,
    defaults: Mapping[str, str] | None,
    job: Mapping[str, str] | None,
) -> dict[str, str]:
    """A job's ``env``: its ``env_file``, then ``defaults.env``, then its own ``env``, each
    overriding the one before, with secret-looking names' values made ``Secret``."""
    merged = {**(env_file.values if env_file else {}), **(defaults or {}), **(job or {})}
    return mark(merged)


# --- the crontab's own error messages ------------------------------------------------------


def env_places(root: object) -> Iterator[tuple[tuple[str, ...], object]]:
    """Every raw ``env`` value of the crontab (``defaults.env.X``, ``jobs.J.env.X``) whose
    name looks secret, with its place."""
    if not isinstance(root, dict):
        return
    owners: list[tuple[tuple[str, ...], object]] = [(("defaults",), root.get("defaults"))]
    jobs = root.get("jobs")
    if isinstance(jobs, dict):
        owners += [(("jobs", name), job) for name, job in jobs.items()]
    for loc, owner in owners:
        env = owner.get("env") if isinstance(owner, dict) else None
        for name, value in env.items() if isinstance(env, dict) else ():
            if isinstance(name, str) and looks_secret(name):
                yield (*loc, "env", name), value


def hide_in_issues(
    issues: Sequence[ConfigIssue], hidden: Mapping[str, Sequence[str]]
) -> list[ConfigIssue]:
    """Each issue at a secret's place (``ConfigIssue.path``) with that secret's texts (the
    value as YAML read it, and as written) replaced by ``***``, however short they are."""
    out = []
    for issue in issues:
        texts = sorted((t for t in hidden.get(issue.path, ()) if t), key=len, reverse=True)
        out.append(replace(issue, message=redact(issue.message, texts)) if texts else issue)
    return out

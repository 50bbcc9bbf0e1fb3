"""Secrets in a job's environment: where they come from, and keeping them out of output.

A value of a job's ``env`` is secret when its name looks like one (``*TOKEN*``,
``*PASSWORD*``, ``*SECRET*``, ``*KEY*``, in any case) or when it came from a source meant
for secrets: ``env_file:``, ``{from_env: NAME}`` (the daemon's environment) or
``{from_file: PATH}``. Such values are ``Secret`` strings: a ``repr`` shows ``'***'``.

Wherever cronplus shows text a job or the crontab produced, secret values become ``***``:
a ``Redactor`` masks a job's output as the runner captured it, before the stderr tail is
cut from it, the engine masks each ``RunResult``'s reason, before it is logged, stored in
history or sent as an alert, and ``config`` redacts its error messages. The values of the
daemon's own variables with secret-looking names count too, whatever a job inherits.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from cronplus.core.model import ConfigIssue
from cronplus.host import permissions

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


def with_lines(values: Sequence[str]) -> list[str]:
    """``values`` and each line of those that span lines (a key ``from_file``), stripped,
    longest first: a job may print such a secret line by line, or with other line breaks."""
    found = set(values)
    for value in values:
        if "\n" in value or "\r" in value:
            found.update(line.strip() for line in value.splitlines())
    return sorted((v for v in found if len(v) >= MIN_REDACTED), key=lambda v: (-len(v), v))


class Redactor:
    """Masks the secrets of a job's environments (``envs``): in text, when called, and in a
    job's output as captured bytes (``mask``), before any of it is cut.

    The values are found on first use and kept: most attempts have nothing to hide (no
    output, no reason), and finding the secrets of a whole environment costs ~25 us.
    ``base``'s secrets count too: the daemon's environment, searched once for all jobs.
    """

    __slots__ = ("_base", "_envs", "_patterns", "_values")

    def __init__(self, *envs: Mapping[str, str], base: Redactor | None = None) -> None:
        self._envs = envs
        self._base = base
        self._values: list[str] | None = None
        self._patterns: list[bytes] | None = None

    def values(self) -> list[str]:
        """What is masked: each secret value, and its lines, longest first."""
        if self._values is None:
            found = secret_values(*self._envs)
            if self._base is not None:
                found += self._base.values()
            self._values = with_lines(found)
        return self._values

    def patterns(self) -> list[bytes]:
        """``values`` as the bytes a job writes (``surrogateescape``: as the environment
        held them)."""
        if self._patterns is None:
            self._patterns = [v.encode("utf-8", "surrogateescape") for v in self.values()]
        return self._patterns

    def __call__(self, text: str) -> str:
        return redact(text, self.values()) if text else text

    def mask(
        self,
        data: bytes,
        start: int = 0,
        end: int | None = None,
        *,
        cut_before: bool = False,
        cut_after: bool = False,
    ) -> bytes:
        """``data[start:end]`` with every secret that overlaps it replaced by ``***``.

        ``data`` around the window is context: a secret that straddles ``start`` or
        ``end`` is found whole there and masked up to the window's edge, so a later cut
        never leaves a fragment. ``cut_before``/``cut_after``: ``data`` itself was cut off
        the stream there, so a part of a secret running into that edge is masked too when
        it reaches the window and is at least ``MIN_REDACTED`` bytes (docs/running.md,
        "Secrets in what cronplus shows").
        """
        end = len(data) if end is None else end
        if start >= end or not data:
            return b""
        runs: list[tuple[int, int]] = []
        for pattern in self.patterns():
            runs += _occurrences(data, pattern, start, end)
            if cut_before and (part := _leading_part(data, pattern, need=start)):
                runs.append((0, part))
            if cut_after and (part := _trailing_part(data, pattern, need=len(data) - end)):
                runs.append((len(data) - part, len(data)))
        return _masked(data, start, end, runs)


NO_SECRETS = Redactor()
"""Masks nothing: output kept as the job wrote it."""
_MASK_BYTES = MASK.encode()


def redactor(*envs: Mapping[str, str]) -> Redactor:
    """A ``Redactor`` for the secrets of ``envs`` (a job's full environment)."""
    return Redactor(*envs)


def _occurrences(data: bytes, pattern: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """Every occurrence of ``pattern`` that overlaps ``data[start:end]``, overlapping ones
    too (``abab`` in ``ababab``): masking only every other one would leave a fragment."""
    size = len(pattern)
    low, high = max(0, start - size + 1), min(len(data), end + size - 1)
    found = []
    at = data.find(pattern, low, high)
    while at >= 0:
        found.append((at, at + size))
        at = data.find(pattern, at + 1, high)
    return found


def _leading_part(data: bytes, pattern: bytes, *, need: int) -> int:
    """How many of ``data``'s first bytes are the rest of ``pattern`` after its start, when
    that rest is longer than ``need`` bytes (and at least ``MIN_REDACTED``); else 0."""
    need = max(need, MIN_REDACTED - 1)
    if len(pattern) - 1 <= need:
        return 0  # no part of it after its first byte is long enough to matter
    probe = data[: need + 1]
    at = pattern.find(probe, 1)
    while at >= 0:  # the first match is the longest rest
        rest = pattern[at:]
        if data.startswith(rest) or rest.startswith(data):
            return min(len(rest), len(data))
        at = pattern.find(probe, at + 1)
    return 0


def _trailing_part(data: bytes, pattern: bytes, *, need: int) -> int:
    """How many of ``data``'s last bytes are a start of ``pattern`` short of its end, when
    that start is longer than ``need`` bytes (and at least ``MIN_REDACTED``); else 0."""
    need = max(need, MIN_REDACTED - 1)
    if len(pattern) - 1 <= need:
        return 0
    probe = data[-(need + 1) :]
    at = pattern.rfind(probe, 0, len(pattern) - 1)
    while at >= 0:  # the last match is the longest start
        begin = pattern[: at + len(probe)]
        if data.endswith(begin) or begin.endswith(data):
            return min(len(begin), len(data))
        at = pattern.rfind(probe, 0, at + len(probe) - 1)
    return 0


def _masked(data: bytes, start: int, end: int, runs: list[tuple[int, int]]) -> bytes:
    """``data[start:end]`` with each run (merged where they overlap) as one ``***``."""
    if not runs:
        return bytes(data[start:end])
    merged: list[list[int]] = []
    for first, last in sorted(runs):
        if merged and first < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    out, at = bytearray(), start
    for first, last in merged:
        if last <= start or first >= end:
            continue
        out += data[at : max(first, start)]
        out += _MASK_BYTES
        at = min(last, end)
    out += data[at:end]
    return bytes(out)


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
    text = read_trusted_text(path, "a secret", permissions.SECRET)
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
    text = read_trusted_text(path, "variables", permissions.ENV_FILE)
    for number, line in enumerate(text.splitlines(), start=1):
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


def read_trusted_text(path: Path, what: str, cap: permissions.Cap) -> str:
    """The UTF-8 text of ``path``, checked as root trusts it and read from that one open
    (``permissions.read``); a ``ValueError`` says what is wrong, never showing the text."""
    try:
        data = permissions.read(path, euid=os.geteuid(), cap=cap)
        return data.decode("utf-8")
    except permissions.Refused as refused:
        raise ValueError(f"refusing to read {what} as root: {refused}") from None
    except (OSError, permissions.TooLarge, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {path}: {_unread(error)}") from None


def _unread(error: Exception) -> str:
    if isinstance(error, UnicodeDecodeError):
        return "it is not UTF-8 text"
    return str(error.strerror) if isinstance(error, OSError) else str(error)


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

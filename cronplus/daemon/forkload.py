"""The daemon's first load of its crontab, done in a forked child so that its heap holds the
jobs and none of the parse.

Loading 10,000 jobs makes 35 MB of short-lived values (YAML marks, pydantic's output) among
12 MB of jobs. CPython keeps every memory arena the two shared, so a daemon that parsed in
its own heap stays 25 MB bigger for as long as it runs (bench/RESULTS.md, peers). The child
(``runner.call_in_child``) loads, and pickles back the ``Crontab`` or the issues of a bad
file. A reload parses in the daemon itself: by then other threads may run, and a fork
would copy them half-way through their work.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from cronplus.config import loader
from cronplus.core.model import ConfigError, ConfigIssue, Crontab
from cronplus.run.runner import call_in_child


def load(path: Path, *, meanwhile: Callable[[], object] = bool) -> Crontab:
    """``loader.load(path)``, computed in a child while this process runs ``meanwhile()``;
    raises the same ``ConfigError``."""
    loaded = call_in_child(partial(_load, path), meanwhile=meanwhile)
    if isinstance(loaded, Crontab):
        return loaded
    raise ConfigError(loaded)


def _load(path: Path) -> Crontab | list[ConfigIssue]:
    try:
        return loader.load(path)
    except ConfigError as error:  # it pickles as its message alone: send its issues
        return error.issues

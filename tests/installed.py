"""cronplus as an operator installs it: the checkout built as a wheel, installed into a
fresh virtual environment outside the checkout, and run through its console script.

The end-to-end tests run that script, never ``python -m cronplus`` from the tree, so a
module or a data file the wheel leaves out fails them as it would fail a user. The build
works on a copy of the checkout (the tree is never written to, and two pytest workers
never share a ``build/`` folder); the wheels of the dependencies come from pip's index
(or its cache) once per process, and ``wheelhouse()`` also serves the systemd suite,
which installs them inside its container with ``--no-index``.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
_SKIPPED = {".git", ".venv", "build", "bench", "tests", "docs"}
"""Top-level folders the wheel is not built from (bench/out can hold gigabytes)."""
_JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*_cache")


def _pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pip {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def _scratch(prefix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def source_copy(dest: Path) -> Path:
    """The checkout's files the wheel is built from, copied to ``dest``."""
    dest.mkdir(parents=True)
    for entry in CHECKOUT.iterdir():
        if entry.name in _SKIPPED or entry.name.startswith("."):
            continue
        target = dest / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, ignore=_JUNK, symlinks=True)
        else:
            shutil.copy2(entry, target, follow_symlinks=False)
    return dest


EXTRAS = "cluster,celery,rq,amqp"


@functools.cache
def wheelhouse(extras: str = "cluster") -> Path:
    """A folder with cronplus's wheel and the wheels of everything it and ``extras`` need,
    built once per process (the targets' ``celery``, ``rq``, ``amqp`` only where asked)."""
    scratch = _scratch("cronplus-wheels-")
    source = source_copy(scratch / "src")
    wheels = scratch / "wheels"
    _pip("wheel", "--no-build-isolation", "--wheel-dir", str(wheels), f"{source}[{extras}]")
    return wheels


def wheel() -> Path:
    """cronplus's own wheel in ``wheelhouse()``."""
    (found,) = wheelhouse().glob("cronplus-*.whl")
    return found


def new_venv(dest: Path, requirement: str = "cronplus", extras: str = "cluster") -> Path:
    """A fresh virtual environment at ``dest`` with ``requirement`` installed from
    ``wheelhouse(extras)`` alone; its ``bin`` folder."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    add(dest, requirement, extras)
    return dest / "bin"


def add(venv: Path, requirement: str, extras: str = "cluster") -> None:
    """Install ``requirement`` (``cronplus[cluster]``, say) into ``venv`` from the wheelhouse."""
    python = str(venv / "bin" / "python")
    found = str(wheelhouse(extras))
    _pip("--python", python, "install", "--no-index", "--find-links", found, requirement)


@functools.cache
def script() -> Path:
    """The ``cronplus`` console script of one installation with the ``cluster`` extra,
    shared by the end-to-end tests of this process."""
    return new_venv(_scratch("cronplus-venv-") / "venv", "cronplus[cluster]") / "cronplus"


@functools.cache
def targets_script() -> Path:
    """The ``cronplus`` console script of an installation with every extra: the daemon the
    broker targets' tests run."""
    venv = _scratch("cronplus-venv-") / "venv"
    return new_venv(venv, f"cronplus[{EXTRAS}]", EXTRAS) / "cronplus"


def python() -> Path:
    """The interpreter of ``script()``'s installation."""
    return script().with_name("python")

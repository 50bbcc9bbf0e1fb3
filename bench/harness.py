"""The bench's common ground: what it builds and installs, its command lines, its figures
(percentiles, ``median (min–max)`` cells, markdown tables) and its sections of RESULTS.md.
Every script here takes the rest from gen.py (the jobs) and procs.py (the processes).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

BENCH = Path(__file__).resolve().parent
BUILD_DIR = BENCH / "out"
"""The C helpers' builds, cronplus's and the peers' installs (git ignores it)."""
RESULTS = BENCH / "RESULTS.md"
T = TypeVar("T")


class Failed(Exception):
    """A benchmark cannot go on: a build, an install or a process under test failed."""


def launch(main: Callable[[], int | None]) -> None:
    """A script's entry: its exit code, or a failure's message and 1, without a traceback."""
    try:
        code = main()
    except Failed as failed:
        sys.exit(f"{Path(sys.argv[0]).name}: {failed}")
    sys.exit(code)


# --- building and installing ------------------------------------------------------------


def checked(argv: Sequence[str | Path], *, env: Mapping[str, str] | None = None) -> str:
    """Run ``argv`` to its end; its output, or ``Failed`` with the end of its errors."""
    words = [str(word) for word in argv]
    try:
        done = subprocess.run(words, capture_output=True, text=True, env=env)
    except FileNotFoundError:
        raise Failed(f"{words[0]}: not found") from None
    if done.returncode != 0:
        raise Failed(f"{shlex.join(words)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return done.stdout


def said(argv: Sequence[str | Path]) -> str:
    """What ``argv`` prints, stripped; "" if it fails: for a version or a name, not a figure."""
    try:
        done = subprocess.run([str(word) for word in argv], capture_output=True, text=True)
    except FileNotFoundError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def build_c(source: Path, build_dir: Path = BUILD_DIR, *, static: bool = False) -> Path:
    """``source`` compiled into ``build_dir`` unless an up-to-date build is there.

    ``static``: static if the toolchain can, else dynamic, under a name of its own
    (``-static``), so that a dynamic build made before is never taken for it.
    """
    target = build_dir / (f"{source.stem}-static" if static else source.stem)
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    build_dir.mkdir(parents=True, exist_ok=True)
    partial = build_dir / f".{source.stem}-{os.getpid()}"
    complaint: Failed | None = None
    for flags in (["-static"], []) if static else ([],):
        try:
            checked(["gcc", "-O2", *flags, "-o", partial, source])
        except Failed as failed:
            complaint = failed
        else:
            partial.replace(target)  # whole or not at all: two benchmarks may build at once
            return target
    raise Failed(f"cannot build {source}: {complaint}")


def build_stamp(build_dir: Path = BUILD_DIR) -> Path:
    """bench/stamp.c, the jobs' payload: it notes CLOCK_REALTIME first thing after its exec."""
    return build_c(BENCH / "stamp.c", build_dir, static=True)


def install_venv(venv: Path, *requirements: str) -> Path:
    """A fresh virtual environment with ``requirements`` installed by pip (bytecode compiled,
    as an operator's install is); its ``bin`` folder."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    checked([sys.executable, "-m", "venv", "--clear", venv])
    checked([venv / "bin" / "pip", "install", "--quiet", *requirements])
    return venv / "bin"


def install_cronplus(venv: Path = BUILD_DIR / "cronplus") -> Path:
    """This checkout as a wheel in a virtual environment of its own, anew on every call (what
    is measured is the code checked out now); its python.

    Not the work tree's interpreter: its editable install adds a path finder to every start,
    and under ``PYTHONDONTWRITEBYTECODE`` it compiles every module on every start.
    """
    return install_venv(venv, str(BENCH.parent)) / "python"


def bench_env(state_home: Path) -> dict[str, str]:
    """This environment minus anything that steers cronplus, with its own state folder."""
    steering = ("CRONPLUS_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(steering)}
    env["XDG_STATE_HOME"] = str(state_home)
    return env


def cronplus_argv(crontab: Path, *args: str, python: str | Path = sys.executable) -> list[str]:
    """``cronplus`` as ``python`` runs it (by default this interpreter: this checkout)."""
    return [str(python), "-m", "cronplus", "-c", str(crontab), "--log-format", "json", *args]


def fresh(root: Path, name: str) -> Path:
    """A new, empty folder under ``root`` for one run: its crontab, state and stamps."""
    return Path(tempfile.mkdtemp(prefix=f"{name.replace('/', '_')}-", dir=root))


def shown(path: Path) -> str:
    """``path`` from the checkout's root where it lies under it (bench/out/...)."""
    root = BENCH.parent
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


@dataclass(frozen=True, kw_only=True)
class Stamp:
    """One line of a stamp file: the job and slot cronplus told it (a peer's read ``- -``),
    and when it started (CLOCK_REALTIME)."""

    job: str
    slot: str
    at: float

    @property
    def scheduled_at(self) -> datetime:
        return datetime.fromisoformat(self.slot)

    @property
    def lateness(self) -> float:
        """Seconds from the scheduled instant to the job's start."""
        return self.at - self.scheduled_at.timestamp()


def read_stamps(path: Path) -> list[Stamp]:
    """Every stamp in ``path``, in file order; none if nothing has started yet."""
    if not path.exists():
        return []
    stamps = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split()
        if len(words) != 3:
            raise ValueError(f"{path}:{number}: expected 'JOB SCHEDULED_AT SECONDS', got {line!r}")
        stamps.append(Stamp(job=words[0], slot=words[1], at=float(words[2])))
    return stamps


# --- command lines ----------------------------------------------------------------------


def interpreter(text: str) -> Path:
    """``--cronplus-python``: a path, or a name looked up on PATH, made absolute.

    Absolute, not resolved: a venv's python is a link that must stay one to find its
    site-packages.
    """
    found = shutil.which(text)
    if found is None:
        raise argparse.ArgumentTypeError(f"no executable {text!r} (a path, or a name on PATH)")
    return Path(found).absolute()


def listed(text: str) -> list[str]:
    """A comma-separated option: ``cronplus,yacron``."""
    return [part.strip() for part in text.split(",") if part.strip()]


def numbers(text: str) -> list[int]:
    """A comma-separated option of job counts: ``100,1000,10000``."""
    return [int(part) for part in listed(text)]


@dataclass(frozen=True)
class Section:
    """A benchmark's block of RESULTS.md: under its heading, between its script's markers."""

    heading: str
    script: str

    def command(self, args: argparse.Namespace, options: Sequence[str]) -> str:
        """The command line that measures ``args`` again, each of ``options`` spelt out."""
        words = [f"python bench/{self.script}"]
        for name in options:
            value = getattr(args, name)
            if isinstance(value, list):
                value = ",".join(map(str, value))
            elif isinstance(value, float):
                value = f"{value:g}"
            words += [f"-{name}" if len(name) == 1 else f"--{name.replace('_', '-')}", value]
        return " ".join(map(str, words))

    def publish(self, body: str, path: Path | None) -> None:
        """Print ``body``; given ``--write-results``, also put it into this block of ``path``."""
        print(body)
        if path is not None:
            update_results(path, self.heading, body, owner=self.script)


def parser(
    doc: str | None,
    section: Section | None = None,
    *,
    build_dir: bool = False,
    cronplus_python: bool = False,
) -> argparse.ArgumentParser:
    """A script's parser, described by its docstring's first line, with the options the
    scripts share: ``--build-dir``, ``--cronplus-python`` and ``--write-results [FILE]``."""
    made = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    if build_dir:
        made.add_argument("--build-dir", type=Path, default=BUILD_DIR, help="C helpers' builds")
    if cronplus_python:
        made.add_argument(
            "--cronplus-python",
            type=interpreter,
            metavar="PYTHON",
            help="an interpreter with cronplus installed (default: this checkout, installed anew)",
        )
    if section is not None:
        made.add_argument(
            "--write-results",
            type=Path,
            nargs="?",
            const=RESULTS,
            metavar="FILE",
            help=f"also update the '{section.heading}' section of FILE (bench/RESULTS.md)",
        )
    return made


# --- the record of a run ----------------------------------------------------------------


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the host skews every figure."""
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def code_state() -> str:
    """The commit measured, and whether cronplus/ had uncommitted changes on top of it."""
    git = ["git", "-C", str(BENCH.parent)]
    try:
        head = checked([*git, "rev-parse", "--short", "HEAD"]).strip()
    except Failed:
        return "not a git checkout"
    changed = checked([*git, "status", "--porcelain", "--", "cronplus"]).splitlines()
    extra = f" + uncommitted changes to {len(changed)} files in cronplus/" if changed else ""
    return f"commit {head}{extra}"


def host_line() -> str:
    """The interpreter, the kernel and the CPUs, for a table printed and not recorded."""
    return (
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs"
    )


@dataclass(frozen=True, kw_only=True)
class Record:
    """What a section's header notes of its run, read when the run began: load that came
    or a commit made during a long run is not what it measured."""

    loadavg: str
    code: str
    began: datetime

    @classmethod
    def begin(cls) -> Record:
        return cls(loadavg=load_average(), code=code_state(), began=datetime.now(UTC))

    def header(self, command: str, *notes: str, span: bool = True) -> str:
        """The host, the date (``span``: from the start to now), the load and the code,
        ``notes`` (each a ``- ...`` line), then the command."""
        uname = said(["uname", "-a"])
        cpuinfo = Path("/proc/cpuinfo")
        models = re.findall(
            r"^model name\s*:\s*(.*)$", cpuinfo.read_text() if cpuinfo.exists() else "", re.M
        )
        now = datetime.now(UTC)
        date = f"{self.began.isoformat(timespec='minutes')} to {now:%H:%M} UTC"
        lines = [
            f"- date: {date if span else now.isoformat(timespec='minutes')}",
            f"- `uname -a`: `{uname or platform.platform()}`",
            f"- CPU: {models[0] if models else platform.processor() or 'unknown'}, "
            f"{os.cpu_count()} cores",
            f"- Python {platform.python_version()}",
            f"- load average when the run began (other work on the host): {self.loadavg}",
            f"- code: {self.code}",
            *notes,
            f"- command: `{command}`",
        ]
        return "\n".join(lines)


def update_results(path: Path, heading: str, body: str, *, owner: str) -> None:
    """Put ``body`` under ``heading`` between ``owner``'s markers; all else in the file stays,
    the analysis written by hand around the block too."""
    begin, end = f"<!-- {owner}: begin -->", f"<!-- {owner}: end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if begin in text and end in text.split(begin, 1)[1]:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    elif re.search(f"^{re.escape(heading)}$", text, re.M):
        text = re.sub(
            f"^{re.escape(heading)}$", lambda _: f"{heading}\n\n{block}", text, count=1, flags=re.M
        )
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{block}\n"
    path.write_text(text)


# --- figures ----------------------------------------------------------------------------


def alternate(
    ways: Mapping[str, Callable[[int], T]], n: int, repeats: int, *, warm: bool = True
) -> dict[str, list[T]]:
    """Every way ``repeats`` times at size ``n``, alternating, so that drift on the host hits
    them alike; first a round of 20 each (``warm``: imports, caches, the page cache)."""
    if warm:
        for way in ways.values():
            way(min(n, 20))
    out: dict[str, list[T]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, way in ways.items():
            gc.collect()
            out[name].append(way(n))
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile: the smallest value with at least q% of them at or below."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


BURST_STATS: dict[str, Callable[[list[float]], float]] = {
    "first": min,
    "median": statistics.median,
    "p99": lambda late: percentile(late, 99),
    "last": max,
}
"""What a burst's table shows of its starts' lateness."""


def cell(values: Iterable[float | None], scale: float = 1.0, digits: int = 3) -> str:
    """``median (min–max)`` of the known values, each times ``scale``; "–" if none is."""
    known = [value * scale for value in values if value is not None]
    if not known:
        return "–"
    median = statistics.median(known)
    return f"{median:.{digits}f} ({min(known):.{digits}f}–{max(known):.{digits}f})"


def per_second(n: int, seconds: Iterable[float]) -> str:
    """Starts a second: ``n`` over the median of ``seconds``."""
    return f"{n / statistics.median(seconds):,.0f}"


def verdict(measured: float, target: float) -> str:
    return "yes" if measured < target else "**no**"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = [headers, ["---"] * len(headers), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)

"""bench/bench_targets.py in its quick mode: it measures every target beside the process
burst and writes nothing of RESULTS.md but its own section.

No timing is asserted: only that every cell holds a number of the right shape. Redis and
RabbitMQ must answer (tests/brokers.py: skipped where they are silent, failed instead under
``CRONPLUS_REQUIRE_BROKERS=1``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from brokers import RABBITMQ_URL, REDIS_SERVER, broker_missing, package_missing

pytestmark = pytest.mark.bench

BENCH = Path(__file__).resolve().parent.parent / "bench"
SPREAD = re.compile(r"^\d+\.\d+ \(\d+\.\d+–\d+\.\d+\)$")
"""A ``median (min–max)`` cell with decimals."""
WHOLE_SPREAD = re.compile(r"^-?\d+ \(-?\d+–-?\d+\)$")
"""A ``median (min–max)`` cell of whole milliseconds."""
NUMBER = re.compile(r"^\d[\d,]*$")
KINDS = ["command", "http", "celery", "rq", "amqp"]

Table = list[list[str]]


def tables(text: str) -> list[Table]:
    """Every markdown table in ``text``, as rows of cells (the separator row dropped)."""
    found: list[Table] = []
    current: Table = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip("|").split("|")])
        elif current:
            assert all(cell == "---" for cell in current[1]), f"no separator row in {current}"
            assert {len(row) for row in current} == {len(current[0])}, f"ragged table {current}"
            found.append([current[0], *current[2:]])
            current = []
    return found


def column(table: Table, name: str) -> list[str]:
    index = table[0].index(name)
    return [row[index] for row in table[1:]]


def test_the_targets_bench_measures_every_target_and_writes_only_its_section(
    tmp_path: Path,
) -> None:
    package_missing("celery", "rq", "pika", "redis")
    broker_missing("rabbitmq", RABBITMQ_URL)
    broker_missing("redis", REDIS_SERVER + "/0")
    results = tmp_path / "RESULTS.md"
    kept = "# Benchmark results\n\n## daemon\n\nkept as it is\n\n## peers\n\nthis too\n"
    results.write_text(kept)
    done = subprocess.run(
        [
            *(sys.executable, str(BENCH / "bench_targets.py"), "--quick"),
            *("--cronplus-python", sys.executable, "--write-results", str(results)),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    [bursts] = tables(done.stdout)  # no goal table: the goal is for 10,000 slots
    assert column(bursts, "target") == KINDS
    assert column(bursts, "slots") == ["200"] * len(KINDS)
    for name in ("last handed over, ms", "last `attempt_succeeded`, ms"):
        assert all(WHOLE_SPREAD.match(cell) for cell in column(bursts, name)), bursts
    assert all(NUMBER.match(cell) for cell in column(bursts, "handed over a second")), bursts
    assert all(SPREAD.match(cell) for cell in column(bursts, "daemon CPU, s")), bursts
    receiver = column(bursts, "receiver CPU, s")
    assert SPREAD.match(receiver[KINDS.index("http")]), receiver
    assert {cell for kind, cell in zip(KINDS, receiver, strict=True) if kind != "http"} == {"–"}
    written = results.read_text()
    assert written.startswith(kept)
    assert "\n## targets\n\n<!-- bench_targets.py: begin -->\n- date: " in written
    assert written.rstrip().endswith("<!-- bench_targets.py: end -->")
    assert tables(written.split("## targets", 1)[1]) == [bursts]
    assert "- command: `python bench/bench_targets.py --sizes 200 " in written

"""Issue 21's cluster faults in long windows: the fault suite's scenarios, counted the same way.

    python bench/bench_cluster_faults.py [--scenarios steady,pause,...] [--jobs 40]
        [--lease 6] [--window 60] [--after 30] [--down 75] [--write-results [FILE]]

The scenarios, their counting and the table are tests_cluster/faults.py's (``make
test-cluster`` runs them in short windows); this runs them with ``faults.LONG``, whose
whole-cluster stop outlasts the 60 s on-time window, so the restart catches up by each
job's ``catchup``. Every node is the checkout's wheel in a fresh virtual environment
(tests/installed.py), on a private PostgreSQL server (tests/privatepg.py). About 15
minutes; exits 1 when a scenario failed.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests_cluster
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # installed, privatepg

import installed
import privatepg
from harness import Failed, Record, Section, launch, listed, parser

from tests_cluster import faults, tally

SECTION = Section("## cluster faults", "bench_cluster_faults.py")


def main() -> int:
    args = parser(__doc__, SECTION)
    long = faults.LONG
    args.add_argument("--scenarios", type=listed, default=list(faults.SCENARIOS))
    args.add_argument("--jobs", type=int, default=long.jobs, help="plain jobs every 2 s")
    args.add_argument("--lease", type=int, default=long.lease, help="seconds")
    args.add_argument("--window", type=float, default=long.window_s, help="steady, seconds")
    args.add_argument("--after", type=float, default=long.after_s, help="after a fault")
    args.add_argument("--down", type=float, default=long.down_s, help="the whole stop")
    chosen = args.parse_args()
    if unknown := sorted(set(chosen.scenarios) - set(faults.SCENARIOS)):
        args.error(f"unknown scenarios {unknown}; known: {', '.join(faults.SCENARIOS)}")
    if (why := privatepg.why_not()) is not None:
        raise Failed(f"cannot start a private PostgreSQL: {why}")
    if "skew" in chosen.scenarios and (why := faults.faketime_missing()) is not None:
        raise Failed(why)
    timing = replace(
        long,
        jobs=chosen.jobs,
        lease=chosen.lease,
        window_s=chosen.window,
        after_s=chosen.after,
        down_s=chosen.down,
    )
    record, script, results = Record.begin(), installed.script(), []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp, privatepg.running() as pg:
        for name in chosen.scenarios:
            result = faults.run(
                name, folder=Path(tmp) / name, server=pg, script=script, timing=timing
            )
            print(result.row() if not result.failures else result.explain(), flush=True)
            results.append(result)
    header = record.header(
        SECTION.command(chosen, ["scenarios", "jobs", "lease", "window", "after", "down"]),
        "- cronplus run by: the checkout's wheel in a fresh virtual environment"
        " (tests/installed.py), three nodes on one private PostgreSQL server",
    )
    body = "\n".join(
        [
            header,
            f"- {timing.jobs} plain jobs every 2 s and {timing.retrying} retrying jobs every"
            f" {timing.retry_period} s (first attempt fails, retry after {timing.retry_delay} s"
            f" succeeds); lease {timing.lease} s; {time.monotonic() - started:.0f} s in all",
            "",
            "Slots counted from the record each start appends (tests_cluster/tally.py): *run*"
            " a succeeding start, *twice* two of them, *stale* a node starting a slot after"
            " another node had started it since; *recorded*: not run but in the history as"
            " missed by `catchup` or interrupted by the stop.",
            "",
            tally.HEADER,
            *(r.row() for r in results),
        ]
    )
    print()
    SECTION.publish(body, chosen.write_results)
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    launch(main)

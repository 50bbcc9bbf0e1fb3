"""Issue 21's cluster faults in long windows: the fault suite's scenarios, counted the same way.

    python bench/bench_cluster_faults.py [--scenarios steady,pause,...] [--jobs 40]
        [--lease 6] [--window 60] [--after 30] [--down 75] [--write-results [FILE]]

The scenarios, their counting and the table are tests_cluster/faults.py's (``make
test-cluster`` runs them with short windows); this runs them with ``faults.LONG``: 40 plain
jobs every 2 s and 6 retrying jobs, lease 6 s, a 60 s steady window, 30 s after each fault,
and a whole-cluster stop of 75 s, longer than the 60 s on-time window, so the restart
catches up by each job's ``catchup`` (``all`` for half the jobs, ``latest`` for the rest).
Every node is a real ``cronplus daemon`` of the checkout built as a wheel and installed
into a fresh virtual environment (tests/installed.py), on a private PostgreSQL server
(tests/privatepg.py: initdb as the postgres user, a free loopback port). About 15 minutes.

Prints the table; ``--write-results`` also puts it under ``## cluster faults`` in
bench/RESULTS.md. Exits 1 when a scenario failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_runonce
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests_cluster
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # installed, privatepg

import installed
import privatepg
from bench_runonce import add_write_results, code_state, load_average, machine, update_results

from tests_cluster import faults, tally

HEADING = "## cluster faults"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    long = faults.LONG
    parser.add_argument("--scenarios", default=",".join(faults.SCENARIOS))
    parser.add_argument("--jobs", type=int, default=long.jobs, help="plain jobs every 2 s")
    parser.add_argument("--lease", type=int, default=long.lease, help="seconds")
    parser.add_argument("--window", type=float, default=long.window_s, help="steady, seconds")
    parser.add_argument("--after", type=float, default=long.after_s, help="after a fault")
    parser.add_argument("--down", type=float, default=long.down_s, help="the whole stop")
    add_write_results(parser, HEADING)
    args = parser.parse_args()
    names = args.scenarios.split(",")
    if unknown := sorted(set(names) - set(faults.SCENARIOS)):
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(faults.SCENARIOS)}")
    if (why := privatepg.why_not()) is not None:
        raise SystemExit(f"cannot start a private PostgreSQL: {why}")
    if "skew" in names and (why := faults.faketime_missing()) is not None:
        raise SystemExit(why)
    timing = replace(
        long,
        jobs=args.jobs,
        lease=args.lease,
        window_s=args.window,
        after_s=args.after,
        down_s=args.down,
    )
    loadavg, began, code = load_average(), datetime.now(UTC), code_state()
    script = installed.script()
    results = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp, privatepg.running() as pg:
        for name in names:
            result = faults.run(
                name, folder=Path(tmp) / name, server=pg, script=script, timing=timing
            )
            print(result.row() if not result.failures else result.explain(), flush=True)
            results.append(result)
    command = (
        f"python bench/bench_cluster_faults.py --scenarios {','.join(names)} --jobs {timing.jobs}"
        f" --lease {timing.lease} --window {timing.window_s:g} --after {timing.after_s:g}"
        f" --down {timing.down_s:g}"
    )
    body = "\n".join(
        [
            machine(loadavg, began=began, code=code),
            "- cronplus run by: the checkout's wheel in a fresh virtual environment"
            " (tests/installed.py), three nodes on one private PostgreSQL server",
            f"- command: `{command}`",
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
    print(f"\n{body}")
    if args.write_results is not None:
        update_results(args.write_results, HEADING, body, owner="bench_cluster_faults.py")
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

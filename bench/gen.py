"""Generate a crontab of N jobs with mixed zones and expressions, the same for every run."""

from __future__ import annotations

import argparse
import random
from pathlib import Path

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Sao_Paulo",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Europe/Dublin",
    "America/Los_Angeles",
]
EXPRESSIONS = [
    "*/5 * * * *",
    "0 * * * *",
    "30 2 * * *",
    "15 9-17 * * 1-5",
    "0 0 1 * *",
    "0 3 * * sun",
    "*/20 9-17 * * mon-fri",
    "H H * * *",
    "H/15 * * * *",
    "0 0 L * *",
    "0 12 15W * *",
    "0 9 * * 5#3",
    "0,30 2 * * *",
    "5 4 * * 0",
    "@hourly",
    "@daily",
]


def crontab_text(n: int, *, seed: int = 7, command: str = "true") -> str:
    rng = random.Random(seed)
    lines = ["settings:", f"  max_concurrent: {max(16, n)}", "jobs:"]
    for i in range(n):
        lines += [
            f"  job-{i:05d}:",
            f'    schedule: "{rng.choice(EXPRESSIONS)}"',
            f"    timezone: {rng.choice(ZONES)}",
            f'    command: ["{command}"]',
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("n", type=int)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    args.out.write_text(crontab_text(args.n))


if __name__ == "__main__":
    main()

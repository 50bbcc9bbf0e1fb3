"""cronplus: a cron daemon with per-job zones, DST-correct schedules, retries and a failure log."""

__version__ = "0.1.0"

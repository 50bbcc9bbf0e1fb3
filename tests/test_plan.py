"""Pure decisions: retry delays, catch-up, overlap, clock jumps and wake-ups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cronplus.core import plan
from cronplus.core.model import Catchup, Job, Overlap, RetryPolicy
from cronplus.core.schedule import Schedule

S = timedelta(seconds=1)
M = timedelta(minutes=1)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (RetryPolicy(retries=0), []),
        (
            RetryPolicy(retries=3, delay=30 * S, backoff=2.0, max_delay=10 * M),
            [30 * S, 60 * S, 120 * S],
        ),
        (
            RetryPolicy(retries=6, delay=30 * S, backoff=2.0, max_delay=5 * M),
            [30 * S, 60 * S, 120 * S, 240 * S, 300 * S, 300 * S],
        ),
        (RetryPolicy(retries=3, delay=10 * S, backoff=1.0, max_delay=M), [10 * S] * 3),
        (RetryPolicy(retries=2, delay=S, backoff=3.5, max_delay=M), [S, 3.5 * S]),
    ],
    ids=["no-retries", "doubling", "capped", "constant", "fractional-backoff"],
)
def test_retry_delays_follow_delay_times_backoff_capped(
    policy: RetryPolicy, expected: list[timedelta]
) -> None:
    assert plan.retry_delays(policy) == expected


def test_a_retry_that_would_start_at_or_after_the_next_slot_is_dropped() -> None:
    policy = RetryPolicy(retries=3, delay=30 * S)
    done = utc("2026-01-01T00:00:10")
    assert plan.retry_at(
        policy, failed_attempts=1, finished_at=done, next_slot=utc("2026-01-01T00:01")
    ) == utc("2026-01-01T00:00:40")
    assert (
        plan.retry_at(
            policy, failed_attempts=1, finished_at=done, next_slot=utc("2026-01-01T00:00:40")
        )
        is None
    )


def test_no_retry_once_the_retries_are_used_up() -> None:
    policy = RetryPolicy(retries=2, delay=S)
    done = utc("2026-01-01T00:00:00")
    assert (
        plan.retry_at(policy, failed_attempts=2, finished_at=done, next_slot=None) == done + 2 * S
    )
    assert plan.retry_at(policy, failed_attempts=3, finished_at=done, next_slot=None) is None


@pytest.mark.parametrize(
    ("policy", "alive", "action"),
    [
        (Overlap.FORBID, False, plan.OverlapAction.START),
        (Overlap.FORBID, True, plan.OverlapAction.SKIP),
        (Overlap.ALLOW, True, plan.OverlapAction.START),
        (Overlap.REPLACE, True, plan.OverlapAction.REPLACE_THEN_START),
        (Overlap.REPLACE, False, plan.OverlapAction.START),
    ],
    ids=["forbid-idle", "forbid-busy", "allow-busy", "replace-busy", "replace-idle"],
)
def test_overlap_policy_decides_what_a_slot_does(
    policy: Overlap, alive: bool, action: plan.OverlapAction
) -> None:
    assert plan.overlap_action(policy, alive=alive) is action


@pytest.mark.parametrize(
    ("wall", "mono", "expected"),
    [
        (30 * S, 30.0, None),
        (30 * S, 28.0, None),
        (timedelta(hours=10, seconds=30), 30.0, timedelta(hours=10)),
        (-timedelta(hours=1) + 30 * S, 30.0, -timedelta(hours=1)),
    ],
    ids=["steady", "small-drift", "suspend-10h", "stepped-back-1h"],
)
def test_a_clock_jump_is_the_wall_clock_moving_beyond_the_monotonic_one(
    wall: timedelta, mono: float, expected: timedelta | None
) -> None:
    start = utc("2026-01-01T00:00")
    jump = plan.clock_jump(
        wall_before=start, wall_now=start + wall, mono_before=5.0, mono_now=5.0 + mono
    )
    assert jump == expected


def test_the_loop_never_sleeps_past_thirty_seconds() -> None:
    now = utc("2026-01-01T00:00")
    assert plan.sleep_target(None, now=now) == now + 30 * S
    assert plan.sleep_target(now + timedelta(hours=1), now=now) == now + 30 * S
    assert plan.sleep_target(now + 5 * S, now=now) == now + 5 * S


def test_an_instant_a_sleep_of_the_whole_cap_could_overshoot_is_slept_to_precisely() -> None:
    now = utc("2026-01-01T00:00")
    # A 30 s sleep may end 30 ms late (150 ms niced): 1 % past the cap is still a target.
    assert plan.sleep_target(now + 30.2 * S, now=now) == now + 30.2 * S
    assert plan.sleep_target(now + 30.4 * S, now=now) == now + 30 * S
    # The same reach under systemd's watchdog, whose interval can make the cap shorter.
    assert plan.sleep_target(now + 10.05 * S, now=now, cap=10) == now + 10.05 * S
    assert plan.sleep_target(now + 10.2 * S, now=now, cap=10) == now + 10 * S


def _job(schedule: str, catchup: Catchup, window: timedelta | None = None) -> tuple[Job, Schedule]:
    job = Job(
        name="j",
        schedule=schedule,
        timezone=ZoneInfo("UTC"),
        command=("true",),
        catchup=catchup,
        catchup_window=window,
    )
    return job, Schedule.parse(schedule, zone=job.timezone, job_name=job.name)


WEEK = timedelta(days=7)


@pytest.mark.parametrize(
    ("catchup", "window", "runs", "missed"),
    [
        (Catchup.SKIP, None, 0, 2016),
        (Catchup.LATEST, None, 1, 2015),
        (Catchup.ALL, None, 100, 2016 - 100),
        (Catchup.ALL, timedelta(minutes=10), 2, 2014),
    ],
    ids=["skip", "latest", "all-capped-at-100", "all-within-window"],
)
def test_a_week_of_missed_slots_follows_catchup(
    catchup: Catchup, window: timedelta | None, runs: int, missed: int
) -> None:
    job, schedule = _job("*/5 * * * *", catchup, window)
    handled = utc("2026-01-01T00:00")
    now = handled + WEEK + 90 * S  # the newest slot is 90 s old: missed, not on time
    decision = plan.pending(job, schedule, handled=handled, now=now)
    assert decision.missed == missed
    assert decision.handled == utc("2026-01-08T00:00")
    assert len(decision.run) == runs
    assert list(decision.run) == sorted(decision.run)
    if runs:
        assert decision.run[-1] == utc("2026-01-08T00:00")
        assert decision.run[0] == utc("2026-01-08T00:00") - (runs - 1) * 5 * M
    if missed:
        assert decision.missed_from == utc("2026-01-01T00:05")


def test_a_slot_found_late_but_within_a_minute_just_runs() -> None:
    job, schedule = _job("*/5 * * * *", Catchup.SKIP)
    decision = plan.pending(
        job, schedule, handled=utc("2026-01-01T00:00"), now=utc("2026-01-01T00:05:20")
    )
    assert decision.run == (utc("2026-01-01T00:05"),)
    assert decision.missed == 0


def test_nothing_is_pending_before_the_next_slot() -> None:
    job, schedule = _job("0 * * * *", Catchup.ALL)
    decision = plan.pending(
        job, schedule, handled=utc("2026-01-01T00:00"), now=utc("2026-01-01T00:59:59")
    )
    assert decision == plan.NOTHING


def test_latest_runs_the_on_time_slot_instead_of_an_older_missed_one() -> None:
    job, schedule = _job("* * * * *", Catchup.LATEST)
    handled = utc("2026-01-01T00:00")
    decision = plan.pending(
        job, schedule, handled=handled, now=handled + timedelta(hours=1, seconds=5)
    )
    assert decision.run == (utc("2026-01-01T01:00"),)
    assert decision.missed == 59
    assert decision.missed_from == utc("2026-01-01T00:01")
    assert decision.missed_until == utc("2026-01-01T00:59")


def test_run_once_takes_the_first_slot_of_the_minute() -> None:
    seconds = Schedule.parse("*/10 * * * * *", zone=ZoneInfo("UTC"), job_name="s")
    assert plan.first_in_minute(seconds, utc("2026-01-01T10:00:45")) == utc("2026-01-01T10:00:00")
    hourly = Schedule.parse("0 * * * *", zone=ZoneInfo("UTC"), job_name="h")
    assert plan.first_in_minute(hourly, utc("2026-01-01T10:01:00")) is None


def test_run_once_on_a_spring_forward_night_runs_the_0230_job_at_0300() -> None:
    ny = ZoneInfo("America/New_York")
    backup = Schedule.parse("30 2 * * *", zone=ny, job_name="backup")
    at = datetime(2026, 3, 8, 3, 0, tzinfo=ny)
    slot = plan.first_in_minute(backup, at)
    assert slot is not None
    assert slot.astimezone(ny).isoformat() == "2026-03-08T03:00:00-04:00"

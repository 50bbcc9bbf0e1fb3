"""The fault scenarios of issue 21, each run on three real nodes and counted from the
record of every start (lab.py, tally.py).

    steady     no fault: the baseline
    pause      SIGSTOP one node for twice its lease, SIGCONT
    kill       kill -9 one node and start it again at once, under the same name
    skew       one node's clock 30 s fast, another's 30 s slow (libfaketime)
    skew-within one node's clock 3 s fast, another's 3 s slow: corrected, both claim
    db-restart the private PostgreSQL restarted (pg_ctl restart -m fast)
    db-kill    its postmaster killed with SIGKILL, then started again
    differ     one node with a different schedule; then both good nodes paused past a lease
    rolling    the schedule changed node by node (reload each), then `cluster deploy`
    stop       SIGTERM to all three at a slot instant, down a while, started again

Every scenario runs the same jobs: ``Timing.jobs`` plain jobs every 2 s and
``Timing.retrying`` jobs whose first attempt fails and whose retry, ``retry_delay`` later,
succeeds; half of each have ``catchup: all``, half ``latest``. The test suite runs
``SHORT``; bench/bench_cluster_faults.py runs ``LONG`` (and a stop longer than the 60 s
on-time window, so ``catchup`` decides).
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from privatepg import PrivateServer

from tests_cluster import tally
from tests_cluster.lab import (
    NAMES,
    JobSpec,
    Lab,
    Missing,
    Proc,
    Start,
    lab,
    now,
    skewed,
    sleep_until,
)
from tests_cluster.tally import Slot, Tally

DRAIN_S = 2.5
"""Seconds the nodes run on after a window, so its last slots are counted too."""
WARM_S = 2.0
"""Seconds from the last node's join to a window's start: every node has beaten."""


@dataclass(frozen=True, kw_only=True)
class Timing:
    """How big and how long: the suite's short windows or the bench's long ones."""

    jobs: int = 20
    retrying: int = 4
    lease: int = 4
    retry_delay: int = 3
    window_s: float = 10.0
    after_s: float = 6.0
    """How long a scenario runs on after its fault has passed."""
    down_s: float = 4.0
    """The whole-cluster stop: from the stop to the restart."""
    skew_s: int = 30
    step_s: float = 2.0
    """The rolling edit: seconds between one node's reload and the next."""

    @property
    def retry_period(self) -> int:
        """Seconds between a retrying job's slots: a pause of two leases from a second past
        a slot ends before the next one, so a paused node wakes with its retry due."""
        return min(p for p in (10, 12, 15, 20, 30) if p >= 2 * self.lease + 2)

    def jobs_list(self, phase: int = 0) -> list[JobSpec]:
        plain = [
            JobSpec(name=f"job-{n:02}", period=2, phase=phase, catchup=_catchup(n))
            for n in range(self.jobs)
        ]
        retrying = [
            JobSpec(
                name=f"retry-{n}",
                period=self.retry_period,
                retrying=True,
                retry_delay=self.retry_delay,
                catchup=_catchup(n),
            )
            for n in range(self.retrying)
        ]
        return plain + retrying


SHORT = Timing()
LONG = Timing(jobs=40, retrying=6, lease=6, window_s=60, after_s=30, down_s=75, step_s=10)


def _catchup(n: int) -> str:
    return "all" if n % 2 == 0 else "latest"


@dataclass(kw_only=True)
class Result:
    """One scenario's counts, its other checks, and what happened, in words."""

    scenario: str
    tally: Tally
    checks: list[str] = field(default_factory=list)
    detail: dict[str, list[Slot]] = field(default_factory=dict)
    note: str = ""
    seconds: float = 0.0

    @property
    def failures(self) -> list[str]:
        return self.tally.failures + self.checks

    def row(self) -> str:
        return tally.row(self.scenario, self.tally, ok=not self.failures, note=self.note)

    def explain(self) -> str:
        shown = {
            k: [f"{job}@{slot:%H:%M:%S}" for job, slot in v[:8]] for k, v in self.detail.items()
        }
        return "\n".join([self.row(), *self.failures, *(f"{k}: {v}" for k, v in shown.items())])


# --- helpers the scenarios share -------------------------------------------------------


Counted = Callable[[str, datetime], bool]
"""Whether a start of (job, slot) is one the scenario counts."""


def window(jobs: list[JobSpec], begin: datetime, end: datetime) -> tuple[set[Slot], Counted]:
    """The slots of ``jobs`` in [begin, end), a retrying job's cut short by its retry's
    delay so its retry falls inside; and the test of whether a start is counted."""
    cut = {j.name: end - timedelta(seconds=j.tail) for j in jobs}
    expected = {(j.name, slot) for j in jobs for slot in j.slots(begin, cut[j.name])}
    return expected, lambda job, slot: job in cut and begin <= slot < cut[job]


def retrying(jobs: list[JobSpec]) -> set[str]:
    return {j.name for j in jobs if j.retrying}


def next_slot(period: int, after: datetime) -> datetime:
    return JobSpec(name="-", period=period).slots(after, after + timedelta(seconds=period))[0]


def pending_retries(starts: list[Start], slot: datetime, jobs: set[str]) -> dict[str, set[str]]:
    """Per node, the retrying jobs whose ``slot`` it started and has not yet retried."""
    mine: dict[str, set[str]] = {name: set() for name in NAMES}
    done = {s.job for s in starts if s.slot == slot and s.attempt > 1}
    for s in starts:
        if s.slot == slot and s.job in jobs and s.attempt == 1 and s.job not in done:
            mine.setdefault(s.node, set()).add(s.job)
    return mine


def fresh(lab: Lab, jobs: list[JobSpec]) -> datetime:
    """Every node on ``jobs``, the schema migrated, all started; when the window may open."""
    lab.write(jobs)
    lab.migrate()
    return lab.start() + timedelta(seconds=WARM_S)


def slots(jobs: list[JobSpec], begin: datetime, end: datetime) -> set[Slot]:
    return {(j.name, slot) for j in jobs for slot in j.slots(begin, end)}


def finish(
    lab: Lab,
    name: str,
    jobs: list[JobSpec],
    begin: datetime,
    end: datetime,
    *,
    expected: set[Slot] | None = None,
    either: set[Slot] | None = None,
    recorded: set[Slot] | None = None,
    allowed: Callable[[list[Start]], bool] | None = None,
) -> Result:
    """Let the window's last slots start, stop the nodes, count [begin, end)."""
    sleep_until(end + timedelta(seconds=DRAIN_S))
    lab.stop()
    in_window, counted = window(jobs, begin, end)
    counts, detail = tally.count(
        lab.starts(),
        expected=in_window if expected is None else expected,
        counted=counted,
        retrying=retrying(jobs),
        either=either or set(),
        recorded=recorded or set(),
        allowed=allowed,
    )
    return Result(scenario=name, tally=counts, detail=detail)


def took_over(lab: Lab) -> int:
    return len(lab.events("taken_over"))


# --- the scenarios ---------------------------------------------------------------------


def steady(lab: Lab, t: Timing) -> Result:
    jobs = t.jobs_list()
    begin = fresh(lab, jobs)
    result = finish(lab, "steady", jobs, begin, begin + timedelta(seconds=t.window_s))
    result.note = (
        f"{t.jobs}+{t.retrying} jobs, lease {t.lease}s; per node {tally.per_node(lab.starts())}"
    )
    return result


def pause(lab: Lab, t: Timing) -> Result:
    jobs = t.jobs_list()
    begin = fresh(lab, jobs)
    slot = next_slot(t.retry_period, begin)
    sleep_until(slot + timedelta(seconds=1.2))  # first attempts failed, retries pending
    held = pending_retries(lab.starts(), slot, retrying(jobs))
    victim = max(held, key=lambda n: len(held[n]))
    lab.pause(victim)
    paused = now()
    time.sleep(2 * t.lease)
    lab.resume(victim)
    resumed = now()
    end = resumed + timedelta(seconds=t.after_s)
    result = finish(lab, "pause", jobs, begin, end)
    starts = lab.starts()
    of_slot = [s for s in starts if s.slot == slot and s.job in held[victim]]
    taken = {s.job for s in of_slot if s.node != victim}
    late = [s for s in of_slot if s.node == victim and s.at >= resumed and s.job in taken]
    if not held[victim]:
        result.checks.append(f"node {victim} held no pending retry when paused: nothing proved")
    if late:
        result.checks.append(
            f"node {victim} ran {len(late)} retries of slots taken over while it was paused"
        )
    result.note = (
        f"{victim} stopped {(resumed - paused).total_seconds():.1f}s holding"
        f" {len(held[victim])} pending retries, {len(taken)} taken over;"
        f" {len(late)} of its retries ran after the takeover; {took_over(lab)} takeovers"
    )
    return result


def kill(lab: Lab, t: Timing) -> Result:
    jobs = t.jobs_list()
    begin = fresh(lab, jobs)
    slot = next_slot(t.retry_period, begin)
    sleep_until(slot + timedelta(seconds=1.2))
    held = pending_retries(lab.starts(), slot, retrying(jobs))
    victim = max(held, key=lambda n: len(held[n]))
    lab.kill(victim)
    killed = now()
    back = lab.start(victim)
    end = killed + timedelta(seconds=t.lease + t.after_s)

    def allowed(rows: list[Start]) -> bool:
        # At-least-once after a kill: a slot the killed node had started may start once
        # more, after the kill, on any node (the restarted one included).
        return len(rows) == 2 and rows[0].node == victim and rows[0].at < killed < rows[1].at

    result = finish(lab, "kill -9 + restart", jobs, begin, end, allowed=allowed)
    back_s = (back - killed).total_seconds()
    if back_s >= t.lease:
        result.checks.append(f"node {victim} took {back_s:.1f}s to rejoin: not within its lease")
    if not held[victim]:
        result.checks.append(f"node {victim} held no pending retry when killed: nothing proved")
    result.note = (
        f"{victim} killed holding {len(held[victim])} pending retries, rejoined after"
        f" {back_s:.1f}s (lease {t.lease}s); {took_over(lab)} takeovers; allowed twice: a slot"
        " the killed node had started, once more after the kill"
    )
    return result


def skew(lab: Lab, t: Timing) -> Result:
    jobs = t.jobs_list()
    lab.clocks = {"b": skewed(t.skew_s), "c": skewed(-t.skew_s)}
    begin = fresh(lab, jobs)
    result = finish(lab, "skewed clocks", jobs, begin, begin + timedelta(seconds=t.window_s))
    if faked := [s for s in lab.starts() if s.inherited]:
        result.checks.append(
            f"{len(faked)} starts inherited their node's fake clock ({faked[0].inherited}):"
            " their recorded times are not the truth"
        )
    said = {}
    for node in ("b", "c"):
        events = [e for e in lab.logs(node) if "clock" in str(e.get("event", ""))]
        said[node] = str(events[0]["event"]) if events else None
        if not events:
            result.checks.append(
                f"node {node} (clock {lab.clocks[node]['FAKETIME']}) logged no clock event"
            )
    result.note = (
        f"b {t.skew_s:+d}s, c {-t.skew_s:+d}s; per node {tally.per_node(lab.starts())};"
        f" b said {said['b']}, c said {said['c']}"
    )
    return result


def skew_within(lab: Lab, t: Timing) -> Result:
    """b 3 s fast, c 3 s slow: within the bound, both claim, and their corrected clocks
    start nothing early (uncorrected, b would start each slot it wins 3 s early)."""
    jobs = t.jobs_list()
    lab.clocks = {"b": skewed(3), "c": skewed(-3)}
    begin = fresh(lab, jobs)
    result = finish(lab, "clocks 3 s off", jobs, begin, begin + timedelta(seconds=t.window_s))
    shares = {node: sum(1 for s in lab.starts() if s.node == node) for node in NAMES}
    for node in ("b", "c"):
        if any(e.get("event") == "clock_skewed" for e in lab.logs(node)):
            result.checks.append(f"node {node}, 3 s off, refused to claim")
        if not shares[node]:
            result.checks.append(f"node {node}, 3 s off, started nothing")
    offsets = _offsets(lab)
    result.note = (
        f"b +3s, c -3s; per node {tally.per_node(lab.starts())}; measured offsets {offsets}"
    )
    return result


def _offsets(lab: Lab) -> str:
    rows = lab.query("SELECT name, clock_offset FROM nodes ORDER BY name")
    return ", ".join(f"{name} {offset:+.2f}s" for name, offset in rows if isinstance(offset, float))


def _database(fault: str) -> Callable[[Lab, Timing], Result]:
    def scenario(lab: Lab, t: Timing) -> Result:
        jobs = t.jobs_list()
        begin = fresh(lab, jobs)
        sleep_until(begin + timedelta(seconds=3))
        before = {name: proc.count("db_reconnected") for name, proc in lab.procs.items()}
        began = now()
        if fault == "restart":
            lab.server.restart()
        else:
            lab.server.kill()
            lab.server.start()
        up = now()
        silent = [name for name, n in before.items() if not _reconnects(lab.procs[name], n)]
        result = finish(lab, f"db {fault}", jobs, begin, up + timedelta(seconds=t.after_s))
        if silent:
            result.checks.append(f"nodes {silent} never logged db_reconnected")
        result.note = (
            f"server away {(up - began).total_seconds():.1f}s; {took_over(lab)} takeovers;"
            f" per node {tally.per_node(lab.starts())}"
        )
        return result

    return scenario


def _reconnects(proc: Proc, before: int) -> bool:
    try:
        proc.wait_event("db_reconnected", 30, more_than=before)
    except AssertionError:
        return False
    return True


def differ(lab: Lab, t: Timing) -> Result:
    jobs = t.jobs_list()
    lab.write(jobs, ("a", "b"))
    # Odd seconds: any start of them is off-schedule. The file is stale, an hour older than
    # the good nodes': the newest file's definitions are the cluster's, so c's never are.
    lab.write(t.jobs_list(phase=1), ("c",), age_s=3600)
    lab.migrate()
    lab.start("a", "b")
    lab.start("c")
    c = lab.procs["c"]
    c.wait_event("definitions_differ", 15)
    begin = now() + timedelta(seconds=1)
    sleep_until(begin + timedelta(seconds=4))
    lab.pause("a", "b")
    away = t.lease + 1.5
    time.sleep(away)  # the good nodes miss a lease together
    lab.resume("a", "b")
    time.sleep(max(t.after_s - DRAIN_S, 1.0))
    status = lab.cli("a", "cluster", "status", "--json")
    result = finish(lab, "differing file", jobs, begin, now())
    by_c = [s for s in lab.starts() if s.node == "c"]
    if by_c:
        result.checks.append(f"node c, whose file differs, started {len(by_c)} attempts")
    if status.returncode != 0:
        result.checks.append(f"cluster status exited {status.returncode}: {status.stderr}")
    elif (body := json.loads(status.stdout))["definitions"] != body["this_file"]:
        result.checks.append(
            f"after the pause the cluster's definitions are {body['definitions']} (set by"
            f" {body.get('set_by')}), not the good nodes' {body['this_file']}"
        )
    result.note = (
        f"a and b stopped {away:.1f}s together (lease {t.lease}s); c started {len(by_c)};"
        f" per node {tally.per_node(lab.starts())}"
    )
    return result


class Poller:
    """``cluster status --json`` asked over and over in a thread: the cluster's definitions
    changed between the last answer with the old hash and the first with another."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.answers: list[tuple[datetime, datetime, str]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(60)

    def _run(self) -> None:
        while not self._done.is_set():
            asked = now()
            done = self.lab.cli("a", "cluster", "status", "--json")
            if done.returncode == 0:
                hashed = str(json.loads(done.stdout)["definitions"])
                self.answers.append((asked, now(), hashed))
            self._done.wait(0.2)

    def switch(self, old: str) -> tuple[datetime, datetime] | None:
        """(asked last while old, answered first with another hash), or None."""
        last_old = None
        for asked, answered, hashed in list(self.answers):
            if hashed == old:
                last_old = asked
            elif last_old is not None:
                return last_old, answered
        return None

    def wait_switch(self, old: str, timeout: float) -> tuple[datetime, datetime] | None:
        deadline = time.monotonic() + timeout
        while (found := self.switch(old)) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        return found


def rolling(lab: Lab, t: Timing) -> Result:
    old, new = t.jobs_list(), t.jobs_list(phase=1)  # plain jobs: even seconds, then odd
    begin = fresh(lab, old)
    old_hash = str(json.loads(lab.cli("a", "cluster", "status", "--json").stdout)["definitions"])
    deploy = "deploy" in lab.cli("a", "cluster", "--help").stdout
    checks = []
    sleep_until(begin + timedelta(seconds=2))
    with Poller(lab) as poller:
        edited = now()
        reloads = []
        for name in NAMES:
            lab.write(new, (name,))  # newer than the cluster's: its reload publishes it
            reloads.append(now())
            done = lab.cli(name, "reload")
            if done.returncode != 0:
                checks.append(f"reload of {name} exited {done.returncode}: {done.stderr}")
            time.sleep(t.step_s)
        switched = poller.wait_switch(old_hash, timeout=15)
        if deploy:  # a no-op by now: the reloads published the newest file
            if switched is None:
                checks.append("the reloads did not make the newer file the cluster's")
            done = lab.cli("c", "cluster", "deploy")
            if done.returncode != 0:
                checks.append(f"cluster deploy exited {done.returncode}: {done.stderr}")
            switched = switched or poller.wait_switch(old_hash, timeout=15)
    if switched is None:
        checks.append("the cluster's definitions never became the new file's")
        switched = (now(), now())
    # The newest file wins: the switch is the first node's reload, which runs its file at
    # once and publishes it at its next heartbeat; the others learn of it at theirs (a third
    # of a lease on), then wait their place in the claim order. A slot from the first edit
    # to then may run on either schedule, or not, never twice.
    low, high = min(edited, switched[0]), switched[1] + timedelta(seconds=t.lease / 3 + 1)
    end = max(high, now()) + timedelta(seconds=t.after_s)
    plain_old, plain_new = ([j for j in jobs if not j.retrying] for jobs in (old, new))
    again = [j for j in old if j.retrying]  # the same in both files
    expected = slots(plain_old + again, begin, low) | slots(plain_new, high, end)
    expected |= window(again, high, end)[0]
    either = slots(plain_old + plain_new + again, low, high)
    result = finish(
        lab, "rolling edit", old + plain_new, begin, end, expected=expected, either=either
    )
    ran = {(s.job, s.slot) for s in lab.starts()} & either
    result.checks += checks
    since = [(x - edited).total_seconds() for x in switched]
    how = "reload x3 + cluster deploy" if deploy else "reload x3 (no cluster deploy)"
    after = sum(1 for r in reloads if r < switched[1])
    result.note = (
        f"{how}; the switch {since[0]:.1f}-{since[1]:.1f}s after the first edit (after"
        f" {after} of {len(reloads)} reloads); transition"
        f" {(high - low).total_seconds():.1f}s: {len(ran)} of its {len(either)} slots ran"
        " (either schedule)"
    )
    return result


def stop(lab: Lab, t: Timing) -> Result:
    jobs = t.jobs_list()
    begin = fresh(lab, jobs)
    instant = next_slot(2, begin + timedelta(seconds=4))
    period = t.retry_period
    while not t.retry_delay + 2 <= instant.timestamp() % period <= period - 1:
        instant += timedelta(seconds=2)  # no retry pending at the stop (it would be dropped)
    sleep_until(instant)
    lab.stop()
    stopped = now()
    sleep_until(instant + timedelta(seconds=t.down_s))
    restarted = now()
    back = lab.start()
    end = back + timedelta(seconds=t.after_s)
    sleep_until(end + timedelta(seconds=DRAIN_S))
    lab.stop()
    recorded, kinds = _recorded(lab, jobs)
    yielded = _yielded(lab, jobs, restarted)
    recorded |= yielded
    result = finish(lab, "whole-cluster stop", jobs, begin, end, recorded=recorded)
    starts = lab.starts()
    at_stop = [s for s in starts if s.slot == instant and s.attempt == 1]
    before = sum(1 for s in at_stop if s.at < stopped)
    old = restarted - timedelta(seconds=60)  # older than the on-time window at the restart
    for job in (j.name for j in jobs if j.catchup == "latest"):
        caught = {s.slot for s in starts if s.job == job and instant <= s.slot < old}
        if len(caught) > 1:
            result.checks.append(f"{job} (catchup: latest) caught up {len(caught)} slots")
    result.note = (
        f"SIGTERM at the slot {instant:%H:%M:%S}: {before} of its {len(at_stop)} first"
        f" attempts began before the stop; down {(back - stopped).total_seconds():.1f}s;"
        f" history: {kinds}; {took_over(lab)} takeovers; {len(yielded)} caught-up slots"
        " whose retry yielded to their next slot"
    )
    return result


def _yielded(lab: Lab, jobs: list[JobSpec], restarted: datetime) -> set[Slot]:
    """Slots of a retrying job caught up after the stop whose retry never came: their next
    slot had come already, and a retry yields to it (the retry rule, as on one host). The
    first attempt ran and is in the history as failed: caught up, not lost."""
    spec = {j.name: j for j in jobs if j.retrying}
    failed = {
        (str(job), slot)
        for job, slot in lab.query("SELECT job, scheduled_at FROM history WHERE outcome = 'failed'")
        if isinstance(slot, datetime)
    }
    return {
        (s.job, s.slot)
        for s in lab.starts()
        if s.job in spec
        and s.attempt == 1
        and s.at >= restarted
        and s.slot + timedelta(seconds=spec[s.job].period) < restarted
        and (s.job, s.slot) in failed
    }


def _recorded(lab: Lab, jobs: list[JobSpec]) -> tuple[set[Slot], str]:
    """Slots the history records as missed (by catch-up) or interrupted (by the stop)."""
    rows = lab.query(
        "SELECT job, scheduled_at, outcome, reason FROM history"
        " WHERE outcome IN ('missed', 'interrupted')"
    )
    spec = {j.name: j for j in jobs}
    out: set[Slot] = set()
    kinds = {"missed": 0, "interrupted": 0}
    for job, slot, outcome, reason in rows:
        assert isinstance(job, str) and isinstance(slot, datetime)
        kinds[str(outcome)] += 1
        span = re.search(r"missed from (\S+) to (\S+)", str(reason))
        if outcome == "missed" and span and job in spec:
            first, last = (datetime.fromisoformat(x.replace("Z", "+00:00")) for x in span.groups())
            out |= {(job, s) for s in spec[job].slots(first, last + timedelta(seconds=1))}
        else:
            out.add((job, slot))
    return out, ", ".join(f"{n} {k}" for k, n in kinds.items())


SCENARIOS: dict[str, Callable[[Lab, Timing], Result]] = {
    "steady": steady,
    "pause": pause,
    "kill": kill,
    "skew": skew,
    "skew-within": skew_within,
    "db-restart": _database("restart"),
    "db-kill": _database("kill -9"),
    "differ": differ,
    "rolling": rolling,
    "stop": stop,
}


def run(name: str, *, folder: Path, server: PrivateServer, script: Path, timing: Timing) -> Result:
    """Scenario ``name`` on a fresh database and folder; its result, timed."""
    began = time.monotonic()
    server.ensure_running()  # an earlier scenario that failed may have left it down
    database = "faults_" + re.sub(r"\W", "_", name)
    with lab(folder, server, script, name=database, lease=timing.lease) as made:
        result = SCENARIOS[name](made, timing)
    result.seconds = time.monotonic() - began
    return result


def faketime_missing() -> str | None:
    """Why the skew scenario cannot run here, or None."""
    try:
        skewed(1)
    except Missing as error:
        return str(error)
    return None if shutil.which("bash") else "no bash (the jobs' shell)"

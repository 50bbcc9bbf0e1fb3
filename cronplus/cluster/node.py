"""A cluster node: claims slots for the engine, heartbeats, renews and takes over leases.

``Node`` is the engine's ``SlotGate`` in cluster mode. Before a slot starts it waits its
place in the rendezvous order (``cluster.claim_delay``), then claims the slot in one
transaction; only the node whose claim went in runs it. While the slot runs (retries
included) its lease is renewed every third of a lease; a claim whose node stopped
heartbeating is taken over when its lease has run out. A ``@reboot`` slot is the node's
own start and runs on it without a claim. The engine writes to the node's
``NodeStore`` (nodestore.py), whose writes this node queues and applies in a background
task, so the loop never waits on the database, and a database restart only delays them.
docs/cluster.md has the whole protocol and its guarantees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from cronplus.clock import Clock, CorrectedClock
from cronplus.cluster.decisions import (
    ClaimStatus,
    ClusterDatabase,
    Expired,
    NodeView,
    Superseded,
    Write,
    claim_delay,
    heartbeat_interval,
    interrupted_by_node_death,
    record_of_slot,
    runs_here,
)
from cronplus.cluster.nodestore import NodeStore
from cronplus.cluster.standing import Standing
from cronplus.core import plan
from cronplus.core.model import (
    Catchup,
    ClusterSettings,
    Crontab,
    Job,
    Outcome,
    Overlap,
    RunResult,
    StateError,
    Trigger,
    iso_utc,
)
from cronplus.core.schedule import Schedule
from cronplus.engine.engine import Engine
from cronplus.observe.logs import EventLog

FRESH = 1 / 3
"""The share of a lease after a claim went in within which its first attempt starts on the
claim's word; later (jitter, a queue, a retry, a catch-up) the start asks the database."""

CLAIMS_KEEP = timedelta(days=1)
"""Finished claims are kept this long (for ``cluster status`` and late duplicates), then pruned."""


@dataclass(eq=False, kw_only=True)
class Held:
    """A claim this node holds: the engine runs its slot and releases it when done."""

    node: Node
    job: str
    slot: datetime
    token: UUID
    taken_from: str | None = None
    """The node whose expired claim this one took over."""
    fresh: tuple[float, datetime] | None = None
    """When the database last said the claim is this node's (monotonic, wall), while a
    first attempt may start on that word alone (``FRESH``); None once it must ask again."""
    own_start: bool = False
    """A ``@reboot`` slot: this node's own start, run here with no claim in the database,
    so nothing to confirm, renew, take over or release (docs/cluster.md, "@reboot")."""

    async def confirm(self, attempt: int, *, waited: bool) -> str | None:
        """None when the attempt may start: the claim is still this node's (the fence)."""
        if self.own_start:
            return None
        return await self.node.confirm(self, attempt, waited=waited)

    def release(self, *, started: bool) -> None:
        if self.own_start:
            return
        if started:
            self.node.release(self, ClaimStatus.DONE)
        else:  # given up unstarted (a shutdown): its lease lapses, another node takes it over
            self.node.abandon(self)


def _at_start(job: Job) -> bool:
    """A ``@reboot`` job: it runs at each start of a node, on that node."""
    return Schedule.for_job(job.schedule, zone=job.timezone, job_name=job.name).reboot


class Node:
    """One daemon's part in the cluster; ``store`` is what its engine writes to."""

    def __init__(
        self,
        db: ClusterDatabase,
        crontab: Crontab,
        *,
        clock: Clock,
        log: EventLog,
        ledger: Mapping[str, datetime],
        outcomes: Mapping[str, tuple[Outcome, datetime]],
        interrupted: Sequence[RunResult] = (),
        corrected: CorrectedClock | None = None,
    ) -> None:
        """``corrected``: the daemon's clock, which this node keeps corrected by its
        measured offset to the database's clock (docs/cluster.md, "Clocks")."""
        assert crontab.settings.cluster is not None  # only cluster mode builds a Node
        self._first = crontab.settings.cluster
        self._warned: Crontab | None = None
        self._db = db
        self._crontab = crontab
        self._clock = clock
        self._log = log
        self._engine: Engine | None = None
        self._live: tuple[NodeView, ...] = ()
        self._held: dict[tuple[str, datetime], Held] = {}
        self._standing = Standing(db.node, log, corrected)
        self._outbox: list[Write] = []
        self._pending = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._given_up: list[tuple[str, datetime]] = []
        """Slots whose claim had not gone in when a shutdown cut the wait short."""
        self.store = NodeStore(self, ledger, outcomes, interrupted)
        self.on_beat: Callable[[float, str | None], None] | None = None
        """Told each heartbeat's clock offset and refusal (the daemon's metrics)."""
        self.on_superseded: Callable[[], None] | None = None
        """Called once another daemon has started as this node: the daemon stops."""
        self.superseded = False

    @property
    def crontab(self) -> Crontab:
        """The crontab as it is now: the engine's, which a reload replaces."""
        return self._engine.crontab if self._engine else self._crontab

    @property
    def settings(self) -> ClusterSettings:
        """The reloaded tags and lease; the database and the name stay the started ones."""
        cluster = self.crontab.settings.cluster
        if cluster is not None and (cluster.dsn, cluster.node) == (self._first.dsn, self.name):
            return cluster
        if self._warned is not self.crontab:
            self._warned = self.crontab
            self._log.warning(
                "restart_needed",
                f"node {self.name}: a reload changed settings.cluster's dsn or node, or removed"
                " it; the node keeps its database and name until a restart",
            )
        return self._first

    @property
    def name(self) -> str:
        return self._db.node

    @property
    def refused(self) -> bool:
        return self.refusal is not None

    @property
    def refusal(self) -> str | None:
        """Why this node does not claim now (its definitions, its clock), or None."""
        return self._standing.refusal

    @property
    def clock_offset(self) -> float:
        """Seconds this node's clock was ahead of the database's at its last heartbeat."""
        return self._standing.measured or 0.0

    @property
    def queued(self) -> tuple[Write, ...]:
        """The writes waiting for the database, oldest first."""
        return tuple(self._outbox)

    # --- lifecycle ---

    async def join(self) -> None:
        """The first heartbeat, before the engine ticks, so the hashing sees this node."""
        # The first beat measures the clock; only then may the node publish its file.
        await self._beat(joining=True, publish=False)
        await self._beat()
        self._log.info(
            "cluster_joined",
            f"node {self.name} joined the cluster at {self._db.where} with"
            f" {len(self._live)} live node(s)",
            node=self.name,
            live=",".join(sorted(view.name for view in self._live)),
        )

    def start(self, engine: Engine) -> None:
        self._engine = engine
        self._tasks = [
            asyncio.create_task(self._beat_forever()),
            asyncio.create_task(self._flush_forever()),
        ]

    async def stop(self, grace: timedelta) -> None:
        """Stop heartbeating, write what is queued (within ``grace``), leave the cluster."""
        beating, flushing = self._tasks
        beating.cancel()
        if self._given_up:  # no node claimed them: the next start catches them up
            self.queue(Write(rewind=tuple(self._given_up)))
            self._given_up = []
        self._closing = True
        self._pending.set()  # the writer drains the queue and returns: never cut off mid-batch
        try:
            async with asyncio.timeout(max(grace.total_seconds(), 1.0)):
                await asyncio.gather(beating, flushing, return_exceptions=True)
                await self._db.leave()
        except TimeoutError:
            self._log.error(
                "db_writes_lost",
                f"the cluster database did not take {len(self._outbox)} queued write(s)"
                " before the shutdown grace ended",
                lost=len(self._outbox),
            )

    # --- the gate ---

    async def claim(self, job: Job, slot: datetime) -> Held | None:
        """Claim (job, slot) for this node; None when another node has it or may not run."""
        key = (job.name, slot)
        if (held := self._held.get(key)) is not None:
            return held  # taken over from a dead node: already ours
        if self.refused or not runs_here(job, self.settings.tags):
            return None
        if _at_start(job):
            # Each node's own start: a claim's key would let one of several nodes started
            # in one second run it, forbid would skip it beside another node's run, and a
            # takeover would run it on another host.
            return Held(node=self, job=job.name, slot=slot, token=uuid4(), own_start=True)
        try:
            return await self._claim(job, slot)
        except asyncio.CancelledError:
            if self._engine is not None and self._engine.stopping:
                self._given_up.append(key)
            raise

    async def _claim(self, job: Job, slot: datetime) -> Held | None:
        key = (job.name, slot)
        # A catch-up slot (decided more than the on-time window late) gets its minute of
        # grace from now; an on-time slot keeps its own.
        now = self._clock.now()
        due = now if now - slot > plan.ON_TIME else slot
        delay = claim_delay(job, slot, me=self.name, live=self._view())
        if delay:
            await self._clock.sleep_until(slot + delay, max_seconds=delay.total_seconds())
        token = uuid4()
        # A slot whose claim cannot go in while it is on time (the database is away) is
        # missed, as if the node had been down: it must not start minutes late in a burst.
        on_time = (due + plan.ON_TIME - self._clock.now()).total_seconds()
        asked = self._clock.monotonic(), self._clock.now()
        try:
            async with asyncio.timeout(max(on_time, 0.0)):
                answer = await self._db.claim(
                    job=job.name,
                    slot=slot,
                    token=token,
                    lease=self.settings.lease,
                    forbid=job.overlap is Overlap.FORBID,
                    replace=job.overlap is Overlap.REPLACE,
                )
        except TimeoutError:
            self._unclaimed(job, slot, token)
            return None
        except StateError as error:  # not an outage (those are waited out): a bug or bad data
            self._log.error("claim_failed", f"job {job.name}: claiming {iso_utc(slot)}: {error}")
            return None
        if answer is None:
            return None
        if answer.status is ClaimStatus.SKIPPED:
            self._skipped(job, slot, busy_slot=answer.busy_slot, busy_node=answer.busy_node)
            return None
        held = Held(node=self, job=job.name, slot=slot, token=token, fresh=asked)
        self._held[key] = held
        return held

    async def confirm(self, held: Held, attempt: int, *, waited: bool) -> str | None:
        """The fence before an attempt of ``held`` starts: None when the claim is still
        this node's; else why not (the node lost it, and gave the slot up). Only a first
        attempt that starts at once, a moment after its claim went in, is not asked."""
        fresh, held.fresh = held.fresh, None
        if attempt == 1 and not waited and fresh is not None and self._within(fresh, FRESH):
            return None  # the claim's own answer is the database's word, a moment ago
        lease = self.settings.lease
        why = (
            f"node {self.name} no longer holds slot {iso_utc(held.slot)}: its lease ran out"
            " and another node took the slot over"
        )
        while self._holds(held):
            asked = self._clock.monotonic(), self._clock.now()
            try:  # an outage is waited out only while the lease could still be ours
                async with asyncio.timeout(lease.total_seconds()):
                    mine = await self._db.confirm(
                        job=held.job, slot=held.slot, token=held.token, attempt=attempt,
                        lease=lease,
                    )  # fmt: skip
            except TimeoutError:  # the claim may be ours still: give it to whoever can act
                why = (
                    f"node {self.name} could not confirm its claim on slot"
                    f" {iso_utc(held.slot)} within a lease (the database did not answer);"
                    " it gives the slot up to the other nodes"
                )
                self._fence(held, why, attempt=attempt, give_up=True)
                return why
            if not mine:
                break
            if self._within(asked, 0.5):  # not paused between the answer and now
                return None
        self._fence(held, why, attempt=attempt)
        return why

    def _within(self, since: tuple[float, datetime], share: float) -> bool:
        """Whether less than ``share`` of a lease has passed since ``since`` (monotonic,
        wall): the wall clock tells a host's suspend, which monotonic time does not count."""
        limit = self.settings.lease.total_seconds() * share
        monotonic = self._clock.monotonic() - since[0]
        wall = (self._clock.now() - since[1]).total_seconds()
        return max(monotonic, wall) < limit and wall > -limit

    def _fence(
        self, held: Held, why: str, *, attempt: int | None = None, give_up: bool = False
    ) -> None:
        """This node lost ``held`` (or gives it up, ``give_up``): forget it, say so, and
        stop what of its slot runs or waits here. Nothing when it is forgotten already
        (renewing or confirming found it first)."""
        if not (self.abandon(held) if give_up else self._drop(held)):
            return
        what = f"attempt {attempt} not started" if attempt else "its run here is fenced off"
        self._log.warning(
            "lease_lost",
            f"job {held.job}: {why}; {what}",
            job=held.job,
            scheduled_at=iso_utc(held.slot),
        )
        if self._engine is not None and attempt is None:
            self._engine.fence_slot(held.job, held.slot, reason=why)

    def release(self, held: Held, status: ClaimStatus) -> None:
        if self._drop(held):
            self.queue(Write(job=held.job, slot=held.slot, token=held.token, claim_status=status))

    def abandon(self, held: Held) -> bool:
        """Give ``held`` up unstarted (a shutdown, a start not confirmed, a crash): its
        claim is dead at once, and a live node takes it over at its next heartbeat.
        False when this node no longer held it."""
        if not self._drop(held):
            return False
        self.queue(Write(job=held.job, slot=held.slot, token=held.token, give_up=True))
        return True

    def _holds(self, held: Held) -> bool:
        return self._held.get((held.job, held.slot)) is held

    def _drop(self, held: Held) -> bool:
        """Forget ``held``; False when it was forgotten (or replaced) already."""
        if not self._holds(held):
            return False
        del self._held[(held.job, held.slot)]
        return True

    def held(self, job: str, slot: datetime) -> Held | None:
        return self._held.get((job, slot))

    def _view(self) -> list[NodeView]:
        """The live nodes, with this node's own fullness as it is now, not as it beat."""
        me = NodeView(name=self.name, tags=self.settings.tags, full=self._full())
        return [view for view in self._live if view.name != self.name] + [me]

    def _full(self) -> bool:
        engine = self._engine
        if engine is None:
            return False
        return engine.queued > 0 or len(self._held) >= engine.crontab.settings.max_concurrent

    def _unclaimed(self, job: Job, slot: datetime, token: UUID) -> None:
        result = record_of_slot(
            job.name,
            slot,
            Outcome.MISSED,
            now=self._clock.now(),
            why=(
                f"the cluster database was unreachable until the slot was {plan.ON_TIME} late;"
                " no node could claim it"
            ),
        )
        status = ClaimStatus.MISSED  # recorded once, by whichever node notices first
        write = Write(job=job.name, slot=slot, claim_status=status, tried=token)
        self.queue(replace(write, history=result, keep=self._keep()))
        self._log.warning(
            "missed",
            f"job {job.name}: slot {iso_utc(slot)} missed: {result.reason}",
            job=job.name,
            scheduled_at=iso_utc(slot),
            missed=1,
        )

    def _skipped(
        self, job: Job, slot: datetime, *, busy_slot: datetime | None, busy_node: str | None
    ) -> None:
        where = f"on node {busy_node}" if busy_node else "on another node"
        busy = iso_utc(busy_slot) if busy_slot else "an earlier slot"
        why = f"the run of {busy} is still alive {where} (overlap: forbid)"
        result = record_of_slot(
            job.name, slot, Outcome.SKIPPED_OVERLAP, now=self._clock.now(), why=why
        )
        self.queue(Write(history=result, keep=self._keep()))
        self._log.warning(
            "skipped_overlap",
            f"job {job.name}: slot skipped, the previous run is still alive {where}",
            job=job.name,
            run_id=result.run_id,
            scheduled_at=iso_utc(slot),
            reason=why,
        )

    # --- heartbeats, leases, takeovers ---

    def _superseded(self, why: str) -> None:
        """Another start of this node joined: claim nothing more, stop what runs, exit."""
        self.superseded = True
        self._standing.definitions_refusal = why
        self._log.error("node_superseded", why, node=self.name)
        for held in list(self._held.values()):
            del self._held[(held.job, held.slot)]
            if self._engine is not None:
                self._engine.fence_slot(held.job, held.slot, reason=why)
        if self.on_superseded is not None:
            self.on_superseded()

    async def _beat_forever(self) -> None:
        beats = 0
        while True:
            interval = heartbeat_interval(self.settings.lease)
            wake = self._clock.now() + interval
            await self._clock.sleep_until(wake, max_seconds=interval.total_seconds())
            try:
                await self._beat_once(prune=beats % 10 == 9)
            except Superseded as error:
                self._superseded(str(error))
                return
            except StateError as error:  # not an outage (those are waited out): say, go on
                self._log.error("heartbeat_failed", f"node {self.name}: heartbeat failed: {error}")
            beats += 1

    async def _beat_once(self, *, prune: bool) -> None:
        await self._beat()
        await self._renew()
        if not self.refused and self._settled():
            await self._take_over()
        if prune:
            await self._db.prune(keep=CLAIMS_KEEP)

    async def _beat(self, *, joining: bool = False, publish: bool = True) -> None:
        mine = self._standing.hashed(self.crontab)
        beat = await self._db.heartbeat(
            tags=self.settings.tags,
            lease=self.settings.lease,
            definitions=mine,
            running=len(self._held),
            capacity=self.crontab.settings.max_concurrent,
            joining=joining,
            # A node whose clock is off publishes nothing: its file's time is suspect too.
            stamp=self._standing.stamp(self.crontab) if publish else None,
            clock_offset=self._standing.measured,
            refusing=self.refusal,
        )
        # A node that refuses (its definitions, its clock) leaves the claim order: the
        # others need not wait its turn for each slot.
        self._live = tuple(
            NodeView(name=row.name, tags=row.tags, full=row.running >= row.capacity)
            for row in beat.live
            if row.definitions == beat.definitions and row.refusing is None
        )
        self._standing.judge_clock(beat)
        if publish:  # a beat that published nothing cannot tell who is newest
            self._standing.judge_definitions(beat, mine)
        if self.on_beat is not None:
            self.on_beat(beat.clock_offset, self.refusal)

    async def _renew(self) -> None:
        held = list(self._held.values())
        answers = await self._db.renew(tokens=[h.token for h in held], lease=self.settings.lease)
        for claim in held:
            if claim.token not in answers:
                why = (
                    f"the lease of node {self.name} on slot {iso_utc(claim.slot)} ran out and"
                    " another node took the slot over"
                )
                self._fence(claim, why)
            elif (asked := answers[claim.token]) and self._engine is not None:
                self._engine.stop_slot(claim.job, claim.slot, reason=asked)

    def _settled(self) -> bool:
        """Connected for a whole lease: after a database outage every live node has had
        time to renew its leases, so none is taken over from a node that is only late."""
        lease = self.settings.lease.total_seconds()
        return self._clock.monotonic() - self._db.connected_at >= lease

    async def _take_over(self) -> None:
        engine = self._engine
        if engine is None or engine.stopping:  # nothing new starts in the shutdown grace
            return
        for item in await self._db.expired():
            job = next((j for j in engine.crontab.jobs if j.name == item.job), None)
            if job is None or not job.enabled or not runs_here(job, self.settings.tags):
                continue
            token = uuid4()
            asked = self._clock.monotonic(), self._clock.now()
            if not await self._db.take_over(item, token=token, lease=self.settings.lease):
                continue
            self._took_over(item, token, job, engine, asked=asked)

    def _took_over(
        self, item: Expired, token: UUID, job: Job, engine: Engine, *, asked: tuple[float, datetime]
    ) -> None:
        now = self._clock.now()
        lost = interrupted_by_node_death(item, taker=self.name, now=now)
        self.queue(Write(history=lost, keep=self._keep()))
        held = Held(
            node=self,
            job=item.job,
            slot=item.scheduled_at,
            token=token,
            taken_from=item.node,
            fresh=asked,
        )
        if self._left_by_a_stop(item, job, now):
            # Left from a stop of the whole cluster, longer ago than the job catches up:
            # closed, not run (docs/cluster.md, "A whole-cluster stop").
            self.queue(Write(job=item.job, slot=item.scheduled_at, token=token,
                             claim_status=ClaimStatus.DONE))  # fmt: skip
            self._log.warning(
                "taken_over",
                f"job {item.job}: node {item.node} held slot {iso_utc(item.scheduled_at)}"
                f" when it stopped; node {self.name} closed the claim without running it,"
                f" the slot being older than its catchup_window ({job.catchup_window})",
                job=item.job,
                scheduled_at=iso_utc(item.scheduled_at),
                run_id=lost.run_id,
                from_node=item.node,
            )
            return
        self._held[(item.job, item.scheduled_at)] = held
        self._log.warning(
            "taken_over",
            f"job {item.job}: node {item.node} stopped heartbeating while it held slot"
            f" {iso_utc(item.scheduled_at)}; node {self.name} took it over and runs it again",
            job=item.job,
            scheduled_at=iso_utc(item.scheduled_at),
            run_id=lost.run_id,
            from_node=item.node,
        )
        if not engine.start_slots([(job, item.scheduled_at)], now=now, trigger=Trigger.TAKEOVER):
            self.release(held, ClaimStatus.SKIPPED)  # overlap: forbid, and it was recorded

    def _left_by_a_stop(self, item: Expired, job: Job, now: datetime) -> bool:
        """A claim that lay dead past the time live nodes take one over (a lease and a
        heartbeat: nobody was there), for a slot the job's catch-up would not run now."""
        lease = self.settings.lease
        if now - item.lease_until <= lease + heartbeat_interval(lease):
            return False  # a node died while others lived: at-least-once, run it again
        if job.catchup is Catchup.SKIP:
            return True
        return job.catchup_window is not None and now - item.scheduled_at > job.catchup_window

    # --- writes ---

    def queue(self, write: Write) -> None:
        self._outbox.append(write)
        self._pending.set()

    def _keep(self) -> int:
        return self.crontab.settings.history_keep

    async def _flush_forever(self) -> None:
        while not self._closing:
            await self._pending.wait()
            self._pending.clear()
            await self._flush()

    async def _flush(self) -> None:
        while self._outbox:
            batch, self._outbox = self._outbox, []
            try:
                await self._db.write(batch)
            except StateError as error:
                self._log.error(
                    "db_write_failed", f"{len(batch)} record(s) were not written: {error}"
                )

"""A session after its delivery: its jobs followed until the outcome is final.

`OutcomeTracker` is the `following.Recorder` of every session this process follows: each
snapshot, loss, reconciliation or correction is written into the session's record in
memory (the live session proto), the changed computer is marked for the next batch to
storage, the jobs_* statistics and the outcome are recomputed, and watchers are woken.

Where an outcome becomes final is one place, `OutcomeTracker._settle`: it sets `outcome`
and `outcome_time` and calls every `on_outcome` hook with the session and whether this
is a correction of an outcome already final (an agent that answered late). Metrics,
notifications and retries hook there. A session other replicas follow part of is
corrected there only until its final outcome goes to the storage (`storage_corrects`);
from then on every correction is the storage's recount of its rows
(`shared_records.run_correction`, on the replica whose write changed the stored
header), so none counts twice.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from backup.v1 import resources_pb2 as pb

from .following import AGENT_LOST_AFTER, AgentStreams, Follower, JobKey
from .outcomes import (
    JOB_STATISTICS,
    awaits_reconciliation,
    count_jobs,
    ended_job,
    follows,
    note_reconciled,
    outcome_of,
)
from .sessions import JobEnd, ResultChange, state_of
from .shared_records import OutcomeHook, apply_row

log = logging.getLogger("backup_server.tracking")

SETTLE_DELAY = 0.05
# Streams open a moment after tracking begins and spread out (this many per second), so
# 5,000 of them do not stall the loop at once.
FOLLOW_AFTER = 0.1
STREAMS_PER_SECOND = 2000.0


class LiveRecord(Protocol):
    """What tracking needs of a live session (sessions.LiveSession)."""

    session: pb.PolicySession
    dirty: list[int]
    job_ends: list[JobEnd]
    header_changed: bool

    def publish(self) -> None: ...


@dataclass
class _Tracked:
    live: LiveRecord
    awaiting: set[int] = field(default_factory=set)
    # Positions another replica follows (its share); their rows are merged, not followed.
    elsewhere: set[int] = field(default_factory=set)
    # Other shares' positions lost (done) but still followed there: their rows are read on.
    late: set[int] = field(default_factory=set)
    # Its final outcome went to the storage: corrections are the storage's (see above).
    storage_corrects: bool = False
    settle_due: bool = False
    counted: tuple[int, ...] = ()  # the jobs_* when the outcome was last set
    published: tuple[int, ...] = ()  # the jobs_* watchers were last woken for


def _job_fields(session: pb.PolicySession, result: pb.ComputerResult) -> dict[str, str]:
    """The fields of a log line about one computer's job (--log-format json keys)."""
    return {
        "session_id": session.id,
        "policy_id": session.policy_id,
        "computer": result.computer.name,
        "address": result.computer.address,
        "job_id": result.job.id,
    }


def _job_counts(stats: pb.SessionStatistics) -> tuple[int, ...]:
    return tuple(getattr(stats, name) for name in JOB_STATISTICS)


def record_job(live: LiveRecord, result: pb.ComputerResult, job: pb.Job) -> None:
    """Records the job as the agent now has it; a job that ended since it was last seen
    is a `JobEnd` for the computer's status."""
    ended_before = result.job.id == job.id and ended_job(result.job)
    result.job.CopyFrom(job)
    result.job_id = job.id
    now = time.time_ns()
    result.last_contact_time.FromNanoseconds(now)
    if ended_job(job) and not ended_before:
        live.job_ends.append(JobEnd(live.session.policy_id, result.computer, job, now))
        if job.state == pb.JOB_STATE_FAILED:
            log.warning(
                "session %s: job %s on computer %s (%s) failed: %s",
                live.session.id,
                job.id,
                result.computer.name,
                result.computer.address,
                job.error,
                extra=_job_fields(live.session, result),
            )


def mark_reconciled(result: pb.ComputerResult, job: pb.Job) -> None:
    """A computer recorded not received that had in fact started `job`."""
    result.delivery = pb.DELIVERY_RECEIVED
    result.reconciled = True
    result.detail = f"OK: reconciled: the agent's job list has job {job.id} ({result.detail})"


class OutcomeTracker:
    """Follows the jobs of sessions handed over by `track`; `release` when one is done."""

    def __init__(
        self,
        agents: AgentStreams,
        deadline: float,
        lost_after: float = AGENT_LOST_AFTER,
        release: Callable[[LiveRecord], None] | None = None,
        reconcile_for: float | None = None,
    ) -> None:
        """`release(live)` is called once nothing of that session is followed any more."""
        self.follower = Follower(
            agents, self, deadline, lost_after, on_idle=self._idle, reconcile_for=reconcile_for
        )
        self.on_outcome: list[OutcomeHook] = []
        self._release = release
        self._sessions: dict[str, _Tracked] = {}

    def tracking(self, session_id: str) -> bool:
        return session_id in self._sessions

    def track(self, live: LiveRecord, elsewhere: Collection[int] = ()) -> None:
        """Starts following a delivered (or resumed) session's jobs, and reconciling its
        computers whose command timed out; settles its outcome if nothing needs following.
        The computers at `elsewhere` are followed by other replicas (their shares): each
        holds the outcome until `merge_followed` says its follower is done with it."""
        session = live.session
        tracked = self._sessions[session.id] = _Tracked(live, elsewhere=set(elsewhere))
        policy_id = session.policy_id
        now = time.time_ns()
        opened = 0
        for position, result in enumerate(session.computer_results):
            if position in tracked.elsewhere:
                continue
            key = JobKey(session.id, position)
            address = result.computer.address
            if result.delivery == pb.DELIVERY_RECEIVED and not result.HasField("last_contact_time"):
                result.last_contact_time.FromNanoseconds(now)
                live.dirty.append(position)
            if follows(result) or (result.job_unknown and result.job.id):
                after = FOLLOW_AFTER + opened / STREAMS_PER_SECOND
                self.follower.follow(key, address, result.job, after)
                opened += 1
            elif result.delivery == pb.DELIVERY_RECEIVED and ended_job(result.job):
                live.job_ends.append(JobEnd(policy_id, result.computer, result.job, now))
            elif awaits_reconciliation(result):
                tracked.awaiting.add(position)
                self.follower.reconcile(key, address, policy_id)
        self._settle(tracked)
        if not self.follower.following(session.id):
            self._idle(session.id)

    def forget(self, session_id: str) -> None:
        """Stops following a session without settling or releasing it: this replica
        stood down from it (another replica owns it now and follows its jobs)."""
        self._sessions.pop(session_id, None)
        self.follower.stop_session(session_id)

    def elsewhere(self, session_id: str) -> list[int]:
        """The positions of the session other replicas still follow, and those of their
        jobs lost (or seen again still running) whose rows are read on, in order."""
        tracked = self._sessions.get(session_id)
        return sorted(tracked.elsewhere | tracked.late) if tracked is not None else []

    def storage_corrects(self, session_id: str) -> None:
        """The session's final outcome is being stored: from now on its corrections are
        the storage's recount (`run_correction`), not settled here."""
        tracked = self._sessions.get(session_id)
        if tracked is not None:
            tracked.storage_corrects = True

    def corrected(self, session_id: str) -> None:
        """The session's record in memory took a correction (`apply_correction`)."""
        tracked = self._sessions.get(session_id)
        if tracked is not None:
            tracked.counted = tracked.published = _job_counts(tracked.live.session.statistics)

    def merge_followed(self, session_id: str, rows: Iterable[tuple[ResultChange, bool]]) -> None:
        """Records the rows other replicas' followers wrote (their job ends, losses and
        reconciliations; the statuses they changed are stored with them), each with
        whether its follower is done with it; once none is left and nothing is followed
        here, the session is released."""
        tracked = self._sessions.get(session_id)
        if tracked is None:
            return
        session = tracked.live.session
        changed = False
        for change, done in rows:
            result = session.computer_results[change.position]
            before = (result.delivery, result.job.state, result.job_unknown)
            if change.reconciled and not result.reconciled:
                if result.delivery == pb.DELIVERY_NOT_RECEIVED:
                    session.statistics.not_received -= 1
                    session.statistics.received += 1
                apply_row(result, change)
                session.state = state_of(session.statistics)
                note_reconciled(session)
            else:
                apply_row(result, change)
            changed |= before != (result.delivery, result.job.state, result.job_unknown)
            if done:
                tracked.elsewhere.discard(change.position)
                if result.job.id and (result.job_unknown or not ended_job(result.job)):
                    tracked.late.add(change.position)  # lost, or answered late still running
                else:
                    tracked.late.discard(change.position)
        if changed:
            # The rows are stored already; the header's counts follow with the next batch.
            tracked.live.header_changed = True
        self._changed(tracked)
        if not tracked.elsewhere and not self.follower.following(session_id):
            self._idle(session_id)

    def _idle(self, session_id: str) -> None:
        tracked = self._sessions.get(session_id)
        if tracked is None or tracked.elsewhere:
            return  # other replicas' shares still hold it: `merge_followed` releases it
        del self._sessions[session_id]
        if tracked.settle_due:
            self._settle(tracked)
        if self._release is not None:
            self._release(tracked.live)

    def _result(self, key: JobKey) -> tuple[_Tracked, pb.ComputerResult] | None:
        tracked = self._sessions.get(key.session_id)
        if tracked is None:
            return None
        tracked.live.dirty.append(key.position)
        return tracked, tracked.live.session.computer_results[key.position]

    # following.Recorder

    def job_seen(self, key: JobKey, job: pb.Job) -> None:
        found = self._result(key)
        if found is None:
            return
        tracked, result = found
        if result.job_unknown:
            log.info(
                "session %s: computer %s answered again; its job %s is %s",
                key.session_id,
                result.computer.name,
                job.id,
                pb.JobState.Name(job.state),
                extra={"session_id": key.session_id},
            )
        record_job(tracked.live, result, job)
        result.job_unknown = False
        self._changed(tracked)

    def job_lost(self, key: JobKey, why: str) -> None:
        found = self._result(key)
        if found is None:
            return
        tracked, result = found
        result.job_unknown = True
        log.warning(
            "session %s: job %s on computer %s (%s) is unknown: %s",
            key.session_id,
            result.job.id,
            result.computer.name,
            result.computer.address,
            why,
            extra=_job_fields(tracked.live.session, result),
        )
        self._changed(tracked)

    def reconciled(self, key: JobKey, job: pb.Job) -> None:
        found = self._result(key)
        if found is None:
            return
        tracked, result = found
        session = tracked.live.session
        stats = session.statistics
        if result.delivery == pb.DELIVERY_NOT_RECEIVED:
            stats.not_received -= 1
            stats.received += 1
        mark_reconciled(result, job)
        record_job(tracked.live, result, job)
        session.state = state_of(stats)
        note_reconciled(session)
        log.info(
            "session %s: computer %s reconciled: job %s",
            session.id,
            result.computer.name,
            job.id,
            extra={"session_id": session.id},
        )
        tracked.awaiting.discard(key.position)
        self._changed(tracked)

    def reconcile_settled(self, key: JobKey) -> None:
        tracked = self._sessions.get(key.session_id)
        if tracked is not None:
            tracked.awaiting.discard(key.position)
            self._changed(tracked)

    @staticmethod
    def _count_missed(live: LiveRecord) -> None:
        """Computers a start did not reach count as a failure in their status."""
        now = time.time_ns()
        for result in live.session.computer_results:
            if result.delivery in (pb.DELIVERY_NOT_RECEIVED, pb.DELIVERY_REJECTED):
                live.job_ends.append(JobEnd(live.session.policy_id, result.computer, pb.Job(), now))

    def _changed(self, tracked: _Tracked) -> None:
        # Recounting is O(computers): thousands of jobs ending at once are settled in one
        # pass per SETTLE_DELAY, not one pass each.
        if not tracked.settle_due:
            tracked.settle_due = True
            asyncio.get_running_loop().call_later(SETTLE_DELAY, self._settle, tracked)

    def _settle(self, tracked: _Tracked) -> None:
        """Recomputes the statistics and the outcome; the one place an outcome is final."""
        tracked.settle_due = False
        live = tracked.live
        session = live.session
        count_jobs(session)
        # Another replica's computer holds the outcome until its follower is done with it
        # (its job's end and the status it changed stored).
        outcome = outcome_of(session, tracked.awaiting | tracked.elsewhere)
        previous = session.outcome
        counted = _job_counts(session.statistics)
        # Watchers hear a change of counts or outcome now; progress (bytes) reaches them
        # with the writer's next batch, at most every PROGRESS_INTERVAL.
        wake = counted != tracked.published or outcome != previous
        tracked.published = counted
        # Once final, a correction of the jobs' counts is a new outcome time too.
        if outcome != previous or (
            outcome != pb.SESSION_STATE_RUNNING and counted != tracked.counted
        ):
            tracked.counted = counted
            session.outcome = outcome
            if outcome == pb.SESSION_STATE_RUNNING:
                session.ClearField("outcome_time")
            else:
                session.outcome_time.GetCurrentTime()
                corrected = previous not in (pb.SESSION_STATE_RUNNING, pb.SESSION_STATE_UNSPECIFIED)
                log.info(
                    "session %s outcome %s%s",
                    session.id,
                    pb.SessionState.Name(outcome).removeprefix("SESSION_STATE_"),
                    " (corrected)" if corrected else "",
                    extra={"session_id": session.id},
                )
                # Once stored, the storage's recount corrects it, once (`run_correction`).
                if not tracked.storage_corrects:
                    if not corrected and session.action == pb.SESSION_ACTION_START:
                        self._count_missed(live)
                    for hook in self.on_outcome:
                        hook(session, corrected)
        if wake:
            live.publish()

    async def close(self) -> None:
        """Stops following (shutdown): the stored records resume at the next start, or on
        a live replica."""
        await self.follower.close()
        self._sessions.clear()

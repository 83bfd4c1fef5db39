"""This replica's shares of other replicas' sessions, their jobs followed after delivery.

Each computer of a shared session is sent to by one replica (`shares.py`); that replica
also follows its job over its own warm channel: `FollowedShares` is the
`following.Recorder` of those jobs. What it learns goes into the computer's row, with the
statuses the job's end changes and, once this replica is done with the computer (its job
ended or was lost, its reconciliation settled), the row's done mark, one write per
PROGRESS_INTERVAL (`Storage.save_followed`). It does not write the session's header: the
session's owner reads the rows (`followed.FollowedSessions`) and computes the outcome,
which is final only once every share's rows are done, so a reader never sees a final
outcome before the statuses are stored. Save one case: a job whose agent answers after
it was marked lost (done) corrects the final outcome as on one server, by a recount of
the header from every row in the unit of work that writes its row
(`Storage.correct_followed`), and this replica runs the outcome hooks of that
correction (`corrected` True): the one whose write changed the stored header, so they
run once whether the owner is alive, dead, or still settling (then its first final write
recounts, `Storage.save_shared_progress`). A replica that dies has its rows not done
claimed by a live one within a lease and a third (`Storage.claim_followed_shares`), which
follows them from the stored rows.

A share's jobs are followed once the session's delivery has ended (its stored header says
so; at most a lease and an agent deadline after the share was sent), as the receiving
replica and a lone server follow theirs: opening 1,650 WatchJob streams while the other
replicas still send their shares took the agents' and the replicas' CPU from the delivery
(at 5,000 computers on 2 cores, the watch lag on a third replica then went past 1 s).
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from backup.errors import BackupError, Fenced
from backup.v1 import resources_pb2 as pb

from .following import AGENT_LOST_AFTER, AgentStreams, Follower, JobKey
from .outcomes import awaits_reconciliation, ended_job, follows
from .sessions import PROGRESS_INTERVAL, JobEnd, LiveSession, Progress
from .shared_records import OutcomeHook, run_correction
from .storage.interface import Storage
from .tracking import FOLLOW_AFTER, STREAMS_PER_SECOND, mark_reconciled, record_job

log = logging.getLogger("backup_server.share_following")

STOP_WAIT_SECONDS = 10.0


@dataclass
class _Share:
    live: LiveSession
    followed: set[int] = field(default_factory=set)  # positions followed here
    done: list[int] = field(default_factory=list)  # done, not yet marked in storage
    stood_down: bool = False  # some of its rows were claimed by another replica (logged once)
    marked: set[int] = field(default_factory=set)  # done, and so marked in storage
    late: bool = False  # a marked row changed: the next write recounts the header
    # Set once the session's delivery has ended: its jobs' streams open then.
    delivered: asyncio.Event = field(default_factory=asyncio.Event)
    since: float = field(default_factory=time.monotonic)


class FollowedShares:
    """Follows the jobs of this replica's shares; `count` is how many right now."""

    def __init__(
        self,
        storage: Storage,
        agents: AgentStreams,
        deadline: float,
        replica_id: str,
        lease: float,
        lost_after: float = AGENT_LOST_AFTER,
        reconcile_for: float | None = None,
    ) -> None:
        self._storage = storage
        self.replica_id = replica_id
        self._lease = lease
        # A share's streams open once the stored session says its delivery ended, or
        # this long after the share was sent (an owner that died has its delivery ended
        # by its claimer within a lease, its last commands within a deadline).
        self._delivery_wait = lease + deadline
        self.follower = Follower(
            agents,
            self,
            deadline,
            lost_after,
            reconcile_for=reconcile_for,
            on_ended=self._ended,
        )
        self._shares: dict[str, _Share] = {}
        self._claimed: dict[str, set[int]] = {}  # claimed from dead replicas, not yet followed
        self._task: asyncio.Task[None] | None = None
        # Whether this replica's lease holds (Replicas.lease_holds): one the others may
        # count dead claims no followed rows, which would be claimed from it again.
        self.lease_holds: Callable[[], bool] = lambda: True
        self._stopped = False
        # Run on a correction this replica stored: `before_correction(before)` first (the
        # header it corrected, whoever wrote that), then each `on_outcome(after, True)`.
        self.before_correction: list[Callable[[pb.PolicySession], None]] = []
        self.on_outcome: list[OutcomeHook] = []

    @property
    def count(self) -> int:
        """Jobs followed and computers being reconciled for other replicas' sessions."""
        return self.follower.count

    def follow(self, live: LiveSession, positions: Sequence[int]) -> None:
        """Follows the jobs of the positions this replica delivered (or claimed) of
        `live`'s session, to their end; those with nothing to follow are done at once."""
        if self._stopped:
            return  # shutting down: the rows stay not done, for a live replica to claim
        session = live.session
        share = self._shares.get(session.id)
        if share is None:
            share = self._shares[session.id] = _Share(live)
        if session.state != pb.SESSION_STATE_RUNNING:
            share.delivered.set()
        results = share.live.session.computer_results
        opened = 0
        for position in positions:
            if position in share.followed:
                continue
            mine = results[position]
            if share.live is not live:  # claimed again: the stored row is the news
                mine.CopyFrom(session.computer_results[position])
            key = JobKey(session.id, position)
            share.followed.add(position)
            if follows(mine) or (mine.job_unknown and mine.job.id):
                after = FOLLOW_AFTER + opened / STREAMS_PER_SECOND
                gate = share.delivered
                self.follower.follow(key, mine.computer.address, mine.job, after, gate)
                opened += 1
            elif awaits_reconciliation(mine):
                address = mine.computer.address
                self.follower.reconcile(key, address, session.policy_id, share.delivered)
            else:
                if mine.delivery == pb.DELIVERY_RECEIVED and ended_job(mine.job):
                    # Ended by the time it answered: its status still needs the end.
                    end = JobEnd(session.policy_id, mine.computer, mine.job, time.time_ns())
                    share.live.job_ends.append(end)
                self._done(key)

    # following.Recorder

    def job_seen(self, key: JobKey, job: pb.Job) -> None:
        found = self._result(key)
        if found is not None:
            share, result = found
            self._late(share, key)
            record_job(share.live, result, job)
            result.job_unknown = False
            if ended_job(job):
                self._done(key)

    def job_lost(self, key: JobKey, why: str) -> None:
        found = self._result(key)
        if found is not None:
            found[1].job_unknown = True
            log.warning(
                "session %s: job %s on computer %s is unknown: %s",
                key.session_id,
                found[1].job.id,
                found[1].computer.address,
                why,
                extra={"session_id": key.session_id},
            )
            self._done(key)

    def reconciled(self, key: JobKey, job: pb.Job) -> None:
        found = self._result(key)
        if found is not None:
            share, result = found
            self._late(share, key)
            mark_reconciled(result, job)
            record_job(share.live, result, job)
            if ended_job(job):
                self._done(key)

    def reconcile_settled(self, key: JobKey) -> None:
        self._done(key)

    def _result(self, key: JobKey) -> tuple[_Share, pb.ComputerResult] | None:
        share = self._shares.get(key.session_id)
        if share is None:
            return None
        share.live.dirty.append(key.position)
        return share, share.live.session.computer_results[key.position]

    @staticmethod
    def _late(share: _Share, key: JobKey) -> None:
        if key.position in share.marked or key.position in share.done:
            share.late = True

    def _done(self, key: JobKey) -> None:
        share = self._shares.get(key.session_id)
        if share is not None and key.position in share.followed:
            share.done.append(key.position)

    def _ended(self, key: JobKey) -> None:
        # Followed no more (ended, lost for good, cancelled): done, if not already.
        share = self._shares.get(key.session_id)
        if share is not None and key.position not in share.done:
            self._done(key)

    # Storage

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def run(self) -> None:
        """Every PROGRESS_INTERVAL: writes what was learned; every third of a lease, first
        claims the followed rows of replicas whose lease ran out."""
        claimed_at = 0.0
        while not self._stopped:
            await asyncio.sleep(PROGRESS_INTERVAL)
            if time.monotonic() - claimed_at >= self._lease / 3 and self.lease_holds():
                claimed_at = time.monotonic()
                with contextlib.suppress(BackupError):  # asked again a third of a lease on
                    await self._claim()
            for session_id, share in list(self._shares.items()):
                await self._open_when_delivered(session_id, share)
                await self._save(session_id, share)

    async def _open_when_delivered(self, session_id: str, share: _Share) -> None:
        """Lets the share's jobs be followed once the session's delivery has ended."""
        if share.delivered.is_set():
            return
        if time.monotonic() - share.since < self._delivery_wait:
            try:
                header = await self._storage.get_session_header(session_id)
            except BackupError:
                return  # read again at the next round
            if header.state == pb.SESSION_STATE_RUNNING:
                return
        share.delivered.set()

    async def _claim(self) -> None:
        claimed = await self._storage.claim_followed_shares(self.replica_id)
        for session_id, positions in claimed.items():
            log.warning(
                "session %s: following %d jobs of a replica that stopped",
                session_id,
                len(positions),
                extra={"session_id": session_id},
            )
            self._claimed.setdefault(session_id, set()).update(positions)
        # Rows claimed are this replica's now, whatever happens next: kept until followed
        # (a session that could not be read is read again at the next claim).
        for session_id, taken in list(self._claimed.items()):
            live = LiveSession(await self._storage.get_session(session_id))
            share = self._shares.get(session_id)
            if share is not None:
                share.followed.difference_update(taken)
            self.follow(live, sorted(taken))
            del self._claimed[session_id]

    async def _save(self, session_id: str, share: _Share) -> None:
        live = share.live
        if not (live.dirty or live.job_ends or share.done):
            return
        progress = live.take_progress()
        done, share.done = share.done, []
        late, share.late = share.late, False
        results, ends = progress.results, progress.job_ends
        try:
            if late:
                correction = await asyncio.shield(
                    self._storage.correct_followed(session_id, results, ends, done, self.replica_id)
                )
            else:
                await asyncio.shield(
                    self._storage.save_followed(session_id, results, ends, done, self.replica_id)
                )
                correction = None
        except Fenced as error:
            self._stand_down(session_id, share, progress, done, error)
            return
        except BackupError as error:
            live.give_back(progress)
            share.done[:0] = done
            share.late |= late
            log.warning(
                "session %s: followed share not stored, kept in memory: %s",
                session_id,
                error.message,
                extra={"session_id": session_id},
            )
            return
        share.marked.update(done)
        if correction is not None:
            run_correction(correction, self.before_correction, self.on_outcome)
        if not self.follower.following(session_id) and not (live.dirty or share.done):
            del self._shares[session_id]

    def _stand_down(
        self, session_id: str, share: _Share, progress: Progress, done: list[int], error: Fenced
    ) -> None:
        """Rows of the share that another replica claimed (this one's lease lapsed) are
        followed here no more and nothing of them is written; the rest of the batch goes
        back, to be written with the next one."""
        refused = set(error.positions)
        live = share.live
        results = live.session.computer_results
        gone = {results[position].computer.address for position in refused}
        share.followed.difference_update(refused)
        for position in refused:
            self.follower.stop(JobKey(session_id, position))
        live.dirty[:0] = [c.position for c in progress.results if c.position not in refused]
        live.dirty = [position for position in live.dirty if position not in refused]
        live.job_ends[:0] = [end for end in progress.job_ends if end.computer.address not in gone]
        share.done[:0] = [position for position in done if position not in refused]
        if not share.stood_down:
            # Once: its other claimed rows are refused, and dropped, as their batches come.
            share.stood_down = True
            log.warning(
                "session %s: this replica stood down from the followed computers another"
                " replica claimed: %s",
                session_id,
                error.message,
                extra={"session_id": session_id},
            )

    async def stop(self) -> None:
        """Stops following and stores what is known; rows not done stay so, for a live
        replica to claim once this one's lease is gone."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=STOP_WAIT_SECONDS)
        await self.follower.close()
        for session_id, share in list(self._shares.items()):
            await self._save(session_id, share)

"""A session while it runs: its computers, their deliveries, totals and state.

The session proto is the single record: results are changed in place as answers arrive,
statistics follow each change, and watchers are woken by `publish`. `SessionWriter`
(session_writer.py) carries its changes to the storage as `Progress` values.
"""

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from backup.v1 import resources_pb2 as pb

# How often a running session's outcomes are written: one transaction per interval.
PROGRESS_INTERVAL = 0.25

STATISTIC_OF_DELIVERY = {
    pb.DELIVERY_PENDING: "pending",
    pb.DELIVERY_RECEIVED: "received",
    pb.DELIVERY_NOT_RECEIVED: "not_received",
    pb.DELIVERY_SKIPPED: "skipped",
    pb.DELIVERY_REJECTED: "rejected",
    pb.DELIVERY_CANCELLED: "cancelled",
}


@dataclass(frozen=True)
class ResultChange:
    """One computer's outcome as it now stands, by its position in the session."""

    position: int
    delivery: pb.Delivery
    detail: str
    latency_ns: int
    job_id: str
    job: bytes = b""  # the serialized Job as last seen; empty when there is none
    reconciled: bool = False
    contact_ns: int = 0
    job_unknown: bool = False


StoredOutcome = tuple[pb.SessionState, int]  # (outcome, outcome_ns) as stored


@dataclass(frozen=True)
class JobEnd:
    """A followed job's end, for the computer's protection status; an empty job is a
    start the computer did not receive or refused."""

    policy_id: str
    computer: pb.Computer
    job: pb.Job
    contact_ns: int


@dataclass(frozen=True)
class Progress:
    """A batch of a running session's changes: its header as it now stands, and the
    results that changed since the last batch."""

    session_id: str
    state: pb.SessionState
    end_ns: int  # 0 while running
    warnings: tuple[str, ...]
    statistics: pb.SessionStatistics
    results: tuple[ResultChange, ...]
    outcome: pb.SessionState = pb.SESSION_STATE_UNSPECIFIED
    outcome_ns: int = 0  # 0 while the outcome is RUNNING
    job_ends: tuple[JobEnd, ...] = ()


@dataclass(frozen=True)
class Target:
    """A computer a policy reaches, after de-duplication by address."""

    computer: pb.Computer
    protection_group_id: str
    skipped_because: str = ""


def resolve_targets(
    policy: pb.BackupPolicy, groups: Mapping[str, pb.ProtectionGroup]
) -> list[Target]:
    """Direct computers, then each group's, one per address; pre-installed ones are skipped.

    A computer listed twice keeps its first name and group, but is skipped if any of the
    groups it appears in is a pre-installed-agents group.
    """
    first: dict[str, Target] = {}
    skipped_by: dict[str, str] = {}
    for computer in policy.computers:
        first.setdefault(computer.address, Target(computer, ""))
    for group_id in policy.protection_group_ids:
        group = groups[group_id]
        preinstalled = group.kind == pb.PROTECTION_GROUP_KIND_PREINSTALLED_AGENTS
        for computer in group.computers:
            first.setdefault(computer.address, Target(computer, group_id))
            if preinstalled:
                skipped_by.setdefault(computer.address, group_id)
    return [
        Target(
            target.computer,
            target.protection_group_id,
            f"in pre-installed-agents protection group {skipped_by[address]!r}: "
            "its agent is driven locally, not from the server",
        )
        if address in skipped_by
        else target
        for address, target in first.items()
    ]


def state_of(stats: pb.SessionStatistics) -> pb.SessionState:
    """SUCCESS when all received; FAILED when targeted and none received; else WARNING."""
    if stats.pending:
        return pb.SESSION_STATE_RUNNING
    if stats.received == stats.total:
        return pb.SESSION_STATE_SUCCESS
    if stats.received == 0 and stats.total > stats.skipped:
        return pb.SESSION_STATE_FAILED
    return pb.SESSION_STATE_WARNING


def recount(session: pb.PolicySession) -> None:
    """Sets the delivery counts and state from the results (the rows), not from a header
    another replica last wrote."""
    stats = session.statistics
    for name in STATISTIC_OF_DELIVERY.values():
        setattr(stats, name, 0)
    for result in session.computer_results:
        name = STATISTIC_OF_DELIVERY[result.delivery]
        setattr(stats, name, getattr(stats, name) + 1)
    stats.total = len(session.computer_results)
    session.state = state_of(stats)


def new_session(
    session_id: str, policy_id: str, action: pb.SessionAction, targets: Iterable[Target]
) -> pb.PolicySession:
    """A RUNNING session: skipped computers already decided, every other one pending."""
    session = pb.PolicySession(id=session_id, policy_id=policy_id, action=action)
    session.start_time.GetCurrentTime()
    stats = session.statistics
    for target in targets:
        result = session.computer_results.add(protection_group_id=target.protection_group_id)
        result.computer.CopyFrom(target.computer)
        if target.skipped_because:
            result.delivery = pb.DELIVERY_SKIPPED
            result.detail = f"skipped: {target.skipped_because}"
            session.warnings.append(
                f"computer {target.computer.name!r} ({target.computer.address}) skipped: "
                f"{target.skipped_because}"
            )
            stats.skipped += 1
        else:
            result.delivery = pb.DELIVERY_PENDING
            stats.pending += 1
        stats.total += 1
    session.state = state_of(stats)
    return session


class LiveSession:
    """A running session, shared by its fan-out, its storage writer and its watchers."""

    def __init__(self, session: pb.PolicySession) -> None:
        self.session = session
        self.dirty: list[int] = []
        # The header changed without a row of this replica's to write (a row another
        # replica stored was merged): the next batch carries the header alone.
        self.header_changed = False
        self.job_ends: list[JobEnd] = []
        self._changed = asyncio.Event()
        # The (outcome, outcome_ns) the storage has. Once its jobs are followed
        # (`show_stored_outcome`), readers are shown that one until a change made in
        # memory is stored: a reader that sees an outcome final then also finds the
        # statuses its job ends changed, stored in the same write.
        self.stored_outcome = (session.outcome, outcome_ns(session))
        self.show_stored_outcome = False
        # This replica stood down from it (its write was fenced: another replica owns it
        # now), so this record is stale: readers go to the storage instead.
        self.stood_down = False
        # What the storage spent on this session's writes, for the log and the bench.
        self.storage_seconds = 0.0
        self.storage_writes = 0

    @property
    def finished(self) -> bool:
        """Delivered, and the outcome final (or never followed: sessions stored before)."""
        return self.session.state != pb.SESSION_STATE_RUNNING and (
            self.session.outcome != pb.SESSION_STATE_RUNNING
        )

    def record(
        self,
        position: int,
        delivery: pb.Delivery,
        detail: str,
        latency_ns: int = 0,
        job_id: str = "",
        job: pb.Job | None = None,
        stored: bool = False,
    ) -> None:
        """Sets one computer's delivery (and the job it answered with); recorded once.
        `stored`: its row says so already (another replica wrote it), so it is not
        written again from here."""
        result = self.session.computer_results[position]
        if result.delivery != pb.DELIVERY_PENDING:
            return
        stats = self.session.statistics
        stats.pending -= 1
        setattr(
            stats,
            STATISTIC_OF_DELIVERY[delivery],
            getattr(stats, STATISTIC_OF_DELIVERY[delivery]) + 1,
        )
        result.delivery = delivery
        result.detail = detail
        result.job_id = job.id if job is not None else job_id
        if job is not None and job.id:
            result.job.CopyFrom(job)
            result.last_contact_time.GetCurrentTime()
        if latency_ns:
            result.latency.FromNanoseconds(latency_ns)
        if stored:
            self.header_changed = True
        else:
            self.dirty.append(position)

    @property
    def outcome_unstored(self) -> bool:
        """Whether the outcome in memory differs from the stored one."""
        return self.stored_outcome != (self.session.outcome, outcome_ns(self.session))

    def take_progress(self) -> Progress:
        """The changes since the last call, for one storage write."""
        # A position changed many times since the last batch is written once.
        dirty, self.dirty = list(dict.fromkeys(self.dirty)), []
        self.header_changed = False
        job_ends, self.job_ends = self.job_ends, []
        results = self.session.computer_results
        changes = []
        for position in dirty:
            result = results[position]
            changes.append(
                ResultChange(
                    position,
                    result.delivery,
                    result.detail,
                    result.latency.ToNanoseconds(),
                    result.job_id,
                    result.job.SerializeToString() if result.job.id else b"",
                    result.reconciled,
                    result.last_contact_time.ToNanoseconds(),
                    result.job_unknown,
                )
            )
        statistics = pb.SessionStatistics()
        statistics.CopyFrom(self.session.statistics)
        return Progress(
            session_id=self.session.id,
            state=self.session.state,
            end_ns=(
                self.session.end_time.ToNanoseconds() if self.session.HasField("end_time") else 0
            ),
            warnings=tuple(self.session.warnings),
            statistics=statistics,
            results=tuple(changes),
            outcome=self.session.outcome,
            outcome_ns=outcome_ns(self.session),
            job_ends=tuple(job_ends),
        )

    def give_back(self, progress: Progress) -> None:
        """A batch that could not be stored: its results go into the next one."""
        self.dirty[:0] = [change.position for change in progress.results]
        self.header_changed = True
        self.job_ends[:0] = progress.job_ends

    def finish(self) -> None:
        """Marks anything still pending as cancelled and fixes the final state."""
        for position, result in enumerate(self.session.computer_results):
            if result.delivery == pb.DELIVERY_PENDING:
                self.record(
                    position, pb.DELIVERY_CANCELLED, "cancelled: the server shut down first"
                )
        self.session.state = state_of(self.session.statistics)
        self.session.end_time.FromNanoseconds(time.time_ns())

    def publish(self) -> None:
        """Wakes every watcher."""
        self._changed.set()
        self._changed = asyncio.Event()

    def next_change(self) -> asyncio.Event:
        """The event the next `publish` sets; take it before reading, then wait on it."""
        return self._changed

    def snapshot(self, outcome_as_stored: bool = True) -> pb.PolicySession:
        """A copy for readers (with the stored outcome: `show_stored_outcome`; the
        scheduler, deciding a retry, asks for the outcome in memory)."""
        copy = pb.PolicySession()
        copy.CopyFrom(self.session)
        if outcome_as_stored and self.show_stored_outcome and self.outcome_unstored:
            copy.outcome, outcome_ns = self.stored_outcome
            if outcome_ns:
                copy.outcome_time.FromNanoseconds(outcome_ns)
            else:
                copy.ClearField("outcome_time")
        return copy


def outcome_ns(session: pb.PolicySession) -> int:
    return session.outcome_time.ToNanoseconds() if session.HasField("outcome_time") else 0

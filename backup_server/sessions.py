"""A session while it runs: its computers, their deliveries, totals and state.

The session proto is the single record: results are changed in place as answers arrive,
statistics follow each change, and watchers are woken by `publish`.
"""

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass

from backup.v1 import resources_pb2 as pb

STATISTIC_OF_DELIVERY = {
    pb.DELIVERY_PENDING: "pending",
    pb.DELIVERY_RECEIVED: "received",
    pb.DELIVERY_NOT_RECEIVED: "not_received",
    pb.DELIVERY_SKIPPED: "skipped",
    pb.DELIVERY_REJECTED: "rejected",
    pb.DELIVERY_CANCELLED: "cancelled",
}


@dataclass(frozen=True)
class Progress:
    """A batch of a running session's changes, read out as plain values for storage."""

    seq: int
    header: pb.PolicySession  # state, end time, warnings, statistics; no results
    rows: list[tuple[object, ...]]  # delivery, detail, latency, job, seq, position


@dataclass(frozen=True)
class Target:
    """A computer a policy reaches, after de-duplication by address."""

    computer: pb.Computer
    protection_group_id: str
    skipped_because: str = ""


def resolve_targets(policy: pb.BackupPolicy, groups: dict[str, pb.ProtectionGroup]) -> list[Target]:
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

    def __init__(self, session: pb.PolicySession, seq: int) -> None:
        self.session = session
        self.seq = seq
        self.dirty: list[int] = []
        self._changed = asyncio.Event()
        # What the storage thread spent on this session's writes, for the log and the bench.
        self.storage_seconds = 0.0
        self.storage_writes = 0

    @property
    def finished(self) -> bool:
        return self.session.state != pb.SESSION_STATE_RUNNING

    def record(
        self,
        position: int,
        delivery: pb.Delivery,
        detail: str,
        latency_ns: int = 0,
        job_id: str = "",
    ) -> None:
        """Sets one computer's outcome; a computer's outcome is recorded once."""
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
        result.job_id = job_id
        if latency_ns:
            result.latency.FromNanoseconds(latency_ns)
        self.dirty.append(position)

    def take_progress(self) -> Progress:
        """The changes since the last call, for one storage transaction."""
        dirty, self.dirty = self.dirty, []
        results = self.session.computer_results
        rows: list[tuple[object, ...]] = []
        for position in dirty:
            result = results[position]
            rows.append(
                (
                    result.delivery,
                    result.detail,
                    result.latency.ToNanoseconds(),
                    result.job_id,
                    self.seq,
                    position,
                )
            )
        header = pb.PolicySession(
            state=self.session.state,
            warnings=self.session.warnings,
            statistics=self.session.statistics,
        )
        if self.session.HasField("end_time"):
            header.end_time.CopyFrom(self.session.end_time)
        return Progress(self.seq, header, rows)

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

    def snapshot(self) -> pb.PolicySession:
        copy = pb.PolicySession()
        copy.CopyFrom(self.session)
        return copy

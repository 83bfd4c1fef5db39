"""What the server stores and how it asks: one `Storage` protocol of named async methods.

Every backend (SQLite today, `backup_server.storage.sqlite`) implements it and passes the
conformance suite in `tests/storage_conformance.py`. Callers never see a table, a column,
a transaction or a driver's exception:

- a unit of work that checks and then writes (a policy's references, a group still in
  use) runs inside one method, so it commits together or not at all;
- a running session's changes arrive as `sessions.Progress` values;
- the driver's errors leave as the project's errors (`backup.errors`): a full database
  disk is `ResourceExhausted`, any other failure of the database `LocalFault`.

This module imports no driver, so domain modules may depend on it.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from backup.v1 import resources_pb2 as pb

from ..outcomes import Correction
from ..sessions import JobEnd, Progress, ResultChange, StoredOutcome

# Checks a policy against the groups it names, inside the unit of work that stores it;
# raises a `backup.errors` error to refuse it.
PolicyCheck = Callable[[pb.BackupPolicy, Mapping[str, pb.ProtectionGroup]], None]
# Applies a change to the stored policy (a copy), returning the policy to store.
PolicyChange = Callable[[pb.BackupPolicy], pb.BackupPolicy]
# The same for a protection group.
GroupChange = Callable[[pb.ProtectionGroup], pb.ProtectionGroup]

INTERRUPTED = "interrupted: the server stopped while this session was running"
OUTCOME_UNKNOWN = "unknown: the server stopped before this computer's answer was recorded"


class Storage(Protocol):
    """Policies, protection groups and sessions, kept across restarts."""

    async def close(self) -> None:
        """Releases the backend; no call may follow."""
        ...

    # Protection groups

    async def insert_group(self, group: pb.ProtectionGroup) -> None:
        """Stores a new group; AlreadyExists if its id is taken."""
        ...

    async def get_group(self, group_id: str) -> pb.ProtectionGroup:
        """The group; NotFound if there is none."""
        ...

    async def list_groups(self, after_id: str, limit: int) -> list[pb.ProtectionGroup]:
        """At most `limit` groups with ids after `after_id`, in id order."""
        ...

    async def update_group(
        self, group_id: str, change: GroupChange, check: PolicyCheck
    ) -> pb.ProtectionGroup:
        """Reads the group, applies `change`, runs `check` on every policy using the group
        (with its groups, the changed one in place), stores it, all in one unit of work;
        returns what was stored. NotFound if absent."""
        ...

    async def delete_group(self, group_id: str) -> None:
        """Deletes a group; NotFound, or FailedPrecondition naming the policies using it."""
        ...

    # Policies

    async def insert_policy(self, policy: pb.BackupPolicy, check: PolicyCheck) -> None:
        """Stores a new policy once `check` accepts it with its groups (read in the same
        unit of work); AlreadyExists if its id is taken."""
        ...

    async def update_policy(
        self, policy_id: str, change: PolicyChange, check: PolicyCheck
    ) -> pb.BackupPolicy:
        """Reads the policy, applies `change`, checks the result with its groups and
        stores it, all in one unit of work; returns what was stored. NotFound if absent."""
        ...

    async def get_policy(self, policy_id: str) -> pb.BackupPolicy:
        """The policy; NotFound if there is none."""
        ...

    async def get_policy_and_groups(
        self, policy_id: str
    ) -> tuple[pb.BackupPolicy, dict[str, pb.ProtectionGroup]]:
        """A policy with the groups it names, read together so that a concurrent update
        and group deletion cannot leave it naming a group that is gone."""
        ...

    async def list_policies(self, after_id: str, limit: int) -> list[pb.BackupPolicy]:
        """At most `limit` policies with ids after `after_id`, in id order."""
        ...

    async def delete_policy(self, policy_id: str) -> None:
        """Deletes a policy (its sessions stay); NotFound if there is none."""
        ...

    async def policy_exists_or_had_sessions(self, policy_id: str) -> bool:
        """Whether the policy exists now or any stored session names it."""
        ...

    # Sessions

    async def insert_session(self, session: pb.PolicySession, owner: str = "") -> float:
        """Stores a new session with every computer's result, run by replica `owner`;
        AlreadyExists if its id is taken. Returns the seconds the write itself took, for
        the log and the bench."""
        ...

    async def save_progress(self, progress: Progress, owner: str = "") -> float:
        """Writes a batch of a session's changed results and its header in one unit of
        work; returns the seconds the write itself took. With `owner` (a replica id), only
        while the session's owner is still `owner`, checked in that unit of work: else
        Fenced and nothing written (replicas; one server per SQLite file writes always)."""
        ...

    async def get_session(self, session_id: str) -> pb.PolicySession:
        """The stored session with its results; NotFound if there is none."""
        ...

    async def get_session_header(self, session_id: str) -> pb.PolicySession:
        """The stored session without its results (its state, statistics, warnings):
        what a watcher on another replica polls while the delivery runs, with
        `delivered_results` for the computers newly delivered; NotFound if there is none."""
        ...

    async def list_sessions(
        self, policy_id: str, before: int, limit: int, with_results: bool
    ) -> list[tuple[int, pb.PolicySession]]:
        """Newest first, at most `limit` sessions (of `policy_id`, or all when empty),
        each with its cursor; `before` is a cursor from an earlier call (0 = the newest).
        Cursors are opaque to callers: they only hand them back."""
        ...

    async def last_session_start(self, policy_id: str, trigger: pb.SessionTrigger) -> int | None:
        """When the policy's newest session of that trigger started (Unix nanoseconds);
        None when it has none. The scheduler's memory of its last scheduled run."""
        ...

    async def fail_interrupted_sessions(self, replica_id: str = "") -> list[str]:
        """Marks sessions a stopped server left RUNNING as FAILED with the INTERRUPTED
        warning, ending each at its last stored activity, and their pending computers
        OUTCOME_UNKNOWN; returns their ids. Never the sessions of `replica_id` (the
        caller) nor, where replicas share the storage, of a replica whose lease holds.
        Their outcome is left as it is: jobs they started may still run, and are followed
        again."""
        ...

    async def list_followed_sessions(self) -> list[pb.PolicySession]:
        """Every session whose outcome is still RUNNING, with its results, oldest first:
        what a starting server resumes following."""
        ...

    # Computer statuses (updated by `Progress.job_ends` inside `save_progress`)

    async def list_computer_statuses(
        self, policy_id: str, after: tuple[str, str], limit: int
    ) -> list[pb.ComputerStatus]:
        """At most `limit` statuses (of `policy_id`, or all when empty) after the
        (policy id, address) `after`, in that order; ("", "") is the first page."""
        ...

    # Replicas (backup_server.replicas)

    async def claim_sessions(self, replica_id: str) -> list[str]:
        """Makes `replica_id` the owner of the RUNNING sessions of replicas whose lease
        ran out, each claimed by one replica only, and returns their ids for it to finish.
        A storage only one server uses claims none: it fails them instead
        (`fail_interrupted_sessions`)."""
        ...

    async def claim_followed_sessions(self, replica_id: str) -> list[pb.PolicySession]:
        """Makes `replica_id` the owner of the delivered sessions whose outcome is still
        RUNNING and that no live replica follows (their owner's lease ran out, or it
        stopped), each claimed by one replica only, and returns them with their results,
        oldest first, for it to follow. Never the caller's own. A storage only one server
        uses claims every such session not the caller's (what the previous process left)."""
        ...

    async def renew_lease(self, replica_id: str, address: str, lease_seconds: float) -> None:
        """Records that the replica is alive for `lease_seconds` from now."""
        ...

    async def end_lease(self, replica_id: str) -> None:
        """Gives the replica's lease up (a clean stop)."""
        ...

    async def live_replicas(self) -> list[str]:
        """The ids of the replicas whose lease holds, in id order."""
        ...

    async def hold_leadership(self) -> bool:
        """Whether this process holds the deployment's one leadership lock (the
        scheduler's), taking it if it is free; a storage only one process uses always
        does. A holder that dies loses it, so another takes it over."""
        ...

    # Computer shares (backup_server.shares): which replica sends to each computer of a
    # session. A computer row's share is a replica id, or "" for the session's owner.

    async def share_members(self, replica_id: str) -> list[str]:
        """The replicas a new session's computers are shared among, in id order: those
        whose lease holds, and `replica_id` (the caller) always; a storage only one
        server uses returns `replica_id` alone."""
        ...

    async def assign_shares(self, session_id: str, shares: Mapping[str, Sequence[int]]) -> None:
        """Makes each replica of `shares` the sender of the computers at those positions
        of the session (all other computers stay the owner's). NotFound if no session."""
        ...

    async def pending_shares(self, session_id: str) -> dict[str, list[int]]:
        """The positions of the session's computers still pending, by share ("" = the
        owner's), each list in order."""
        ...

    async def assigned_shares(self, replica_id: str) -> dict[str, list[int]]:
        """By session id, the positions still pending that `replica_id` is to send, in
        the RUNNING sessions of any owner."""
        ...

    async def claim_shares(self, replica_id: str) -> dict[str, list[int]]:
        """Makes `replica_id` the sender of the pending computers of RUNNING sessions
        whose share is a replica whose lease ran out, each row claimed by one replica
        only, and returns them by session id. A storage only one server uses claims
        none."""
        ...

    async def save_share(
        self, session_id: str, changes: Sequence[ResultChange], share: str = ""
    ) -> float:
        """Writes a share's changed computer rows (never the session's header, which its
        owner computes from the rows); returns the seconds the write took. With `share` (a
        replica id), only if every one of those rows is still that share's: else Fenced
        naming the others, and nothing written (one server per SQLite file: always)."""
        ...

    async def delivered_results(
        self, session_id: str, positions: Sequence[int]
    ) -> list[ResultChange]:
        """The rows among `positions` of the session that are no longer pending, in
        position order: what other replicas delivered, for the owner to merge."""
        ...

    async def header_and_delivered(
        self, session_id: str, positions: Sequence[int]
    ) -> tuple[pb.PolicySession, list[ResultChange]]:
        """`get_session_header` and then, read after it, `delivered_results` for
        `positions`, in one call (one round trip on PostgreSQL): a watcher's poll of a
        session another replica runs. Read in that order, a header that says the delivery
        ended comes with every row of `positions` delivered. NotFound if no session."""
        ...

    # Followed shares (backup_server.share_following): after delivery, the replica of a
    # computer's share follows its job, writes its row and the statuses its job ends
    # change, and marks the row done; the session's owner reads those rows.

    async def shared_positions(self, session_id: str) -> list[int]:
        """The positions of the session's computers whose share is another replica's (not
        the owner's ""), in order. NotFound if no session."""
        ...

    async def followed_results(
        self, session_id: str, positions: Sequence[int]
    ) -> list[tuple[ResultChange, bool]]:
        """The rows at `positions` of the session, in position order, each with whether
        its follower is done with it (`save_followed`'s `done`)."""
        ...

    async def save_followed(
        self,
        session_id: str,
        changes: Sequence[ResultChange],
        job_ends: Sequence[JobEnd],
        done: Sequence[int],
        share: str = "",
    ) -> float:
        """Writes a followed share's changed rows, folds `job_ends` into the computers'
        statuses, and marks the rows at `done` done, in one unit of work (never the
        session's header); returns the seconds the write took. NotFound if no session.
        With `share`, fenced as `save_share` is (the rows of `changes` and `done`)."""
        ...

    async def correct_followed(
        self,
        session_id: str,
        changes: Sequence[ResultChange],
        job_ends: Sequence[JobEnd],
        done: Sequence[int],
        share: str = "",
    ) -> Correction | None:
        """`save_followed` of rows whose follower was done with them already (an agent
        that answered after its job was marked lost) and, in the same unit of work, with
        the session's header locked: if its stored outcome is final, its job counts and
        outcome recounted from all its rows (`outcomes.recounted`) and written; returns
        that correction, or None (nothing changed, or the outcome is not final yet: its
        owner's final write recounts). NotFound if no session. With `share`, fenced as
        `save_followed` is."""
        ...

    async def save_shared_progress(
        self, progress: Progress, owner: str = ""
    ) -> tuple[Correction | None, StoredOutcome]:
        """`save_progress` of a session whose computers other replicas follow, once its
        outcome is final (stored, or in `progress`): in the same unit of work, with the
        header locked, its job counts and outcome recounted from all its rows and written
        instead of the batch's (which may not know another replica's late correction).
        Returns the correction, against the stored final header or the batch's when this
        is the first final one (None if the rows agree), and the (outcome, outcome_ns)
        now stored. With `owner`, fenced as `save_progress` is."""
        ...

    async def claim_followed_shares(self, replica_id: str) -> dict[str, list[int]]:
        """Makes `replica_id` the follower of the delivered rows not done of sessions whose
        outcome is RUNNING and whose share is a replica whose lease ran out, each row
        claimed by one replica only; returns them by session id. A storage only one
        server uses claims none."""
        ...

    async def pending_earlier_starts(self, session_id: str) -> list[tuple[str, int, str]]:
        """The computers still pending in the RUNNING start sessions of the same policy
        stored before the session `session_id` (a stop), as (start session id, position,
        address), in that order: the start commands a stop must not overtake, wherever
        they are sent from. NotFound if no session."""
        ...


__all__ = ["INTERRUPTED", "OUTCOME_UNKNOWN", "PolicyChange", "PolicyCheck", "Storage"]

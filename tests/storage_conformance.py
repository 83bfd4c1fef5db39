"""What every storage backend must do: the `Storage` protocol's behaviour, backend-independent.

A backend's test module imports everything from here (`from storage_conformance import *`)
and provides three fixtures:

- `storage`: a fresh, empty `Storage`;
- `reopen`: an async callable that closes `storage` and returns a new `Storage` over the
  same data, as a restarted server would open it;
- `fillable`: a `Fillable` whose storage's disk can be filled and freed (skip where the
  backend cannot be put on a small disk).
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from backup.errors import AlreadyExists, FailedPrecondition, NotFound, ResourceExhausted
from backup.v1 import resources_pb2 as pb
from backup_server.session_writer import SessionWriter
from backup_server.sessions import (
    JobEnd,
    LiveSession,
    Progress,
    ResultChange,
    Target,
    new_session,
)
from backup_server.storage import INTERRUPTED, OUTCOME_UNKNOWN, Storage

Reopen = Callable[[], Awaitable[Storage]]


@dataclass
class Fillable:
    """A storage on a disk the test may fill and free."""

    storage: Storage
    fill: Callable[[], None]
    free: Callable[[], None]


def a_group(group_id: str, *addresses: str) -> pb.ProtectionGroup:
    group = pb.ProtectionGroup(id=group_id, name=group_id, kind=pb.PROTECTION_GROUP_KIND_MANUAL)
    for index, address in enumerate(addresses or ("127.0.0.1:1",)):
        group.computers.add(name=f"{group_id}-{index}", address=address)
    group.create_time.FromNanoseconds(1_700_000_000_000_000_000)
    return group


def a_policy(policy_id: str, *group_ids: str) -> pb.BackupPolicy:
    policy = pb.BackupPolicy(id=policy_id, name=policy_id, protection_group_ids=group_ids)
    policy.computers.add(name="direct", address="127.0.0.1:2")
    policy.create_time.FromNanoseconds(1_700_000_000_000_000_000)
    policy.update_time.CopyFrom(policy.create_time)
    return policy


def a_session(session_id: str, policy_id: str = "p", computers: int = 3) -> pb.PolicySession:
    targets = [
        Target(pb.Computer(name=f"c{index}", address=f"127.0.0.1:{1000 + index}"), "")
        for index in range(computers)
    ]
    return new_session(session_id, policy_id, pb.SESSION_ACTION_START, targets)


def accept(policy: pb.BackupPolicy, groups: object) -> None:
    """A policy check that accepts everything."""


def refuse(policy: pb.BackupPolicy, groups: object) -> None:
    raise FailedPrecondition("refused by the check")


# Protection groups


async def test_a_group_round_trips_and_its_id_is_unique(storage: Storage) -> None:
    """A stored group reads back equal; a second group with its id is AlreadyExists."""
    await storage.insert_group(a_group("web"))
    assert await storage.get_group("web") == a_group("web")
    with pytest.raises(AlreadyExists):
        await storage.insert_group(a_group("web", "127.0.0.1:9"))
    assert await storage.get_group("web") == a_group("web")


async def test_a_missing_group_is_not_found(storage: Storage) -> None:
    """Reading or deleting a group that was never stored is NotFound."""
    with pytest.raises(NotFound):
        await storage.get_group("nothing")
    with pytest.raises(NotFound):
        await storage.delete_group("nothing")


async def test_groups_list_in_id_order_after_a_given_id(storage: Storage) -> None:
    """Listing gives at most `limit` groups with ids after `after_id`, in id order."""
    for group_id in ("c", "a", "d", "b"):
        await storage.insert_group(a_group(group_id))
    assert [g.id for g in await storage.list_groups("", 3)] == ["a", "b", "c"]
    assert [g.id for g in await storage.list_groups("b", 10)] == ["c", "d"]
    assert await storage.list_groups("d", 10) == []


async def test_a_group_in_use_cannot_be_deleted(storage: Storage) -> None:
    """Deleting a group a policy names is FailedPrecondition naming the policy; unused, it goes."""
    await storage.insert_group(a_group("web"))
    await storage.insert_policy(a_policy("nightly", "web"), accept)
    with pytest.raises(FailedPrecondition, match="nightly"):
        await storage.delete_group("web")
    assert await storage.get_group("web") == a_group("web")
    await storage.delete_policy("nightly")
    await storage.delete_group("web")
    with pytest.raises(NotFound):
        await storage.get_group("web")


async def test_a_group_update_checks_every_policy_using_it(storage: Storage) -> None:
    """update_group runs the check on each policy using the group, with the changed group in
    place; a refusal keeps the old group; an unknown group is NotFound."""
    await storage.insert_group(a_group("web", "127.0.0.1:1"))
    await storage.insert_group(a_group("db"))
    await storage.insert_policy(a_policy("nightly", "web", "db"), accept)
    await storage.insert_policy(a_policy("weekly"), accept)

    def add_computer(group: pb.ProtectionGroup) -> pb.ProtectionGroup:
        group.computers.add(name="extra", address="127.0.0.1:2")
        return group

    seen: list[tuple[str, list[str], int]] = []

    def record(policy: pb.BackupPolicy, groups: object) -> None:
        assert isinstance(groups, dict)
        seen.append((policy.id, sorted(groups), len(groups["web"].computers)))

    updated = await storage.update_group("web", add_computer, record)
    assert seen == [("nightly", ["db", "web"], 2)] and len(updated.computers) == 2
    assert await storage.get_group("web") == updated
    with pytest.raises(FailedPrecondition):
        await storage.update_group("web", add_computer, refuse)
    assert await storage.get_group("web") == updated
    with pytest.raises(NotFound):
        await storage.update_group("nope", add_computer, accept)


# Policies


async def test_a_policy_is_checked_with_its_groups_before_it_is_stored(storage: Storage) -> None:
    """The check sees the named groups that exist; a refusal stores nothing; a duplicate id is AlreadyExists."""
    await storage.insert_group(a_group("web"))
    seen: list[dict[str, pb.ProtectionGroup]] = []
    await storage.insert_policy(
        a_policy("nightly", "web", "gone"), lambda policy, groups: seen.append(dict(groups))
    )
    assert seen == [{"web": a_group("web")}]
    assert await storage.get_policy("nightly") == a_policy("nightly", "web", "gone")
    with pytest.raises(FailedPrecondition):
        await storage.insert_policy(a_policy("weekly"), refuse)
    with pytest.raises(NotFound):
        await storage.get_policy("weekly")
    with pytest.raises(AlreadyExists):
        await storage.insert_policy(a_policy("nightly"), accept)


async def test_a_policy_and_the_deletion_of_its_group_never_both_win(storage: Storage) -> None:
    """Storing a policy that needs a group, raced against deleting that group, leaves either the policy and its group or neither policy."""

    def needs_web(policy: pb.BackupPolicy, groups: object) -> None:
        if "web" not in groups:  # type: ignore[operator]
            raise FailedPrecondition("protection group 'web' does not exist")

    for round_ in range(20):
        group_id = "web"
        await storage.insert_group(a_group(group_id))
        outcomes = await asyncio.gather(
            storage.insert_policy(a_policy(f"p{round_}", group_id), needs_web),
            storage.delete_group(group_id),
            return_exceptions=True,
        )
        stored, deleted = (not isinstance(outcome, Exception) for outcome in outcomes)
        assert stored != deleted, outcomes
        if stored:
            assert (await storage.get_policy_and_groups(f"p{round_}"))[1] == {
                group_id: a_group(group_id)
            }
            await storage.delete_policy(f"p{round_}")
            await storage.delete_group(group_id)


async def test_a_policy_reads_back_with_its_groups(storage: Storage) -> None:
    """get_policy_and_groups gives the policy and each group it names that exists."""
    await storage.insert_group(a_group("web"))
    await storage.insert_group(a_group("db"))
    await storage.insert_policy(a_policy("nightly", "web"), accept)
    policy, groups = await storage.get_policy_and_groups("nightly")
    assert policy == a_policy("nightly", "web") and groups == {"web": a_group("web")}
    with pytest.raises(NotFound):
        await storage.get_policy_and_groups("weekly")


async def test_an_update_applies_the_change_and_checks_the_result(storage: Storage) -> None:
    """update_policy stores what the change made once the check accepts it; a refusal keeps the old one."""
    await storage.insert_group(a_group("web"))
    await storage.insert_policy(a_policy("nightly"), accept)

    def rename(policy: pb.BackupPolicy) -> pb.BackupPolicy:
        policy.name = "renamed"
        policy.protection_group_ids.append("web")
        return policy

    checked: list[list[str]] = []
    updated = await storage.update_policy(
        "nightly", rename, lambda policy, groups: checked.append(sorted(groups))
    )
    assert updated.name == "renamed" and checked == [["web"]]
    assert await storage.get_policy("nightly") == updated
    with pytest.raises(FailedPrecondition):
        await storage.update_policy("nightly", rename, refuse)
    assert await storage.get_policy("nightly") == updated
    with pytest.raises(FailedPrecondition):
        # The group the update named is now in use by the stored policy.
        await storage.delete_group("web")
    with pytest.raises(NotFound):
        await storage.update_policy("weekly", rename, accept)


async def test_policies_list_in_id_order_and_delete(storage: Storage) -> None:
    """Policies list like groups; a deleted policy is gone; deleting it again is NotFound."""
    for policy_id in ("b", "a", "c"):
        await storage.insert_policy(a_policy(policy_id), accept)
    assert [p.id for p in await storage.list_policies("", 2)] == ["a", "b"]
    assert [p.id for p in await storage.list_policies("a", 5)] == ["b", "c"]
    await storage.delete_policy("b")
    assert [p.id for p in await storage.list_policies("", 5)] == ["a", "c"]
    with pytest.raises(NotFound):
        await storage.delete_policy("b")


async def test_a_deleted_policy_with_sessions_is_still_known(storage: Storage) -> None:
    """policy_exists_or_had_sessions: true for a policy, for a deleted one with sessions, false otherwise."""
    await storage.insert_policy(a_policy("nightly"), accept)
    await storage.insert_policy(a_policy("weekly"), accept)
    await storage.insert_session(a_session("s-1", "weekly"))
    await storage.delete_policy("weekly")
    await storage.delete_policy("nightly")
    assert await storage.policy_exists_or_had_sessions("weekly")
    assert not await storage.policy_exists_or_had_sessions("nightly")
    await storage.insert_policy(a_policy("monthly"), accept)
    assert await storage.policy_exists_or_had_sessions("monthly")


# Sessions


async def test_a_session_round_trips_with_its_results(storage: Storage) -> None:
    """A stored session reads back equal, results included; its id is unique; missing is NotFound."""
    session = a_session("s-1")
    took = await storage.insert_session(session)
    assert took >= 0
    assert await storage.get_session("s-1") == session
    with pytest.raises(AlreadyExists):
        await storage.insert_session(a_session("s-1", "other"))
    with pytest.raises(NotFound):
        await storage.get_session("s-2")


async def test_a_sessions_header_is_the_session_without_its_results(storage: Storage) -> None:
    """get_session_header reads the stored session as get_session does, only without its computers' rows; NotFound for an unknown id."""
    live = LiveSession(a_session("s-h"))
    await storage.insert_session(live.snapshot())
    live.record(0, pb.DELIVERY_RECEIVED, "OK: started", 5, job_id="j1")
    live.session.warnings.append("one warning")
    await storage.save_progress(live.take_progress())
    whole, header = await storage.get_session("s-h"), await storage.get_session_header("s-h")
    assert len(whole.computer_results) == 3 and not header.computer_results
    del whole.computer_results[:]
    assert header == whole and header.statistics.received == 1
    with pytest.raises(NotFound):
        await storage.get_session_header("s-none")


async def test_a_session_keeps_its_trigger_retry_link_and_attempt(storage: Storage, reopen: Reopen) -> None:
    """trigger, retry_of_session_id and attempt read back, also after a reopen."""
    session = a_session("s-2")
    session.trigger = pb.SESSION_TRIGGER_RETRY
    session.retry_of_session_id = "s-1"
    session.attempt = 2
    await storage.insert_session(session)
    again = await reopen()
    stored = await again.get_session("s-2")
    assert (stored.trigger, stored.retry_of_session_id, stored.attempt) == (pb.SESSION_TRIGGER_RETRY, "s-1", 2)
    [(_, listed)] = await again.list_sessions("p", 0, 10, with_results=False)
    assert listed.trigger == pb.SESSION_TRIGGER_RETRY and listed.attempt == 2


async def test_the_last_start_of_a_trigger_is_the_newest_sessions(storage: Storage) -> None:
    """last_session_start gives the newest session's start of that trigger and policy, None without one."""
    assert await storage.last_session_start("p", pb.SESSION_TRIGGER_SCHEDULE) is None
    for index, (policy_id, trigger) in enumerate(
        [("p", pb.SESSION_TRIGGER_SCHEDULE), ("p", pb.SESSION_TRIGGER_SCHEDULE),
         ("p", pb.SESSION_TRIGGER_OPERATOR), ("q", pb.SESSION_TRIGGER_SCHEDULE)]
    ):
        session = a_session(f"s-{index}", policy_id)
        session.trigger = trigger
        session.start_time.FromNanoseconds(1_700_000_000_000_000_000 + index)
        await storage.insert_session(session)
    assert await storage.last_session_start("p", pb.SESSION_TRIGGER_SCHEDULE) == 1_700_000_000_000_000_001
    assert await storage.last_session_start("p", pb.SESSION_TRIGGER_OPERATOR) == 1_700_000_000_000_000_002
    assert await storage.last_session_start("p", pb.SESSION_TRIGGER_WINDOW) is None


async def test_progress_batches_update_results_and_the_header(storage: Storage) -> None:
    """Each saved batch changes the named results and the header; the stored session ends equal to the live one."""
    live = LiveSession(a_session("s-1", computers=4))
    await storage.insert_session(live.snapshot())
    live.record(2, pb.DELIVERY_RECEIVED, "OK: job j-2 started", 1_500_000, "j-2")
    assert await storage.save_progress(live.take_progress()) >= 0
    stored = await storage.get_session("s-1")
    assert stored.computer_results[2] == live.session.computer_results[2]
    assert stored.statistics == live.session.statistics
    assert stored.state == pb.SESSION_STATE_RUNNING and not stored.HasField("end_time")
    live.record(0, pb.DELIVERY_NOT_RECEIVED, "UNAVAILABLE: refused", 2_000)
    live.session.warnings.append("a warning")
    live.finish()
    await storage.save_progress(live.take_progress())
    assert await storage.get_session("s-1") == live.session


class SlowFirstSave:
    """The storage, but its first `save_progress` waits before it writes: a pooled
    connection slower than the one after it."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self.saves = 0
        self.first = asyncio.Event()

    async def save_progress(self, progress: Progress) -> float:
        self.saves += 1
        if self.saves == 1:
            self.first.set()
            await asyncio.sleep(0.3)
        return await self._storage.save_progress(progress)


async def test_a_sessions_end_is_stored_after_a_slow_batch_before_it(storage: Storage) -> None:
    """A writer cancelled while its batch is being saved: the end waits for that batch, so
    the stored header is the final one, not the older RUNNING one landing last."""
    live = LiveSession(a_session("s-1"))
    await storage.insert_session(live.snapshot())
    slow = SlowFirstSave(storage)
    writer = SessionWriter(slow, live)  # type: ignore[arg-type]
    running = asyncio.ensure_future(writer.run(interval=0.01))
    live.record(0, pb.DELIVERY_RECEIVED, "OK: job j-0 started", 1_000, "j-0")
    await asyncio.wait_for(slow.first.wait(), 5)
    running.cancel()  # as a fan-out's end cancels its writer, its batch still in flight
    live.record(1, pb.DELIVERY_RECEIVED, "OK: job j-1 started", 1_000, "j-1")
    assert await writer.end()
    stored = await storage.get_session("s-1")
    assert stored.state != pb.SESSION_STATE_RUNNING and stored == live.session


async def test_progress_for_an_unknown_session_is_not_found(storage: Storage) -> None:
    """Saving progress for a session that was never stored is NotFound and stores nothing."""
    live = LiveSession(a_session("s-ghost"))
    live.record(0, pb.DELIVERY_RECEIVED, "OK")
    with pytest.raises(NotFound):
        await storage.save_progress(live.take_progress())
    assert await storage.list_sessions("", 0, 10, False) == []


async def test_sessions_list_newest_first_in_pages_by_policy(storage: Storage) -> None:
    """list_sessions pages newest first with the cursors it hands out, filters by policy, and drops results when asked."""
    for index in range(5):
        await storage.insert_session(a_session(f"s-{index}", "p" if index % 2 == 0 else "q"))
    first = await storage.list_sessions("", 0, 2, True)
    assert [s.id for _, s in first] == ["s-4", "s-3"]
    assert len(first[0][1].computer_results) == 3
    second = await storage.list_sessions("", first[-1][0], 10, False)
    assert [s.id for _, s in second] == ["s-2", "s-1", "s-0"]
    assert all(len(s.computer_results) == 0 for _, s in second)
    assert all(s.statistics.total == 3 for _, s in second)
    of_p = await storage.list_sessions("p", 0, 10, False)
    assert [s.id for _, s in of_p] == ["s-4", "s-2", "s-0"]
    after = await storage.list_sessions("p", of_p[0][0], 1, False)
    assert [s.id for _, s in after] == ["s-2"]


async def test_interrupted_sessions_fail_at_their_last_activity(storage: Storage) -> None:
    """Recovery marks RUNNING sessions FAILED, ends them at their last stored write, marks pending computers unknown, and leaves ended ones alone."""
    live = LiveSession(a_session("s-running"))
    await storage.insert_session(live.snapshot())
    live.record(0, pb.DELIVERY_RECEIVED, "OK: job j-1 started", 1_000, "j-1")
    await storage.save_progress(live.take_progress())
    last_write_ns = time.time_ns()
    ended = LiveSession(a_session("s-ended"))
    await storage.insert_session(ended.snapshot())
    ended.finish()
    await storage.save_progress(ended.take_progress())
    await asyncio.sleep(0.2)

    assert await storage.fail_interrupted_sessions() == ["s-running"]
    failed = await storage.get_session("s-running")
    assert failed.state == pb.SESSION_STATE_FAILED and list(failed.warnings) == [INTERRUPTED]
    assert failed.start_time.ToNanoseconds() <= failed.end_time.ToNanoseconds() <= last_write_ns
    assert failed.computer_results[0].delivery == pb.DELIVERY_RECEIVED
    assert [r.detail for r in failed.computer_results[1:]] == [OUTCOME_UNKNOWN] * 2
    assert [r.delivery for r in failed.computer_results[1:]] == [pb.DELIVERY_PENDING] * 2
    assert await storage.get_session("s-ended") == ended.session
    assert await storage.fail_interrupted_sessions() == []


async def test_what_is_stored_survives_a_reopen(storage: Storage, reopen: Reopen) -> None:
    """Groups, policies and sessions read back the same after the storage is closed and opened again."""
    await storage.insert_group(a_group("web"))
    await storage.insert_policy(a_policy("nightly", "web"), accept)
    session = a_session("s-1", "nightly")
    await storage.insert_session(session)
    again = await reopen()
    assert await again.get_group("web") == a_group("web")
    assert await again.get_policy_and_groups("nightly") == (
        a_policy("nightly", "web"),
        {"web": a_group("web")},
    )
    assert await again.get_session("s-1") == session


# Outcomes: followed jobs, resumed sessions, computer statuses


def a_job(job_id: str, state: pb.JobState, start_s: int = 1_700_000_000) -> pb.Job:
    job = pb.Job(id=job_id, policy_id="p", session_id="s-1", state=state)
    job.start_time.FromSeconds(start_s)
    if state != pb.JOB_STATE_RUNNING:
        job.end_time.FromSeconds(start_s + 60)
    if state == pb.JOB_STATE_SUCCEEDED:
        job.restore_point_id = f"rp-{job_id}"
    return job


async def test_job_records_outcome_and_jobs_statistics_round_trip(storage: Storage) -> None:
    """A result's job, reconciled, contact time and unknown flag, and the session's outcome and jobs_*, read back as saved."""
    session = a_session("s-1")
    session.outcome = pb.SESSION_STATE_RUNNING
    live = LiveSession(session)
    await storage.insert_session(live.snapshot())
    live.record(0, pb.DELIVERY_RECEIVED, "OK", 1_000, job=a_job("j-0", pb.JOB_STATE_RUNNING))
    live.record(1, pb.DELIVERY_NOT_RECEIVED, "DEADLINE_EXCEEDED: late", 2_000)
    live.finish()
    await storage.save_progress(live.take_progress())
    assert await storage.get_session("s-1") == live.session
    result = live.session.computer_results[1]
    result.delivery, result.reconciled = pb.DELIVERY_RECEIVED, True
    result.job.CopyFrom(a_job("j-1", pb.JOB_STATE_SUCCEEDED))
    live.session.computer_results[0].job_unknown = True
    live.session.statistics.jobs_succeeded, live.session.statistics.jobs_unknown = 1, 1
    live.session.outcome = pb.SESSION_STATE_WARNING
    live.session.outcome_time.FromNanoseconds(1_800_000_000_000_000_000)
    live.dirty.extend([0, 1])
    await storage.save_progress(live.take_progress())
    assert await storage.get_session("s-1") == live.session


async def test_sessions_whose_outcome_runs_are_listed_for_resuming(storage: Storage) -> None:
    """list_followed_sessions returns, oldest first with results, the sessions whose outcome is RUNNING, interrupted ones too."""
    for session_id, outcome in (
        ("s-a", pb.SESSION_STATE_RUNNING),
        ("s-b", pb.SESSION_STATE_SUCCESS),
        ("s-c", pb.SESSION_STATE_RUNNING),
        ("s-old", pb.SESSION_STATE_UNSPECIFIED),
    ):
        session = a_session(session_id)
        session.outcome = outcome
        await storage.insert_session(session)
    await storage.fail_interrupted_sessions()
    followed = await storage.list_followed_sessions()
    assert [s.id for s in followed] == ["s-a", "s-c"]
    assert all(len(s.computer_results) == 3 for s in followed)


async def test_followed_sessions_nobody_follows_are_claimed_once(storage: Storage) -> None:
    """claim_followed_sessions gives the caller, oldest first with results, the delivered sessions whose outcome runs and whose owner is gone; never its own, a delivering one or a final one, and none twice."""
    await storage.renew_lease("r-me", "127.0.0.1:1", 30)
    for session_id, owner, state, outcome in (
        ("s-gone", "r-dead", pb.SESSION_STATE_WARNING, pb.SESSION_STATE_RUNNING),
        ("s-mine", "r-me", pb.SESSION_STATE_SUCCESS, pb.SESSION_STATE_RUNNING),
        ("s-delivering", "r-dead", pb.SESSION_STATE_RUNNING, pb.SESSION_STATE_RUNNING),
        ("s-done", "r-dead", pb.SESSION_STATE_SUCCESS, pb.SESSION_STATE_FAILED),
        ("s-old", "", pb.SESSION_STATE_SUCCESS, pb.SESSION_STATE_UNSPECIFIED),
        ("s-unowned", "", pb.SESSION_STATE_FAILED, pb.SESSION_STATE_RUNNING),
    ):
        session = a_session(session_id)
        session.state, session.outcome = state, outcome
        await storage.insert_session(session, owner=owner)
    claimed = await storage.claim_followed_sessions("r-me")
    assert [s.id for s in claimed] == ["s-gone", "s-unowned"]
    assert claimed[0] == await storage.get_session("s-gone")
    assert all(len(s.computer_results) == 3 for s in claimed)
    assert await storage.claim_followed_sessions("r-me") == []


async def test_job_ends_update_computer_statuses(storage: Storage) -> None:
    """Ends fold into one status per policy and computer: failures in a row, last success, counted once, never older over newer."""
    live = LiveSession(a_session("s-1"))
    await storage.insert_session(live.snapshot())
    computer = live.session.computer_results[0].computer
    other = live.session.computer_results[1].computer

    async def ends(*items: tuple[pb.Computer, pb.Job]) -> None:
        live.job_ends.extend(JobEnd("p", c, job, 1_700_000_100_000_000_000) for c, job in items)
        await storage.save_progress(live.take_progress())

    await ends((computer, a_job("j-1", pb.JOB_STATE_SUCCEEDED, 100)))
    await ends((computer, a_job("j-2", pb.JOB_STATE_FAILED, 200)), (other, pb.Job()))
    await ends((computer, a_job("j-2", pb.JOB_STATE_FAILED, 200)))  # seen twice: once
    await ends((computer, a_job("j-0", pb.JOB_STATE_SUCCEEDED, 50)))  # older: ignored
    [first, second] = await storage.list_computer_statuses("", ("", ""), 10)
    assert first.computer == computer and first.policy_id == "p"
    assert first.last_job.id == "j-2" and first.consecutive_failures == 1
    assert first.last_restore_point_id == "rp-j-1"
    assert first.last_success_time.ToSeconds() == 160
    assert first.last_contact_time.ToNanoseconds() == 1_700_000_100_000_000_000
    assert second.computer == other and not second.last_job.id
    assert second.consecutive_failures == 1
    await ends((computer, a_job("j-3", pb.JOB_STATE_SUCCEEDED, 300)))
    [again] = await storage.list_computer_statuses("p", ("", ""), 1)
    assert again.consecutive_failures == 0 and again.last_restore_point_id == "rp-j-3"
    after = await storage.list_computer_statuses("p", ("p", computer.address), 10)
    assert [s.computer.address for s in after] == [other.address]
    assert await storage.list_computer_statuses("q", ("", ""), 10) == []


async def test_one_batch_folds_a_computers_ends_in_their_order(storage: Storage) -> None:
    """Several ends of one computer in one progress batch fold as they would one batch each: the duplicate counted once, the older one ignored."""
    live = LiveSession(a_session("s-1"))
    await storage.insert_session(live.snapshot())
    computer, other = (result.computer for result in live.session.computer_results[:2])
    jobs = [
        (computer, a_job("j-1", pb.JOB_STATE_SUCCEEDED, 100)),
        (other, a_job("k-1", pb.JOB_STATE_FAILED, 100)),
        (computer, a_job("j-2", pb.JOB_STATE_FAILED, 200)),
        (computer, a_job("j-2", pb.JOB_STATE_FAILED, 200)),
        (computer, a_job("j-0", pb.JOB_STATE_SUCCEEDED, 50)),
    ]
    live.job_ends.extend(JobEnd("p", c, job, 1_700_000_100_000_000_000) for c, job in jobs)
    await storage.save_progress(live.take_progress())
    [first, second] = await storage.list_computer_statuses("p", ("", ""), 10)
    assert (first.computer, first.last_job.id, first.consecutive_failures) == (computer, "j-2", 1)
    assert first.last_restore_point_id == "rp-j-1"
    assert (second.computer, second.last_job.id, second.consecutive_failures) == (other, "k-1", 1)


# Replicas


async def test_leases_name_the_live_replicas_until_they_end_or_run_out(storage: Storage) -> None:
    """live_replicas lists each replica whose lease holds, in id order, until it is ended or runs out."""
    await storage.renew_lease("r-b", "127.0.0.1:2", 30)
    await storage.renew_lease("r-a", "127.0.0.1:1", 30)
    await storage.renew_lease("r-c", "127.0.0.1:3", 0.05)
    await asyncio.sleep(0.1)
    assert await storage.live_replicas() == ["r-a", "r-b"]
    await storage.end_lease("r-a")
    await storage.renew_lease("r-b", "127.0.0.1:2", 30)
    assert await storage.live_replicas() == ["r-b"]


async def test_the_sweep_spares_the_callers_sessions(storage: Storage) -> None:
    """fail_interrupted_sessions(replica_id) leaves that replica's running sessions alone and fails the rest."""
    await storage.insert_session(a_session("mine"), owner="r-me")
    await storage.insert_session(a_session("theirs"), owner="r-gone")
    assert await storage.fail_interrupted_sessions("r-me") == ["theirs"]
    assert (await storage.get_session("mine")).state == pb.SESSION_STATE_RUNNING


async def test_a_lone_storage_holds_the_leadership(storage: Storage) -> None:
    """With no other replica, hold_leadership is true, and stays true when asked again."""
    assert await storage.hold_leadership()
    assert await storage.hold_leadership()


# Computer shares


async def test_shares_are_assigned_polled_written_and_read_back_by_position(storage: Storage) -> None:
    """A share assigned to a replica is what it polls; the rows it writes leave the poll and are read back among the delivered positions; the header is left alone."""
    await storage.insert_session(a_session("shared", computers=4), owner="r-me")
    await storage.assign_shares("shared", {"r-b": [1, 3]})
    assert await storage.pending_shares("shared") == {"": [0, 2], "r-b": [1, 3]}
    assert await storage.assigned_shares("r-b") == {"shared": [1, 3]}
    assert await storage.assigned_shares("r-me") == {}
    live = LiveSession(await storage.get_session("shared"))
    live.record(1, pb.DELIVERY_RECEIVED, "OK: started", 5, job_id="j1")
    took = await storage.save_share("shared", live.take_progress().results)
    assert took >= 0
    assert await storage.assigned_shares("r-b") == {"shared": [3]}
    delivered = await storage.delivered_results("shared", [0, 1, 2, 3])
    assert [(c.position, c.delivery, c.job_id) for c in delivered] == [
        (1, pb.DELIVERY_RECEIVED, "j1")
    ]
    stored = await storage.get_session("shared")
    assert stored.computer_results[1].detail == "OK: started"
    assert stored.statistics.pending == 4  # the header is the owner's to compute
    with pytest.raises(NotFound):
        await storage.assign_shares("absent", {"r-b": [0]})


async def test_a_watchers_poll_reads_the_header_then_the_rows_delivered(storage: Storage) -> None:
    """header_and_delivered answers as get_session_header and delivered_results do (the rows written by the owner and by a share alike); NotFound for an unknown id."""
    await storage.insert_session(a_session("polled", computers=4), owner="r-me")
    await storage.assign_shares("polled", {"r-b": [1, 3]})
    owner = LiveSession(await storage.get_session("polled"))
    share = LiveSession(await storage.get_session("polled"))
    owner.record(0, pb.DELIVERY_RECEIVED, "OK: started", 5, job_id="j0")
    share.record(3, pb.DELIVERY_NOT_RECEIVED, "unreachable", 7)
    await storage.save_progress(owner.take_progress())
    await storage.save_share("polled", share.take_progress().results)
    header, delivered = await storage.header_and_delivered("polled", [0, 1, 2, 3])
    assert header == await storage.get_session_header("polled")
    assert header.statistics.received == 1 and not header.computer_results
    assert delivered == await storage.delivered_results("polled", [0, 1, 2, 3])
    assert [(c.position, c.delivery) for c in delivered] == [
        (0, pb.DELIVERY_RECEIVED),
        (3, pb.DELIVERY_NOT_RECEIVED),
    ]
    assert (await storage.header_and_delivered("polled", [1, 2]))[1] == []
    assert (await storage.header_and_delivered("polled", []))[1] == []
    with pytest.raises(NotFound):
        await storage.header_and_delivered("absent", [0])


async def test_the_share_members_always_include_the_caller(storage: Storage) -> None:
    """share_members names the caller even before its lease is stored, in id order with any other live replica."""
    members = await storage.share_members("r-m")
    assert "r-m" in members and members == sorted(members)


async def test_a_finished_sessions_pending_rows_are_not_polled(storage: Storage) -> None:
    """Rows still pending in a session that is no longer RUNNING are nobody's to send."""
    session = a_session("over", computers=2)
    await storage.insert_session(session, owner="r-me")
    await storage.assign_shares("over", {"r-b": [0, 1]})
    await storage.fail_interrupted_sessions("r-other")
    assert await storage.assigned_shares("r-b") == {}
    assert await storage.claim_shares("r-other") == {}


async def test_a_followed_share_writes_its_rows_statuses_and_done_marks(storage: Storage) -> None:
    """save_followed writes a share's rows and the statuses its job ends change and marks rows done, in one unit, leaving the header; followed_results reads them back with the marks."""
    await storage.insert_session(a_session("followed", computers=3), owner="r-me")
    await storage.assign_shares("followed", {"r-b": [1, 2]})
    assert await storage.shared_positions("followed") == [1, 2]
    live = LiveSession(await storage.get_session("followed"))
    job = a_job("j-1", pb.JOB_STATE_RUNNING, 100)
    live.record(1, pb.DELIVERY_RECEIVED, "OK: started", 5, job=job)
    await storage.save_share("followed", live.take_progress().results)
    ended = a_job("j-1", pb.JOB_STATE_SUCCEEDED, 100)
    live.session.computer_results[1].job.CopyFrom(ended)
    live.dirty.append(1)
    computer = live.session.computer_results[1].computer
    end = JobEnd("p", computer, ended, 1_700_000_100_000_000_000)
    took = await storage.save_followed("followed", live.take_progress().results, [end], [1])
    assert took >= 0
    [(first, done), (second, not_done)] = await storage.followed_results("followed", [2, 1])
    assert (first.position, done, second.position, not_done) == (1, True, 2, False)
    assert pb.Job.FromString(first.job).state == pb.JOB_STATE_SUCCEEDED
    [status] = await storage.list_computer_statuses("p", ("", ""), 10)
    assert status.computer.address == computer.address and status.last_job.id == "j-1"
    assert (await storage.get_session("followed")).statistics.pending == 3
    # A pending row, or one done, is no dead replica's followed share to claim.
    assert await storage.claim_followed_shares("r-c") == {}
    with pytest.raises(NotFound):
        await storage.shared_positions("absent")


async def a_settled_session(storage: Storage, session_id: str, outcome: pb.SessionState) -> LiveSession:
    """Two computers received: c0's job succeeded, c1's lost (unknown); the header stored
    with `outcome` (WARNING: final, or RUNNING) and those counts."""
    live = LiveSession(a_session(session_id, computers=2))
    await storage.insert_session(live.snapshot(), owner="r-me")
    live.record(0, pb.DELIVERY_RECEIVED, "OK", job=a_job("j-0", pb.JOB_STATE_SUCCEEDED))
    live.record(1, pb.DELIVERY_RECEIVED, "OK", job=a_job("j-1", pb.JOB_STATE_RUNNING))
    live.finish()
    live.session.computer_results[1].job_unknown = True
    live.session.statistics.jobs_succeeded, live.session.statistics.jobs_unknown = 1, 1
    live.session.outcome = outcome
    if outcome != pb.SESSION_STATE_RUNNING:
        live.session.outcome_time.FromNanoseconds(1_750_000_000_000_000_000)
    await storage.save_progress(live.take_progress())
    return live


def answered(live: LiveSession) -> tuple[ResultChange, ...]:
    """c1's row once its agent answered late: its job succeeded."""
    result = live.session.computer_results[1]
    result.job.CopyFrom(a_job("j-1", pb.JOB_STATE_SUCCEEDED))
    result.job_unknown = False
    live.dirty.append(1)
    return live.take_progress().results


async def test_a_late_followed_row_corrects_a_final_outcome_from_the_rows_once(storage: Storage) -> None:
    """correct_followed writes a row whose job was lost and, the stored outcome being final, recounts the header from every row: WARNING with one unknown becomes SUCCESS with two succeeded, once; while the outcome is RUNNING it writes the row only."""
    live = await a_settled_session(storage, "late", pb.SESSION_STATE_WARNING)
    late = answered(live)
    correction = await storage.correct_followed("late", late, [], [1])
    assert correction is not None
    before, after = correction.before, correction.after
    assert (before.outcome, before.statistics.jobs_unknown) == (pb.SESSION_STATE_WARNING, 1)
    assert after.outcome == pb.SESSION_STATE_SUCCESS
    assert (after.statistics.jobs_succeeded, after.statistics.jobs_unknown) == (2, 0)
    assert after.outcome_time.ToNanoseconds() > before.outcome_time.ToNanoseconds()
    header = await storage.get_session_header("late")
    assert (header.outcome, header.statistics) == (after.outcome, after.statistics)
    assert header.outcome_time == after.outcome_time
    assert await storage.correct_followed("late", late, [], [1]) is None  # counted once
    running = await a_settled_session(storage, "running", pb.SESSION_STATE_RUNNING)
    assert await storage.correct_followed("running", answered(running), [], [1]) is None
    stored = await storage.get_session("running")
    assert (stored.outcome, stored.statistics.jobs_unknown) == (pb.SESSION_STATE_RUNNING, 1)
    assert not stored.computer_results[1].job_unknown  # the row is written
    with pytest.raises(NotFound):
        await storage.correct_followed("absent", [], [], [])


async def test_a_late_reconciliation_corrects_the_delivery_counts_state_and_warning(storage: Storage) -> None:
    """correct_followed of a computer recorded not received whose agent later showed the job (reconciled, succeeded) recounts the delivery counts, the state, the reconciled warning and the outcome as one server does."""
    live = LiveSession(a_session("reconciled", computers=2))
    await storage.insert_session(live.snapshot(), owner="r-me")
    live.record(0, pb.DELIVERY_RECEIVED, "OK", job=a_job("j-0", pb.JOB_STATE_SUCCEEDED))
    live.record(1, pb.DELIVERY_NOT_RECEIVED, "DEADLINE_EXCEEDED: no answer")
    live.finish()
    live.session.statistics.jobs_succeeded = 1
    live.session.outcome = pb.SESSION_STATE_WARNING
    live.session.outcome_time.FromNanoseconds(1_750_000_000_000_000_000)
    await storage.save_progress(live.take_progress())
    result = live.session.computer_results[1]
    result.delivery, result.reconciled = pb.DELIVERY_RECEIVED, True
    result.job.CopyFrom(a_job("j-1", pb.JOB_STATE_SUCCEEDED))
    live.dirty.append(1)
    correction = await storage.correct_followed("reconciled", live.take_progress().results, [], [1])
    assert correction is not None
    after = correction.after
    assert (after.statistics.received, after.statistics.not_received) == (2, 0)
    assert (after.state, after.outcome) == (pb.SESSION_STATE_SUCCESS, pb.SESSION_STATE_SUCCESS)
    assert [w for w in after.warnings if w.startswith("reconciled: 1 computer(s)")]
    header = await storage.get_session_header("reconciled")
    assert (header.state, header.statistics, list(header.warnings)) == (
        after.state,
        after.statistics,
        list(after.warnings),
    )


async def test_a_shared_sessions_final_batch_is_recounted_from_its_rows(storage: Storage) -> None:
    """save_shared_progress of the first final batch recounts it from the rows (another replica's late row included) and returns that correction against the batch; a later stale batch writes nothing over the stored final header; before any final outcome it is save_progress."""
    live = await a_settled_session(storage, "shared", pb.SESSION_STATE_RUNNING)
    other = LiveSession(await storage.get_session("shared"))
    await storage.save_followed("shared", answered(other), [], [1])  # in the owner's back
    assert await storage.save_shared_progress(live.take_progress()) == (
        None,
        (pb.SESSION_STATE_RUNNING, 0),
    )
    live.session.outcome = pb.SESSION_STATE_WARNING
    live.session.outcome_time.FromNanoseconds(1_750_000_000_000_000_000)
    correction, stored = await storage.save_shared_progress(live.take_progress())
    assert correction is not None
    assert correction.before.outcome == pb.SESSION_STATE_WARNING
    assert correction.before.statistics.jobs_unknown == 1
    assert correction.after.outcome == pb.SESSION_STATE_SUCCESS
    assert correction.after.statistics.jobs_succeeded == 2
    assert stored == (pb.SESSION_STATE_SUCCESS, correction.after.outcome_time.ToNanoseconds())
    # The owner's record in memory still says WARNING, one unknown: its next batch.
    again, still = await storage.save_shared_progress(live.take_progress())
    assert (again, still) == (None, stored)
    header = await storage.get_session_header("shared")
    assert (header.outcome, header.statistics.jobs_succeeded) == (pb.SESSION_STATE_SUCCESS, 2)
    assert header.statistics.jobs_unknown == 0


async def test_a_stop_finds_the_computers_still_pending_in_earlier_starts_of_its_policy(storage: Storage) -> None:
    """pending_earlier_starts names, for a stop, the pending rows of the RUNNING starts of its policy stored before it, not those delivered, of a finished start, of another policy, or of a later start."""
    await storage.insert_session(a_session("s-early", computers=3), owner="r-me")
    await storage.assign_shares("s-early", {"r-b": [1, 2]})
    live = LiveSession(await storage.get_session("s-early"))
    live.record(1, pb.DELIVERY_RECEIVED, "OK: started", 5, job_id="j1")
    await storage.save_share("s-early", live.take_progress().results)
    finished = a_session("s-done", computers=2)
    finished.state = pb.SESSION_STATE_WARNING
    await storage.insert_session(finished, owner="r-me")
    await storage.insert_session(a_session("s-other", "q", computers=2), owner="r-me")
    halt = a_session("halt", computers=3)
    halt.action = pb.SESSION_ACTION_STOP
    await storage.insert_session(halt, owner="r-me")
    await storage.insert_session(a_session("s-later", computers=3), owner="r-me")
    assert await storage.pending_earlier_starts("halt") == [
        ("s-early", 0, "127.0.0.1:1000"),
        ("s-early", 2, "127.0.0.1:1002"),
    ]
    assert await storage.pending_earlier_starts("s-early") == []
    with pytest.raises(NotFound):
        await storage.pending_earlier_starts("absent")


# Errors


async def test_a_full_disk_refuses_writes_and_loses_nothing(fillable: Fillable) -> None:
    """On a full disk every kind of write is ResourceExhausted, what was stored reads back, and writes work again once there is room."""
    storage = fillable.storage
    await storage.insert_group(a_group("web"))
    await storage.insert_policy(a_policy("nightly", "web"), accept)
    live = LiveSession(a_session("s-1", "nightly", computers=200))
    await storage.insert_session(live.snapshot())
    fillable.fill()
    with pytest.raises(ResourceExhausted, match="disk is full"):
        for index in range(200):
            await storage.insert_policy(a_policy(f"more-{index}" + "x" * 2000), accept)
    with pytest.raises(ResourceExhausted):
        for index in range(200):
            await storage.insert_session(a_session(f"s-more-{index}", computers=50))
    for position in range(200):
        live.record(position, pb.DELIVERY_RECEIVED, "OK: " + "d" * 500)
    progress = live.take_progress()
    with pytest.raises(ResourceExhausted):
        await storage.save_progress(progress)
    assert await storage.get_policy_and_groups("nightly") == (
        a_policy("nightly", "web"),
        {"web": a_group("web")},
    )
    stored = await storage.get_session("s-1")
    assert stored.statistics.pending == 200
    fillable.free()
    await storage.save_progress(progress)
    assert (await storage.get_session("s-1")).statistics.received == 200
    await storage.insert_policy(a_policy("weekly"), accept)

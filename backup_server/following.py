"""Following jobs to their end: pull only, one WatchJob stream per followed job.

    follow     a job a session started, found already running, or stopped: WatchJob.
               When the stream breaks (agent restart, network), reconnect with backoff
               and learn where the job is from the agent's job list (ListJobs by the
               job's session); an agent silent for longer than `lost_after` makes the
               job unknown, and it keeps being asked (at least once a minute) for another
               `lost_after` (a minute at least), so an agent that answers later corrects
               the record.
    reconcile  a computer whose command ran out of time (it may have arrived): ask
               ListJobs(session) on a fresh connection, retrying for RECONCILE_FOR; a job
               found is recorded (`reconciled`) and followed. After that minute the
               computer no longer holds the outcome, but is still asked within
               `lost_after`.

An open stream counts as contact: the channel's keepalive pings notice a dead peer and
break it. Everything learned goes to a `Recorder` (the session's record in memory);
nothing here touches storage, and nothing is guessed: every correction is what the
agent's own job list or stream said.
"""

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from google.protobuf.message import DecodeError

from backup.v1 import agent_control_pb2 as agent_pb
from backup.v1 import resources_pb2 as pb

from .fanout import AgentCallError
from .outcomes import ended_job

log = logging.getLogger("backup_server.following")

# How long a computer whose command timed out holds the outcome while it is asked.
RECONCILE_FOR = 60.0
FIRST_RETRY = 0.5
# The longest wait between two tries: an agent that answers again is heard within it.
LONGEST_RETRY = 30.0
AGENT_LOST_AFTER = 3600.0
# The codes of a call that did not reach the agent (fanout's NOT_RECEIVED_CODES) or was
# dropped on the way: ask again.
UNANSWERED = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"})
AGENT_LOST_AFTER_RANGE = (1.0, 7 * 24 * 3600.0)


@dataclass(frozen=True)
class JobKey:
    """Which session's computer a followed job belongs to."""

    session_id: str
    position: int


@runtime_checkable
class AgentStreams(Protocol):
    """How following reaches an agent: a unary call, and a server stream."""

    async def call(self, address: str, method: str, request: bytes, deadline: float) -> bytes:
        """As `fanout.AgentTransport.call`."""
        ...

    def stream(self, address: str, method: str, request: bytes) -> AsyncIterator[bytes]:
        """The replies of a server-streaming call, as bytes; AgentCallError if not OK."""
        ...


class Recorder(Protocol):
    """Where following reports what it learns (all on the event loop)."""

    def job_seen(self, key: JobKey, job: pb.Job) -> None:
        """The agent answered with the job as it now is (its contact time is now)."""

    def job_lost(self, key: JobKey, why: str) -> None:
        """The job's end cannot be learned for now: it counts as unknown."""

    def reconciled(self, key: JobKey, job: pb.Job) -> None:
        """A computer recorded not received had in fact started this job."""

    def reconcile_settled(self, key: JobKey) -> None:
        """The computer no longer holds the outcome (no job found, or time is up)."""


def check_lost_after(seconds: float) -> float:
    """`--agent-lost-after` within 1 s to 7 days; ValueError naming the flag otherwise."""
    low, high = AGENT_LOST_AFTER_RANGE
    if not low <= seconds <= high:
        raise ValueError(
            f"--agent-lost-after must be from {low:.0f} s to {high:.0f} s (7 days), not {seconds!r}"
        )
    return seconds


class Follower:
    """Follows jobs and reconciles deliveries for every session; `count` is how many."""

    def __init__(
        self,
        agents: AgentStreams,
        recorder: Recorder,
        deadline: float,
        lost_after: float = AGENT_LOST_AFTER,
        clock: Callable[[], float] = time.monotonic,
        on_idle: Callable[[str], None] | None = None,
        reconcile_for: float | None = None,
        on_ended: Callable[[JobKey], None] | None = None,
    ) -> None:
        """`on_idle(session_id)` is called when a session has nothing followed any more,
        `on_ended(key)` when one job or computer is followed no more (not at `close`)."""
        self._on_ended = on_ended
        self._reconcile_for = RECONCILE_FOR if reconcile_for is None else reconcile_for
        self._agents = agents
        self._on_idle = on_idle
        self._per_session: dict[str, int] = {}
        self._recorder = recorder
        self._deadline = deadline
        self._lost_after = lost_after
        self._clock = clock
        self._tasks: dict[JobKey, asyncio.Task[None]] = {}
        self._closing = False

    @property
    def count(self) -> int:
        """Jobs followed or computers being reconciled right now."""
        return len(self._tasks)

    def following(self, session_id: str) -> bool:
        """Whether anything of that session is still followed or reconciled."""
        return session_id in self._per_session

    def positions(self, session_id: str) -> list[int]:
        """The positions of the session followed or reconciled here now, in order."""
        return sorted(key.position for key in self._tasks if key.session_id == session_id)

    def follow(
        self,
        key: JobKey,
        address: str,
        job: pb.Job,
        after: float = 0.0,
        gate: asyncio.Event | None = None,
    ) -> None:
        """Follows `job` on the agent at `address` until it ends (or long after it is lost),
        opening its stream `after` seconds from now, or from when `gate` is set."""
        lost = self._recorder.job_lost
        work = self._follow(key, address, job, after, gate)
        self._start(key, self._settling(key, work, lost))

    def reconcile(
        self, key: JobKey, address: str, policy_id: str, gate: asyncio.Event | None = None
    ) -> None:
        """Asks the agent (once `gate` is set) whether session `key.session_id` started a
        job of the policy."""
        settled = self._recorder.reconcile_settled
        work = self._reconcile(key, address, policy_id, gate)
        self._start(key, self._settling(key, work, lambda key, _why: settled(key)))

    async def _settling(
        self,
        key: JobKey,
        work: Coroutine[Any, Any, None],
        settle: Callable[[JobKey, str], None],
    ) -> None:
        """Runs `work`; should it fail (a bug, not an agent's error: those it handles), the
        computer is settled (its job unknown, or its reconciliation over), so the session's
        outcome can still become final instead of staying RUNNING for good."""
        try:
            await work
        except Exception as error:  # noqa: BLE001 - whatever it was, the outcome must settle
            log.error("following %s failed", key, exc_info=True)
            settle(key, f"following this job failed on the server: {error!r}")

    def _start(self, key: JobKey, work: Coroutine[Any, Any, None]) -> None:
        previous = self._tasks.pop(key, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.ensure_future(work)
        self._tasks[key] = task
        self._per_session[key.session_id] = self._per_session.get(key.session_id, 0) + 1
        task.add_done_callback(lambda done: self._ended(key, done))

    def _ended(self, key: JobKey, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled() and task.exception() is not None:
            # Only an error of the settling itself gets here (`_settling` catches the rest).
            log.error("following %s failed", key, exc_info=task.exception())
        if self._on_ended is not None and not self._closing and key not in self._tasks:
            self._on_ended(key)
        left = self._per_session[key.session_id] - 1
        if left:
            self._per_session[key.session_id] = left
        else:
            del self._per_session[key.session_id]
            if self._on_idle is not None and not self._closing:
                self._on_idle(key.session_id)

    async def _list_jobs(self, address: str, policy_id: str, session_id: str) -> list[pb.Job]:
        request = agent_pb.ListJobsRequest(policy_id=policy_id, session_id=session_id)
        reply = await self._agents.call(
            address, "ListJobs", request.SerializeToString(), self._deadline
        )
        try:
            return list(agent_pb.ListJobsResponse.FromString(reply).jobs)
        except DecodeError:
            raise AgentCallError("DATA_LOSS", "the agent's job list could not be read") from None

    async def _watch(self, key: JobKey, address: str, job_id: str, retry: "_Retry") -> bool:
        """Records every snapshot; True once the job has ended. The agent counts as heard
        until the stream closes, once it has sent its first snapshot."""
        request = agent_pb.WatchJobRequest(job_id=job_id).SerializeToString()
        established = False
        try:
            async for data in self._agents.stream(address, "WatchJob", request):
                if not established:
                    established = True
                    retry.reset()
                retry.heard()
                try:
                    job = pb.Job.FromString(data)
                except DecodeError:
                    raise AgentCallError("DATA_LOSS", "a snapshot could not be read") from None
                self._recorder.job_seen(key, job)
                if ended_job(job):
                    return True
        finally:
            if established:
                retry.heard()
        return False

    async def _follow(
        self,
        key: JobKey,
        address: str,
        job: pb.Job,
        after: float = 0.0,
        gate: asyncio.Event | None = None,
    ) -> None:
        if gate is not None:
            await gate.wait()
        if after:
            await asyncio.sleep(after)
        retry = _Retry(self._clock)
        lost = False
        while True:
            try:
                if await self._watch(key, address, job.id, retry):
                    return
            except AgentCallError as error:
                if error.code == "NOT_FOUND":
                    self._recorder.job_lost(key, "the agent no longer knows this job")
                    return
            # Broken, or closed without the end: the agent's job list says where it is.
            try:
                listed = await self._list_jobs(address, job.policy_id, job.session_id)
            except AgentCallError:
                pass
            else:
                found = next((candidate for candidate in listed if candidate.id == job.id), None)
                if found is None:
                    self._recorder.job_lost(key, "the agent's job list no longer has this job")
                    return
                lost = False
                retry.heard()
                self._recorder.job_seen(key, found)
                if ended_job(found):
                    return
                # Still running: watch again, after a wait that grows if watching keeps
                # failing (an agent without WatchJob is then polled every LONGEST_RETRY).
                await asyncio.sleep(retry.next_wait())
                continue
            silent = retry.silent_for()
            if not lost and silent >= self._lost_after:
                lost = True
                self._recorder.job_lost(
                    key, f"the agent has not answered for {silent:.0f} s (--agent-lost-after)"
                )
            if silent >= self._lost_after + max(self._lost_after, RECONCILE_FOR):
                log.info("gave up following %s at %s: silent for %.0f s", key, address, silent)
                return
            wait = retry.next_wait()
            if not lost:
                wait = min(wait, max(self._lost_after - silent, 0.0))
            await asyncio.sleep(wait)

    async def _reconcile(
        self, key: JobKey, address: str, policy_id: str, gate: asyncio.Event | None = None
    ) -> None:
        if gate is not None:
            await gate.wait()
        retry = _Retry(self._clock)
        settled = False
        while True:
            try:
                listed = await self._list_jobs(address, policy_id, key.session_id)
            except AgentCallError as error:
                if error.code not in UNANSWERED:
                    # It answered, but cannot say (an older agent): nothing to correct.
                    self._recorder.reconcile_settled(key)
                    return
            else:
                if not listed:
                    self._recorder.reconcile_settled(key)
                    return
                job = listed[0]
                self._recorder.reconciled(key, job)
                if not ended_job(job):
                    await self._follow(key, address, job)
                return
            silent = retry.silent_for()
            if not settled and silent >= self._reconcile_for:
                settled = True
                self._recorder.reconcile_settled(key)
            if silent >= max(self._lost_after, self._reconcile_for):
                return
            wait = retry.next_wait()
            if not settled:
                wait = min(wait, max(self._reconcile_for - silent, 0.0))
            await asyncio.sleep(wait)

    def stop(self, key: JobKey) -> None:
        """Stops following one job or reconciling one computer (another replica does now)."""
        task = self._tasks.get(key)
        if task is not None:
            task.cancel()

    def stop_session(self, session_id: str) -> None:
        """Stops following every job of a session (its outcome needs them no more)."""
        for key, task in list(self._tasks.items()):
            if key.session_id == session_id:
                task.cancel()

    async def close(self) -> None:
        """Stops following (at shutdown: the next start, or a live replica, resumes from the
        stored record)."""
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Retry:
    """Backoff with jitter, and how long the agent has been silent."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last_heard = clock()
        self._wait = FIRST_RETRY

    def heard(self) -> None:
        self._last_heard = self._clock()

    def reset(self) -> None:
        self._wait = FIRST_RETRY

    def silent_for(self) -> float:
        return self._clock() - self._last_heard

    def next_wait(self) -> float:
        wait = self._wait * random.uniform(0.8, 1.2)
        self._wait = min(self._wait * 2, LONGEST_RETRY)
        return wait

"""Simulated jobs for the fleet simulator: in memory, each with a duration and an outcome.

An agent's outcome says how each of its jobs ends:

    succeed   SUCCEEDED after its duration (no restore point: nothing is written)
    fail      FAILED after its duration, with an error
    hang      never ends by itself (only a stop ends it)
    restart   half-way through, the agent restarts: it stops serving for a while, and its
              running jobs are FAILED as a real agent's are after a crash
    partition a quarter of the way through, the agent stops answering for a while (the
              network between it and the server is cut) while the job goes on and
              SUCCEEDS at its end

A job's duration is drawn between the fleet's shortest and longest (the same seed gives
the same durations). Jobs end lazily: a job whose time is up is settled on the next call
or by its watcher's timer, so thousands of idle jobs cost no timer each unless watched.
Idempotency and filters are the real agent's: a repeated StartJob of a session returns
the job it started, ListJobs filters by policy and session.
"""

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from backup.errors import NotFound
from backup.ids import new_job_id
from backup.v1 import resources_pb2 as pb
from backup.waits import wait_event

from .jobs import jobs_newest_first, matching
from .watching import snapshots

OUTCOMES = ("succeed", "fail", "hang", "restart", "partition")
JOBS_KEPT = 1000
FAILURE = "simulated failure: the source path does not exist"
INTERRUPTED = "the agent stopped while this job was running"


@dataclass
class _Planned:
    job: pb.Job
    end_ns: int  # 0: never ends by itself
    state: pb.JobState
    error: str = ""
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class SimulatedJobs:
    """One simulated agent's jobs; `restart` is called half-way through a restart job."""

    def __init__(
        self,
        job_seconds: tuple[float, float],
        outcome: str = "succeed",
        rng: random.Random | None = None,
        restart: Callable[[], None] | None = None,
        partition: Callable[[], None] | None = None,
    ) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        self.outcome = outcome
        self._seconds = job_seconds
        self._rng = rng or random.Random(0)
        self.restart = restart
        self.partition = partition
        self._running: dict[str, _Planned] = {}
        self._finished: dict[str, pb.Job] = {}
        self._started_by: dict[tuple[str, str], str] = {}

    def _settle(self) -> None:
        """Jobs whose time is up have ended (checked on each call: no timer per job)."""
        if not self._running:
            return
        now = time.time_ns()
        for planned in list(self._running.values()):
            if planned.end_ns and planned.end_ns <= now:
                self._end(planned, planned.state, planned.error, planned.end_ns)

    def _end(self, planned: _Planned, state: pb.JobState, error: str, end_ns: int) -> None:
        job = planned.job
        job.state = state
        job.error = error
        job.end_time.FromNanoseconds(end_ns)
        del self._running[job.policy_id]
        self._finished[job.id] = job
        planned.ended.set()
        if len(self._finished) > JOBS_KEPT:
            oldest = self._finished.pop(next(iter(self._finished)))
            self._started_by.pop((oldest.session_id, oldest.policy_id), None)

    def start(self, policy: pb.BackupPolicy, session_id: str) -> tuple[pb.Job, bool]:
        self._settle()
        repeated = self._started_by.get((session_id, policy.id)) if session_id else None
        if repeated is not None:
            job = self.get(repeated)
            return job, job.state == pb.JOB_STATE_RUNNING
        running = self._running.get(policy.id)
        if running is not None:
            return running.job, True
        job = pb.Job(
            id=new_job_id(), policy_id=policy.id, session_id=session_id, state=pb.JOB_STATE_RUNNING
        )
        now = time.time_ns()
        job.start_time.FromNanoseconds(now)
        duration_ns = int(self._rng.uniform(*self._seconds) * 1e9)
        if self.outcome == "hang":
            planned = _Planned(job, 0, pb.JOB_STATE_RUNNING)
        elif self.outcome == "fail":
            planned = _Planned(job, now + duration_ns, pb.JOB_STATE_FAILED, FAILURE)
        elif self.outcome == "restart":
            planned = _Planned(job, 0, pb.JOB_STATE_RUNNING)
            if self.restart is not None:
                asyncio.get_running_loop().call_later(duration_ns / 2e9, self.restart)
        else:
            planned = _Planned(job, now + duration_ns, pb.JOB_STATE_SUCCEEDED)
            if self.outcome == "partition" and self.partition is not None:
                asyncio.get_running_loop().call_later(duration_ns / 4e9, self.partition)
        self._running[policy.id] = planned
        if session_id:
            self._started_by[(session_id, policy.id)] = job.id
        return job, False

    def crash(self) -> None:
        """What a restart leaves: every running job FAILED, as a real agent's recovery does."""
        now = time.time_ns()
        for planned in list(self._running.values()):
            self._end(planned, pb.JOB_STATE_FAILED, INTERRUPTED, now)

    def stop(self, policy_id: str) -> tuple[pb.Job, bool]:
        self._settle()
        planned = self._running.get(policy_id)
        if planned is None:
            return pb.Job(), False
        self._end(planned, pb.JOB_STATE_STOPPED, "stopped on request", time.time_ns())
        return planned.job, True

    def get(self, job_id: str) -> pb.Job:
        self._settle()
        for planned in self._running.values():
            if planned.job.id == job_id:
                return planned.job
        finished = self._finished.get(job_id)
        if finished is None:
            raise NotFound(f"job {job_id!r} not found")
        return finished

    async def wait_end(self, job_id: str, at_most: float) -> None:
        # A simulated job makes no progress to report, so its watcher sleeps until the
        # job's end (or a stop or restart) rather than waking every `at_most`.
        planned = next((p for p in self._running.values() if p.job.id == job_id), None)
        if planned is None:
            return
        wait = (planned.end_ns - time.time_ns()) / 1e9 if planned.end_ns else None
        await wait_event(planned.ended, wait)

    def watch(self, job_id: str) -> AsyncIterator[pb.Job]:
        return snapshots(self, job_id)

    def list(self, policy_id: str, session_id: str = "") -> list[pb.Job]:
        self._settle()
        jobs = [planned.job for planned in self._running.values()]
        jobs.extend(self._finished.values())
        return jobs_newest_first(matching(jobs, policy_id, session_id))


def assign_outcomes(count: int, mix: dict[str, float], seed: int) -> list[str]:
    """Exactly round(count * share) agents of each outcome in `mix`, the rest succeed,
    shuffled by `seed`."""
    outcomes: list[str] = []
    for outcome, share in mix.items():
        outcomes.extend([outcome] * round(count * share))
    if len(outcomes) > count:
        raise ValueError("the outcome shares add up to more than every agent")
    outcomes.extend(["succeed"] * (count - len(outcomes)))
    random.Random(seed).shuffle(outcomes)
    return outcomes

"""Backup jobs on the agent: one per policy at a time, run in the background, stoppable.

A StartJob repeated by the same session returns the job its first call started and
starts nothing, for as long as that job is in the history (the last MAX_JOBS_KEPT jobs).
"""

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from backup.errors import NotFound
from backup.ids import new_job_id, newest_first
from backup.v1 import resources_pb2 as pb
from backup.waits import wait_event

from . import engine
from .engine import RepositoryError
from .points import BackupChain
from .specs import run_job
from .store import AgentStore
from .watching import PROGRESS_EVERY, snapshots

log = logging.getLogger("agent_stub.jobs")

MAX_JOBS_KEPT = 1000
STOPPED_ON_REQUEST = "stopped on request"
# Not the operator's doing: the agent was told to exit (SIGTERM) while the job ran.
STOPPED_BY_SHUTDOWN = "stopped: the agent shut down while this job was running"


class RunningJob:
    """A job in progress: the engine updates it from its thread, RPCs read snapshots."""

    def __init__(self, job: pb.Job) -> None:
        self._job = job
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.stop_reason = STOPPED_ON_REQUEST
        # Set on the event loop once the job has ended, for its watchers.
        self.ended = asyncio.Event()

    @property
    def id(self) -> str:
        return self._job.id

    def snapshot(self) -> pb.Job:
        with self._lock:
            copy = pb.Job()
            copy.CopyFrom(self._job)
            return copy

    def stop(self, reason: str = "") -> None:
        if reason:
            self.stop_reason = reason
        self._stop.set()

    # engine.JobControl

    def cancelled(self) -> bool:
        return self._stop.is_set()

    def sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def progress(
        self,
        bytes_total: int,
        bytes_done: int,
        files_done: int,
        bytes_read: int,
        bytes_written: int,
    ) -> None:
        with self._lock:
            self._job.bytes_total = bytes_total
            self._job.bytes_done = bytes_done
            self._job.files_done = files_done
            self._job.bytes_read = bytes_read
            self._job.bytes_written = bytes_written

    def warn(self, message: str) -> None:
        with self._lock:
            self._job.warnings.append(message)

    def end(self, state: pb.JobState, restore_point_id: str = "", error: str = "") -> pb.Job:
        with self._lock:
            self._job.state = state
            self._job.restore_point_id = restore_point_id
            self._job.error = error
            self._job.end_time.GetCurrentTime()
        return self.snapshot()


class JobRunner:
    """Starts, stops and lists the agent's jobs; finished jobs are kept in the store."""

    def __init__(
        self,
        store: AgentStore,
        name: str,
        allowed_roots: Sequence[str] = (),
        on_end: Callable[[pb.Job], None] | None = None,
    ) -> None:
        self._store = store
        self._name = name
        self._allowed_roots = tuple(allowed_roots)  # --allow-path, checked again as opened
        # Told about every job that ends (the agent's metrics).
        self._on_end = on_end
        self._running: dict[str, RunningJob] = {}
        self._finished: dict[str, pb.Job] = {}
        # (session id, policy id) -> the job that session started, for idempotent starts.
        self._started_by: dict[tuple[str, str], str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._threads = ThreadPoolExecutor(max_workers=16, thread_name_prefix="job")

    def recover(self) -> None:
        """Loads the history; a job that was running when the agent died is FAILED now,
        unless the repository holds its restore point: then it SUCCEEDED."""
        for job in jobs_newest_first(self._store.jobs())[:MAX_JOBS_KEPT]:
            if job.state == pb.JOB_STATE_RUNNING:
                self._settle_interrupted(job)
            self._remember(job)
        for policy in self._store.policies():
            engine.remove_stale_staging(Path(policy.repository))

    def _settle_interrupted(self, job: pb.Job) -> None:
        """The repository is the truth: a committed point means the job succeeded, even if
        its record could not be written (a full data dir) before the agent stopped."""
        point = self._committed_point(job)
        if point is not None:
            job.state = pb.JOB_STATE_SUCCEEDED
            job.restore_point_id = point.id
            job.files_done = point.file_count
            job.bytes_done = job.bytes_total = point.total_bytes
            job.end_time.FromNanoseconds(point.create_ns)
            log.info(
                "job %s of policy %s committed restore point %s before the agent stopped: "
                "marked SUCCEEDED",
                job.id,
                job.policy_id,
                point.id,
                extra={"session_id": job.session_id},
            )
        else:
            job.state = pb.JOB_STATE_FAILED
            job.error = "the agent stopped while this job was running"
            job.end_time.GetCurrentTime()
            log.warning(
                "job %s of policy %s was interrupted: marked FAILED",
                job.id,
                job.policy_id,
                extra={"session_id": job.session_id},
            )
        try:
            self._store.save_job(job)
        except OSError as error:
            # Known in memory all the same; the next start settles it again, the same way.
            log.error("job %s: its record could not be saved: %s", job.id, error.strerror)

    def _committed_point(self, job: pb.Job) -> engine.PointSummary | None:
        try:
            summaries = BackupChain(self._store.data_dir).summaries(job.policy_id)
        except (NotFound, RepositoryError, OSError):
            return None
        return next((point for _, point in summaries if point.job_id == job.id), None)

    def start(self, policy: pb.BackupPolicy, session_id: str) -> tuple[pb.Job, bool]:
        """Applies the policy and starts its job, unless one runs: then (that job, True).

        A repeat from the same session returns the job it started, whatever its state
        (`already_running` only while it runs), and starts nothing.
        """
        if session_id:
            repeated = self._started_by.get((session_id, policy.id))
            if repeated is not None:
                job = self.get(repeated)
                return job, job.state == pb.JOB_STATE_RUNNING
        self._store.save_policy(policy)
        running = self._running.get(policy.id)
        if running is not None:
            return running.snapshot(), True
        job = pb.Job(
            id=new_job_id(), policy_id=policy.id, session_id=session_id, state=pb.JOB_STATE_RUNNING
        )
        job.start_time.GetCurrentTime()
        self._store.save_job(job)
        running = RunningJob(job)
        self._running[policy.id] = running
        if session_id:
            self._started_by[(session_id, policy.id)] = job.id
        task = asyncio.create_task(self._run(running, policy))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info(
            "job %s of policy %s started%s",
            job.id,
            policy.id,
            f" by session {session_id}" if session_id else " on the agent itself",
            extra={"session_id": session_id},
        )
        return running.snapshot(), False

    async def _run(self, running: RunningJob, policy: pb.BackupPolicy) -> None:
        loop = asyncio.get_running_loop()
        try:
            point_id = await loop.run_in_executor(
                self._threads,
                run_job,
                self._store.data_dir,
                self._name,
                policy,
                running.id,
                running,
                self._allowed_roots,
            )
        except engine.JobCancelled:
            job = running.end(pb.JOB_STATE_STOPPED, error=running.stop_reason)
        except engine.BackupFailed as failure:
            job = running.end(pb.JOB_STATE_FAILED, error=str(failure))
        except Exception as bug:  # noqa: BLE001 - a bug must not leave the policy blocked
            log.exception("job %s of policy %s crashed", running.id, policy.id)
            job = running.end(pb.JOB_STATE_FAILED, error=f"internal error: {bug!r}")
        else:
            job = running.end(pb.JOB_STATE_SUCCEEDED, restore_point_id=point_id)
        # The policy is free again whatever happens to the record: a disk too full to
        # write it must not leave the policy "already running" until a restart.
        del self._running[policy.id]
        self._keep(job)
        running.ended.set()
        try:
            self._store.save_job(job)
        except OSError as error:
            log.error(
                "job %s of policy %s: its record could not be saved: %s", job.id, policy.id, error
            )
        if self._on_end is not None:
            self._on_end(job)
        log.log(
            logging.WARNING if job.state == pb.JOB_STATE_FAILED else logging.INFO,
            "job %s of policy %s %s%s",
            job.id,
            job.policy_id,
            pb.JobState.Name(job.state).removeprefix("JOB_STATE_").lower(),
            f": {job.error}" if job.error else "",
            extra={
                "session_id": job.session_id,
                "policy_id": job.policy_id,
                "job_id": job.id,
                "computer": self._name,
            },
        )

    def _remember(self, job: pb.Job) -> None:
        self._finished[job.id] = job
        if job.session_id:
            self._started_by[(job.session_id, job.policy_id)] = job.id

    def _keep(self, job: pb.Job) -> None:
        self._remember(job)
        if len(self._finished) > MAX_JOBS_KEPT:
            oldest = jobs_newest_first(self._finished.values())[-1]
            del self._finished[oldest.id]
            if self._started_by.get((oldest.session_id, oldest.policy_id)) == oldest.id:
                del self._started_by[(oldest.session_id, oldest.policy_id)]
            try:
                self._store.delete_job(oldest.id)
            except OSError as error:
                log.error("job %s: its record could not be removed: %s", oldest.id, error)

    def stop(self, policy_id: str) -> tuple[pb.Job, bool]:
        """Asks the policy's running job to stop; answers at once."""
        running = self._running.get(policy_id)
        if running is None:
            return pb.Job(), False
        running.stop()
        return running.snapshot(), True

    def _running_job(self, job_id: str) -> RunningJob | None:
        return next((running for running in self._running.values() if running.id == job_id), None)

    def get(self, job_id: str) -> pb.Job:
        running = self._running_job(job_id)
        if running is not None:
            return running.snapshot()
        job = self._finished.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id!r} not found")
        return job

    async def wait_end(self, job_id: str, at_most: float) -> None:
        running = self._running_job(job_id)
        if running is not None:
            await wait_event(running.ended, at_most)

    def watch(self, job_id: str) -> AsyncIterator[pb.Job]:
        return snapshots(self, job_id, PROGRESS_EVERY)

    def list(self, policy_id: str, session_id: str = "") -> list[pb.Job]:
        jobs = [running.snapshot() for running in self._running.values()]
        jobs.extend(self._finished.values())
        return jobs_newest_first(matching(jobs, policy_id, session_id))

    async def shutdown(self) -> None:
        """Stops every running job and waits for them to end."""
        for running in self._running.values():
            running.stop(STOPPED_BY_SHUTDOWN)
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        self._threads.shutdown()


def matching(jobs: Iterable[pb.Job], policy_id: str, session_id: str) -> list[pb.Job]:
    """The jobs of that policy and that session; an empty filter matches any."""
    return [
        job
        for job in jobs
        if (not policy_id or job.policy_id == policy_id)
        and (not session_id or job.session_id == session_id)
    ]


def jobs_newest_first(jobs: Iterable[pb.Job]) -> list[pb.Job]:
    return newest_first(jobs, lambda job: (job.start_time.ToNanoseconds(), job.id))

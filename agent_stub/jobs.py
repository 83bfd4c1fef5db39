"""Backup jobs on the agent: one per policy at a time, run in the background, stoppable."""

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from backup.errors import NotFound
from backup.ids import new_job_id
from backup.v1 import resources_pb2 as pb

from . import engine
from .store import AgentStore

log = logging.getLogger("agent_stub.jobs")

MAX_JOBS_KEPT = 1000


class RunningJob:
    """A job in progress: the engine updates it from its thread, RPCs read snapshots."""

    def __init__(self, job: pb.Job) -> None:
        self._job = job
        self._lock = threading.Lock()
        self._stop = threading.Event()

    @property
    def id(self) -> str:
        return self._job.id

    def snapshot(self) -> pb.Job:
        with self._lock:
            copy = pb.Job()
            copy.CopyFrom(self._job)
            return copy

    def stop(self) -> None:
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
        self, store: AgentStore, name: str, on_end: Callable[[pb.Job], None] | None = None
    ) -> None:
        self._store = store
        self._name = name
        # Told about every job that ends (the agent's metrics).
        self._on_end = on_end
        self._running: dict[str, RunningJob] = {}
        self._finished: dict[str, pb.Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._threads = ThreadPoolExecutor(max_workers=16, thread_name_prefix="job")

    def recover(self) -> None:
        """Loads the history; a job that was running when the agent died is FAILED now."""
        for job in _newest_first(self._store.jobs())[:MAX_JOBS_KEPT]:
            if job.state == pb.JOB_STATE_RUNNING:
                job.state = pb.JOB_STATE_FAILED
                job.error = "the agent stopped while this job was running"
                job.end_time.GetCurrentTime()
                self._store.save_job(job)
                log.warning(
                    "job %s of policy %s was interrupted: marked FAILED", job.id, job.policy_id
                )
            self._finished[job.id] = job
        for policy in self._store.policies():
            engine.remove_stale_staging(Path(policy.repository))

    def start(self, policy: pb.BackupPolicy, session_id: str) -> tuple[pb.Job, bool]:
        """Applies the policy and starts its job, unless one runs: then (that job, True)."""
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
                self._threads, engine.run_backup, policy, running.id, running
            )
        except engine.JobCancelled:
            job = running.end(pb.JOB_STATE_STOPPED, error="stopped on request")
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
        try:
            self._store.save_job(job)
        except OSError as error:
            log.error(
                "job %s of policy %s: its record could not be saved: %s", job.id, policy.id, error
            )
        self._keep(job)
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

    def _keep(self, job: pb.Job) -> None:
        self._finished[job.id] = job
        if len(self._finished) > MAX_JOBS_KEPT:
            oldest = _newest_first(self._finished.values())[-1]
            del self._finished[oldest.id]
            self._store.delete_job(oldest.id)

    def stop(self, policy_id: str) -> tuple[pb.Job, bool]:
        """Asks the policy's running job to stop; answers at once."""
        running = self._running.get(policy_id)
        if running is None:
            return pb.Job(), False
        running.stop()
        return running.snapshot(), True

    def get(self, job_id: str) -> pb.Job:
        for running in self._running.values():
            if running.id == job_id:
                return running.snapshot()
        job = self._finished.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id!r} not found")
        return job

    def list(self, policy_id: str) -> list[pb.Job]:
        jobs = [running.snapshot() for running in self._running.values()]
        jobs.extend(self._finished.values())
        if policy_id:
            jobs = [job for job in jobs if job.policy_id == policy_id]
        return _newest_first(jobs)

    async def shutdown(self) -> None:
        """Stops every running job and waits for them to end."""
        for running in self._running.values():
            running.stop()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        self._threads.shutdown()


def _newest_first(jobs: Iterable[pb.Job]) -> list[pb.Job]:
    return sorted(jobs, key=lambda job: (job.start_time.ToNanoseconds(), job.id), reverse=True)

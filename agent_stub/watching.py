"""WatchJob on the agent: a job's snapshots as it changes, shared by real and simulated jobs.

One snapshot at once, then one on every state change (a job's only change of state is its
end) and at most one progress snapshot every `PROGRESS_EVERY` seconds, only when the
progress moved; the final snapshot is the last. A job that has already ended gives one
snapshot. Nothing is polled faster than that, so a watched job that makes no progress
costs a sleeping coroutine, not CPU.
"""

from collections.abc import AsyncIterator
from typing import Protocol

from backup.v1 import resources_pb2 as pb

PROGRESS_EVERY = 3.0


class WatchableJobs(Protocol):
    """What watching needs of a job store: a snapshot, and a wait for the job's end."""

    def get(self, job_id: str) -> pb.Job: ...

    async def wait_end(self, job_id: str, at_most: float) -> None:
        """Returns when the job is no longer running, or after `at_most` seconds."""
        ...


def _progressed(sent: pb.Job, now: pb.Job) -> bool:
    return (
        sent.bytes_done != now.bytes_done
        or sent.bytes_total != now.bytes_total
        or sent.files_done != now.files_done
        or len(sent.warnings) != len(now.warnings)
    )


async def snapshots(
    jobs: WatchableJobs, job_id: str, progress_every: float = PROGRESS_EVERY
) -> AsyncIterator[pb.Job]:
    """The job's snapshots until its end; NotFound (from `get`) for an unknown job."""
    sent = jobs.get(job_id)
    yield sent
    while sent.state == pb.JOB_STATE_RUNNING:
        await jobs.wait_end(job_id, progress_every)
        latest = jobs.get(job_id)
        if latest.state != pb.JOB_STATE_RUNNING or _progressed(sent, latest):
            sent = latest
            yield sent

"""AgentControl over gRPC: each method decodes, calls the job runner, encodes."""

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

import grpc

from backup import status, validation
from backup.errors import LocalFault
from backup.v1 import agent_control_pb2 as api
from backup.v1 import agent_control_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb

from .confinement import AllowedPaths

log = logging.getLogger("agent_stub.service")

Context = grpc.aio.ServicerContext[Any, Any]


class Jobs(Protocol):
    """The jobs AgentControl drives: the real job runner, or the fleet simulator's."""

    def start(self, policy: pb.BackupPolicy, session_id: str) -> tuple[pb.Job, bool]: ...

    def stop(self, policy_id: str) -> tuple[pb.Job, bool]: ...

    def get(self, job_id: str) -> pb.Job: ...

    def list(self, policy_id: str, session_id: str = "") -> list[pb.Job]: ...

    def watch(self, job_id: str) -> AsyncIterator[pb.Job]:
        """The job's snapshots until its end (agent_stub.watching); NotFound if unknown."""
        ...


class RestorePoints(Protocol):
    """The restore points AgentControl lists: the real backup chain, or none when simulated."""

    def list(self, policy_id: str) -> list[pb.RestorePoint]: ...


def check_received_policy(policy: pb.BackupPolicy) -> None:
    """What the agent needs of a policy; a server is not trusted to have checked it."""
    validation.require_id("policy.id", policy.id)
    validation.check_policy_paths(policy)
    validation.check_limits(policy)


class AgentControl(api_grpc.AgentControlServicer):
    def __init__(
        self, jobs: Jobs, chain: RestorePoints, allowed: AllowedPaths | None = None
    ) -> None:
        self._jobs = jobs
        self._chain = chain
        self._allowed = allowed or AllowedPaths([])

    @status.unary
    async def StartJob(
        self, request: api.StartJobRequest, context: Context
    ) -> api.StartJobResponse:
        validation.optional_id("session_id", request.session_id)
        check_received_policy(request.policy)
        self._allowed.check(request.policy)
        try:
            job, already_running = self._jobs.start(request.policy, request.session_id)
        except OSError as error:
            raise LocalFault(f"the agent could not record the job: {error.strerror}") from None
        return api.StartJobResponse(job=job, already_running=already_running)

    @status.unary
    async def StopJob(self, request: api.StopJobRequest, context: Context) -> api.StopJobResponse:
        validation.require_id("policy_id", request.policy_id)
        validation.optional_id("session_id", request.session_id)
        job, was_running = self._jobs.stop(request.policy_id)
        log.info(
            "stop of policy %s%s: %s",
            request.policy_id,
            f" by session {request.session_id}" if request.session_id else "",
            f"job {job.id} stopping" if was_running else "no job was running",
            extra={"session_id": request.session_id},
        )
        return api.StopJobResponse(job=job, was_running=was_running)

    @status.unary
    async def GetJob(self, request: api.GetJobRequest, context: Context) -> pb.Job:
        validation.require_id("job_id", request.job_id)
        return self._jobs.get(request.job_id)

    @status.unary
    async def ListJobs(
        self, request: api.ListJobsRequest, context: Context
    ) -> api.ListJobsResponse:
        validation.optional_id("policy_id", request.policy_id)
        validation.optional_id("session_id", request.session_id)
        return api.ListJobsResponse(jobs=self._jobs.list(request.policy_id, request.session_id))

    @status.streaming
    async def WatchJob(
        self, request: api.WatchJobRequest, context: Context
    ) -> AsyncIterator[pb.Job]:
        validation.require_id("job_id", request.job_id)
        async for job in self._jobs.watch(request.job_id):
            yield job

    @status.unary
    async def ListRestorePoints(
        self, request: api.ListRestorePointsRequest, context: Context
    ) -> api.ListRestorePointsResponse:
        validation.optional_id("policy_id", request.policy_id)
        points = await asyncio.to_thread(self._chain.list, request.policy_id)
        return api.ListRestorePointsResponse(restore_points=points)

"""Commands run on the computer itself, against the agent that serves a data dir."""

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import grpc

from backup import validation
from backup.v1 import agent_control_pb2 as api
from backup.v1 import agent_control_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb

from .app import INFO_NAME
from .store import read_json, read_policy

CALL_DEADLINE = 10.0
# How long `run --wait` keeps trying to reach an agent that went away (a restart).
RECONNECT_FOR = 60.0


class LocalCommandError(Exception):
    """A local command cannot be carried out; the message is the one line to print."""


def _agent_channel(data_dir: Path) -> tuple[str, grpc.Channel]:
    """The agent's local socket (grpc local credentials), else its plaintext TCP address."""
    info = read_json(data_dir / INFO_NAME)
    if info is None:
        raise LocalCommandError(f"no agent is serving {data_dir} (no {INFO_NAME} there)")
    socket = info.get("socket")
    if isinstance(socket, str) and socket:
        target = f"unix:{socket}"
        local = grpc.local_channel_credentials(grpc.LocalConnectionType.UDS)
        return target, grpc.secure_channel(target, local)
    if info.get("tls"):
        raise LocalCommandError(
            f"the agent of {data_dir} serves only TLS and has no local socket "
            "(its data dir path is too long for one)"
        )
    target = str(info.get("address", ""))
    return target, grpc.insecure_channel(target)


def run_job(policy_id: str, data_dir: Path) -> api.StartJobResponse:
    """Starts the policy's job from the policy this agent last received."""
    if not validation.ID_PATTERN.fullmatch(policy_id):
        raise LocalCommandError(f"{policy_id[:80]!r} is not a policy id")
    target, channel = _agent_channel(data_dir)
    with channel:
        policy = read_policy(data_dir, policy_id)
        if policy is None:
            raise LocalCommandError(
                f"policy {policy_id!r} was never received by the agent of {data_dir}"
            )
        try:
            reply: api.StartJobResponse = api_grpc.AgentControlStub(channel).StartJob(
                api.StartJobRequest(policy=policy), timeout=CALL_DEADLINE
            )
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise LocalCommandError(
                    f"no agent is serving {data_dir} ({target} does not answer)"
                ) from None
            raise LocalCommandError(
                f"the agent refused: {error.code().name}: {error.details()}"
            ) from None
    return reply


def describe(job: pb.Job) -> str:
    """One line for a job: its state, progress, and how it ended."""
    state = pb.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
    line = (
        f"job {job.id} {state}: {job.files_done} files, "
        f"{job.bytes_done:,} of {job.bytes_total:,} bytes"
    )
    if job.restore_point_id:
        line += f", restore point {job.restore_point_id}"
    if job.error:
        line += f": {job.error}"
    return line


def wait_for_job(job_id: str, data_dir: Path, progress: TextIO = sys.stderr) -> pb.Job:
    """Follows the job through WatchJob to its end, a line per snapshot on `progress`.

    A stream that breaks (the agent restarting) is reopened for up to RECONNECT_FOR
    seconds; the job's end is then read from the agent's own history.
    """
    gave_up_at = time.monotonic() + RECONNECT_FOR
    delay = 0.2
    while True:
        target, channel = _agent_channel(data_dir)
        with channel:
            try:
                snapshots: Iterator[pb.Job] = api_grpc.AgentControlStub(channel).WatchJob(
                    api.WatchJobRequest(job_id=job_id)
                )
                for job in snapshots:
                    print(describe(job), file=progress, flush=True)
                    gave_up_at = time.monotonic() + RECONNECT_FOR
                    if job.state != pb.JOB_STATE_RUNNING:
                        return job
            except grpc.RpcError as error:
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    raise LocalCommandError(
                        f"the agent refused: {error.code().name}: {error.details()}"
                    ) from None
        if time.monotonic() > gave_up_at:
            raise LocalCommandError(
                f"the agent of {data_dir} ({target}) stopped answering while job {job_id} ran"
            )
        time.sleep(delay)
        delay = min(delay * 2, 5.0)

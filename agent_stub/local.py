"""Commands run on the computer itself, against the agent that serves a data dir."""

from pathlib import Path

import grpc

from backup.v1 import agent_control_pb2 as api
from backup.v1 import agent_control_pb2_grpc as api_grpc

from .app import INFO_NAME
from .store import read_json, read_policy

CALL_DEADLINE = 10.0


class LocalCommandError(Exception):
    """A local command cannot be carried out; the message is the one line to print."""


def _agent_target(data_dir: Path) -> str:
    info = read_json(data_dir / INFO_NAME)
    if info is None:
        raise LocalCommandError(f"no agent is serving {data_dir} (no {INFO_NAME} there)")
    socket = info.get("socket")
    if isinstance(socket, str) and socket:
        return f"unix:{socket}"
    return str(info.get("address", ""))


def run_job(policy_id: str, data_dir: Path) -> api.StartJobResponse:
    """Starts the policy's job from the policy this agent last received."""
    target = _agent_target(data_dir)
    policy = read_policy(data_dir, policy_id)
    if policy is None:
        raise LocalCommandError(
            f"policy {policy_id!r} was never received by the agent of {data_dir}"
        )
    with grpc.insecure_channel(target) as channel:
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

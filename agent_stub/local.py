"""Commands run on the computer itself, against the agent that serves a data dir."""

from pathlib import Path

import grpc

from backup import validation
from backup.v1 import agent_control_pb2 as api
from backup.v1 import agent_control_pb2_grpc as api_grpc

from .app import INFO_NAME
from .store import read_json, read_policy

CALL_DEADLINE = 10.0


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

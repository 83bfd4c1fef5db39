"""Helpers for outcome tests: a policy created on a server, its session watched to the outcome."""

import asyncio

import grpc

from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb


def outcome_final(session: pb.PolicySession) -> bool:
    return session.state != pb.SESSION_STATE_RUNNING and session.outcome not in (
        pb.SESSION_STATE_RUNNING,
        pb.SESSION_STATE_UNSPECIFIED,
    )


async def watch_outcome(
    service: api_grpc.PolicyServiceStub, session_id: str, seconds: float = 30.0
) -> list[pb.PolicySession]:
    """Every WatchSession snapshot until the stream ends (at the final outcome)."""

    async def drain() -> list[pb.PolicySession]:
        request = api.WatchSessionRequest(session_id=session_id)
        return [snapshot async for snapshot in service.WatchSession(request)]

    return await asyncio.wait_for(drain(), seconds)


async def create(
    service: api_grpc.PolicyServiceStub, policy: pb.BackupPolicy, policy_id: str = "nightly"
) -> None:
    await service.CreatePolicy(api.CreatePolicyRequest(policy_id=policy_id, policy=policy))


async def start_and_watch(
    service: api_grpc.PolicyServiceStub, policy_id: str = "nightly", seconds: float = 30.0
) -> tuple[pb.PolicySession, pb.PolicySession]:
    """StartPolicy, then the session watched to its outcome: (the reply, the last snapshot)."""
    started = await service.StartPolicy(api.StartPolicyRequest(policy_id=policy_id))
    snapshots = await watch_outcome(service, started.id, seconds)
    return started, snapshots[-1]


def server_stub(address: str) -> tuple[grpc.aio.Channel, api_grpc.PolicyServiceStub]:
    channel = grpc.aio.insecure_channel(address)
    return channel, api_grpc.PolicyServiceStub(channel)

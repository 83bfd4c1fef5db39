"""Both processes serve gRPC health (SERVING once ready) and reflection."""

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


async def services_listed(address: str) -> set[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for reply in stub.ServerReflectionInfo(iter([request])):
            return {service.name for service in reply.list_services_response.service}
    raise AssertionError("no reflection reply")


async def health(address: str, service: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service)
        )
        return reply.status


@pytest.mark.parametrize("which", ["server", "agent"])
async def test_health_and_reflection(which, server, start_agent) -> None:
    """Health answers SERVING for the process and its service; reflection lists the service, health and itself."""
    if which == "server":
        address, service = server.address, "backup.v1.PolicyService"
    else:
        address, service = (await start_agent("a1")).address, "backup.v1.AgentControl"
    assert await health(address, "") == health_pb2.HealthCheckResponse.SERVING
    assert await health(address, service) == health_pb2.HealthCheckResponse.SERVING
    assert {
        service,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= await services_listed(address)


async def test_health_list_names_every_service(server) -> None:
    """Health/List answers with every registered service's status, not UNIMPLEMENTED."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest())
    assert (
        reply.statuses["backup.v1.PolicyService"].status == health_pb2.HealthCheckResponse.SERVING
    )
    assert reply.statuses[""].status == health_pb2.HealthCheckResponse.SERVING

"""Computer addresses are host:port and nothing else: scheme-like hosts are refused, and the server dials explicit dns:///, ipv4: and ipv6: targets."""

import grpc
import pytest

from backup import validation
from backup.errors import InvalidArgument
from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb
from backup_server.fanout import AgentCallError
from backup_server.transport import GrpcAgentTransport

from conftest import policy_over

URI_LIKE = ["unix:5555", "unix-abstract:5556", "dns:1", "ipv4:1", "vsock:5", "UNIX:5555"]


@pytest.mark.parametrize("address", URI_LIKE)
async def test_scheme_like_hosts_are_refused(policy_service, tmp_path, source_tree, address) -> None:
    """A computer whose address gRPC would read as a target URI is INVALID_ARGUMENT naming the field, in a policy and in a protection group."""
    policy = policy_over([("web-1", address)], tmp_path, source_tree)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await policy_service.CreatePolicy(api.CreatePolicyRequest(policy=policy))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("policy.computers[0].address: ")
    group = pb.ProtectionGroup(
        name="g",
        kind=pb.PROTECTION_GROUP_KIND_MANUAL,
        computers=[pb.Computer(name="web-1", address=address)],
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await policy_service.CreateProtectionGroup(
            api.CreateProtectionGroupRequest(protection_group=group)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "gRPC target scheme" in refused.value.details()


def test_targets_are_explicit() -> None:
    """Each kind of host gets its own explicit target, so nothing in an address picks a resolver."""
    assert validation.grpc_target("agent.example.com:50061") == "dns:///agent.example.com:50061"
    assert validation.grpc_target("10.0.0.7:50061") == "ipv4:10.0.0.7:50061"
    assert validation.grpc_target("[::1]:50061") == "ipv6:[::1]:50061"
    for address in ("web-1:50061", "10.0.0.7:50061", "[::1]:50061"):
        validation.check_address("address", address)
    with pytest.raises(InvalidArgument):
        validation.check_address("address", "unix:5555")


async def test_the_transport_never_dials_a_unix_socket(tmp_path, monkeypatch) -> None:
    """Given "unix:5555" (as if validation had let it through), the transport dials the host unix over DNS, not the socket file 5555 in its working directory."""
    monkeypatch.chdir(tmp_path)

    async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b""

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "backup.v1.AgentControl", {"StartJob": grpc.unary_unary_rpc_method_handler(answer)}
            ),
        )
    )
    server.add_insecure_port("unix:5555")
    await server.start()
    transport = GrpcAgentTransport()
    try:
        with pytest.raises(AgentCallError) as failed:
            await transport.call("unix:5555", "StartJob", b"", 2.0)
        assert failed.value.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    finally:
        await transport.close()
        await server.stop(0)

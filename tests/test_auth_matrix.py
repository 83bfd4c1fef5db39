"""Every method of PolicyService and AgentControl, taken from the generated descriptors, is refused without the right credential and accepted with it."""

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from security_support import (
    AGENT_CONTROL,
    AUTH_REFUSALS,
    POLICY_SERVICE,
    TOKEN,
    Pki,
    codes_of_every_method,
    methods,
)

from backup.ctl.credentials import OperatorCredentials
from backup.security.authz import Authorizer
from backup.security.roles import Role
from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import agent_control_pb2_grpc as agent_grpc
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup_server.app import operator_rules

from conftest import policy_over

UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE}  # refused in the TLS handshake
UNAUTHENTICATED = {grpc.StatusCode.UNAUTHENTICATED}
PERMISSION_DENIED = {grpc.StatusCode.PERMISSION_DENIED}
ACCEPTED = None  # any status but a refusal: NOT_FOUND, INVALID_ARGUMENT, OK ...

Credentials = Callable[[Pki], OperatorCredentials]


def token_file(directory: Path) -> Path:
    path = directory / "api-token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


async def start_in_mode(start_server, pki: Pki, mode: str, tmp_path: Path):
    tls = pki.tls(pki.issued("server")) if mode in ("mtls", "tls+token") else None
    token = token_file(tmp_path) if mode in ("tls+token", "token") else None
    return await start_server(tls=tls, api_token_file=token)


def assert_codes(codes: dict[str, grpc.StatusCode], expected: set[grpc.StatusCode] | None) -> None:
    assert codes, "the service has no methods?"
    if expected is ACCEPTED:
        refused = {name: code for name, code in codes.items() if code in AUTH_REFUSALS}
        assert not refused, f"refused with the right credential: {refused}"
        assert grpc.StatusCode.UNIMPLEMENTED not in codes.values()
    else:
        wrong = {name: code for name, code in codes.items() if code not in expected}
        assert not wrong, f"expected {expected}, got {wrong}"


OPERATOR_CASES: list[tuple[str, str, Credentials, set[grpc.StatusCode] | None]] = [
    ("mtls", "plaintext", lambda pki: OperatorCredentials(), UNAVAILABLE),
    ("mtls", "no client certificate", lambda pki: pki.client(), UNAVAILABLE),
    ("mtls", "wrong token", lambda pki: pki.client(token="wrong-" + TOKEN), UNAVAILABLE),
    (
        "mtls",
        "operator certificate from another CA",
        lambda pki: pki.client(pki.issued("operator", pki.other)),
        UNAVAILABLE,
    ),
    ("mtls", "agent certificate as operator", lambda pki: pki.client(pki.agent()), UNAVAILABLE),
    (
        "mtls",
        "server certificate as operator",
        lambda pki: pki.client(pki.issued("server")),
        PERMISSION_DENIED,
    ),
    (
        "mtls",
        "expired operator certificate",
        lambda pki: pki.client(pki.expired[Role.OPERATOR]),
        UNAVAILABLE,
    ),
    ("mtls", "operator certificate", lambda pki: pki.client(pki.issued("operator")), ACCEPTED),
    ("tls+token", "plaintext", lambda pki: OperatorCredentials(token=TOKEN), UNAVAILABLE),
    ("tls+token", "no credential", lambda pki: pki.client(), UNAUTHENTICATED),
    ("tls+token", "wrong token", lambda pki: pki.client(token="wrong-" + TOKEN), UNAUTHENTICATED),
    ("tls+token", "token prefix", lambda pki: pki.client(token=TOKEN[:-1]), UNAUTHENTICATED),
    (
        "tls+token",
        "certificate from another CA",
        lambda pki: pki.client(pki.issued("operator", pki.other)),
        UNAUTHENTICATED,
    ),
    ("tls+token", "token", lambda pki: pki.client(token=TOKEN), ACCEPTED),
    ("token", "no credential", lambda pki: OperatorCredentials(), UNAUTHENTICATED),
    ("token", "wrong token", lambda pki: OperatorCredentials(token="x" * 40), UNAUTHENTICATED),
    ("token", "token", lambda pki: OperatorCredentials(token=TOKEN), ACCEPTED),
    ("dev", "no credential", lambda pki: OperatorCredentials(), ACCEPTED),
]


@pytest.mark.parametrize(
    ("mode", "case", "credentials", "expected"),
    OPERATOR_CASES,
    ids=[f"{mode}: {case}" for mode, case, _, _ in OPERATOR_CASES],
)
async def test_policy_service_matrix(
    start_server, pki, tmp_path, mode, case, credentials, expected
) -> None:
    """Each PolicyService method is refused (handshake, UNAUTHENTICATED or PERMISSION_DENIED) without the server's required credential, and accepted with it."""
    server = await start_in_mode(start_server, pki, mode, tmp_path)
    async with credentials(pki).channel(server.address) as channel:
        assert_codes(await codes_of_every_method(channel, POLICY_SERVICE), expected)


async def test_a_token_in_another_scheme_is_refused(start_server, pki, tmp_path) -> None:
    """`authorization: Basic TOKEN` (not Bearer) or a bare token is no credential: UNAUTHENTICATED."""
    server = await start_in_mode(start_server, pki, "token", tmp_path)
    async with grpc.aio.insecure_channel(server.address) as channel:
        for value in (f"Basic {TOKEN}", TOKEN):
            codes = await codes_of_every_method(channel, POLICY_SERVICE, [("authorization", value)])
            assert_codes(codes, UNAUTHENTICATED)


AGENT_CASES: list[tuple[str, Credentials, set[grpc.StatusCode] | None]] = [
    ("plaintext", lambda pki: OperatorCredentials(), UNAVAILABLE),
    ("no client certificate", lambda pki: pki.client(), UNAVAILABLE),
    (
        "server certificate from another CA",
        lambda pki: pki.client(pki.issued("server", pki.other)),
        UNAVAILABLE,
    ),
    ("agent certificate as server", lambda pki: pki.client(pki.agent()), UNAVAILABLE),
    ("operator certificate", lambda pki: pki.client(pki.issued("operator")), PERMISSION_DENIED),
    (
        "operator certificate and a token",
        lambda pki: pki.client(pki.issued("operator"), token=TOKEN),
        UNAUTHENTICATED,
    ),
    ("expired server certificate", lambda pki: pki.client(pki.expired[Role.SERVER]), UNAVAILABLE),
    ("server certificate", lambda pki: pki.client(pki.issued("server")), ACCEPTED),
]


@pytest.mark.parametrize(
    ("case", "credentials", "expected"), AGENT_CASES, ids=[case for case, _, _ in AGENT_CASES]
)
async def test_agent_control_matrix(start_agent, pki, case, credentials, expected) -> None:
    """Each AgentControl method of a TLS agent is refused to anything but the backup server's certificate from its CA."""
    agent = await start_agent("web-1", tls=pki.tls(pki.agent()))
    async with credentials(pki).channel(agent.address) as channel:
        assert_codes(await codes_of_every_method(channel, AGENT_CONTROL), expected)


async def test_the_local_socket_is_accepted_in_tls_mode(start_agent, pki) -> None:
    """The agent's 0600 unix socket in its data dir is a credential of its own: every method is accepted there."""
    agent = await start_agent("web-1", tls=pki.tls(pki.agent()))
    socket = agent.config.data_dir / "agent.sock"
    assert socket.stat().st_mode & 0o777 == 0o600
    local = grpc.local_channel_credentials(grpc.LocalConnectionType.UDS)
    async with grpc.aio.secure_channel(f"unix:{socket}", local) as channel:
        assert_codes(await codes_of_every_method(channel, AGENT_CONTROL), ACCEPTED)


async def test_refused_calls_change_nothing(
    start_server, start_agent, pki, tmp_path, source_tree
) -> None:
    """A refused CreatePolicy stores nothing and a refused StartJob starts nothing."""
    server = await start_in_mode(start_server, pki, "mtls", tmp_path)
    policy = policy_over([("web-1", "127.0.0.1:1")], tmp_path, source_tree)
    create = api.CreatePolicyRequest(policy_id="nightly", policy=policy)
    async with pki.client(pki.issued("server")).channel(server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await api_grpc.PolicyServiceStub(channel).CreatePolicy(create)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert refused.value.details() == "permission denied"
    async with pki.client(pki.issued("operator")).channel(server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await api_grpc.PolicyServiceStub(channel).GetPolicy(
                api.GetPolicyRequest(policy_id="nightly")
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    agent = await start_agent("web-1", tls=pki.tls(pki.agent()))
    policy.id = "nightly"
    async with pki.client(pki.issued("operator")).channel(agent.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await agent_grpc.AgentControlStub(channel).StartJob(
                agent_api.StartJobRequest(policy=policy)
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with pki.client(pki.issued("server")).channel(agent.address) as channel:
        jobs = await agent_grpc.AgentControlStub(channel).ListJobs(agent_api.ListJobsRequest())
        assert list(jobs.jobs) == []


async def test_health_and_reflection_stay_open(start_server, pki, tmp_path) -> None:
    """With TLS and a token, health and reflection answer a client that has neither a token nor a certificate."""
    server = await start_in_mode(start_server, pki, "tls+token", tmp_path)
    async with pki.client().channel(server.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        listing = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([listing])
        )
        async for answer in replies:
            names = {service.name for service in answer.list_services_response.service}
            assert POLICY_SERVICE.full_name in names
            break
        else:
            raise AssertionError("no reflection reply")


def _unary(reply: bytes) -> grpc.RpcMethodHandler:
    async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return reply

    return grpc.unary_unary_rpc_method_handler(answer)


@pytest.mark.parametrize("authenticate", [True, False])
async def test_methods_added_later_are_covered_and_unknown_services_denied(authenticate) -> None:
    """A PolicyService method added later needs the operator's credential without anyone listing it; a service not in the table is refused even with one."""
    server = grpc.aio.server(
        interceptors=[Authorizer(operator_rules(authenticate), token=TOKEN.encode())]
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "backup.v1.PolicyService", {"FutureMethod": _unary(b"")}
            ),
            grpc.method_handlers_generic_handler("test.v1.Hidden", {"Call": _unary(b"")}),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with OperatorCredentials(token=TOKEN).channel(f"127.0.0.1:{port}") as with_token:
            future = with_token.unary_unary("/backup.v1.PolicyService/FutureMethod")
            assert await future(b"", timeout=5) == b""
            with pytest.raises(grpc.aio.AioRpcError) as hidden:
                await with_token.unary_unary("/test.v1.Hidden/Call")(b"", timeout=5)
            assert hidden.value.code() == grpc.StatusCode.PERMISSION_DENIED
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as anonymous:
            call = anonymous.unary_unary("/backup.v1.PolicyService/FutureMethod")
            if authenticate:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call(b"", timeout=5)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            else:
                assert await call(b"", timeout=5) == b""
    finally:
        await server.stop(0)


def test_the_matrix_covers_every_method_of_both_services() -> None:
    """The matrix iterates the generated descriptors, so it holds every method of both services, including ones added later."""
    assert {method.name for method in methods(POLICY_SERVICE)} >= {
        "CreatePolicy",
        "StartPolicy",
        "StopPolicy",
        "WatchSession",
        "DeletePolicy",
    }
    assert {method.name for method in methods(AGENT_CONTROL)} >= {"StartJob", "StopJob"}

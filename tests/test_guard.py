"""The guard in front of every method: credentials on headers first, then a bounded wait for the message, then parsing, then a slot (commands keep some)."""

import asyncio
import logging
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from security_support import AGENT_CONTROL, POLICY_SERVICE, TOKEN, codes_of_every_method

from backup.ctl.credentials import OperatorCredentials
from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import agent_control_pb2_grpc as agent_grpc

# Field 1, length-delimited, announcing 127 bytes and carrying two: no request type parses it
# (the campaign's b"\x0a\x02\xff\xfe", bytes that are not UTF-8, fails only string fields).
UNPARSABLE = b"\x0a\x7f\xff\xfe"


def token_file(directory):
    path = directory / "api-token"
    path.write_text(TOKEN)
    path.chmod(0o600)
    return path


def only(codes, expected):
    """Every method answered `expected`; on failure the assertion shows which did not."""
    assert codes, "no methods?"
    assert {name: code for name, code in codes.items() if code != expected} == {}


async def test_unparsable_bytes_to_the_server_are_refused_by_credentials_first(
    start_server, tmp_path, caplog
) -> None:
    """Bytes that do not parse get UNAUTHENTICATED without the token and INVALID_ARGUMENT with it on every PolicyService method, logged without a traceback."""
    server = await start_server(api_token_file=token_file(tmp_path))
    with caplog.at_level(logging.INFO):
        async with grpc.aio.insecure_channel(server.address) as anonymous:
            only(
                await codes_of_every_method(anonymous, POLICY_SERVICE, payload=UNPARSABLE),
                grpc.StatusCode.UNAUTHENTICATED,
            )
        async with OperatorCredentials(token=TOKEN).channel(server.address) as operator:
            only(
                await codes_of_every_method(operator, POLICY_SERVICE, payload=UNPARSABLE),
                grpc.StatusCode.INVALID_ARGUMENT,
            )
    assert not [record for record in caplog.records if record.exc_info]
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_unparsable_bytes_to_an_agent_are_refused_by_role_first(start_agent, pki) -> None:
    """On a TLS agent, an operator certificate gets PERMISSION_DENIED and the backup server's INVALID_ARGUMENT for bytes that do not parse, on every AgentControl method."""
    agent = await start_agent("web-1", tls=pki.tls(pki.agent()))
    async with pki.client(pki.issued("operator")).channel(agent.address) as operator:
        only(
            await codes_of_every_method(operator, AGENT_CONTROL, payload=UNPARSABLE),
            grpc.StatusCode.PERMISSION_DENIED,
        )
    async with pki.client(pki.issued("server")).channel(agent.address) as server:
        only(
            await codes_of_every_method(server, AGENT_CONTROL, payload=UNPARSABLE),
            grpc.StatusCode.INVALID_ARGUMENT,
        )


async def test_a_flood_of_unparsable_requests_logs_one_line(start_agent, caplog) -> None:
    """Fifty requests that do not parse cost one WARNING line that counts nothing as a crash."""
    agent = await start_agent("web-1")
    with caplog.at_level(logging.DEBUG):
        async with grpc.aio.insecure_channel(agent.address) as channel:
            for _ in range(50):
                only(
                    await codes_of_every_method(channel, AGENT_CONTROL, payload=UNPARSABLE),
                    grpc.StatusCode.INVALID_ARGUMENT,
                )
    lines = [record for record in caplog.records if "does not parse" in record.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.WARNING
    assert not [record for record in caplog.records if record.exc_info]


async def never() -> object:
    """A request stream that sends nothing: the call's headers go out, its message never."""
    await asyncio.Event().wait()
    yield b""


def half_open(channel: grpc.aio.Channel, method: str = "StartJob"):
    call = channel.stream_unary(f"/backup.v1.AgentControl/{method}")
    return call(never(), timeout=30)


async def test_refused_callers_take_no_slot(start_agent, pki) -> None:
    """Calls refused on their headers (an operator certificate on a TLS agent) never hold a slot: the backup server's calls still run past a flood of them."""
    agent = await start_agent("web-1", tls=pki.tls(pki.agent()), max_concurrent_rpcs=4)
    async with pki.client(pki.issued("operator")).channel(agent.address) as operator:
        flood = [half_open(operator) for _ in range(20)]
        for call in flood:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with pki.client(pki.issued("server")).channel(agent.address) as server:
        await agent_grpc.AgentControlStub(server).ListJobs(agent_api.ListJobsRequest(), timeout=5)


async def test_calls_that_never_send_their_message_hold_no_slot_and_end(start_agent) -> None:
    """A hundred and fifty calls that send headers and no message fill none of the 100 slots, and each ends DEADLINE_EXCEEDED once the message wait passes."""
    agent = await start_agent("web-1", message_wait=1.0)
    async with grpc.aio.insecure_channel(agent.address) as channel:
        began = time.monotonic()
        flood = [half_open(channel) for _ in range(150)]
        await asyncio.sleep(0.3)
        stub = agent_grpc.AgentControlStub(channel)
        reply = await stub.StopJob(agent_api.StopJobRequest(policy_id="nightly"), timeout=5)
        assert reply.was_running is False
        results = await asyncio.gather(*flood, return_exceptions=True)
    codes = {error.code() for error in results if isinstance(error, grpc.aio.AioRpcError)}
    assert codes == {grpc.StatusCode.DEADLINE_EXCEEDED}
    assert time.monotonic() - began < 15


async def test_the_servers_commands_keep_slots_that_reads_cannot_take(start_agent) -> None:
    """With every slot open to reads held by health watches, ListJobs is RESOURCE_EXHAUSTED while StartJob's and StopJob's reserved slots still serve StopJob."""
    agent = await start_agent("web-1", max_concurrent_rpcs=5)
    async with grpc.aio.insecure_channel(agent.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watches = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(4)]
        for watch in watches:
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        stub = agent_grpc.AgentControlStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as busy:
            await stub.ListJobs(agent_api.ListJobsRequest(), timeout=5)
        assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        reply = await stub.StopJob(agent_api.StopJobRequest(policy_id="nightly"), timeout=5)
        assert reply.was_running is False
        for watch in watches:
            watch.cancel()


async def test_a_flood_of_refused_calls_logs_one_line_per_reason(
    start_server, tmp_path, caplog
) -> None:
    """Every method called four times without credentials, then four times with a wrong token, costs one refusal line per reason, however many calls were refused."""
    server = await start_server(api_token_file=token_file(tmp_path))
    with caplog.at_level(logging.WARNING, logger="backup.security"):
        for credentials in (OperatorCredentials(), OperatorCredentials(token="wrong-" + TOKEN)):
            async with credentials.channel(server.address) as channel:
                for _ in range(4):
                    only(
                        await codes_of_every_method(channel, POLICY_SERVICE),
                        grpc.StatusCode.UNAUTHENTICATED,
                    )
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]
    assert len(lines) == 2, lines
    assert lines[0].endswith(": no credential") and lines[1].endswith(": wrong token")

"""Refusals stay small: paths are elided in messages and every status message and detail is bounded, keeping the field name, so a refusal never overflows the trailers."""

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from backup import status
from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb

from conftest import policy_over

# A valid path of 4,000 characters: twenty components of 199.
LONG_PATH = "/" + "/".join(["d" * 199] * 20)


def trailer_bytes(error: grpc.aio.AioRpcError) -> int:
    """What the status cost in trailers, the details' binary header included."""
    return sum(len(key) + len(value) for key, value in error.trailing_metadata() or ())


async def test_an_agent_refusing_a_long_path_answers_briefly(
    start_agent, agent_control, tmp_path
) -> None:
    """A 4,000-character source outside the allowed roots is FAILED_PRECONDITION naming the field, its message and details a few hundred bytes with the path elided."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    agent = await start_agent("web-1", allow_paths=(allowed,))
    policy = pb.BackupPolicy(
        id="nightly", name="n", source_paths=[LONG_PATH], repository=str(allowed / "repo")
    )
    try:
        await agent_control(agent.address).StartJob(agent_api.StartJobRequest(policy=policy))
        raise AssertionError("the long path was accepted")
    except grpc.aio.AioRpcError as refused:
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert refused.details().startswith("policy.source_paths[0]: '/ddd")
        assert "…" in refused.details() and "is outside the paths" in refused.details()
        assert len(refused.details()) < 400
        assert trailer_bytes(refused) < 2048
        detail = rpc_status.from_call(refused).details[0]
        violations = error_details_pb2.BadRequest()
        detail.Unpack(violations)
        assert violations.field_violations[0].field == "policy.source_paths[0]"


async def test_the_server_records_the_refusal_not_a_broken_stream(
    policy_service, start_agent, tmp_path
) -> None:
    """Through the fan-out, that refusal is recorded REJECTED with FAILED_PRECONDITION, not RESOURCE_EXHAUSTED 'Stream removed'."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    agent = await start_agent("web-1", allow_paths=(allowed,))
    policy = policy_over([("web-1", agent.address)], tmp_path, allowed)
    policy.source_paths[:] = [LONG_PATH]
    policy.repository = str(allowed / "repository")
    await policy_service.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
    session = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    [result] = session.computer_results
    assert result.delivery == pb.DELIVERY_REJECTED
    assert result.detail.startswith("FAILED_PRECONDITION: policy.source_paths[0]: ")


def test_every_status_message_is_bounded_and_keeps_its_field() -> None:
    """A message of 100,000 characters is cut to the limit with its start (the field) and end kept, and the violation still names the field."""
    sent = status.rich_status(
        grpc.StatusCode.INVALID_ARGUMENT, "policy.name: " + "x" * 100_000 + " END", "policy.name"
    )
    assert len(sent.details) <= status.MESSAGE_MAX
    assert sent.details.startswith("policy.name: x") and sent.details.endswith(" END")
    [(_, binary)] = sent.trailing_metadata
    assert len(binary) < 2 * status.MESSAGE_MAX + 200


async def test_the_server_bounds_what_an_agent_says(policy_service, tmp_path, source_tree) -> None:
    """An agent refusing with a 6,000-character message is recorded with its code and the message cut to the bound, its start and end kept."""

    async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "start " + "x" * 6000 + " end")

    agent = grpc.aio.server()
    agent.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "backup.v1.AgentControl", {"StartJob": grpc.unary_unary_rpc_method_handler(refuse)}
            ),
        )
    )
    port = agent.add_insecure_port("127.0.0.1:0")
    await agent.start()
    try:
        policy = policy_over([("web-1", f"127.0.0.1:{port}")], tmp_path, source_tree)
        await policy_service.CreatePolicy(
            api.CreatePolicyRequest(policy_id="nightly", policy=policy)
        )
        session = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    finally:
        await agent.stop(0)
    [result] = session.computer_results
    assert result.delivery == pb.DELIVERY_REJECTED
    assert len(result.detail) <= status.MESSAGE_MAX
    assert result.detail.startswith("FAILED_PRECONDITION: start x") and result.detail.endswith(" end")

"""Values that used to end UNKNOWN: a page token holding a lone surrogate, and a policy timestamp outside Timestamp's range on an agent."""

import base64

import grpc
import pytest

from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb

from conftest import policy_over


def forged_token(query: str) -> str:
    """A well-formed token of the right query whose position is a lone surrogate."""
    raw = ('{"q":"' + query + '","p":"\\ud800"}').encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("method", "request_type", "query"),
    [
        ("ListPolicies", api.ListPoliciesRequest, "policies"),
        ("ListProtectionGroups", api.ListProtectionGroupsRequest, "groups"),
    ],
)
async def test_a_page_token_with_a_lone_surrogate_is_invalid(
    policy_service, method, request_type, query
) -> None:
    """A page token whose position is a lone surrogate is INVALID_ARGUMENT naming page_token, on both list methods that take a name-like position."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await getattr(policy_service, method)(request_type(page_token=forged_token(query)))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "page_token: is not a token this server issued"


@pytest.mark.parametrize("field", ["create_time", "update_time"])
@pytest.mark.parametrize(("seconds", "nanos"), [(2**62, 0), (-(2**40), 0), (0, 2_000_000_000)])
async def test_an_agent_refuses_a_policy_time_out_of_range(
    start_agent, agent_control, tmp_path, source_tree, field, seconds, nanos
) -> None:
    """StartJob with a policy whose create_time or update_time lies outside 0001-9999 is INVALID_ARGUMENT naming the field, and no job is recorded."""
    agent = await start_agent("web-1")
    control = agent_control(agent.address)
    policy = policy_over([], tmp_path, source_tree)
    policy.id = "nightly"
    getattr(policy, field).seconds = seconds
    getattr(policy, field).nanos = nanos
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await control.StartJob(agent_api.StartJobRequest(policy=policy))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith(f"policy.{field}: ")
    assert list((await control.ListJobs(agent_api.ListJobsRequest())).jobs) == []
    good = policy_over([], tmp_path, source_tree)
    good.id = "nightly"
    good.create_time.GetCurrentTime()
    reply = await control.StartJob(agent_api.StartJobRequest(policy=good))
    assert reply.job.state in (pb.JOB_STATE_RUNNING, pb.JOB_STATE_SUCCEEDED)

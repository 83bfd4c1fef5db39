"""Errors carry google.rpc.BadRequest field violations over a real channel (grpcio-status)."""

from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb

from conftest import policy_over


async def rich_status(call: grpc.aio.UnaryUnaryCall) -> status_pb2.Status | None:  # type: ignore[type-arg]
    """Awaits a call that must fail; returns the google.rpc.Status its trailers carry."""
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    status: status_pb2.Status | None = await rpc_status.aio.from_call(call)
    return status


def violations(status: status_pb2.Status | None) -> list[tuple[str, str]]:
    assert status is not None, "no google.rpc.Status in the trailers"
    found = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        assert detail.Unpack(bad_request), detail.type_url
        found.extend((v.field, v.description) for v in bad_request.field_violations)
    return found


async def test_invalid_argument_names_the_field(
    policy_service: api_grpc.PolicyServiceStub, tmp_path: Path, source_tree: Path
) -> None:
    """A bad computer address: INVALID_ARGUMENT whose BadRequest names that computer's field."""
    policy = policy_over([("db", "127.0.0.1:50061"), ("web", "no-port")], tmp_path, source_tree)
    status = await rich_status(
        policy_service.CreatePolicy(api.CreatePolicyRequest(policy_id="p", policy=policy))
    )
    assert status is not None and status.code == code_pb2.INVALID_ARGUMENT
    assert status.message == "policy.computers[1].address: 'no-port' is not host:port"
    assert violations(status) == [("policy.computers[1].address", "'no-port' is not host:port")]


async def test_bad_id_and_bad_update_mask_name_their_fields(
    policy_service: api_grpc.PolicyServiceStub,
) -> None:
    """Request-level fields are named as the request spells them."""
    status = await rich_status(policy_service.StartPolicy(api.StartPolicyRequest(policy_id="Bad")))
    assert [field for field, _ in violations(status)] == ["policy_id"]
    status = await rich_status(
        policy_service.StartPolicy(api.StartPolicyRequest(policy_id="p", session_id="Bad Id"))
    )
    assert [field for field, _ in violations(status)] == ["session_id"]
    update = api.UpdatePolicyRequest(policy=pb.BackupPolicy(id="p"))
    update.update_mask.paths.append("id")
    status = await rich_status(policy_service.UpdatePolicy(update))
    assert [field for field, _ in violations(status)] == ["update_mask"]


async def test_missing_group_is_a_precondition_naming_the_field(
    policy_service: api_grpc.PolicyServiceStub, tmp_path: Path, source_tree: Path
) -> None:
    """A referenced group that does not exist: FAILED_PRECONDITION, still naming the field."""
    policy = policy_over([("db", "127.0.0.1:50061")], tmp_path, source_tree, ["nope"])
    status = await rich_status(
        policy_service.CreatePolicy(api.CreatePolicyRequest(policy_id="p", policy=policy))
    )
    assert status is not None and status.code == code_pb2.FAILED_PRECONDITION
    assert [field for field, _ in violations(status)] == ["policy.protection_group_ids[0]"]


async def test_not_found_carries_no_field(policy_service: api_grpc.PolicyServiceStub) -> None:
    """An unknown id names no field: the rich status has no details."""
    status = await rich_status(policy_service.GetPolicy(api.GetPolicyRequest(policy_id="nope")))
    assert status is not None and status.code == code_pb2.NOT_FOUND
    assert violations(status) == []

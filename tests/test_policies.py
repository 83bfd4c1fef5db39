"""PolicyService's protection groups and policies: create, get, list, update, delete."""

import grpc
import pytest
from google.protobuf import field_mask_pb2

from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb

from conftest import policy_over

MANUAL = pb.PROTECTION_GROUP_KIND_MANUAL


def group(name: str = "web", *computers: tuple[str, str], kind: int = MANUAL) -> pb.ProtectionGroup:
    return pb.ProtectionGroup(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        computers=[pb.Computer(name=n, address=a) for n, a in computers]
        or [pb.Computer(name="w1", address="127.0.0.1:1")],
    )


async def expect_status(call, code: grpc.StatusCode, *words: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, raised.value.details()
    for word in words:
        assert word in raised.value.details()
    return raised.value


async def test_group_round_trip(policy_service) -> None:
    """A created group can be read back and listed with the id the client chose."""
    created = await policy_service.CreateProtectionGroup(
        api.CreateProtectionGroupRequest(protection_group_id="web", protection_group=group())
    )
    assert created.id == "web" and created.create_time.seconds > 0
    fetched = await policy_service.GetProtectionGroup(
        api.GetProtectionGroupRequest(protection_group_id="web")
    )
    assert fetched == created
    listed = await policy_service.ListProtectionGroups(api.ListProtectionGroupsRequest())
    assert [g.id for g in listed.protection_groups] == ["web"]


async def test_group_id_is_generated_when_empty(policy_service) -> None:
    """An empty protection_group_id gets a well-shaped generated id."""
    created = await policy_service.CreateProtectionGroup(
        api.CreateProtectionGroupRequest(protection_group=group())
    )
    assert created.id.startswith("pg-")
    await policy_service.GetProtectionGroup(
        api.GetProtectionGroupRequest(protection_group_id=created.id)
    )


async def test_group_errors(policy_service) -> None:
    """Taken ids, unknown ids and malformed ids get ALREADY_EXISTS, NOT_FOUND, INVALID_ARGUMENT."""
    request = api.CreateProtectionGroupRequest(protection_group_id="web", protection_group=group())
    await policy_service.CreateProtectionGroup(request)
    await expect_status(
        policy_service.CreateProtectionGroup(request), grpc.StatusCode.ALREADY_EXISTS, "web"
    )
    await expect_status(
        policy_service.GetProtectionGroup(
            api.GetProtectionGroupRequest(protection_group_id="nope")
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_status(
        policy_service.GetProtectionGroup(
            api.GetProtectionGroupRequest(protection_group_id="Bad_Id")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "protection_group_id",
    )
    await expect_status(
        policy_service.DeleteProtectionGroup(
            api.DeleteProtectionGroupRequest(protection_group_id="nope")
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_group_in_use_cannot_be_deleted(policy_service, tmp_path, source_tree) -> None:
    """Deleting a group a policy uses is FAILED_PRECONDITION; once unused it can go."""
    await policy_service.CreateProtectionGroup(
        api.CreateProtectionGroupRequest(protection_group_id="web", protection_group=group())
    )
    policy = policy_over([], tmp_path, source_tree, group_ids=["web"])
    await policy_service.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
    await expect_status(
        policy_service.DeleteProtectionGroup(
            api.DeleteProtectionGroupRequest(protection_group_id="web")
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "nightly",
    )
    await policy_service.DeletePolicy(api.DeletePolicyRequest(policy_id="nightly"))
    await policy_service.DeleteProtectionGroup(
        api.DeleteProtectionGroupRequest(protection_group_id="web")
    )
    await expect_status(
        policy_service.GetProtectionGroup(api.GetProtectionGroupRequest(protection_group_id="web")),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_policy_round_trip(policy_service, tmp_path, source_tree) -> None:
    """A created policy reads back equal, with create and update times set."""
    policy = policy_over([("a", "127.0.0.1:1")], tmp_path, source_tree, description="every night")
    created = await policy_service.CreatePolicy(
        api.CreatePolicyRequest(policy_id="nightly", policy=policy)
    )
    assert created.id == "nightly"
    assert created.create_time == created.update_time and created.create_time.seconds > 0
    assert list(created.computers) == list(policy.computers)
    fetched = await policy_service.GetPolicy(api.GetPolicyRequest(policy_id="nightly"))
    assert fetched == created


async def test_policy_errors(policy_service, tmp_path, source_tree) -> None:
    """Policies answer ALREADY_EXISTS, NOT_FOUND, INVALID_ARGUMENT and FAILED_PRECONDITION."""
    policy = policy_over([("a", "127.0.0.1:1")], tmp_path, source_tree)
    await policy_service.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
    await expect_status(
        policy_service.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy)),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    for call in (
        policy_service.GetPolicy(api.GetPolicyRequest(policy_id="other")),
        policy_service.DeletePolicy(api.DeletePolicyRequest(policy_id="other")),
        policy_service.UpdatePolicy(
            api.UpdatePolicyRequest(policy=pb.BackupPolicy(id="other", name="x"))
        ),
    ):
        await expect_status(call, grpc.StatusCode.NOT_FOUND, "other")
    missing_group = policy_over([], tmp_path, source_tree, group_ids=["ghost"])
    error = await expect_status(
        policy_service.CreatePolicy(api.CreatePolicyRequest(policy_id="p2", policy=missing_group)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "policy.protection_group_ids[0]",
        "ghost",
    )
    assert error is not None
    await expect_status(
        policy_service.GetPolicy(api.GetPolicyRequest(policy_id="p2")), grpc.StatusCode.NOT_FOUND
    )


async def test_list_policies_pages_through_everything(
    policy_service, tmp_path, source_tree
) -> None:
    """Pages of two walk every policy once, in id order, and end with an empty token."""
    ids = [f"p{i:02d}" for i in range(5)]
    for policy_id in reversed(ids):
        policy = policy_over([("a", "127.0.0.1:1")], tmp_path, source_tree)
        await policy_service.CreatePolicy(
            api.CreatePolicyRequest(policy_id=policy_id, policy=policy)
        )
    seen, token = [], ""
    for _ in range(5):
        page = await policy_service.ListPolicies(
            api.ListPoliciesRequest(page_size=2, page_token=token)
        )
        seen += [p.id for p in page.policies]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    await expect_status(
        policy_service.ListPolicies(api.ListPoliciesRequest(page_token="garbage!")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token",
    )
    await expect_status(
        policy_service.ListPolicies(api.ListPoliciesRequest(page_size=-1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_size",
    )


async def test_update_with_mask_changes_only_named_fields(
    policy_service, tmp_path, source_tree
) -> None:
    """A field mask replaces only its fields; update_time moves, create_time does not."""
    policy = policy_over([("a", "127.0.0.1:1")], tmp_path, source_tree, description="old")
    created = await policy_service.CreatePolicy(
        api.CreatePolicyRequest(policy_id="nightly", policy=policy)
    )
    change = pb.BackupPolicy(id="nightly", name="renamed", description="ignored")
    updated = await policy_service.UpdatePolicy(
        api.UpdatePolicyRequest(policy=change, update_mask=field_mask_pb2.FieldMask(paths=["name"]))
    )
    assert updated.name == "renamed" and updated.description == "old"
    assert list(updated.computers) == list(created.computers)
    assert updated.create_time == created.create_time
    assert updated.update_time.ToNanoseconds() >= created.update_time.ToNanoseconds()
    assert await policy_service.GetPolicy(api.GetPolicyRequest(policy_id="nightly")) == updated


async def test_update_with_empty_mask_replaces_every_mutable_field(
    policy_service, tmp_path, source_tree
) -> None:
    """An empty mask (and '*') replaces all mutable fields, clearing those left empty."""
    policy = policy_over(
        [("a", "127.0.0.1:1")], tmp_path, source_tree, description="old", retention_points=3
    )
    await policy_service.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
    replacement = policy_over([("b", "127.0.0.1:2")], tmp_path, source_tree)
    replacement.id = "nightly"
    for mask in (field_mask_pb2.FieldMask(), field_mask_pb2.FieldMask(paths=["*"])):
        updated = await policy_service.UpdatePolicy(
            api.UpdatePolicyRequest(policy=replacement, update_mask=mask)
        )
        assert [c.name for c in updated.computers] == ["b"]
        assert updated.description == "" and updated.retention_points == 0


async def test_bad_update_keeps_the_stored_policy(policy_service, tmp_path, source_tree) -> None:
    """An update refused for a bad field or mask leaves the stored policy as it was."""
    policy = policy_over([("a", "127.0.0.1:1")], tmp_path, source_tree)
    created = await policy_service.CreatePolicy(
        api.CreatePolicyRequest(policy_id="nightly", policy=policy)
    )
    bad_address = pb.BackupPolicy(id="nightly", computers=[pb.Computer(name="x", address="nope")])
    await expect_status(
        policy_service.UpdatePolicy(
            api.UpdatePolicyRequest(
                policy=bad_address, update_mask=field_mask_pb2.FieldMask(paths=["computers"])
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "policy.computers[0].address",
    )
    await expect_status(
        policy_service.UpdatePolicy(
            api.UpdatePolicyRequest(
                policy=created, update_mask=field_mask_pb2.FieldMask(paths=["create_time"])
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "update_mask",
    )
    ghost = pb.BackupPolicy(id="nightly", protection_group_ids=["ghost"])
    await expect_status(
        policy_service.UpdatePolicy(
            api.UpdatePolicyRequest(
                policy=ghost, update_mask=field_mask_pb2.FieldMask(paths=["protection_group_ids"])
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert await policy_service.GetPolicy(api.GetPolicyRequest(policy_id="nightly")) == created


async def test_a_name_shared_by_two_computers_through_groups_is_refused(
    policy_service, tmp_path, source_tree
) -> None:
    """A computer name must stand for one computer across the policy and its groups: FAILED_PRECONDITION."""
    await policy_service.CreateProtectionGroup(
        api.CreateProtectionGroupRequest(
            protection_group_id="web", protection_group=group("web", ("ws1", "127.0.0.1:2"))
        )
    )
    policy = policy_over([("ws1", "127.0.0.1:1")], tmp_path, source_tree, group_ids=["web"])
    await expect_status(
        policy_service.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "ws1",
        "127.0.0.1:1",
        "127.0.0.1:2",
    )
    same_computer = policy_over([("ws1", "127.0.0.1:2")], tmp_path, source_tree, group_ids=["web"])
    created = await policy_service.CreatePolicy(
        api.CreatePolicyRequest(policy_id="nightly", policy=same_computer)
    )
    assert created.id == "nightly"

"""Every validation rule at the edge: INVALID_ARGUMENT naming the field, nothing stored."""

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb

GOOD_SOURCE = "/srv/data"
GOOD_REPOSITORY = "/backup/repo"


def policy(**fields: object) -> pb.BackupPolicy:
    values: dict[str, object] = {
        "name": "nightly",
        "computers": [pb.Computer(name="a", address="127.0.0.1:7001")],
        "source_paths": [GOOD_SOURCE],
        "repository": GOOD_REPOSITORY,
    }
    values.update(fields)
    return pb.BackupPolicy(**values)  # type: ignore[arg-type]


def computers(*pairs: tuple[str, str]) -> list[pb.Computer]:
    return [pb.Computer(name=name, address=address) for name, address in pairs]


MANY = [
    pb.Computer(name=f"c{i}", address=f"10.0.{i // 250}.{i % 250 + 1}:7000") for i in range(10_001)
]

# (case, request, field the error must name)
BAD_POLICIES = [
    (
        "id with capitals",
        api.CreatePolicyRequest(policy_id="Nightly", policy=policy()),
        "policy_id",
    ),
    (
        "id starting with digit",
        api.CreatePolicyRequest(policy_id="1abc", policy=policy()),
        "policy_id",
    ),
    ("id too long", api.CreatePolicyRequest(policy_id="a" * 64, policy=policy()), "policy_id"),
    ("id with underscore", api.CreatePolicyRequest(policy_id="a_b", policy=policy()), "policy_id"),
    ("missing name", api.CreatePolicyRequest(policy=policy(name="")), "policy.name"),
    ("blank name", api.CreatePolicyRequest(policy=policy(name="   ")), "policy.name"),
    ("name too long", api.CreatePolicyRequest(policy=policy(name="n" * 101)), "policy.name"),
    (
        "control character in name",
        api.CreatePolicyRequest(policy=policy(name="a\nb")),
        "policy.name",
    ),
    (
        "description too long",
        api.CreatePolicyRequest(policy=policy(description="d" * 1001)),
        "policy.description",
    ),
    (
        "no source paths",
        api.CreatePolicyRequest(policy=policy(source_paths=[])),
        "policy.source_paths",
    ),
    (
        "relative source",
        api.CreatePolicyRequest(policy=policy(source_paths=["data"])),
        "policy.source_paths[0]",
    ),
    (
        "source with ..",
        api.CreatePolicyRequest(policy=policy(source_paths=["/srv/../etc"])),
        "policy.source_paths[0]",
    ),
    (
        "path too long",
        api.CreatePolicyRequest(policy=policy(source_paths=["/" + "p" * 4096])),
        "policy.source_paths[0]",
    ),
    (
        "NUL in path",
        api.CreatePolicyRequest(policy=policy(source_paths=["/srv/a\x00b"])),
        "policy.source_paths[0]",
    ),
    (
        "missing repository",
        api.CreatePolicyRequest(policy=policy(repository="")),
        "policy.repository",
    ),
    (
        "relative repository",
        api.CreatePolicyRequest(policy=policy(repository="repo")),
        "policy.repository",
    ),
    (
        "repository inside source",
        api.CreatePolicyRequest(policy=policy(repository="/srv/data/repo")),
        "policy.repository",
    ),
    (
        "source inside repository",
        api.CreatePolicyRequest(policy=policy(source_paths=["/backup/repo/x"])),
        "policy.repository",
    ),
    (
        "negative retention",
        api.CreatePolicyRequest(policy=policy(retention_points=-1)),
        "policy.retention_points",
    ),
    (
        "huge retention",
        api.CreatePolicyRequest(policy=policy(retention_points=1001)),
        "policy.retention_points",
    ),
    (
        "negative throttle",
        api.CreatePolicyRequest(policy=policy(throttle_bytes_per_second=-5)),
        "policy.throttle_bytes_per_second",
    ),
    (
        "address without port",
        api.CreatePolicyRequest(policy=policy(computers=computers(("a", "host")))),
        "policy.computers[0].address",
    ),
    (
        "port out of range",
        api.CreatePolicyRequest(policy=policy(computers=computers(("a", "host:70000")))),
        "policy.computers[0].address",
    ),
    (
        "port zero",
        api.CreatePolicyRequest(policy=policy(computers=computers(("a", "host:0")))),
        "policy.computers[0].address",
    ),
    (
        "superscript digit port",
        api.CreatePolicyRequest(policy=policy(computers=computers(("a", "h:²")))),
        "policy.computers[0].address",
    ),
    (
        "Arabic-Indic digit port",
        api.CreatePolicyRequest(policy=policy(computers=computers(("a", "127.0.0.1:٨٠")))),
        "policy.computers[0].address",
    ),
    (
        "port of 5,000 digits",
        api.CreatePolicyRequest(policy=policy(computers=computers(("a", "h:" + "9" * 5000)))),
        "policy.computers[0].address",
    ),
    (
        "port not a number",
        api.CreatePolicyRequest(policy=policy(computers=computers(("a", "host:http")))),
        "policy.computers[0].address",
    ),
    (
        "empty address",
        api.CreatePolicyRequest(policy=policy(computers=computers(("a", "")))),
        "policy.computers[0].address",
    ),
    (
        "bad host",
        api.CreatePolicyRequest(policy=policy(computers=computers(("a", "bad_host!:80")))),
        "policy.computers[0].address",
    ),
    (
        "IPv6 without brackets",
        api.CreatePolicyRequest(policy=policy(computers=computers(("a", "::1:80")))),
        "policy.computers[0].address",
    ),
    (
        "bad IPv6 in brackets",
        api.CreatePolicyRequest(policy=policy(computers=computers(("a", "[::zz]:80")))),
        "policy.computers[0].address",
    ),
    (
        "unclosed bracket",
        api.CreatePolicyRequest(policy=policy(computers=computers(("a", "[::1:80")))),
        "policy.computers[0].address",
    ),
    (
        "computer without name",
        api.CreatePolicyRequest(policy=policy(computers=computers(("", "h:1")))),
        "policy.computers[0].name",
    ),
    (
        "duplicate computer name",
        api.CreatePolicyRequest(policy=policy(computers=computers(("a", "h:1"), ("a", "h:2")))),
        "policy.computers[1].name",
    ),
    (
        "duplicate address",
        api.CreatePolicyRequest(policy=policy(computers=computers(("a", "h:1"), ("b", "h:1")))),
        "policy.computers[1].address",
    ),
    (
        "over 10,000 computers",
        api.CreatePolicyRequest(policy=policy(computers=MANY)),
        "policy.computers",
    ),
    (
        "bad group id",
        api.CreatePolicyRequest(policy=policy(protection_group_ids=["Web"])),
        "policy.protection_group_ids[0]",
    ),
    (
        "group listed twice",
        api.CreatePolicyRequest(policy=policy(protection_group_ids=["web", "web"])),
        "policy.protection_group_ids",
    ),
]


async def expect_invalid(call, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    error = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert error.details().startswith(field), error.details()
    status = rpc_status.from_call(error)
    assert status is not None, "no rich status details"
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert bad_request.field_violations[0].field == field


@pytest.mark.parametrize(
    ("case", "request_", "field"), BAD_POLICIES, ids=[c[0] for c in BAD_POLICIES]
)
async def test_bad_policy_is_refused_naming_the_field(
    policy_service, case, request_, field
) -> None:
    """Each malformed policy is INVALID_ARGUMENT, naming the field, and nothing is stored."""
    await expect_invalid(policy_service.CreatePolicy(request_), field)
    listed = await policy_service.ListPolicies(api.ListPoliciesRequest())
    assert list(listed.policies) == []


async def test_good_addresses_are_accepted(policy_service) -> None:
    """Host names, IPv4 and bracketed IPv6 addresses are all valid computer addresses."""
    good = computers(
        ("a", "web-01.example.com:7000"),
        ("b", "127.0.0.1:1"),
        ("c", "[::1]:65535"),
        ("d", "localhost:50052"),
    )
    created = await policy_service.CreatePolicy(
        api.CreatePolicyRequest(policy=policy(computers=good))
    )
    assert [c.address for c in created.computers] == [c.address for c in good]


async def test_ten_thousand_computers_fit(policy_service) -> None:
    """A policy of exactly 10,000 computers is accepted and reads back whole."""
    created = await policy_service.CreatePolicy(
        api.CreatePolicyRequest(policy_id="big", policy=policy(computers=MANY[:10_000]))
    )
    fetched = await policy_service.GetPolicy(api.GetPolicyRequest(policy_id="big"))
    assert len(fetched.computers) == 10_000 == len(created.computers)


BAD_GROUPS = [
    (
        "bad id",
        api.CreateProtectionGroupRequest(
            protection_group_id="-web",
            protection_group=pb.ProtectionGroup(name="w", kind=pb.PROTECTION_GROUP_KIND_MANUAL),
        ),
        "protection_group_id",
    ),
    (
        "no name",
        api.CreateProtectionGroupRequest(
            protection_group=pb.ProtectionGroup(kind=pb.PROTECTION_GROUP_KIND_MANUAL)
        ),
        "protection_group.name",
    ),
    (
        "no kind",
        api.CreateProtectionGroupRequest(protection_group=pb.ProtectionGroup(name="w")),
        "protection_group.kind",
    ),
    (
        "unknown kind",
        api.CreateProtectionGroupRequest(protection_group=pb.ProtectionGroup(name="w", kind=7)),
        "protection_group.kind",
    ),  # type: ignore[arg-type]
    (
        "bad computer",
        api.CreateProtectionGroupRequest(
            protection_group=pb.ProtectionGroup(
                name="w", kind=pb.PROTECTION_GROUP_KIND_MANUAL, computers=computers(("a", "x"))
            )
        ),
        "protection_group.computers[0].address",
    ),
]


@pytest.mark.parametrize(("case", "request_", "field"), BAD_GROUPS, ids=[c[0] for c in BAD_GROUPS])
async def test_bad_group_is_refused_naming_the_field(policy_service, case, request_, field) -> None:
    """Each malformed protection group is INVALID_ARGUMENT, naming the field."""
    await expect_invalid(policy_service.CreateProtectionGroup(request_), field)


# (rpc name, request, field)
BAD_IDS = [
    ("GetPolicy", api.GetPolicyRequest(), "policy_id"),
    ("GetPolicy", api.GetPolicyRequest(policy_id="UPPER"), "policy_id"),
    ("DeletePolicy", api.DeletePolicyRequest(policy_id="x y"), "policy_id"),
    ("UpdatePolicy", api.UpdatePolicyRequest(policy=pb.BackupPolicy(name="x")), "policy.id"),
    ("StartPolicy", api.StartPolicyRequest(), "policy_id"),
    ("StartPolicy", api.StartPolicyRequest(policy_id="9lives"), "policy_id"),
    ("StopPolicy", api.StopPolicyRequest(policy_id="a" * 64), "policy_id"),
    ("GetSession", api.GetSessionRequest(), "session_id"),
    ("GetSession", api.GetSessionRequest(session_id="S-1"), "session_id"),
    ("ListSessions", api.ListSessionsRequest(policy_id="Bad"), "policy_id"),
    ("ListSessions", api.ListSessionsRequest(page_size=-3), "page_size"),
    ("GetProtectionGroup", api.GetProtectionGroupRequest(), "protection_group_id"),
    (
        "DeleteProtectionGroup",
        api.DeleteProtectionGroupRequest(protection_group_id="_"),
        "protection_group_id",
    ),
    ("ListProtectionGroups", api.ListProtectionGroupsRequest(page_token="%%%"), "page_token"),
]


@pytest.mark.parametrize(
    ("rpc", "request_", "field"), BAD_IDS, ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(BAD_IDS)]
)
async def test_malformed_ids_are_invalid_argument(policy_service, rpc, request_, field) -> None:
    """Missing or ill-shaped ids and list parameters are INVALID_ARGUMENT naming the field."""
    await expect_invalid(getattr(policy_service, rpc)(request_), field)


async def test_watch_session_with_bad_id_is_invalid_argument(policy_service) -> None:
    """The streaming RPC validates its id too, with the same rich status."""
    await expect_invalid(
        _drain(policy_service.WatchSession(api.WatchSessionRequest(session_id="NO"))), "session_id"
    )


async def _drain(stream) -> list[pb.PolicySession]:
    return [item async for item in stream]

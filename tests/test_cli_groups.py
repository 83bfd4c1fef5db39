"""`backupctl group update` and UpdateProtectionGroup, against a live server."""

import json
from pathlib import Path

import grpc
import pytest
from cli_support import backupctl, one_line_error
from google.protobuf import field_mask_pb2

from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb
from backup_server.app import BackupServer


async def test_group_update_adds_and_removes_computers_in_place(
    server: BackupServer, tmp_path: Path, source_tree: Path
) -> None:
    """--add-computer and --remove-computer change a group that a policy uses, without
    deleting it; the policy's next start reaches the new list; a bad name is one clear error."""
    made = await backupctl(
        server.address, "group", "create", "lab", "--name", "Lab",
        "--computer", "ws1=127.0.0.1:50061", "--computer", "ws2=127.0.0.1:50062",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    policy = await backupctl(
        server.address, "policy", "create", "nightly", "--name", "Nightly", "--group", "lab",
        "--source", str(source_tree), "--repository", str(tmp_path / "r"),
    )  # fmt: skip
    assert policy.returncode == 0, policy.stderr
    updated = await backupctl(
        server.address, "group", "update", "lab", "--remove-computer", "ws1",
        "--add-computer", "ws3=127.0.0.1:50063", "--name", "Lab (west)",
    )  # fmt: skip
    assert updated.returncode == 0, updated.stderr
    assert "updated protection group lab" in updated.stdout and "2 computers:" in updated.stdout
    shown = json.loads(
        (await backupctl(server.address, "group", "show", "lab", "-o", "json")).stdout
    )
    assert shown["name"] == "Lab (west)"
    assert [(c["name"], c["address"]) for c in shown["computers"]] == [
        ("ws2", "127.0.0.1:50062"),
        ("ws3", "127.0.0.1:50063"),
    ]
    missing = await backupctl(server.address, "group", "update", "lab", "--remove-computer", "ws9")
    assert missing.returncode == 1 and "no computer 'ws9' in the group" in missing.stderr
    started = json.loads((await backupctl(server.address, "start", "nightly", "-o", "json")).stdout)
    assert sorted(r["computer"]["name"] for r in started["computerResults"]) == ["ws2", "ws3"]


async def test_update_that_would_break_a_policy_is_refused(
    server: BackupServer, policy_service, tmp_path: Path, source_tree: Path
) -> None:
    """A group change giving a policy two computers of one name is FAILED_PRECONDITION naming
    the policy, and changes nothing; an unknown field in the mask is INVALID_ARGUMENT."""
    await policy_service.CreateProtectionGroup(
        api.CreateProtectionGroupRequest(
            protection_group_id="lab",
            protection_group=pb.ProtectionGroup(
                name="Lab", kind=pb.PROTECTION_GROUP_KIND_MANUAL,
                computers=[pb.Computer(name="ws1", address="127.0.0.1:50061")],
            ),
        )
    )  # fmt: skip
    await policy_service.CreatePolicy(
        api.CreatePolicyRequest(
            policy_id="nightly",
            policy=pb.BackupPolicy(
                name="Nightly", protection_group_ids=["lab"],
                computers=[pb.Computer(name="db", address="127.0.0.1:50070")],
                source_paths=[str(source_tree)], repository=str(tmp_path / "r"),
            ),
        )
    )  # fmt: skip
    clash = await backupctl(
        server.address, "group", "update", "lab", "--add-computer", "db=127.0.0.1:50071"
    )
    line = one_line_error(clash, "FAILED_PRECONDITION")
    assert "policy 'nightly'" in line and "'db'" in line
    group = await policy_service.GetProtectionGroup(
        api.GetProtectionGroupRequest(protection_group_id="lab")
    )
    assert [c.name for c in group.computers] == ["ws1"]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await policy_service.UpdateProtectionGroup(
            api.UpdateProtectionGroupRequest(
                protection_group=pb.ProtectionGroup(id="lab"),
                update_mask=field_mask_pb2.FieldMask(paths=["id"]),
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "update_mask" in (raised.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as absent:
        await policy_service.UpdateProtectionGroup(
            api.UpdateProtectionGroupRequest(protection_group=pb.ProtectionGroup(id="nope", name="x"))
        )
    assert absent.value.code() == grpc.StatusCode.NOT_FOUND

"""ListRestorePoints over real gRPC, and the agent's points / restore / verify commands."""

import asyncio
import os
from pathlib import Path

import grpc
import pytest
from engine_support import MIB, cli, make_tree, policy, restored_source, snapshot, write
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from agent_stub.app import AgentServer
from backup.v1 import agent_control_pb2 as api
from backup.v1 import resources_pb2 as pb
from backup.v1.agent_control_pb2_grpc import AgentControlStub

from conftest import job_ends

DEADLINE = 1.0


async def run_job(stub, backup_policy: pb.BackupPolicy) -> pb.Job:
    reply = await stub.StartJob(api.StartJobRequest(policy=backup_policy), timeout=DEADLINE)
    return await job_ends(stub, reply.job.id, seconds=30)


@pytest.fixture
async def agent(start_agent) -> AgentServer:
    return await start_agent("a1")


async def test_restore_points_are_listed_newest_first(agent, tmp_path: Path) -> None:
    """Each committed job adds a point with its job, counts and added bytes; newest first."""
    source = tmp_path / "source"
    write(source / "data", os.urandom(MIB))
    write(source / "empty", b"")
    nightly = policy(source, tmp_path / "repository", "nightly")
    weekly = policy(source, tmp_path / "repository", "weekly")
    async with grpc.aio.insecure_channel(agent.address) as channel:
        stub = AgentControlStub(channel)
        first = await run_job(stub, nightly)
        second = await run_job(stub, nightly)
        third = await run_job(stub, weekly)
        assert [job.state for job in (first, second, third)] == [pb.JOB_STATE_SUCCEEDED] * 3
        listed = await stub.ListRestorePoints(api.ListRestorePointsRequest(), timeout=DEADLINE)
        only = await stub.ListRestorePoints(
            api.ListRestorePointsRequest(policy_id="nightly"), timeout=DEADLINE
        )
    points = list(listed.restore_points)
    assert [p.id for p in points] == [
        third.restore_point_id,
        second.restore_point_id,
        first.restore_point_id,
    ]
    assert [p.job_id for p in points] == [third.id, second.id, first.id]
    assert [p.policy_id for p in points] == ["weekly", "nightly", "nightly"]
    assert all(p.file_count == 2 and p.total_bytes == MIB for p in points)
    assert points[2].added_bytes >= MIB and points[1].added_bytes == points[0].added_bytes == 0
    assert second.bytes_read == 0 and third.bytes_read == MIB and third.bytes_written == 0
    assert points[0].create_time.ToNanoseconds() >= points[1].create_time.ToNanoseconds() > 0
    assert [p.id for p in only.restore_points] == [p.id for p in points[1:]]


async def refusal(agent: AgentServer, policy_id: str) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(agent.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await AgentControlStub(channel).ListRestorePoints(
                api.ListRestorePointsRequest(policy_id=policy_id), timeout=DEADLINE
            )
    return raised.value


async def test_bad_policy_id_is_invalid_argument_naming_the_field(agent) -> None:
    """A malformed policy_id is INVALID_ARGUMENT with a field violation for policy_id."""
    error = await refusal(agent, "Not An Id")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error_details_pb2.BadRequest()
    rpc_status.from_call(error).details[0].Unpack(details)
    assert details.field_violations[0].field == "policy_id"


async def test_policy_never_received_is_not_found(agent) -> None:
    """A well-shaped policy id this agent never applied is NOT_FOUND."""
    error = await refusal(agent, "never-sent")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "never-sent" in (error.details() or "")


@pytest.mark.parametrize(
    ("where", "code"),
    [
        ("closed_address", grpc.StatusCode.UNAVAILABLE),
        ("hung_address", grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
async def test_unreachable_agent_costs_one_deadline(request, where: str, code) -> None:
    """A closed port fails at once; a computer that never answers costs one deadline."""
    address = request.getfixturevalue(where)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await AgentControlStub(channel).ListRestorePoints(
                api.ListRestorePointsRequest(), timeout=0.5
            )
    assert raised.value.code() == code
    assert loop.time() - started < 3.0


async def test_command_line_lists_restores_and_verifies(agent, tmp_path: Path) -> None:
    """points, restore and verify work on what the agent wrote, and restore is exact."""
    source = make_tree(tmp_path / "source")
    data_dir = agent.config.data_dir
    async with grpc.aio.insecure_channel(agent.address) as channel:
        job = await run_job(AgentControlStub(channel), policy(source, tmp_path / "repository"))
    point_id = job.restore_point_id
    listed = await asyncio.to_thread(cli, "points", "--data-dir", str(data_dir))
    assert listed.returncode == 0 and point_id in listed.stdout and "nightly" in listed.stdout
    target = tmp_path / "restored"
    restore = await asyncio.to_thread(
        cli, "restore", point_id, "--to", str(target), "--data-dir", str(data_dir)
    )
    assert restore.returncode == 0, restore.stderr
    assert snapshot(restored_source(target, source)) == snapshot(source)
    verify = await asyncio.to_thread(cli, "verify", "--data-dir", str(data_dir), point_id)
    assert verify.returncode == 0 and "OK" in verify.stdout


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["points", "--policy", "never-sent"], "'never-sent' was never received"),
        (["restore", "rp-20990101-000000-00000000", "--to", "{tmp}/t"], "not found"),
        (["restore", "../../etc", "--to", "{tmp}/t"], "not a restore point id"),
        (["verify", "rp-20990101-000000-00000000"], "not found"),
    ],
)
def test_command_line_errors_are_one_line(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    """Unknown policies and points exit 1 with one clear line, never a traceback."""
    (tmp_path / "agent" / "policies").mkdir(parents=True)
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in arguments]
    done = cli(*args, "--data-dir", str(tmp_path / "agent"))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_command_line_without_agent_state_says_so(tmp_path: Path) -> None:
    """A data dir with no agent state is one clear line, exit 1."""
    done = cli("points", "--data-dir", str(tmp_path / "nothing"))
    assert done.returncode == 1
    assert (
        done.stderr == f"backup-agent: no agent state in {tmp_path / 'nothing'} "
        "(no policies/ there)\n"
    )

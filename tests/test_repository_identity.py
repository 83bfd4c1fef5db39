"""A repository's identity: never silently re-created, and remembered across moves."""

import json
import os
import shutil
from pathlib import Path

import grpc
from engine_support import MIB, cli, policy, restored_source, snapshot, write
from test_agent_points import run_job

from backup.v1 import agent_control_pb2 as api
from backup.v1 import resources_pb2 as pb
from backup.v1.agent_control_pb2_grpc import AgentControlStub


async def listed(stub: AgentControlStub) -> list[str]:
    reply = await stub.ListRestorePoints(api.ListRestorePointsRequest(), timeout=5)
    return [point.id for point in reply.restore_points]


async def test_unmounted_repository_fails_the_job_and_verify_exits_2(
    start_agent, tmp_path: Path
) -> None:
    """With the share gone, the job fails with one clear line and nothing is created."""
    agent = await start_agent("pc-1")
    source = write(tmp_path / "home" / "file", os.urandom(MIB)).parent
    share = tmp_path / "nas"
    repository = share / "repository"
    backup_policy = policy(source, repository)
    async with grpc.aio.insecure_channel(agent.address) as channel:
        stub = AgentControlStub(channel)
        first = await run_job(stub, backup_policy)
        assert first.state == pb.JOB_STATE_SUCCEEDED, first.error
        config = json.loads((repository / "config.json").read_text())
        shutil.move(share, tmp_path / "unmounted")  # the mount point is an empty directory
        share.mkdir()
        failed = await run_job(stub, backup_policy)
        assert failed.state == pb.JOB_STATE_FAILED
        assert failed.error == (
            f"repository {repository} is missing: expected id {config['id']}; is the share mounted?"
        )
        assert list(share.iterdir()) == []
        done = cli("verify", "--data-dir", str(agent.config.data_dir))
        assert done.returncode == 2, done.stdout
        assert f"missing: repository {repository} is missing" in done.stdout
        shutil.rmtree(share)
        shutil.move(tmp_path / "unmounted", share)  # mounted again: all is as it was
        again = await run_job(stub, backup_policy)
        assert again.state == pb.JOB_STATE_SUCCEEDED, again.error
        assert await listed(stub) == [again.restore_point_id, first.restore_point_id]


async def test_another_repository_in_its_place_fails_the_job(start_agent, tmp_path: Path) -> None:
    """A repository with another id where this policy's was is refused, not written to."""
    agent = await start_agent("pc-1")
    source = write(tmp_path / "home" / "file", b"data").parent
    repository = tmp_path / "nas" / "repository"
    async with grpc.aio.insecure_channel(agent.address) as channel:
        stub = AgentControlStub(channel)
        assert (await run_job(stub, policy(source, repository))).state == pb.JOB_STATE_SUCCEEDED
        shutil.rmtree(repository)
        other = await run_job(stub, policy(source, repository, "other-policy"))
        assert other.state == pb.JOB_STATE_SUCCEEDED  # a new policy may create one
        refused = await run_job(stub, policy(source, repository))
        assert refused.state == pb.JOB_STATE_FAILED
        assert "another repository is there" in refused.error


def test_verify_with_nothing_to_verify_exits_2(tmp_path: Path) -> None:
    """An agent that never wrote a restore point has nothing to verify: exit 2, not OK."""
    (tmp_path / "agent" / "policies").mkdir(parents=True)
    done = cli("verify", "--data-dir", str(tmp_path / "agent"))
    assert done.returncode == 2
    assert "nothing to verify" in done.stdout


async def test_moving_a_policy_keeps_its_earlier_points(start_agent, tmp_path: Path) -> None:
    """After the policy's repository changes, the old points stay listed, restorable, verified."""
    agent = await start_agent("pc-1")
    source = write(tmp_path / "home" / "file", os.urandom(MIB)).parent
    expected = snapshot(source)
    async with grpc.aio.insecure_channel(agent.address) as channel:
        stub = AgentControlStub(channel)
        old = await run_job(stub, policy(source, tmp_path / "old-repository"))
        write(source / "file", os.urandom(MIB))
        new = await run_job(stub, policy(source, tmp_path / "new-repository"))
        assert old.state == new.state == pb.JOB_STATE_SUCCEEDED
        assert await listed(stub) == [new.restore_point_id, old.restore_point_id]
    data_dir = str(agent.config.data_dir)
    target = tmp_path / "restored"
    done = cli("restore", old.restore_point_id, "--to", str(target), "--data-dir", data_dir)
    assert done.returncode == 0, done.stderr
    assert snapshot(restored_source(target, source)) == expected
    verify = cli("verify", "--data-dir", data_dir)
    assert verify.returncode == 0, verify.stdout
    assert "verified 2 restore points" in verify.stdout

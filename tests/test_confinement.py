"""--allow-path: a policy whose sources or repository fall outside the agent's roots is refused with FAILED_PRECONDITION naming the path."""

import logging
import os

import grpc
import pytest

from agent_stub.confinement import AllowedPaths
from backup.errors import FailedPrecondition
from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb

from conftest import job_ends, policy_over


def policy(sources, repository) -> pb.BackupPolicy:
    return pb.BackupPolicy(
        id="nightly",
        name="nightly",
        source_paths=[str(s) for s in sources],
        repository=str(repository),
    )


@pytest.fixture
def roots(tmp_path, source_tree):
    """An allowed root holding the source tree, and a secret directory outside it."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    source_tree.rename(allowed / "source")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "shadow").write_text("root:x:0:0\n")
    return allowed, secret


async def start_job(control, request_policy):
    return await control.StartJob(agent_api.StartJobRequest(policy=request_policy))


async def test_paths_inside_the_roots_run(start_agent, agent_control, roots) -> None:
    """Sources and repository under an allowed root: the job runs and succeeds."""
    allowed, _ = roots
    agent = await start_agent("web-1", allow_paths=(allowed,))
    control = agent_control(agent.address)
    reply = await start_job(control, policy([allowed / "source"], allowed / "repository"))
    assert (await job_ends(control, reply.job.id)).state == pb.JOB_STATE_SUCCEEDED


@pytest.mark.parametrize(
    ("which", "field"),
    [("source", "policy.source_paths[1]"), ("repository", "policy.repository")],
)
async def test_paths_outside_the_roots_are_refused(
    start_agent, agent_control, roots, which, field
) -> None:
    """A source or a repository outside every root is FAILED_PRECONDITION naming the field and the path; no job starts."""
    allowed, secret = roots
    agent = await start_agent("web-1", allow_paths=(allowed,))
    control = agent_control(agent.address)
    sources = [allowed / "source", secret] if which == "source" else [allowed / "source"]
    repository = secret / "repository" if which == "repository" else allowed / "repository"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await start_job(control, policy(sources, repository))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    outside = secret if which == "source" else secret / "repository"
    assert refused.value.details() == (
        f"{field}: {str(outside)!r} is outside the paths this agent allows"
    )
    assert list((await control.ListJobs(agent_api.ListJobsRequest())).jobs) == []


async def test_symlinks_are_resolved_before_the_check(start_agent, agent_control, roots) -> None:
    """A symlink inside the root that points outside it, as a source or as the repository's parent, is refused with where it leads."""
    allowed, secret = roots
    (allowed / "escape").symlink_to(secret)
    agent = await start_agent("web-1", allow_paths=(allowed,))
    control = agent_control(agent.address)
    for candidate, resolved in (
        (policy([allowed / "escape" / "shadow"], allowed / "repository"), secret / "shadow"),
        (policy([allowed / "source"], allowed / "escape" / "repository"), secret / "repository"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await start_job(control, candidate)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"(it resolves to {str(resolved)!r}) is outside" in refused.value.details()
    assert not (secret / "repository").exists()


def test_a_root_given_through_a_symlink_is_resolved_too(roots, tmp_path) -> None:
    """A root named through a symlink admits the real paths beneath it, and a sibling whose name extends the root's is outside."""
    allowed, _ = roots
    (tmp_path / "alias").symlink_to(allowed)
    confined = AllowedPaths([tmp_path / "alias"])
    confined.check(policy([allowed / "source"], allowed / "repository"))
    (tmp_path / "allowed-not").mkdir()
    with pytest.raises(FailedPrecondition, match="outside the paths this agent allows"):
        confined.check(policy([tmp_path / "allowed-not"], allowed / "repository"))


async def test_without_allow_path_everything_is_allowed_with_a_warning(
    start_agent, agent_control, roots, tmp_path, caplog
) -> None:
    """Without --allow-path the agent logs a warning at start-up, and any path is allowed."""
    _, secret = roots
    with caplog.at_level(logging.WARNING, logger="agent_stub"):
        agent = await start_agent("web-1")
    assert any("no --allow-path" in record.getMessage() for record in caplog.records)
    control = agent_control(agent.address)
    reply = await start_job(control, policy([secret], tmp_path / "anywhere"))
    assert (await job_ends(control, reply.job.id)).state == pb.JOB_STATE_SUCCEEDED


async def test_the_server_records_a_confined_computer_as_rejected(
    policy_service, start_agent, roots, tmp_path
) -> None:
    """Through the fan-out, a policy outside an agent's roots is REJECTED on that computer with the path in the detail."""
    allowed, secret = roots
    confined = await start_agent("web-1", allow_paths=(allowed,))
    policy_ = policy_over([("web-1", confined.address)], tmp_path, secret)
    policy_.repository = str(allowed / "repository")
    await policy_service.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy_))
    session = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    [result] = session.computer_results
    assert result.delivery == pb.DELIVERY_REJECTED
    assert result.detail.startswith("FAILED_PRECONDITION: policy.source_paths[0]: ")
    assert str(secret) in result.detail
    assert os.listdir(allowed) == ["source"]

"""BackupPolicy.exclude_patterns: gitignore rules checked at the server and the agent, applied by the agent's scan, shown and set by backupctl."""

import grpc
import pytest
from cli_support import backupctl
from engine_support import write

from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb

from conftest import job_ends, point_files, policy_over

BAD_PATTERNS = [
    ("trailing\\", "is not a gitignore pattern"),
    ("[z-a]", "is not a gitignore pattern"),
    ("# a comment", "is a comment"),
    ("two\nlines", "control characters"),
    ("  ", "is required"),
]


@pytest.fixture
def tree(tmp_path):
    """A source holding files each pattern should drop, and look-alikes it must keep."""
    source = tmp_path / "source"
    kept = ["a.txt", "keep.tmp", "docs/cache.txt", "sub/logs/app.log", "sub/note.md"]
    dropped = ["b.tmp", "sub/c.tmp", "cache/x.bin", "sub/cache/y.bin", "logs/app.log"]
    for name in kept + dropped:
        write(source / name, name.encode())
    return source, kept, dropped


def patterns_for(source) -> list[str]:
    # Anchored to /, like every path the agent stores: this logs/, not sub/logs/.
    return ["*.tmp", "!keep.tmp", "cache/", f"{source}/logs/**"]


async def test_the_restore_point_lacks_exactly_the_excluded_files(
    policy_service, start_agent, agent_control, tmp_path, tree
) -> None:
    """Through the server and a real agent, the restore point holds every file but those the patterns match, and no excluded directory."""
    source, kept, dropped = tree
    agent = await start_agent("web-1")
    policy = policy_over([("web-1", agent.address)], tmp_path, source)
    policy.exclude_patterns[:] = patterns_for(source)
    await policy_service.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
    session = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    [result] = session.computer_results
    job = await job_ends(agent_control(agent.address), result.job_id)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
    stored = str(source).lstrip("/")
    files = point_files(tmp_path / "repository", job.restore_point_id)
    assert set(files) == {f"{stored}/{name}" for name in kept}
    assert all(files[f"{stored}/{name}"] == name.encode() for name in kept)


@pytest.mark.parametrize(("pattern", "why"), BAD_PATTERNS)
async def test_the_server_refuses_a_bad_pattern(
    policy_service, tmp_path, source_tree, pattern, why
) -> None:
    """CreatePolicy with a pattern that is not one gitignore rule is INVALID_ARGUMENT naming its index."""
    policy = policy_over([], tmp_path, source_tree, exclude_patterns=["*.tmp", pattern])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await policy_service.CreatePolicy(api.CreatePolicyRequest(policy=policy))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("policy.exclude_patterns[1]: ")
    assert why in refused.value.details()


async def test_the_agent_refuses_a_bad_pattern(
    start_agent, agent_control, tmp_path, source_tree
) -> None:
    """An agent does not trust the server's checks: StartJob with a bad pattern is INVALID_ARGUMENT and no job starts."""
    control = agent_control((await start_agent("web-1")).address)
    policy = policy_over([], tmp_path, source_tree, exclude_patterns=["trailing\\"])
    policy.id = "nightly"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await control.StartJob(agent_api.StartJobRequest(policy=policy))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("policy.exclude_patterns[0]: ")
    assert list((await control.ListJobs(agent_api.ListJobsRequest())).jobs) == []


async def test_backupctl_sets_and_shows_excludes(server, tmp_path, source_tree) -> None:
    """`policy create --exclude` (repeated) stores the patterns in order and `policy show` lists them."""
    created = await backupctl(
        server.address, "policy", "create", "nightly", "--name", "Nightly",
        "--source", str(source_tree), "--repository", str(tmp_path / "repository"),
        "--exclude", "*.tmp", "--exclude", "cache/", "--exclude", "/var/log/**",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    shown = await backupctl(server.address, "policy", "show", "nightly")
    assert shown.returncode == 0, shown.stderr
    assert "*.tmp, cache/, /var/log/**" in shown.stdout

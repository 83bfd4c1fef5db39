"""The agent's data dir and its folders are 0700 whatever the umask, and an agent refuses a data dir that others may write into."""

import os
import stat
from contextlib import contextmanager

import pytest

from agent_stub.app import AgentConfig, AgentServer
from backup.v1 import agent_control_pb2 as agent_api

from conftest import job_ends, policy_over


@contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def modes_under(root) -> dict[str, int]:
    """The permission bits of `root` and every directory below it, by relative path."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for directory, names, _ in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            found[os.path.relpath(path, root)] = stat.S_IMODE(os.stat(path).st_mode)
    return found


async def test_everything_is_private_under_umask_000(
    start_agent, agent_control, tmp_path, source_tree
) -> None:
    """Under umask 000 a new data dir (and its missing parent), its record folders and what a job adds are 0700, and its files 0600."""
    with umask(0):
        agent = await start_agent("web-1")
        control = agent_control(agent.address)
        policy = policy_over([], tmp_path, source_tree)
        policy.id = "nightly"
        reply = await control.StartJob(agent_api.StartJobRequest(policy=policy))
        await job_ends(control, reply.job.id)
    data_dir = agent.config.data_dir
    assert stat.S_IMODE(data_dir.parent.stat().st_mode) == 0o700
    modes = modes_under(data_dir)
    assert {"policies", "jobs"} <= set(modes)
    assert set(modes.values()) == {0o700}
    for directory, _, files in os.walk(data_dir):
        for name in files:
            mode = stat.S_IMODE(os.lstat(os.path.join(directory, name)).st_mode)
            assert mode & 0o077 == 0, f"{name} is {mode:04o}"


@pytest.mark.parametrize("folder", [".", "policies", "jobs"])
async def test_a_data_dir_writable_by_others_is_refused(tmp_path, folder) -> None:
    """An agent does not start on a data dir, or a record folder in it, that other users may write into, and says how to fix it."""
    data_dir = tmp_path / "agent"
    for name in ("policies", "jobs"):
        (data_dir / name).mkdir(parents=True)
    (data_dir / folder).chmod(0o777)
    agent = AgentServer(AgentConfig("127.0.0.1:0", "web-1", data_dir))
    with pytest.raises(SystemExit, match="writable by other users .* chmod 700"):
        await agent.start()
    assert not (data_dir / "agent.json").exists()
    (data_dir / folder).chmod(0o700)
    await agent.start()
    await agent.stop()

"""What an agent reports about its jobs after a restart and when they fail: the repository is the truth."""

import asyncio
import logging
import subprocess
import sys

from disk_support import final_job_saves_fail
from test_agent import backup_policy

from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import resources_pb2 as pb

from conftest import job_ends, restore_points


async def test_a_job_that_succeeded_while_the_data_dir_filled_stays_succeeded(
    start_agent, agent_control, tmp_path, source_tree, monkeypatch
) -> None:
    """Issue 10 item 10: its final record never reached the disk, but its restore point did: after a restart it is SUCCEEDED."""
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    store = agent.jobs._store
    original = final_job_saves_fail(store, monkeypatch)
    started = await control.StartJob(
        agent_api.StartJobRequest(session_id="s-1", policy=backup_policy(tmp_path, source_tree))
    )
    ended = await job_ends(control, started.job.id)
    assert ended.state == pb.JOB_STATE_SUCCEEDED
    await agent.stop()
    monkeypatch.setattr(store, "save_job", original)
    restarted = await start_agent("a1")
    job = await agent_control(restarted.address).GetJob(
        agent_api.GetJobRequest(job_id=started.job.id)
    )
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
    assert job.restore_point_id == ended.restore_point_id
    assert restore_points(tmp_path / "repository") == [ended.restore_point_id]


async def test_a_failed_job_is_logged_at_warning_with_its_error(
    start_agent, agent_control, tmp_path, caplog
) -> None:
    """A job that fails (its source is missing) is a WARNING line carrying the error."""
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    started = await control.StartJob(
        agent_api.StartJobRequest(policy=backup_policy(tmp_path, tmp_path / "missing"))
    )
    ended = await job_ends(control, started.job.id)
    assert ended.state == pb.JOB_STATE_FAILED
    lines = [
        r for r in caplog.records if r.name == "agent_stub.jobs" and started.job.id in r.message
    ]
    failed = [r for r in lines if "failed" in r.getMessage()]
    assert failed and failed[-1].levelno == logging.WARNING
    assert ended.error in failed[-1].getMessage()


def agent_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_stub", "run", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_run_wait_exits_0_only_when_the_job_succeeded(
    start_agent, agent_control, tmp_path, source_tree
) -> None:
    """`backup-agent run POLICY --wait` shows progress, exits 0 on success and 3 when the job failed."""
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    data_dir = str(agent.config.data_dir)
    good = await control.StartJob(
        agent_api.StartJobRequest(policy=backup_policy(tmp_path, source_tree))
    )
    await job_ends(control, good.job.id)
    result = await asyncio.to_thread(agent_run, "nightly", "--data-dir", data_dir, "--wait")
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert f"job {job_id} succeeded" in result.stderr and "restore point" in result.stderr
    bad = await control.StartJob(
        agent_api.StartJobRequest(policy=backup_policy(tmp_path, tmp_path / "missing", "broken"))
    )
    await job_ends(control, bad.job.id)
    result = await asyncio.to_thread(agent_run, "broken", "--data-dir", data_dir, "--wait")
    assert result.returncode == 3, result.stderr
    assert "failed" in result.stderr and "Traceback" not in result.stderr

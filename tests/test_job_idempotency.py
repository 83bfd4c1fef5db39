"""StartJob is idempotent per session, and ListJobs filters by session and policy, on a real agent."""

from test_agent import backup_policy

from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import resources_pb2 as pb

from conftest import job_ends


async def test_a_repeated_start_returns_the_same_job(
    start_agent, agent_control, tmp_path, source_tree
) -> None:
    """A resend of a session's StartJob returns its job, already_running only while it runs, and starts nothing."""
    (source_tree / "big.bin").write_bytes(b"i" * 300_000)
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    request = agent_api.StartJobRequest(
        session_id="s-1",
        policy=backup_policy(tmp_path, source_tree, throttle_bytes_per_second=600_000),
    )
    first = await control.StartJob(request)
    assert not first.already_running
    again = await control.StartJob(request)
    assert again.already_running and again.job.id == first.job.id
    ended = await job_ends(control, first.job.id)
    after = await control.StartJob(request)
    assert not after.already_running and after.job == ended
    jobs = (await control.ListJobs(agent_api.ListJobsRequest())).jobs
    assert [job.id for job in jobs] == [first.job.id]


async def test_another_session_starts_a_new_job_once_ended(
    start_agent, agent_control, tmp_path, source_tree
) -> None:
    """Idempotency is per session: a new session's start runs a new job."""
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    policy = backup_policy(tmp_path, source_tree)
    first = await control.StartJob(agent_api.StartJobRequest(session_id="s-1", policy=policy))
    await job_ends(control, first.job.id)
    second = await control.StartJob(agent_api.StartJobRequest(session_id="s-2", policy=policy))
    assert not second.already_running and second.job.id != first.job.id


async def test_idempotency_survives_an_agent_restart(
    start_agent, agent_control, tmp_path, source_tree
) -> None:
    """The history read back at start-up still answers a repeated session with its job."""
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    request = agent_api.StartJobRequest(
        session_id="s-1", policy=backup_policy(tmp_path, source_tree)
    )
    first = await control.StartJob(request)
    ended = await job_ends(control, first.job.id)
    await agent.stop()
    restarted = await start_agent("a1")
    again = await agent_control(restarted.address).StartJob(request)
    assert not again.already_running and again.job == ended


async def test_list_jobs_filters_by_session_and_policy(
    start_agent, agent_control, tmp_path, source_tree
) -> None:
    """session_id and policy_id combine; an unknown session gives an empty list."""
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    nightly = await control.StartJob(
        agent_api.StartJobRequest(session_id="s-1", policy=backup_policy(tmp_path, source_tree))
    )
    weekly = await control.StartJob(
        agent_api.StartJobRequest(
            session_id="s-1", policy=backup_policy(tmp_path, source_tree, "weekly")
        )
    )
    other = await control.StartJob(
        agent_api.StartJobRequest(
            session_id="s-2", policy=backup_policy(tmp_path, source_tree, "monthly")
        )
    )
    for job in (nightly, weekly, other):
        await job_ends(control, job.job.id)

    async def listed(**fields: str) -> set[str]:
        reply = await control.ListJobs(agent_api.ListJobsRequest(**fields))
        return {job.id for job in reply.jobs}

    assert await listed(session_id="s-1") == {nightly.job.id, weekly.job.id}
    assert await listed(session_id="s-1", policy_id="weekly") == {weekly.job.id}
    assert await listed(session_id="s-2", policy_id="weekly") == set()
    assert await listed(session_id="s-none") == set()
    assert await listed() == {nightly.job.id, weekly.job.id, other.job.id}


async def test_only_the_kept_history_answers_repeats(start_agent) -> None:
    """The agent keeps its last 1,000 jobs; a session whose job fell out of them is forgotten too."""
    agent = await start_agent("a1")
    runner = agent.jobs
    for index in range(1001):
        job = pb.Job(
            id=f"j-{index:04d}",
            policy_id="nightly",
            session_id=f"s-{index}",
            state=pb.JOB_STATE_SUCCEEDED,
        )
        job.start_time.FromSeconds(1_700_000_000 + index)
        runner._keep(job)
    assert len(runner.list("")) == 1000
    assert ("s-0", "nightly") not in runner._started_by
    assert runner._started_by[("s-1", "nightly")] == "j-0001"

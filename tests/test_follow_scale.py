"""1,000 simulated computers with mixed outcomes: every job followed, the statistics exact."""

import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path

import grpc
from outcome_support import create, watch_outcome

from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb

from conftest import policy_over

ROOT = Path(__file__).resolve().parent.parent
COMPUTERS = int(os.environ.get("FOLLOW_TEST_COMPUTERS", "1000"))
MIX = {"fail": 0.2, "hang": 0.1, "restart": 0.05, "partition": 0.05}


async def test_a_thousand_computers_with_mixed_outcomes_give_exact_statistics(
    start_server, tmp_path, source_tree
) -> None:
    """Succeed, fail, hang (then stopped), restart and partition agents: jobs_* and every job record exact."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "agent_stub.fleet", "--base-port", "0", "--count", str(COMPUTERS)),
        *("--job-seconds", "1", "--job-seconds-max", "3", "--restart-seconds", "1"),
        *(arg for outcome, share in MIX.items() for arg in (f"--{outcome}", str(share))),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        limit=16 << 20,
    )
    try:
        assert process.stdout is not None
        fleet = json.loads(await asyncio.wait_for(process.stdout.readline(), 120))
        outcome_of = fleet["outcomes"]
        counts = Counter(outcome_of.get(a["address"], "succeed") for a in fleet["agents"])
        server = await start_server(agent_deadline=5.0)
        computers = [(agent["name"], agent["address"]) for agent in fleet["agents"]]
        options = [("grpc.max_receive_message_length", 64 << 20)]
        async with grpc.aio.insecure_channel(server.address, options=options) as channel:
            service = api_grpc.PolicyServiceStub(channel)
            await create(service, policy_over(computers, tmp_path, source_tree))
            started = await service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
            assert started.statistics.received == COMPUTERS

            seen: list[pb.PolicySession] = []

            async def only_hung_run() -> None:
                while True:
                    now = await service.GetSession(api.GetSessionRequest(session_id=started.id))
                    seen[:] = [now]
                    if now.statistics.jobs_running == counts["hang"]:
                        return
                    await asyncio.sleep(0.5)

            try:
                await asyncio.wait_for(only_hung_run(), 60)
            except TimeoutError:
                running = Counter(
                    outcome_of.get(r.computer.address, "succeed")
                    for r in seen[0].computer_results
                    if r.job.state == pb.JOB_STATE_RUNNING
                )
                raise AssertionError(f"{seen[0].statistics} still running: {running}") from None
            await service.StopPolicy(api.StopPolicyRequest(policy_id="nightly"))
            final = (await watch_outcome(service, started.id, 60))[-1]
    finally:
        process.terminate()
        await process.wait()
    stats = final.statistics
    assert stats.jobs_succeeded == counts["succeed"] + counts["partition"]
    assert stats.jobs_failed == counts["fail"] + counts["restart"]
    assert stats.jobs_stopped == counts["hang"]
    assert (stats.jobs_running, stats.jobs_unknown) == (0, 0)
    assert final.outcome == pb.SESSION_STATE_WARNING
    expected = {
        "succeed": pb.JOB_STATE_SUCCEEDED,
        "partition": pb.JOB_STATE_SUCCEEDED,
        "fail": pb.JOB_STATE_FAILED,
        "restart": pb.JOB_STATE_FAILED,
        "hang": pb.JOB_STATE_STOPPED,
    }
    for result in final.computer_results:
        outcome = outcome_of.get(result.computer.address, "succeed")
        assert result.job.state == expected[outcome], (outcome, result)

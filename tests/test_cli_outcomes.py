"""backupctl start --wait, session and status: each computer's job result, and whether it is protected."""

from cli_support import backupctl
from outcome_support import create
from postgres_support import both_backends as server_db  # noqa: F401 - every test on both

from backup.v1 import policy_service_pb2 as api

from conftest import policy_over


async def test_start_wait_with_a_good_a_failing_and_a_down_computer(
    server, policy_service, start_agent, start_fleet, closed_address, tmp_path, source_tree
) -> None:
    """Done-when: start --wait prints each computer's job result and exits 3; status shows which one is protected."""
    good = await start_agent("good")
    fleet = await start_fleet(count=1, job_seconds=0.3, fail=1.0)
    failing = fleet.addresses()["agents"][0]["address"]
    computers = [("good", good.address), ("failing", failing), ("down", closed_address)]
    await create(policy_service, policy_over(computers, tmp_path, source_tree))
    result = await backupctl(server.address, "start", "nightly", "--wait")
    assert result.returncode == 3, result
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│")}
    assert "succeeded" in lines["good"] and "failed" in lines["failing"]
    assert "not received" in lines["down"]
    assert "outcome: WARNING" in result.stdout
    status = await backupctl(server.address, "status", "nightly")
    assert status.returncode == 3, status
    rows = [line for line in status.stdout.splitlines() if "nightly" in line]
    names = [row.split()[3] for row in rows]
    assert names[-1] == "good", status.stdout  # worst first: the protected one last
    assert "succeeded" in rows[-1] and "never ran" in " ".join(rows) and "failed" in " ".join(rows)
    [session] = (await policy_service.ListSessions(api.ListSessionsRequest())).sessions
    shown = await backupctl(server.address, "session", session.id)
    assert shown.returncode == 0 and "outcome: WARNING" in shown.stdout
    assert "simulated failure" in shown.stdout


async def test_start_wait_exits_0_when_every_job_succeeded(
    server, policy_service, start_agent, tmp_path, source_tree
) -> None:
    """Every targeted computer's job succeeded: start --wait and status exit 0; -o json carries the outcome."""
    agent = await start_agent("a1")
    await create(policy_service, policy_over([("a1", agent.address)], tmp_path, source_tree))
    result = await backupctl(server.address, "start", "nightly", "--wait", "-o", "json")
    assert result.returncode == 0, result
    assert '"outcome": "SESSION_STATE_SUCCESS"' in result.stdout
    assert '"jobsSucceeded": 1' in result.stdout
    status = await backupctl(server.address, "status")
    assert status.returncode == 0, status
    # Ids are printed whole, never cut to fit.
    [point] = [
        s.last_restore_point_id
        for s in (
            await policy_service.ListComputerStatuses(api.ListComputerStatusesRequest())
        ).computer_statuses
    ]
    assert point in status.stdout


async def test_start_wait_on_an_unknown_policy_exits_1(server) -> None:
    """An unknown policy is one clear line and exit 1, before anything is sent."""
    result = await backupctl(server.address, "start", "nope", "--wait")
    assert result.returncode == 1 and "Traceback" not in result.stderr

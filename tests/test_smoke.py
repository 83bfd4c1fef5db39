"""A start and a stop across live, refused and hung computers."""

from pathlib import Path

from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb
from conftest import policy_over


async def test_start_reaches_live_and_records_unreachable(
    policy_service, start_agent, closed_address, hung_address, tmp_path: Path, source_tree: Path
) -> None:
    """Live agents receive the start; a refused and a hung computer are not received."""
    a1 = await start_agent("a1")
    a2 = await start_agent("a2")
    policy = policy_over(
        [("a1", a1.address), ("a2", a2.address), ("down", closed_address), ("hung", hung_address)],
        tmp_path,
        source_tree,
    )
    await policy_service.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
    session = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    print(session)
    deliveries = {r.computer.name: r.delivery for r in session.computer_results}
    assert deliveries == {
        "a1": pb.DELIVERY_RECEIVED,
        "a2": pb.DELIVERY_RECEIVED,
        "down": pb.DELIVERY_NOT_RECEIVED,
        "hung": pb.DELIVERY_NOT_RECEIVED,
    }
    assert session.state == pb.SESSION_STATE_WARNING

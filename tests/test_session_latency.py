"""Latency has one form: a computer that was never sent a command (skipped) has none, in StartPolicy's reply and in GetSession alike."""

from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb

from conftest import policy_over


def latencies(session: pb.PolicySession) -> dict[str, bool]:
    return {r.computer.name: r.HasField("latency") for r in session.computer_results}


async def test_skipped_computers_have_no_latency_in_either_reply(
    policy_service, start_agent, tmp_path, source_tree
) -> None:
    """A skipped computer has no latency field and a received one has one, both in the StartPolicy reply and in GetSession."""
    live = await start_agent("live")
    await policy_service.CreateProtectionGroup(
        api.CreateProtectionGroupRequest(
            protection_group_id="branch",
            protection_group=pb.ProtectionGroup(
                name="branch office",
                kind=pb.PROTECTION_GROUP_KIND_PREINSTALLED_AGENTS,
                computers=[pb.Computer(name="local", address="127.0.0.1:9")],
            ),
        )
    )
    policy = policy_over([("live", live.address)], tmp_path, source_tree, group_ids=["branch"])
    await policy_service.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
    started = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    stored = await policy_service.GetSession(api.GetSessionRequest(session_id=started.id))
    assert latencies(started) == {"live": True, "local": False}
    assert latencies(stored) == latencies(started)
    assert stored.computer_results[0].latency == started.computer_results[0].latency

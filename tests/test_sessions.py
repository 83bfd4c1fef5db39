"""Sessions: stored RUNNING before commands go out, visible and watchable while they run."""

import asyncio
import base64
import json

import grpc
import pytest
from outcome_support import watch_outcome

from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.running import RunningSessions
from backup_server.sessions import LiveSession

from conftest import policy_over, wait_for


async def slow_session_setup(start_server, start_agent, hung_addresses, tmp_path, source_tree):
    """A server whose start of 'nightly' takes ~1.5 s: hung computers queued two at a time."""
    server = await start_server(agent_deadline=0.5, max_in_flight=2)
    agents = [await start_agent(f"a{i}") for i in range(3)]
    computers = [(f"hung{i}", address) for i, address in enumerate(hung_addresses(5))]
    computers += [(agent.config.name, agent.address) for agent in agents]
    channel = grpc.aio.insecure_channel(server.address)
    service = api_grpc.PolicyServiceStub(channel)
    await service.CreatePolicy(
        api.CreatePolicyRequest(
            policy_id="nightly", policy=policy_over(computers, tmp_path, source_tree)
        )
    )
    return channel, service


async def running_session_id(service) -> str:
    found: list[str] = []

    async def listed() -> bool:
        sessions = (
            await service.ListSessions(api.ListSessionsRequest(policy_id="nightly"))
        ).sessions
        found[:] = [s.id for s in sessions if s.state == pb.SESSION_STATE_RUNNING]
        return bool(found)

    await wait_for(listed)
    return found[0]


async def test_running_session_is_visible_and_watchable(
    start_server, start_agent, hung_addresses, tmp_path, source_tree
) -> None:
    """While a start fans out, Get/List show it RUNNING and Watch streams falling pending counts, then the end."""
    channel, service = await slow_session_setup(
        start_server, start_agent, hung_addresses, tmp_path, source_tree
    )
    async with channel:
        starting = asyncio.ensure_future(
            service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
        )
        session_id = await running_session_id(service)
        running = await service.GetSession(api.GetSessionRequest(session_id=session_id))
        assert running.state == pb.SESSION_STATE_RUNNING and not running.HasField("end_time")
        assert running.statistics.total == 8 and running.statistics.pending > 0
        # Up to the end of delivery: the stream goes on until the jobs' outcome is final.
        snapshots = []
        async for s in service.WatchSession(api.WatchSessionRequest(session_id=session_id)):
            snapshots.append(s)
            if s.state != pb.SESSION_STATE_RUNNING:
                break
        final = await starting
    pending = [s.statistics.pending for s in snapshots]
    assert len(snapshots) >= 3, pending
    assert pending == sorted(pending, reverse=True) and pending[0] > 0 and pending[-1] == 0
    assert all(s.state == pb.SESSION_STATE_RUNNING for s in snapshots[:-1])
    assert snapshots[-1] == final
    assert final.statistics.received == 3 and final.statistics.not_received == 5


async def test_watching_a_finished_session_sends_it_once(
    policy_service, start_agent, tmp_path, source_tree
) -> None:
    """Watch on a session that has ended streams exactly its final state."""
    agent = await start_agent("a1")
    await policy_service.CreatePolicy(
        api.CreatePolicyRequest(
            policy_id="nightly", policy=policy_over([("a1", agent.address)], tmp_path, source_tree)
        )
    )
    started = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    # Ended: delivered, and its job followed to the final outcome.
    await watch_outcome(policy_service, started.id)
    session = await policy_service.GetSession(api.GetSessionRequest(session_id=started.id))
    watched = [
        s async for s in policy_service.WatchSession(api.WatchSessionRequest(session_id=session.id))
    ]
    assert watched == [session]
    assert await policy_service.GetSession(api.GetSessionRequest(session_id=session.id)) == session


async def test_unknown_sessions_are_not_found(policy_service) -> None:
    """Get and Watch of a well-shaped id that does not exist are NOT_FOUND; so is a list for an unknown policy."""
    for call in (
        policy_service.GetSession(api.GetSessionRequest(session_id="s-nope")),
        _drain(policy_service.WatchSession(api.WatchSessionRequest(session_id="s-nope"))),
        policy_service.ListSessions(api.ListSessionsRequest(policy_id="ghost")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def _drain(stream) -> list[pb.PolicySession]:
    return [item async for item in stream]


async def test_list_sessions_newest_first_by_policy_with_pages_and_views(
    policy_service, closed_address, tmp_path, source_tree
) -> None:
    """Sessions list newest first, filter by policy, page without repeats, and carry results only in FULL view."""
    for policy_id in ("alpha", "beta"):
        await policy_service.CreatePolicy(
            api.CreatePolicyRequest(
                policy_id=policy_id,
                policy=policy_over([("down", closed_address)], tmp_path, source_tree),
            )
        )
    made = []
    for policy_id in ("alpha", "beta", "alpha", "alpha", "beta"):
        made.append(await policy_service.StartPolicy(api.StartPolicyRequest(policy_id=policy_id)))
    alpha_ids = [s.id for s in reversed(made) if s.policy_id == "alpha"]

    seen, token = [], ""
    while True:
        page = await policy_service.ListSessions(
            api.ListSessionsRequest(policy_id="alpha", page_size=2, page_token=token)
        )
        seen += list(page.sessions)
        token = page.next_page_token
        if not token:
            break
    assert [s.id for s in seen] == alpha_ids
    assert all(len(s.computer_results) == 0 and s.statistics.total == 1 for s in seen)

    everything = await policy_service.ListSessions(api.ListSessionsRequest())
    assert [s.id for s in everything.sessions] == [s.id for s in reversed(made)]
    full = await policy_service.ListSessions(
        api.ListSessionsRequest(view=api.SESSION_VIEW_FULL, page_size=1)
    )
    assert full.sessions[0] == made[-1]

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await policy_service.ListSessions(
            api.ListSessionsRequest(policy_id="beta", page_token=page_token_of_alpha(seen))
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def page_token_of_alpha(seen: list[pb.PolicySession]) -> str:
    from backup import paging

    return paging.encode("sessions:alpha:0", 10**9)


async def test_a_session_of_ten_thousand_results_fits_one_response(
    start_server, hung_addresses, tmp_path, source_tree
) -> None:
    """A 10,000-computer session comes back whole from GetSession through a default client channel."""
    server = await start_server(agent_deadline=0.2)
    local = [
        pb.Computer(
            name=f"computer-{i:05d}.branch-office.example",
            address=f"192.0.2.{i % 250 + 1}:{10000 + i}",
        )
        for i in range(10_000)
    ]
    async with grpc.aio.insecure_channel(server.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        await service.CreateProtectionGroup(
            api.CreateProtectionGroupRequest(
                protection_group_id="everyone",
                protection_group=pb.ProtectionGroup(
                    name="all", kind=pb.PROTECTION_GROUP_KIND_PREINSTALLED_AGENTS, computers=local
                ),
            )
        )
        await service.CreatePolicy(
            api.CreatePolicyRequest(
                policy_id="big",
                policy=policy_over([], tmp_path, source_tree, group_ids=["everyone"]),
            )
        )
        session = await service.StartPolicy(api.StartPolicyRequest(policy_id="big"))
        fetched = await service.GetSession(api.GetSessionRequest(session_id=session.id))
    assert len(fetched.computer_results) == 10_000 and fetched.statistics.skipped == 10_000
    assert fetched.ByteSize() < 4 * 1024 * 1024, "larger than a default client accepts"


def forged(content: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(content).encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        forged({"q": "sessions::0", "p": "abc"}),
        forged({"q": "sessions::0", "p": 2**70}),
        forged({"q": "sessions::0", "p": -1}),
        forged({"q": "sessions::0", "p": True}),
        forged({"q": "sessions::0"}),
        forged(["q", "p"]),
        base64.urlsafe_b64encode(b"[" * 100_000).decode(),
        "x" * 600,
        "@@@",
    ],
    ids=[
        "string position",
        "huge position",
        "negative",
        "boolean",
        "no position",
        "a list",
        "deep nesting",
        "too long",
        "not base64",
    ],
)
async def test_forged_page_tokens_are_invalid_argument(policy_service, token: str) -> None:
    """A tampered or forged page token is INVALID_ARGUMENT naming page_token, never UNKNOWN."""
    for call in (
        policy_service.ListSessions(api.ListSessionsRequest(page_token=token)),
        policy_service.ListPolicies(api.ListPoliciesRequest(page_token=token)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in raised.value.details()


def test_a_read_spanning_a_session_leaving_memory_finds_it_unless_stood_down() -> None:
    """RunningSessions.held: a session that left memory during a storage read is still
    found (its end was stored first), one this replica stood down from is not (the stored
    one, the claimer's, is newer)."""
    running = RunningSessions()
    ended, fenced = (
        LiveSession(pb.PolicySession(id="ended")),
        LiveSession(pb.PolicySession(id="fenced")),
    )
    running.live.update({"ended": ended, "fenced": fenced})
    held = running.held()
    del running.live["ended"], running.live["fenced"]
    fenced.stood_down = True
    assert held("ended") is ended
    assert held("fenced") is None and held("unknown") is None

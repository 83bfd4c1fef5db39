"""StartPolicy and StopPolicy across live, refused, hung, skipped and rejecting computers,
each test over SQLite and over PostgreSQL."""

import asyncio
import logging
import time

import grpc
import pytest
from google.protobuf import field_mask_pb2
from postgres_support import both_backends as server_db  # noqa: F401 - every test on both

from agent_stub.store import read_policy
from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb

from conftest import DEADLINE, job_ends, point_files, policy_over, restore_points, wait_for

RECEIVED, NOT_RECEIVED = pb.DELIVERY_RECEIVED, pb.DELIVERY_NOT_RECEIVED


def deliveries(session: pb.PolicySession) -> dict[str, int]:
    return {result.computer.name: result.delivery for result in session.computer_results}


async def create(policy_service, policy: pb.BackupPolicy, policy_id: str = "nightly") -> None:
    await policy_service.CreatePolicy(api.CreatePolicyRequest(policy_id=policy_id, policy=policy))


async def start(policy_service, policy_id: str = "nightly") -> pb.PolicySession:
    return await policy_service.StartPolicy(api.StartPolicyRequest(policy_id=policy_id))


async def stop(policy_service, policy_id: str = "nightly") -> pb.PolicySession:
    return await policy_service.StopPolicy(api.StopPolicyRequest(policy_id=policy_id))


async def test_start_and_stop_across_live_refused_and_hung(
    policy_service, start_agent, agent_control, closed_address, hung_address, tmp_path, source_tree
) -> None:
    """Live agents receive start and stop with a job id; refused and hung ones are not received."""
    a1, a2 = await start_agent("a1"), await start_agent("a2")
    computers = [
        ("a1", a1.address),
        ("a2", a2.address),
        ("down", closed_address),
        ("hung", hung_address),
    ]
    await create(policy_service, policy_over(computers, tmp_path, source_tree))
    session = await start(policy_service)
    assert deliveries(session) == {
        "a1": RECEIVED,
        "a2": RECEIVED,
        "down": NOT_RECEIVED,
        "hung": NOT_RECEIVED,
    }
    assert session.action == pb.SESSION_ACTION_START
    assert session.state == pb.SESSION_STATE_WARNING
    assert session.end_time.ToNanoseconds() >= session.start_time.ToNanoseconds() > 0
    stats = session.statistics
    assert (stats.total, stats.received, stats.not_received, stats.pending) == (4, 2, 2, 0)
    by_name = {r.computer.name: r for r in session.computer_results}
    assert "UNAVAILABLE" in by_name["down"].detail
    assert "DEADLINE_EXCEEDED" in by_name["hung"].detail
    assert by_name["hung"].latency.ToNanoseconds() >= DEADLINE * 0.9e9
    for agent in (a1, a2):
        job_id = by_name[agent.config.name].job_id
        job = await agent_control(agent.address).GetJob(agent_api.GetJobRequest(job_id=job_id))
        assert job.session_id == session.id and job.policy_id == "nightly"
        await job_ends(agent_control(agent.address), job_id)

    stopped = await stop(policy_service)
    assert stopped.action == pb.SESSION_ACTION_STOP
    assert deliveries(stopped) == {
        "a1": RECEIVED,
        "a2": RECEIVED,
        "down": NOT_RECEIVED,
        "hung": NOT_RECEIVED,
    }
    assert {r.detail for r in stopped.computer_results if r.delivery == RECEIVED} == {
        "OK: no job was running"
    }


async def test_every_computer_received_is_success(
    policy_service, start_agent, tmp_path, source_tree
) -> None:
    """When every computer receives the command the session is SUCCESS."""
    agents = [await start_agent(f"a{i}") for i in range(3)]
    await create(
        policy_service,
        policy_over([(a.config.name, a.address) for a in agents], tmp_path, source_tree),
    )
    session = await start(policy_service)
    assert session.state == pb.SESSION_STATE_SUCCESS
    assert session.statistics.received == session.statistics.total == 3
    assert all(r.job_id for r in session.computer_results)


async def test_none_received_is_failed(
    policy_service, closed_address, hung_address, tmp_path, source_tree
) -> None:
    """When computers were targeted and none received the command the session is FAILED."""
    await create(
        policy_service,
        policy_over([("down", closed_address), ("hung", hung_address)], tmp_path, source_tree),
    )
    for session in (await start(policy_service), await stop(policy_service)):
        assert session.state == pb.SESSION_STATE_FAILED
        assert session.statistics.not_received == 2


async def test_not_received_is_logged_per_computer(
    policy_service, closed_address, hung_address, tmp_path, source_tree, caplog
) -> None:
    """Each computer that did not receive it gets one log line: name, address and gRPC code."""
    await create(
        policy_service,
        policy_over([("down", closed_address), ("hung", hung_address)], tmp_path, source_tree),
    )
    with caplog.at_level(logging.WARNING, logger="backup_server"):
        await start(policy_service)
    lines = [r.getMessage() for r in caplog.records if "not received" in r.getMessage()]
    assert len(lines) == 2
    assert any(
        "down" in line and closed_address in line and "UNAVAILABLE" in line for line in lines
    )
    assert any(
        "hung" in line and hung_address in line and "DEADLINE_EXCEEDED" in line for line in lines
    )


async def test_many_hung_computers_cost_one_deadline(
    policy_service, start_agent, hung_addresses, closed_address, tmp_path, source_tree
) -> None:
    """Forty hung computers finish within one deadline plus a margin, never one after another."""
    live = await start_agent("live")
    computers = [(f"hung{i}", address) for i, address in enumerate(hung_addresses(40))]
    computers += [("live", live.address), ("down", closed_address)]
    await create(policy_service, policy_over(computers, tmp_path, source_tree))
    began = time.monotonic()
    session = await start(policy_service)
    elapsed = time.monotonic() - began
    assert elapsed < DEADLINE + 1.5, f"fan-out took {elapsed:.2f} s: serial?"
    assert session.statistics.not_received == 41 and session.statistics.received == 1


async def test_preinstalled_computers_are_skipped_with_a_warning(
    policy_service, start_agent, tmp_path, source_tree
) -> None:
    """Computers of a pre-installed-agents group get no command and each is named in a warning."""
    live, local1, local2 = (
        await start_agent("live"),
        await start_agent("local1"),
        await start_agent("local2"),
    )
    await policy_service.CreateProtectionGroup(
        api.CreateProtectionGroupRequest(
            protection_group_id="branch",
            protection_group=pb.ProtectionGroup(
                name="branch office",
                kind=pb.PROTECTION_GROUP_KIND_PREINSTALLED_AGENTS,
                computers=[
                    pb.Computer(name="local1", address=local1.address),
                    pb.Computer(name="local2", address=local2.address),
                ],
            ),
        )
    )
    await create(
        policy_service,
        policy_over([("live", live.address)], tmp_path, source_tree, group_ids=["branch"]),
    )
    for session in (await start(policy_service), await stop(policy_service)):
        assert deliveries(session) == {
            "live": RECEIVED,
            "local1": pb.DELIVERY_SKIPPED,
            "local2": pb.DELIVERY_SKIPPED,
        }
        assert session.statistics.total == 3 and session.statistics.skipped == 2
        assert session.state == pb.SESSION_STATE_WARNING
        assert len(session.warnings) == 2
        for name, agent in (("local1", local1), ("local2", local2)):
            assert any(name in w and agent.address in w and "branch" in w for w in session.warnings)
        skipped = [r for r in session.computer_results if r.delivery == pb.DELIVERY_SKIPPED]
        assert all(
            r.protection_group_id == "branch" and "pre-installed" in r.detail for r in skipped
        )
    for agent in (local1, local2):
        assert agent.jobs.list("") == [], "a skipped computer received a command"


async def test_only_skipped_computers_is_a_warning(
    policy_service, start_agent, tmp_path, source_tree
) -> None:
    """A policy whose every computer is skipped targeted nobody: WARNING, not FAILED."""
    local = await start_agent("local")
    await policy_service.CreateProtectionGroup(
        api.CreateProtectionGroupRequest(
            protection_group_id="branch",
            protection_group=pb.ProtectionGroup(
                name="b",
                kind=pb.PROTECTION_GROUP_KIND_PREINSTALLED_AGENTS,
                computers=[pb.Computer(name="local", address=local.address)],
            ),
        )
    )
    await create(policy_service, policy_over([], tmp_path, source_tree, group_ids=["branch"]))
    session = await start(policy_service)
    assert session.state == pb.SESSION_STATE_WARNING
    assert (session.statistics.total, session.statistics.skipped) == (1, 1)


async def test_a_computer_listed_twice_gets_one_command(
    policy_service, start_agent, tmp_path, source_tree
) -> None:
    """Direct and group listings of one address are one computer; any pre-installed listing skips it."""
    shared, both = await start_agent("shared"), await start_agent("both")
    manual_computers = [
        pb.Computer(name="shared-in-group", address=shared.address),
        pb.Computer(name="both", address=both.address),
    ]
    for group_id, kind, members in (
        ("manual", pb.PROTECTION_GROUP_KIND_MANUAL, manual_computers),
        (
            "local",
            pb.PROTECTION_GROUP_KIND_PREINSTALLED_AGENTS,
            [pb.Computer(name="both-local", address=both.address)],
        ),
    ):
        await policy_service.CreateProtectionGroup(
            api.CreateProtectionGroupRequest(
                protection_group_id=group_id,
                protection_group=pb.ProtectionGroup(name=group_id, kind=kind, computers=members),
            )
        )
    policy = policy_over(
        [("shared", shared.address)], tmp_path, source_tree, group_ids=["manual", "local"]
    )
    await create(policy_service, policy)
    session = await start(policy_service)
    assert deliveries(session) == {"shared": RECEIVED, "both": pb.DELIVERY_SKIPPED}
    assert session.statistics.total == 2
    assert len(shared.jobs.list("")) == 1
    assert both.jobs.list("") == []


async def test_an_agent_that_refuses_is_rejected(
    policy_service, server, start_agent, tmp_path, source_tree
) -> None:
    """A computer that answers with an error status (here: not an agent at all) is REJECTED."""
    live = await start_agent("live")
    await create(
        policy_service,
        policy_over(
            [("live", live.address), ("wrong-port", server.address)], tmp_path, source_tree
        ),
    )
    session = await start(policy_service)
    assert deliveries(session) == {"live": RECEIVED, "wrong-port": pb.DELIVERY_REJECTED}
    rejected = next(r for r in session.computer_results if r.delivery == pb.DELIVERY_REJECTED)
    assert rejected.detail.startswith("UNIMPLEMENTED")
    assert session.state == pb.SESSION_STATE_WARNING and session.statistics.rejected == 1


async def test_agents_receive_the_policy_without_its_computer_list(
    policy_service, start_agent, tmp_path, source_tree
) -> None:
    """The policy an agent applies carries sources, repository and limits but no computers."""
    agent = await start_agent("a1")
    policy = policy_over(
        [("a1", agent.address), ("other", "127.0.0.1:9")],
        tmp_path,
        source_tree,
        retention_points=4,
        throttle_bytes_per_second=10**9,
    )
    await create(policy_service, policy)
    await start(policy_service)
    applied = read_policy(agent.config.data_dir, "nightly")
    assert applied is not None
    assert list(applied.computers) == [] and list(applied.protection_group_ids) == []
    assert list(applied.source_paths) == [str(source_tree)]
    assert (applied.repository, applied.retention_points, applied.throttle_bytes_per_second) == (
        policy.repository,
        4,
        10**9,
    )


async def test_start_while_running_answers_already_running(
    policy_service, start_agent, agent_control, tmp_path, source_tree
) -> None:
    """A second start while the policy's job runs is received but starts no second job."""
    agent = await start_agent("a1")
    (source_tree / "big.bin").write_bytes(b"x" * 400_000)
    await create(
        policy_service,
        policy_over(
            [("a1", agent.address)], tmp_path, source_tree, throttle_bytes_per_second=100_000
        ),
    )
    first = (await start(policy_service)).computer_results[0]
    second = (await start(policy_service)).computer_results[0]
    assert second.delivery == RECEIVED and second.job_id == first.job_id
    assert "already running" in second.detail
    jobs = await agent_control(agent.address).ListJobs(
        agent_api.ListJobsRequest(policy_id="nightly")
    )
    assert [job.id for job in jobs.jobs] == [first.job_id]
    await stop(policy_service)


async def test_stop_cancels_a_running_job_and_keeps_earlier_restore_points(
    policy_service, start_agent, agent_control, tmp_path, source_tree
) -> None:
    """Stopping mid-job ends it STOPPED within a second with no new restore point; earlier ones stay intact."""
    agent = await start_agent("a1")
    control = agent_control(agent.address)
    repository = tmp_path / "repository"
    await create(policy_service, policy_over([("a1", agent.address)], tmp_path, source_tree))
    first = (await start(policy_service)).computer_results[0]
    done = await job_ends(control, first.job_id)
    assert done.state == pb.JOB_STATE_SUCCEEDED and done.restore_point_id
    assert restore_points(repository) == [done.restore_point_id]
    earlier = point_files(repository, done.restore_point_id)

    (source_tree / "big.bin").write_bytes(b"y" * 2_000_000)
    await policy_service.UpdatePolicy(
        api.UpdatePolicyRequest(
            policy=pb.BackupPolicy(id="nightly", throttle_bytes_per_second=200_000),
            update_mask=field_mask_pb2.FieldMask(paths=["throttle_bytes_per_second"]),
        )
    )
    running = (await start(policy_service)).computer_results[0]
    await asyncio.sleep(0.5)
    assert (
        await control.GetJob(agent_api.GetJobRequest(job_id=running.job_id))
    ).state == pb.JOB_STATE_RUNNING
    stopped_at = time.monotonic()
    session = await stop(policy_service)
    result = session.computer_results[0]
    assert result.delivery == RECEIVED and result.job_id == running.job_id
    assert result.detail == f"OK: job {running.job_id} stopped"
    job = await job_ends(control, running.job_id, seconds=3)
    assert time.monotonic() - stopped_at < 1.5
    assert job.state == pb.JOB_STATE_STOPPED and job.restore_point_id == ""
    assert 0 < job.bytes_done < job.bytes_total
    assert restore_points(repository) == [done.restore_point_id]
    assert point_files(repository, done.restore_point_id) == earlier


async def test_stop_during_start_cancels_queued_commands(
    start_server, start_agent, hung_address, closed_address, tmp_path, source_tree
) -> None:
    """A stop that arrives while a start still fans out cancels the start's queued commands."""
    server = await start_server(max_in_flight=1)
    a1, a2 = await start_agent("a1"), await start_agent("a2")
    computers = [
        ("hung", hung_address),
        ("a1", a1.address),
        ("a2", a2.address),
        ("down", closed_address),
    ]
    async with grpc.aio.insecure_channel(server.address) as channel:
        from backup.v1 import policy_service_pb2_grpc as api_grpc

        service = api_grpc.PolicyServiceStub(channel)
        await create(service, policy_over(computers, tmp_path, source_tree))
        starting = asyncio.ensure_future(start(service))
        await asyncio.sleep(DEADLINE / 3)
        stopped = await stop(service)
        started = await starting
    assert deliveries(started) == {
        "hung": NOT_RECEIVED,
        "a1": pb.DELIVERY_CANCELLED,
        "a2": pb.DELIVERY_CANCELLED,
        "down": pb.DELIVERY_CANCELLED,
    }
    assert started.statistics.cancelled == 3 and started.state == pb.SESSION_STATE_FAILED
    assert all(
        stopped.id in r.detail
        for r in started.computer_results
        if r.delivery == pb.DELIVERY_CANCELLED
    )
    assert deliveries(stopped) == {
        "hung": NOT_RECEIVED,
        "a1": RECEIVED,
        "a2": RECEIVED,
        "down": NOT_RECEIVED,
    }
    assert a1.jobs.list("") == [] and a2.jobs.list("") == [], "a cancelled command was sent"


async def test_start_and_stop_of_unknown_or_empty_policies(
    policy_service, tmp_path, source_tree
) -> None:
    """An unknown policy is NOT_FOUND; a policy with no computers at all is FAILED_PRECONDITION."""
    for call in (start, stop):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(policy_service, "ghost")
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    await create(policy_service, policy_over([], tmp_path, source_tree), policy_id="empty")
    for call in (start, stop):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(policy_service, "empty")
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no computers" in raised.value.details()
    listed = await policy_service.ListSessions(api.ListSessionsRequest())
    assert list(listed.sessions) == []


async def test_a_caller_that_gives_up_does_not_cut_the_session_short(
    policy_service, start_agent, hung_address, tmp_path, source_tree
) -> None:
    """A client deadline shorter than the fan-out ends the call, but the session still completes."""
    live = await start_agent("live")
    await create(
        policy_service,
        policy_over([("live", live.address), ("hung", hung_address)], tmp_path, source_tree),
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await policy_service.StartPolicy(
            api.StartPolicyRequest(policy_id="nightly"), timeout=DEADLINE / 4
        )
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    async def finished() -> bool:
        listed = await policy_service.ListSessions(api.ListSessionsRequest(policy_id="nightly"))
        return listed.sessions[0].state != pb.SESSION_STATE_RUNNING

    await wait_for(finished, DEADLINE * 3)
    listed = await policy_service.ListSessions(
        api.ListSessionsRequest(policy_id="nightly", view=api.SESSION_VIEW_FULL)
    )
    assert deliveries(listed.sessions[0]) == {"live": RECEIVED, "hung": NOT_RECEIVED}


async def serve_handler(handler: grpc.GenericRpcHandler) -> tuple[grpc.aio.Server, int]:
    """A bare gRPC server on a loopback port answering through `handler` alone."""
    wire = grpc.aio.server()
    wire.add_generic_rpc_handlers([handler])
    port = wire.add_insecure_port("127.0.0.1:0")
    await wire.start()
    return wire, port


class RecordingAgent(grpc.GenericRpcHandler):
    """A gRPC server that records every method called on it and answers StartJob OK."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def service(self, handler_call_details):  # type: ignore[no-untyped-def]
        self.calls.append(handler_call_details.method)
        if handler_call_details.method != "/backup.v1.AgentControl/StartJob":
            return None

        async def start_job(request: bytes, context) -> bytes:  # type: ignore[no-untyped-def]
            parsed = agent_api.StartJobRequest.FromString(request)
            return agent_api.StartJobResponse(
                job=pb.Job(id="j-recorded", policy_id=parsed.policy.id)
            ).SerializeToString()

        return grpc.unary_unary_rpc_method_handler(start_job)


async def test_the_server_sends_one_command_and_no_reachability_check(
    policy_service, tmp_path, source_tree
) -> None:
    """Per computer and session the server sends exactly one StartJob: no health check or probe first."""
    recorder = RecordingAgent()
    wire, port = await serve_handler(recorder)
    try:
        await create(
            policy_service, policy_over([("recorded", f"127.0.0.1:{port}")], tmp_path, source_tree)
        )
        for _ in range(2):
            session = await start(policy_service)
            assert session.computer_results[0].job_id == "j-recorded"
    finally:
        await wire.stop(None)
    assert recorder.calls == ["/backup.v1.AgentControl/StartJob"] * 2


async def test_start_racing_a_group_removal_never_answers_unknown(
    policy_service, closed_address, tmp_path, source_tree
) -> None:
    """A start racing an update that drops a group and that group's deletion gets OK or a precise code."""
    seen: set[grpc.StatusCode] = set()
    for round_ in range(25):
        group_id = f"g{round_}"
        await policy_service.CreateProtectionGroup(
            api.CreateProtectionGroupRequest(
                protection_group_id=group_id,
                protection_group=pb.ProtectionGroup(
                    name="g",
                    kind=pb.PROTECTION_GROUP_KIND_MANUAL,
                    computers=[pb.Computer(name="down", address=closed_address)],
                ),
            )
        )
        policy_id = f"p{round_}"
        await create(
            policy_service,
            policy_over([], tmp_path, source_tree, group_ids=[group_id]),
            policy_id=policy_id,
        )
        dropped = pb.BackupPolicy(
            id=policy_id, computers=[pb.Computer(name="other", address=closed_address)]
        )
        calls = [
            policy_service.StartPolicy(api.StartPolicyRequest(policy_id=policy_id)),
            policy_service.UpdatePolicy(
                api.UpdatePolicyRequest(
                    policy=dropped,
                    update_mask=field_mask_pb2.FieldMask(
                        paths=["protection_group_ids", "computers"]
                    ),
                )
            ),
            policy_service.DeleteProtectionGroup(
                api.DeleteProtectionGroupRequest(protection_group_id=group_id)
            ),
        ]
        for outcome in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(outcome, grpc.aio.AioRpcError):
                seen.add(outcome.code())
    assert seen <= {grpc.StatusCode.FAILED_PRECONDITION}, seen


class SlowStartAgent(grpc.GenericRpcHandler):
    """An agent whose StartJob takes 0.6 s to answer; it notes when each call arrives and ends."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float]] = []

    def service(self, handler_call_details):  # type: ignore[no-untyped-def]
        method = handler_call_details.method.rsplit("/", 1)[-1]

        async def answer(request: bytes, context) -> bytes:  # type: ignore[no-untyped-def]
            self.events.append((f"{method} arrived", time.monotonic()))
            if method == "StartJob":
                await asyncio.sleep(0.6)
                reply = agent_api.StartJobResponse(job=pb.Job(id="j-slow")).SerializeToString()
            else:
                reply = agent_api.StopJobResponse(
                    job=pb.Job(id="j-slow"), was_running=True
                ).SerializeToString()
            self.events.append((f"{method} answered", time.monotonic()))
            return reply

        return grpc.unary_unary_rpc_method_handler(answer)


async def test_a_stop_follows_start_commands_already_on_the_wire(
    policy_service, closed_address, tmp_path, source_tree, server_db  # noqa: F811 - the fixture, by name
) -> None:
    """A stop during a start waits, per computer, for the start's command on the wire, then sends its own."""
    agent = SlowStartAgent()
    wire, port = await serve_handler(agent)
    try:
        await create(
            policy_service,
            policy_over(
                [("slow", f"127.0.0.1:{port}"), ("down", closed_address)], tmp_path, source_tree
            ),
        )
        starting = asyncio.ensure_future(start(policy_service))
        await asyncio.sleep(0.2)
        stopped = await stop(policy_service)
        started = await starting
    finally:
        await wire.stop(None)
    order = [name for name, _ in agent.events]
    assert order == ["StartJob arrived", "StartJob answered", "StopJob arrived", "StopJob answered"]
    assert deliveries(started)["slow"] == RECEIVED and deliveries(stopped)["slow"] == RECEIVED
    assert deliveries(stopped)["down"] == NOT_RECEIVED

"""The server's SQLite file: restarts keep everything, crashes leave no RUNNING session, SIGTERM is clean."""

import asyncio
import logging
import signal
import sqlite3
import time

import grpc

from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.storage.migrations import MIGRATIONS
from backup_server.storage.sqlite import SqliteFile as Storage

from conftest import policy_over, wait_for


async def start_in_background(service, computers, tmp_path, source_tree) -> asyncio.Future:
    """Creates the policy 'nightly' over `computers` and starts it without waiting."""
    policy = policy_over(computers, tmp_path, source_tree)
    await service.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
    return asyncio.ensure_future(service.StartPolicy(api.StartPolicyRequest(policy_id="nightly")))


def spawn_server(spawn, database, deadline: str, grace: str = "5"):  # type: ignore[no-untyped-def]
    """A real backup-server process on port 0 over `database`."""
    return spawn(
        "backup_server",
        "--listen",
        "127.0.0.1:0",
        "--db",
        str(database),
        "--agent-deadline",
        deadline,
        "--shutdown-grace",
        grace,
    )


def service_at(address: str) -> tuple[grpc.aio.Channel, api_grpc.PolicyServiceStub]:
    channel = grpc.aio.insecure_channel(address)
    return channel, api_grpc.PolicyServiceStub(channel)


async def test_restart_keeps_groups_policies_and_sessions(
    start_server, closed_address, tmp_path, source_tree
) -> None:
    """Everything created before a restart reads back identical after it."""
    first = await start_server()
    channel, service = service_at(first.address)
    async with channel:
        group = await service.CreateProtectionGroup(
            api.CreateProtectionGroupRequest(
                protection_group_id="web",
                protection_group=pb.ProtectionGroup(
                    name="web",
                    kind=pb.PROTECTION_GROUP_KIND_MANUAL,
                    computers=[pb.Computer(name="w", address=closed_address)],
                ),
            )
        )
        policy = await service.CreatePolicy(
            api.CreatePolicyRequest(
                policy_id="nightly",
                policy=policy_over([], tmp_path, source_tree, group_ids=["web"]),
            )
        )
        session = await service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    await first.stop()
    second = await start_server()
    channel, service = service_at(second.address)
    async with channel:
        assert (
            await service.GetProtectionGroup(
                api.GetProtectionGroupRequest(protection_group_id="web")
            )
            == group
        )
        assert await service.GetPolicy(api.GetPolicyRequest(policy_id="nightly")) == policy
        assert await service.GetSession(api.GetSessionRequest(session_id=session.id)) == session


async def test_a_crash_mid_session_leaves_it_failed_not_running(
    spawn, start_server, hung_address, tmp_path, source_tree, caplog
) -> None:
    """A server killed while fanning out finds that session RUNNING at its next start and marks it FAILED, with a warning."""
    database = tmp_path / "server.db"
    process = spawn(
        "backup_server", "--listen", "127.0.0.1:0", "--db", str(database), "--agent-deadline", "30"
    )
    channel, service = service_at(process.address)
    async with channel:
        starting = await start_in_background(
            service, [("hung", hung_address)], tmp_path, source_tree
        )

        async def running() -> bool:
            sessions = (await service.ListSessions(api.ListSessionsRequest())).sessions
            return bool(sessions) and sessions[0].state == pb.SESSION_STATE_RUNNING

        await wait_for(running)
        process.popen.send_signal(signal.SIGKILL)
        process.popen.wait()
        starting.cancel()
    with caplog.at_level(logging.WARNING, logger="backup_server"):
        server = await start_server(db=database)
    channel, service = service_at(server.address)
    async with channel:
        session = (
            await service.ListSessions(api.ListSessionsRequest(view=api.SESSION_VIEW_FULL))
        ).sessions[0]
    assert session.state == pb.SESSION_STATE_FAILED and session.HasField("end_time")
    assert any("interrupted" in warning for warning in session.warnings)
    assert session.computer_results[0].delivery == pb.DELIVERY_PENDING
    assert "unknown" in session.computer_results[0].detail
    assert any(session.id in r.getMessage() and "FAILED" in r.getMessage() for r in caplog.records)


async def test_sigterm_finishes_in_flight_sessions_and_exits_zero(
    spawn, start_agent, hung_address, tmp_path, source_tree
) -> None:
    """SIGTERM stops accepting, lets the running fan-out end within the grace, stores it, and exits 0."""
    live = await start_agent("live")
    database = tmp_path / "server.db"
    process = spawn_server(spawn, database, deadline="1", grace="5")
    channel, service = service_at(process.address)
    async with channel:
        starting = await start_in_background(
            service, [("live", live.address), ("hung", hung_address)], tmp_path, source_tree
        )
        await asyncio.sleep(0.3)
        signalled = time.monotonic()
        process.popen.send_signal(signal.SIGTERM)
        session = await starting
        exit_code = await asyncio.to_thread(process.popen.wait, 10)
    assert exit_code == 0
    assert time.monotonic() - signalled < 5
    assert session.statistics.received == 1 and session.statistics.not_received == 1
    stored = Storage(database).get_session(session.id)
    assert stored == session


async def test_sigterm_cancels_what_the_grace_cannot_wait_for(
    spawn, hung_address, tmp_path, source_tree
) -> None:
    """With a grace shorter than the deadline, commands still out are recorded CANCELLED and the exit is 0."""
    database = tmp_path / "server.db"
    process = spawn_server(spawn, database, deadline="30", grace="0.5")
    channel, service = service_at(process.address)
    async with channel:
        starting = await start_in_background(
            service, [("hung", hung_address)], tmp_path, source_tree
        )
        await asyncio.sleep(0.3)
        process.popen.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(process.popen.wait, 10)
        starting.cancel()
    assert exit_code == 0
    [(_, session)] = Storage(database).list_sessions("", 0, 10, with_results=True)
    assert session.state == pb.SESSION_STATE_FAILED
    assert session.computer_results[0].delivery == pb.DELIVERY_CANCELLED
    assert "shut down" in session.computer_results[0].detail


def test_database_is_wal_with_busy_timeout_and_migrations_apply_once(tmp_path) -> None:
    """One file in WAL mode with a busy timeout; reopening applies no migration twice."""
    database = tmp_path / "server.db"
    Storage(database).close()
    storage = Storage(database)
    assert storage.db.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert storage.db.execute("pragma busy_timeout").fetchone()[0] >= 1000
    versions = [row[0] for row in storage.db.execute("select version from migrations")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    storage.close()
    assert sqlite3.connect(database).execute("select count(*) from migrations").fetchone()[0] == len(MIGRATIONS)


async def test_results_are_written_in_batches(
    server, policy_service, hung_addresses, tmp_path, source_tree, monkeypatch
) -> None:
    """A session of 60 computers is stored in a few transactions, not one per computer."""
    storage = server.storage.file  # type: ignore[union-attr]
    writes: list[int] = []
    original = storage.save_progress

    def counting(progress):
        writes.append(len(progress.results))
        return original(progress)

    monkeypatch.setattr(storage, "save_progress", counting)
    computers = [(f"hung{i}", address) for i, address in enumerate(hung_addresses(60))]
    await policy_service.CreatePolicy(
        api.CreatePolicyRequest(
            policy_id="nightly", policy=policy_over(computers, tmp_path, source_tree)
        )
    )
    session = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    assert sum(writes) == 60 and len(writes) <= 10, writes
    assert await policy_service.GetSession(api.GetSessionRequest(session_id=session.id)) == session

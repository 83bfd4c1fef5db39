"""A full database disk: requests get RESOURCE_EXHAUSTED in one line, sessions end for every watcher, nothing stored is lost."""

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from disk_support import SmallDisk, small_disk

from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.storage.sqlite import SqliteFile

from conftest import policy_over, wait_for


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(tmp_path / "disk") as mounted:
        yield mounted


@pytest.fixture
async def service_on_disk(
    start_server, disk: SmallDisk
) -> AsyncIterator[api_grpc.PolicyServiceStub]:
    """PolicyService of a real server whose database lives on the small disk."""
    server = await start_server(db=disk.path / "server.db")
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield api_grpc.PolicyServiceStub(channel)
    disk.free()


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_create_and_start_on_a_full_disk_are_resource_exhausted(
    service_on_disk, disk, closed_address, tmp_path, source_tree, caplog
) -> None:
    """CreatePolicy and StartPolicy on a full database disk are RESOURCE_EXHAUSTED saying so, with no traceback, and what was stored stays."""
    service = service_on_disk
    policy = policy_over([("closed", closed_address)], tmp_path, source_tree)
    stored = await service.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
    disk.fill()
    with caplog.at_level(logging.INFO):
        for call in (
            service.CreatePolicy(api.CreatePolicyRequest(policy_id="weekly", policy=policy)),
            service.StartPolicy(api.StartPolicyRequest(policy_id="nightly")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert raised.value.details() == (
                "the server's database disk is full; nothing was stored"
            )
    no_tracebacks(caplog)
    assert await service.GetPolicy(api.GetPolicyRequest(policy_id="nightly")) == stored
    assert not (await service.ListSessions(api.ListSessionsRequest())).sessions
    disk.free()
    await service.CreatePolicy(api.CreatePolicyRequest(policy_id="weekly", policy=policy))
    session = await service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    assert session.statistics.not_received == 1


async def test_a_disk_that_fills_mid_session_ends_it_failed_for_every_watcher(
    service_on_disk, disk, hung_address, closed_address, tmp_path, source_tree, caplog
) -> None:
    """A session whose progress cannot be stored still ends for its watchers, FAILED with the storage's reason, and is stored so once there is room."""
    service = service_on_disk
    policy = policy_over(
        [("hung", hung_address), ("closed", closed_address)], tmp_path, source_tree
    )
    await service.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
    starting = asyncio.ensure_future(
        service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    )

    async def listed() -> bool:
        return bool((await service.ListSessions(api.ListSessionsRequest())).sessions)

    await wait_for(listed)
    [running] = (await service.ListSessions(api.ListSessionsRequest())).sessions
    disk.fill()
    with caplog.at_level(logging.INFO):

        async def watch() -> list[pb.PolicySession]:
            request = api.WatchSessionRequest(session_id=running.id)
            return [snapshot async for snapshot in service.WatchSession(request)]

        watchers = await asyncio.wait_for(asyncio.gather(watch(), watch()), 15)
        told = await asyncio.wait_for(starting, 5)
    for seen in watchers:
        assert seen[-1] == told
    assert told.state == pb.SESSION_STATE_FAILED
    assert any("could not be stored" in w and "disk is full" in w for w in told.warnings)
    assert told.statistics.not_received == 2
    assert await service.GetSession(api.GetSessionRequest(session_id=told.id)) == told
    no_tracebacks(caplog)

    disk.free()

    async def stored_as_told() -> bool:
        file = SqliteFile(disk.path / "server.db")
        try:
            return file.get_session(told.id) == told
        finally:
            file.close()

    await wait_for(stored_as_told, 10)
    assert await service.GetSession(api.GetSessionRequest(session_id=told.id)) == told

"""Thousands of simulated computers at once: a hung tenth costs one deadline, not a queue."""

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from agent_stub.fleet import FleetAddresses
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb

from conftest import policy_over

ROOT = Path(__file__).resolve().parent.parent
COMPUTERS = 2000
HUNG = 200
# Short, yet long enough for 1,800 first connections on a busy shared machine.
DEADLINE = 3.0


@pytest.fixture
async def fleet_addresses() -> AsyncIterator[FleetAddresses]:
    """A fleet process of COMPUTERS - HUNG simulated agents and HUNG hung addresses."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "agent_stub.fleet", "--base-port", "0"),
        *("--count", str(COMPUTERS - HUNG), "--hung", str(HUNG)),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        limit=16 << 20,  # the addresses come as one long line
    )
    try:
        assert process.stdout is not None
        yield json.loads(await asyncio.wait_for(process.stdout.readline(), 60))
    finally:
        process.terminate()
        await process.wait()


async def test_two_thousand_computers_with_hung_ones_cost_one_deadline(
    start_server, fleet_addresses: FleetAddresses, tmp_path: Path, source_tree: Path
) -> None:
    """2,000 computers, 10% hung: the session ends within 2 x D with every count exact."""
    server = await start_server(agent_deadline=DEADLINE)
    computers = [(agent["name"], agent["address"]) for agent in fleet_addresses["agents"]]
    computers += [
        (f"hung-{index}", address) for index, address in enumerate(fleet_addresses["hung"])
    ]
    policy = policy_over(computers, tmp_path, source_tree)
    async with grpc.aio.insecure_channel(
        server.address, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        await service.CreatePolicy(api.CreatePolicyRequest(policy_id="fleet", policy=policy))
        started = time.monotonic()
        session = await service.StartPolicy(api.StartPolicyRequest(policy_id="fleet"))
        wall = time.monotonic() - started
    stats = session.statistics
    assert (stats.total, stats.received, stats.not_received) == (COMPUTERS, COMPUTERS - HUNG, HUNG)
    assert (stats.pending, stats.skipped, stats.rejected, stats.cancelled) == (0, 0, 0, 0)
    assert session.state == pb.SESSION_STATE_WARNING
    hung = {
        result.computer.address
        for result in session.computer_results
        if result.delivery == pb.DELIVERY_NOT_RECEIVED
    }
    assert hung == set(fleet_addresses["hung"])
    assert wall < 2 * DEADLINE, f"{wall:.2f} s for a {DEADLINE} s deadline"

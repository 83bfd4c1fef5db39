"""A CANCELLED the server did not ask for (grpc-core on an overloaded agent dropping calls past its pending limit) is recorded not received, with its code and message."""

import asyncio
import threading

import grpc

from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb

from conftest import policy_over

COMPUTERS = 6


class StalledAgent:
    """An agent-side grpc server on its own thread whose event loop stalls on request, so
    grpc-core holds at most one pending call and drops the rest with CANCELLED."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.stall = threading.Event()
        self.release = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        async def start_job(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return agent_api.StartJobResponse().SerializeToString()

        server = grpc.aio.server(
            options=[
                ("grpc.server.max_pending_requests", 1),
                ("grpc.server.max_pending_requests_hard_limit", 1),
            ]
        )
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "backup.v1.AgentControl",
                    {"StartJob": grpc.unary_unary_rpc_method_handler(start_job)},
                ),
            )
        )
        self.ports = [server.add_insecure_port("127.0.0.1:0") for _ in range(COMPUTERS)]
        await server.start()
        self._ready.set()
        await asyncio.to_thread(self.stall.wait, 30)
        self.release.wait(30)  # the loop is stuck: nothing takes calls from grpc-core
        await server.stop(0)

    def __enter__(self) -> "StalledAgent":
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stall.set()
        self.release.set()
        self._thread.join(10)


async def test_calls_dropped_by_the_agents_grpc_are_not_received(
    policy_service, tmp_path, source_tree
) -> None:
    """Every computer of an agent whose grpc-core drops calls is NOT_RECEIVED (none REJECTED), and the dropped ones keep 'CANCELLED' in their detail."""
    with StalledAgent() as agent:
        computers = [(f"web-{i}", f"127.0.0.1:{port}") for i, port in enumerate(agent.ports)]
        policy = policy_over(computers, tmp_path, source_tree)
        await policy_service.CreatePolicy(
            api.CreatePolicyRequest(policy_id="nightly", policy=policy)
        )
        agent.stall.set()
        await asyncio.sleep(0.2)
        session = await policy_service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
    deliveries = {result.computer.name: result.delivery for result in session.computer_results}
    assert set(deliveries.values()) == {pb.DELIVERY_NOT_RECEIVED}, deliveries
    dropped = [r.detail for r in session.computer_results if r.detail.startswith("CANCELLED")]
    assert dropped, [r.detail for r in session.computer_results]
    assert session.statistics.not_received == COMPUTERS and session.statistics.rejected == 0

"""What each simulated agent of the fleet serves: the real AgentControl servicer over
simulated jobs, with no restore points, and with `--start-delay` a StartJob that waits."""

import asyncio

from backup.v1 import agent_control_pb2 as agent_pb
from backup.v1 import resources_pb2 as pb

from .service import AgentControl, Context
from .simulated import SimulatedJobs


class NoRestorePoints:
    """A simulated agent writes nothing, so it has no restore points to list."""

    def list(self, policy_id: str = "") -> list[pb.RestorePoint]:
        return []


class SlowStarts(AgentControl):
    """An agent whose StartJob waits before it starts the job (`--start-delay`)."""

    def __init__(self, jobs: SimulatedJobs, delay: float) -> None:
        super().__init__(jobs, NoRestorePoints())
        self._delay = delay

    async def StartJob(
        self, request: agent_pb.StartJobRequest, context: Context
    ) -> agent_pb.StartJobResponse:
        await asyncio.sleep(self._delay)
        return await super().StartJob(request, context)

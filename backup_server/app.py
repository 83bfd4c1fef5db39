"""The backup server process: storage, fan-out and PolicyService on one grpc.aio server."""

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc

from . import serving
from .control import Control
from .database import Database
from .fanout import AgentTransport
from .policies import Policies
from .service import PolicyService
from .transport import GrpcAgentTransport

log = logging.getLogger("backup_server")

SERVICE_NAME = api.DESCRIPTOR.services_by_name["PolicyService"].full_name


@dataclass
class ServerConfig:
    listen: str = "127.0.0.1:50051"
    db: Path = Path("backup-server.db")
    agent_deadline: float = 5.0
    max_in_flight: int = 10_000
    shutdown_grace: float = 5.0
    log_format: str = "text"


class BackupServer:
    """Starts and stops the whole server; `port` is known once started."""

    def __init__(self, config: ServerConfig, transport: AgentTransport | None = None) -> None:
        self.config = config
        self.transport = transport or GrpcAgentTransport(config.agent_deadline)
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._database: Database | None = None
        self.control: Control | None = None

    @property
    def address(self) -> str:
        host = self.config.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        self._database = await Database.open(self.config.db)
        self.control = Control(
            self._database, self.transport, self.config.agent_deadline, self.config.max_in_flight
        )
        await self.control.recover()
        server = grpc.aio.server(options=serving.SERVER_OPTIONS)
        api_grpc.add_PolicyServiceServicer_to_server(
            PolicyService(Policies(self._database), self.control), server
        )
        health = await serving.add_standard_services(server, [SERVICE_NAME])
        self.port = serving.bind(server, self.config.listen)
        await server.start()
        self._server = server
        await serving.mark_serving(health, [SERVICE_NAME])
        log.info(
            "backup server listening on %s (plaintext, development mode), database %s, "
            "agent deadline %.1f s",
            self.address,
            self.config.db,
            self.config.agent_deadline,
        )

    async def stop(self) -> None:
        """Stops accepting, lets running sessions finish within the grace, then closes."""
        server, database, self._server, self._database = self._server, self._database, None, None
        if server is None or database is None or self.control is None:
            return
        # Stop accepting at once; running sessions get the grace, then are cancelled.
        stopping = asyncio.ensure_future(server.stop(self.config.shutdown_grace))
        await self.control.shutdown(self.config.shutdown_grace)
        await stopping
        await self.transport.close()
        await database.close()
        log.info("backup server stopped")

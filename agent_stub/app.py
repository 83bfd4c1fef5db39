"""The agent process: AgentControl on its TCP address and on a socket in its data dir.

The socket (`<data dir>/agent.sock`, readable only by the agent's user) is how commands
run on the computer itself (`backup-agent run`) reach the agent serving that data dir.
"""

import fcntl
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from backup.v1 import agent_control_pb2 as api
from backup.v1 import agent_control_pb2_grpc as api_grpc
from backup_server import serving

from .jobs import JobRunner
from .points import BackupChain
from .service import AgentControl
from .store import AgentStore, write_atomically

log = logging.getLogger("agent_stub")

SERVICE_NAME = api.DESCRIPTOR.services_by_name["AgentControl"].full_name
SOCKET_NAME = "agent.sock"
INFO_NAME = "agent.json"
# sun_path holds 108 bytes with its NUL; longer paths cannot be bound.
SOCKET_PATH_MAX = 107


@dataclass
class AgentConfig:
    listen: str
    name: str
    data_dir: Path


class AgentServer:
    """Starts and stops one agent; `port` is known once started."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.port = 0
        self.jobs = JobRunner(AgentStore(config.data_dir), config.name)
        self._server: grpc.aio.Server | None = None
        self._lock_fd = -1

    @property
    def address(self) -> str:
        return f"{self.config.listen.rpartition(':')[0]}:{self.port}"

    def _lock_data_dir(self) -> None:
        self._lock_fd = os.open(self.config.data_dir / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SystemExit(f"another agent is serving {self.config.data_dir}") from None

    async def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        self.jobs.recover()
        server = grpc.aio.server(options=serving.SERVER_OPTIONS)
        api_grpc.add_AgentControlServicer_to_server(
            AgentControl(self.jobs, BackupChain(self.config.data_dir)), server
        )
        health = await serving.add_standard_services(server, [SERVICE_NAME])
        self.port = serving.bind(server, self.config.listen)
        socket_path = self._bind_local_socket(server)
        await server.start()
        self._server = server
        write_atomically(
            self.config.data_dir / INFO_NAME,
            json.dumps({"name": self.config.name, "address": self.address, "socket": socket_path}),
        )
        await serving.mark_serving(health, [SERVICE_NAME])
        log.info(
            "agent %s listening on %s (plaintext, development mode), data dir %s",
            self.config.name,
            self.address,
            self.config.data_dir,
        )

    def _bind_local_socket(self, server: grpc.aio.Server) -> str:
        path = (self.config.data_dir / SOCKET_NAME).resolve()
        if len(str(path)) > SOCKET_PATH_MAX:
            log.warning("data dir path too long for %s; local commands will use TCP", SOCKET_NAME)
            return ""
        path.unlink(missing_ok=True)
        serving.bind(server, f"unix:{path}")
        os.chmod(path, 0o600)
        return str(path)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(1.0)
        await self.jobs.shutdown()
        (self.config.data_dir / SOCKET_NAME).unlink(missing_ok=True)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        log.info("agent %s stopped", self.config.name)

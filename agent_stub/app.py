"""The agent process: AgentControl on its TCP address and on a socket in its data dir.

The socket (`<data dir>/agent.sock`, readable only by the agent's user) is how commands
run on the computer itself (`backup-agent run`) reach the agent serving that data dir.
It uses grpc's local credentials, in TLS mode too: the file's 0600 mode is the
credential, and whoever passes it could read the agent's key and state anyway.
"""

import fcntl
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from backup import metrics, serving
from backup.security import authz, guard, tls
from backup.security.roles import Role
from backup.security.tls import TlsFiles
from backup.v1 import agent_control_pb2 as api
from backup.v1 import agent_control_pb2_grpc as api_grpc

from .confinement import AllowedPaths
from .jobs import JobRunner
from .monitoring import AgentMonitoring
from .points import BackupChain
from .service import AgentControl
from .store import AgentStore, write_atomically

log = logging.getLogger("agent_stub")

SERVICE_NAME = api.DESCRIPTOR.services_by_name["AgentControl"].full_name
SOCKET_NAME = "agent.sock"
INFO_NAME = "agent.json"
# sun_path holds 108 bytes with its NUL; longer paths cannot be bound.
SOCKET_PATH_MAX = 107
# Each session sends an agent one call; this bounds what a flood can hold open at once.
MAX_CONCURRENT_RPCS = 100
# The backup server's commands: a fifth of the slots stay free for them whatever else runs.
COMMANDS = frozenset(f"/{SERVICE_NAME}/{method}" for method in ("StartJob", "StopJob"))
COMMAND_RESERVE_SHARE = 5


@dataclass
class AgentConfig:
    listen: str
    name: str
    data_dir: Path
    tls: TlsFiles | None = None
    insecure: bool = False
    allow_paths: tuple[Path, ...] = ()
    max_concurrent_rpcs: int = MAX_CONCURRENT_RPCS
    message_wait: float = guard.MESSAGE_WAIT_SECONDS
    handshake_timeout: float = serving.HANDSHAKE_TIMEOUT_SECONDS
    metrics_listen: str | None = None


def control_rules(authenticate: bool) -> dict[str, authz.Access]:
    """AgentControl, every method present and future: the backup server, or the socket."""
    server = authz.Access(roles=frozenset({Role.SERVER}), local=True)
    return {SERVICE_NAME: server if authenticate else authz.OPEN, **authz.open_standard_services()}


class AgentServer:
    """Starts and stops one agent; `port` is known once started."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.port = 0
        self.monitoring: AgentMonitoring | None = None
        self.metrics: metrics.MetricsEndpoint | None = None
        self._grpc_metrics: list[metrics.GrpcMetrics] = []
        if config.metrics_listen:
            registry = metrics.new_registry()
            self.monitoring = AgentMonitoring(registry)
            self._grpc_metrics.append(metrics.GrpcMetrics(registry))
            self.metrics = metrics.MetricsEndpoint(
                registry, config.metrics_listen, config.tls, config.insecure
            )
        self.allowed = AllowedPaths(config.allow_paths)
        self.store = AgentStore(config.data_dir)
        self.jobs = JobRunner(
            self.store,
            config.name,
            self.allowed.roots,
            on_end=self.monitoring.job_ended if self.monitoring else None,
        )
        self._tls = tls.TlsMaterial.load(config.tls, Role.AGENT) if config.tls else None
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
        if self._tls is None:
            tls.check_plaintext_listen(self.config.listen, self.config.insecure)
        self.store.check_private()
        self._lock_data_dir()
        self.jobs.recover()
        if self.monitoring is not None:
            self.monitoring.recover(self.jobs.list(""))
        # Not grpc's maximum_concurrent_rpcs: it takes a slot before any credential or
        # message is seen. The guard takes one once the caller is admitted (guard.py).
        limit = self.config.max_concurrent_rpcs
        slots = guard.Slots(limit, COMMANDS, reserve=limit // COMMAND_RESERVE_SHARE)
        authorizer = authz.Authorizer(
            control_rules(self._tls is not None),
            guard=guard.Guard(slots, message_wait=self.config.message_wait),
        )
        server = grpc.aio.server(
            options=serving.server_options(self.config.handshake_timeout, serving.MAX_CONNECTIONS),
            # The call counters come first, so that refused calls are counted too.
            interceptors=[*self._grpc_metrics, authorizer],
        )
        api_grpc.add_AgentControlServicer_to_server(
            AgentControl(self.jobs, BackupChain(self.config.data_dir), self.allowed), server
        )
        health = await serving.add_standard_services(server, [SERVICE_NAME])
        credentials = (
            self._tls.server_credentials(require_client_certificate=True) if self._tls else None
        )
        self.port = serving.bind(server, self.config.listen, credentials)
        socket_path = self._bind_local_socket(server)
        if self.metrics is not None:
            self.metrics.start()
        await server.start()
        self._server = server
        info = {
            "name": self.config.name,
            "address": self.address,
            "socket": socket_path,
            "tls": self._tls is not None,
        }
        write_atomically(self.config.data_dir / INFO_NAME, json.dumps(info))
        await serving.mark_serving(health, [SERVICE_NAME])
        log.info(
            "agent %s listening on %s (%s), data dir %s",
            self.config.name,
            self.address,
            "mutual TLS: only the backup server's certificate may send commands"
            if self._tls
            else "plaintext, development mode: no authentication",
            self.config.data_dir,
        )
        if self._tls is None:
            consequence = "anyone who can connect may start and stop this computer's backups"
            log.warning("%s", tls.plaintext_warning(self.config.listen, consequence))
        if self.allowed.unrestricted:
            log.warning("no --allow-path: policies may read and write any path on this computer")
        else:
            log.info("policies may use paths under: %s", ", ".join(self.allowed.roots))

    def _bind_local_socket(self, server: grpc.aio.Server) -> str:
        path = (self.config.data_dir / SOCKET_NAME).resolve()
        if len(str(path)) > SOCKET_PATH_MAX:
            log.warning(
                "data dir path too long for %s; local commands will use TCP%s",
                SOCKET_NAME,
                " and cannot pass TLS" if self._tls else "",
            )
            return ""
        path.unlink(missing_ok=True)
        # Born 0600 (no moment when others could connect), and chmod in case of odd umasks.
        previous = os.umask(0o177)
        try:
            serving.bind(
                server, f"unix:{path}", grpc.local_server_credentials(grpc.LocalConnectionType.UDS)
            )
        finally:
            os.umask(previous)
        os.chmod(path, 0o600)
        return str(path)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(1.0)
        await self.jobs.shutdown()
        if self.metrics is not None:
            self.metrics.stop()
        (self.config.data_dir / SOCKET_NAME).unlink(missing_ok=True)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        log.info("agent %s stopped", self.config.name)

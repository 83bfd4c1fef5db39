"""The backup server process: storage, fan-out and PolicyService on one grpc.aio server."""

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from backup import defaults, limits, metrics, serving
from backup.errors import BackupError
from backup.security import authz, tls
from backup.security.roles import Role
from backup.security.tls import TlsFiles
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc

from . import recovery
from .control import Control
from .deletion import PolicyDeletion
from .fanout import AgentTransport
from .followed import FollowedSessions
from .following import AGENT_LOST_AFTER, RECONCILE_FOR, AgentStreams
from .monitoring import ServerMonitoring
from .notify import Notifier
from .policies import Policies
from .queries import SessionQueries
from .replicas import DEFAULT_LEASE_SECONDS, Replicas
from .running import RunningSessions
from .scheduler import Clock, Leadership, Scheduler
from .scheduling import ServerActions
from .service import PolicyService
from .share_following import FollowedShares
from .shares import Shares
from .statuses import ComputerStatuses
from .storage.backends import DEFAULT_POOL_SIZE, open_storage, shown
from .storage.interface import Storage
from .storage.postgres import is_postgres_url
from .transport import GrpcAgentTransport
from .warming import warm_channels

log = logging.getLogger("backup_server")

SERVICE_NAME = api.DESCRIPTOR.services_by_name["PolicyService"].full_name


@dataclass
class ServerConfig:
    listen: str = defaults.SERVER_ADDRESS
    # A SQLite file, or a libpq URL (postgresql://...) that several replicas share.
    db: Path | str = Path("backup-server.db")
    db_pool_size: int = DEFAULT_POOL_SIZE
    # How long a replica that stopped answering keeps its sessions before others sweep them.
    replica_lease: float = DEFAULT_LEASE_SECONDS
    agent_deadline: float = defaults.AGENT_DEADLINE_SECONDS
    max_in_flight: int = defaults.MAX_IN_FLIGHT
    shutdown_grace: float = 5.0
    log_format: str = "text"
    tls: TlsFiles | None = None
    api_token_file: Path | None = None
    insecure: bool = False
    handshake_timeout: float = serving.HANDSHAKE_TIMEOUT_SECONDS
    agent_lost_after: float = AGENT_LOST_AFTER
    # How long a computer whose command timed out holds the outcome while it is asked.
    reconcile_for: float = RECONCILE_FOR
    metrics_listen: str | None = None
    notify: tuple[str, ...] = ()
    notify_on: str = "warning"


def operator_rules(authenticate: bool) -> dict[str, authz.Access]:
    """Every PolicyService method, present and future, needs an operator's credential."""
    operator = authz.Access(roles=frozenset({Role.OPERATOR}), token=True)
    return {
        SERVICE_NAME: operator if authenticate else authz.OPEN,
        **authz.open_standard_services(),
    }


class BackupServer:
    """Starts and stops the whole server; `port` is known once started."""

    def __init__(
        self,
        config: ServerConfig,
        transport: AgentTransport | None = None,
        clock: Clock | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.config = config
        # The scheduler's time and its one-per-deployment check; tests move time themselves.
        self._clock = clock
        self._leadership = leadership
        self._tls = tls.TlsMaterial.load(config.tls, Role.SERVER) if config.tls else None
        self._token = authz.load_token(config.api_token_file) if config.api_token_file else None
        self.transport = transport or GrpcAgentTransport(
            config.agent_deadline,
            credentials=self._tls.channel_credentials() if self._tls else None,
        )
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self.storage: Storage | None = None
        self.control: Control | None = None
        self.replicas: Replicas | None = None
        self.shares: Shares | None = None
        self.scheduler: Scheduler | None = None
        self._scheduling: asyncio.Task[None] | None = None
        self.followed: FollowedSessions | None = None
        self.monitoring: ServerMonitoring | None = None
        self.metrics: metrics.MetricsEndpoint | None = None
        self._grpc_metrics: list[metrics.GrpcMetrics] = []
        if config.metrics_listen or config.notify:
            registry = metrics.new_registry()
            notifier = Notifier(list(config.notify), config.notify_on) if config.notify else None
            self.monitoring = ServerMonitoring(registry, notifier)
            if config.metrics_listen:
                self._grpc_metrics.append(metrics.GrpcMetrics(registry))
                self.metrics = metrics.MetricsEndpoint(
                    registry, config.metrics_listen, config.tls, config.insecure
                )
        self._warming: asyncio.Task[int] | None = None

    @property
    def address(self) -> str:
        host = self.config.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        if self._tls is None:
            tls.check_plaintext_listen(self.config.listen, self.config.insecure)
        open_files = limits.raise_open_file_limit()
        authorizer = authz.Authorizer(
            operator_rules(self._tls is not None or self._token is not None), self._token
        )
        server = grpc.aio.server(
            options=serving.server_options(self.config.handshake_timeout, serving.MAX_CONNECTIONS),
            # The call counters come first, so that refused calls are counted too.
            interceptors=[*self._grpc_metrics, authorizer],
        )
        # Bound before the database is opened: a server that cannot listen leaves no
        # database file behind (`backup-server` run with no arguments, say).
        self.port = serving.bind(server, self.config.listen, self._server_credentials())
        try:
            storage = self.storage = await open_storage(self.config.db, self.config.db_pool_size)
            replicas = self.replicas = Replicas(storage, self.address, self.config.replica_lease)
            running = RunningSessions()
            shares = self.shares = Shares(
                storage,
                self.transport,
                self.config.agent_deadline,
                self.config.max_in_flight,
                replicas.id,
                self.config.replica_lease,
                running,
            )
            shares.lease_holds = replicas.lease_holds
            # Following needs server streams: a transport without them (a test's) ends each
            # session with its delivery, as before outcomes existed.
            if isinstance(self.transport, AgentStreams):
                # Over PostgreSQL each replica follows the jobs of its own shares.
                followed_shares = (
                    FollowedShares(
                        storage,
                        self.transport,
                        self.config.agent_deadline,
                        replicas.id,
                        self.config.replica_lease,
                        self.config.agent_lost_after,
                        self.config.reconcile_for,
                    )
                    if is_postgres_url(self.config.db)
                    else None
                )
                self.followed = FollowedSessions(
                    storage,
                    self.transport,
                    running,
                    self.config.agent_deadline,
                    self.config.agent_lost_after,
                    self.config.reconcile_for,
                    followed_shares,
                    replicas.id,
                )
                if followed_shares is not None:
                    shares.on_delivered = followed_shares.follow
                    followed_shares.lease_holds = replicas.lease_holds
                if self.monitoring is not None:
                    self.monitoring.follow(self.followed)
            self.control = Control(
                storage,
                self.transport,
                self.config.agent_deadline,
                self.config.max_in_flight,
                running,
                self.followed,
                observer=self.monitoring,
                replica_id=replicas.id,
                shares=shares,
                # One server per SQLite file: no other replica to claim its sessions.
                lease_live=replicas.lease_live if is_postgres_url(self.config.db) else None,
            )
            # Takes this replica's lease and what stopped replicas left RUNNING.
            # Only what no live replica follows is followed here (claimed in the sweep).
            follow = self.followed.follow_claimed if self.followed is not None else None
            await replicas.start(self.control.adopt, follow)
            shares.start()
            if self.followed is not None and self.followed.shares is not None:
                self.followed.shares.start()
        except (OSError, BackupError) as error:
            raise SystemExit(f"cannot open the database {shown(self.config.db)}: {error}") from None
        queries = SessionQueries(storage, self.control.running)
        self.scheduler = Scheduler(
            ServerActions(storage, self.control, self.transport, self.config.agent_deadline),
            self._clock,
            self._leadership or replicas,
        )
        if self.followed is not None:
            # A start's outcome that became final may call for a retry.
            scheduler = self.scheduler
            self.followed.add_outcome_hook(lambda session, corrected: scheduler.wake())
        policies = Policies(storage, self.scheduler.clock.now, self.scheduler.wake)
        api_grpc.add_PolicyServiceServicer_to_server(
            PolicyService(
                policies,
                self.control,
                queries,
                ComputerStatuses(storage),
                PolicyDeletion(policies, self.control, storage),
            ),
            server,
        )
        health = await serving.add_standard_services(server, [SERVICE_NAME])
        if self.metrics is not None:
            self.metrics.start()
        if self.monitoring is not None:
            # Sends queued messages; reloads the gauges stored state gives, in the background.
            self.monitoring.start(storage)
        if self.monitoring is not None and self.monitoring.notifier is not None:
            self.monitoring.notifier.start()
            log.info("notifications to %s", ", ".join(self.monitoring.notifier.targets))
        await server.start()
        self._server = server
        await serving.mark_serving(health, [SERVICE_NAME])
        # After recovery, so missed runs and due retries see the sessions as they ended.
        self._scheduling = asyncio.create_task(self.scheduler.run())
        self._warming = asyncio.create_task(
            warm_channels(storage, self.transport, self.config.agent_deadline, replicas.id)
        )
        log.info(
            "backup server listening on %s (%s), database %s, agent deadline %.1f s, "
            "open-file limit %d",
            self.address,
            self.mode,
            shown(self.config.db),
            self.config.agent_deadline,
            open_files,
        )
        if self._tls is None:
            consequence = (
                "the API token crosses the network in clear"
                if self._token
                else "anyone who can connect may create, start, stop and delete policies"
            )
            log.warning("%s", tls.plaintext_warning(self.config.listen, consequence))

    def _server_credentials(self) -> grpc.ServerCredentials | None:
        if self._tls is None:
            return None
        # grpcio cannot ask for a client certificate without requiring one: with a token
        # file, operators authenticate by token and no client certificate is requested.
        return self._tls.server_credentials(require_client_certificate=self._token is None)

    @property
    def mode(self) -> str:
        """Which security mode is active, in the words of the start-up log line."""
        if self._tls is not None and self._token is None:
            return "mutual TLS: operators need an operator certificate; mutual TLS to agents"
        if self._tls is not None:
            return "TLS: operators need the API token; mutual TLS to agents"
        if self._token is not None:
            return "plaintext, development mode: operators need the API token"
        return "plaintext, development mode: no authentication"

    async def stop(self) -> None:
        """Stops accepting, lets running sessions finish within the grace, then closes."""
        server, storage, self._server, self.storage = self._server, self.storage, None, None
        if server is None or storage is None or self.control is None:
            return
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming
        if self.scheduler is not None:
            await self.scheduler.close(self._scheduling)
        # Stop accepting at once; running sessions get the grace, then are cancelled.
        stopping = asyncio.ensure_future(server.stop(self.config.shutdown_grace))
        await recovery.shutdown(self.control.running, self.config.shutdown_grace)
        if self.followed is not None:
            await self.followed.close()
        await stopping
        if self.shares is not None:
            await self.shares.stop()
        if self.followed is not None and self.followed.shares is not None:
            await self.followed.shares.stop()
        await self.transport.close()
        if self.replicas is not None:
            await self.replicas.stop()
        if self.monitoring is not None:
            # Before the storage closes: the last messages may still read their policy.
            await self.monitoring.close(self.config.shutdown_grace)
        await storage.close()
        if self.metrics is not None:
            self.metrics.stop()
        log.info("backup server stopped")

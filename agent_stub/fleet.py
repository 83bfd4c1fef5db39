"""A fleet simulator: thousands of agents in one process, each on its own loopback port.

    python -m agent_stub.fleet --count N --base-port P [--hung K] [--refused K]
                               [--job-seconds S [--job-seconds-max S]] [--write FILE]
                               [--fail F] [--hang F] [--restart F] [--partition F]
                               [--restart-seconds S] [--start-delay S] [--seed N]
                               [--tls-cert FILE --tls-key FILE --tls-ca FILE]

Every simulated agent serves the real `AgentControl` servicer (the same validation and
status codes as a real agent, behind the same authorizing interceptor) over jobs kept in
memory (agent_stub.simulated): StartJob starts one job per policy (`already_running`
while it runs; a repeat of the same session returns its job), StopJob stops it
(`was_running`), ListJobs lists newest first (by policy and session), GetJob finds one,
WatchJob follows one. Nothing touches the disk: a job runs between `--job-seconds` and
`--job-seconds-max` and then ends as its agent's outcome says: the shares `--fail`,
`--hang`, `--restart` and `--partition` of the agents (exactly that many, shuffled by
`--seed`) fail, hang until stopped, restart half-way through a job (down for
`--restart-seconds`, then back on the same port with the job FAILED), or stop answering
for `--restart-seconds` while the job goes on; the others succeed, without a restore point
since none was written, so ListRestorePoints answers with none. With `--start-delay S`
every StartJob waits S seconds before it starts its job (a slow agent, or a long network
path): a StopJob arriving meanwhile finds nothing running, as on a real agent whose start
is still on the wire. Per-call log lines are off: thousands of agents in one process
would each log every stop.

Agents listen on P, P+1, ... P+N-1, the hung addresses on the next K ports and the
refused ones on the K after (`--base-port 0` lets the system choose every port). A hung
address is a listening socket nobody accepts: the kernel completes the TCP handshake and
no byte ever comes back. A refused address is a port bound without listening: connecting
is refused, and no other process can take the port meanwhile.

With `--tls-*` every agent serves over mutual TLS exactly as a real agent in TLS mode:
only a client certificate from that CA of the backup-server role may call. One agent
certificate serves every port, since a certificate names a host (its SAN: 127.0.0.1),
never a port.

When every port is ready, one JSON line goes to stdout (and to `--write FILE`):
`{"agents": [{"name": ..., "address": ...}, ...], "hung": [...], "refused": [...],
"outcomes": {address: outcome}}` (outcomes lists the agents that do not succeed).
Agent names are `sim-<port>`, unique on the host, so the lists of several fleet
processes (each with its own --base-port) can simply be concatenated: that is how to
simulate more computers than one process's open-file limit allows. Each agent holds
about three descriptors (its listening socket and one connection per client).

Why one grpc.aio server per agent: a server bound to many ports cannot tell its handler
which port a call came in on (the context knows the peer, never the local address), and
a single server queues every incoming call in one pending-request list whose limit
cancels calls past a few thousand. Per-agent servers cost about 13 KB and 0.1 ms each.
"""

import argparse
import asyncio
import functools
import json
import logging
import random
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import grpc

from backup import limits, serving
from backup.security import authz, tls
from backup.security.roles import Role
from backup.security.tls import TlsFiles
from backup.v1 import agent_control_pb2_grpc as api_grpc

from .app import control_rules
from .fleet_agents import NoRestorePoints, SlowStarts
from .service import AgentControl
from .simulated import OUTCOMES, SimulatedJobs, assign_outcomes

log = logging.getLogger("agent_stub.fleet")

HOST = "127.0.0.1"
# Its listening socket, plus one connection from the server and one from a bench client.
DESCRIPTORS_PER_AGENT = 3
HUNG_BACKLOG = 128


@dataclass
class FleetConfig:
    count: int
    base_port: int = 0
    hung: int = 0
    refused: int = 0
    job_seconds: float = 60.0
    tls: TlsFiles | None = None
    job_seconds_max: float = 0.0  # 0: every job runs job_seconds
    fail: float = 0.0
    hang: float = 0.0
    restart: float = 0.0
    partition: float = 0.0
    restart_seconds: float = 2.0
    seed: int = 0
    start_delay: float = 0.0

    @property
    def durations(self) -> tuple[float, float]:
        return self.job_seconds, max(self.job_seconds, self.job_seconds_max)

    def outcomes(self) -> list[str]:
        mix = {
            "fail": self.fail,
            "hang": self.hang,
            "restart": self.restart,
            "partition": self.partition,
        }
        return assign_outcomes(self.count, mix, self.seed)


class FleetAddresses(TypedDict):
    """What the fleet serves, as printed: agents by name and address, then bare addresses."""

    agents: list[dict[str, str]]
    hung: list[str]
    refused: list[str]
    outcomes: dict[str, str]


class FleetError(Exception):
    """The fleet cannot start as asked; the message says why."""


def descriptors_needed(config: FleetConfig) -> int:
    return (
        config.count * DESCRIPTORS_PER_AGENT
        + config.hung
        + config.refused
        + limits.RESERVED_DESCRIPTORS
    )


class Fleet:
    """Simulated agents plus hung and refused addresses; `addresses()` once started."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.jobs: dict[str, SimulatedJobs] = {}
        self._servers: dict[str, grpc.aio.Server] = {}
        self._restarts: set[asyncio.Task[None]] = set()
        self._agents: list[dict[str, str]] = []
        self._sockets: list[socket.socket] = []
        self._hung: list[str] = []
        self._refused: list[str] = []
        material = tls.TlsMaterial.load(config.tls, Role.AGENT) if config.tls else None
        # Made once: thousands of agents share one set of credentials and one authorizer.
        self._credentials = (
            material.server_credentials(require_client_certificate=True) if material else None
        )
        self._authorizer = authz.Authorizer(control_rules(authenticate=material is not None))

    @property
    def mode(self) -> str:
        return "mutual TLS" if self._credentials else "plaintext"

    def _port(self, index: int) -> int:
        return self.config.base_port + index if self.config.base_port else 0

    async def start(self) -> None:
        config = self.config
        allowed = limits.raise_open_file_limit()
        if descriptors_needed(config) > allowed:
            raise FleetError(
                f"{config.count} agents, {config.hung} hung and {config.refused} refused "
                f"addresses need about {descriptors_needed(config)} open files; this process "
                f"may open {allowed} (ulimit -n): run several fleet processes, each with "
                "fewer agents and its own --base-port"
            )
        rng = random.Random(config.seed)
        try:
            for index, outcome in enumerate(config.outcomes()):
                await self._start_agent(self._port(index), outcome, rng)
            for index in range(config.count, config.count + config.hung):
                self._hung.append(self._bind(self._port(index), listen=True))
            first_refused = config.count + config.hung
            for index in range(first_refused, first_refused + config.refused):
                self._refused.append(self._bind(self._port(index), listen=False))
        except BaseException:
            await self.stop()
            raise

    async def _start_agent(self, port: int, outcome: str, rng: random.Random) -> None:
        jobs = SimulatedJobs(self.config.durations, outcome, rng)
        server, bound = await self._serve(port, jobs)
        address = f"{HOST}:{bound}"
        jobs.restart = functools.partial(self._restart_later, address, True)
        jobs.partition = functools.partial(self._restart_later, address, False)
        self._servers[address] = server
        self.jobs[address] = jobs
        self._agents.append({"name": f"sim-{bound}", "address": address})

    async def _serve(self, port: int, jobs: SimulatedJobs) -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(options=serving.SERVER_OPTIONS, interceptors=[self._authorizer])
        servicer = (
            SlowStarts(jobs, self.config.start_delay)
            if self.config.start_delay
            else AgentControl(jobs, NoRestorePoints())
        )
        api_grpc.add_AgentControlServicer_to_server(servicer, server)
        try:
            bound = serving.bind(server, f"{HOST}:{port}", self._credentials)
        except SystemExit as error:  # bind's one line, for the fleet to stop on cleanly
            raise FleetError(str(error)) from None
        await server.start()
        return server, bound

    def _restart_later(self, address: str, crash: bool) -> None:
        task = asyncio.ensure_future(self._restart_agent(address, crash))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _restart_agent(self, address: str, crash: bool) -> None:
        """Down for restart_seconds (streams broken, calls refused), then back: after a
        crash its running jobs are FAILED, after a partition they went on meanwhile."""
        server = self._servers.pop(address, None)
        if server is None:
            return
        await server.stop(None)
        if crash:
            self.jobs[address].crash()
        port = int(address.rpartition(":")[2])
        # Held bound (refusing) while down, so that no other process on the machine takes
        # the port and answers in the agent's place.
        placeholder = socket.socket()
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            placeholder.bind((HOST, port))
            await asyncio.sleep(self.config.restart_seconds)
        finally:
            placeholder.close()
        try:
            self._servers[address], _ = await self._serve(port, self.jobs[address])
        except FleetError as error:
            log.error("agent %s did not come back: %s", address, error)

    def _bind(self, port: int, listen: bool) -> str:
        sock = socket.socket()
        try:
            sock.bind((HOST, port))
        except OSError as error:
            sock.close()
            raise FleetError(f"cannot bind {HOST}:{port}: {error.strerror}") from None
        if listen:
            sock.listen(HUNG_BACKLOG)
        self._sockets.append(sock)
        return f"{HOST}:{sock.getsockname()[1]}"

    def addresses(self) -> FleetAddresses:
        outcomes = {
            address: jobs.outcome
            for address, jobs in self.jobs.items()
            if jobs.outcome != "succeed"
        }
        return {
            "agents": self._agents,
            "hung": self._hung,
            "refused": self._refused,
            "outcomes": outcomes,
        }

    async def stop(self) -> None:
        for task in list(self._restarts):
            task.cancel()
        await asyncio.gather(*self._restarts, return_exceptions=True)
        await asyncio.gather(*(server.stop(None) for server in self._servers.values()))
        self._servers.clear()
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()


def parse_args(argv: Sequence[str] | None = None) -> tuple[FleetConfig, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m agent_stub.fleet",
        description="Serve many simulated agents on loopback, for load tests and benchmarks.",
    )
    parser.add_argument("--count", type=int, required=True, help="simulated agents to serve")
    parser.add_argument(
        "--base-port", type=int, required=True, help="first port (0: the system picks each)"
    )
    parser.add_argument("--hung", type=int, default=0, help="addresses that never answer")
    parser.add_argument("--refused", type=int, default=0, help="addresses that refuse")
    parser.add_argument(
        "--job-seconds", type=float, default=60.0, help="how long a job runs (default 60)"
    )
    parser.add_argument(
        "--job-seconds-max",
        type=float,
        default=0.0,
        help="jobs run between --job-seconds and this long (default: exactly --job-seconds)",
    )
    for outcome in OUTCOMES[1:]:
        parser.add_argument(
            f"--{outcome}",
            type=float,
            default=0.0,
            metavar="SHARE",
            help=f"share of the agents (0 to 1) whose jobs {outcome} (see above; default 0)",
        )
    parser.add_argument(
        "--restart-seconds", type=float, default=2.0, help="how long a restart is down"
    )
    parser.add_argument(
        "--start-delay", type=float, default=0.0, help="seconds each StartJob waits first"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds outcomes and durations")
    parser.add_argument("--write", type=Path, help="also write the addresses JSON to this file")
    # Every agent serves on loopback: there is no off-loopback plaintext to allow.
    tls.add_arguments(parser, insecure_option=False)
    args = parser.parse_args(argv)
    if args.count < 0 or args.hung < 0 or args.refused < 0:
        parser.error("--count, --hung and --refused must not be negative")
    last = args.base_port + args.count + args.hung + args.refused - 1
    if args.base_port < 0 or (args.base_port and last > 65535):
        parser.error(f"ports {args.base_port}..{last} do not fit in 1..65535")
    if args.job_seconds <= 0:
        parser.error("--job-seconds must be positive")
    shares = (args.fail, args.hang, args.restart, args.partition)
    if any(not 0 <= share <= 1 for share in shares) or sum(shares) > 1:
        parser.error(
            "--fail, --hang, --restart and --partition are shares from 0 to 1, together at most 1"
        )
    if args.restart_seconds < 0 or args.start_delay < 0:
        parser.error("--restart-seconds and --start-delay must not be negative")
    config = FleetConfig(
        args.count,
        args.base_port,
        args.hung,
        args.refused,
        args.job_seconds,
        tls.files_from(args, parser),
        job_seconds_max=args.job_seconds_max,
        fail=args.fail,
        hang=args.hang,
        restart=args.restart,
        partition=args.partition,
        restart_seconds=args.restart_seconds,
        seed=args.seed,
        start_delay=args.start_delay,
    )
    return config, args.write


async def serve(config: FleetConfig, write: Path | None) -> None:
    fleet = Fleet(config)

    async def start() -> None:
        started = time.perf_counter()
        await fleet.start()
        # Profiled: 39% of a 5,000-agent fleet's CPU under load went to the collector
        # walking the servers again and again.
        serving.tune_garbage_collector()
        line = json.dumps(fleet.addresses())
        if write is not None:
            await asyncio.to_thread(write.write_text, line + "\n")
        # The addresses are this tool's output, for whoever started it to read.
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        log.info(
            "fleet ready in %.1f s: %d agents, %d hung, %d refused (%s, loopback)",
            time.perf_counter() - started,
            config.count,
            config.hung,
            config.refused,
            fleet.mode,
        )

    await serving.run_until_signalled(start, fleet.stop)


def main(argv: Sequence[str] | None = None) -> None:
    config, write = parse_args(argv)
    serving.configure_logging()
    logging.getLogger("agent_stub.service").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(config, write))
    except FleetError as error:
        raise SystemExit(f"fleet: {error}") from None


if __name__ == "__main__":
    main()

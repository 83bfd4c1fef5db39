"""A fleet simulator: thousands of agents in one process, each on its own loopback port.

    python -m agent_stub.fleet --count N --base-port P [--hung K] [--refused K]
                               [--job-seconds S] [--write FILE]
                               [--tls-cert FILE --tls-key FILE --tls-ca FILE]

Every simulated agent serves the real `AgentControl` servicer (the same validation and
status codes as a real agent, behind the same authorizing interceptor) over jobs kept in
memory: StartJob starts one job per
policy (`already_running` while it runs), StopJob stops it (`was_running`), ListJobs
lists newest first, GetJob finds one. Nothing touches the disk: a job simply runs for
`--job-seconds` and then succeeds, without a restore point since none was written, so
ListRestorePoints answers with none. Per-call log lines are off: thousands of agents
in one process would each log every stop.

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
`{"agents": [{"name": ..., "address": ...}, ...], "hung": [...], "refused": [...]}`.
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
import json
import logging
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import grpc

from backup import limits, serving
from backup.errors import NotFound
from backup.ids import new_job_id, newest_first
from backup.security import authz, tls
from backup.security.roles import Role
from backup.security.tls import TlsFiles
from backup.v1 import agent_control_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb

from .app import control_rules
from .service import AgentControl

log = logging.getLogger("agent_stub.fleet")

HOST = "127.0.0.1"
JOBS_KEPT = 20
# Its listening socket, plus one connection from the server and one from a bench client.
DESCRIPTORS_PER_AGENT = 3
HUNG_BACKLOG = 128


class NoRestorePoints:
    """A simulated agent writes nothing, so it has no restore points to list."""

    def list(self, policy_id: str = "") -> list[pb.RestorePoint]:
        return []


class SimulatedJobs:
    """One simulated agent's jobs, in memory: one per policy at a time, each `job_seconds` long."""

    def __init__(self, job_seconds: float) -> None:
        self._job_ns = int(job_seconds * 1e9)
        self._running: dict[str, pb.Job] = {}
        self._finished: dict[str, pb.Job] = {}

    def _settle(self) -> None:
        """Jobs whose time is up have succeeded (checked on each call: no timer per job)."""
        if not self._running:
            return
        now = time.time_ns()
        for policy_id, job in list(self._running.items()):
            end = job.start_time.ToNanoseconds() + self._job_ns
            if end <= now:
                job.state = pb.JOB_STATE_SUCCEEDED
                job.end_time.FromNanoseconds(end)
                self._finish(policy_id, job)

    def _finish(self, policy_id: str, job: pb.Job) -> None:
        del self._running[policy_id]
        self._finished[job.id] = job
        if len(self._finished) > JOBS_KEPT:
            del self._finished[next(iter(self._finished))]

    def start(self, policy: pb.BackupPolicy, session_id: str) -> tuple[pb.Job, bool]:
        self._settle()
        running = self._running.get(policy.id)
        if running is not None:
            return running, True
        job = pb.Job(
            id=new_job_id(), policy_id=policy.id, session_id=session_id, state=pb.JOB_STATE_RUNNING
        )
        job.start_time.FromNanoseconds(time.time_ns())
        self._running[policy.id] = job
        return job, False

    def stop(self, policy_id: str) -> tuple[pb.Job, bool]:
        self._settle()
        job = self._running.get(policy_id)
        if job is None:
            return pb.Job(), False
        job.state = pb.JOB_STATE_STOPPED
        job.error = "stopped on request"
        job.end_time.FromNanoseconds(time.time_ns())
        self._finish(policy_id, job)
        return job, True

    def get(self, job_id: str) -> pb.Job:
        self._settle()
        for running in self._running.values():
            if running.id == job_id:
                return running
        finished = self._finished.get(job_id)
        if finished is None:
            raise NotFound(f"job {job_id!r} not found")
        return finished

    def list(self, policy_id: str) -> list[pb.Job]:
        self._settle()
        jobs = [*self._running.values(), *self._finished.values()]
        if policy_id:
            jobs = [job for job in jobs if job.policy_id == policy_id]
        return newest_first(jobs, lambda job: (job.start_time.ToNanoseconds(), job.id))


@dataclass
class FleetConfig:
    count: int
    base_port: int = 0
    hung: int = 0
    refused: int = 0
    job_seconds: float = 60.0
    tls: TlsFiles | None = None


class FleetAddresses(TypedDict):
    """What the fleet serves, as printed: agents by name and address, then bare addresses."""

    agents: list[dict[str, str]]
    hung: list[str]
    refused: list[str]


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
        self._servers: list[grpc.aio.Server] = []
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
        try:
            for index in range(config.count):
                await self._start_agent(self._port(index))
            for index in range(config.count, config.count + config.hung):
                self._hung.append(self._bind(self._port(index), listen=True))
            first_refused = config.count + config.hung
            for index in range(first_refused, first_refused + config.refused):
                self._refused.append(self._bind(self._port(index), listen=False))
        except BaseException:
            await self.stop()
            raise

    async def _start_agent(self, port: int) -> None:
        server = grpc.aio.server(options=serving.SERVER_OPTIONS, interceptors=[self._authorizer])
        jobs = SimulatedJobs(self.config.job_seconds)
        api_grpc.add_AgentControlServicer_to_server(AgentControl(jobs, NoRestorePoints()), server)
        try:
            bound = serving.bind(server, f"{HOST}:{port}", self._credentials)
        except SystemExit as error:  # bind's one line, for the fleet to stop on cleanly
            raise FleetError(str(error)) from None
        await server.start()
        self._servers.append(server)
        address = f"{HOST}:{bound}"
        self.jobs[address] = jobs
        self._agents.append({"name": f"sim-{bound}", "address": address})

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
        return {"agents": self._agents, "hung": self._hung, "refused": self._refused}

    async def stop(self) -> None:
        await asyncio.gather(*(server.stop(None) for server in self._servers))
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
    config = FleetConfig(
        args.count,
        args.base_port,
        args.hung,
        args.refused,
        args.job_seconds,
        tls.files_from(args, parser),
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

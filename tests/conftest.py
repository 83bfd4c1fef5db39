"""Real servers on loopback port 0, real agents, real SQLite files, real unreachable ports."""

import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from security_support import Pki, make_pki

from agent_stub import engine
from agent_stub.app import AgentConfig, AgentServer
from agent_stub.fleet import Fleet, FleetConfig
from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import agent_control_pb2_grpc as agent_grpc
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.app import BackupServer, ServerConfig

DEADLINE = 1.0
RECONCILE_FOR = 3.0

# A real PostgreSQL for the tests that run on both backends (fixtures postgres, postgres_url);
# the local SMTP server and HTTP receiver notifications are sent to.
pytest_plugins = ["postgres_support", "notify_support"]

ROOT = Path(__file__).resolve().parent.parent


def extracted_tool(package: str, binary: str) -> str:
    """A tool `make test` extracts from a Debian package into .tools/ (`.ci/debian-extract`),
    or one on PATH; a skip saying how to get it where it is absent, a failure under CI."""
    local = ROOT / ".tools" / package / "usr" / "bin" / binary
    found = str(local) if local.exists() else shutil.which(binary)
    if found is None:
        why = f"{binary} not found: `bash .ci/debian-extract {package}` extracts it"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return found

@pytest.fixture
def closed_address() -> Iterator[str]:
    """An address whose port is closed: connecting is refused at once.

    The port stays bound (never listening) for the test, so no server started meanwhile,
    here or by another test run on the machine, can take it and answer.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{probe.getsockname()[1]}"


def stable_port() -> int:
    """A free port below the ephemeral range, for a process restarted on the same address:
    no outgoing connection on the machine can take it between the two runs."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        port = random.randrange(max(1024, low // 2), low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


@pytest.fixture
def hung_addresses() -> Iterator[Callable[[int], list[str]]]:
    """Addresses that accept TCP connections and never answer a byte."""
    sockets: list[socket.socket] = []

    def make(count: int) -> list[str]:
        made = []
        for _ in range(count):
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(64)
            sockets.append(listener)
            made.append(f"127.0.0.1:{listener.getsockname()[1]}")
        return made

    yield make
    for listener in sockets:
        listener.close()


@pytest.fixture
def hung_address(hung_addresses: Callable[[int], list[str]]) -> str:
    return hung_addresses(1)[0]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One test PKI for the whole run (our CA, another CA, expired pairs), made by the certs module."""
    return make_pki(tmp_path_factory.mktemp("certificates"))


@pytest.fixture
def server_db(tmp_path: Path) -> str | Path:
    """What the servers' --db names: a SQLite file (a module binds `both_backends` from
    postgres_support to this name to run over PostgreSQL as well)."""
    return tmp_path / "server.db"


@pytest.fixture
async def start_server(server_db: str | Path) -> AsyncIterator[Callable[..., Awaitable[BackupServer]]]:
    """Starts backup servers on port 0 (stopped at the end); keyword args go to ServerConfig."""
    servers: list[BackupServer] = []

    async def start(**overrides: object) -> BackupServer:
        config = ServerConfig(
            listen="127.0.0.1:0",
            db=server_db,
            agent_deadline=DEADLINE,
            # A hung computer holds a session's outcome this long (a minute in production).
            reconcile_for=RECONCILE_FOR,
        )
        clock = overrides.pop("clock", None)  # the scheduler's, when a test moves time itself
        for key, value in overrides.items():
            setattr(config, key, value)
        server = BackupServer(config, clock=clock)  # type: ignore[arg-type]
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def server(start_server: Callable[..., Awaitable[BackupServer]]) -> BackupServer:
    return await start_server()


@pytest.fixture
async def policy_service(server: BackupServer) -> AsyncIterator[api_grpc.PolicyServiceStub]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield api_grpc.PolicyServiceStub(channel)


@pytest.fixture
async def start_agent(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[AgentServer]]]:
    """Starts real agents on port 0, each with its own data dir under tmp_path; keyword args go to AgentConfig."""
    agents: list[AgentServer] = []

    async def start(name: str, **overrides: Any) -> AgentServer:
        agent = AgentServer(
            AgentConfig("127.0.0.1:0", name, tmp_path / "agents" / name, **overrides)
        )
        await agent.start()
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        await agent.stop()


@pytest.fixture
async def start_fleet() -> AsyncIterator[Callable[..., Awaitable[Fleet]]]:
    """Starts in-process fleets on system-chosen ports (stopped at the end)."""
    async with contextlib.AsyncExitStack() as started:

        async def start(**fields: object) -> Fleet:
            fleet = Fleet(FleetConfig(**{"count": 2, "job_seconds": 60.0, **fields}))
            await fleet.start()
            started.push_async_callback(fleet.stop)
            return fleet

        yield start


@pytest.fixture
def source_tree(tmp_path: Path) -> Path:
    """A small real directory to back up."""
    root = tmp_path / "source"
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("alpha\n")
    (root / "docs" / "deep" / "b.bin").write_bytes(os.urandom(64 * 1024))
    (root / "empty").write_bytes(b"")
    return root


def policy_over(
    computers: list[tuple[str, str]],
    tmp_path: Path,
    source: Path,
    group_ids: list[str] | None = None,
    **fields: object,
) -> pb.BackupPolicy:
    """A policy backing `source` up into tmp_path/repository on the given computers."""
    return pb.BackupPolicy(
        name="nightly",
        computers=[pb.Computer(name=name, address=address) for name, address in computers],
        protection_group_ids=group_ids or [],
        source_paths=[str(source)],
        repository=str(tmp_path / "repository"),
        **fields,  # type: ignore[arg-type]
    )


async def wait_for(condition: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    """Polls `condition` until it holds; fails the test after `seconds`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not await condition():
        if loop.time() > end:
            raise AssertionError(f"condition not met within {seconds} s")
        await asyncio.sleep(0.02)


@pytest.fixture
async def agent_control() -> AsyncIterator[Callable[[str], agent_grpc.AgentControlStub]]:
    """AgentControl stubs over real channels to agents' addresses (closed at the end)."""
    channels: list[grpc.aio.Channel] = []

    def connect(address: str) -> agent_grpc.AgentControlStub:
        channel = grpc.aio.insecure_channel(address)
        channels.append(channel)
        return agent_grpc.AgentControlStub(channel)

    yield connect
    for channel in channels:
        await channel.close()


async def job_ends(
    control: agent_grpc.AgentControlStub, job_id: str, seconds: float = 10.0
) -> pb.Job:
    """Waits until the job is no longer running; returns it."""
    job = pb.Job()

    async def ended() -> bool:
        job.CopyFrom(await control.GetJob(agent_api.GetJobRequest(job_id=job_id)))
        return job.state != pb.JOB_STATE_RUNNING

    await wait_for(ended, seconds)
    return job


def restore_points(repository: Path) -> list[str]:
    """The restore points committed in a repository."""
    if not (repository / "config.json").exists():
        return []
    summaries, _ = engine.Repository.open(repository).summaries()
    return sorted(point.id for point in summaries)


def point_files(repository: Path, point_id: str) -> dict[str, bytes]:
    """Each file of a restore point, by its stored path, read back through its chunks."""
    opened = engine.Repository.open(repository)
    return {
        entry.path: b"".join(opened.read_chunk(name) for name in entry.chunks)
        for entry in opened.read_point(point_id).entries
        if entry.kind == "file"
    }


class Process:
    """A real server or agent process started from its command line, stderr to a file.

    It leads a process group of its own, so that stopping it also stops what a wrapper
    or a shell command line started.
    """

    def __init__(
        self,
        args: list[str],
        log: Path,
        prefix: list[str] | None = None,
        *,
        command: list[str] | None = None,
        **options: Any,
    ) -> None:
        """`python -m ARGS` after the `prefix` command, or any `command`; `options` go to Popen."""
        self.log = log
        self._log_file = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            command or [*(prefix or []), sys.executable, "-m", *args],
            stderr=self._log_file,
            start_new_session=True,
            **options,
        )
        self.address = ""

    def wait_listening(self, seconds: float = 15.0) -> str:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            match = re.search(r"listening on (\S+)", self.log.read_text())
            if match:
                self.address = match.group(1)
                return self.address
            if self.popen.poll() is not None:
                raise AssertionError(f"process exited: {self.log.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"not listening after {seconds} s: {self.log.read_text()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        self._log_file.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Starts `python -m MODULE ARGS...` processes; each is waited for until it listens."""
    processes: list[Process] = []

    def start(*args: str) -> Process:
        process = Process(list(args), tmp_path / f"process-{len(processes)}.log")
        processes.append(process)
        process.wait_listening()
        return process

    yield start
    for process in processes:
        process.stop()


@pytest.fixture
async def slow_address() -> AsyncIterator[str]:
    """An agent address that completes the HTTP/2 handshake but never answers a command."""
    never = asyncio.Event()

    async def hang(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await never.wait()
        return b""

    handler = grpc.method_handlers_generic_handler(
        "backup.v1.AgentControl",
        {name: grpc.unary_unary_rpc_method_handler(hang) for name in ("StartJob", "StopJob")},
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The fuzz test runs last: after its sync gRPC client, grpc.aio in the same process
    was measurably slower, and the 2,000-computer scale test missed its deadlines."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/test_fuzz.py"))

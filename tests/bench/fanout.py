"""Fan-out to a simulated fleet: StartPolicy and StopPolicy against the floor gRPC sets.

Three kinds of process share the machine: this one (the operator's client, and the
floor's bare client), a backup server (`python -m backup_server`, its own process, as in
production) and fleet processes (`python -m agent_stub.fleet`, at most
BENCH_AGENTS_PER_FLEET agents each). For each fleet size N:

- floor: the StartJob (and StopJob) requests the server sends, byte for byte, sent by a
  bare grpc.aio client over warm channels, all N at once, to the same fleet in the same
  run; this process gets the same garbage-collector settings as the server and fleet;
- StartPolicy / StopPolicy: wall time of the one RPC as the client sees it, the session
  persisted and its N results in the reply; the figure to quote is project / floor;
- cold: the first StartPolicy, which also opens every connection (and how many computers
  it reached within the deadline D), beside the floor's first round on fresh channels
  (connections included, no deadline);
- hung: a policy of N computers of which 10% accept TCP and never answer, deadline D;
  wall time / D;
- the server's RSS after the run, less its RSS at start, per computer it reached; the
  time its storage thread spent on each start session's SQLite writes (the server logs
  it per session); the CPU seconds each process used during a floor and a StartPolicy.

Rounds alternate floor and project so that both see the same machine load (the machine
is shared); the table shows medians. BENCH_SIZES=100,1000 runs fewer sizes,
BENCH_ROUNDS sets the rounds, BENCH_DEADLINE the deadline, BENCH_SETTLE=0 sends sessions back to back instead of
waiting for the server to settle between them, BENCH_KEEP=DIR keeps the logs
and databases, BENCH_SERVER_ROOT=DIR runs the server from another checkout (before/after), BENCH_PROFILE=DIR records the server and a fleet with py-spy (installed separately).
"""

import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from backup import serving
from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.commands import agent_policy

SIZES = [int(size) for size in os.environ.get("BENCH_SIZES", "100,1000,5000").split(",")]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
DEADLINE = float(os.environ.get("BENCH_DEADLINE", "2.0"))
AGENTS_PER_FLEET = int(os.environ.get("BENCH_AGENTS_PER_FLEET", "2500"))
HUNG_SHARE = 0.10
HUNG_ROUNDS = 2
# Before each measured session (and floor), wait until the server's CPU stands still, so
# the figures are delivery alone: after a reply the server goes on following the jobs it
# started or stopped (the follow section measures that). BENCH_SETTLE=0 sends back to
# back, each session then competing with the following the previous one set off.
SETTLE = os.environ.get("BENCH_SETTLE", "1") != "0"
QUIET_WAIT_SECONDS = 30.0
QUIET_STEP_SECONDS = 0.25
START_TIMEOUT = 120.0
ROOT = Path(__file__).resolve().parents[2]
STORAGE_LINE = re.compile(r"session (\S+) finished .* storage ([\d.]+) ms in (\d+) writes")
LISTEN_LINE = re.compile(r"backup server listening on (\S+?),? ")
TICKS = os.sysconf("SC_CLK_TCK")


def _identity(data: bytes) -> bytes:
    return data


class Process:
    """A child process whose stderr goes to a file, so a chatty log never blocks it."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    @classmethod
    async def spawn(cls, log: Path, *args: str, cwd: Path = ROOT) -> "Process":
        with log.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                cwd=cwd,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                stdin=asyncio.subprocess.DEVNULL,
                limit=64 << 20,  # the fleet's addresses come as one long line
            )
        return cls(process, log)

    async def wait_for_log(self, pattern: re.Pattern[str]) -> re.Match[str]:
        end = time.monotonic() + START_TIMEOUT
        while time.monotonic() < end and self.process.returncode is None:
            found = pattern.search(self.log.read_text())
            if found:
                return found
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.log.name}: no {pattern.pattern!r}:\n{self.log.read_text()}")

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def start_fleets(
    workdir: Path, count: int, hung: int, *flags: str, name: str = "fleet"
) -> list[tuple[Process, dict]]:
    """Fleet processes of at most AGENTS_PER_FLEET agents each, with their addresses."""
    shares = max(1, -(-count // AGENTS_PER_FLEET))
    fleets = []
    for index in range(shares):
        process = await Process.spawn(
            workdir / f"{name}-{count}-{index}.log",
            *("-m", "agent_stub.fleet", "--base-port", "0", "--job-seconds", "3600"),
            *("--count", str(count // shares + (index < count % shares))),
            *("--hung", str(hung // shares + (index < hung % shares))),
            *flags,
        )
        fleets.append((process, {}))
        assert process.process.stdout is not None
        line = await asyncio.wait_for(process.process.stdout.readline(), START_TIMEOUT)
        if not line:
            raise RuntimeError(f"the fleet did not start:\n{process.log.read_text()}")
        fleets[-1] = (process, json.loads(line))
    return fleets


def agents_of(fleets: Sequence[tuple[Process, dict]]) -> list[str]:
    return [agent["address"] for _, addresses in fleets for agent in addresses["agents"]]


async def start_server(
    workdir: Path, name: str, *flags: str, deadline: float = DEADLINE
) -> Process:
    """`python -m backup_server` on a port of the system's choice, with a fresh database."""
    return await Process.spawn(
        workdir / f"{name}.log",
        *("-m", "backup_server", "--listen", "127.0.0.1:0", "--agent-deadline", str(deadline)),
        *("--db", str(fresh_database(workdir / f"{name}.db"))),
        *flags,
        cwd=Path(os.environ.get("BENCH_SERVER_ROOT", ROOT)),
    )


async def timed_session(
    service: api_grpc.PolicyServiceStub, action: str, policy_id: str
) -> tuple[float, pb.PolicySession]:
    """One StartPolicy or StopPolicy: its wall time as the client sees it, and its session."""
    call = service.StartPolicy if action == "start" else service.StopPolicy
    request_type = api.StartPolicyRequest if action == "start" else api.StopPolicyRequest
    started = time.perf_counter()
    session: pb.PolicySession = await call(request_type(policy_id=policy_id))
    return time.perf_counter() - started, session


async def connect_all(service: api_grpc.PolicyServiceStub, policy_id: str, count: int) -> None:
    """After a cold start: stop and start until all `count` computers answer, then stop."""
    for _ in range(10):
        await timed_session(service, "stop", policy_id)
        if (await timed_session(service, "start", policy_id))[1].statistics.received == count:
            break
    await timed_session(service, "stop", policy_id)


@contextlib.contextmanager
def bench_workdir() -> Iterator[Path]:
    """A temporary directory, or BENCH_KEEP=DIR to keep the logs and databases there."""
    keep = os.environ.get("BENCH_KEEP")
    with contextlib.ExitStack() as cleanup:
        workdir = Path(keep) if keep else Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir


@contextlib.asynccontextmanager
async def profiled(name: str, pid: int) -> AsyncIterator[None]:
    """With BENCH_PROFILE=DIR, py-spy samples the process into DIR/<name>.txt (raw stacks)."""
    directory = os.environ.get("BENCH_PROFILE")
    if not directory:
        yield
        return
    spy = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("py-spy")),
        *("record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--native"),
        *("--output", str(Path(directory, f"{name}.txt"))),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        await spy.wait()


class Floor:
    """The bare client: one warm grpc.aio channel per agent, every request at once."""

    def __init__(self, addresses: Sequence[str]) -> None:
        self._channels = [grpc.aio.insecure_channel(address) for address in addresses]
        self._calls = {
            method: [
                channel.unary_unary(
                    f"/backup.v1.AgentControl/{method}",
                    request_serializer=_identity,
                    response_deserializer=_identity,
                )
                for channel in self._channels
            ]
            for method in ("StartJob", "StopJob")
        }

    async def send(self, method: str, request: bytes) -> float:
        """Sends every request at once; the seconds until the last answer."""
        started = time.perf_counter()
        await asyncio.gather(*(call(request, timeout=60) for call in self._calls[method]))
        return time.perf_counter() - started

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels))


@dataclass
class Bench:
    """One fleet size: the server, its fleets, the floor and the operator's stub."""

    server: Process
    fleets: list[Process]
    floor: Floor
    service: api_grpc.PolicyServiceStub
    agents: list[str]
    hung: list[str]

    def cpu(self) -> dict[str, float]:
        return {
            "client": resource.getrusage(resource.RUSAGE_SELF).ru_utime
            + resource.getrusage(resource.RUSAGE_SELF).ru_stime,
            "server": self.server.cpu_seconds(),
            "fleet": sum(fleet.cpu_seconds() for fleet in self.fleets),
        }

    async def timed_cpu(
        self, step: Callable[[], Awaitable[float]], cpu: dict[str, list[float]]
    ) -> float:
        before = self.cpu()
        wall = await step()
        for name, seconds in self.cpu().items():
            cpu.setdefault(name, []).append(seconds - before[name])
        return wall

    async def session(self, action: str, policy_id: str) -> tuple[float, pb.PolicySession]:
        return await timed_session(self.service, action, policy_id)

    async def quiet(self) -> float:
        return await settled(self.server)


async def settled(*servers: Process) -> float:
    """Waits (up to QUIET_WAIT_SECONDS) until the servers' CPU stands still: what their last
    sessions set off after the reply (the jobs they follow: 5,000 WatchJob streams opened,
    5,000 job ends recorded) is over. Returns the seconds waited."""
    began = time.monotonic()
    last = sum(server.cpu_seconds() for server in servers)
    while time.monotonic() - began < QUIET_WAIT_SECONDS:
        await asyncio.sleep(QUIET_STEP_SECONDS)
        now = sum(server.cpu_seconds() for server in servers)
        if now - last < QUIET_STEP_SECONDS * 0.04 * len(servers):
            break
        last = now
    return time.monotonic() - began


def policy_over(policy_id: str, addresses: Sequence[str]) -> pb.BackupPolicy:
    return pb.BackupPolicy(
        id=policy_id,
        name=policy_id,
        computers=[pb.Computer(name=f"c{i}", address=a) for i, a in enumerate(addresses)],
        source_paths=["/srv/data"],
        repository="/backup/repository",
    )


def fresh_database(path: Path) -> Path:
    """The path, with what an earlier run kept there (BENCH_KEEP) removed."""
    for stale in path.parent.glob(f"{path.name}*"):
        stale.unlink()
    return path


def storage_ms(server: Process, session_ids: Sequence[str]) -> float:
    times = {match[1]: float(match[2]) for match in STORAGE_LINE.finditer(server.log.read_text())}
    found = [times[session_id] for session_id in session_ids if session_id in times]
    return statistics.median(found) if found else float("nan")


async def measure(count: int, workdir: Path) -> dict[str, object]:
    fleets = await start_fleets(workdir, count, round(count * HUNG_SHARE))
    agents = agents_of(fleets)
    hung = [address for _, addresses in fleets for address in addresses["hung"]]
    server = await start_server(workdir, f"server-{count}")
    floor = Floor(agents)
    try:
        address = (await server.wait_for_log(LISTEN_LINE))[1]
        # The floor gets the collector settings the server and the fleet run with.
        serving.tune_garbage_collector()
        async with (
            profiled(f"server-{count}", server.process.pid),
            profiled(f"fleet-{count}", fleets[0][0].process.pid),
            grpc.aio.insecure_channel(
                address, options=[("grpc.max_receive_message_length", 64 << 20)]
            ) as channel,
        ):
            bench = Bench(
                server,
                [process for process, _ in fleets],
                floor,
                api_grpc.PolicyServiceStub(channel),
                agents,
                hung,
            )
            return await rounds(bench)
    finally:
        await floor.close()
        await asyncio.gather(server.stop(), *(process.stop() for process, _ in fleets))


async def rounds(bench: Bench) -> dict[str, object]:
    count, service = len(bench.agents), bench.service
    idle_rss = bench.server.rss_kb()
    policy = policy_over("all", bench.agents)
    await service.CreatePolicy(api.CreatePolicyRequest(policy_id="all", policy=policy))
    mixed = bench.agents[: count - len(bench.hung)] + bench.hung
    await service.CreatePolicy(
        api.CreatePolicyRequest(policy_id="hung", policy=policy_over("hung", mixed))
    )
    start = agent_api.StartJobRequest(session_id="s-floor", policy=agent_policy(policy))
    stop = agent_api.StopJobRequest(session_id="s-floor", policy_id="all")
    start_bytes, stop_bytes = start.SerializeToString(), stop.SerializeToString()

    # The first session also opens every connection; some may outlast the deadline.
    cold, session = await bench.session("start", "all")
    cold_received = session.statistics.received
    await connect_all(service, "all", count)
    floor_cold = await bench.floor.send("StartJob", start_bytes)  # connects its channels
    await bench.floor.send("StopJob", stop_bytes)

    walls: dict[str, list[float]] = {"floor": [], "floor_stop": [], "start": [], "stop": []}
    cpu: dict[str, dict[str, list[float]]] = {"floor": {}, "start": {}}
    start_ids: list[str] = []
    missed = 0  # computers that did not receive a measured command: should stay 0
    missed_by: dict[str, int] = {"start": 0, "stop": 0, "hung": 0}

    async def start_policy() -> float:
        nonlocal missed
        wall, session = await bench.session("start", "all")
        missed += count - session.statistics.received
        missed_by["start"] += count - session.statistics.received
        start_ids.append(session.id)
        return wall

    for _ in range(ROUNDS):
        if SETTLE:
            await bench.quiet()
        walls["floor"].append(
            await bench.timed_cpu(lambda: bench.floor.send("StartJob", start_bytes), cpu["floor"])
        )
        walls["floor_stop"].append(await bench.floor.send("StopJob", stop_bytes))
        walls["start"].append(await bench.timed_cpu(start_policy, cpu["start"]))
        if SETTLE:
            await bench.quiet()
        wall, session = await bench.session("stop", "all")
        walls["stop"].append(wall)
        missed += count - session.statistics.received
        missed_by["stop"] += count - session.statistics.received
    hung_walls = []
    for _ in range(HUNG_ROUNDS):
        if SETTLE:
            await bench.quiet()
        wall, session = await bench.session("start", "hung")
        missed += count - len(bench.hung) - session.statistics.received
        missed_by["hung"] += count - len(bench.hung) - session.statistics.received
        hung_walls.append(wall)
    await asyncio.sleep(0.5)
    rss = bench.server.rss_kb()

    median = {key: statistics.median(values) for key, values in walls.items()}
    return {
        "computers": count,
        "floor_start_s": median["floor"],
        "start_policy_s": median["start"],
        "start_ratio": median["start"] / median["floor"],
        "floor_stop_s": median["floor_stop"],
        "stop_policy_s": median["stop"],
        "stop_ratio": median["stop"] / median["floor_stop"],
        "start_ratio_each_round": [
            start / floor for start, floor in zip(walls["start"], walls["floor"], strict=True)
        ],
        "walls_s": walls,
        "cpu_s_floor": {name: statistics.median(v) for name, v in cpu["floor"].items()},
        "cpu_s_start_policy": {name: statistics.median(v) for name, v in cpu["start"].items()},
        "cold_start_policy_s": cold,
        "cold_received": cold_received,
        "floor_cold_s": floor_cold,
        "hung_computers": len(bench.hung),
        "deadline_s": DEADLINE,
        "hung_wall_s": max(hung_walls),
        "hung_wall_over_deadline": max(hung_walls) / DEADLINE,
        "server_rss_mb": rss / 1024,
        "server_rss_kb_per_computer": (rss - idle_rss) / (count + len(bench.hung)),
        "storage_ms_per_session": storage_ms(bench.server, start_ids),
        "missed": missed,
        "missed_by_session": missed_by,
    }


COLUMNS = [
    # (heading, key, format)
    ("computers", "computers", "{:,}"),
    ("floor s", "floor_start_s", "{:.3f}"),
    ("Start s", "start_policy_s", "{:.3f}"),
    ("ratio", "start_ratio", "{:.2f}"),
    ("floor-stop s", "floor_stop_s", "{:.3f}"),
    ("Stop s", "stop_policy_s", "{:.3f}"),
    ("ratio", "stop_ratio", "{:.2f}"),
    ("hung wall/D", "hung_wall_over_deadline", "{:.3f}"),
    ("RSS MB", "server_rss_mb", "{:.1f}"),
    ("KB/computer", "server_rss_kb_per_computer", "{:.1f}"),
    ("SQLite ms", "storage_ms_per_session", "{:.1f}"),
    ("cold Start s", "cold_start_policy_s", "{:.3f}"),
    ("cold received", "cold_received", "{:,}"),
    ("floor cold s", "floor_cold_s", "{:.3f}"),
    ("missed", "missed", "{:,}"),
]


def print_rows(rows: Sequence[dict[str, object]], columns: Sequence[tuple[str, str, str]]) -> None:
    """One right-aligned line per row; `columns` are (heading, key, format)."""
    cells = [[form.format(row[key]) for _, key, form in columns] for row in rows]
    widths = [
        max(len(heading), 7, *(len(line[index]) for line in cells)) + 2
        for index, (heading, _, _) in enumerate(columns)
    ]
    print(
        "".join(
            heading.rjust(width) for (heading, _, _), width in zip(columns, widths, strict=True)
        )
    )
    for line in cells:
        print("".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))


def print_table(rows: list[dict[str, object]]) -> None:
    print_rows(rows, COLUMNS)
    print("CPU seconds (median) during one floor / one StartPolicy:")
    for row in rows:
        floor, start = row["cpu_s_floor"], row["cpu_s_start_policy"]
        print(
            f"  {row['computers']:>6,}: "
            + ", ".join(f"{name} {floor[name]:.2f} / {start[name]:.2f}" for name in floor)  # type: ignore[index]
        )
    print("missed, by the sessions they were missed in:")
    for row in rows:
        missed_by = row["missed_by_session"]
        print(f"  {row['computers']:>6,}: " + ", ".join(f"{k} {v:,}" for k, v in missed_by.items()))  # type: ignore[attr-defined]


async def run() -> dict[str, object]:
    print(
        f"\n== fan-out: medians of {ROUNDS} rounds; deadline D = {DEADLINE} s; "
        f"{HUNG_SHARE:.0%} hung in the hung run; {os.cpu_count()} CPUs shared by client, "
        "server and fleet; "
        + ("the server settled before each session" if SETTLE else "sessions back to back")
        + f"; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rows = []
    with bench_workdir() as workdir:
        for count in SIZES:
            rows.append(await measure(count, workdir))
    print_table(rows)
    return {
        "rounds": ROUNDS,
        "deadline_s": DEADLINE,
        "agents_per_fleet_process": AGENTS_PER_FLEET,
        "sizes": rows,
    }

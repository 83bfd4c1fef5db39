"""The cost of mutual TLS on the fan-out: the same server and fleet, plaintext beside mTLS.

For each fleet size N, two setups run at once, each a backup server process
(`python -m backup_server`) against its own fleet processes (`python -m agent_stub.fleet`),
both started with fanout.py's helpers:

- plaintext: development mode on loopback, no credential anywhere;
- mTLS: the server with --tls-cert/--tls-key/--tls-ca, so that operators must present the
  operator certificate (this client does; no --api-token-file, hence mutual TLS on both
  hops), and fleets with --tls-*: one agent certificate for 127.0.0.1, each agent
  requiring the server's certificate, behind the real agent's authorizing interceptor.

Per setup:
- cold: the first StartPolicy, which also opens every connection (under mTLS, N TLS
  handshakes, a certificate verified each way) and how many computers it reached;
- warm: StartPolicy over connected channels, median of BENCH_TLS_ROUNDS; rounds alternate
  the setups so that both see the same machine load (the machine is shared);
- the server's CPU seconds during the cold and a warm StartPolicy;
- the server's RSS after the run less its RSS at start, per computer; the fleets' RSS
  beside it (each simulated agent is a grpc server of its own, so the fleets' figure
  includes per-server TLS state that a real agent holds once).

The ratios mTLS / plaintext are the figures to quote. BENCH_TLS_SIZES=1000,5000 sets the
sizes, BENCH_TLS_ROUNDS the rounds, BENCH_TLS_DEADLINE the agent deadline: longer than
fanout's so that the cold start measures the handshakes rather than the deadline.
BENCH_KEEP=DIR keeps the logs, databases and certificates. Then the first session after a
server restart, cold beside warm (tls_restart.py; BENCH_TLS_SIZES= with nothing runs only
that).
"""

import asyncio
import contextlib
import os
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tls_restart
from fanout import (
    AGENTS_PER_FLEET,
    LISTEN_LINE,
    Process,
    agents_of,
    bench_workdir,
    connect_all,
    policy_over,
    print_rows,
    start_fleets,
    start_server,
    timed_session,
)
from tls_restart import Secure, measure_restarts

from backup import defaults, serving
from backup.ctl import pki as certs
from backup.ctl.credentials import OperatorCredentials
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc

SIZES = [int(size) for size in os.environ.get("BENCH_TLS_SIZES", "1000,5000").split(",") if size]
ROUNDS = int(os.environ.get("BENCH_TLS_ROUNDS", "5"))
DEADLINE = float(os.environ.get("BENCH_TLS_DEADLINE", "10.0"))
RESTART_SIZES = [
    int(size)
    for size in os.environ.get("BENCH_TLS_RESTART_SIZES", str(max(SIZES, default=5000))).split(",")
    if size
]


@dataclass(frozen=True)
class Mode:
    """A security mode: the server's and the fleets' flags, the operator's credentials."""

    name: str
    server_flags: tuple[str, ...] = ()
    fleet_flags: tuple[str, ...] = ()
    operator: OperatorCredentials = OperatorCredentials()


def tls_flags(pair: certs.Issued, ca: Path) -> tuple[str, ...]:
    return ("--tls-cert", str(pair.cert), "--tls-key", str(pair.key), "--tls-ca", str(ca))


def modes(workdir: Path) -> list[Mode]:
    """Plaintext, and mutual TLS with a fresh CA made by the certs module."""
    directory = workdir / "pki"
    shutil.rmtree(directory, ignore_errors=True)  # certs never overwrite a kept run's keys
    made = certs.init(directory, "127.0.0.1:50051")
    # A certificate names a host, not a port: this one serves every agent of the fleets.
    agent = certs.issue_agent(directory, "fleet", "127.0.0.1:50061")
    operator = OperatorCredentials(made.ca.cert, made.operator.cert, made.operator.key)
    return [
        Mode("plaintext"),
        Mode(
            "mTLS",
            tls_flags(made.server, made.ca.cert),
            tls_flags(agent, made.ca.cert),
            operator,
        ),
    ]


@dataclass
class Setup:
    """One server, its fleets and the operator's stub, in one mode."""

    mode: str
    server: Process
    fleets: list[Process]
    service: api_grpc.PolicyServiceStub
    agents: list[str]

    async def timed_start(self) -> tuple[float, float, int]:
        """One StartPolicy: wall seconds, the server's CPU seconds, computers reached."""
        cpu = self.server.cpu_seconds()
        wall, session = await timed_session(self.service, "start", "all")
        return wall, self.server.cpu_seconds() - cpu, session.statistics.received

    def fleet_rss_kb(self) -> int:
        return sum(fleet.rss_kb() for fleet in self.fleets)


async def open_setup(
    stack: contextlib.AsyncExitStack, mode: Mode, count: int, workdir: Path
) -> Setup:
    """Starts the fleets and the server of one mode; `stack` stops them."""
    fleets = await start_fleets(workdir, count, 0, *mode.fleet_flags, name=f"fleet-{mode.name}")
    for process, _ in fleets:
        stack.push_async_callback(process.stop)
    server = await start_server(
        workdir, f"server-{mode.name}-{count}", *mode.server_flags, deadline=DEADLINE
    )
    stack.push_async_callback(server.stop)
    address = (await server.wait_for_log(LISTEN_LINE))[1]
    channel = await stack.enter_async_context(mode.operator.channel(address))
    return Setup(
        mode.name,
        server,
        [process for process, _ in fleets],
        api_grpc.PolicyServiceStub(channel),
        agents_of(fleets),
    )


async def measure(count: int, workdir: Path, all_modes: Sequence[Mode]) -> list[dict[str, object]]:
    async with contextlib.AsyncExitStack() as stack:
        setups = [await open_setup(stack, mode, count, workdir) for mode in all_modes]
        idle_rss = [setup.server.rss_kb() for setup in setups]
        for setup in setups:
            policy = policy_over("all", setup.agents)
            await setup.service.CreatePolicy(
                api.CreatePolicyRequest(policy_id="all", policy=policy)
            )
        # One after the other, the other setup idle: each opens all its connections.
        cold = []
        for setup in setups:
            cold.append(await setup.timed_start())
            await connect_all(setup.service, "all", count)
        warm: list[list[tuple[float, float, int]]] = [[] for _ in setups]
        for _ in range(ROUNDS):
            for setup, starts in zip(setups, warm, strict=True):
                starts.append(await setup.timed_start())
                await timed_session(setup.service, "stop", "all")
        await asyncio.sleep(0.5)
        rows = []
        for setup, idle, first, starts in zip(setups, idle_rss, cold, warm, strict=True):
            rss = setup.server.rss_kb()
            rows.append(
                {
                    "computers": count,
                    "mode": setup.mode,
                    "cold_start_policy_s": first[0],
                    "cold_server_cpu_s": first[1],
                    "cold_received": first[2],
                    "start_policy_s": statistics.median(wall for wall, _, _ in starts),
                    "server_cpu_s": statistics.median(cpu for _, cpu, _ in starts),
                    "walls_s": [wall for wall, _, _ in starts],
                    "missed": sum(count - received for _, _, received in starts),
                    "server_rss_mb": rss / 1024,
                    "server_rss_kb_per_computer": (rss - idle) / count,
                    "fleet_rss_mb": setup.fleet_rss_kb() / 1024,
                }
            )
        return rows


RATIOS = [
    # (label, key)
    ("cold Start", "cold_start_policy_s"),
    ("cold server CPU", "cold_server_cpu_s"),
    ("warm Start", "start_policy_s"),
    ("warm server CPU", "server_cpu_s"),
    ("server KB/computer", "server_rss_kb_per_computer"),
]


def ratios(plain: dict[str, object], secure: dict[str, object]) -> dict[str, float]:
    """mTLS / plaintext for each figure, and the memory mTLS adds per computer."""
    found = {key: float(secure[key]) / float(plain[key]) for _, key in RATIOS}  # type: ignore[arg-type]
    count = float(plain["computers"])  # type: ignore[arg-type]
    for key in ("server_rss_mb", "fleet_rss_mb"):
        added = float(secure[key]) - float(plain[key])  # type: ignore[arg-type]
        found[f"{key.removesuffix('_mb')}_kb_added_per_computer"] = added * 1024 / count
    return found


COLUMNS = [
    # (heading, key, format)
    ("computers", "computers", "{:,}"),
    ("mode", "mode", "{}"),
    ("cold Start s", "cold_start_policy_s", "{:.3f}"),
    ("cold received", "cold_received", "{:,}"),
    ("cold CPU s", "cold_server_cpu_s", "{:.2f}"),
    ("Start s", "start_policy_s", "{:.3f}"),
    ("CPU s", "server_cpu_s", "{:.2f}"),
    ("RSS MB", "server_rss_mb", "{:.1f}"),
    ("KB/computer", "server_rss_kb_per_computer", "{:.1f}"),
    ("fleet RSS MB", "fleet_rss_mb", "{:.1f}"),
    ("missed", "missed", "{:,}"),
]


async def run() -> dict[str, object]:
    print(
        f"\n== mTLS cost on the fan-out: plaintext beside mutual TLS; warm figures are medians "
        f"of {ROUNDS} rounds; deadline D = {DEADLINE} s; CPU s and RSS are the server's; "
        f"{os.cpu_count()} CPUs shared by client, servers and fleets",
        flush=True,
    )
    serving.tune_garbage_collector()  # as in the fanout section, whether or not it ran first
    rows: list[dict[str, object]] = []
    compared: dict[str, dict[str, float]] = {}
    with bench_workdir() as workdir:
        all_modes = modes(workdir)
        for count in SIZES:
            plain, secure = await measure(count, workdir, all_modes)
            rows += [plain, secure]
            compared[str(count)] = ratios(plain, secure)
        print_rows(rows, COLUMNS)
        mtls = all_modes[1]
        restarts = [
            row
            for count in RESTART_SIZES
            for row in await measure_restarts(
                count, workdir, Secure(mtls.server_flags, mtls.fleet_flags, mtls.operator)
            )
        ]
    print("mTLS / plaintext, server figures:")
    for count, found in compared.items():
        print(
            f"  {int(count):>6,}: "
            + ", ".join(f"{label} {found[key]:.2f}x" for label, key in RATIOS)
            + f"; mTLS adds {found['server_rss_kb_added_per_computer']:.1f} KB of server "
            f"memory per computer, {found['fleet_rss_kb_added_per_computer']:.1f} KB of fleet "
            "memory per simulated agent"
        )
    print(
        f"first session after a restart, mTLS, deadline {tls_restart.DEADLINE} s"
        f"{' (the default)' if tls_restart.DEADLINE == defaults.AGENT_DEADLINE_SECONDS else ''}: "
        "cold = sent as soon as the server listens, "
        "warm = sent after its warm-up"
    )
    print_rows(restarts, tls_restart.COLUMNS)
    return {
        "first_session_after_restart": restarts,
        "rounds": ROUNDS,
        "deadline_s": DEADLINE,
        "agents_per_fleet_process": AGENTS_PER_FLEET,
        "operator_credential": "operator certificate (mutual TLS, no API token)",
        "sizes": rows,
        "mtls_over_plaintext": compared,
    }

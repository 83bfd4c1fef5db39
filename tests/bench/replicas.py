"""Replicas: the same session on one SQLite server, one PostgreSQL replica and two replicas.

One fleet (`python -m agent_stub.fleet`) of BENCH_REPLICAS_SIZE computers (default 5,000)
and one PostgreSQL (started here as the tests start theirs: tests/postgres_support.py)
serve three set-ups in turn, each a `python -m backup_server` process (or two) as in
production:

- sqlite: one server over a SQLite file;
- postgres: one replica over PostgreSQL;
- two replicas: two over one PostgreSQL database, StartPolicy sent to them in turn.

The fleet also has 10% hung computers (accept TCP, never answer), used only by the
kill -9 run, so that its session is still running when the kill lands.

For each: the median StartPolicy wall (a stop between rounds), and the CPU seconds each
server process used during one StartPolicy. Then kill -9 of the replica running a session
of two replicas, mid fan-out: the seconds from the kill to the session finished by the
other (its lease is BENCH_REPLICAS_LEASE, default 2 s). BENCH_ROUNDS sets the rounds.

A session is run by the replica that received it (computers are not yet shared between
replicas), so two replicas are measured for what they cost one session each, not for
sharing one session's sending.
"""

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import grpc
from fanout import (
    LISTEN_LINE,
    Process,
    agents_of,
    bench_workdir,
    policy_over,
    start_fleets,
    start_server,
    timed_session,
)

from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from postgres_support import PostgresServer, start_postgres  # noqa: E402

SIZE = int(os.environ.get("BENCH_REPLICAS_SIZE", "5000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
LEASE = float(os.environ.get("BENCH_REPLICAS_LEASE", "2"))
DEADLINE = 5.0
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]


async def servers(workdir: Path, name: str, db: str, count: int) -> list[tuple[Process, str]]:
    """`count` server processes over `db`, with their addresses."""
    started = []
    for index in range(count):
        process = await start_server(
            workdir, f"{name}-{index}", "--db", db, "--replica-lease", str(LEASE),
            deadline=DEADLINE,
        )  # fmt: skip
        started.append((process, (await process.wait_for_log(LISTEN_LINE))[1]))
    return started


async def measure(name: str, started: list[tuple[Process, str]], agents: list[str]) -> dict:
    """The median StartPolicy wall over the set-up's replicas in turn, and their CPU."""
    channels = [grpc.aio.insecure_channel(a, options=CHANNEL_OPTIONS) for _, a in started]
    services = [api_grpc.PolicyServiceStub(channel) for channel in channels]
    try:
        policy = policy_over("all", agents)
        await services[0].CreatePolicy(api.CreatePolicyRequest(policy_id="all", policy=policy))
        for service in services:  # warm every replica's channels
            await timed_session(service, "start", "all")
            await timed_session(service, "stop", "all")
        walls, cpus, missed = [], [], 0
        for index in range(ROUNDS):
            service = services[index % len(services)]
            before = [process.cpu_seconds() for process, _ in started]
            wall, session = await timed_session(service, "start", "all")
            cpus.append([p.cpu_seconds() - b for (p, _), b in zip(started, before, strict=True)])
            walls.append(wall)
            missed += len(agents) - session.statistics.received
            await timed_session(service, "stop", "all")
        cpu_each = [statistics.median(column) for column in zip(*cpus, strict=True)]
        return {
            "setup": name,
            "start_policy_s": statistics.median(walls),
            "cpu_s_per_replica": cpu_each,
            "missed": missed,
        }
    finally:
        for channel in channels:
            await channel.close()


async def failover(started: list[tuple[Process, str]], computers: list[str]) -> dict:
    """kill -9 of the replica running a session mid fan-out (its hung computers keep it
    running for the deadline): seconds until another replica has finished it."""
    (doomed, doomed_address), (_, survivor_address) = started
    async with (
        grpc.aio.insecure_channel(doomed_address, options=CHANNEL_OPTIONS) as one,
        grpc.aio.insecure_channel(survivor_address, options=CHANNEL_OPTIONS) as two,
    ):
        on_doomed, on_survivor = api_grpc.PolicyServiceStub(one), api_grpc.PolicyServiceStub(two)
        policy = policy_over("mixed", computers)
        await on_doomed.CreatePolicy(api.CreatePolicyRequest(policy_id="mixed", policy=policy))
        request = api.StartPolicyRequest(policy_id="mixed", session_id="killed")
        caller = asyncio.ensure_future(on_doomed.StartPolicy(request))
        while True:
            try:
                found = await on_survivor.GetSession(api.GetSessionRequest(session_id="killed"))
                if found.statistics.received > 0 or found.state != pb.SESSION_STATE_RUNNING:
                    break  # under way (or, on a machine too loaded, already over)
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.02)
        doomed.process.kill()
        killed = time.perf_counter()
        received_at_kill = found.statistics.received
        try:
            await caller
        except grpc.aio.AioRpcError:
            pass
        ended = await on_survivor.StartPolicy(request, timeout=120)  # the client's retry
        return {
            "lease_s": LEASE,
            "received_before_kill": received_at_kill,
            "running_at_kill": found.state == pb.SESSION_STATE_RUNNING,
            "kill_to_finished_s": time.perf_counter() - killed,
            "state": pb.SessionState.Name(ended.state),
            "received": ended.statistics.received,
            "pending": ended.statistics.pending,
        }


async def run() -> dict[str, object]:
    print(
        f"\n== replicas: {SIZE:,} computers, median of {ROUNDS} StartPolicy; "
        f"{os.cpu_count()} CPUs shared by client, servers, fleet and PostgreSQL",
        flush=True,
    )
    rows: list[dict] = []
    postgres: PostgresServer = await asyncio.to_thread(start_postgres)
    with bench_workdir() as workdir:
        fleets = await start_fleets(workdir, SIZE, SIZE // 10, name="replicas-fleet")
        agents = agents_of(fleets)
        hung = [address for _, addresses in fleets for address in addresses["hung"]]
        kill: dict = {}
        try:
            for name, count in (("sqlite", 1), ("postgres", 1), ("two replicas", 2)):
                if name == "sqlite":
                    db = str(workdir / "replicas-sqlite.db")
                else:
                    db = postgres.url(await asyncio.to_thread(postgres.create_database))
                started = await servers(workdir, name.replace(" ", "-"), db, count)
                try:
                    rows.append(await measure(name, started, agents))
                    if count == 2:
                        kill = await failover(started, agents[: SIZE - len(hung)] + hung)
                finally:
                    await asyncio.gather(*(process.stop() for process, _ in started))
        finally:
            await asyncio.gather(*(process.stop() for process, _ in fleets))
            await asyncio.to_thread(postgres.stop, "immediate")
    base = rows[0]["start_policy_s"]
    print(f"  {'setup':<14} {'Start s':>8} {'vs sqlite':>10}  CPU s per replica   missed")
    for row in rows:
        cpu = " / ".join(f"{value:.2f}" for value in row["cpu_s_per_replica"])
        print(
            f"  {row['setup']:<14} {row['start_policy_s']:>8.3f} "
            f"{row['start_policy_s'] / base:>10.2f}  {cpu:<18} {row['missed']:>6,}"
        )
    print(
        f"  kill -9 mid fan-out of {SIZE:,} computers, 10% hung"
        f" ({kill.get('received_before_kill', 0):,} received before it,"
        f" running then: {kill.get('running_at_kill')}),"
        f" lease {LEASE:g} s: finished by the other replica in"
        f" {kill.get('kill_to_finished_s', float('nan')):.2f} s,"
        f" {kill.get('state')} with {kill.get('received', 0):,} received,"
        f" {kill.get('pending', 0):,} pending"
    )
    return {"computers": SIZE, "rounds": ROUNDS, "setups": rows, "kill": kill}

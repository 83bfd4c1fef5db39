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
server process used during one StartPolicy; with two replicas each session's computers
are shared between them (by rendezvous hash of the address), each sending its own share.
Then a third replica joins and sessions received by the first are watched on it: the lag
of the computers in the second's share (tests/watch_lag.py), after which it stops cleanly.
Then two kills -9 mid fan-out, each while both replicas are sending their shares: of the
replica sending the second share (the receiving one claims it and answers: the seconds
from the kill to its reply) and of the receiving replica (the other claims the session;
the seconds from the kill to the client's retry there returning it finished). The lease
is BENCH_REPLICAS_LEASE (default 5 s: at a load average of 15 a 2 s lease lapsed under
a replica busy sending 5,000 commands, and the other took its sessions over);
BENCH_ROUNDS sets the rounds.
"""

import asyncio
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import grpc
import psycopg
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
from watch_lag import end_lag, replica_ids, row_lags, share_of, spread, watched  # noqa: E402

SIZE = int(os.environ.get("BENCH_REPLICAS_SIZE", "5000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
LEASE = float(os.environ.get("BENCH_REPLICAS_LEASE", "5"))
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
            "start_policy_walls_s": walls,
            "cpu_s_per_replica": cpu_each,
            "missed": missed,
        }
    finally:
        for channel in channels:
            await channel.close()


async def watch_lag(started: list[tuple[Process, str]], url: str) -> dict:
    """Three replicas: sessions received by the first, watched on the third; the lag of the
    computers in the second's share (job start on the agent to the snapshot on the third
    showing it) and of the delivery's end (the last job's start to the ended snapshot)."""
    (_, a_address), (_, b_address), (_, c_address) = started
    b_id = (await replica_ids(url))[b_address]
    lags: list[float] = []
    ends: list[float] = []
    async with (
        grpc.aio.insecure_channel(a_address, options=CHANNEL_OPTIONS) as to_a,
        grpc.aio.insecure_channel(c_address, options=CHANNEL_OPTIONS) as to_c,
    ):
        on_a, on_c = api_grpc.PolicyServiceStub(to_a), api_grpc.PolicyServiceStub(to_c)
        await timed_session(on_a, "start", "all")  # the third's channels to its share warm
        await timed_session(on_a, "stop", "all")
        for index in range(ROUNDS):
            request = api.StartPolicyRequest(policy_id="all", session_id=f"watched-{index}")
            caller = asyncio.ensure_future(on_a.StartPolicy(request))
            while True:
                try:
                    await on_c.GetSession(api.GetSessionRequest(session_id=request.session_id))
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.02)
            seen = await watched(on_c, request.session_id)
            await caller
            lags += row_lags(seen, await share_of(url, request.session_id, b_id))
            ends.append(end_lag(seen))
            await timed_session(on_a, "stop", "all")
    return {"row_lags_s": lags, "end_lags_s": ends}


async def share_rows(url: str, session_id: str) -> dict[str, tuple[int, int]]:
    """(rows, pending rows) of the session by share ("" = the owner's), read in the database."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(
            "select r.share, count(*), count(*) filter (where r.delivery = %s)"
            " from computer_results r join sessions s on s.seq = r.session_seq"
            " where s.id = %s group by r.share",
            [pb.DELIVERY_PENDING, session_id],
        )
        return {str(share): (int(n), int(p)) for share, n, p in await cursor.fetchall()}


async def failover(
    started: list[tuple[Process, str]], computers: list[str], url: str, kill_receiver: bool
) -> dict:
    """kill -9 of one of two replicas mid fan-out (its hung computers keep its share
    pending for the deadline): the receiving one (the other claims the session and a retry
    there returns it) or the one sending the other share (the receiving one claims the
    share and answers); seconds from the kill to the session finished."""
    (first, first_address), (second, second_address) = started
    doomed, receiver_address, survivor_address = (
        (first, first_address, second_address)
        if kill_receiver
        else (second, first_address, first_address)
    )
    session_id = f"killed-{'receiver' if kill_receiver else 'sharer'}"
    async with (
        grpc.aio.insecure_channel(receiver_address, options=CHANNEL_OPTIONS) as one,
        grpc.aio.insecure_channel(survivor_address, options=CHANNEL_OPTIONS) as two,
    ):
        on_receiver, on_survivor = api_grpc.PolicyServiceStub(one), api_grpc.PolicyServiceStub(two)
        policy = policy_over(session_id, computers)
        await on_receiver.CreatePolicy(api.CreatePolicyRequest(policy_id=session_id, policy=policy))
        request = api.StartPolicyRequest(policy_id=session_id, session_id=session_id)
        caller = asyncio.ensure_future(on_receiver.StartPolicy(request))
        while True:
            shares = await share_rows(url, session_id)
            if len(shares) > 1:
                break  # stored and shared: both replicas are sending
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        at_kill = await share_rows(url, session_id)
        doomed.process.kill()
        killed = time.perf_counter()
        if kill_receiver:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await caller
            ended = await on_survivor.StartPolicy(request, timeout=120)  # the client's retry
        else:
            ended = await asyncio.wait_for(caller, 120)
        took = time.perf_counter() - killed
        owner_rows = at_kill.pop("", (0, 0))
        doomed_rows = owner_rows if kill_receiver else next(iter(at_kill.values()), (0, 0))
        return {
            "killed": "receiving replica" if kill_receiver else "sharing replica",
            "lease_s": LEASE,
            "share_computers": doomed_rows[0],
            "share_pending_at_kill": doomed_rows[1],
            "kill_to_finished_s": took,
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
        kills: list[dict] = []
        lag: dict = {}
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
                        third = await servers(workdir, "watcher", db, 1)
                        try:
                            lag = await watch_lag(started + third, db)
                        finally:
                            await third[0][0].stop()  # a clean stop: its lease ends
                        mixed = agents[: SIZE - len(hung)] + hung
                        kills = [
                            await failover(started, mixed, db, kill_receiver=False),
                        ]
                        # The sharing replica is dead now; the receiving one is killed
                        # with a new one beside it.
                        started += await servers(workdir, "third", db, 1)
                        kills.append(
                            await failover(
                                [started[0], started[2]], mixed, db, kill_receiver=True
                            )
                        )
                finally:
                    await asyncio.gather(*(process.stop() for process, _ in started))
        finally:
            await asyncio.gather(*(process.stop() for process, _ in fleets))
            await asyncio.to_thread(postgres.stop, "immediate")
    base = rows[0]["start_policy_s"]
    print(
        f"  {'setup':<14} {'Start s':>8} {'vs sqlite':>10}  {'rounds min-max s':<17}"
        f"  CPU s per replica   missed"
    )
    for row in rows:
        cpu = " / ".join(f"{value:.2f}" for value in row["cpu_s_per_replica"])
        walls = row["start_policy_walls_s"]
        print(
            f"  {row['setup']:<14} {row['start_policy_s']:>8.3f} "
            f"{row['start_policy_s'] / base:>10.2f}  {min(walls):.3f}-{max(walls):<11.3f}"
            f"  {cpu:<18} {row['missed']:>6,}"
        )
    if lag:
        print(
            f"  WatchSession on a third replica, {ROUNDS} sessions received by the first:"
            f"\n    a computer of the second's share: {spread(lag['row_lags_s'])}"
            f"\n    the delivery's end: {spread(lag['end_lags_s'])}"
        )
    for kill in kills:
        print(
            f"  kill -9 of the {kill['killed']} mid fan-out of {SIZE:,} computers, 10% hung"
            f" (its share {kill['share_computers']:,}, {kill['share_pending_at_kill']:,}"
            f" pending then), lease {LEASE:g} s: finished by the other replica in"
            f" {kill['kill_to_finished_s']:.2f} s, {kill['state']} with"
            f" {kill['received']:,} received, {kill['pending']:,} pending"
        )
    return {"computers": SIZE, "rounds": ROUNDS, "setups": rows, "watch_lag": lag, "kills": kills}

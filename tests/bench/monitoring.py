"""The cost of metrics on the fan-out, and how long a scrape of a large server takes.

Fan-out: one fleet of N simulated agents (`python -m agent_stub.fleet`) and two backup
server processes in front of it, one plain and one with `--metrics-listen` (gRPC call
counters, session families, the endpoint). Each round sends the floor (fanout.py's bare
client, the same StartJob bytes to the same fleet), then StartPolicy through each server,
so the three see the same machine load; the table shows medians of the ratios
StartPolicy / floor with and without metrics, and their quotient (the overhead: the issue
allows 5 %). Scrape: a server with metrics that has run sessions over S computers (a
closed port for every tenth, so every delivery family has samples) and followed their jobs
to success (a last-success series per computer) is scraped
BENCH_METRICS_SCRAPES times over HTTP; the median and the largest scrape time, with the
size of the answer and its series count. Then that server is restarted on its database:
how long until it serves, and until its last-success series are reloaded from storage
(in the background: serving does not wait for it), with the series found in a scrape then.

BENCH_METRICS_SIZE=N (default 5000) sets the fan-out fleet, BENCH_METRICS_ROUNDS the
rounds, BENCH_METRICS_SCRAPE_SIZE=S (default 10000) the scraped server's computers (0: the
fan-out part only).
"""

import asyncio
import os
import re
import socket
import statistics
import time
import urllib.request
from pathlib import Path

import grpc
from fanout import (
    DEADLINE,
    LISTEN_LINE,
    Floor,
    Process,
    agents_of,
    bench_workdir,
    connect_all,
    policy_over,
    settled,
    start_fleets,
    start_server,
    timed_session,
)

from backup import serving
from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.commands import agent_policy

SIZE = int(os.environ.get("BENCH_METRICS_SIZE", "5000"))
ROUNDS = int(os.environ.get("BENCH_METRICS_ROUNDS", "7"))
SCRAPE_SIZE = int(os.environ.get("BENCH_METRICS_SCRAPE_SIZE", "10000"))
SCRAPES = int(os.environ.get("BENCH_METRICS_SCRAPES", "20"))
SCRAPE_SESSIONS = 3
METRICS_LINE = re.compile(r"metrics at (http://\S+)")
RELOADED_LINE = re.compile(r"gauges reloaded from storage: (\d+) policies, (\d+) computers")
LAST_SUCCESS = b"backup_computer_last_success_timestamp_seconds{"
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]


def timed_scrape(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as reply:
        body: bytes = reply.read()
    return time.perf_counter() - started, body


async def final_outcome(service: api_grpc.PolicyServiceStub, session_id: str) -> None:
    """Waits until every job the session started has been followed to its end."""
    while True:
        session = await service.GetSession(api.GetSessionRequest(session_id=session_id))
        if session.outcome not in (pb.SESSION_STATE_UNSPECIFIED, pb.SESSION_STATE_RUNNING):
            return
        await asyncio.sleep(0.5)


async def fanout_overhead(workdir: Path) -> dict[str, object]:
    fleets = await start_fleets(workdir, SIZE, 0, name="metrics-fleet")
    agents = agents_of(fleets)
    plain = await start_server(workdir, "server-plain")
    measured = await start_server(workdir, "server-metrics", "--metrics-listen", "127.0.0.1:0")
    floor = Floor(agents)
    policy = policy_over("all", agents)
    start_bytes = agent_api.StartJobRequest(
        session_id="s-floor", policy=agent_policy(policy)
    ).SerializeToString()
    try:
        addresses = [(await server.wait_for_log(LISTEN_LINE))[1] for server in (plain, measured)]
        serving.tune_garbage_collector()  # as the server and the fleet run
        channels = [grpc.aio.insecure_channel(a, options=CHANNEL_OPTIONS) for a in addresses]
        services = [api_grpc.PolicyServiceStub(channel) for channel in channels]
        for service in services:
            await service.CreatePolicy(api.CreatePolicyRequest(policy_id="all", policy=policy))
            await timed_session(service, "start", "all")  # opens the connections
            await connect_all(service, "all", SIZE)
        await floor.send("StartJob", start_bytes)
        walls: dict[str, list[float]] = {"floor": [], "plain": [], "metrics": []}
        missed = 0
        named = list(zip(("plain", "metrics"), services, strict=True))
        for index in range(ROUNDS):
            await settled(plain, measured)
            walls["floor"].append(await floor.send("StartJob", start_bytes))
            # Alternate which server goes first, and let both settle before each (the
            # jobs a session starts are followed after its reply, on that server's loop).
            for name, service in named if index % 2 == 0 else named[::-1]:
                await settled(plain, measured)
                wall, session = await timed_session(service, "start", "all")
                walls[name].append(wall)
                missed += SIZE - session.statistics.received
                await timed_session(service, "stop", "all")
        for channel in channels:
            await channel.close()
    finally:
        await floor.close()
        await asyncio.gather(
            plain.stop(), measured.stop(), *(process.stop() for process, _ in fleets)
        )
    ratio = {
        name: statistics.median(
            wall / floor for wall, floor in zip(walls[name], walls["floor"], strict=True)
        )
        for name in ("plain", "metrics")
    }
    return {
        "computers": SIZE,
        "rounds": ROUNDS,
        "floor_s": statistics.median(walls["floor"]),
        "start_policy_s_plain": statistics.median(walls["plain"]),
        "start_policy_s_metrics": statistics.median(walls["metrics"]),
        "ratio_plain": ratio["plain"],
        "ratio_metrics": ratio["metrics"],
        "metrics_over_plain": ratio["metrics"] / ratio["plain"],
        "walls_s": walls,
        "missed": missed,
    }


async def scrape_time(workdir: Path) -> dict[str, object]:
    live = SCRAPE_SIZE - SCRAPE_SIZE // 10
    # Jobs that succeed within a second, so that the server follows them to their end and
    # holds a last-success series per computer, as a fleet backed up every night does.
    fleets = await start_fleets(workdir, live, 0, "--job-seconds", "1", name="scrape-fleet")
    closed = []
    for _ in range(SCRAPE_SIZE // 10):  # bound, never listening: refused at once
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        closed.append(probe)
    computers = agents_of(fleets) + [f"127.0.0.1:{p.getsockname()[1]}" for p in closed]
    server = await start_server(
        workdir, "server-scraped", "--metrics-listen", "127.0.0.1:0", deadline=DEADLINE
    )
    try:
        address = (await server.wait_for_log(LISTEN_LINE))[1]
        url = (await server.wait_for_log(METRICS_LINE))[1]
        async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            service = api_grpc.PolicyServiceStub(channel)
            policy = policy_over("all", computers)
            await service.CreatePolicy(api.CreatePolicyRequest(policy_id="all", policy=policy))
            for _ in range(SCRAPE_SESSIONS):
                _, session = await timed_session(service, "start", "all")
                await final_outcome(service, session.id)
        times, body = [], b""
        for _ in range(SCRAPES):
            took, body = await asyncio.to_thread(timed_scrape, url)
            times.append(took)
        await server.stop()
        restart = await restarted(workdir)
    finally:
        for probe in closed:
            probe.close()
        await asyncio.gather(server.stop(), *(process.stop() for process, _ in fleets))
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return {
        "computers": SCRAPE_SIZE,
        "scrape_s_median": statistics.median(times),
        "scrape_s_max": max(times),
        "scrape_bytes": len(body),
        "series": series,
        "last_success_series": body.count(LAST_SUCCESS),
        **restart,
    }


async def restarted(workdir: Path) -> dict[str, object]:
    """The scraped server started again on its database: when it serves, when its gauges
    are reloaded, and how many last-success series a scrape then has."""
    began = time.perf_counter()
    server = await Process.spawn(
        workdir / "server-scraped-restarted.log",
        *("-m", "backup_server", "--listen", "127.0.0.1:0", "--agent-deadline", str(DEADLINE)),
        *("--db", str(workdir / "server-scraped.db"), "--metrics-listen", "127.0.0.1:0"),
    )
    try:
        await server.wait_for_log(LISTEN_LINE)
        serving_s = time.perf_counter() - began
        url = (await server.wait_for_log(METRICS_LINE))[1]
        reloaded = await server.wait_for_log(RELOADED_LINE)
        reloaded_s = time.perf_counter() - began
        _, body = await asyncio.to_thread(timed_scrape, url)
    finally:
        await server.stop()
    return {
        "restart_serving_s": serving_s,
        "restart_gauges_reloaded_s": reloaded_s,
        "restart_computers_reloaded": int(reloaded[2]),
        "restart_last_success_series": body.count(LAST_SUCCESS),
    }


async def run() -> dict[str, object]:
    load = os.getloadavg()[0]  # the machine is shared: what it carried as this began
    print(
        f"\n== metrics: fan-out of {SIZE:,} computers with and without --metrics-listen, "
        f"medians of {ROUNDS} rounds; scrape of a server over {SCRAPE_SIZE:,} computers; "
        f"load average {load:.2f}",
        flush=True,
    )
    with bench_workdir() as workdir:
        overhead = await fanout_overhead(workdir)
        print(
            f"  StartPolicy / floor: {overhead['ratio_plain']:.3f} without metrics, "
            f"{overhead['ratio_metrics']:.3f} with; with / without = "
            f"{overhead['metrics_over_plain']:.3f} (floor {overhead['floor_s']:.3f} s; "
            f"missed {overhead['missed']})",
            flush=True,
        )
        if not SCRAPE_SIZE:
            return {"load_average_at_start": load, "fanout": overhead}
        scrape = await scrape_time(workdir)
        print(
            f"  scrape of {scrape['computers']:,} computers: median "
            f"{scrape['scrape_s_median'] * 1000:.1f} ms, max {scrape['scrape_s_max'] * 1000:.1f} ms,"
            f" {scrape['series']:,} series, {scrape['scrape_bytes']:,} bytes",
            flush=True,
        )
        print(
            f"  restarted on its database: serving after {scrape['restart_serving_s']:.2f} s, "
            f"gauges reloaded after {scrape['restart_gauges_reloaded_s']:.2f} s "
            f"({scrape['restart_last_success_series']:,} last-success series; "
            f"{scrape['last_success_series']:,} before the restart)",
            flush=True,
        )
    return {"load_average_at_start": load, "fanout": overhead, "scrape": scrape}

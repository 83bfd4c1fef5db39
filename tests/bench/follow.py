"""Following jobs at scale: N simulated computers whose jobs run S seconds and end together.

One backup server process (`python -m backup_server`) against fleet processes
(`python -m agent_stub.fleet --job-seconds S`), with fanout.py's helpers:

- delivery ratio: StartPolicy against the floor (the bare client sending every StartJob
  at once over warm channels), median of BENCH_FOLLOW_ROUNDS rounds; each round's jobs
  are stopped (and followed to STOPPED) before the next;
- then one measured start: every job runs S seconds, so all end within the fan-out's
  spread. The one-time cost of opening the streams (seconds and server CPU seconds until
  a second passes nearly idle); then, while the jobs run and nothing changes, the
  server's CPU until MARGIN_S before their end (% of one core) and its RSS against its RSS before the start, per followed job
  (after the ratio rounds: memory the allocator kept from earlier rounds is reused, so
  this is the extra a followed job costs a warm server), and against its RSS when idle
  (before any session: channels and connections included), per computer;
- once the outcome is final: per computer, when the server recorded the job's end (the
  result's last_contact_time) less the job's end_time on the agent, p50/p99/max; and the
  session's outcome_time less the last job's end. Stored batches follow the in-memory
  record within the progress interval (0.25 s).

Two server processes share the fleet, one plain and one with `--metrics-listen` (the
gRPC call counters, the session and job families, the endpoint), each with its own policy
over the same computers: the ratio rounds alternate which goes first, then each makes its
measured start in turn (the plain one first), so the table shows both side by side and
the quotients the issue bounds (metrics may cost at most 5 %).

BENCH_FOLLOW_COMPUTERS (default 5000), BENCH_FOLLOW_JOB_SECONDS (default 45),
BENCH_FOLLOW_ROUNDS (default 3), BENCH_KEEP=DIR keeps the logs and the databases.
"""

import asyncio
import os
import statistics
import time

import grpc
from fanout import (
    LISTEN_LINE,
    Bench,
    Floor,
    agents_of,
    bench_workdir,
    connect_all,
    policy_over,
    print_rows,
    start_fleets,
    start_server,
)

from backup import serving
from backup.ids import new_session_id
from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb
from backup_server.commands import agent_policy

COMPUTERS = int(os.environ.get("BENCH_FOLLOW_COMPUTERS", "5000"))
JOB_SECONDS = float(os.environ.get("BENCH_FOLLOW_JOB_SECONDS", "45"))
ROUNDS = int(os.environ.get("BENCH_FOLLOW_ROUNDS", "3"))
DEADLINE = 5.0
# The quiet window measured for CPU: the middle of the run, away from the start's
# fan-out and the jobs' end.
MARGIN_S = 5.0
QUIET_CPU_S = 0.05


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def outcome_of(service: api_grpc.PolicyServiceStub, session_id: str) -> pb.PolicySession:
    while True:
        session = await service.GetSession(api.GetSessionRequest(session_id=session_id))
        if session.outcome not in (pb.SESSION_STATE_RUNNING, pb.SESSION_STATE_UNSPECIFIED):
            return session
        await asyncio.sleep(0.5)


async def delivery_ratio(
    floor: Floor, benches: dict[str, Bench], policies: dict[str, pb.BackupPolicy]
) -> dict[str, dict[str, float]]:
    """Per round the floor, then each server's start (and stop, and the start's outcome),
    the order alternating so that neither always meets a machine the other just loaded."""
    floor_walls: list[float] = []
    start_walls: dict[str, list[float]] = {name: [] for name in benches}
    any_policy = next(iter(policies.values()))
    for index in range(ROUNDS):
        start = agent_api.StartJobRequest(
            session_id=new_session_id(), policy=agent_policy(any_policy)
        )
        stop = agent_api.StopJobRequest(session_id=new_session_id(), policy_id=any_policy.id)
        floor_walls.append(await floor.send("StartJob", start.SerializeToString()))
        await floor.send("StopJob", stop.SerializeToString())
        order = list(benches) if index % 2 == 0 else list(benches)[::-1]
        for name in order:
            bench, policy_id = benches[name], policies[name].id
            wall, session = await bench.session("start", policy_id)
            start_walls[name].append(wall)
            await bench.session("stop", policy_id)
            await outcome_of(bench.service, session.id)
    floor_s = statistics.median(floor_walls)
    rows = {}
    for name, walls in start_walls.items():
        ratio = statistics.median(w / f for w, f in zip(walls, floor_walls, strict=True))
        rows[name] = {
            "floor_start_s": floor_s,
            "start_policy_s": statistics.median(walls),
            "start_ratio": ratio,
        }
    return rows


async def measured_start(bench: Bench, policy_id: str, rss_idle: int) -> dict[str, object]:
    await asyncio.sleep(2.0)  # what the ratio rounds followed has been released
    rss_before = bench.server.rss_kb()
    cpu_at_start = bench.server.cpu_seconds()
    wall, started = await bench.session("start", policy_id)
    began = time.monotonic()
    # Opening the streams (each job's first snapshot recorded and stored) is a one-time
    # cost after the start: the quiet window begins once a second passes nearly idle.
    quiet_by = began + JOB_SECONDS / 2
    while time.monotonic() < quiet_by:
        before = bench.server.cpu_seconds()
        await asyncio.sleep(1.0)
        if bench.server.cpu_seconds() - before < QUIET_CPU_S:
            break
    setup_s, setup_cpu = time.monotonic() - began, bench.server.cpu_seconds() - cpu_at_start
    cpu_before, window_began = bench.server.cpu_seconds(), time.monotonic()
    await asyncio.sleep(max(JOB_SECONDS - (window_began - began) - wall - MARGIN_S, 1.0))
    cpu = bench.server.cpu_seconds() - cpu_before
    window = time.monotonic() - window_began
    rss_during = bench.server.rss_kb()
    final = await outcome_of(bench.service, started.id)
    ends = [r.job.end_time.ToNanoseconds() for r in final.computer_results if r.job.id]
    delays = [
        (r.last_contact_time.ToNanoseconds() - r.job.end_time.ToNanoseconds()) / 1e9
        for r in final.computer_results
        if r.job.state == pb.JOB_STATE_SUCCEEDED
    ]
    stats = final.statistics
    return {
        "followed_jobs": stats.received,
        "jobs_succeeded": stats.jobs_succeeded,
        "jobs_running_s": time.monotonic() - began,
        "end_spread_s": (max(ends) - min(ends)) / 1e9,
        "recorded_after_end_p50_s": percentile(delays, 0.50),
        "recorded_after_end_p99_s": percentile(delays, 0.99),
        "recorded_after_end_max_s": max(delays),
        "outcome_after_last_end_s": (final.outcome_time.ToNanoseconds() - max(ends)) / 1e9,
        "follow_setup_s": setup_s,
        "follow_setup_cpu_s": setup_cpu,
        "idle_cpu_percent_of_a_core": 100 * cpu / window,
        "cpu_window_s": window,
        "server_rss_mb": rss_during / 1024,
        "rss_kb_per_followed_job": (rss_during - rss_before) / max(stats.received, 1),
        "rss_kb_per_computer_since_idle": (rss_during - rss_idle) / max(stats.received, 1),
    }


COLUMNS = [
    ("metrics", "metrics", "{}"),
    ("computers", "computers", "{:,}"),
    ("floor s", "floor_start_s", "{:.3f}"),
    ("Start s", "start_policy_s", "{:.3f}"),
    ("ratio", "start_ratio", "{:.2f}"),
    ("followed", "followed_jobs", "{:,}"),
    ("succeeded", "jobs_succeeded", "{:,}"),
    ("end spread s", "end_spread_s", "{:.2f}"),
    ("rec p50 s", "recorded_after_end_p50_s", "{:.3f}"),
    ("rec p99 s", "recorded_after_end_p99_s", "{:.3f}"),
    ("rec max s", "recorded_after_end_max_s", "{:.3f}"),
    ("outcome s", "outcome_after_last_end_s", "{:.3f}"),
    ("setup s", "follow_setup_s", "{:.1f}"),
    ("setup CPU s", "follow_setup_cpu_s", "{:.1f}"),
    ("idle CPU %", "idle_cpu_percent_of_a_core", "{:.2f}"),
    ("RSS MB", "server_rss_mb", "{:.1f}"),
    ("KB/job", "rss_kb_per_followed_job", "{:.1f}"),
    ("KB/computer", "rss_kb_per_computer_since_idle", "{:.1f}"),
]


# Each server of the comparison: its name in the table, and its extra flags.
VARIANTS = {"off": (), "on": ("--metrics-listen", "127.0.0.1:0")}
# What the comparison quotes: on / off of each (lower is better for all of them).
COMPARED = (
    "start_ratio",
    "recorded_after_end_p99_s",
    "outcome_after_last_end_s",
    "follow_setup_cpu_s",
    "idle_cpu_percent_of_a_core",
)


async def run() -> dict[str, object]:
    load = os.getloadavg()[0]  # the machine is shared: what it carried as this began
    print(
        f"\n== follow: {COMPUTERS:,} simulated computers, jobs of {JOB_SECONDS:.0f} s ending "
        f"together; ratio over {ROUNDS} rounds; metrics off and on, side by side; "
        f"{os.cpu_count()} CPUs shared by client, servers and fleet; load average "
        f"{load:.2f}",
        flush=True,
    )
    rows: dict[str, dict[str, object]] = {}
    with bench_workdir() as workdir:
        fleets = await start_fleets(
            workdir, COMPUTERS, 0, "--job-seconds", str(JOB_SECONDS), name="follow-fleet"
        )
        agents = agents_of(fleets)
        servers = {
            name: await start_server(workdir, f"follow-server-{name}", *flags, deadline=DEADLINE)
            for name, flags in VARIANTS.items()
        }
        floor = Floor(agents)
        channels = []
        try:
            serving.tune_garbage_collector()
            options = [("grpc.max_receive_message_length", 64 << 20)]
            benches, policies, rss_idle = {}, {}, {}
            for name, server in servers.items():
                address = (await server.wait_for_log(LISTEN_LINE))[1]
                channels.append(grpc.aio.insecure_channel(address, options=options))
                service = api_grpc.PolicyServiceStub(channels[-1])
                benches[name] = Bench(server, [p for p, _ in fleets], floor, service, agents, [])
                rss_idle[name] = server.rss_kb()
                policies[name] = policy_over(f"all-{name}", agents)
                await service.CreatePolicy(
                    api.CreatePolicyRequest(policy_id=policies[name].id, policy=policies[name])
                )
                await connect_all(service, policies[name].id, len(agents))
            for policy in policies.values():
                stop = agent_api.StopJobRequest(policy_id=policy.id)
                await floor.send("StopJob", stop.SerializeToString())
            for name, ratio in (await delivery_ratio(floor, benches, policies)).items():
                rows[name] = {"metrics": name, "computers": len(agents), **ratio}
            for name, bench in benches.items():
                rows[name].update(await measured_start(bench, policies[name].id, rss_idle[name]))
        finally:
            for channel in channels:
                await channel.close()
            await floor.close()
            await asyncio.gather(
                *(server.stop() for server in servers.values()),
                *(process.stop() for process, _ in fleets),
            )
    print_rows(list(rows.values()), COLUMNS)
    on_over_off = {
        key: float(rows["on"][key]) / float(rows["off"][key])  # type: ignore[arg-type]
        if float(rows["off"][key]) > 0  # type: ignore[arg-type]
        else float("nan")
        for key in COMPARED
    }
    print(
        "  metrics on / off: "
        + ", ".join(f"{key} {quotient:.3f}" for key, quotient in on_over_off.items()),
        flush=True,
    )
    return {
        "job_seconds": JOB_SECONDS,
        "rounds": ROUNDS,
        "deadline_s": DEADLINE,
        "load_average_at_start": load,
        **rows,
        "metrics_on_over_off": on_over_off,
    }

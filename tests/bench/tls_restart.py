"""The first session after a server restart, over mutual TLS, with the default deadline.

Part of the tls section (issue 15 item 5: 5,000 mTLS agents, 3,193 reached by the first
session after a start with a 5 s deadline). One fleet of N mTLS agents stays up; a
server stores a policy over all of them and stops; then, on the same database:

- cold: a server starts and StartPolicy is sent as soon as it listens (its warm-up has
  only just begun, so the session opens nearly every connection itself);
- warm: a server starts, the client waits for its "channels warmed" line, then sends
  StartPolicy.

Each row: the StartPolicy wall, computers received, the server's CPU seconds from its
start to the reply, and for warm the warm-up's own time and count. BENCH_TLS_RESTART_SIZES
sets the sizes (default: the largest of BENCH_TLS_SIZES). The deadline is the
server's default unless BENCH_TLS_RESTART_DEADLINE says otherwise.
"""

import asyncio
import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from fanout import (
    LISTEN_LINE,
    ROOT,
    Process,
    agents_of,
    fresh_database,
    policy_over,
    start_fleets,
    timed_session,
)

from backup import defaults
from backup.ctl.credentials import OperatorCredentials
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb

DEADLINE = float(os.environ.get("BENCH_TLS_RESTART_DEADLINE", defaults.AGENT_DEADLINE_SECONDS))
OUTCOME_TIMEOUT = 120.0
WARMED_LINE = re.compile(r"channels warmed: (\d+) of (\d+) computers connected in ([\d.]+) s")


@dataclass(frozen=True)
class Secure:
    """What the server, the fleets and the operator present under mutual TLS."""

    server_flags: tuple[str, ...]
    fleet_flags: tuple[str, ...]
    operator: OperatorCredentials


async def serve(workdir: Path, name: str, database: Path, secure: Secure) -> Process:
    """`python -m backup_server` over an existing database, as a restart finds it."""
    return await Process.spawn(
        workdir / f"{name}.log",
        *("-m", "backup_server", "--listen", "127.0.0.1:0", "--agent-deadline", str(DEADLINE)),
        *("--db", str(database)),
        *secure.server_flags,
        cwd=Path(os.environ.get("BENCH_SERVER_ROOT", ROOT)),
    )


async def final(service: api_grpc.PolicyServiceStub, *session_ids: str) -> None:
    """Returns once every session's outcome is final."""
    end = time.monotonic() + OUTCOME_TIMEOUT
    for session_id in session_ids:
        while (
            await service.GetSession(api.GetSessionRequest(session_id=session_id))
        ).outcome == pb.SESSION_STATE_RUNNING:
            if time.monotonic() > end:
                raise RuntimeError(f"session {session_id} still RUNNING after {OUTCOME_TIMEOUT} s")
            await asyncio.sleep(0.25)


async def first_session(
    workdir: Path, name: str, database: Path, secure: Secure, count: int, wait_for_warm: bool
) -> dict[str, object]:
    """Starts a server, optionally waits for its warm-up, sends one StartPolicy, stops it."""
    started = time.monotonic()
    server = await serve(workdir, name, database, secure)
    try:
        address = (await server.wait_for_log(LISTEN_LINE))[1]
        listening = time.monotonic() - started
        warmed: dict[str, object] = {"warm_up": "not waited for"}
        if wait_for_warm:
            found = await server.wait_for_log(WARMED_LINE)
            warmed = {
                "warmed": int(found[1]),
                "warm_up_s": float(found[3]),
                "warm_up": f"{float(found[3]):.1f} s, {int(found[1]):,} ready",
            }
        async with secure.operator.channel(address) as channel:
            service = api_grpc.PolicyServiceStub(channel)
            wall, session = await timed_session(service, "start", "all")
            cpu = server.cpu_seconds()
            _, stop = await timed_session(service, "stop", "all")
            # Outcomes final before the server stops, or the next one resumes following
            # 5,000 jobs (5,000 more connections) while it warms up.
            await final(service, session.id, stop.id)
    finally:
        await server.stop()
    return {
        "computers": count,
        "first_session": "warm" if wait_for_warm else "cold",
        "listening_after_s": listening,
        "start_policy_s": wall,
        "received": session.statistics.received,
        "not_received": session.statistics.not_received,
        "server_cpu_s": cpu,
        **warmed,
    }


async def measure_restarts(count: int, workdir: Path, secure: Secure) -> list[dict[str, object]]:
    """Cold beside warm first sessions after a restart, against one fleet of `count` agents."""
    database = fresh_database(workdir / f"restart-{count}.db")
    async with contextlib.AsyncExitStack() as stack:
        fleets = await start_fleets(workdir, count, 0, *secure.fleet_flags, name="fleet-restart")
        for process, _ in fleets:
            stack.push_async_callback(process.stop)
        server = await serve(workdir, f"restart-{count}-setup", database, secure)
        try:
            address = (await server.wait_for_log(LISTEN_LINE))[1]
            async with secure.operator.channel(address) as channel:
                await api_grpc.PolicyServiceStub(channel).CreatePolicy(
                    api.CreatePolicyRequest(
                        policy_id="all", policy=policy_over("all", agents_of(fleets))
                    )
                )
        finally:
            await server.stop()
        return [
            await first_session(workdir, f"restart-{count}-{kind}", database, secure, count, warm)
            for kind, warm in (("cold", False), ("warm", True))
        ]


COLUMNS = [
    # (heading, key, format)
    ("computers", "computers", "{:,}"),
    ("first session", "first_session", "{}"),
    ("Start s", "start_policy_s", "{:.3f}"),
    ("received", "received", "{:,}"),
    ("not received", "not_received", "{:,}"),
    ("server CPU s", "server_cpu_s", "{:.2f}"),
    ("warm-up before it", "warm_up", "{}"),
]

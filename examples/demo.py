"""`make demo`: a backup server, three real agents and one computer that is down, on loopback.

Creates a protection group of pre-installed agents and a policy over all of them, starts
the policy, prints every computer's delivery and the statistics, stops it, prints that
session, and shuts everything down with SIGTERM.
"""

import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import agent_control_pb2_grpc as agent_grpc
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb


def launch(workdir: Path, name: str, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """Starts `python -m ARGS` on port 0 and returns it with the address it listens on."""
    log = workdir / f"{name}.log"
    process = subprocess.Popen([sys.executable, "-m", *args], stderr=log.open("w"))
    for _ in range(300):
        found = re.search(r"listening on (\S+)", log.read_text())
        if found:
            return process, found.group(1)
        time.sleep(0.05)
    raise SystemExit(f"{name} did not start: {log.read_text()}")


def closed_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def short(enum: type, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix)  # type: ignore[attr-defined, no-any-return]


def readable(detail: str) -> str:
    """gRPC's connection errors end with the part a person needs: keep the code and that."""
    code, _, rest = detail.partition(": ")
    return f"{code}: {rest.rsplit(': ', 1)[-1]}" if code == "UNAVAILABLE" else detail


def print_session(title: str, session: pb.PolicySession) -> None:
    state = short(pb.SessionState, session.state, "SESSION_STATE_")
    print(f"\n{title}: session {session.id}, {state}")
    print(
        f"  {'COMPUTER':<10} {'ADDRESS':<17} {'GROUP':<8} {'DELIVERY':<13} {'LATENCY':>8}  DETAIL"
    )
    for result in session.computer_results:
        latency = f"{result.latency.ToMilliseconds()} ms" if result.latency.ToNanoseconds() else "-"
        group = result.protection_group_id or "-"
        delivery = short(pb.Delivery, result.delivery, "DELIVERY_")
        print(
            f"  {result.computer.name:<10} {result.computer.address:<17} {group:<8} "
            f"{delivery:<13} {latency:>8}  {readable(result.detail)[:70]}"
        )
    s = session.statistics
    print(
        f"  total {s.total}: {s.received} received, {s.not_received} not received, "
        f"{s.skipped} skipped, {s.rejected} rejected, {s.cancelled} cancelled"
    )
    for warning in session.warnings:
        print(f"  warning: {warning}")


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="backup-demo-"))
    source = workdir / "source"
    (source / "reports").mkdir(parents=True)
    for i in range(20):
        (source / "reports" / f"q{i}.csv").write_text("region,revenue\n" * 20_000)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        server, server_address = launch(
            workdir,
            "server",
            "backup_server",
            "--listen",
            "127.0.0.1:0",
            "--db",
            str(workdir / "server.db"),
            "--agent-deadline",
            "2",
        )
        processes.append(server)
        agents = {}
        for name in ("web-1", "web-2", "branch-1"):
            process, address = launch(
                workdir,
                name,
                "agent_stub",
                "--listen",
                "127.0.0.1:0",
                "--name",
                name,
                "--data-dir",
                str(workdir / name),
            )
            processes.append(process)
            agents[name] = address
        down = closed_address()
        listing = ", ".join(f"{name} {address}" for name, address in agents.items())
        print(f"backup server {server_address}; agents {listing}; db-1 {down} (down)")
        print(f"logs and data in {workdir}")

        with grpc.insecure_channel(server_address) as channel:
            service = api_grpc.PolicyServiceStub(channel)
            service.CreateProtectionGroup(
                api.CreateProtectionGroupRequest(
                    protection_group_id="branch",
                    protection_group=pb.ProtectionGroup(
                        name="branch office",
                        kind=pb.PROTECTION_GROUP_KIND_PREINSTALLED_AGENTS,
                        computers=[pb.Computer(name="branch-1", address=agents["branch-1"])],
                    ),
                )
            )
            policy = pb.BackupPolicy(
                name="nightly reports",
                computers=[
                    pb.Computer(name="web-1", address=agents["web-1"]),
                    pb.Computer(name="web-2", address=agents["web-2"]),
                    pb.Computer(name="db-1", address=down),
                ],
                protection_group_ids=["branch"],
                source_paths=[str(source)],
                repository=str(workdir / "repository"),
                throttle_bytes_per_second=2_000_000,
            )
            service.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
            started = service.StartPolicy(api.StartPolicyRequest(policy_id="nightly"))
            print_session("start", started)
            time.sleep(1)
            stopped = service.StopPolicy(api.StopPolicyRequest(policy_id="nightly"))
            print_session("stop", stopped)
            for name in ("web-1", "web-2"):
                with grpc.insecure_channel(agents[name]) as agent_channel:
                    jobs = agent_grpc.AgentControlStub(agent_channel).ListJobs(
                        agent_api.ListJobsRequest(), timeout=5
                    )
                job = jobs.jobs[0]
                state = short(pb.JobState, job.state, "JOB_STATE_")
                print(
                    f"\n{name}: job {job.id} {state} after {job.bytes_done}"
                    f" of {job.bytes_total} bytes"
                )
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=15) for process in processes]
        print(f"\nshut down cleanly: exit codes {codes}")


if __name__ == "__main__":
    main()

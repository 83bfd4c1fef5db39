"""kill -9 of a real agent process during jobs never costs or corrupts a restore point."""

import os
import random
import time
from pathlib import Path

import grpc
from engine_support import (
    MIB,
    cli,
    policy,
    restored_source,
    snapshot,
    text,
    unreferenced_chunks,
    write,
)

from agent_stub import engine
from backup.v1 import agent_control_pb2 as api
from backup.v1 import resources_pb2 as pb
from backup.v1.agent_control_pb2_grpc import AgentControlStub

KILLS = 22
# Bounds the test when kills keep landing between jobs (a few do since the engine got
# faster: the two jobs run at once, in less than the serial round the kills spread over).
MAX_LIVES = 60
DEADLINE = 5.0
INTERRUPTED = "the agent stopped while this job was running"


def make_sources(root: Path, rng: random.Random) -> tuple[Path, Path]:
    for index in range(12):
        write(root / "a" / f"data-{index}", rng.randbytes(MIB))
    for index in range(300):
        write(root / "a" / "small" / f"note-{index}.txt", text(1024, index))
    for index in range(4):
        write(root / "b" / f"data-{index}", rng.randbytes(MIB))
    # The same bytes in both policies: their points share these chunks.
    write(root / "b" / "copy-of-a", (root / "a" / "data-0").read_bytes())
    return root / "a", root / "b"


def change_some_files(a: Path, b: Path, rng: random.Random) -> None:
    for index in rng.sample(range(1, 12), 3):
        write(a / f"data-{index}", rng.randbytes(MIB))
    write(b / f"data-{rng.randrange(4)}", rng.randbytes(MIB))


def run_to_end(stub, backup_policy: pb.BackupPolicy) -> pb.Job:
    reply = stub.StartJob(api.StartJobRequest(policy=backup_policy), timeout=DEADLINE)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        job = stub.GetJob(api.GetJobRequest(job_id=reply.job.id), timeout=DEADLINE)
        if job.state != pb.JOB_STATE_RUNNING:
            return job
        time.sleep(0.01)
    raise AssertionError("job did not finish")


class Chain:
    """What the test has seen of the backup chain across the agent's lives."""

    def __init__(self, repository: Path, keep_b: int) -> None:
        self.repository = repository
        self.keep_b = keep_b
        self.seen: dict[str, pb.RestorePoint] = {}
        self.verified: set[str] = set()
        self.chunk_sizes: dict[str, int] = {}

    def check(self, stub, context: str) -> list[pb.RestorePoint]:
        """Every earlier point is still there (unless retention removed it) and every
        listed point is complete: its manifest reads in full and its chunks verify."""
        reply = stub.ListRestorePoints(api.ListRestorePointsRequest(), timeout=DEADLINE)
        listed = {point.id: point for point in reply.restore_points}
        for point_id, point in self.seen.items():
            if point_id in listed:
                continue
            newer = [
                p
                for p in listed.values()
                if p.policy_id == point.policy_id
                and p.create_time.ToNanoseconds() > point.create_time.ToNanoseconds()
            ]
            assert point.policy_id == "b" and len(newer) >= self.keep_b, (
                f"{context}: restore point {point_id} of policy {point.policy_id} vanished"
            )
        repository = engine.Repository.open(self.repository)
        # Listing skips a manifest it cannot read, so look at every file under points/.
        summaries, damaged = repository.summaries()
        assert damaged == [], f"{context}: {damaged}"
        assert {summary.id for summary in summaries} == listed.keys(), context
        for point_id in listed.keys() - self.verified:
            # A partial point would show here: its manifest would not read in full, or a
            # chunk it names would be missing or hold other bytes. Each chunk is read once
            # over the whole test; the command line's verify rereads them all at the end.
            manifest = repository.read_point(point_id)
            for entry in manifest.entries:
                size = 0
                for name in entry.chunks:
                    if name not in self.chunk_sizes:
                        self.chunk_sizes[name] = len(repository.read_chunk(name))
                    size += self.chunk_sizes[name]
                assert size == entry.size, f"{context}: {point_id}: {entry.path} is partial"
            self.verified.add(point_id)
        self.seen.update(listed)
        return list(reply.restore_points)


def interrupted_jobs(stub) -> set[str]:
    """Jobs the agent found running when it restarted: each one was killed mid-job."""
    jobs = stub.ListJobs(api.ListJobsRequest(), timeout=DEADLINE).jobs
    assert all(job.state != pb.JOB_STATE_RUNNING for job in jobs)
    return {job.id for job in jobs if job.error == INTERRUPTED}


def test_kill_minus_nine_during_jobs_never_costs_a_restore_point(tmp_path: Path, spawn) -> None:
    """Killed at random moments of two concurrent jobs until 22 kills landed mid-job, the
    agent keeps every earlier point verifiable, never lists a partial one, and its next
    jobs succeed."""
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    source_a, source_b = make_sources(tmp_path / "sources", rng)
    repository = tmp_path / "repository"
    policy_a = policy(source_a, repository, "a", retention_points=1000)
    policy_b = policy(source_b, repository, "b", retention_points=2)
    chain = Chain(repository, keep_b=2)
    data_dir = tmp_path / "agent"
    agent_args = [
        "agent_stub",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "a",
        "--data-dir",
        str(data_dir),
    ]

    agent = spawn(*agent_args)
    with grpc.insecure_channel(agent.address) as channel:
        stub = AgentControlStub(channel)
        assert run_to_end(stub, policy_a).state == pb.JOB_STATE_SUCCEEDED
        assert run_to_end(stub, policy_b).state == pb.JOB_STATE_SUCCEEDED
        chain.check(stub, "first jobs")
        # Time one round of incremental jobs, to spread the kills over a round.
        change_some_files(source_a, source_b, rng)
        started = time.monotonic()
        run_to_end(stub, policy_a)
        run_to_end(stub, policy_b)
        round_seconds = time.monotonic() - started
    agent.stop()

    interrupted: set[str] = set()
    kills_during_jobs = lives = 0
    while kills_during_jobs < KILLS and lives < MAX_LIVES:
        context = f"life {lives} (seed {seed})"
        agent = spawn(*agent_args)
        with grpc.insecure_channel(agent.address) as channel:
            stub = AgentControlStub(channel)
            chain.check(stub, context)
            now_interrupted = interrupted_jobs(stub)
            kills_during_jobs += bool(now_interrupted - interrupted)
            interrupted = now_interrupted
            change_some_files(source_a, source_b, rng)
            for backup_policy in (policy_a, policy_b):
                stub.StartJob(api.StartJobRequest(policy=backup_policy), timeout=DEADLINE)
            # Within the two concurrent jobs: about half of the serial round they took.
            time.sleep(rng.uniform(0, 0.5 * round_seconds))
            agent.stop()  # kill -9
        lives += 1

    agent = spawn(*agent_args)
    with grpc.insecure_channel(agent.address) as channel:
        stub = AgentControlStub(channel)
        chain.check(stub, f"after the last kill (seed {seed})")
        kills_during_jobs += bool(interrupted_jobs(stub) - interrupted)
        final_a = run_to_end(stub, policy_a)
        final_b = run_to_end(stub, policy_b)
        assert final_a.state == final_b.state == pb.JOB_STATE_SUCCEEDED, (seed, final_a.error)
        listed = chain.check(stub, f"after the final jobs (seed {seed})")
    agent.stop()
    assert kills_during_jobs >= KILLS, f"{kills_during_jobs} of {lives} kills hit a running job"
    assert [point.id for point in listed[:2]] == [
        final_b.restore_point_id,
        final_a.restore_point_id,
    ]
    assert unreferenced_chunks(repository) == set()
    assert list((repository / "tmp").iterdir()) == []
    verify = cli("verify", "--data-dir", str(data_dir))
    assert verify.returncode == 0, verify.stdout
    assert f"verified {len(listed)} restore points" in verify.stdout
    target = tmp_path / "restored"
    restore = cli(
        "restore", final_a.restore_point_id, "--to", str(target), "--data-dir", str(data_dir)
    )
    assert restore.returncode == 0, restore.stderr
    assert snapshot(restored_source(target, source_a)) == snapshot(source_a)

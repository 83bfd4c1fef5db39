"""Several computers (real agent processes) back one policy up into one shared repository."""

import hashlib
import os
import random
import time
from pathlib import Path

import grpc
import pytest
from engine_support import (
    MIB,
    cli,
    policy,
    restored_source,
    snapshot,
    start_agent_process,
    text,
    unreferenced_chunks,
    write,
)

from backup.v1 import agent_control_pb2 as api
from backup.v1 import resources_pb2 as pb
from backup.v1.agent_control_pb2_grpc import AgentControlStub

from conftest import Process

COMPUTERS = 3
DEADLINE = 5.0
SHARED = text(200_000, 99)  # the same bytes on every computer: stored once


class Computer:
    """One agent process, its data dir and its own source tree."""

    def __init__(self, root: Path, name: str, repository: Path) -> None:
        self.name = name
        self.data_dir = root / name / "data"
        self.source = root / name / "home"
        self.policy = policy(self.source, repository, "shared", retention_points=2)
        self.expected: dict[str, dict[str, tuple[object, ...]]] = {}
        self.process: Process = start_agent_process(self.data_dir, name=name)
        self.channel = grpc.insecure_channel(self.process.address)

    def change(self, rng: random.Random, round_number: int) -> None:
        write(self.source / "shared.txt", SHARED)
        write(self.source / "round.txt", f"{self.name} round {round_number}\n".encode())
        write(self.source / "big" / f"r{round_number % 3}.bin", rng.randbytes(MIB))
        for index in rng.sample(range(40), 5):
            write(self.source / "notes" / f"n{index}.txt", text(rng.randint(100, 6000), index))

    def start(self) -> str:
        stub = AgentControlStub(self.channel)
        return stub.StartJob(api.StartJobRequest(policy=self.policy), timeout=DEADLINE).job.id

    def wait(self, job_id: str, seconds: float = 60) -> pb.Job:
        stub = AgentControlStub(self.channel)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            job = stub.GetJob(api.GetJobRequest(job_id=job_id), timeout=DEADLINE)
            if job.state != pb.JOB_STATE_RUNNING:
                return job
            time.sleep(0.02)
        raise AssertionError(f"{self.name}: job {job_id} did not finish")

    def points(self) -> list[pb.RestorePoint]:
        stub = AgentControlStub(self.channel)
        reply = stub.ListRestorePoints(api.ListRestorePointsRequest(), timeout=DEADLINE)
        return list(reply.restore_points)

    def restart(self) -> None:
        self.channel.close()
        self.process = start_agent_process(self.data_dir, name=self.name)
        self.channel = grpc.insecure_channel(self.process.address)

    def close(self) -> None:
        self.channel.close()
        self.process.stop()


def concurrent_round(computers: list[Computer], rng: random.Random, number: int) -> None:
    """Every computer changes its files and backs up at the same time; all succeed."""
    for computer in computers:
        computer.change(rng, number)
    started = [(computer, computer.start()) for computer in computers]
    for computer, job_id in started:
        job = computer.wait(job_id)
        assert job.state == pb.JOB_STATE_SUCCEEDED, (computer.name, job.error)
        computer.expected[job.restore_point_id] = snapshot(computer.source)


def check_chains(computers: list[Computer], tmp_path: Path) -> None:
    """Each computer lists exactly its 2 newest points, and each restores its own files."""
    for computer in computers:
        listed = computer.points()
        newest = list(computer.expected)[-2:]
        assert sorted(point.id for point in listed) == sorted(newest), computer.name
        assert {point.computer for point in listed} == {computer.name}
        for point in listed:
            target = tmp_path / "restores" / computer.name / point.id
            done = cli(
                "restore", point.id, "--to", str(target), "--data-dir", str(computer.data_dir)
            )
            assert done.returncode == 0, done.stderr
            restored = snapshot(restored_source(target, computer.source))
            assert restored == computer.expected[point.id], (computer.name, point.id)
        verify = cli("verify", "--data-dir", str(computer.data_dir))
        assert verify.returncode == 0, verify.stdout
        assert "verified 2 restore points" in verify.stdout


@pytest.mark.timeout(300)
def test_three_computers_keep_their_own_chains_in_one_repository(tmp_path: Path) -> None:
    """4 concurrent rounds with retention 2: exactly 2 points per computer, each its own."""
    repository = tmp_path / "nas" / "repository"
    rng = random.Random(11)
    computers = [Computer(tmp_path, f"pc-{index}", repository) for index in range(COMPUTERS)]
    try:
        for number in range(4):
            concurrent_round(computers, rng, number)
        check_chains(computers, tmp_path)
        # The file every computer has is stored once, whoever wrote it first.
        shared = hashlib.sha256(SHARED).hexdigest()
        assert [path.name for path in repository.glob(f"chunks/*/{shared}")] == [shared]
        later = [computer.expected for computer in computers]
        assert all(len(points) == 4 for points in later)
    finally:
        for computer in computers:
            computer.close()


@pytest.mark.timeout(300)
def test_kill_minus_nine_during_concurrent_backups_and_retention(tmp_path: Path) -> None:
    """A computer killed mid-job, again and again, costs no other computer anything."""
    repository = tmp_path / "nas" / "repository"
    rng = random.Random(int(os.environ.get("KILL_SEED", "5")))
    computers = [Computer(tmp_path, f"pc-{index}", repository) for index in range(COMPUTERS)]
    try:
        for number in range(2):
            concurrent_round(computers, rng, number)
        for number in range(2, 8):
            victim = computers[number % COMPUTERS]
            for computer in computers:
                computer.change(rng, number)
            started = [(computer, computer.start()) for computer in computers]
            time.sleep(rng.uniform(0.0, 0.4))
            victim.process.stop()  # kill -9, mid-job or mid-retention
            for computer, job_id in started:
                if computer is not victim:
                    job = computer.wait(job_id)
                    assert job.state == pb.JOB_STATE_SUCCEEDED, (computer.name, job.error)
                    computer.expected[job.restore_point_id] = snapshot(computer.source)
            victim.restart()
            # A point the killed job committed before dying is kept as any other.
            for point in victim.points():
                victim.expected.setdefault(point.id, snapshot(victim.source))
        for number in range(8, 10):
            concurrent_round(computers, rng, number)
        check_chains(computers, tmp_path)
        # One job alone in the repository collects what the killed jobs left.
        computers[0].change(rng, 10)
        job = computers[0].wait(computers[0].start())
        assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
        assert unreferenced_chunks(repository) == set()
        assert list((repository / "tmp").iterdir()) == []
    finally:
        for computer in computers:
            computer.close()

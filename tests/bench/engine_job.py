"""One engine operation in its own process, for the bench: its RSS and fsyncs are its own.

    python engine_job.py backup REPOSITORY SOURCE
    python engine_job.py restore REPOSITORY POINT TARGET
    python engine_job.py verify REPOSITORY

Prints one JSON line: seconds, fsyncs (os.fsync calls, counted by wrapping it), and what
the operation reports.
"""

import json
import os
import sys
import time
from pathlib import Path

FSYNCS = [0]
_fsync = os.fsync


def _counting_fsync(fd: int) -> None:
    FSYNCS[0] += 1
    _fsync(fd)


os.fsync = _counting_fsync

from agent_stub import engine  # noqa: E402 - after the wrapper, so the engine uses it
from agent_stub.jobs import RunningJob  # noqa: E402
from backup.v1 import resources_pb2 as pb  # noqa: E402


def main() -> None:
    action, repository = sys.argv[1], Path(sys.argv[2])
    started = time.perf_counter()
    figures: dict[str, object] = {}
    if action == "backup":
        job = RunningJob(pb.Job(id=f"bench-{time.monotonic_ns()}", policy_id="bench"))
        spec = engine.BackupJob(
            policy_id="bench", sources=(sys.argv[3],), repository=repository, agent_id="bench"
        )
        figures["point"] = engine.run_backup(spec, job.id, job)
        done = job.snapshot()
        figures.update(bytes_read=done.bytes_read, bytes_written=done.bytes_written)
        figures["warnings"] = list(done.warnings)
    elif action == "restore":
        restored = engine.restore(
            engine.Repository.open(repository), sys.argv[3], Path(sys.argv[4])
        )
        figures["files"] = restored.files
    else:
        result = engine.verify(engine.Repository.open(repository))
        figures.update(chunks=result.chunks, problems=len(result.problems))
    figures.update(seconds=time.perf_counter() - started, fsyncs=FSYNCS[0])
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

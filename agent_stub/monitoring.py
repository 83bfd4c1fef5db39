"""What the agent tells Prometheus about its jobs: counts, durations, bytes, last success.

Fed by `JobRunner` once per ended job; at start-up the last success of each policy is
read back from the job history, so a restarted agent does not look unprotected.
"""

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from backup.metrics import enum_labels
from backup.v1 import resources_pb2 as pb

JOB_STATE = enum_labels(pb.JobState)
# A backup job: seconds for a small, unchanged tree; hours for a first full one.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)


class AgentMonitoring:
    """The agent's metric families."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.jobs = Counter(
            "backup_agent_jobs_total",
            "Jobs ended on this agent, by how they ended.",
            ["policy", "state"],
            registry=registry,
        )
        self.duration = Histogram(
            "backup_agent_job_duration_seconds",
            "Time from a job's start to its end.",
            ["policy"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.read_bytes = Counter(
            "backup_agent_read_bytes_total",
            "Bytes jobs read from the source paths (unchanged files are not re-read).",
            ["policy"],
            registry=registry,
        )
        self.written_bytes = Counter(
            "backup_agent_written_bytes_total",
            "Bytes jobs added to the repository, after deduplication and compression.",
            ["policy"],
            registry=registry,
        )
        self.last_success = Gauge(
            "backup_agent_last_success_timestamp_seconds",
            "When the policy's last successful job ended (Unix time).",
            ["policy"],
            registry=registry,
        )
        self._last_success: dict[str, float] = {}

    def recover(self, history: Iterable[pb.Job]) -> None:
        """Sets each policy's last success from the jobs the agent kept."""
        for job in history:
            if job.state == pb.JOB_STATE_SUCCEEDED:
                self._succeeded(job)

    def job_ended(self, job: pb.Job) -> None:
        policy = job.policy_id
        self.jobs.labels(policy, JOB_STATE[job.state]).inc()
        took = job.end_time.ToNanoseconds() - job.start_time.ToNanoseconds()
        self.duration.labels(policy).observe(max(took, 0) / 1e9)
        self.read_bytes.labels(policy).inc(job.bytes_read)
        self.written_bytes.labels(policy).inc(job.bytes_written)
        if job.state == pb.JOB_STATE_SUCCEEDED:
            self._succeeded(job)

    def _succeeded(self, job: pb.Job) -> None:
        ended = job.end_time.ToNanoseconds() / 1e9
        # The history is not in end order: keep the newest end.
        if ended > self._last_success.get(job.policy_id, 0.0):
            self._last_success[job.policy_id] = ended
            self.last_success.labels(job.policy_id).set(ended)

"""The commands a session sends to agents, each one value: what to call and how to read it.

A `Command` carries the AgentControl method, the request (serialized once per session),
how to read the agent's reply, and how it relates to other sessions of the same policy:
a start registers so that a later stop can follow it; a stop cancels the starts still
queued. A new command is one more function here returning a `Command`, and one entry in
`COMMAND_OF_ACTION`.
"""

from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from backup.v1 import agent_control_pb2 as agent_pb
from backup.v1 import resources_pb2 as pb

# Reads an agent's reply into (the job it answered with, note for the detail).
ReplyReader = Callable[[bytes], tuple[pb.Job, str]]
UNREADABLE = "the agent's reply could not be read"


@dataclass(frozen=True)
class Command:
    """One agent command of a session."""

    method: str
    request: bytes
    read_reply: ReplyReader
    # Registered while it runs, so that a stop of the same policy follows it.
    registers_as_start: bool = False
    # Cancels the commands that running starts of the policy have not sent yet.
    cancels_queued_starts: bool = False


def agent_policy(policy: pb.BackupPolicy) -> pb.BackupPolicy:
    """The policy as an agent needs it: never the computer list, which is the server's."""
    view = pb.BackupPolicy(
        id=policy.id,
        name=policy.name,
        source_paths=policy.source_paths,
        repository=policy.repository,
        retention_points=policy.retention_points,
        throttle_bytes_per_second=policy.throttle_bytes_per_second,
    )
    view.update_time.CopyFrom(policy.update_time)
    return view


def read_start_reply(reply: bytes) -> tuple[pb.Job, str]:
    try:
        answer = agent_pb.StartJobResponse.FromString(reply)
    except DecodeError:
        return pb.Job(), UNREADABLE
    if answer.already_running:
        return answer.job, f"already running as job {answer.job.id}"
    if answer.job.state not in (pb.JOB_STATE_RUNNING, pb.JOB_STATE_UNSPECIFIED):
        # A resent command whose job has ended (StartJob is idempotent per session).
        return answer.job, f"job {answer.job.id} was started by this session"
    return answer.job, f"job {answer.job.id} started"


def read_stop_reply(reply: bytes) -> tuple[pb.Job, str]:
    try:
        answer = agent_pb.StopJobResponse.FromString(reply)
    except DecodeError:
        return pb.Job(), UNREADABLE
    if answer.was_running:
        return answer.job, f"job {answer.job.id} stopped"
    return pb.Job(), "no job was running"


def start_command(session_id: str, policy: pb.BackupPolicy) -> Command:
    request = agent_pb.StartJobRequest(session_id=session_id, policy=agent_policy(policy))
    return Command(
        "StartJob", request.SerializeToString(), read_start_reply, registers_as_start=True
    )


def stop_command(session_id: str, policy: pb.BackupPolicy) -> Command:
    request = agent_pb.StopJobRequest(session_id=session_id, policy_id=policy.id)
    return Command(
        "StopJob", request.SerializeToString(), read_stop_reply, cancels_queued_starts=True
    )


COMMAND_OF_ACTION: dict[pb.SessionAction, Callable[[str, pb.BackupPolicy], Command]] = {
    pb.SESSION_ACTION_START: start_command,
    pb.SESSION_ACTION_STOP: stop_command,
}

"""The commands a session sends, as values: one per action, what each carries and how its reply is read."""

from backup.v1 import agent_control_pb2 as agent_pb
from backup.v1 import resources_pb2 as pb
from backup_server.commands import COMMAND_OF_ACTION, UNREADABLE, agent_policy


def a_policy() -> pb.BackupPolicy:
    policy = pb.BackupPolicy(
        id="nightly",
        name="nightly",
        computers=[pb.Computer(name="c1", address="127.0.0.1:1")],
        protection_group_ids=["web"],
        source_paths=["/srv"],
        repository="/backups",
        retention_points=3,
    )
    policy.update_time.FromSeconds(1_700_000_000)
    return policy


def test_every_action_has_one_command() -> None:
    """Each session action other than the unspecified one maps to a command."""
    actions = {value for value in pb.SessionAction.values() if value}
    assert set(COMMAND_OF_ACTION) == actions


def test_a_start_carries_the_policy_as_the_agent_needs_it_and_registers() -> None:
    """StartJob carries the session id and the policy without its computers or groups; it registers as a start."""
    command = COMMAND_OF_ACTION[pb.SESSION_ACTION_START]("s-1", a_policy())
    request = agent_pb.StartJobRequest.FromString(command.request)
    assert command.method == "StartJob" and request.session_id == "s-1"
    assert request.policy == agent_policy(a_policy())
    assert not request.policy.computers and not request.policy.protection_group_ids
    assert request.policy.source_paths == ["/srv"] and request.policy.retention_points == 3
    assert command.registers_as_start and not command.cancels_queued_starts


def test_a_stop_names_the_policy_and_cancels_queued_starts() -> None:
    """StopJob carries the session and policy ids only; it cancels queued starts and does not register."""
    command = COMMAND_OF_ACTION[pb.SESSION_ACTION_STOP]("s-2", a_policy())
    request = agent_pb.StopJobRequest.FromString(command.request)
    assert command.method == "StopJob"
    assert (request.session_id, request.policy_id) == ("s-2", "nightly")
    assert command.cancels_queued_starts and not command.registers_as_start


def test_replies_are_read_into_a_job_and_a_note() -> None:
    """Each reply reader gives the job and a note, and says so when the reply cannot be read."""
    start = COMMAND_OF_ACTION[pb.SESSION_ACTION_START]("s-1", a_policy()).read_reply
    stop = COMMAND_OF_ACTION[pb.SESSION_ACTION_STOP]("s-2", a_policy()).read_reply
    started = agent_pb.StartJobResponse(job=pb.Job(id="j-1")).SerializeToString()
    again = agent_pb.StartJobResponse(job=pb.Job(id="j-1"), already_running=True)
    stopped = agent_pb.StopJobResponse(job=pb.Job(id="j-1"), was_running=True)

    def read(reader, reply: bytes) -> tuple[str, str]:
        job, note = reader(reply)
        return job.id, note

    assert read(start, started) == ("j-1", "job j-1 started")
    assert read(start, again.SerializeToString()) == ("j-1", "already running as job j-1")
    assert read(stop, stopped.SerializeToString()) == ("j-1", "job j-1 stopped")
    assert read(stop, agent_pb.StopJobResponse().SerializeToString()) == ("", "no job was running")
    assert read(start, b"\xff\xff") == ("", UNREADABLE) == read(stop, b"\xff\xff")

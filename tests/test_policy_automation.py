"""A policy's schedule, backup window and retries over PolicyService: validation, masks, next_run_time."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb

from conftest import policy_over


def automated(tmp_path: Path, **fields: object) -> pb.BackupPolicy:
    return policy_over([("c1", "127.0.0.1:1")], tmp_path, tmp_path / "source", **fields)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


BAD = [
    ({"schedule": pb.Schedule(cron="61 * * * *")}, "policy.schedule.cron: "),
    ({"schedule": pb.Schedule(cron="* * *")}, "policy.schedule.cron: "),
    ({"schedule": pb.Schedule(time_zone="UTC")}, "policy.schedule.cron: is required"),
    ({"schedule": pb.Schedule(cron="0 2 * * *", time_zone="Mars/Olympus")}, "policy.schedule.time_zone: "),
    ({"backup_window": pb.BackupWindow(start="22:00", end="22:00")}, "policy.backup_window.end: "),
    ({"backup_window": pb.BackupWindow(start="24:00", end="06:00")}, "policy.backup_window.start: "),
    ({"backup_window": pb.BackupWindow(start="22:00", end="6")}, "policy.backup_window.end: "),
    ({"backup_window": pb.BackupWindow(start="22:00", end="06:00", time_zone="Nowhere")}, "policy.backup_window.time_zone: "),
    ({"retry": pb.RetryPolicy(attempts=11, interval=duration_pb2.Duration(seconds=60))}, "policy.retry.attempts: "),
    ({"retry": pb.RetryPolicy(attempts=-1)}, "policy.retry.attempts: "),
    ({"retry": pb.RetryPolicy(attempts=3)}, "policy.retry.interval: must be positive"),
    ({"retry": pb.RetryPolicy(attempts=3, interval=duration_pb2.Duration(seconds=-5))}, "policy.retry.interval: must not be negative"),
]


@pytest.mark.parametrize(("fields", "message"), BAD)
async def test_bad_automation_fields_are_refused_and_nothing_is_stored(policy_service, tmp_path, fields, message) -> None:
    """Each malformed schedule, window or retry field is INVALID_ARGUMENT naming the field; no policy is created."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await policy_service.CreatePolicy(
            api.CreatePolicyRequest(policy_id="auto", policy=automated(tmp_path, **fields))
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(message), raised.value.details()
    listed = await policy_service.ListPolicies(api.ListPoliciesRequest())
    assert list(listed.policies) == []


async def test_schedule_window_and_retry_round_trip_with_next_run_time(policy_service, tmp_path) -> None:
    """A created policy keeps its schedule, window and retries, and Get and List fill next_run_time inside the window."""
    created = await policy_service.CreatePolicy(
        api.CreatePolicyRequest(
            policy_id="auto",
            policy=automated(
                tmp_path,
                schedule=pb.Schedule(cron="*/5 * * * *", time_zone="Europe/Berlin"),
                backup_window=pb.BackupWindow(start="00:00", end="23:59"),
                retry=pb.RetryPolicy(attempts=3, interval=duration_pb2.Duration(seconds=600)),
            ),
        )
    )
    assert created.schedule.time_zone == "Europe/Berlin" and created.retry.attempts == 3
    fetched = await policy_service.GetPolicy(api.GetPolicyRequest(policy_id="auto"))
    upcoming = fetched.next_run_time.ToDatetime(tzinfo=UTC)
    now = datetime.now(UTC)
    assert now - timedelta(seconds=5) <= upcoming <= now + timedelta(minutes=5, seconds=5)
    assert upcoming.minute % 5 == 0 and upcoming.second == 0
    listed = await policy_service.ListPolicies(api.ListPoliciesRequest())
    assert listed.policies[0].HasField("next_run_time")


async def test_nested_mask_paths_pause_and_change_attempts(policy_service, tmp_path) -> None:
    """UpdatePolicy with schedule.paused and retry.attempts changes only those; paused clears next_run_time."""
    await policy_service.CreatePolicy(
        api.CreatePolicyRequest(
            policy_id="auto",
            policy=automated(
                tmp_path,
                schedule=pb.Schedule(cron="0 3 * * *", time_zone="Asia/Tokyo"),
                retry=pb.RetryPolicy(attempts=2, interval=duration_pb2.Duration(seconds=60)),
            ),
        )
    )
    change = pb.BackupPolicy(
        id="auto", schedule=pb.Schedule(paused=True), retry=pb.RetryPolicy(attempts=5)
    )
    updated = await policy_service.UpdatePolicy(
        api.UpdatePolicyRequest(policy=change, update_mask=mask("schedule.paused", "retry.attempts"))
    )
    assert updated.schedule == pb.Schedule(cron="0 3 * * *", time_zone="Asia/Tokyo", paused=True)
    assert updated.retry.attempts == 5 and updated.retry.interval.seconds == 60
    assert not updated.HasField("next_run_time")
    resumed = await policy_service.UpdatePolicy(
        api.UpdatePolicyRequest(policy=pb.BackupPolicy(id="auto"), update_mask=mask("schedule.paused"))
    )
    assert not resumed.schedule.paused and resumed.HasField("next_run_time")


async def test_an_update_that_breaks_the_schedule_is_refused_and_changes_nothing(policy_service, tmp_path) -> None:
    """schedule.cron set to nonsense by a nested mask is INVALID_ARGUMENT and the stored schedule stays."""
    await policy_service.CreatePolicy(
        api.CreatePolicyRequest(policy_id="auto", policy=automated(tmp_path, schedule=pb.Schedule(cron="0 3 * * *")))
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await policy_service.UpdatePolicy(
            api.UpdatePolicyRequest(
                policy=pb.BackupPolicy(id="auto", schedule=pb.Schedule(cron="every day")),
                update_mask=mask("schedule.cron"),
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("policy.schedule.cron: ")
    fetched = await policy_service.GetPolicy(api.GetPolicyRequest(policy_id="auto"))
    assert fetched.schedule.cron == "0 3 * * *"


async def test_an_unknown_nested_path_is_refused(policy_service, tmp_path) -> None:
    """A mask path like schedule.color is INVALID_ARGUMENT naming update_mask."""
    await policy_service.CreatePolicy(api.CreatePolicyRequest(policy_id="auto", policy=automated(tmp_path)))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await policy_service.UpdatePolicy(
            api.UpdatePolicyRequest(policy=pb.BackupPolicy(id="auto"), update_mask=mask("schedule.color"))
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("update_mask: ")


async def test_next_run_time_sent_by_a_client_is_not_stored(policy_service, tmp_path) -> None:
    """next_run_time is output only: a client's value is ignored and a policy without a schedule has none."""
    sent = automated(tmp_path)
    sent.next_run_time.FromDatetime(datetime(2030, 1, 1, tzinfo=UTC))
    created = await policy_service.CreatePolicy(api.CreatePolicyRequest(policy_id="auto", policy=sent))
    assert not created.HasField("next_run_time")

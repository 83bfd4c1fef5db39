"""Protection groups and backup policies: create, read, list, update, delete."""

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from google.protobuf import field_mask_pb2

from backup import paging, validation
from backup.errors import FailedPrecondition, InvalidArgument
from backup.ids import new_resource_id
from backup.v1 import resources_pb2 as pb

from .automation import UPDATE_PATHS, check_automation
from .schedule import fill_next_run_time
from .sessions import resolve_targets
from .storage.interface import Storage

Listed = TypeVar("Listed", pb.ProtectionGroup, pb.BackupPolicy)

LIST_DEFAULT = 100
LIST_LIMIT = 1000
MUTABLE_POLICY_FIELDS = (
    "name",
    "description",
    "computers",
    "protection_group_ids",
    "source_paths",
    "repository",
    "retention_points",
    "throttle_bytes_per_second",
    "schedule",
    "backup_window",
    "retry",
)
# Paths an update mask may name: the fields above and the nested ones of AIP-161.
UPDATABLE_PATHS = (
    *MUTABLE_POLICY_FIELDS,
    *(path for path in UPDATE_PATHS if path not in MUTABLE_POLICY_FIELDS),
)


def check_references(policy: pb.BackupPolicy, groups: Mapping[str, pb.ProtectionGroup]) -> None:
    """Referenced groups exist and the policy reaches at most COMPUTERS_MAX computers."""
    for index, group_id in enumerate(policy.protection_group_ids):
        if group_id not in groups:
            field = f"policy.protection_group_ids[{index}]"
            raise FailedPrecondition(
                f"{field}: protection group {group_id!r} does not exist", field=field
            )
    targets = resolve_targets(policy, groups)
    if len(targets) > validation.COMPUTERS_MAX:
        raise InvalidArgument(
            "policy.computers",
            f"the policy reaches {len(targets)} computers with its groups; "
            f"the limit is {validation.COMPUTERS_MAX}",
        )
    # API.md: a computer's name is unique within a policy, groups included, so that a
    # session's line for a name means one computer.
    addresses: dict[str, str] = {}
    for target in targets:
        name, address = target.computer.name, target.computer.address
        first = addresses.setdefault(name, address)
        if first != address:
            raise FailedPrecondition(
                f"policy.protection_group_ids: the name {name!r} stands for two computers, "
                f"{first} and {address}; names must be unique within a policy",
                field="policy.protection_group_ids",
            )


class Policies:
    """The catalogue of protection groups and policies."""

    def __init__(
        self,
        storage: Storage,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self._storage = storage
        # next_run_time is computed on every read, for this clock's now.
        self._now = now
        # Tells the scheduler that a policy was created, changed or deleted.
        self._changed = changed

    async def create_group(self, group_id: str, group: pb.ProtectionGroup) -> pb.ProtectionGroup:
        validation.optional_id("protection_group_id", group_id)
        validation.check_protection_group(group)
        stored = pb.ProtectionGroup()
        stored.CopyFrom(group)
        stored.id = group_id or new_resource_id("pg")
        stored.create_time.GetCurrentTime()
        await self._storage.insert_group(stored)
        return stored

    async def get_group(self, group_id: str) -> pb.ProtectionGroup:
        validation.require_id("protection_group_id", group_id)
        return await self._storage.get_group(group_id)

    async def list_groups(
        self, page_size: int, page_token: str
    ) -> tuple[list[pb.ProtectionGroup], str]:
        return await self._list(self._storage.list_groups, "groups", page_size, page_token)

    async def delete_group(self, group_id: str) -> None:
        validation.require_id("protection_group_id", group_id)
        await self._storage.delete_group(group_id)

    async def create_policy(self, policy_id: str, policy: pb.BackupPolicy) -> pb.BackupPolicy:
        validation.optional_id("policy_id", policy_id)
        validation.check_policy(policy)
        check_automation(policy)
        stored = pb.BackupPolicy()
        stored.CopyFrom(policy)
        stored.ClearField("next_run_time")
        stored.id = policy_id or new_resource_id("policy")
        stored.create_time.GetCurrentTime()
        stored.update_time.CopyFrom(stored.create_time)
        await self._storage.insert_policy(stored, check_references)
        self._changed()
        return fill_next_run_time(stored, self._now())

    async def get_policy(self, policy_id: str) -> pb.BackupPolicy:
        validation.require_id("policy_id", policy_id)
        policy = await self._storage.get_policy(policy_id)
        return fill_next_run_time(policy, self._now())

    async def list_policies(
        self, page_size: int, page_token: str
    ) -> tuple[list[pb.BackupPolicy], str]:
        policies, token = await self._list(
            self._storage.list_policies, "policies", page_size, page_token
        )
        now = self._now()
        return [fill_next_run_time(policy, now) for policy in policies], token

    async def _list(
        self,
        fetch: Callable[[str, int], Awaitable[list[Listed]]],
        query: str,
        page_size: int,
        page_token: str,
    ) -> tuple[list[Listed], str]:
        """One page in id order; the token carries the last id of the page."""
        size = validation.page_size(page_size, LIST_DEFAULT, LIST_LIMIT)
        after = paging.decode(page_token, query, str) or ""
        items = await fetch(after, size + 1)
        if len(items) <= size:
            return items, ""
        return items[:size], paging.encode(query, items[size - 1].id)

    async def update_policy(
        self, policy: pb.BackupPolicy, update_mask: field_mask_pb2.FieldMask
    ) -> pb.BackupPolicy:
        validation.require_id("policy.id", policy.id)
        paths = _mutable_paths(update_mask.paths)
        change = _with_nested_parents(policy, paths)
        updated = await self._storage.update_policy(
            policy.id, functools.partial(_apply_change, change, paths), check_references
        )
        self._changed()
        return fill_next_run_time(updated, self._now())

    async def delete_policy(self, policy_id: str) -> None:
        validation.require_id("policy_id", policy_id)
        await self._storage.delete_policy(policy_id)
        self._changed()


def _apply_change(
    change: pb.BackupPolicy, paths: Sequence[str], stored: pb.BackupPolicy
) -> pb.BackupPolicy:
    """The stored policy with the masked fields of `change`, valid and re-stamped."""
    field_mask_pb2.FieldMask(paths=paths).MergeMessage(
        change, stored, replace_message_field=True, replace_repeated_field=True
    )
    validation.check_policy(stored)
    check_automation(stored)
    stored.update_time.GetCurrentTime()
    return stored


def _mutable_paths(paths: Sequence[str]) -> list[str]:
    """AIP-134: empty or '*' means every mutable field; anything else must be one of them."""
    if not paths or list(paths) == ["*"]:
        return list(MUTABLE_POLICY_FIELDS)
    for path in paths:
        if path not in UPDATABLE_PATHS:
            raise InvalidArgument(
                "update_mask",
                f"{path[:80]!r} is not a field that can be updated "
                f"({', '.join(MUTABLE_POLICY_FIELDS)}, or a nested one such as "
                "schedule.paused or retry.attempts)",
            )
    return list(paths)


def _with_nested_parents(change: pb.BackupPolicy, paths: Sequence[str]) -> pb.BackupPolicy:
    """AIP-161: `schedule.paused` in the mask with no schedule in the request means false.

    FieldMask.MergeMessage skips a nested path whose parent the source lacks, which would
    make a resume (paused = false, sent as the default) change nothing.
    """
    complete = pb.BackupPolicy()
    complete.CopyFrom(change)
    for path in paths:
        parent, dot, _ = path.partition(".")
        if dot:
            getattr(complete, parent).SetInParent()
    return complete

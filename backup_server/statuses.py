"""ListComputerStatuses: each computer's protection under each policy, from followed jobs.

A status row changes when a followed job's end is stored (storage/statuses.py), and when
a start's outcome becomes final for the computers it did not reach; rows list in
(policy id, address) order, paged by an opaque token.
"""

from backup import paging, validation
from backup.errors import NotFound
from backup.v1 import resources_pb2 as pb

from .storage.interface import Storage

LIST_DEFAULT = 100
LIST_LIMIT = 1000


class ComputerStatuses:
    """Reads computer statuses from the storage."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def list(
        self, policy_id: str, page_size: int, page_token: str
    ) -> tuple[list[pb.ComputerStatus], str]:
        if validation.optional_id("policy_id", policy_id):
            if not await self._storage.policy_exists_or_had_sessions(policy_id):
                raise NotFound(f"policy {policy_id!r} not found")
        size = validation.page_size(page_size, LIST_DEFAULT, LIST_LIMIT)
        query = f"computer-statuses:{policy_id}"
        position = paging.decode(page_token, query, str) or " "
        after_policy, _, after_address = position.partition(" ")
        rows = await self._storage.list_computer_statuses(
            policy_id, (after_policy, after_address), size + 1
        )
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = paging.encode(query, f"{last.policy_id} {last.computer.address}")
        return rows[:size], token

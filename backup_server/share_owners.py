"""Which live replica owns a computer: the highest rendezvous hash of (replica id,
computer address), so a computer stays with the same replica from session to session and
a replica joining or leaving moves only about 1/N of them. Pure functions, no I/O."""

import hashlib
from collections.abc import Sequence

from backup.v1 import resources_pb2 as pb


def weight(member: str, address: str) -> int:
    """The rendezvous hash of a replica and a computer address (stable across processes)."""
    digest = hashlib.blake2b(f"{member}\n{address}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner_of(address: str, members: Sequence[str]) -> str:
    """The member that owns `address`: the highest weight (ties to the first in order)."""
    return max(members, key=lambda member: weight(member, address))


def split(session: pb.PolicySession, members: Sequence[str]) -> dict[str, list[int]]:
    """The positions of the session's pending computers, by owning member."""
    shares: dict[str, list[int]] = {member: [] for member in members}
    for position, result in enumerate(session.computer_results):
        if result.delivery == pb.DELIVERY_PENDING:
            shares[owner_of(result.computer.address, members)].append(position)
    return shares

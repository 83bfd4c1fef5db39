"""The owner of each computer of a shared session: a rendezvous hash of replica id and address,
and the claim of a dead replica's pending computers in a real PostgreSQL."""

import asyncio
from collections import Counter

from storage_conformance import a_session

from backup.v1 import resources_pb2 as pb
from backup_server.sessions import recount
from backup_server.share_owners import owner_of, split
from backup_server.storage.postgres import PostgresStorage

ADDRESSES = [f"10.0.{index // 250}.{index % 250}:50051" for index in range(10_000)]


def owners(members: list[str]) -> dict[str, str]:
    return {address: owner_of(address, members) for address in ADDRESSES}


def test_the_owner_of_an_address_is_stable_whatever_the_order_of_the_members() -> None:
    """The same members give every address the same owner, in any order and on every call."""
    members = ["r-a1", "r-b2", "r-c3"]
    assert owners(members) == owners(list(reversed(members))) == owners(members)


def test_the_computers_spread_evenly_over_the_members() -> None:
    """10,000 addresses over 2 and over 4 replicas: each replica owns its fair share within 10 %."""
    for members in (["r-a", "r-b"], ["r-a", "r-b", "r-c", "r-d"]):
        counts = Counter(owners(members).values())
        fair = len(ADDRESSES) / len(members)
        assert set(counts) == set(members)
        assert all(abs(count - fair) < 0.1 * fair for count in counts.values()), counts


def test_a_member_joining_or_leaving_moves_only_its_share() -> None:
    """A third replica takes about a third of the computers, each from one of the other two, and no computer moves between those two; when it leaves, exactly its computers go back."""
    two, three = owners(["r-a", "r-b"]), owners(["r-a", "r-b", "r-c"])
    moved = [address for address in ADDRESSES if two[address] != three[address]]
    assert all(three[address] == "r-c" for address in moved)
    assert abs(len(moved) / len(ADDRESSES) - 1 / 3) < 0.03
    assert owners(["r-a", "r-b"]) == two


def test_a_session_is_split_by_owner_over_its_pending_computers_only() -> None:
    """Every pending computer is in exactly one member's share; a decided one in none."""
    session = a_session("s", computers=20)
    session.computer_results[0].delivery = pb.DELIVERY_SKIPPED
    shares = split(session, ["r-a", "r-b"])
    assert sorted(shares["r-a"] + shares["r-b"]) == list(range(1, 20))
    recount(session)
    assert (session.statistics.pending, session.statistics.skipped) == (19, 1)


async def test_a_dead_replicas_pending_computers_are_claimed_once(postgres_url: str) -> None:
    """Once a replica's lease runs out, its pending computers of a RUNNING session are claimed by one live replica of two claiming at once; delivered ones and the owner's stay."""
    first = await PostgresStorage.open(postgres_url, 2)
    second = await PostgresStorage.open(postgres_url, 2)
    try:
        for live in ("r-owner", "r-one", "r-two"):
            await first.renew_lease(live, "127.0.0.1:1", 30)
        await first.renew_lease("r-dying", "127.0.0.1:2", 0.3)
        await first.insert_session(a_session("taken", computers=5), owner="r-owner")
        await first.assign_shares("taken", {"r-dying": [1, 2, 3]})
        assert await second.claim_shares("r-one") == {}  # its lease still holds
        await asyncio.sleep(0.4)
        claims = await asyncio.gather(first.claim_shares("r-one"), second.claim_shares("r-two"))
        assert sorted(p for claim in claims for p in claim.get("taken", [])) == [1, 2, 3]
        shares = await first.pending_shares("taken")
        assert shares[""] == [0, 4] and "r-dying" not in shares
        assert await first.claim_shares("r-one") == {}
    finally:
        await first.close()
        await second.close()

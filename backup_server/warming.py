"""Warm channels: at start-up the server connects to the computers of its stored policies
in the background, a bounded number of handshakes at once, so the first session after a
restart finds its channels ready instead of spending its deadline on thousands of
handshakes (issue 15 item 5: 5,000 mutual-TLS agents, 3,193 reached cold). Among
replicas each warms only the computers it owns (`share_owners.owner_of` over the live
members): the others' channels are theirs to keep, and a share taken over from a dead
replica is warmed by its claimer before it sends."""

import logging
import time

from backup.errors import BackupError

from .fanout import AgentTransport
from .sessions import resolve_targets
from .share_owners import owner_of
from .storage.interface import Storage

log = logging.getLogger("backup_server.warming")

PAGE = 100


async def computers_of_every_policy(storage: Storage) -> set[str]:
    """The addresses a session of some stored policy would send to."""
    addresses: set[str] = set()
    after = ""
    while page := await storage.list_policies(after, PAGE):
        for policy in page:
            try:
                policy, groups = await storage.get_policy_and_groups(policy.id)
            except BackupError:
                continue  # deleted meanwhile
            addresses.update(
                target.computer.address
                for target in resolve_targets(policy, groups)
                if not target.skipped_because
            )
        after = page[-1].id
    return addresses


async def warm_channels(
    storage: Storage, transport: AgentTransport, connect_seconds: float, replica_id: str
) -> int:
    """Connects to every computer of every stored policy that replica `replica_id` owns;
    returns how many answered."""
    started = time.monotonic()
    try:
        addresses = await computers_of_every_policy(storage)
        members = await storage.share_members(replica_id)
        if len(members) > 1:
            addresses = {a for a in addresses if owner_of(a, members) == replica_id}
    except BackupError as error:
        log.warning("channels not warmed: %s", error.message)
        return 0
    if not addresses:
        return 0
    ready = await transport.warm(addresses, connect_seconds)
    log.info(
        "channels warmed: %d of %d computers connected in %.1f s",
        ready,
        len(addresses),
        time.monotonic() - started,
    )
    return ready

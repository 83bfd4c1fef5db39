"""The statements several `PostgresStorage` methods run, each on the unit of work's cursor."""

import time
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncCursor, errors, sql

from backup.errors import AlreadyExists, Fenced, NotFound
from backup.v1 import resources_pb2 as pb

from ..outcomes import Correction, recounted
from ..sessions import JobEnd, ResultChange
from . import rows
from .interface import PolicyCheck
from .rows import RESULT_COLUMNS
from .statuses import fold, status_row

Cursor = AsyncCursor[dict[str, Any]]


async def insert(cur: Cursor, table: str, row: dict[str, Any], what: str) -> None:
    """Inserts a row; AlreadyExists naming `what` if its key is taken."""
    statement = sql.SQL("insert into {} ({}) values ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row)),
    )
    try:
        async with cur.connection.transaction():  # a savepoint: the unit of work goes on
            await cur.execute(statement, list(row.values()))
    except errors.UniqueViolation:
        raise AlreadyExists(f"{what} already exists") from None


async def stored_body(cur: Cursor, table: str, key: str, what: str, lock: str) -> bytes:
    """The serialized proto stored under `key`; NotFound naming `what` if none is."""
    await cur.execute(
        sql.SQL("select body from {} where id = %s " + lock).format(sql.Identifier(table)), [key]
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"{what} {key!r} not found")
    return bytes(row["body"])


async def get_group(cur: Cursor, group_id: str, lock: str = "") -> pb.ProtectionGroup:
    body = await stored_body(cur, "protection_groups", group_id, "protection group", lock)
    return pb.ProtectionGroup.FromString(body)


async def get_groups(cur: Cursor, group_ids: Sequence[str]) -> dict[str, pb.ProtectionGroup]:
    """The named groups that exist, share-locked until the unit of work ends, so none
    can be deleted between the check that needs it and the write."""
    if not group_ids:
        return {}
    await cur.execute(
        "select id, body from protection_groups where id = any(%s) for share", [list(group_ids)]
    )
    return {row["id"]: pb.ProtectionGroup.FromString(row["body"]) for row in await cur.fetchall()}


async def get_policy(cur: Cursor, policy_id: str, lock: str = "") -> pb.BackupPolicy:
    return pb.BackupPolicy.FromString(await stored_body(cur, "policies", policy_id, "policy", lock))


async def write_policy_groups(cur: Cursor, policy: pb.BackupPolicy) -> None:
    await cur.execute("delete from policy_groups where policy_id = %s", [policy.id])
    if policy.protection_group_ids:
        await cur.execute(
            "insert into policy_groups (policy_id, group_id)"
            " select %s, unnest(%s::text[]) on conflict do nothing",
            [policy.id, list(policy.protection_group_ids)],
        )


async def seq(cur: Cursor, session_id: str) -> int:
    await cur.execute("select seq from sessions where id = %s", [session_id])
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"session {session_id!r} not found")
    return int(row["seq"])


async def session_from_row(
    cur: Cursor, row: dict[str, Any], with_results: bool
) -> pb.PolicySession:
    session = rows.session_from_row(row)
    if with_results:
        # Tuples, in RESULT_FIELDS order, as rows.add_results takes them.
        async with cur.connection.cursor() as results:
            await results.execute(
                f"select {RESULT_COLUMNS} from computer_results"
                " where session_seq = %s order by position",
                [row["seq"]],
            )
            rows.add_results(session, await results.fetchall())
    return session


async def locked_session(cur: Cursor, session_id: str) -> dict[str, Any]:
    """The session's header row, locked until the unit of work ends (a header recount
    and the writes that race it take their turns); NotFound if there is none."""
    await cur.execute("select * from sessions where id = %s for update", [session_id])
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"session {session_id!r} not found")
    return row


async def recount_outcome(cur: Cursor, seq: int, before: pb.PolicySession) -> Correction | None:
    """Recounts a session's final outcome and job counts from its rows as they are now in
    this unit of work, and writes them (`before`'s when they stand)."""
    await cur.execute("select * from sessions where seq = %s", [seq])
    row = await cur.fetchone()
    assert row is not None  # locked by the caller's unit of work
    final, correction = recounted(await session_from_row(cur, row, with_results=True), before)
    columns = rows.recount_columns(final)
    await cur.execute(
        sql.SQL("update sessions set {} where seq = %s").format(
            sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(name)) for name in columns)
        ),
        [*columns.values(), seq],
    )
    return correction


async def save_results(
    cur: Cursor, seq: int, changes: Sequence[ResultChange], share: str = ""
) -> None:
    """Rewrites the changed computers of a session in one statement (arrays, one per column);
    with `share`, only if every one of them is still that share's (else Fenced).

    The share's condition is in the update itself, which locks each row it writes: a claim
    (`claim_rows`, `for update of r skip locked`) either took a row before, and the update
    finds another share there and leaves it (the write is then refused, and its unit of
    work rolled back whole), or skips the row, which stays this share's with the write. One
    statement where a locking read and the update were two: a 5,000-computer share is
    written every 0.25 s while watchers on other replicas wait for its rows. The update
    locks rows in its plan's order, not by position as `fence_rows` does: only writers of
    the same rows can wait on each other, a claim skips locked rows, and should a lapsed
    writer and its claimer ever deadlock, PostgreSQL aborts one, whose rows are written
    again (or refused) with the next batch."""
    if not changes:
        return
    ordered = sorted(changes, key=lambda change: change.position)
    positions = [change.position for change in ordered]
    columns = list(zip(*(rows.change_row(change) for change in ordered), strict=True))
    fence = " and r.share = %s returning r.position" if share else ""
    await cur.execute(
        "update computer_results as r set delivery = c.delivery, detail = c.detail,"
        " latency_ns = c.latency_ns, job_id = c.job_id, job = c.job,"
        " reconciled = c.reconciled, contact_ns = c.contact_ns, job_unknown = c.job_unknown"
        " from unnest(%s::integer[], %s::integer[], %s::text[], %s::bigint[], %s::text[],"
        " %s::bytea[], %s::boolean[], %s::bigint[], %s::boolean[])"
        " as c(position, delivery, detail, latency_ns, job_id, job, reconciled, contact_ns,"
        " job_unknown)"
        f" where r.session_seq = %s and r.position = c.position{fence}",
        [positions, *map(list, columns), seq, *([share] if share else [])],
    )
    if share:
        written = {row["position"] for row in await cur.fetchall()}
        _refuse([position for position in positions if position not in written], share)


async def fence_rows(cur: Cursor, seq: int, positions: Sequence[int], share: str) -> None:
    """Locks the session's rows at `positions` until the unit of work ends and raises Fenced
    naming those that are no longer `share`'s: a claim (`claim_rows`, `for update of r skip
    locked`) then either took them before this lock, and this write is refused, or skips
    them and they stay this share's, with this write."""
    await cur.execute(
        "select position, share from computer_results where session_seq = %s"
        " and position = any(%s) order by position for update",
        [seq, list(positions)],
    )
    _refuse([row["position"] for row in await cur.fetchall() if row["share"] != share], share)


def _refuse(others: Sequence[int], share: str) -> None:
    """Fenced, naming the rows `others` (if any) no longer `share`'s."""
    if others:
        raise Fenced(
            f"another replica claimed {len(others)} computers of this share: the lease of"
            f" replica {share} lapsed",
            tuple(others),
        )


async def apply_job_ends(cur: Cursor, ends: Sequence[JobEnd]) -> None:
    """Folds a batch's job ends into their computers' status rows in two statements: every
    row the batch touches read and locked at once, then every changed one written at once
    (one round trip per end was 10,000 for a 5,000-computer stop, and held the rows' locks
    for seconds while another session's batch waited on them).

    Locked and written in (policy, address) order, code point by code point (`collate "C"`,
    as Python sorts), the same in every transaction: two sessions' batches (a start's and a
    stop's, on one replica or two) take the rows they share in the same order and cannot
    deadlock; a stable sort keeps one computer's ends in their order. A computer with no
    row yet has nothing to lock: two batches creating its first row at once keep the later
    one's fold, as when each end was its own pair of statements."""
    if not ends:
        return
    ordered = sorted(ends, key=lambda end: (end.policy_id, end.computer.address))
    keys = list(dict.fromkeys((end.policy_id, end.computer.address) for end in ordered))
    await cur.execute(
        "select policy_id, address, body from computer_statuses"
        " where (policy_id, address) in (select * from unnest(%s::text[], %s::text[]))"
        ' order by policy_id collate "C", address collate "C" for update',
        [[policy_id for policy_id, _ in keys], [address for _, address in keys]],
    )
    statuses = {
        (row["policy_id"], row["address"]): pb.ComputerStatus.FromString(row["body"])
        for row in await cur.fetchall()
    }
    changed: dict[tuple[str, str], list[object]] = {}
    for end in ordered:
        key = (end.policy_id, end.computer.address)
        status = statuses.setdefault(key, pb.ComputerStatus(policy_id=end.policy_id))
        if fold(status, end):
            changed[key] = status_row(end, status)
    if not changed:
        return
    await cur.execute(
        "insert into computer_statuses"
        " (policy_id, address, name, consecutive_failures, last_success_ns, body)"
        " select * from unnest(%s::text[], %s::text[], %s::text[], %s::integer[],"
        " %s::bigint[], %s::bytea[])"
        " on conflict (policy_id, address) do update set"
        " name = excluded.name, consecutive_failures = excluded.consecutive_failures,"
        " last_success_ns = excluded.last_success_ns, body = excluded.body",
        [list(column) for column in zip(*changed.values(), strict=True)],
    )


async def claim_rows(
    cur: Cursor, rows_of_dead: str, params: Sequence[object], replica_id: str
) -> list[tuple[str, int]]:
    """Gives `replica_id` the computer rows `rows_of_dead` picks (a condition on `r`, a
    row, and `s`, its session, with `params`) whose share is another replica whose lease
    ran out: `skip locked`, so replicas claiming at once never take one row twice.
    Returns (session id, position) of each, in order."""
    await cur.execute(
        "with taken as (select r.session_seq, r.position from computer_results r"
        " join sessions s on s.seq = r.session_seq"
        f" where {rows_of_dead} and r.share <> '' and r.share <> %s"
        " and r.share not in (select id from replicas where expires_ns > %s)"
        " for update of r skip locked)"
        " update computer_results as r set share = %s from taken"
        " where r.session_seq = taken.session_seq and r.position = taken.position"
        " returning r.session_seq, r.position",
        [*params, replica_id, time.time_ns(), replica_id],
    )
    claimed = await cur.fetchall()
    if not claimed:
        return []
    await cur.execute(
        "select seq, id from sessions where seq = any(%s)",
        [sorted({row["session_seq"] for row in claimed})],
    )
    ids = {row["seq"]: row["id"] for row in await cur.fetchall()}
    return sorted((ids[row["session_seq"]], row["position"]) for row in claimed)


async def list_statuses(
    cur: Cursor, policy_id: str, after: tuple[str, str], limit: int
) -> list[pb.ComputerStatus]:
    """At most `limit` rows after the (policy id, address) `after`, in that order."""
    where = ["(policy_id, address) > (%s, %s)"]
    params: list[object] = list(after)
    if policy_id:
        where.append("policy_id = %s")
        params.append(policy_id)
    await cur.execute(
        f"select body from computer_statuses where {' and '.join(where)}"
        " order by policy_id, address limit %s",
        [*params, limit],
    )
    return [pb.ComputerStatus.FromString(row["body"]) for row in await cur.fetchall()]


async def check_group_users(cur: Cursor, group: pb.ProtectionGroup, check: PolicyCheck) -> None:
    """Runs `check` on every policy naming the group (locked against a concurrent
    change), with its groups and the changed group in place."""
    await cur.execute(
        "select p.body from policies p join policy_groups g on g.policy_id = p.id"
        " where g.group_id = %s order by p.id for share of p",
        [group.id],
    )
    for row in await cur.fetchall():
        policy = pb.BackupPolicy.FromString(row["body"])
        groups = await get_groups(cur, policy.protection_group_ids)
        groups[group.id] = group
        check(policy, groups)

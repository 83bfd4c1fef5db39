"""The statements several `PostgresStorage` methods run, each on the unit of work's cursor."""

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncCursor, errors, sql

from backup.errors import AlreadyExists, NotFound
from backup.v1 import resources_pb2 as pb

from . import rows
from .rows import RESULT_COLUMNS

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

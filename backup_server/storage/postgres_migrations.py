"""The PostgreSQL schema: the same numbered migrations as SQLite's, written in PostgreSQL's SQL.

Version N here is version N of `migrations.MIGRATIONS` (same name, same tables and
columns), so both backends are at the same schema version after the same release; a test
checks the two lists stay in step. Append only, like SQLite's list.

Replicas started at once on an empty database migrate it once: `migrate` holds a
session advisory lock while it reads what is applied and applies the rest, each step in
its own transaction.
"""

import time

from psycopg import AsyncConnection

from backup.v1 import resources_pb2 as pb

# Any fixed number: the advisory lock every replica takes to migrate.
MIGRATION_LOCK = 0x6261636B7570_01  # "backup" + 1

MIGRATION_1_INITIAL = [
    """create table protection_groups (
        id text primary key, name text not null, kind integer not null,
        body bytea not null, create_ns bigint not null)""",
    """create table policies (
        id text primary key, name text not null, body bytea not null,
        create_ns bigint not null, update_ns bigint not null)""",
    """create table policy_groups (
        policy_id text not null, group_id text not null, primary key (policy_id, group_id))""",
    "create index policy_groups_group_id on policy_groups (group_id)",
    """create table sessions (
        seq bigserial primary key, id text not null, policy_id text not null,
        action integer not null, state integer not null, start_ns bigint not null,
        end_ns bigint not null, warnings text not null,
        total integer not null, pending integer not null, received integer not null,
        not_received integer not null, skipped integer not null, rejected integer not null,
        cancelled integer not null)""",
    "create unique index sessions_id on sessions (id)",
    "create index sessions_policy_id_seq on sessions (policy_id, seq)",
    "create index sessions_state on sessions (state)",
    """create table computer_results (
        session_seq bigint not null, position integer not null, name text not null,
        address text not null, protection_group_id text not null, delivery integer not null,
        detail text not null, latency_ns bigint not null, job_id text not null,
        primary key (session_seq, position))""",
]

# Job outcomes: a session's outcome and jobs_* (sessions stored before have outcome 0,
# unspecified: never resumed, never followed), each computer's followed job, and the
# computers' protection statuses.
MIGRATION_2_OUTCOMES = [
    *(
        f"alter table sessions add column {column} {kind} not null default 0"
        for column, kind in (
            ("outcome", "integer"),
            ("outcome_ns", "bigint"),
            ("jobs_running", "integer"),
            ("jobs_succeeded", "integer"),
            ("jobs_failed", "integer"),
            ("jobs_stopped", "integer"),
            ("jobs_unknown", "integer"),
        )
    ),
    "create index sessions_outcome on sessions (outcome)",
    "alter table computer_results add column job bytea",  # the serialized Job; NULL when none
    "alter table computer_results add column reconciled boolean not null default false",
    "alter table computer_results add column contact_ns bigint not null default 0",
    "alter table computer_results add column job_unknown boolean not null default false",
    """create table computer_statuses (
        policy_id text not null, address text not null, name text not null,
        consecutive_failures integer not null, last_success_ns bigint not null,
        body bytea not null, primary key (policy_id, address))""",
]

# Why a session ran (SessionTrigger), the session it retries and its attempt.
MIGRATION_3_SESSION_ORIGIN = [
    "alter table sessions add column trigger integer not null default 0",
    "alter table sessions add column retry_of_session_id text not null default ''",
    "alter table sessions add column attempt integer not null default 0",
    # The scheduler asks for a policy's last session of a trigger (its last scheduled run).
    "create index sessions_policy_id_trigger_seq on sessions (policy_id, trigger, seq)",
]

# Replicas' leases, and which replica runs each session (see backup_server.replicas).
MIGRATION_4_REPLICAS = [
    """create table replicas (
        id text primary key, address text not null, expires_ns bigint not null)""",
    "alter table sessions add column owner text not null default ''",
]

# Which replica sends each computer of a session ("" = the session's owner), and an index
# of the pending rows by share, which replicas poll (see backup_server.shares).
MIGRATION_5_COMPUTER_SHARES = [
    "alter table computer_results add column share text not null default ''",
    "create index computer_results_pending_share on computer_results (share)"
    f" where delivery = {pb.DELIVERY_PENDING}",
]

# Whether the replica following a computer of another replica's share is done with it
# (see backup_server.share_following).
MIGRATION_6_FOLLOWED_SHARES = [
    "alter table computer_results add column follow_done integer not null default 0",
]

# Append only, in step with migrations.MIGRATIONS: (name, statements).
MIGRATIONS: list[tuple[str, list[str]]] = [
    ("initial schema", MIGRATION_1_INITIAL),
    ("job outcomes: session outcome, followed jobs, computer statuses", MIGRATION_2_OUTCOMES),
    ("session trigger, retry link and attempt", MIGRATION_3_SESSION_ORIGIN),
    ("replica leases and session owners", MIGRATION_4_REPLICAS),
    ("5 computer shares", MIGRATION_5_COMPUTER_SHARES),
    ("6 followed shares", MIGRATION_6_FOLLOWED_SHARES),
]


async def migrate(conn: AsyncConnection) -> list[str]:
    """Applies the migrations not yet applied, under the migration lock; returns their names."""
    await conn.set_autocommit(True)
    await conn.execute("select pg_advisory_lock(%s)", [MIGRATION_LOCK])
    try:
        await conn.execute(
            "create table if not exists migrations"
            " (version integer primary key, name text not null, applied_ns bigint not null)"
        )
        cursor = await conn.execute("select version from migrations")
        done = {row[0] for row in await cursor.fetchall()}
        applied = []
        for version, (name, statements) in enumerate(MIGRATIONS, start=1):
            if version in done:
                continue
            async with conn.transaction():
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(
                    "insert into migrations (version, name, applied_ns) values (%s, %s, %s)",
                    [version, name, time.time_ns()],
                )
            applied.append(name)
        return applied
    finally:
        await conn.execute("select pg_advisory_unlock(%s)", [MIGRATION_LOCK])

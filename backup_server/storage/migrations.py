"""The SQLite schema as a list of migrations, each applied once in its own transaction.

To change the schema, append a function to MIGRATIONS (never edit one that has shipped:
databases in the field have run it). A new table is `db.table(name).create(...)`; a new
column is `db.table(name).add_column(name, type, not_null_default=...)`, so rows stored
before it read the default. Then teach `sqlite.SqliteFile` to write and read it.
"""

import time
from collections.abc import Callable

import sqlite_utils

from backup.v1 import resources_pb2 as pb


def _migration_1_initial(db: sqlite_utils.Database) -> None:
    db.table("protection_groups").create(
        {"id": str, "name": str, "kind": int, "body": bytes, "create_ns": int}, pk="id"
    )
    db.table("policies").create(
        {"id": str, "name": str, "body": bytes, "create_ns": int, "update_ns": int}, pk="id"
    )
    db.table("policy_groups").create(
        {"policy_id": str, "group_id": str}, pk=("policy_id", "group_id")
    )
    db.table("policy_groups").create_index(["group_id"])
    db.table("sessions").create(
        {
            "seq": int,
            "id": str,
            "policy_id": str,
            "action": int,
            "state": int,
            "start_ns": int,
            # When it ended; while it runs, its last stored activity (what recovery
            # gives an interrupted session as its end).
            "end_ns": int,
            "warnings": str,
            "total": int,
            "pending": int,
            "received": int,
            "not_received": int,
            "skipped": int,
            "rejected": int,
            "cancelled": int,
        },
        pk="seq",
    )
    db.table("sessions").create_index(["id"], unique=True)
    db.table("sessions").create_index(["policy_id", "seq"])
    db.table("sessions").create_index(["state"])
    db.table("computer_results").create(
        {
            "session_seq": int,
            "position": int,
            "name": str,
            "address": str,
            "protection_group_id": str,
            "delivery": int,
            "detail": str,
            "latency_ns": int,
            "job_id": str,
        },
        pk=("session_seq", "position"),
    )


def _migration_2_outcomes(db: sqlite_utils.Database) -> None:
    sessions = db.table("sessions")
    # Sessions stored before have outcome 0 (unspecified): never resumed, never followed.
    for column in (
        "outcome",
        "outcome_ns",
        "jobs_running",
        "jobs_succeeded",
        "jobs_failed",
        "jobs_stopped",
        "jobs_unknown",
    ):
        sessions.add_column(column, int, not_null_default=0)
    sessions.create_index(["outcome"])
    results = db.table("computer_results")
    results.add_column("job", bytes)  # the serialized Job as last seen; NULL when none
    for column in ("reconciled", "contact_ns", "job_unknown"):
        results.add_column(column, int, not_null_default=0)
    db.table("computer_statuses").create(
        {
            "policy_id": str,
            "address": str,
            "name": str,
            "consecutive_failures": int,
            "last_success_ns": int,
            "body": bytes,
        },
        pk=("policy_id", "address"),
    )


def _migration_session_origin(db: sqlite_utils.Database) -> None:
    """Why a session ran (SessionTrigger), the session it retries and its attempt."""
    sessions = db.table("sessions")
    sessions.add_column("trigger", int, not_null_default=0)
    sessions.add_column("retry_of_session_id", str, not_null_default="")
    sessions.add_column("attempt", int, not_null_default=0)
    # The scheduler asks for a policy's last session of a trigger (its last scheduled run).
    sessions.create_index(["policy_id", "trigger", "seq"])


def _migration_replicas(db: sqlite_utils.Database) -> None:
    """Replicas' leases, and which replica runs each session (see backup_server.replicas)."""
    db.table("replicas").create({"id": str, "address": str, "expires_ns": int}, pk="id")
    db.table("sessions").add_column("owner", str, not_null_default="")


def _migration_computer_shares(db: sqlite_utils.Database) -> None:
    """Which replica sends each computer of a session ("" = the session's owner), and an
    index of the pending rows by share, which replicas poll (backup_server.shares)."""
    db.table("computer_results").add_column("share", str, not_null_default="")
    db.execute(
        "create index computer_results_pending_share on computer_results (share)"
        f" where delivery = {pb.DELIVERY_PENDING}"
    )


def _migration_followed_shares(db: sqlite_utils.Database) -> None:
    """Whether the replica following a computer of another replica's share is done with
    it (its job ended or was lost, its reconciliation settled: backup_server.share_following)."""
    db.table("computer_results").add_column("follow_done", int, not_null_default=0)


# Append only: a migration that has shipped is never edited, a new one is added.
MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = [
    ("initial schema", _migration_1_initial),
    ("job outcomes: session outcome, followed jobs, computer statuses", _migration_2_outcomes),
    ("session trigger, retry link and attempt", _migration_session_origin),
    ("replica leases and session owners", _migration_replicas),
    ("5 computer shares", _migration_computer_shares),
    ("6 followed shares", _migration_followed_shares),
]


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Applies the migrations not yet applied, each in its own transaction."""
    db.table("migrations").create(
        {"version": int, "name": str, "applied_ns": int}, pk="version", if_not_exists=True
    )
    done = {row["version"] for row in db.table("migrations").rows}
    applied = []
    for version, (name, step) in enumerate(MIGRATIONS, start=1):
        if version in done:
            continue
        with db.atomic():
            step(db)
            db.table("migrations").insert(
                {"version": version, "name": name, "applied_ns": time.time_ns()}
            )
        applied.append(name)
    return applied

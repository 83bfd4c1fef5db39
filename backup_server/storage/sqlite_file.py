"""Every SQL statement of the SQLite backend, synchronous, run only on the storage thread.

Policies and protection groups are stored as their serialized protos beside the columns
that queries need; sessions as a header row plus one row per computer (the schema is
`migrations.py`). `sqlite.SqliteStorage` calls these methods off the event loop.
"""

import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import sqlite_utils

from backup.errors import AlreadyExists, FailedPrecondition, NotFound
from backup.v1 import resources_pb2 as pb

from ..outcomes import Correction, is_final, recounted
from ..sessions import JobEnd, Progress, ResultChange, StoredOutcome
from . import rows
from .interface import OUTCOME_UNKNOWN, GroupChange, PolicyChange, PolicyCheck
from .migrations import migrate
from .rows import CHANGE_FIELDS, RESULT_COLUMNS, RESULT_FIELDS
from .sqlite_follows import FollowFile
from .statuses import apply_job_ends, list_statuses

BUSY_TIMEOUT_SECONDS = 10.0


def open_database(path: str | Path) -> sqlite_utils.Database:
    if str(path) != ":memory:":
        # Created 0600 before SQLite sees it; SQLite gives the -wal and -shm files the
        # database file's mode. An existing file keeps the mode its owner chose.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False)
    db = sqlite_utils.Database(conn)
    db.enable_wal()
    db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
    db.execute("PRAGMA synchronous = NORMAL")
    return db


class SqliteFile(FollowFile):
    """Every statement, synchronous; used only from the storage thread (or a test)."""

    def __init__(self, path: str | Path) -> None:
        self.db = open_database(path)
        migrate(self.db)

    def close(self) -> None:
        self.db.close()

    # Protection groups

    def insert_group(self, group: pb.ProtectionGroup) -> None:
        try:
            self.db.table("protection_groups").insert(rows.group_row(group))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"protection group {group.id!r} already exists") from None

    def get_group(self, group_id: str) -> pb.ProtectionGroup:
        for row in self.db.query("select body from protection_groups where id = ?", [group_id]):
            return pb.ProtectionGroup.FromString(row["body"])
        raise NotFound(f"protection group {group_id!r} not found")

    def get_groups(self, group_ids: Sequence[str]) -> dict[str, pb.ProtectionGroup]:
        if not group_ids:
            return {}
        marks = ",".join("?" * len(group_ids))
        rows = self.db.query(
            f"select id, body from protection_groups where id in ({marks})", group_ids
        )
        return {row["id"]: pb.ProtectionGroup.FromString(row["body"]) for row in rows}

    def list_groups(self, after_id: str, limit: int) -> list[pb.ProtectionGroup]:
        rows = self.db.query(
            "select body from protection_groups where id > ? order by id limit ?", [after_id, limit]
        )
        return [pb.ProtectionGroup.FromString(row["body"]) for row in rows]

    def update_group(
        self, group_id: str, change: GroupChange, check: PolicyCheck
    ) -> pb.ProtectionGroup:
        with self.db.atomic():
            group = change(self.get_group(group_id))
            rows = self.db.query(
                "select p.body from policies p join policy_groups g on g.policy_id = p.id"
                " where g.group_id = ? order by p.id",
                [group_id],
            )
            for row in list(rows):
                policy = pb.BackupPolicy.FromString(row["body"])
                groups = self.get_groups(policy.protection_group_ids)
                groups[group_id] = group
                check(policy, groups)
            self.db.table("protection_groups").update(
                group_id,
                {"name": group.name, "kind": group.kind, "body": group.SerializeToString()},
            )
            return group

    def delete_group(self, group_id: str) -> None:
        with self.db.atomic():
            self.get_group(group_id)
            users = [
                row["policy_id"]
                for row in self.db.query(
                    "select policy_id from policy_groups where group_id = ?"
                    " order by policy_id limit 5",
                    [group_id],
                )
            ]
            if users:
                raise FailedPrecondition(
                    f"protection group {group_id!r} is used by policies {', '.join(users)}; "
                    "remove it from them first"
                )
            self.db.execute("delete from protection_groups where id = ?", [group_id])

    # Policies

    def _write_policy_groups(self, policy: pb.BackupPolicy) -> None:
        self.db.execute("delete from policy_groups where policy_id = ?", [policy.id])
        self.db.table("policy_groups").insert_all(
            {"policy_id": policy.id, "group_id": group_id}
            for group_id in policy.protection_group_ids
        )

    def insert_policy(self, policy: pb.BackupPolicy, check: PolicyCheck) -> None:
        with self.db.atomic():
            check(policy, self.get_groups(policy.protection_group_ids))
            try:
                self.db.table("policies").insert(rows.policy_row(policy))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"policy {policy.id!r} already exists") from None
            self._write_policy_groups(policy)

    def update_policy(
        self, policy_id: str, change: PolicyChange, check: PolicyCheck
    ) -> pb.BackupPolicy:
        with self.db.atomic():
            policy = change(self.get_policy(policy_id))
            check(policy, self.get_groups(policy.protection_group_ids))
            self.db.table("policies").update(policy_id, rows.policy_row(policy))
            self._write_policy_groups(policy)
            return policy

    def get_policy(self, policy_id: str) -> pb.BackupPolicy:
        for row in self.db.query("select body from policies where id = ?", [policy_id]):
            return pb.BackupPolicy.FromString(row["body"])
        raise NotFound(f"policy {policy_id!r} not found")

    def get_policy_and_groups(
        self, policy_id: str
    ) -> tuple[pb.BackupPolicy, dict[str, pb.ProtectionGroup]]:
        with self.db.atomic():
            policy = self.get_policy(policy_id)
            return policy, self.get_groups(policy.protection_group_ids)

    def list_policies(self, after_id: str, limit: int) -> list[pb.BackupPolicy]:
        rows = self.db.query(
            "select body from policies where id > ? order by id limit ?", [after_id, limit]
        )
        return [pb.BackupPolicy.FromString(row["body"]) for row in rows]

    def delete_policy(self, policy_id: str) -> None:
        with self.db.atomic():
            if self.db.execute("delete from policies where id = ?", [policy_id]).rowcount == 0:
                raise NotFound(f"policy {policy_id!r} not found")
            self.db.execute("delete from policy_groups where policy_id = ?", [policy_id])

    def policy_exists_or_had_sessions(self, policy_id: str) -> bool:
        row = self.db.execute(
            "select exists(select 1 from policies where id = ?)"
            " or exists(select 1 from sessions where policy_id = ?)",
            [policy_id, policy_id],
        ).fetchone()
        return bool(row[0])

    # Sessions

    def insert_session(self, session: pb.PolicySession, owner: str = "") -> None:
        with self.db.atomic():
            try:
                inserted = self.db.table("sessions").insert(rows.session_row(session, owner))
                seq = int(inserted.last_rowid or 0)
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"session {session.id!r} already exists") from None
            self.db.conn.executemany(
                f"insert into computer_results (session_seq, position, {RESULT_COLUMNS})"
                f" values ({', '.join('?' * (2 + len(RESULT_FIELDS)))})",
                ((seq, *row) for row in rows.result_rows(session)),
            )

    def _seq(self, session_id: str) -> int:
        row = self.db.execute("select seq from sessions where id = ?", [session_id]).fetchone()
        if row is None:
            raise NotFound(f"session {session_id!r} not found")
        return int(row[0])

    def save_progress(self, progress: Progress) -> None:
        with self.db.atomic():
            seq = self._seq(progress.session_id)
            self.db.conn.executemany(
                f"update computer_results set {' = ?, '.join(CHANGE_FIELDS)} = ?"
                " where session_seq = ? and position = ?",
                ((*rows.change_row(c), seq, c.position) for c in progress.results),
            )
            self.db.table("sessions").update(seq, rows.progress_header(progress))
            apply_job_ends(self.db, progress.job_ends)

    def save_shared_progress(self, progress: Progress) -> tuple[Correction | None, StoredOutcome]:
        """As PostgreSQL's (one server has no shared session, but the suite runs both)."""
        with self.db.atomic():
            before = rows.outcome_seen(self.get_session_header(progress.session_id), progress)
            self.save_progress(progress)
            correction = None
            if before is not None:
                correction = self._recount_outcome(progress.session_id, before)
            return rows.outcome_stored(progress, before, correction)

    def correct_followed(
        self,
        session_id: str,
        changes: Sequence[ResultChange],
        job_ends: Sequence[JobEnd],
        done: Sequence[int],
    ) -> Correction | None:
        with self.db.atomic():
            before = self.get_session_header(session_id)
            self.save_followed(session_id, changes, job_ends, done)
            if not is_final(before.outcome):
                return None
            return self._recount_outcome(session_id, before)

    def _recount_outcome(self, session_id: str, before: pb.PolicySession) -> Correction | None:
        final, correction = recounted(self.get_session(session_id), before)
        self.db.table("sessions").update(self._seq(session_id), rows.recount_columns(final))
        return correction

    def _session_from_row(self, row: dict[str, object], with_results: bool) -> pb.PolicySession:
        session = rows.session_from_row(row)
        if with_results:
            cursor = self.db.execute(
                f"select {RESULT_COLUMNS} from computer_results"
                " where session_seq = ? order by position",
                [row["seq"]],
            )
            rows.add_results(session, cursor)
        return session

    def get_session(self, session_id: str, with_results: bool = True) -> pb.PolicySession:
        for row in self.db.query("select * from sessions where id = ?", [session_id]):
            return self._session_from_row(row, with_results)
        raise NotFound(f"session {session_id!r} not found")

    def get_session_header(self, session_id: str) -> pb.PolicySession:
        return self.get_session(session_id, with_results=False)

    def header_and_delivered(
        self, session_id: str, positions: Sequence[int]
    ) -> tuple[pb.PolicySession, list[ResultChange]]:
        # One trip to the storage thread; the header first, as on PostgreSQL.
        return self.get_session_header(session_id), self.delivered_results(session_id, positions)

    def list_sessions(
        self, policy_id: str, before: int, limit: int, with_results: bool
    ) -> list[tuple[int, pb.PolicySession]]:
        """Newest first, those older than `before` (0 = from the newest); the cursor is
        the row's sequence number."""
        where = ["seq < ?"] if before else []
        params: list[object] = [before] if before else []
        if policy_id:
            where.append("policy_id = ?")
            params.append(policy_id)
        clause = f"where {' and '.join(where)}" if where else ""
        found = self.db.query(
            f"select * from sessions {clause} order by seq desc limit ?", [*params, limit]
        )
        return [(int(row["seq"]), self._session_from_row(row, with_results)) for row in found]

    def last_session_start(self, policy_id: str, trigger: int) -> int | None:
        row = self.db.execute(
            "select start_ns from sessions where policy_id = ? and trigger = ?"
            " order by seq desc limit 1",
            [policy_id, trigger],
        ).fetchone()
        return None if row is None else int(row[0])

    def list_followed_sessions(self) -> list[pb.PolicySession]:
        """Sessions whose outcome is still RUNNING, with their results, oldest first."""
        found = self.db.query(
            "select * from sessions where outcome = ? order by seq", [pb.SESSION_STATE_RUNNING]
        )
        return [self._session_from_row(row, with_results=True) for row in found]

    def list_computer_statuses(
        self, policy_id: str, after: tuple[str, str], limit: int
    ) -> list[pb.ComputerStatus]:
        return list_statuses(self.db, policy_id, after, limit)

    def fail_interrupted_sessions(self, replica_id: str = "") -> list[str]:
        """Every RUNNING session but `replica_id`'s: one server uses a file, so any other
        owner has stopped, whatever its lease said."""
        with self.db.atomic():
            running = list(
                self.db.query(
                    "select seq, id, warnings, start_ns, end_ns from sessions"
                    " where state = ? and owner is not nullif(?, '')",
                    [pb.SESSION_STATE_RUNNING, replica_id],
                )
            )
            for row in running:
                self.db.table("sessions").update(
                    row["seq"],
                    {
                        "state": pb.SESSION_STATE_FAILED,
                        "end_ns": row["end_ns"] or row["start_ns"],
                        "warnings": rows.interrupted_warnings(row["warnings"]),
                    },
                )
                self.db.execute(
                    "update computer_results set detail = ? where session_seq = ? and delivery = ?",
                    [OUTCOME_UNKNOWN, row["seq"], pb.DELIVERY_PENDING],
                )
        return [row["id"] for row in running]

    def claim_followed_sessions(self, replica_id: str) -> list[pb.PolicySession]:
        """Every delivered session whose outcome is RUNNING but `replica_id`'s: one server
        uses a file, so whatever another owner left is this one's to follow."""
        with self.db.atomic():
            where = "outcome = ? and state != ? and owner is not ?"
            params = [pb.SESSION_STATE_RUNNING, pb.SESSION_STATE_RUNNING, replica_id]
            found = list(
                self.db.query(f"select * from sessions where {where} order by seq", params)
            )
            self.db.execute(f"update sessions set owner = ? where {where}", [replica_id, *params])
            claimed = [self._session_from_row(row, with_results=True) for row in found]
        return claimed

    # Replicas: kept as on PostgreSQL (one schema), though a file has one server.

    def renew_lease(self, replica_id: str, address: str, lease_seconds: float) -> None:
        expires_ns = time.time_ns() + int(lease_seconds * 1e9)
        self.db.table("replicas").upsert(
            {"id": replica_id, "address": address, "expires_ns": expires_ns}, pk="id"
        )

    def end_lease(self, replica_id: str) -> None:
        self.db.execute("delete from replicas where id = ?", [replica_id])

    def live_replicas(self) -> list[str]:
        found = self.db.execute(
            "select id from replicas where expires_ns > ? order by id", [time.time_ns()]
        )
        return [row[0] for row in found]

"""Computer shares in the SQLite file: the same rows as PostgreSQL's, for one server.

One server uses a SQLite file, so every computer is its own (`share_members` is the
caller alone) and there is never a dead replica's share to claim; the rest is the same
SQL as `postgres_shares.py`, so the conformance suite runs it on both.
"""

from collections.abc import Mapping, Sequence

import sqlite_utils

from backup.errors import NotFound
from backup.v1 import resources_pb2 as pb

from ..sessions import ResultChange
from . import rows
from .rows import CHANGE_FIELDS
from .share_rows import by_key, changes_from_rows, earlier_starts_query


class ShareFile:
    """The share methods of `SqliteFile`, on its database."""

    db: sqlite_utils.Database

    def _share_seq(self, session_id: str) -> int:
        row = self.db.execute("select seq from sessions where id = ?", [session_id]).fetchone()
        if row is None:
            raise NotFound(f"session {session_id!r} not found")
        return int(row[0])

    def assign_shares(self, session_id: str, shares: Mapping[str, Sequence[int]]) -> None:
        with self.db.atomic():
            seq = self._share_seq(session_id)
            self.db.conn.executemany(
                "update computer_results set share = ? where session_seq = ? and position = ?",
                (
                    (replica, seq, position)
                    for replica, positions in shares.items()
                    for position in positions
                ),
            )

    def pending_shares(self, session_id: str) -> dict[str, list[int]]:
        found = self.db.execute(
            "select share, position from computer_results where session_seq = ?"
            " and delivery = ? order by position",
            [self._share_seq(session_id), pb.DELIVERY_PENDING],
        )
        return by_key(found)

    def assigned_shares(self, replica_id: str) -> dict[str, list[int]]:
        found = self.db.execute(
            "select s.id, r.position from computer_results r"
            " join sessions s on s.seq = r.session_seq"
            " where r.share = ? and r.delivery = ? and s.state = ? order by s.id, r.position",
            [replica_id, pb.DELIVERY_PENDING, pb.SESSION_STATE_RUNNING],
        )
        return by_key(found)

    def save_share(self, session_id: str, changes: Sequence[ResultChange]) -> None:
        with self.db.atomic():
            seq = self._share_seq(session_id)
            self.db.conn.executemany(
                f"update computer_results set {' = ?, '.join(CHANGE_FIELDS)} = ?"
                " where session_seq = ? and position = ?",
                ((*rows.change_row(c), seq, c.position) for c in changes),
            )

    def delivered_results(self, session_id: str, positions: Sequence[int]) -> list[ResultChange]:
        seq = self._share_seq(session_id)
        found = []
        # In slices: SQLite limits the variables of one statement.
        for start in range(0, len(positions), 500):
            chunk = list(positions[start : start + 500])
            found += self.db.execute(
                f"select position, {', '.join(CHANGE_FIELDS)} from computer_results"
                f" where session_seq = ? and delivery != ?"
                f" and position in ({', '.join('?' * len(chunk))})",
                [seq, pb.DELIVERY_PENDING, *chunk],
            ).fetchall()
        return changes_from_rows(sorted(found))

    def pending_earlier_starts(self, session_id: str) -> list[tuple[str, int, str]]:
        seq = self._share_seq(session_id)
        sql, parameters = earlier_starts_query("?")
        found = self.db.execute(sql, [seq, seq, *parameters])
        return [(str(start), int(position), str(address)) for start, position, address in found]

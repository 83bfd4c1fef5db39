"""Followed shares in the SQLite file: the same rows as PostgreSQL's, for one server.

One server uses a SQLite file, so no computer is another replica's (`shared_positions`
is empty) and there is never a dead replica's followed share to claim; the rest is the
same SQL as `postgres_follows.py`, so the conformance suite runs it on both.
"""

from collections.abc import Sequence

from ..sessions import JobEnd, ResultChange
from . import rows
from .rows import CHANGE_FIELDS
from .share_rows import changes_from_rows
from .sqlite_shares import ShareFile
from .statuses import apply_job_ends

# SQLite limits the variables of one statement: positions are read in slices.
SLICE = 500


class FollowFile(ShareFile):
    """The followed-share (and share) methods of `SqliteFile`, on its database."""

    def shared_positions(self, session_id: str) -> list[int]:
        found = self.db.execute(
            "select position from computer_results where session_seq = ? and share != ''"
            " order by position",
            [self._share_seq(session_id)],
        )
        return [int(position) for (position,) in found]

    def followed_results(
        self, session_id: str, positions: Sequence[int]
    ) -> list[tuple[ResultChange, bool]]:
        seq = self._share_seq(session_id)
        found: list[tuple[object, ...]] = []
        for start in range(0, len(positions), SLICE):
            chunk = list(positions[start : start + SLICE])
            found += self.db.execute(
                f"select position, {', '.join(CHANGE_FIELDS)}, follow_done from computer_results"
                f" where session_seq = ? and position in ({', '.join('?' * len(chunk))})",
                [seq, *chunk],
            ).fetchall()
        found.sort(key=lambda row: int(str(row[0])))
        changes = changes_from_rows(row[:-1] for row in found)
        return [(change, bool(row[-1])) for change, row in zip(changes, found, strict=True)]

    def save_followed(
        self,
        session_id: str,
        changes: Sequence[ResultChange],
        job_ends: Sequence[JobEnd],
        done: Sequence[int],
    ) -> None:
        with self.db.atomic():
            seq = self._share_seq(session_id)
            self.db.conn.executemany(
                f"update computer_results set {' = ?, '.join(CHANGE_FIELDS)} = ?"
                " where session_seq = ? and position = ?",
                ((*rows.change_row(c), seq, c.position) for c in changes),
            )
            apply_job_ends(self.db, job_ends)
            self.db.conn.executemany(
                "update computer_results set follow_done = 1"
                " where session_seq = ? and position = ?",
                ((seq, position) for position in done),
            )

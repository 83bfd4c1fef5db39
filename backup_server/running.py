"""The sessions this process is running now, shared by the runner, the queries and shutdown."""

import asyncio
from collections.abc import Callable

from backup.v1 import resources_pb2 as pb

from .fanout import FanOut
from .sessions import LiveSession


class RunningSessions:
    """What is in flight: live sessions by id, each policy's running starts, the tasks."""

    def __init__(self) -> None:
        # A session is here from before its first await until its end is stored, so a
        # query never finds it stored but not live, nor stored older than it was told.
        self.live: dict[str, LiveSession] = {}
        # The fan-outs of commands that register as starts, by policy: a stop follows them.
        self.starts: dict[str, set[FanOut]] = {}
        self.tasks: set[asyncio.Task[pb.PolicySession] | asyncio.Task[None]] = set()

    def held(self) -> "Callable[[str], LiveSession | None]":
        """For a read of stored sessions: call before its first await; the lookup it
        returns finds a session live now, or live when the read began (it left memory
        during the read, after its end was stored, which the read may have missed) unless
        this replica stood down from it then (fenced: the stored session is newer)."""
        before = dict(self.live)

        def lookup(session_id: str) -> LiveSession | None:
            live = self.live.get(session_id) or before.get(session_id)
            return None if live is None or live.stood_down else live

        return lookup

    def keep(self, task: "asyncio.Task[pb.PolicySession] | asyncio.Task[None]") -> None:
        """Holds `task` until it ends, so shutdown can wait for it."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def add_start(self, policy_id: str, fanout: FanOut) -> None:
        self.starts.setdefault(policy_id, set()).add(fanout)

    def remove_start(self, policy_id: str, fanout: FanOut) -> None:
        starts = self.starts.get(policy_id, set())
        starts.discard(fanout)
        if not starts:
            self.starts.pop(policy_id, None)

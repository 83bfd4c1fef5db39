"""Sends one command to every targeted computer at once and records each delivery.

The fan-out reaches agents only through `AgentTransport`, one method that sends an
already-serialized request to an address with a deadline (and one that says whether this
process can hold connections to that many computers), so tests and the benchmark can hand
it any transport while production uses grpc.aio channels (`backup_server.transport`).
What it sends is a `commands.Command`.
"""

import asyncio
import logging
import time
from collections.abc import Collection, Iterator, Sequence
from typing import Protocol

from backup.errors import bounded
from backup.v1 import resources_pb2 as pb
from backup.waits import finished_within

from .commands import Command
from .sessions import LiveSession

log = logging.getLogger("backup_server.fanout")

# Codes that mean the command never reached the agent (no answer, or none in time): such a
# computer is "not received", and a retry may help; any other code is an answer, "rejected".
# The server never cancels a call on the wire (a stop cancels only queued commands), so a
# CANCELLED is one it did not ask for: grpc-core on an overloaded agent drops calls past
# its pending limit with it before any handler runs, and proxies do the same.
NOT_RECEIVED_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"})


class AgentCallError(Exception):
    """An agent call ended with a gRPC status other than OK."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class AgentTransport(Protocol):
    """How the fan-out reaches an agent."""

    async def call(self, address: str, method: str, request: bytes, deadline: float) -> bytes:
        """Sends `request` to AgentControl.`method` at `address`; returns the reply's bytes.

        `deadline` counts from when the connection to the agent is ready: a transport that
        must connect first bounds connecting by its own limit (GrpcAgentTransport: a bounded
        number of handshakes at once, `backup_server.handshakes`), so a command never spends
        its deadline waiting behind other computers' handshakes.
        Raises AgentCallError with the status code's name when the call is not OK.
        """
        ...

    async def close(self) -> None:
        """Releases connections; called once at shutdown."""
        ...

    async def warm(self, addresses: Collection[str], connect_seconds: float) -> int:
        """Connects ahead of the first session to the addresses (a bounded number of
        handshakes at once), giving up on each after `connect_seconds`; returns how many are
        connected. A transport with nothing to warm inherits this one, which does
        nothing."""
        return 0

    def check_capacity(self, addresses: Collection[str]) -> None:
        """Raises FailedPrecondition when this process cannot reach that many agents at
        once; a transport that subclasses this protocol and has no limit inherits this
        one, which accepts any number."""
        return None


class Followed(Protocol):
    """What a fan-out's command to a computer waits for first: an earlier fan-out's
    command to it (`FanOut`), or an earlier start's row elsewhere (`stop_order`)."""

    async def finished_with(self, address: str) -> None:
        """Returns once nothing earlier is left to end for `address`."""
        ...


class FanOut:
    """One session's commands in flight: at most `limit` at once, the rest queued."""

    def __init__(
        self,
        live: LiveSession,
        transport: AgentTransport,
        command: Command,
        deadline: float,
        limit: int,
        follow: Sequence[Followed] = (),
    ) -> None:
        self.live = live
        # Earlier fan-outs of the same policy (a stop follows a running start): a command
        # to a computer waits until their command to it, already on the wire, has ended;
        # with replicas, also until the rows of starts sent elsewhere have (stop_order).
        self._follow = follow
        self._on_wire: set[str] = set()
        self._ended: dict[str, asyncio.Future[None]] = {}
        self._transport = transport
        self.command = command
        self._deadline = deadline
        self._limit = limit
        self._first_wave_ends = 0.0
        self._workers: list[asyncio.Task[None]] = []
        self._queue: Iterator[int] = iter(
            [
                position
                for position, result in enumerate(live.session.computer_results)
                if result.delivery == pb.DELIVERY_PENDING
            ]
        )

    async def run(self) -> None:
        """Delivers every queued command; returns when each has its outcome."""
        pending = self.live.session.statistics.pending
        self._first_wave_ends = time.monotonic() + self._deadline
        async with asyncio.TaskGroup() as workers:
            for _ in range(min(self._limit, pending)):
                self._workers.append(workers.create_task(self._worker()))

    def stand_down(self) -> None:
        """Stops sending, recording nothing more: another replica holds the session (or
        share) now and sends what is left itself. The commands on the wire are cancelled
        too (a TaskGroup ends normally when its workers are cancelled)."""
        for _ in self._queue:
            pass
        for worker in self._workers:
            worker.cancel()

    def cancel_queued(self, reason: str) -> int:
        """Marks every command not yet sent as cancelled; returns how many."""
        count = 0
        for position in self._queue:
            self.live.record(position, pb.DELIVERY_CANCELLED, reason)
            count += 1
        return count

    async def finished_with(self, address: str) -> None:
        """Returns once this fan-out has no command on the wire to `address`."""
        if address not in self._on_wire:
            return
        ended = self._ended.get(address)
        if ended is None:
            ended = self._ended[address] = asyncio.get_running_loop().create_future()
        await asyncio.shield(ended)

    async def _worker(self) -> None:
        # The first wave is sent "at once", so its deadline runs from when sending began,
        # not from each call: one thread needs ~0.2 s to put 5,000 calls on the wire, and
        # per-call deadlines made a hung computer at the end of the list cost D + 0.2 s.
        # Never less than half the deadline, however long sending took; a command that
        # waited behind the limit gets the whole deadline once it leaves the queue.
        deadline = max(self._first_wave_ends - time.monotonic(), self._deadline / 2)
        for position in self._queue:
            await self._deliver(position, deadline)
            deadline = self._deadline

    async def _deliver(self, position: int, deadline: float) -> None:
        address = self.live.session.computer_results[position].computer.address
        for earlier in self._follow:
            await earlier.finished_with(address)
        self._on_wire.add(address)
        try:
            await self._send(position, deadline)
        finally:
            self._on_wire.discard(address)
            ended = self._ended.pop(address, None)
            if ended is not None:
                ended.set_result(None)

    async def _send(self, position: int, deadline: float) -> None:
        computer = self.live.session.computer_results[position].computer
        started = time.perf_counter_ns()
        try:
            reply = await self._transport.call(
                computer.address, self.command.method, self.command.request, deadline
            )
        except AgentCallError as error:
            latency = time.perf_counter_ns() - started
            detail = bounded(f"{error.code}: {error.message}")  # an agent is not trusted
            if error.code in NOT_RECEIVED_CODES:
                self.live.record(position, pb.DELIVERY_NOT_RECEIVED, detail, latency)
                log.warning(
                    "not received: computer=%s address=%s code=%s session=%s",
                    computer.name,
                    computer.address,
                    error.code,
                    self.live.session.id,
                    extra={
                        "session_id": self.live.session.id,
                        "policy_id": self.live.session.policy_id,
                        "computer": computer.name,
                        "address": computer.address,
                        "code": error.code,
                    },
                )
            else:
                self.live.record(position, pb.DELIVERY_REJECTED, detail, latency)
            return
        latency = time.perf_counter_ns() - started
        job, note = self.command.read_reply(reply)
        self.live.record(position, pb.DELIVERY_RECEIVED, f"OK: {note}", latency, job=job)


class ShareFanOut(FanOut):
    """A fan-out over some of a session's computers only: this replica's share; one taken
    over from a dead replica (`warm`) first connects to them, bounded by the deadline, so
    their commands do not spend it on handshakes."""

    def __init__(
        self,
        live: LiveSession,
        transport: AgentTransport,
        command: Command,
        deadline: float,
        limit: int,
        positions: Sequence[int],
        follow: Sequence[Followed] = (),
        warm: bool = False,
    ) -> None:
        super().__init__(live, transport, command, deadline, limit, follow)
        self.positions = list(positions)
        self._queue = iter(self.positions)
        self._warm = warm

    async def run(self) -> None:
        if self._warm and self.positions:
            results = self.live.session.computer_results
            addresses = [results[position].computer.address for position in self.positions]
            await finished_within(
                self._transport.warm(addresses, self._deadline / 2), self._deadline
            )
        await super().run()

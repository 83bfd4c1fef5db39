"""Bounded handshakes: a command to a computer whose channel is not connected first waits
for one of a bounded number of places to connect, so that thousands of cold computers do
not share the CPU so thinly that none of their TLS handshakes finishes in time, and the
command's deadline starts only once its channel is ready (issue 15 item 5).

A place is held until the handshake ends, or for at most `hold` seconds: a handshake still
unfinished by then is waiting for a silent peer, which costs no CPU, and must not keep the
computers behind it waiting. `hold` is four times the recent typical handshake (a moving
average of those that finished, forgotten after a second in which none did), within
HOLD_SECONDS and MAX_HOLD_SECONDS: on a machine saturated by handshakes each one takes
longer, and a shorter hold would let more start at once until none finishes in time. So
with P places the k-th computer to connect begins its handshake at most
ceil(k / P) * MAX_HOLD_SECONDS after it asked (ceil(k / P) * HOLD_SECONDS when the others
are silent).

A computer whose last handshake never finished connects without a place (its handshake
costs no CPU while it stays silent), within its deadline; once it answers it is forgotten.

How long connecting may take: until the command's own deadline, counted from when it was
sent (as when the handshake was part of the call), and never less than `connect_seconds`
from when its handshake began; a computer not ready by then is not received.
"""

import asyncio
from collections import OrderedDict
from collections.abc import Callable

import grpc

# Handshakes at once: a TLS handshake costs about 1.3 ms of CPU on each side, so 64 finish
# within a tenth of a second on two cores instead of 5,000 all finishing late.
HANDSHAKES = 64
# The least time a handshake keeps its place: several times what one takes among 64 on an
# idle machine here; HOLD_FACTOR times the typical handshake when handshakes are slower.
HOLD_SECONDS = 0.1
HOLD_FACTOR = 4.0
# What a session's wall is bounded with (docs/scaling.md), however slow handshakes are.
MAX_HOLD_SECONDS = 0.5
# The weight of each finished handshake in the typical one, and how long it is remembered.
SMOOTHING = 0.05
RECENT_SECONDS = 1.0
# Silent computers remembered, the most recent kept (the transport's channel bound).
SILENT_REMEMBERED = 20_000

# States after which waiting longer changes nothing: the call says what happened.
SETTLED = frozenset(
    {
        grpc.ChannelConnectivity.READY,
        grpc.ChannelConnectivity.TRANSIENT_FAILURE,
        grpc.ChannelConnectivity.SHUTDOWN,
    }
)


class NotConnected(Exception):
    """A channel did not become ready within its connect bound."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the connection could not be made within {seconds:.1f} s")
        self.seconds = seconds


class Handshakes:
    """The places for connecting, shared by every session of one transport."""

    def __init__(self, places: int, connect_seconds: float, hold: float = HOLD_SECONDS) -> None:
        if places < 1:
            raise ValueError(f"handshakes need at least one place, not {places!r}")
        self._places = asyncio.Semaphore(places)
        self.connect_seconds = connect_seconds
        self._least_hold = hold
        self.typical_seconds = 0.0
        self._finished_at = 0.0
        # Computers whose last handshake never finished: a powered-off computer stays off,
        # and its next handshake, costing no CPU, need not wait for a place.
        self._silent: OrderedDict[str, None] = OrderedDict()

    def hold_seconds(self, now: float) -> float:
        """How long a handshake that begins `now` keeps its place."""
        if now - self._finished_at > RECENT_SECONDS:
            self.typical_seconds = 0.0
        return min(max(self._least_hold, HOLD_FACTOR * self.typical_seconds), MAX_HOLD_SECONDS)

    async def connect(self, address: str, channel: grpc.aio.Channel, deadline: float) -> None:
        """Returns once `channel` is ready, or has failed (the call then fails at once with
        the reason); raises NotConnected past the bound. A channel already connecting (a
        warm-up or another session began it), and one to a computer that was silent last
        time, are waited for without taking a place."""
        try:
            await self._connect(address, channel, deadline)
        except NotConnected:
            self._silent[address] = None
            self._silent.move_to_end(address)
            if len(self._silent) > SILENT_REMEMBERED:
                self._silent.popitem(last=False)
            raise
        if channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY:
            self._silent.pop(address, None)

    async def _connect(self, address: str, channel: grpc.aio.Channel, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        asked = loop.time()
        until = asked + deadline
        state = channel.get_state(try_to_connect=False)
        if state in SETTLED:
            return
        if state == grpc.ChannelConnectivity.IDLE and address in self._silent:
            # Still IDLE as it answers; connecting has begun.
            state = channel.get_state(try_to_connect=True)
            await self._until_settled(channel, state, until, asked)
            return
        if state != grpc.ChannelConnectivity.IDLE:
            await self._until_settled(channel, state, until, asked)
            return
        await self._places.acquire()
        release = _Once(self._places.release)
        began = loop.time()
        timer = loop.call_later(self.hold_seconds(began), release)
        try:
            until = max(until, began + self.connect_seconds)
            state = channel.get_state(try_to_connect=True)
            await self._until_settled(channel, state, until, asked)
            self._finished_at = loop.time()
            self.typical_seconds += SMOOTHING * (self._finished_at - began - self.typical_seconds)
        finally:
            timer.cancel()
            release()

    @staticmethod
    async def _until_settled(
        channel: grpc.aio.Channel,
        state: grpc.ChannelConnectivity,
        until: float,
        asked: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        while state not in SETTLED:
            remaining = until - loop.time()
            if remaining <= 0:
                raise NotConnected(until - asked)
            # Not wait_for: it waits for the cancelled watch to end, and the bound is ours.
            watch = asyncio.ensure_future(channel.wait_for_state_change(state))
            watch.add_done_callback(_retrieve)
            done, _ = await asyncio.wait({watch}, timeout=remaining)
            if not done:
                watch.cancel()
                raise NotConnected(until - asked)
            watch.result()  # a closed channel's UsageError, for the caller
            state = channel.get_state(try_to_connect=False)


def _retrieve(watch: "asyncio.Future[None]") -> None:
    """Marks a watch's exception as seen: a watch given up on may end with one later."""
    if not watch.cancelled():
        watch.exception()


class _Once:
    """Calls `action` the first time it is called, and never again."""

    def __init__(self, action: Callable[[], None]) -> None:
        self._action = action
        self._done = False

    def __call__(self) -> None:
        if not self._done:
            self._done = True
            self._action()

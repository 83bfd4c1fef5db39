"""The production AgentTransport: one long-lived grpc.aio channel per agent address."""

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any

import grpc

from backup import defaults, limits
from backup.errors import FailedPrecondition
from backup.security.tls import explain_handshake_failure
from backup.serving import CLIENT_OPTIONS
from backup.validation import grpc_target

from .fanout import AgentCallError, AgentTransport
from .handshakes import HANDSHAKES, Handshakes, NotConnected

log = logging.getLogger("backup_server.transport")

SERVICE = "/backup.v1.AgentControl/"
# Connections opened at once when warming up: a TLS handshake costs about 1.3 ms of CPU,
# so thousands at once would starve the event loop that serves operators meanwhile.
WARM_HANDSHAKES = 64


def channel_options(deadline: float) -> Sequence[tuple[str, Any]]:
    """Options for every agent channel.

    grpc-core takes its connect timeout from min_reconnect_backoff: keeping it past the
    deadline means a computer that accepts TCP and never answers is judged by the
    operator's deadline (DEADLINE_EXCEEDED), not by a shorter internal timer. Backoff
    hardly matters: a channel whose connection failed is replaced at its next use.
    """
    connect_ms = int(deadline * 1000) + 1000
    return (
        *CLIENT_OPTIONS,
        ("grpc.min_reconnect_backoff_ms", connect_ms),
        ("grpc.initial_reconnect_backoff_ms", connect_ms),
        ("grpc.max_reconnect_backoff_ms", connect_ms),
    )


def _identity(data: bytes) -> bytes:
    return data


class _Agent:
    """A channel and its callables, one per method, made once."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.methods: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}

    def method(self, name: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
        callable_ = self.methods.get(name)
        if callable_ is None:
            # Requests arrive serialized (once per session) and replies leave as bytes.
            callable_ = self.channel.unary_unary(
                SERVICE + name, request_serializer=_identity, response_deserializer=_identity
            )
            self.methods[name] = callable_
        return callable_


class GrpcAgentTransport(AgentTransport):
    """Keeps a bounded LRU of channels; a channel whose connection failed is dropped.

    With `credentials` (the server's TLS identity) every channel is TLS: the agent's
    certificate must come from the CA and name the computer's address as given.
    A command to a computer not yet connected connects first, at most `handshakes` at
    once, for at least `connect_seconds` (half the deadline unless given), and its deadline
    starts once the channel is ready (`backup_server.handshakes`).
    """

    def __init__(
        self,
        deadline: float = defaults.AGENT_DEADLINE_SECONDS,
        max_channels: int = 20_000,
        close_grace: float = 10.0,
        credentials: grpc.ChannelCredentials | None = None,
        handshakes: int = HANDSHAKES,
        connect_seconds: float | None = None,
    ) -> None:
        self._options = channel_options(deadline)
        self._deadline = deadline
        # Half a deadline, as the fan-out's first wave never gets less: a computer that
        # waited for its place still has time for its handshake, and the silent ones of
        # a session end with its deadline as long as their places came within half of it.
        self._handshakes = Handshakes(
            handshakes, deadline / 2 if connect_seconds is None else connect_seconds
        )
        self._credentials = credentials
        self._agents: OrderedDict[str, _Agent] = OrderedDict()
        self._max_channels = max_channels
        self._close_grace = close_grace
        self._closing: set[asyncio.Task[None]] = set()

    def _agent(self, address: str) -> _Agent:
        agent = self._agents.get(address)
        if agent is not None:
            self._agents.move_to_end(address)
            return agent
        target = grpc_target(address)  # never a scheme taken from the address (unix:...)
        if self._credentials is None:
            channel = grpc.aio.insecure_channel(target, options=self._options)
        else:
            channel = grpc.aio.secure_channel(target, self._credentials, options=self._options)
        agent = _Agent(channel)
        self._agents[address] = agent
        if len(self._agents) > self._max_channels:
            _, oldest = self._agents.popitem(last=False)
            self._close_later(oldest.channel)
        return agent

    def _close_later(self, channel: grpc.aio.Channel) -> None:
        task = asyncio.ensure_future(channel.close(grace=self._close_grace))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @property
    def channel_count(self) -> int:
        return len(self._agents)

    async def warm(self, addresses: Collection[str], connect_seconds: float) -> int:
        """Opens a channel to each address not yet connected, at most WARM_HANDSHAKES
        at once; one that is not ready within `connect_seconds` is dropped, so a session's
        command to it connects afresh."""
        gate = asyncio.Semaphore(WARM_HANDSHAKES)

        async def connect(address: str) -> bool:
            async with gate:
                agent = self._agent(address)
                try:
                    # Through the sessions' places too, so both together stay bounded.
                    await self._handshakes.connect(address, agent.channel, connect_seconds)
                except grpc.aio.UsageError:
                    # A session's call found it down meanwhile and closed it: not warm.
                    return False
                except NotConnected:
                    pass
                if agent.channel.get_state() == grpc.ChannelConnectivity.READY:
                    return True
                self._forget(address, agent)
                return False

        return sum(await asyncio.gather(*(connect(address) for address in set(addresses))))

    def check_capacity(self, addresses: Collection[str]) -> None:
        """Refuses a session this process cannot hold one connection per computer for."""
        if len(addresses) > self._max_channels:
            raise FailedPrecondition(
                f"the policy reaches {len(addresses)} computers but this server keeps at most "
                f"{self._max_channels} agent connections; split the computers across policies"
            )
        new = sum(1 for address in addresses if address not in self._agents)
        room = limits.descriptor_room()
        if new > room:
            raise FailedPrecondition(
                f"the policy needs {new} new agent connections but this server may open only "
                f"{max(room, 0)} more files (open-file limit {limits.open_file_limit()}, "
                f"{limits.RESERVED_DESCRIPTORS} kept in reserve); raise the server's limit "
                "(ulimit -n, LimitNOFILE) or split the computers across server replicas"
            )

    async def call(self, address: str, method: str, request: bytes, deadline: float) -> bytes:
        if not deadline > 0:
            raise ValueError(f"a call to an agent needs a positive deadline, not {deadline!r}")
        agent = self._agent(address)
        try:
            agent = await self._ready(address, agent, deadline)
            # The deadline counts from here: the handshake queue has not spent any of it.
            reply: bytes = await agent.method(method)(request, timeout=deadline)
        except NotConnected as late:
            self._forget(address, agent)
            # DEADLINE_EXCEEDED, as when the handshake was part of the call: a computer
            # that accepts TCP and never answers is reported the same either way.
            raise AgentCallError("DEADLINE_EXCEEDED", str(late)) from None
        except grpc.aio.UsageError:
            # Another session's call found the computer down and closed this channel.
            raise AgentCallError(
                "UNAVAILABLE", "the connection was closed before the command was sent"
            ) from None
        except grpc.aio.AioRpcError as error:
            message = error.details() or ""
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                self._forget(address, agent)
                if self._credentials is not None:
                    message = explain_handshake_failure(message)
            elif (
                error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                and agent.channel.get_state() != grpc.ChannelConnectivity.READY
            ):
                # Never connected (it accepted TCP and went quiet): left alone, the channel
                # would sit in connect backoff and fail the next session's call unsent.
                self._forget(address, agent)
            raise AgentCallError(error.code().name, message) from None
        return reply

    async def _ready(self, address: str, agent: _Agent, deadline: float) -> _Agent:
        """The agent's channel once ready (or failed, for the call to say why).

        A channel closed while this command waited for it (a warm-up or a reconciliation
        gave up on it, or another session's call found the computer down) is replaced
        once, with what is left of the deadline.
        """
        loop = asyncio.get_running_loop()
        sent = loop.time()
        for _ in range(2):
            if agent.channel.get_state() == grpc.ChannelConnectivity.READY:
                return agent
            # The fresh channel has what is left of the deadline, not another one.
            left = deadline - (loop.time() - sent)
            if left <= 0:
                raise NotConnected(deadline)
            try:
                await self._handshakes.connect(address, agent.channel, left)
            except grpc.aio.UsageError:
                pass
            except NotConnected:
                raise NotConnected(loop.time() - sent) from None
            if agent.channel.get_state() != grpc.ChannelConnectivity.SHUTDOWN:
                return agent
            agent = self._agent(address)
        return agent

    async def stream(self, address: str, method: str, request: bytes) -> AsyncIterator[bytes]:
        """A server-streaming call without a deadline (following a job lasts as long as
        the job); the channel's keepalive breaks it if the agent vanishes. A channel not
        connected yet connects first, inside the handshake places as a command does."""
        agent = self._agent(address)
        try:
            agent = await self._ready(address, agent, self._deadline)
        except NotConnected as late:
            self._forget(address, agent)
            raise AgentCallError("UNAVAILABLE", str(late)) from None
        call = agent.channel.unary_stream(
            SERVICE + method, request_serializer=_identity, response_deserializer=_identity
        )(request)
        try:
            async for reply in call:
                yield reply
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                self._forget(address, agent)
            raise AgentCallError(error.code().name, error.details() or "") from None
        finally:
            call.cancel()

    def _forget(self, address: str, agent: _Agent) -> None:
        """Drops a channel that could not connect, so the next session connects afresh.

        A failed channel otherwise answers every call at once with its last error until
        its reconnect backoff ends, and an agent that came back would still look down.
        """
        if self._agents.get(address) is agent:
            del self._agents[address]
            self._close_later(agent.channel)

    async def close(self) -> None:
        """Closes every channel (calls still in flight are cancelled)."""
        channels = [agent.channel for agent in self._agents.values()]
        self._agents.clear()
        await asyncio.gather(*(channel.close(None) for channel in channels), *self._closing)

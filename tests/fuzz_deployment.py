"""The fuzz test's target, in a process of its own: a backup server whose fan-out dials
nothing and an agent confined to a temporary root. Prints their addresses as one JSON
line, then serves until its standard input closes."""

import asyncio
import json
import logging
import sys
from pathlib import Path

from agent_stub.app import AgentConfig, AgentServer
from backup import serving
from backup_server.app import BackupServer, ServerConfig
from backup_server.fanout import AgentCallError


class NoAgents:
    """Every computer is unreachable: fuzzed addresses must never send traffic anywhere."""

    async def call(self, address: str, method: str, request: bytes, deadline: float) -> bytes:
        raise AgentCallError("UNAVAILABLE", "the fuzz test dials no agent")

    async def close(self) -> None:
        return None


async def main(root: Path) -> None:
    serving.configure_logging("WARNING")
    allowed = root / "allowed"
    server = BackupServer(
        ServerConfig(listen="127.0.0.1:0", db=root / "server.db", agent_deadline=1.0),
        transport=NoAgents(),
    )
    agent = AgentServer(AgentConfig("127.0.0.1:0", "fuzz", root / "agent", allow_paths=(allowed,)))
    await server.start()
    await agent.start()
    print(json.dumps({"server": server.address, "agent": agent.address}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await agent.stop()
    await server.stop()
    logging.getLogger("fuzz").warning("fuzz deployment stopped")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))

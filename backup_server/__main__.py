"""backup-server: python -m backup_server --listen HOST:PORT --db PATH|URL --agent-deadline S"""

import argparse
import asyncio
import math
from pathlib import Path

from backup import logs, serving
from backup.security import tls

from .app import BackupServer, ServerConfig
from .replicas import DEFAULT_LEASE_SECONDS
from .storage.backends import DEFAULT_POOL_SIZE
from .storage.postgres import is_postgres_url


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    parser = argparse.ArgumentParser(
        prog="backup-server",
        description="The backup server: holds policies and starts or stops them on agents.",
    )
    parser.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT to serve on")
    parser.add_argument(
        "--db",
        default="backup-server.db",
        metavar="PATH|URL",
        help="a SQLite file (default backup-server.db), or a PostgreSQL URL"
        " postgresql://USER@HOST:PORT/DB that several server replicas share",
    )
    parser.add_argument(
        "--db-pool-size",
        type=int,
        default=DEFAULT_POOL_SIZE,
        metavar="N",
        help=f"PostgreSQL connections this server keeps (default {DEFAULT_POOL_SIZE})",
    )
    parser.add_argument(
        "--agent-deadline",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="deadline of each command sent to an agent (default 5)",
    )
    parser.add_argument(
        "--replica-lease",
        type=float,
        default=DEFAULT_LEASE_SECONDS,
        metavar="SECONDS",
        help="how soon the other replicas sweep the sessions of one that stopped answering"
        f" (default {DEFAULT_LEASE_SECONDS:g})",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=10_000,
        help="most commands one session has on the wire at once (default 10000)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long SIGTERM waits for running sessions before cancelling them",
    )
    logs.add_log_format_option(parser)
    tls.add_arguments(parser)
    parser.add_argument(
        "--api-token-file",
        type=Path,
        metavar="FILE",
        help="operators may authenticate with this bearer token (keep the file 0600)",
    )
    args = parser.parse_args(argv)
    if not math.isfinite(args.agent_deadline) or args.agent_deadline <= 0:
        parser.error("--agent-deadline must be a positive number of seconds")
    if not math.isfinite(args.replica_lease) or args.replica_lease <= 0:
        parser.error("--replica-lease must be a positive number of seconds")
    if args.db_pool_size < 1:
        parser.error("--db-pool-size must be at least 1")
    if args.max_in_flight < 1:
        parser.error("--max-in-flight must be at least 1")
    return ServerConfig(
        listen=args.listen,
        db=args.db if is_postgres_url(args.db) else Path(args.db),
        db_pool_size=args.db_pool_size,
        replica_lease=args.replica_lease,
        agent_deadline=args.agent_deadline,
        max_in_flight=args.max_in_flight,
        shutdown_grace=args.shutdown_grace,
        log_format=args.log_format,
        tls=tls.files_from(args, parser),
        api_token_file=args.api_token_file,
        insecure=args.insecure,
    )


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    serving.configure_logging(log_format=config.log_format)
    server = BackupServer(config)

    async def start() -> None:
        await server.start()
        serving.tune_garbage_collector()

    asyncio.run(serving.run_until_signalled(start, server.stop))


if __name__ == "__main__":
    main()

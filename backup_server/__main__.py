"""backup-server: python -m backup_server --listen HOST:PORT --db PATH|URL --agent-deadline S"""

import argparse
import asyncio
import math
from pathlib import Path

from backup import about, logs, metrics, serving
from backup.security import tls

from .app import BackupServer, ServerConfig
from .following import AGENT_LOST_AFTER, check_lost_after
from .notify import NOTIFY_ON
from .storage.postgres import is_postgres_url


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    parser = argparse.ArgumentParser(
        prog="backup-server",
        description="The backup server: holds policies and starts or stops them on agents.",
    )
    parser.add_argument(
        "--version", action="version", version=about.version_line("backup-server")
    )
    defaults = ServerConfig()
    parser.add_argument(
        "--listen", default=defaults.listen, help=f"HOST:PORT to serve on ({defaults.listen})"
    )
    parser.add_argument(
        "--db",
        default=str(defaults.db),
        metavar="PATH|URL",
        help=f"a SQLite file (default {defaults.db}), or a PostgreSQL URL"
        " postgresql://USER@HOST:PORT/DB that several server replicas share",
    )
    parser.add_argument(
        "--db-pool-size",
        type=int,
        default=defaults.db_pool_size,
        metavar="N",
        help=f"PostgreSQL connections this server keeps (default {defaults.db_pool_size})",
    )
    parser.add_argument(
        "--agent-deadline",
        type=float,
        default=defaults.agent_deadline,
        metavar="SECONDS",
        help=f"deadline of each command sent to an agent (default {defaults.agent_deadline:g})",
    )
    parser.add_argument(
        "--replica-lease",
        type=float,
        default=defaults.replica_lease,
        metavar="SECONDS",
        help="how soon the other replicas sweep the sessions of one that stopped answering"
        f" (default {defaults.replica_lease:g})",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=defaults.max_in_flight,
        help="most commands one session has on the wire at once "
        f"(default {defaults.max_in_flight})",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=defaults.shutdown_grace,
        metavar="SECONDS",
        help="how long SIGTERM waits for running sessions before cancelling them "
        f"(default {defaults.shutdown_grace:g})",
    )
    logs.add_log_format_option(parser)
    tls.add_arguments(parser)
    parser.add_argument(
        "--api-token-file",
        type=Path,
        metavar="FILE",
        help="operators may authenticate with this bearer token (keep the file 0600)",
    )
    parser.add_argument(
        "--agent-lost-after",
        type=float,
        default=AGENT_LOST_AFTER,
        metavar="SECONDS",
        help="a followed job whose agent is silent this long counts as unknown "
        f"(1 s to 7 days, default {AGENT_LOST_AFTER:.0f})",
    )
    metrics.add_arguments(parser)
    parser.add_argument(
        "--notify",
        action="append",
        default=[],
        metavar="URL",
        help="send a message when a session's outcome is final (Apprise URL: mailto://, "
        "json://; repeatable)",
    )
    parser.add_argument(
        "--notify-on",
        choices=NOTIFY_ON,
        default="warning",
        help="which outcomes are sent: failure, warning (and failure; the default) or always",
    )
    args = parser.parse_args(argv)
    try:
        check_lost_after(args.agent_lost_after)
    except ValueError as error:
        parser.error(str(error))
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
        agent_lost_after=args.agent_lost_after,
        metrics_listen=args.metrics_listen,
        notify=tuple(args.notify),
        notify_on=args.notify_on,
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

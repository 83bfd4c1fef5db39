"""backup-server: python -m backup_server --listen HOST:PORT --db PATH --agent-deadline SECONDS"""

import argparse
import asyncio
import math
from pathlib import Path

from backup import logs, metrics, serving
from backup.security import tls

from .app import BackupServer, ServerConfig
from .following import AGENT_LOST_AFTER, check_lost_after
from .notify import NOTIFY_ON


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    parser = argparse.ArgumentParser(
        prog="backup-server",
        description="The backup server: holds policies and starts or stops them on agents.",
    )
    parser.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT to serve on")
    parser.add_argument("--db", type=Path, default=Path("backup-server.db"), help="SQLite file")
    parser.add_argument(
        "--agent-deadline",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="deadline of each command sent to an agent (default 5)",
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
    metrics.add_arguments(parser)
    parser.add_argument(
        "--notify",
        action="append",
        default=[],
        metavar="URL",
        help="send a message when a session ends (Apprise URL: mailto://, json://; repeatable)",
    )
    parser.add_argument(
        "--notify-on",
        choices=NOTIFY_ON,
        default="warning",
        help="which outcomes are sent: failure, warning (and failure; the default) or always",
    )
    parser.add_argument(
        "--agent-lost-after",
        type=float,
        default=AGENT_LOST_AFTER,
        metavar="SECONDS",
        help="a followed job whose agent is silent this long counts as unknown "
        f"(1 s to 7 days, default {AGENT_LOST_AFTER:.0f})",
    )
    args = parser.parse_args(argv)
    try:
        check_lost_after(args.agent_lost_after)
    except ValueError as error:
        parser.error(str(error))
    if not math.isfinite(args.agent_deadline) or args.agent_deadline <= 0:
        parser.error("--agent-deadline must be a positive number of seconds")
    if args.max_in_flight < 1:
        parser.error("--max-in-flight must be at least 1")
    return ServerConfig(
        listen=args.listen,
        db=args.db,
        agent_deadline=args.agent_deadline,
        max_in_flight=args.max_in_flight,
        shutdown_grace=args.shutdown_grace,
        log_format=args.log_format,
        tls=tls.files_from(args, parser),
        api_token_file=args.api_token_file,
        insecure=args.insecure,
        metrics_listen=args.metrics_listen,
        notify=tuple(args.notify),
        notify_on=args.notify_on,
        agent_lost_after=args.agent_lost_after,
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

"""backup-agent: serve AgentControl, or act on this computer's backups.

backup-agent --listen HOST:PORT --name NAME --data-dir DIR
             [--tls-cert FILE --tls-key FILE --tls-ca FILE] [--allow-path PATH ...]
backup-agent run POLICY_ID --data-dir DIR [--wait]
backup-agent points --data-dir DIR [--policy ID]
backup-agent ls POINT_ID [PATH] --data-dir DIR
backup-agent restore POINT_ID --to TARGET --data-dir DIR [--path SUBPATH] [--dry-run] [--overwrite]
backup-agent verify --data-dir DIR [POINT_ID]
backup-agent repair --data-dir DIR [--policy ID]
backup-agent --version

Commands exit 0 when done, 1 with one line on stderr when they cannot be done, and
verify exits 3 when it finds damage (each damaged thing on its own line) and 2 when there
is nothing to verify or a repository is missing; repair exits 0 when healthy afterwards.
`run --wait` follows the job to its end (progress on stderr) and exits 0 only when it
succeeded, 3 when it failed or was stopped: usable from cron.
"""

import argparse
import asyncio
import sys
from pathlib import Path

from backup import about, logs, metrics, serving
from backup.errors import BackupError
from backup.security import tls
from backup.v1 import resources_pb2 as pb

from . import offline
from .app import MAX_CONCURRENT_RPCS, AgentConfig, AgentServer
from .engine import EngineError
from .local import LocalCommandError, run_job, wait_for_job

COMMANDS = ("run", "points", "ls", "restore", "verify", "repair")
COMMANDS_HELP = """commands (each takes --data-dir DIR; run asks the running agent on its local
socket, the others read the repositories directly, agent running or not):
  run POLICY_ID            start a policy's job now, from the policy last received
  points [--policy ID]     list restore points, newest first
  ls POINT_ID [PATH]       list the files of a restore point (at or below PATH)
  restore POINT_ID --to D  restore a point into D (--path, --dry-run, --overwrite)
  verify [POINT_ID]        re-read every chunk restore points need and check it
  repair [--policy ID]     rebuild the index from the packs, report what cannot be rebuilt

Commands exit 0 when done, 1 with one line on stderr when they cannot be done; verify
exits 3 when it finds damage and 2 when there is nothing to verify or a repository is
missing; repair exits 0 when the repository is healthy afterwards."""


def _version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=about.version_line("backup-agent"))


def serve(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="backup-agent",
        usage="%(prog)s --listen HOST:PORT --name NAME --data-dir DIR [options]\n"
        "       %(prog)s {run,points,ls,restore,verify,repair} ... --data-dir DIR",
        description="The backup agent: serves AgentControl (runs and cancels backup jobs), "
        "or acts on this computer's backups with a command.",
        epilog=COMMANDS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _version(parser)
    parser.add_argument("--listen", required=True, help="HOST:PORT to serve AgentControl on")
    parser.add_argument(
        "--name",
        required=True,
        help="this computer's name, for logs and recorded in its restore points",
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="the agent's own state")
    parser.add_argument(
        "--allow-path",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="a root that policies' sources and repositories must lie under (repeatable)",
    )
    parser.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=MAX_CONCURRENT_RPCS,
        help=f"calls served at once; more are refused (default {MAX_CONCURRENT_RPCS})",
    )
    tls.add_arguments(parser)
    logs.add_log_format_option(parser)
    metrics.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.max_concurrent_rpcs < 1:
        parser.error("--max-concurrent-rpcs must be at least 1")
    config = AgentConfig(
        args.listen,
        args.name,
        args.data_dir,
        tls=tls.files_from(args, parser),
        insecure=args.insecure,
        allow_paths=tuple(args.allow_path),
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        metrics_listen=args.metrics_listen,
    )
    serving.configure_logging(log_format=args.log_format)
    try:
        agent = AgentServer(config)
    except OSError as error:
        raise SystemExit(
            f"backup-agent: cannot use the data dir {args.data_dir}: {error.strerror}"
        ) from None
    asyncio.run(serving.run_until_signalled(agent.start, agent.stop))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backup-agent")
    _version(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="start a policy's job now, from the policy this agent last received"
    )
    run.add_argument("policy_id")
    run.add_argument("--data-dir", type=Path, required=True)
    run.add_argument(
        "--wait", action="store_true", help="follow the job; exit 0 only when it succeeded"
    )
    points = commands.add_parser("points", help="list restore points, newest first")
    points.add_argument("--data-dir", type=Path, required=True)
    points.add_argument("--policy", default="", help="only this policy's restore points")
    listing = commands.add_parser("ls", help="list the files of a restore point")
    listing.add_argument("point_id")
    listing.add_argument("path", nargs="?", default="", help="only at or below this path")
    listing.add_argument("--data-dir", type=Path, required=True)
    restore = commands.add_parser("restore", help="restore a restore point into a directory")
    restore.add_argument("point_id")
    restore.add_argument("--to", type=Path, required=True, help="the directory to restore into")
    restore.add_argument("--data-dir", type=Path, required=True)
    restore.add_argument("--path", default="", help="only this path of the restore point")
    restore.add_argument(
        "--dry-run", action="store_true", help="say what would be written, write nothing"
    )
    restore.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files already in the target (refused without it)",
    )
    verify = commands.add_parser(
        "verify", help="re-read every chunk restore points need (all, or one) and check it"
    )
    verify.add_argument("point_id", nargs="?", default="")
    verify.add_argument("--data-dir", type=Path, required=True)
    repair = commands.add_parser(
        "repair", help="rebuild each repository's index from its packs, then verify"
    )
    repair.add_argument("--data-dir", type=Path, required=True)
    repair.add_argument("--policy", default="", help="only this policy's repositories")
    return parser


def _run(policy_id: str, data_dir: Path, wait: bool) -> int:
    reply = run_job(policy_id, data_dir)
    # stdout is only the job id, so scripts can capture it; the note goes to stderr.
    print(reply.job.id, flush=True)
    if reply.already_running:
        print(f"backup-agent: policy {policy_id} was already running as this job", file=sys.stderr)
    if not wait:
        return 0
    job = wait_for_job(reply.job.id, data_dir)
    return 0 if job.state == pb.JOB_STATE_SUCCEEDED else 3


def command(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args.policy_id, args.data_dir, args.wait)
        if args.command == "points":
            return offline.points(args.data_dir, args.policy)
        if args.command == "ls":
            return offline.list_point(args.data_dir, args.point_id, args.path)
        if args.command == "restore":
            return offline.restore_point(
                args.data_dir, args.point_id, args.to, args.path, args.dry_run, args.overwrite
            )
        if args.command == "repair":
            return offline.repair_repositories(args.data_dir, args.policy)
        return offline.verify_points(args.data_dir, args.point_id)
    except (LocalCommandError, EngineError) as error:
        print(f"backup-agent: {error}", file=sys.stderr)
    except BackupError as error:
        print(f"backup-agent: {error.message}", file=sys.stderr)
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        print(f"backup-agent: {error.strerror or error}{where}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        sys.exit(command(argv))
    serve(argv)


if __name__ == "__main__":
    main()

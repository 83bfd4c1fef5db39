"""Starting and stopping policies, and reading sessions and agents' jobs."""

import click

from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb
from backup.ids import new_session_id

from . import client, follow, render
from .root import agent_address, cli, complete_ids, connection_options, examples, settings

EXIT_INTERRUPTED = 130


def _run(
    policy_id: str,
    action: pb.SessionAction,
    computer_names: tuple[str, ...] = (),
    retry_of_session_id: str = "",
) -> None:
    """Sends the start or stop, shows its progress, then the results; exits 0 or 3."""
    options = settings()
    session_id = new_session_id()
    verb = render.word(pb.SessionAction.Name(action), "SESSION_ACTION_")
    with client.backup_server(options) as stub:
        # Fails fast, before anything is sent, on a bad id, an unknown policy or no server.
        stub.GetPolicy(api.GetPolicyRequest(policy_id=policy_id), timeout=options.timeout)
        if action == pb.SESSION_ACTION_START:
            call = stub.StartPolicy.future(
                api.StartPolicyRequest(
                    policy_id=policy_id,
                    session_id=session_id,
                    computer_names=computer_names,
                    retry_of_session_id=retry_of_session_id,
                )
            )
        else:
            call = stub.StopPolicy.future(
                api.StopPolicyRequest(policy_id=policy_id, session_id=session_id)
            )
        try:
            with follow.ProgressBar(f"{verb} {policy_id}") as bar:
                if bar.shown:
                    follow.watch(stub, session_id, bar.update, call.done)
                session: pb.PolicySession = call.result()
        except KeyboardInterrupt:
            click.echo(
                f"backupctl: interrupted; session {session_id} goes on in the server: "
                f"backupctl session {session_id} --watch",
                err=True,
            )
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    _show_session(session)
    raise click.exceptions.Exit(follow.outcome_code(session))


def _show_session(session: pb.PolicySession) -> None:
    if settings().json:
        render.emit_json(session)
    else:
        render.show_session(session)


POLICY = click.argument("policy_id", metavar="POLICY", shell_complete=complete_ids("policy"))


@cli.command(
    epilog=examples(
        "backupctl start nightly",
        "backupctl start nightly -o json | jq '.statistics'",
        "backupctl start nightly || echo 'not every computer received it'",
        "backupctl start nightly --computer db --computer web   # only these two",
        "backupctl start nightly --retry-of s-20260101-020000-1a2b3c4d",
    )
)
@POLICY
@click.option(
    "--computer",
    "computer_names",
    multiple=True,
    metavar="NAME",
    help="Start only this computer of the policy (repeat the flag).",
)
@click.option(
    "--retry-of",
    "retry_of_session_id",
    default="",
    metavar="SESSION",
    help="Start only the computers of that session that did not succeed.",
)
@connection_options(default=False)
def start(policy_id: str, computer_names: tuple[str, ...], retry_of_session_id: str) -> None:
    """Start POLICY now on every computer of it (or only those --computer names).

    Shows the deliveries live, then each computer's result and the statistics. Exit 0
    when every targeted computer received the command, 3 when some did not (not
    received, rejected, cancelled), 1 on error. Computers in pre-installed-agents groups
    are skipped, with a warning.
    """
    _run(policy_id, pb.SESSION_ACTION_START, computer_names, retry_of_session_id)


@cli.command(
    epilog=examples(
        "backupctl stop nightly",
        "backupctl stop nightly --server backup.example.com:50051 -o json",
    )
)
@POLICY
@connection_options(default=False)
def stop(policy_id: str) -> None:
    """Stop POLICY's running jobs on every computer of it.

    Exit codes as for start: 0 all received, 3 some did not, 1 on error.
    """
    _run(policy_id, pb.SESSION_ACTION_STOP)


@cli.command(
    epilog=examples(
        "backupctl sessions",
        "backupctl sessions nightly --limit 5",
        "backupctl sessions nightly -o json | jq -r '.sessions[0].id'",
    )
)
@click.argument(
    "policy_id",
    metavar="[POLICY]",
    required=False,
    default="",
    shell_complete=complete_ids("policy"),
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Show at most this many, newest first.",
)
@connection_options(default=False)
def sessions(policy_id: str, limit: int) -> None:
    """List sessions, newest first (of POLICY, or of every policy)."""
    options = settings()
    found: list[pb.PolicySession] = []
    token = ""
    with client.backup_server(options) as stub:
        while len(found) < limit:
            reply = stub.ListSessions(
                api.ListSessionsRequest(
                    policy_id=policy_id, page_size=limit - len(found), page_token=token
                ),
                timeout=options.timeout,
            )
            found.extend(reply.sessions)
            token = reply.next_page_token
            if not token:
                break
    if options.json:
        render.emit_json(api.ListSessionsResponse(sessions=found))
    else:
        render.console().print(render.sessions_table(found))


@cli.command(
    epilog=examples(
        "backupctl session s-20260101-120000-1a2b3c4d",
        "backupctl session s-20260101-120000-1a2b3c4d --watch",
    )
)
@click.argument("session_id", metavar="ID")
@click.option(
    "--watch",
    is_flag=True,
    help="Follow a running session until it finishes; then exit 0 or 3 as start does.",
)
@connection_options(default=False)
def session(session_id: str, watch: bool) -> None:
    """Show a session: each computer's delivery, statistics, warnings."""
    options = settings()
    with client.backup_server(options) as stub:
        if not watch:
            found = stub.GetSession(
                api.GetSessionRequest(session_id=session_id), timeout=options.timeout
            )
            _show_session(found)
            return
        with follow.ProgressBar(f"session {session_id}") as bar:
            last = follow.watch(stub, session_id, bar.update)
    if last is None:  # only a watch that may wait for a call returns None
        raise AssertionError("WatchSession ended without a snapshot")
    _show_session(last)
    raise click.exceptions.Exit(follow.outcome_code(last))


@cli.command(
    epilog=examples(
        "backupctl jobs 10.0.0.5:50061",
        "backupctl jobs 10.0.0.5:50061 --policy nightly -o json",
        "backupctl jobs unix:/var/lib/backup-agent/agent.sock   # on the agent's computer",
    )
)
@click.argument("address", metavar="ADDRESS", callback=agent_address)
@click.option(
    "--policy", "policy_id", default="", metavar="POLICY", help="Only this policy's jobs."
)
@connection_options(default=False)
def jobs(address: str, policy_id: str) -> None:
    """List an agent's jobs, asking the agent at ADDRESS (HOST:PORT, or unix:PATH).

    An agent serving TLS takes commands only from the backup server's certificate, so an
    operator's is refused (PERMISSION_DENIED). On the agent's computer, as the agent's
    user, its local socket needs no certificate: ADDRESS unix:DATA_DIR/agent.sock.
    Whoever holds the server's certificate may give it: --tls-cert and --tls-key. The API
    token is never sent to an agent.
    """
    options = settings()
    with client.agent(address, options) as stub:
        reply = stub.ListJobs(
            agent_api.ListJobsRequest(policy_id=policy_id), timeout=options.timeout
        )
    if options.json:
        render.emit_json(reply)
    else:
        render.console().print(render.jobs_table(list(reply.jobs)))

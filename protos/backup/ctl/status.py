"""`backupctl status [POLICY]`: is every computer protected? One row per policy and
computer, worst first (most failures in a row, then the oldest last success).

Exit 0 when every listed computer's last job succeeded (and nothing failed since), 3
otherwise, 1 on error.
"""

import click
from rich.table import Table
from rich.text import Text

from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb

from . import client, render
from .outcomes import EXIT_NOT_ALL_SUCCEEDED, EXIT_SUCCEEDED, JOB_STYLE
from .root import cli, complete_ids, connection_options, examples, settings


def protected(status: pb.ComputerStatus) -> bool:
    return status.last_job.state == pb.JOB_STATE_SUCCEEDED and status.consecutive_failures == 0


def worst_first(statuses: list[pb.ComputerStatus]) -> list[pb.ComputerStatus]:
    return sorted(
        statuses,
        key=lambda s: (
            protected(s),
            -s.consecutive_failures,
            s.last_success_time.ToNanoseconds(),
            s.policy_id,
            s.computer.name,
        ),
    )


def statuses_table(statuses: list[pb.ComputerStatus]) -> Table:
    table = Table()
    # Ids and addresses are never wrapped or cut: they are what an operator copies.
    for column in ("policy", "computer", "address", "last job", "state", "ended"):
        table.add_column(column, no_wrap=True)
    table.add_column("last success", no_wrap=True)
    table.add_column("restore point", no_wrap=True)
    table.add_column("failures in a row", justify="right")
    table.add_column("last contact", no_wrap=True)
    table.add_column("error", overflow="fold")
    for status in statuses:
        job = status.last_job
        state = (
            Text(render.word(pb.JobState.Name(job.state), "JOB_STATE_"), JOB_STYLE.get(job.state, ""))
            if job.id
            else Text("never ran", style="red")
        )
        table.add_row(
            status.policy_id,
            status.computer.name,
            status.computer.address,
            job.id,
            state,
            render.when(job.end_time),
            render.when(status.last_success_time),
            status.last_restore_point_id,
            Text(str(status.consecutive_failures), style="red" if status.consecutive_failures else ""),
            render.when(status.last_contact_time),
            job.error,
        )
    return table


@cli.command(
    epilog=examples(
        "backupctl status",
        "backupctl status nightly",
        "backupctl status -o json | jq '.computerStatuses[] | select(.consecutiveFailures > 0)'",
    )
)
@click.argument(
    "policy_id",
    metavar="[POLICY]",
    required=False,
    default="",
    shell_complete=complete_ids("policy"),
)
@connection_options(default=False)
def status(policy_id: str) -> None:
    """Show whether each computer is protected: last job, last success, failures in a row.

    From the jobs the server followed, worst first. Exit 0 when every listed computer's
    last job succeeded, 3 otherwise, 1 on error.
    """
    options = settings()
    found: list[pb.ComputerStatus] = []
    token = ""
    with client.backup_server(options) as stub:
        while True:
            reply = stub.ListComputerStatuses(
                api.ListComputerStatusesRequest(
                    policy_id=policy_id, page_size=1000, page_token=token
                ),
                timeout=options.timeout,
            )
            found.extend(reply.computer_statuses)
            token = reply.next_page_token
            if not token:
                break
    found = worst_first(found)
    if options.json:
        render.emit_json(api.ListComputerStatusesResponse(computer_statuses=found))
    else:
        render.console().print(statuses_table(found))
    all_protected = all(protected(s) for s in found)
    raise click.exceptions.Exit(EXIT_SUCCEEDED if all_protected else EXIT_NOT_ALL_SUCCEEDED)

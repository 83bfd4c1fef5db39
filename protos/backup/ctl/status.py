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


def statuses_table(statuses: list[pb.ComputerStatus], wide: bool = False) -> Table:
    """One row per policy and computer: its last job's state, last success and the restore
    point it made, failures in a row, the error. Ids are never cut (they are what an
    operator copies); dates and errors wrap, so it fits 100 columns. -o wide adds the
    address, the job id, when it ended and the last contact."""
    columns = [("policy", "id"), ("computer", "id")]
    if wide:
        columns.append(("address", "id"))
    columns.append(("last job", "id"))
    if wide:
        columns += [("job id", "id"), ("ended", "text")]
    columns += [("last success", "text"), ("restore point", "id")]
    columns.append(("failures\nin a row", "number"))
    if wide:
        columns.append(("last contact", "text"))
    columns.append(("error", "text"))
    table = render.table(*columns)
    for status in statuses:
        job = status.last_job
        state = (
            Text(
                render.word(pb.JobState.Name(job.state), "JOB_STATE_"),
                JOB_STYLE.get(job.state, ""),
            )
            if job.id
            else Text("never ran", style="red")
        )
        cells: list[str | Text] = [status.policy_id, status.computer.name]
        if wide:
            cells.append(status.computer.address)
        cells.append(state)
        if wide:
            cells += [job.id, render.when(job.end_time)]
        cells += [render.when(status.last_success_time), status.last_restore_point_id]
        failures = status.consecutive_failures
        cells.append(Text(str(failures), style="red" if failures else ""))
        if wide:
            cells.append(render.when(status.last_contact_time))
        cells.append(job.error)
        table.add_row(*cells)
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

    From the jobs the server followed, worst first (-o wide: address, job id, when it
    ended, last contact). Exit 0 when every listed computer's last job succeeded, 3
    otherwise, 1 on error.
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
    if options.structured:
        render.emit(api.ListComputerStatusesResponse(computer_statuses=found), options.output)
    else:
        render.console().print(statuses_table(found, options.wide))
    all_protected = all(protected(s) for s in found)
    raise click.exceptions.Exit(EXIT_SUCCEEDED if all_protected else EXIT_NOT_ALL_SUCCEEDED)

"""`backupctl policy ...`: create, list, show, update, delete; the helpers `group` shares."""

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from rich.table import Table

from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb

from . import calls, inputs, render, scheduling
from .root import Backupctl, cli, complete_ids, connection_options, examples

F = TypeVar("F", bound=Callable[..., Any])
KINDS = {
    "manual": pb.PROTECTION_GROUP_KIND_MANUAL,
    "preinstalled-agents": pb.PROTECTION_GROUP_KIND_PREINSTALLED_AGENTS,
}
FILE_HELP = "The resource as YAML or JSON (the proto's JSON form); flags given override it."


def from_input(message: inputs.Resource, file: Path | None, fields: dict[str, Any]) -> list[str]:
    """Fills `message` from the file, then the flags given; returns the fields set."""
    given: list[str] = []
    if file is not None:
        data = inputs.read_document(file)
        inputs.parse(data, message, str(file))
        given = inputs.field_names(data, message)
    for name, value in fields.items():
        if value is None or value == () or value == []:
            continue
        target = getattr(message, name)
        if isinstance(value, list | tuple):
            del target[:]
            target.extend(value)
        else:
            setattr(message, name, value)
        if name not in given:
            given.append(name)
    return given


def list_every(
    method: str,
    request: Message,
    response_type: Callable[..., Message],
    field: str,
    table: Callable[[list[Any]], Table],
) -> None:
    """Every page of a List method, shown as one response or one table."""
    items = calls.every_page(method, request, field)
    calls.show(response_type(**{field: items}), lambda: render.console().print(table(items)))


def file_option(command: F) -> F:
    return click.option(
        "-f", "--file", "file", type=click.Path(path_type=Path, dir_okay=False), help=FILE_HELP
    )(command)


def computer_option(command: F) -> F:
    return click.option(
        "--computer",
        "computers",
        multiple=True,
        callback=inputs.computers,
        metavar="NAME=HOST:PORT",
        help="A computer and its agent's address (repeat the flag).",
    )(command)


@cli.group(cls=Backupctl)
def policy() -> None:
    """Backup policies: what to back up, on which computers, to where.

    Computers are given as NAME=HOST:PORT (the address of the computer's agent).
    """


POLICY_ID = click.argument("policy_id", metavar="ID", shell_complete=complete_ids("policy"))


def _policy_options(command: F) -> F:
    """The policy's fields as flags; each one given replaces that field."""
    for option in reversed(
        (
            click.option("--name", help="Display name."),
            click.option("--description", help="Free text."),
            computer_option,
            click.option(
                "--group",
                "protection_group_ids",
                multiple=True,
                metavar="GROUP",
                help="A protection group whose computers the policy covers (repeat).",
            ),
            click.option(
                "--source",
                "source_paths",
                multiple=True,
                metavar="PATH",
                help="An absolute path on the computers to back up (repeat).",
            ),
            click.option(
                "--exclude",
                "exclude_patterns",
                multiple=True,
                metavar="PATTERN",
                help="Leave out what a gitignore pattern matches: '*.tmp', 'cache/', "
                "'/var/log/**' (repeat).",
            ),
            click.option(
                "--repository",
                metavar="PATH",
                help="Absolute path on the computers where restore points go.",
            ),
            click.option(
                "--retention",
                "retention_points",
                type=click.IntRange(0, 2**31 - 1),
                metavar="N",
                help="Restore points to keep (0: the default, 7).",
            ),
            click.option(
                "--throttle",
                "throttle_bytes_per_second",
                callback=inputs.size,
                metavar="BYTES",
                help="Read limit per second, e.g. 10MiB (0: none).",
            ),
            scheduling.options,
            file_option,
        )
    ):
        command = option(command)
    return command


@policy.command(
    "create",
    epilog=examples(
        "backupctl policy create nightly --name Nightly \\",
        "    --computer db=10.0.0.5:50061 --computer web=10.0.0.6:50061 --group lab \\",
        "    --source /srv/data --repository /var/backups --retention 14 --throttle 20MiB",
        "backupctl policy create -f nightly.yaml",
    ),
)
@click.argument("policy_id", metavar="[ID]", required=False, default="")
@_policy_options
@connection_options(default=False)
def policy_create(policy_id: str, file: Path | None, **fields: Any) -> None:
    """Create a policy (ID: 1-63 of a-z, 0-9, '-'; generated when omitted)."""
    new = pb.BackupPolicy()
    scheduling.apply(new, fields)
    from_input(new, file, fields)
    created = calls.ask(
        "CreatePolicy", api.CreatePolicyRequest(policy_id=policy_id or new.id, policy=new)
    )
    calls.show(created, lambda: render.show_policy(created), f"created policy {created.id}")


@policy.command("list", epilog=examples("backupctl policy list", "backupctl policy list -o json"))
@connection_options(default=False)
def policy_list() -> None:
    """List every policy."""
    list_every(
        "ListPolicies",
        api.ListPoliciesRequest(),
        api.ListPoliciesResponse,
        "policies",
        render.policies_table,
    )


@policy.command("show", epilog=examples("backupctl policy show nightly -o json"))
@POLICY_ID
@connection_options(default=False)
def policy_show(policy_id: str) -> None:
    """Show a policy."""
    found = calls.ask("GetPolicy", api.GetPolicyRequest(policy_id=policy_id))
    calls.show(found, lambda: render.show_policy(found))


@policy.command(
    "update",
    epilog=examples(
        "backupctl policy update nightly --description 'Every night at 2' --retention 30",
        "backupctl policy update nightly --computer db=10.0.0.5:50061   # the new list",
        "backupctl policy update nightly -f changes.yaml   # changes only the keys it has",
    ),
)
@POLICY_ID
@_policy_options
@connection_options(default=False)
def policy_update(policy_id: str, file: Path | None, **fields: Any) -> None:
    """Change the fields given (flags, or the keys of -f FILE); the rest stay as they are.

    A repeated flag (--computer, --group, --source) replaces the whole list.
    """
    change = pb.BackupPolicy()
    nested = scheduling.apply(change, fields)
    paths = [path for path in from_input(change, file, fields) if path != "id"] + nested
    if not paths:
        raise click.UsageError("nothing to change: give a flag such as --description, or -f FILE")
    change.id = policy_id
    updated = calls.ask(
        "UpdatePolicy",
        api.UpdatePolicyRequest(policy=change, update_mask=field_mask_pb2.FieldMask(paths=paths)),
    )
    calls.show(updated, lambda: render.show_policy(updated), f"updated policy {updated.id}")


@policy.command("delete", epilog=examples("backupctl policy delete nightly"))
@POLICY_ID
@connection_options(default=False)
def policy_delete(policy_id: str) -> None:
    """Delete a policy (its sessions stay listed)."""
    reply = calls.ask("DeletePolicy", api.DeletePolicyRequest(policy_id=policy_id))
    calls.show(reply, lambda: None, f"deleted policy {policy_id}")


scheduling.register(policy)

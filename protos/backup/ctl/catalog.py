"""`backupctl group ...` and `backupctl policy ...`: create, list, show, update, delete."""

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from rich.table import Table

from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb

from . import client, inputs, render, scheduling
from .root import Backupctl, cli, complete_ids, connection_options, examples, settings

F = TypeVar("F", bound=Callable[..., Any])
KINDS = {
    "manual": pb.PROTECTION_GROUP_KIND_MANUAL,
    "preinstalled-agents": pb.PROTECTION_GROUP_KIND_PREINSTALLED_AGENTS,
}
FILE_HELP = "The resource as YAML or JSON (the proto's JSON form); flags given override it."


def _from_input(message: inputs.Resource, file: Path | None, fields: dict[str, Any]) -> list[str]:
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


def _list_every(
    method: str,
    request_type: Callable[..., Message],
    response_type: Callable[..., Message],
    field: str,
    table: Callable[[list[Any]], Table],
) -> None:
    """Every page of a List method, shown as one response or one table."""
    options = settings()
    items: list[Any] = []
    token = ""
    with client.backup_server(options) as stub:
        while True:
            reply = getattr(stub, method)(request_type(page_token=token), timeout=options.timeout)
            items.extend(getattr(reply, field))
            token = reply.next_page_token
            if not token:
                break
    _show(response_type(**{field: items}), lambda: render.console().print(table(items)))


def _show(message: Message, show_text: Callable[[], None], note: str = "") -> None:
    if settings().json:
        render.emit_json(message)
        return
    if note:
        render.console().print(note)
    show_text()


def _file_option(command: F) -> F:
    return click.option(
        "-f", "--file", "file", type=click.Path(path_type=Path, dir_okay=False), help=FILE_HELP
    )(command)


def _computer_option(command: F) -> F:
    return click.option(
        "--computer",
        "computers",
        multiple=True,
        callback=inputs.computers,
        metavar="NAME=HOST:PORT",
        help="A computer and its agent's address (repeat the flag).",
    )(command)


@cli.group(cls=Backupctl)
def group() -> None:
    """Protection groups: named sets of computers for policies."""


GROUP_ID = click.argument("group_id", metavar="ID", shell_complete=complete_ids("group"))


@group.command(
    "create",
    epilog=examples(
        "backupctl group create lab --name 'Lab machines' \\",
        "    --computer ws1=10.0.0.11:50061 --computer ws2=10.0.0.12:50061",
        "backupctl group create laptops --name Laptops --kind preinstalled-agents \\",
        "    --computer alice=10.0.1.7:50061",
        "backupctl group create -f lab.yaml",
    ),
)
@click.argument("group_id", metavar="[ID]", required=False, default="")
@click.option("--name", help="Display name.")
@click.option(
    "--kind",
    type=click.Choice(list(KINDS)),
    help="manual (default), or preinstalled-agents: driven locally, skipped by start and stop.",
)
@_computer_option
@_file_option
@connection_options(default=False)
def group_create(
    group_id: str,
    name: str | None,
    kind: str | None,
    computers: list[pb.Computer],
    file: Path | None,
) -> None:
    """Create a protection group (ID: 1-63 of a-z, 0-9, '-'; generated when omitted)."""
    protection_group = pb.ProtectionGroup()
    _from_input(
        protection_group,
        file,
        {"name": name, "kind": KINDS[kind] if kind else None, "computers": computers},
    )
    if protection_group.kind == pb.PROTECTION_GROUP_KIND_UNSPECIFIED:
        protection_group.kind = pb.PROTECTION_GROUP_KIND_MANUAL
    options = settings()
    with client.backup_server(options) as stub:
        created = stub.CreateProtectionGroup(
            api.CreateProtectionGroupRequest(
                protection_group_id=group_id or protection_group.id,
                protection_group=protection_group,
            ),
            timeout=options.timeout,
        )
    _show(created, lambda: render.show_group(created), f"created protection group {created.id}")


@group.command("list", epilog=examples("backupctl group list", "backupctl group list -o json"))
@connection_options(default=False)
def group_list() -> None:
    """List every protection group."""
    _list_every(
        "ListProtectionGroups",
        api.ListProtectionGroupsRequest,
        api.ListProtectionGroupsResponse,
        "protection_groups",
        render.groups_table,
    )


@group.command(
    "show", epilog=examples("backupctl group show lab", "backupctl group show lab -o json")
)
@GROUP_ID
@connection_options(default=False)
def group_show(group_id: str) -> None:
    """Show a protection group and its computers."""
    options = settings()
    with client.backup_server(options) as stub:
        found = stub.GetProtectionGroup(
            api.GetProtectionGroupRequest(protection_group_id=group_id), timeout=options.timeout
        )
    _show(found, lambda: render.show_group(found))


@group.command("delete", epilog=examples("backupctl group delete lab"))
@GROUP_ID
@connection_options(default=False)
def group_delete(group_id: str) -> None:
    """Delete a protection group (refused while a policy uses it)."""
    options = settings()
    with client.backup_server(options) as stub:
        reply = stub.DeleteProtectionGroup(
            api.DeleteProtectionGroupRequest(protection_group_id=group_id), timeout=options.timeout
        )
    _show(reply, lambda: None, f"deleted protection group {group_id}")


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
            _computer_option,
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
            _file_option,
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
    _from_input(new, file, fields)
    options = settings()
    with client.backup_server(options) as stub:
        created = stub.CreatePolicy(
            api.CreatePolicyRequest(policy_id=policy_id or new.id, policy=new),
            timeout=options.timeout,
        )
    _show(created, lambda: render.show_policy(created), f"created policy {created.id}")


@policy.command("list", epilog=examples("backupctl policy list", "backupctl policy list -o json"))
@connection_options(default=False)
def policy_list() -> None:
    """List every policy."""
    _list_every(
        "ListPolicies",
        api.ListPoliciesRequest,
        api.ListPoliciesResponse,
        "policies",
        render.policies_table,
    )


@policy.command("show", epilog=examples("backupctl policy show nightly -o json"))
@POLICY_ID
@connection_options(default=False)
def policy_show(policy_id: str) -> None:
    """Show a policy."""
    options = settings()
    with client.backup_server(options) as stub:
        found = stub.GetPolicy(api.GetPolicyRequest(policy_id=policy_id), timeout=options.timeout)
    _show(found, lambda: render.show_policy(found))


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
    paths = [path for path in _from_input(change, file, fields) if path != "id"] + nested
    if not paths:
        raise click.UsageError("nothing to change: give a flag such as --description, or -f FILE")
    change.id = policy_id
    options = settings()
    with client.backup_server(options) as stub:
        updated = stub.UpdatePolicy(
            api.UpdatePolicyRequest(
                policy=change, update_mask=field_mask_pb2.FieldMask(paths=paths)
            ),
            timeout=options.timeout,
        )
    _show(updated, lambda: render.show_policy(updated), f"updated policy {updated.id}")


@policy.command("delete", epilog=examples("backupctl policy delete nightly"))
@POLICY_ID
@connection_options(default=False)
def policy_delete(policy_id: str) -> None:
    """Delete a policy (its sessions stay listed)."""
    options = settings()
    with client.backup_server(options) as stub:
        reply = stub.DeletePolicy(
            api.DeletePolicyRequest(policy_id=policy_id), timeout=options.timeout
        )
    _show(reply, lambda: None, f"deleted policy {policy_id}")


scheduling.register(policy)

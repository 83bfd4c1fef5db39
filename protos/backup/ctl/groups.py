"""`backupctl group ...`: protection groups; create, list, show, update, delete."""

from pathlib import Path

import click
from google.protobuf import field_mask_pb2

from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb

from . import calls, inputs, render
from .catalog import KINDS, computer_option, file_option, from_input, list_every
from .root import Backupctl, cli, complete_ids, connection_options, examples


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
@computer_option
@file_option
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
    from_input(
        protection_group,
        file,
        {"name": name, "kind": KINDS[kind] if kind else None, "computers": computers},
    )
    if protection_group.kind == pb.PROTECTION_GROUP_KIND_UNSPECIFIED:
        protection_group.kind = pb.PROTECTION_GROUP_KIND_MANUAL
    created = calls.ask(
        "CreateProtectionGroup",
        api.CreateProtectionGroupRequest(
            protection_group_id=group_id or protection_group.id,
            protection_group=protection_group,
        ),
    )
    calls.show(
        created, lambda: render.show_group(created), f"created protection group {created.id}"
    )


@group.command("list", epilog=examples("backupctl group list", "backupctl group list -o json"))
@connection_options(default=False)
def group_list() -> None:
    """List every protection group."""
    list_every(
        "ListProtectionGroups",
        api.ListProtectionGroupsRequest(),
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
    found = calls.ask(
        "GetProtectionGroup", api.GetProtectionGroupRequest(protection_group_id=group_id)
    )
    calls.show(found, lambda: render.show_group(found))


@group.command(
    "update",
    epilog=examples(
        "backupctl group update lab --add-computer ws3=10.0.0.13:50061",
        "backupctl group update lab --remove-computer ws1 --name 'Lab (west)'",
        "backupctl group update lab --computer ws1=10.0.0.11:50061   # the new list",
        "backupctl group update lab -f lab.yaml   # changes only the keys it has",
    ),
)
@GROUP_ID
@click.option("--name", help="Display name.")
@click.option("--kind", type=click.Choice(list(KINDS)), help="manual or preinstalled-agents.")
@computer_option
@click.option(
    "--add-computer",
    "added",
    multiple=True,
    callback=inputs.computers,
    metavar="NAME=HOST:PORT",
    help="Add this computer to the group (repeat).",
)
@click.option(
    "--remove-computer",
    "removed",
    multiple=True,
    metavar="NAME",
    help="Remove the computer of this name (repeat).",
)
@file_option
@connection_options(default=False)
def group_update(
    group_id: str,
    name: str | None,
    kind: str | None,
    computers: list[pb.Computer],
    added: list[pb.Computer],
    removed: tuple[str, ...],
    file: Path | None,
) -> None:
    """Change the fields given; the rest stay as they are. Every policy using the group
    is checked again by the server.

    --computer replaces the whole list; --add-computer and --remove-computer change the
    group's current list (read from the server first).
    """
    change = pb.ProtectionGroup()
    paths = [
        path
        for path in from_input(
            change,
            file,
            {"name": name, "kind": KINDS[kind] if kind else None, "computers": computers},
        )
        if path != "id"
    ]
    if added or removed:
        if "computers" in paths:
            raise click.UsageError("give --computer (the whole list) or --add/--remove-computer")
        current = calls.ask(
            "GetProtectionGroup", api.GetProtectionGroupRequest(protection_group_id=group_id)
        )
        change.computers.extend(_changed_computers(list(current.computers), added, removed))
        paths.append("computers")
    if not paths:
        raise click.UsageError("nothing to change: give a flag such as --add-computer, or -f FILE")
    change.id = group_id
    updated = calls.ask(
        "UpdateProtectionGroup",
        api.UpdateProtectionGroupRequest(
            protection_group=change, update_mask=field_mask_pb2.FieldMask(paths=paths)
        ),
    )
    calls.show(
        updated, lambda: render.show_group(updated), f"updated protection group {updated.id}"
    )


def _changed_computers(
    current: list[pb.Computer], added: list[pb.Computer], removed: tuple[str, ...]
) -> list[pb.Computer]:
    names = {computer.name for computer in current}
    for name in removed:
        if name not in names:
            raise click.BadParameter(
                f"no computer {name!r} in the group (it has: {', '.join(sorted(names)) or 'none'})",
                param_hint="--remove-computer",
            )
    kept = [computer for computer in current if computer.name not in removed]
    for computer in added:
        if computer.name in {kept_one.name for kept_one in kept}:
            raise click.BadParameter(
                f"the group already has a computer {computer.name!r}; remove it first",
                param_hint="--add-computer",
            )
        kept.append(computer)
    return kept


@group.command("delete", epilog=examples("backupctl group delete lab"))
@GROUP_ID
@connection_options(default=False)
def group_delete(group_id: str) -> None:
    """Delete a protection group (refused while a policy uses it)."""
    reply = calls.ask(
        "DeleteProtectionGroup", api.DeleteProtectionGroupRequest(protection_group_id=group_id)
    )
    calls.show(reply, lambda: None, f"deleted protection group {group_id}")

"""What an operator types or writes in a file, read into the API's messages.

Only the shape is checked here (NAME=HOST:PORT has an '=', a size is a number); the
server validates every field and names the wrong one, so its rules live in one place.
"""

import json
import re
from pathlib import Path
from typing import TypeVar

import click
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from backup.v1 import resources_pb2 as pb

SIZE = re.compile(r"([0-9]+)\s*([kmgt]?)(i?b)?", re.IGNORECASE)
INT64_MAX = 2**63 - 1
SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}

# Fields in bytes, which a file may give as on the flags (10MiB).
SIZE_FIELDS = frozenset({"throttle_bytes_per_second"})

Resource = TypeVar("Resource", pb.BackupPolicy, pb.ProtectionGroup)


def computer(value: str) -> pb.Computer:
    """`name=host:port` as a Computer."""
    name, sep, address = value.partition("=")
    if not sep or not name or not address:
        raise click.BadParameter(f"expected NAME=HOST:PORT, got {value!r}")
    return pb.Computer(name=name, address=address)


def computers(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[pb.Computer]:
    """Click callback: every `--computer NAME=HOST:PORT`."""
    return [computer(value) for value in values]


def bytes_of(value: str) -> int:
    """A number of bytes, with an optional binary unit (512K, 10MiB, 1G); BadParameter if not."""
    match = SIZE.fullmatch(value.strip())
    if match is None:
        raise click.BadParameter(f"expected a number of bytes such as 1048576 or 10MiB: {value!r}")
    count = int(match.group(1)) * SIZE_UNITS[match.group(2).lower()]
    if count > INT64_MAX:
        raise click.BadParameter(f"{value!r} is more bytes than the field holds (at most 2^63 - 1)")
    return count


def size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """Click callback: bytes, with an optional binary unit (512K, 10MiB, 1G)."""
    return None if value is None else bytes_of(value)


def read_document(path: Path) -> dict[str, object]:
    """A YAML or JSON file holding one object."""
    try:
        text = path.read_text()
    except OSError as error:
        raise click.BadParameter(f"cannot read {path}: {error.strerror}", param_hint="-f") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        problem = " ".join(str(error).split())
        raise click.BadParameter(f"{path} is not valid: {problem}", param_hint="-f") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must hold one object (a mapping)", param_hint="-f")
    return data


def _sizes_in_bytes(data: dict[str, object], message: Message, source: str) -> dict[str, object]:
    """`throttleBytesPerSecond: 5MiB` as the flag takes it: the units' number of bytes."""
    converted = dict(data)
    for field in message.DESCRIPTOR.fields:
        if field.name not in SIZE_FIELDS:
            continue
        for key in (field.name, field.json_name):
            value = converted.get(key)
            if isinstance(value, str) and not value.strip().isdigit():
                try:
                    converted[key] = bytes_of(value)
                except click.BadParameter as error:
                    raise click.BadParameter(
                        f"{source}: {key}: {error.message}", param_hint="-f"
                    ) from None
    return converted


def parse(data: dict[str, object], message: Resource, source: str) -> Resource:
    """The proto JSON form (lowerCamelCase or proto names) into `message`; sizes may carry
    a unit, as on the flags."""
    try:
        json_format.ParseDict(_sizes_in_bytes(data, message, source), message)
    except json_format.ParseError as error:
        raise click.BadParameter(f"{source}: {error}", param_hint="-f") from None
    return message


def field_names(data: dict[str, object], message: Message) -> list[str]:
    """The proto field names of the top-level keys of a JSON document for `message`."""
    by_json = {field.json_name: field.name for field in message.DESCRIPTOR.fields}
    return [by_json.get(key, key) for key in data]

"""backupctl's documents: -o json and -o yaml, the proto's JSON form with defaults, keys in
the order the proto declares its fields."""

import json
from typing import Any

import click
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message


def document(message: Message) -> dict[str, Any]:
    """The proto JSON form, lowerCamelCase, defaults included so scripts need no fallbacks,
    keys in the order the proto declares its fields (protobuf puts set fields first, so
    its order would change with the values)."""
    found = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return _in_field_order(message.DESCRIPTOR, found)


def _in_field_order(descriptor: Any, found: dict[str, Any]) -> dict[str, Any]:
    """`found`'s keys in `descriptor`'s field order, nested messages too."""
    ordered: dict[str, Any] = {}
    for field in descriptor.fields:
        if field.json_name not in found:
            continue
        value = found[field.json_name]
        nested = field.message_type
        if nested is not None and not nested.GetOptions().map_entry:
            if isinstance(value, dict):
                value = _in_field_order(nested, value)
            elif isinstance(value, list):
                value = [_in_field_order(nested, v) if isinstance(v, dict) else v for v in value]
        ordered[field.json_name] = value
    return ordered


def json_text(message: Message) -> str:
    """`document(message)` as indented JSON."""
    return json.dumps(document(message), indent=2, ensure_ascii=False)


def yaml_text(message: Message) -> str:
    """The same document as `json_text` (keys, order, defaults), written as YAML."""
    return yaml.safe_dump(document(message), sort_keys=False, allow_unicode=True)


def emit_json(message: Message) -> None:
    click.echo(json_text(message))


def emit(message: Message, output: str) -> None:
    """`message` as one JSON or YAML document (-o json, -o yaml)."""
    if output == "yaml":
        click.echo(yaml_text(message), nl=False)
    else:
        emit_json(message)

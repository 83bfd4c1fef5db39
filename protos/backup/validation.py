"""Checks at the edge of every RPC: each rule raises InvalidArgument naming the field."""

import ipaddress
import re
from collections.abc import Sequence

import pathspec

from backup.v1 import resources_pb2 as pb

from .errors import InvalidArgument
from .paths import is_within

PORT_PATTERN = re.compile(r"[0-9]{1,5}")
ID_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,62}")
HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")

# Names grpc reads as a target's URI scheme ("unix:5555" is a unix socket, not host unix).
TARGET_SCHEMES = frozenset(
    {"dns", "ipv4", "ipv6", "unix", "unix-abstract", "vsock", "xds", "google-c2p", "passthrough"}
)
# What an error message shows of a value a client sent: enough to recognise it, never so
# much that a refusal outgrows the trailers (a 4,096-character path repeated twice did).
SHOWN_MAX = 120
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)

NAME_MAX = 100
DESCRIPTION_MAX = 1000
PATH_MAX = 4096
HOST_MAX = 253
COMPUTERS_MAX = 10_000
SOURCE_PATHS_MAX = 100
GROUP_IDS_MAX = 100
RETENTION_MAX = 1000
EXCLUDE_PATTERNS_MAX = 100


def shown(value: str, limit: int = SHOWN_MAX) -> str:
    """`value` quoted for a message, its middle elided past `limit` characters."""
    if len(value) <= limit:
        return repr(value)
    keep = (limit - 1) // 2
    return repr(f"{value[:keep]}…{value[-keep:]}")


def require_id(field: str, value: str) -> str:
    """A present, well-shaped id (1-63 of [a-z0-9-], starting with a letter)."""
    if not value:
        raise InvalidArgument(field, "is required")
    return check_id_shape(field, value)


def optional_id(field: str, value: str) -> str:
    """An id that may be empty (then the server chooses one, or no filter applies)."""
    return check_id_shape(field, value) if value else value


def check_id_shape(field: str, value: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise InvalidArgument(
            field,
            f"{value[:80]!r} is not a valid id (1-63 of a-z, 0-9 and '-', starting with a letter)",
        )
    return value


def check_text(field: str, value: str, limit: int, *, required: bool) -> None:
    if required and not value.strip():
        raise InvalidArgument(field, "is required")
    if len(value) > limit:
        raise InvalidArgument(field, f"is {len(value)} characters long; the limit is {limit}")


def check_name(field: str, value: str) -> None:
    check_text(field, value, NAME_MAX, required=True)
    if CONTROL_CHARACTERS.search(value):
        raise InvalidArgument(field, "must not contain control characters")


def is_port(text: str) -> bool:
    """1-65535 in ASCII digits (str.isdigit would also take '²' or Arabic-Indic digits)."""
    return PORT_PATTERN.fullmatch(text) is not None and 1 <= int(text) <= 65535


def check_address(field: str, address: str) -> None:
    """host:port, the host a DNS name, an IPv4 address or an IPv6 address in brackets."""
    if not address:
        raise InvalidArgument(field, "is required")
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise InvalidArgument(field, f"{address[:80]!r} is not host:port")
    if not is_port(port):
        raise InvalidArgument(field, f"{address[:80]!r} has no port between 1 and 65535")
    if host.startswith("["):
        if not host.endswith("]"):
            raise InvalidArgument(field, f"{address[:80]!r} has an unclosed '['")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise InvalidArgument(field, f"{host[:80]!r} is not an IPv6 address") from None
        return
    if ":" in host:
        raise InvalidArgument(field, f"{address[:80]!r}: put an IPv6 host in brackets, [::1]:port")
    if len(host) > HOST_MAX or not all(HOST_LABEL.fullmatch(label) for label in host.split(".")):
        raise InvalidArgument(field, f"{host[:80]!r} is not a host name or IP address")
    if host.lower() in TARGET_SCHEMES:
        raise InvalidArgument(
            field, f"{address[:80]!r} reads as a gRPC target scheme, not a host: name the host"
        )


def grpc_target(address: str) -> str:
    """The explicit gRPC target of a checked host:port, so that no host is read as a scheme."""
    host = address.rpartition(":")[0]
    if host.startswith("["):
        return f"ipv6:{address}"
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return f"dns:///{address}"
    return f"ipv4:{address}"


def check_timestamp(field: str, seconds: int, nanos: int) -> None:
    """A google.protobuf.Timestamp within its documented range (JSON cannot hold others)."""
    low, high = TIMESTAMP_SECONDS
    if not low <= seconds <= high or not 0 <= nanos <= 999_999_999:
        raise InvalidArgument(field, "is outside 0001-01-01 to 9999-12-31")


def check_computers(field: str, computers: Sequence[pb.Computer]) -> None:
    if len(computers) > COMPUTERS_MAX:
        raise InvalidArgument(
            field, f"has {len(computers)} computers; the limit is {COMPUTERS_MAX}"
        )
    names: set[str] = set()
    addresses: set[str] = set()
    for index, computer in enumerate(computers):
        where = f"{field}[{index}]"
        check_name(f"{where}.name", computer.name)
        check_address(f"{where}.address", computer.address)
        if computer.name in names:
            raise InvalidArgument(f"{where}.name", f"{computer.name!r} is listed twice")
        if computer.address in addresses:
            raise InvalidArgument(f"{where}.address", f"{computer.address!r} is listed twice")
        names.add(computer.name)
        addresses.add(computer.address)


def check_path(field: str, path: str) -> None:
    if not path:
        raise InvalidArgument(field, "is required")
    if len(path) > PATH_MAX:
        raise InvalidArgument(field, f"is {len(path)} characters long; the limit is {PATH_MAX}")
    if "\x00" in path:
        raise InvalidArgument(field, "must not contain NUL")
    if not path.startswith("/"):
        raise InvalidArgument(field, f"{shown(path)} is not an absolute path")
    if ".." in path.split("/"):
        raise InvalidArgument(field, f"{shown(path)} must not contain '..'")


def check_protection_group(group: pb.ProtectionGroup, field: str = "protection_group") -> None:
    check_name(f"{field}.name", group.name)
    if group.kind not in (
        pb.PROTECTION_GROUP_KIND_MANUAL,
        pb.PROTECTION_GROUP_KIND_PREINSTALLED_AGENTS,
    ):
        raise InvalidArgument(
            f"{field}.kind",
            "must be PROTECTION_GROUP_KIND_MANUAL or PROTECTION_GROUP_KIND_PREINSTALLED_AGENTS",
        )
    check_computers(f"{field}.computers", group.computers)


def check_policy(policy: pb.BackupPolicy, field: str = "policy") -> None:
    """Every rule for a policy's own fields (referenced groups are checked against storage)."""
    check_name(f"{field}.name", policy.name)
    check_text(f"{field}.description", policy.description, DESCRIPTION_MAX, required=False)
    check_computers(f"{field}.computers", policy.computers)
    check_group_ids(f"{field}.protection_group_ids", policy.protection_group_ids)
    check_policy_paths(policy, field)
    check_exclude_patterns(f"{field}.exclude_patterns", policy.exclude_patterns)
    check_limits(policy, field)


def check_exclude_patterns(field: str, patterns: Sequence[str]) -> None:
    """gitignore patterns, each one line that excludes (or, with '!', keeps) something."""
    if len(patterns) > EXCLUDE_PATTERNS_MAX:
        raise InvalidArgument(
            field, f"has {len(patterns)} patterns; the limit is {EXCLUDE_PATTERNS_MAX}"
        )
    for index, pattern in enumerate(patterns):
        where = f"{field}[{index}]"
        check_text(where, pattern, PATH_MAX, required=True)
        if CONTROL_CHARACTERS.search(pattern):
            raise InvalidArgument(where, "must not contain control characters or line breaks")
        try:
            [compiled] = pathspec.GitIgnoreSpec.from_lines([pattern]).patterns
        except (ValueError, re.error) as error:
            raise InvalidArgument(
                where, f"{shown(pattern)} is not a gitignore pattern: {error}"
            ) from None
        if compiled.include is None:
            raise InvalidArgument(where, f"{shown(pattern)} is a comment and excludes nothing")


def check_limits(policy: pb.BackupPolicy, field: str = "policy") -> None:
    """Retention and throttle: a negative retention would expire every restore point."""
    if not 0 <= policy.retention_points <= RETENTION_MAX:
        raise InvalidArgument(f"{field}.retention_points", f"must be between 0 and {RETENTION_MAX}")
    if policy.throttle_bytes_per_second < 0:
        raise InvalidArgument(f"{field}.throttle_bytes_per_second", "must not be negative")


def check_group_ids(field: str, group_ids: Sequence[str]) -> None:
    if len(group_ids) > GROUP_IDS_MAX:
        raise InvalidArgument(field, f"has {len(group_ids)} ids; the limit is {GROUP_IDS_MAX}")
    if len(set(group_ids)) != len(group_ids):
        raise InvalidArgument(field, "lists a protection group twice")
    for index, group_id in enumerate(group_ids):
        require_id(f"{field}[{index}]", group_id)


def check_policy_paths(policy: pb.BackupPolicy, field: str = "policy") -> None:
    """Sources and repository: absolute, sane, and the repository outside every source."""
    sources = policy.source_paths
    if not sources:
        raise InvalidArgument(f"{field}.source_paths", "needs at least one path")
    if len(sources) > SOURCE_PATHS_MAX:
        raise InvalidArgument(
            f"{field}.source_paths", f"has {len(sources)} paths; the limit is {SOURCE_PATHS_MAX}"
        )
    for index, path in enumerate(sources):
        check_path(f"{field}.source_paths[{index}]", path)
    check_path(f"{field}.repository", policy.repository)
    for source in sources:
        if is_within(policy.repository, source) or is_within(source, policy.repository):
            raise InvalidArgument(
                f"{field}.repository",
                f"{shown(policy.repository)} overlaps the source path {shown(source)}",
            )


def page_size(requested: int, default: int, limit: int) -> int:
    """AIP-158: 0 means the default; larger than the limit is coerced down, negative refused."""
    if requested < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return min(requested or default, limit)

"""Server reflection whose descriptors carry json_name, so grpcurl prints lowerCamelCase.

grpc_reflection serializes each file with `FileDescriptor.CopyToProto`, which leaves
`json_name` empty; clients that build messages from reflected descriptors (grpcurl) then
fall back to the proto field names. The pool handed to it here wraps the default pool and
fills `json_name` from the field descriptors, which know it.
"""

from collections.abc import Iterable
from typing import Any, cast

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, FileDescriptor
from grpc_reflection.v1alpha import reflection


def _name_fields(proto: descriptor_pb2.DescriptorProto, message: Descriptor) -> None:
    for field_proto in proto.field:
        field_proto.json_name = message.fields_by_name[field_proto.name].json_name
    for nested_proto in proto.nested_type:
        _name_fields(nested_proto, message.nested_types_by_name[nested_proto.name])


class JsonNamedFile:
    """A file descriptor as reflection reads it (name, dependencies, CopyToProto)."""

    def __init__(self, descriptor: FileDescriptor) -> None:
        self._descriptor = descriptor
        self.name = descriptor.name

    @property
    def dependencies(self) -> list["JsonNamedFile"]:
        return [JsonNamedFile(dependency) for dependency in self._descriptor.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:  # noqa: N802
        self._descriptor.CopyToProto(proto)
        for message_proto in proto.message_type:
            _name_fields(message_proto, self._descriptor.message_types_by_name[message_proto.name])


class JsonNamedPool:
    """The default descriptor pool, answering file look-ups with `JsonNamedFile`s."""

    def __init__(self, pool: descriptor_pool.DescriptorPool | None = None) -> None:
        self._pool = pool or descriptor_pool.Default()

    def FindFileByName(self, name: str) -> JsonNamedFile:  # noqa: N802
        return JsonNamedFile(self._pool.FindFileByName(name))

    def FindFileContainingSymbol(self, symbol: str) -> JsonNamedFile:  # noqa: N802
        return JsonNamedFile(self._pool.FindFileContainingSymbol(symbol))

    def __getattr__(self, name: str) -> Any:
        # Extension look-ups return messages and numbers, which need no change.
        return getattr(self._pool, name)


def enable(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serves reflection (v1alpha, what grpcurl asks for) for the named services."""
    # Duck-typed: the reflection servicer only calls the pool's Find* methods.
    pool = cast(descriptor_pool.DescriptorPool, JsonNamedPool())
    reflection.enable_server_reflection([*service_names, reflection.SERVICE_NAME], server, pool)

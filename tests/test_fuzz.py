"""Property-based fuzzing of every method of PolicyService and AgentControl, taken from the service descriptors: random and boundary field values and raw malformed bytes never get UNKNOWN or INTERNAL, never log a traceback, and leave both processes healthy with their data intact.

`make test` runs FUZZ_EXAMPLES (default 80) derandomized examples per method and kind;
`make fuzz` runs many more with fresh randomness.
"""

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from security_support import AGENT_CONTROL, POLICY_SERVICE

from backup.v1 import agent_control_pb2 as agent_api
from backup.v1 import agent_control_pb2_grpc as agent_grpc
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "80"))
RANDOM = os.environ.get("FUZZ_RANDOM", "") == "1"  # make fuzz: new examples each run
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
CALL_TIMEOUT = 5.0
STREAM_WAIT = 0.3  # a watch that has nothing to say yet is left after this
SENTINEL = "zz-fuzz-sentinel-4b1d"
METHODS = [*POLICY_SERVICE.methods, *AGENT_CONTROL.methods]

INT_LIMITS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def integers(field: FieldDescriptor) -> st.SearchStrategy[int]:
    low, high = INT_LIMITS[field.type]
    boundaries = [low, high, 0, 1, -1, 2**31 - 1, 2**53, 999_999_999, 1_000_000_000]
    edges = st.sampled_from([value for value in boundaries if low <= value <= high])
    choices = [edges, st.integers(low, high), st.integers(-3, 300).filter(lambda v: v >= low)]
    if field.type == FieldDescriptor.TYPE_ENUM:
        choices.append(st.sampled_from([value.number for value in field.enum_type.values]))
    return st.one_of(choices)


def strings(allowed: Path, closed_port: int) -> st.SearchStrategy[str]:
    """Text of every shape the edge must judge: ids, paths, addresses, and garbage."""
    interesting = [
        "", " ", "nightly", "web-1", SENTINEL[:-1], "a" * 63, "a" * 64, "A", "-x", "x" * 5000,
        "/", "/etc/shadow", f"{allowed}/source", f"{allowed}/repository", f"{allowed}/../x",
        "relative/path", "/a\x00b", "\u202e", "ünïcødé", "\ud7ff", "*.tmp", "cache/", "\\",
        "[z-a]", "# comment", "!keep", f"127.0.0.1:{closed_port}", "unix:5555", "dns:1",
        "[::1]:1", "[::1", "host:0", "host:65536", "host:٣", "s-20260101-000000-00000000",
        "j-20260101-000000-00000000", "p" * 300, "name\nnewline", "create_time", "name,bogus",
        '{"q":"policies","p":"x"}', "eyJxIjoicG9saWNpZXMiLCJwIjoiXHVkODAwIn0",
    ]
    return st.one_of(st.sampled_from(interesting), st.text(max_size=40))


class Values:
    """Hypothesis strategies for any message of the protos, built from its descriptor."""

    def __init__(self, allowed: Path, closed_port: int) -> None:
        self.text = strings(allowed, closed_port)
        self.floats = st.floats(allow_nan=True, allow_infinity=True)

    def scalar(self, field: FieldDescriptor) -> st.SearchStrategy[Any]:
        if field.type == FieldDescriptor.TYPE_STRING:
            return self.text
        if field.type == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=64)
        if field.type == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return self.floats
        return integers(field)

    def message(self, descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Any]:
        cls = message_factory.GetMessageClass(descriptor)
        fields = {
            field.name: self.field(field, depth)
            for field in descriptor.fields
            if depth < 3 or field.type != FieldDescriptor.TYPE_MESSAGE
        }

        def build(values: dict[str, Any]) -> Any:
            built = cls()
            for name, value in values.items():
                field = descriptor.fields_by_name[name]
                target = getattr(built, name)
                if field.is_repeated and field.type == FieldDescriptor.TYPE_MESSAGE:
                    for item in value:
                        target.add().CopyFrom(item)
                elif field.is_repeated:
                    target.extend(value)
                elif field.type == FieldDescriptor.TYPE_MESSAGE:
                    target.CopyFrom(value)
                else:
                    setattr(built, name, value)
            return built

        return st.fixed_dictionaries({}, optional=fields).map(build)

    def field(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            single = st.deferred(lambda: self.message(field.message_type, depth + 1))
        else:
            single = self.scalar(field)
        if field.is_repeated:
            return st.lists(single, max_size=4)
        return single


def malformed(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Raw bytes, and valid encodings cut short or with a byte changed."""

    def damaged(data: bytes, position: int, byte: int, cut: bool) -> bytes:
        if not data:
            return bytes([byte])
        position %= len(data)
        if cut:
            return data[:position]
        return data[:position] + bytes([byte]) + data[position + 1 :]

    return st.one_of(
        st.binary(max_size=200),
        st.sampled_from([b"\x0a\x02\xff\xfe", b"\x0a\x7f\xff\xfe", b"\xff" * 11, b"\x08" * 3]),
        st.builds(damaged, valid, st.integers(0, 10_000), st.integers(0, 255), st.booleans()),
    )


class Deployment:
    """A server and an agent in a process of their own (tests/fuzz_deployment.py), so the
    fuzzing's sync client shares no event loop with the tests after it; its log is a file."""

    def __init__(self, root: Path, closed_port: int) -> None:
        self.allowed = root / "allowed"
        (self.allowed / "source").mkdir(parents=True)
        (self.allowed / "source" / "file").write_bytes(b"fuzz\n")
        self.log = root / "deployment.log"
        self._log_file = open(self.log, "w")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("fuzz_deployment.py")), str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
        )
        assert self.process.stdout is not None
        addresses = json.loads(self.process.stdout.readline() or "{}")
        assert addresses, self.log.read_text()
        self.channels = {
            POLICY_SERVICE.full_name: grpc.insecure_channel(addresses["server"]),
            AGENT_CONTROL.full_name: grpc.insecure_channel(addresses["agent"]),
        }
        self.values = Values(self.allowed, closed_port)

    def call(self, method: MethodDescriptor, request: bytes) -> grpc.StatusCode:
        """Sends raw bytes to `method`; returns the status (OK after a first reply)."""
        channel = self.channels[method.containing_service.full_name]
        path = f"/{method.containing_service.full_name}/{method.name}"
        try:
            if method.server_streaming:
                stream = channel.unary_stream(path)(request, timeout=CALL_TIMEOUT)
                timer = threading.Timer(STREAM_WAIT, stream.cancel)
                timer.start()
                try:
                    next(stream, None)
                finally:
                    timer.cancel()
                    stream.cancel()
                code = stream.code()
                return grpc.StatusCode.OK if code == grpc.StatusCode.CANCELLED else code
            channel.unary_unary(path)(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    def crashes(self) -> list[str]:
        """Log lines of the deployment that are tracebacks or errors."""
        return [
            line
            for line in self.log.read_text().splitlines()
            if "Traceback" in line or " ERROR " in line or " CRITICAL " in line
        ]

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log_file.close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One deployment for every method, holding a policy and a restore point that must survive."""
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        running = Deployment(tmp_path_factory.mktemp("fuzz"), closed.getsockname()[1])
        try:
            sentinel_data(running)
            yield running
        finally:
            running.close()


def sentinel_policy(deployment: Deployment) -> pb.BackupPolicy:
    return pb.BackupPolicy(
        id=SENTINEL,
        name="must survive the fuzzing",
        source_paths=[str(deployment.allowed / "source")],
        repository=str(deployment.allowed / "repository"),
    )


def sentinel_data(deployment: Deployment) -> None:
    """A stored policy on the server and a restore point on the agent, made before fuzzing."""
    service = api_grpc.PolicyServiceStub(deployment.channels[POLICY_SERVICE.full_name])
    deployment.stored = service.CreatePolicy(
        api.CreatePolicyRequest(policy_id=SENTINEL, policy=sentinel_policy(deployment))
    )
    control = agent_grpc.AgentControlStub(deployment.channels[AGENT_CONTROL.full_name])
    job = control.StartJob(agent_api.StartJobRequest(policy=sentinel_policy(deployment))).job
    for _ in range(500):
        job = control.GetJob(agent_api.GetJobRequest(job_id=job.id))
        if job.state != pb.JOB_STATE_RUNNING:
            break
        threading.Event().wait(0.02)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
    deployment.point_id = job.restore_point_id


def assert_intact(deployment: Deployment) -> None:
    """Both processes serve, the sentinel policy is unchanged, its restore point listed."""
    for channel in deployment.channels.values():
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    service = api_grpc.PolicyServiceStub(deployment.channels[POLICY_SERVICE.full_name])
    assert service.GetPolicy(api.GetPolicyRequest(policy_id=SENTINEL)) == deployment.stored
    control = agent_grpc.AgentControlStub(deployment.channels[AGENT_CONTROL.full_name])
    points = control.ListRestorePoints(agent_api.ListRestorePointsRequest(policy_id=SENTINEL))
    assert deployment.point_id in {point.id for point in points.restore_points}


def fuzz_settings() -> Callable[[Any], Any]:
    return settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


def assert_clean_log(deployment: Deployment) -> None:
    crashes = deployment.crashes()
    assert not crashes, crashes[:3]


@pytest.mark.parametrize("method", METHODS, ids=lambda method: method.name)
def test_fuzzed_fields(deployment: Deployment, method: MethodDescriptor) -> None:
    """Requests with random and boundary values in every field get a precise status, never UNKNOWN or INTERNAL, and nothing is logged as a crash."""
    answers: dict[grpc.StatusCode, int] = {}

    @fuzz_settings()
    @given(request=deployment.values.message(method.input_type))
    def one(request: Any) -> None:
        code = deployment.call(method, request.SerializeToString())
        answers[code] = answers.get(code, 0) + 1
        assert code not in FORBIDDEN, f"{code.name} for {request}"

    one()
    assert_clean_log(deployment)
    assert_intact(deployment)
    assert sum(answers.values()) >= min(EXAMPLES, 10)


@pytest.mark.parametrize("method", METHODS, ids=lambda method: method.name)
def test_malformed_bytes(deployment: Deployment, method: MethodDescriptor) -> None:
    """Raw bytes and damaged encodings are INVALID_ARGUMENT or a precise status, never UNKNOWN or INTERNAL, with no traceback."""
    valid = deployment.values.message(method.input_type).map(lambda m: m.SerializeToString())

    @fuzz_settings()
    @given(request=malformed(valid))
    def one(request: bytes) -> None:
        code = deployment.call(method, request)
        assert code not in FORBIDDEN, f"{code.name} for {request!r}"

    one()
    assert_clean_log(deployment)
    assert_intact(deployment)


def test_every_method_of_both_services_is_fuzzed() -> None:
    """The fuzzed methods come from the descriptors, so a method added later is fuzzed too."""
    assert {m.name for m in METHODS} >= {"CreatePolicy", "WatchSession", "StartJob", "StopJob"}
    assert len(METHODS) == len(POLICY_SERVICE.methods) + len(AGENT_CONTROL.methods)

from backup.v1 import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartJobRequest(_message.Message):
    __slots__ = ("session_id", "policy")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    policy: _resources_pb2.BackupPolicy
    def __init__(self, session_id: _Optional[str] = ..., policy: _Optional[_Union[_resources_pb2.BackupPolicy, _Mapping]] = ...) -> None: ...

class StartJobResponse(_message.Message):
    __slots__ = ("job", "already_running")
    JOB_FIELD_NUMBER: _ClassVar[int]
    ALREADY_RUNNING_FIELD_NUMBER: _ClassVar[int]
    job: _resources_pb2.Job
    already_running: bool
    def __init__(self, job: _Optional[_Union[_resources_pb2.Job, _Mapping]] = ..., already_running: _Optional[bool] = ...) -> None: ...

class StopJobRequest(_message.Message):
    __slots__ = ("session_id", "policy_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    policy_id: str
    def __init__(self, session_id: _Optional[str] = ..., policy_id: _Optional[str] = ...) -> None: ...

class StopJobResponse(_message.Message):
    __slots__ = ("job", "was_running")
    JOB_FIELD_NUMBER: _ClassVar[int]
    WAS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    job: _resources_pb2.Job
    was_running: bool
    def __init__(self, job: _Optional[_Union[_resources_pb2.Job, _Mapping]] = ..., was_running: _Optional[bool] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("policy_id", "session_id")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    session_id: str
    def __init__(self, policy_id: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[_resources_pb2.Job, _Mapping]]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListRestorePointsRequest(_message.Message):
    __slots__ = ("policy_id",)
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    def __init__(self, policy_id: _Optional[str] = ...) -> None: ...

class ListRestorePointsResponse(_message.Message):
    __slots__ = ("restore_points",)
    RESTORE_POINTS_FIELD_NUMBER: _ClassVar[int]
    restore_points: _containers.RepeatedCompositeFieldContainer[_resources_pb2.RestorePoint]
    def __init__(self, restore_points: _Optional[_Iterable[_Union[_resources_pb2.RestorePoint, _Mapping]]] = ...) -> None: ...

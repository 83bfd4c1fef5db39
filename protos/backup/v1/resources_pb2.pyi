import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProtectionGroupKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTECTION_GROUP_KIND_UNSPECIFIED: _ClassVar[ProtectionGroupKind]
    PROTECTION_GROUP_KIND_MANUAL: _ClassVar[ProtectionGroupKind]
    PROTECTION_GROUP_KIND_PREINSTALLED_AGENTS: _ClassVar[ProtectionGroupKind]

class SessionTrigger(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_TRIGGER_UNSPECIFIED: _ClassVar[SessionTrigger]
    SESSION_TRIGGER_OPERATOR: _ClassVar[SessionTrigger]
    SESSION_TRIGGER_SCHEDULE: _ClassVar[SessionTrigger]
    SESSION_TRIGGER_RETRY: _ClassVar[SessionTrigger]
    SESSION_TRIGGER_WINDOW: _ClassVar[SessionTrigger]

class SessionAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_ACTION_UNSPECIFIED: _ClassVar[SessionAction]
    SESSION_ACTION_START: _ClassVar[SessionAction]
    SESSION_ACTION_STOP: _ClassVar[SessionAction]

class SessionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATE_UNSPECIFIED: _ClassVar[SessionState]
    SESSION_STATE_RUNNING: _ClassVar[SessionState]
    SESSION_STATE_SUCCESS: _ClassVar[SessionState]
    SESSION_STATE_WARNING: _ClassVar[SessionState]
    SESSION_STATE_FAILED: _ClassVar[SessionState]

class Delivery(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELIVERY_UNSPECIFIED: _ClassVar[Delivery]
    DELIVERY_PENDING: _ClassVar[Delivery]
    DELIVERY_RECEIVED: _ClassVar[Delivery]
    DELIVERY_NOT_RECEIVED: _ClassVar[Delivery]
    DELIVERY_SKIPPED: _ClassVar[Delivery]
    DELIVERY_REJECTED: _ClassVar[Delivery]
    DELIVERY_CANCELLED: _ClassVar[Delivery]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_STOPPED: _ClassVar[JobState]
PROTECTION_GROUP_KIND_UNSPECIFIED: ProtectionGroupKind
PROTECTION_GROUP_KIND_MANUAL: ProtectionGroupKind
PROTECTION_GROUP_KIND_PREINSTALLED_AGENTS: ProtectionGroupKind
SESSION_TRIGGER_UNSPECIFIED: SessionTrigger
SESSION_TRIGGER_OPERATOR: SessionTrigger
SESSION_TRIGGER_SCHEDULE: SessionTrigger
SESSION_TRIGGER_RETRY: SessionTrigger
SESSION_TRIGGER_WINDOW: SessionTrigger
SESSION_ACTION_UNSPECIFIED: SessionAction
SESSION_ACTION_START: SessionAction
SESSION_ACTION_STOP: SessionAction
SESSION_STATE_UNSPECIFIED: SessionState
SESSION_STATE_RUNNING: SessionState
SESSION_STATE_SUCCESS: SessionState
SESSION_STATE_WARNING: SessionState
SESSION_STATE_FAILED: SessionState
DELIVERY_UNSPECIFIED: Delivery
DELIVERY_PENDING: Delivery
DELIVERY_RECEIVED: Delivery
DELIVERY_NOT_RECEIVED: Delivery
DELIVERY_SKIPPED: Delivery
DELIVERY_REJECTED: Delivery
DELIVERY_CANCELLED: Delivery
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_STOPPED: JobState

class Computer(_message.Message):
    __slots__ = ("name", "address")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class ProtectionGroup(_message.Message):
    __slots__ = ("id", "name", "kind", "computers", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    COMPUTERS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    kind: ProtectionGroupKind
    computers: _containers.RepeatedCompositeFieldContainer[Computer]
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., kind: _Optional[_Union[ProtectionGroupKind, str]] = ..., computers: _Optional[_Iterable[_Union[Computer, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BackupPolicy(_message.Message):
    __slots__ = ("id", "name", "description", "computers", "protection_group_ids", "source_paths", "repository", "retention_points", "throttle_bytes_per_second", "create_time", "update_time", "exclude_patterns", "schedule", "backup_window", "retry", "next_run_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    COMPUTERS_FIELD_NUMBER: _ClassVar[int]
    PROTECTION_GROUP_IDS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PATHS_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    RETENTION_POINTS_FIELD_NUMBER: _ClassVar[int]
    THROTTLE_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_PATTERNS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    BACKUP_WINDOW_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    NEXT_RUN_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    computers: _containers.RepeatedCompositeFieldContainer[Computer]
    protection_group_ids: _containers.RepeatedScalarFieldContainer[str]
    source_paths: _containers.RepeatedScalarFieldContainer[str]
    repository: str
    retention_points: int
    throttle_bytes_per_second: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    exclude_patterns: _containers.RepeatedScalarFieldContainer[str]
    schedule: Schedule
    backup_window: BackupWindow
    retry: RetryPolicy
    next_run_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., computers: _Optional[_Iterable[_Union[Computer, _Mapping]]] = ..., protection_group_ids: _Optional[_Iterable[str]] = ..., source_paths: _Optional[_Iterable[str]] = ..., repository: _Optional[str] = ..., retention_points: _Optional[int] = ..., throttle_bytes_per_second: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exclude_patterns: _Optional[_Iterable[str]] = ..., schedule: _Optional[_Union[Schedule, _Mapping]] = ..., backup_window: _Optional[_Union[BackupWindow, _Mapping]] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., next_run_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Schedule(_message.Message):
    __slots__ = ("cron", "time_zone", "paused")
    CRON_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    cron: str
    time_zone: str
    paused: bool
    def __init__(self, cron: _Optional[str] = ..., time_zone: _Optional[str] = ..., paused: _Optional[bool] = ...) -> None: ...

class BackupWindow(_message.Message):
    __slots__ = ("start", "end", "time_zone")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    start: str
    end: str
    time_zone: str
    def __init__(self, start: _Optional[str] = ..., end: _Optional[str] = ..., time_zone: _Optional[str] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("attempts", "interval")
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    attempts: int
    interval: _duration_pb2.Duration
    def __init__(self, attempts: _Optional[int] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ComputerResult(_message.Message):
    __slots__ = ("computer", "protection_group_id", "delivery", "detail", "latency", "job_id", "job", "reconciled")
    COMPUTER_FIELD_NUMBER: _ClassVar[int]
    PROTECTION_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    RECONCILED_FIELD_NUMBER: _ClassVar[int]
    computer: Computer
    protection_group_id: str
    delivery: Delivery
    detail: str
    latency: _duration_pb2.Duration
    job_id: str
    job: Job
    reconciled: bool
    def __init__(self, computer: _Optional[_Union[Computer, _Mapping]] = ..., protection_group_id: _Optional[str] = ..., delivery: _Optional[_Union[Delivery, str]] = ..., detail: _Optional[str] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., job_id: _Optional[str] = ..., job: _Optional[_Union[Job, _Mapping]] = ..., reconciled: _Optional[bool] = ...) -> None: ...

class SessionStatistics(_message.Message):
    __slots__ = ("total", "pending", "received", "not_received", "skipped", "rejected", "cancelled", "jobs_running", "jobs_succeeded", "jobs_failed", "jobs_stopped", "jobs_unknown")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    NOT_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    JOBS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    JOBS_SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    JOBS_FAILED_FIELD_NUMBER: _ClassVar[int]
    JOBS_STOPPED_FIELD_NUMBER: _ClassVar[int]
    JOBS_UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    total: int
    pending: int
    received: int
    not_received: int
    skipped: int
    rejected: int
    cancelled: int
    jobs_running: int
    jobs_succeeded: int
    jobs_failed: int
    jobs_stopped: int
    jobs_unknown: int
    def __init__(self, total: _Optional[int] = ..., pending: _Optional[int] = ..., received: _Optional[int] = ..., not_received: _Optional[int] = ..., skipped: _Optional[int] = ..., rejected: _Optional[int] = ..., cancelled: _Optional[int] = ..., jobs_running: _Optional[int] = ..., jobs_succeeded: _Optional[int] = ..., jobs_failed: _Optional[int] = ..., jobs_stopped: _Optional[int] = ..., jobs_unknown: _Optional[int] = ...) -> None: ...

class PolicySession(_message.Message):
    __slots__ = ("id", "policy_id", "action", "state", "start_time", "end_time", "computer_results", "statistics", "warnings", "outcome", "outcome_time", "trigger", "retry_of_session_id", "attempt")
    ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    COMPUTER_RESULTS_FIELD_NUMBER: _ClassVar[int]
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_TIME_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    RETRY_OF_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    id: str
    policy_id: str
    action: SessionAction
    state: SessionState
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    computer_results: _containers.RepeatedCompositeFieldContainer[ComputerResult]
    statistics: SessionStatistics
    warnings: _containers.RepeatedScalarFieldContainer[str]
    outcome: SessionState
    outcome_time: _timestamp_pb2.Timestamp
    trigger: SessionTrigger
    retry_of_session_id: str
    attempt: int
    def __init__(self, id: _Optional[str] = ..., policy_id: _Optional[str] = ..., action: _Optional[_Union[SessionAction, str]] = ..., state: _Optional[_Union[SessionState, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., computer_results: _Optional[_Iterable[_Union[ComputerResult, _Mapping]]] = ..., statistics: _Optional[_Union[SessionStatistics, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ..., outcome: _Optional[_Union[SessionState, str]] = ..., outcome_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trigger: _Optional[_Union[SessionTrigger, str]] = ..., retry_of_session_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "policy_id", "session_id", "state", "start_time", "end_time", "bytes_total", "bytes_done", "files_done", "restore_point_id", "error", "warnings", "bytes_read", "bytes_written")
    ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    FILES_DONE_FIELD_NUMBER: _ClassVar[int]
    RESTORE_POINT_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    BYTES_READ_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    policy_id: str
    session_id: str
    state: JobState
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    bytes_total: int
    bytes_done: int
    files_done: int
    restore_point_id: str
    error: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    bytes_read: int
    bytes_written: int
    def __init__(self, id: _Optional[str] = ..., policy_id: _Optional[str] = ..., session_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bytes_total: _Optional[int] = ..., bytes_done: _Optional[int] = ..., files_done: _Optional[int] = ..., restore_point_id: _Optional[str] = ..., error: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., bytes_read: _Optional[int] = ..., bytes_written: _Optional[int] = ...) -> None: ...

class RestorePoint(_message.Message):
    __slots__ = ("id", "policy_id", "job_id", "create_time", "file_count", "total_bytes", "added_bytes", "computer")
    ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    FILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    ADDED_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPUTER_FIELD_NUMBER: _ClassVar[int]
    id: str
    policy_id: str
    job_id: str
    create_time: _timestamp_pb2.Timestamp
    file_count: int
    total_bytes: int
    added_bytes: int
    computer: str
    def __init__(self, id: _Optional[str] = ..., policy_id: _Optional[str] = ..., job_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., file_count: _Optional[int] = ..., total_bytes: _Optional[int] = ..., added_bytes: _Optional[int] = ..., computer: _Optional[str] = ...) -> None: ...

class ComputerStatus(_message.Message):
    __slots__ = ("computer", "policy_id", "last_job", "last_success_time", "last_restore_point_id", "consecutive_failures", "last_contact_time")
    COMPUTER_FIELD_NUMBER: _ClassVar[int]
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_JOB_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESS_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_RESTORE_POINT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    LAST_CONTACT_TIME_FIELD_NUMBER: _ClassVar[int]
    computer: Computer
    policy_id: str
    last_job: Job
    last_success_time: _timestamp_pb2.Timestamp
    last_restore_point_id: str
    consecutive_failures: int
    last_contact_time: _timestamp_pb2.Timestamp
    def __init__(self, computer: _Optional[_Union[Computer, _Mapping]] = ..., policy_id: _Optional[str] = ..., last_job: _Optional[_Union[Job, _Mapping]] = ..., last_success_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_restore_point_id: _Optional[str] = ..., consecutive_failures: _Optional[int] = ..., last_contact_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

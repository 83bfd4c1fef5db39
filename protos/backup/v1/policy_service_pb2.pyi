from backup.v1 import resources_pb2 as _resources_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_VIEW_UNSPECIFIED: _ClassVar[SessionView]
    SESSION_VIEW_BASIC: _ClassVar[SessionView]
    SESSION_VIEW_FULL: _ClassVar[SessionView]
SESSION_VIEW_UNSPECIFIED: SessionView
SESSION_VIEW_BASIC: SessionView
SESSION_VIEW_FULL: SessionView

class CreateProtectionGroupRequest(_message.Message):
    __slots__ = ("protection_group_id", "protection_group")
    PROTECTION_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    PROTECTION_GROUP_FIELD_NUMBER: _ClassVar[int]
    protection_group_id: str
    protection_group: _resources_pb2.ProtectionGroup
    def __init__(self, protection_group_id: _Optional[str] = ..., protection_group: _Optional[_Union[_resources_pb2.ProtectionGroup, _Mapping]] = ...) -> None: ...

class GetProtectionGroupRequest(_message.Message):
    __slots__ = ("protection_group_id",)
    PROTECTION_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    protection_group_id: str
    def __init__(self, protection_group_id: _Optional[str] = ...) -> None: ...

class ListProtectionGroupsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListProtectionGroupsResponse(_message.Message):
    __slots__ = ("protection_groups", "next_page_token")
    PROTECTION_GROUPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    protection_groups: _containers.RepeatedCompositeFieldContainer[_resources_pb2.ProtectionGroup]
    next_page_token: str
    def __init__(self, protection_groups: _Optional[_Iterable[_Union[_resources_pb2.ProtectionGroup, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteProtectionGroupRequest(_message.Message):
    __slots__ = ("protection_group_id",)
    PROTECTION_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    protection_group_id: str
    def __init__(self, protection_group_id: _Optional[str] = ...) -> None: ...

class CreatePolicyRequest(_message.Message):
    __slots__ = ("policy_id", "policy")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    policy: _resources_pb2.BackupPolicy
    def __init__(self, policy_id: _Optional[str] = ..., policy: _Optional[_Union[_resources_pb2.BackupPolicy, _Mapping]] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("policy_id",)
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    def __init__(self, policy_id: _Optional[str] = ...) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ("policies", "next_page_token")
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[_resources_pb2.BackupPolicy]
    next_page_token: str
    def __init__(self, policies: _Optional[_Iterable[_Union[_resources_pb2.BackupPolicy, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdatePolicyRequest(_message.Message):
    __slots__ = ("policy", "update_mask")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    policy: _resources_pb2.BackupPolicy
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, policy: _Optional[_Union[_resources_pb2.BackupPolicy, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class DeletePolicyRequest(_message.Message):
    __slots__ = ("policy_id", "force")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    force: bool
    def __init__(self, policy_id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class StartPolicyRequest(_message.Message):
    __slots__ = ("policy_id", "session_id", "computer_names", "retry_of_session_id")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    COMPUTER_NAMES_FIELD_NUMBER: _ClassVar[int]
    RETRY_OF_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    session_id: str
    computer_names: _containers.RepeatedScalarFieldContainer[str]
    retry_of_session_id: str
    def __init__(self, policy_id: _Optional[str] = ..., session_id: _Optional[str] = ..., computer_names: _Optional[_Iterable[str]] = ..., retry_of_session_id: _Optional[str] = ...) -> None: ...

class StopPolicyRequest(_message.Message):
    __slots__ = ("policy_id", "session_id")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    session_id: str
    def __init__(self, policy_id: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("policy_id", "page_size", "page_token", "view")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    page_size: int
    page_token: str
    view: SessionView
    def __init__(self, policy_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., view: _Optional[_Union[SessionView, str]] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions", "next_page_token")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[_resources_pb2.PolicySession]
    next_page_token: str
    def __init__(self, sessions: _Optional[_Iterable[_Union[_resources_pb2.PolicySession, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

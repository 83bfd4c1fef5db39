"""PolicyService over gRPC: each method decodes, calls the domain, encodes."""

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import empty_pb2

from backup import status
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup.v1 import resources_pb2 as pb

from .control import Control
from .policies import Policies
from .queries import SessionQueries

Context = grpc.aio.ServicerContext[Any, Any]


class PolicyService(api_grpc.PolicyServiceServicer):
    def __init__(self, policies: Policies, control: Control, queries: SessionQueries) -> None:
        self._policies = policies
        self._control = control
        self._queries = queries

    @status.unary
    async def CreateProtectionGroup(
        self, request: api.CreateProtectionGroupRequest, context: Context
    ) -> pb.ProtectionGroup:
        return await self._policies.create_group(
            request.protection_group_id, request.protection_group
        )

    @status.unary
    async def GetProtectionGroup(
        self, request: api.GetProtectionGroupRequest, context: Context
    ) -> pb.ProtectionGroup:
        return await self._policies.get_group(request.protection_group_id)

    @status.unary
    async def ListProtectionGroups(
        self, request: api.ListProtectionGroupsRequest, context: Context
    ) -> api.ListProtectionGroupsResponse:
        groups, token = await self._policies.list_groups(request.page_size, request.page_token)
        return api.ListProtectionGroupsResponse(protection_groups=groups, next_page_token=token)

    @status.unary
    async def DeleteProtectionGroup(
        self, request: api.DeleteProtectionGroupRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._policies.delete_group(request.protection_group_id)
        return empty_pb2.Empty()

    @status.unary
    async def CreatePolicy(
        self, request: api.CreatePolicyRequest, context: Context
    ) -> pb.BackupPolicy:
        return await self._policies.create_policy(request.policy_id, request.policy)

    @status.unary
    async def GetPolicy(self, request: api.GetPolicyRequest, context: Context) -> pb.BackupPolicy:
        return await self._policies.get_policy(request.policy_id)

    @status.unary
    async def ListPolicies(
        self, request: api.ListPoliciesRequest, context: Context
    ) -> api.ListPoliciesResponse:
        policies, token = await self._policies.list_policies(request.page_size, request.page_token)
        return api.ListPoliciesResponse(policies=policies, next_page_token=token)

    @status.unary
    async def UpdatePolicy(
        self, request: api.UpdatePolicyRequest, context: Context
    ) -> pb.BackupPolicy:
        return await self._policies.update_policy(request.policy, request.update_mask)

    @status.unary
    async def DeletePolicy(
        self, request: api.DeletePolicyRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._policies.delete_policy(request.policy_id)
        return empty_pb2.Empty()

    @status.unary
    async def StartPolicy(
        self, request: api.StartPolicyRequest, context: Context
    ) -> pb.PolicySession:
        return await self._control.start_policy(
            request.policy_id,
            request.session_id,
            request.computer_names,
            request.retry_of_session_id,
        )

    @status.unary
    async def StopPolicy(
        self, request: api.StopPolicyRequest, context: Context
    ) -> pb.PolicySession:
        return await self._control.stop_policy(request.policy_id, request.session_id)

    @status.unary
    async def GetSession(
        self, request: api.GetSessionRequest, context: Context
    ) -> pb.PolicySession:
        return await self._queries.get_session(request.session_id)

    @status.unary
    async def ListSessions(
        self, request: api.ListSessionsRequest, context: Context
    ) -> api.ListSessionsResponse:
        sessions, token = await self._queries.list_sessions(
            request.policy_id, request.page_size, request.page_token, request.view
        )
        return api.ListSessionsResponse(sessions=sessions, next_page_token=token)

    @status.streaming
    async def WatchSession(
        self, request: api.WatchSessionRequest, context: Context
    ) -> AsyncIterator[pb.PolicySession]:
        async for snapshot in self._queries.watch_session(request.session_id):
            yield snapshot

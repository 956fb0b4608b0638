"""/admin/...: the operators' API (CONTRACT 3.6), behind one guard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Controller, Request, get, patch, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, Reference, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import FromPath, FromQuery, QueryParameter

from service.admin.paging import parse_id
from service.admin.views import (
    ClientView,
    EventPage,
    FamilyDetail,
    FamilyPage,
    KeyPage,
    KeyView,
    NewClientView,
    NewUserView,
    Revoked,
    UserView,
)
from service.db.families import RevokeBy
from service.events import Caller
from service.http.dependencies import CallerDep, ServicesDep
from service.http.docs import OAuthErrorBody
from service.http.guards import admin_guard
from service.http.json_body import typed_json
from service.http.state import Services

BodyT = TypeVar("BodyT", bound=msgspec.Struct)


class NewUser(msgspec.Struct):
    username: str
    password: str


class UserPatch(msgspec.Struct):
    disabled: bool


class NewPassword(msgspec.Struct):
    password: str


class NewClient(msgspec.Struct):
    name: str
    grant_types: list[str] = []
    scopes: list[str] = []
    public: bool = False
    can_introspect: bool = False
    is_admin: bool = False
    require_dpop: bool = False  # CONTRACT 3.9


class RotateKeys(msgspec.Struct):
    force: bool = False


async def strict(request: Request[Any, Any, Any], kind: type[BodyT]) -> BodyT:
    """The body decoded strictly: Litestar converts leniently ("true" or 1 would
    pass for a boolean), and an operator's typo must not grant admin rights."""
    body: BodyT = typed_json(await request.body(), kind, kind.__struct_fields__)
    return body


_DESCRIPTIONS = {
    400: "invalid_request: a malformed id, body, limit, cursor or filter",
    401: "invalid_token: a missing, malformed, expired, revoked or forged Bearer token",
    403: "access_denied: the client does not have the admin permission",
    404: "not_found: no such id",
    409: "conflict",
    413: "the body is larger than 64 KiB",
    422: "invalid_request: a password (8 to 1024 characters) or username refused",
    503: "temporarily_unavailable: the database did not answer in time",
}


def errors(*extra: int) -> dict[int, ResponseSpec]:
    """The error answers of an admin operation, in Rotor's one error body."""
    codes = sorted({400, 401, 403, 503, *extra})
    return {
        code: ResponseSpec(
            data_container=OAuthErrorBody, description=_DESCRIPTIONS[code], generate_examples=False
        )
        for code in codes
    }


_JSON_TYPES = {str: OpenAPIType.STRING, bool: OpenAPIType.BOOLEAN, int: OpenAPIType.INTEGER}


def _schema(struct: type[msgspec.Struct]) -> Schema:
    properties: dict[str, Schema | Reference] = {}
    for info in msgspec.structs.fields(struct):
        if info.type == list[str]:
            properties[info.name] = Schema(
                type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING)
            )
        else:
            properties[info.name] = Schema(type=_JSON_TYPES[info.type])
    required = [info.name for info in msgspec.structs.fields(struct) if info.required]
    return Schema(type=OpenAPIType.OBJECT, properties=properties, required=required or None)


def json_body(struct: type[msgspec.Struct], *, required: bool = True) -> type[Operation]:
    """Documents the JSON body that `strict` decodes (Litestar's own body
    parameter would decode it leniently, and first)."""
    body = RequestBody(
        required=required,
        content={"application/json": OpenAPIMediaType(schema=_schema(struct))},
    )

    @dataclass
    class JSONBodyOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = body

    return JSONBodyOperation


class AdminController(Controller):
    path = "/admin"
    guards = [admin_guard]
    tags = ["admin"]
    security = [{"bearer": []}]

    @post(
        "/users",
        status_code=201,
        operation_id="admin_create_user",
        responses=errors(409, 413, 422),
        operation_class=json_body(NewUser),
    )
    async def create_user(
        self, request: Request[Any, Any, Any], services: ServicesDep
    ) -> NewUserView:
        data = await strict(request, NewUser)
        return await services.account_admin.create_user(data.username, data.password)

    @get("/users/{user_id:str}", operation_id="admin_get_user", responses=errors(404))
    async def get_user(self, services: ServicesDep, user_id: FromPath[str]) -> UserView:
        return await services.account_admin.get_user(parse_id(user_id))

    @patch(
        "/users/{user_id:str}",
        operation_id="admin_patch_user",
        responses=errors(404, 413),
        operation_class=json_body(UserPatch),
    )
    async def patch_user(
        self,
        request: Request[Any, Any, Any],
        services: ServicesDep,
        caller: CallerDep,
        user_id: FromPath[str],
    ) -> UserView:
        data = await strict(request, UserPatch)
        return await services.account_admin.set_disabled(parse_id(user_id), data.disabled, caller)

    @post(
        "/users/{user_id:str}/password",
        status_code=204,
        operation_id="admin_set_password",
        responses=errors(404, 413, 422),
        operation_class=json_body(NewPassword),
    )
    async def set_password(
        self,
        request: Request[Any, Any, Any],
        services: ServicesDep,
        caller: CallerDep,
        user_id: FromPath[str],
    ) -> None:
        data = await strict(request, NewPassword)
        await services.account_admin.set_password(parse_id(user_id), data.password, caller)

    @get("/users/{user_id:str}/families", operation_id="admin_user_families", responses=errors(404))
    async def user_families(
        self,
        services: ServicesDep,
        user_id: FromPath[str],
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> FamilyPage:
        return await services.session_admin.user_families(parse_id(user_id), limit, cursor)

    @post(
        "/users/{user_id:str}/revoke",
        status_code=200,
        operation_id="admin_revoke_user",
        responses=errors(404),
    )
    async def revoke_user(
        self, services: ServicesDep, caller: CallerDep, user_id: FromPath[str]
    ) -> Revoked:
        return await _revoke(services, caller, "user", user_id)

    @post(
        "/clients",
        status_code=201,
        operation_id="admin_create_client",
        responses=errors(413),
        operation_class=json_body(NewClient),
    )
    async def create_client(
        self, request: Request[Any, Any, Any], services: ServicesDep
    ) -> NewClientView:
        data = await strict(request, NewClient)
        return await services.account_admin.create_client(
            name=data.name,
            grant_types=data.grant_types,
            scopes=data.scopes,
            public=data.public,
            can_introspect=data.can_introspect,
            is_admin=data.is_admin,
            require_dpop=data.require_dpop,
        )

    @get("/clients/{client_id:str}", operation_id="admin_get_client", responses=errors(404))
    async def get_client(self, services: ServicesDep, client_id: FromPath[str]) -> ClientView:
        return await services.account_admin.get_client(parse_id(client_id))

    @post(
        "/clients/{client_id:str}/revoke",
        status_code=200,
        operation_id="admin_revoke_client",
        responses=errors(404),
    )
    async def revoke_client(
        self, services: ServicesDep, caller: CallerDep, client_id: FromPath[str]
    ) -> Revoked:
        return await _revoke(services, caller, "client", client_id)

    @get("/families/{family_id:str}", operation_id="admin_get_family", responses=errors(404))
    async def get_family(self, services: ServicesDep, family_id: FromPath[str]) -> FamilyDetail:
        return await services.session_admin.family(parse_id(family_id))

    @post(
        "/families/{family_id:str}/revoke",
        status_code=200,
        operation_id="admin_revoke_family",
        responses=errors(404),
    )
    async def revoke_family(
        self, services: ServicesDep, caller: CallerDep, family_id: FromPath[str]
    ) -> Revoked:
        return await _revoke(services, caller, "family", family_id)

    @get("/events", operation_id="admin_events", responses=errors())
    async def events(
        self,
        services: ServicesDep,
        event_type: Annotated[str | None, QueryParameter(name="type")] = None,
        user_id: FromQuery[str | None] = None,
        family_id: FromQuery[str | None] = None,
        since: FromQuery[str | None] = None,
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> EventPage:
        return await services.event_admin.list(
            type=event_type,
            user_id=user_id,
            family_id=family_id,
            since=since,
            limit=limit,
            cursor=cursor,
        )

    @get("/keys", operation_id="admin_keys", responses=errors())
    async def keys(
        self,
        services: ServicesDep,
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> KeyPage:
        return await services.key_admin.list(limit, cursor)

    @post(
        "/keys/rotate",
        status_code=200,
        operation_id="admin_rotate_keys",
        responses=errors(409, 413),
        operation_class=json_body(RotateKeys, required=False),
    )
    async def rotate_keys(
        self, request: Request[Any, Any, Any], services: ServicesDep, caller: CallerDep
    ) -> KeyView:
        data = await strict(request, RotateKeys) if await request.body() else None
        key = await services.key_admin.rotate(data.force if data else False, caller)
        await services.keys.reload()
        return key

    @post(
        "/keys/{kid:str}/revoke",
        status_code=200,
        operation_id="admin_revoke_key",
        responses=errors(404),
    )
    async def revoke_key(
        self, services: ServicesDep, caller: CallerDep, kid: FromPath[str]
    ) -> KeyView:
        key = await services.key_admin.revoke(kid, caller)
        await services.keys.reload()
        return key


async def _revoke(services: Services, caller: Caller, by: RevokeBy, owner: str) -> Revoked:
    return Revoked(await services.session_admin.revoke(by, parse_id(owner), caller))

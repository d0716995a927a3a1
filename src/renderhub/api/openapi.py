"""The OpenAPI document: FastAPI's for its own routes, plus the ARR session and STS operations it cannot see."""

from __future__ import annotations

import re
import warnings
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from renderhub import errors
from renderhub.api import conversion_openapi
from renderhub.api.schemas import API_VERSIONS, LEASE, SESSION_ID
from renderhub.api.sessions import SESSION, SESSIONS
from renderhub.api.sts import STS_VERSIONS
from renderhub.leases import MAX_LEASE_MINUTES
from renderhub.models import ServerSize, SessionStatus
from renderhub.render.ports import PORT_RANGE

# The swagger's spelling; the hub answers /accounts/... too (RenderingSession.ps1), documented once.
STS = "/Accounts/{accountId}/token"
SESSION_TAG = "rendering session"
STS_TAG = "token service"


# What each error means on the session operations; the body is always ARR's error shape (responses.py).
ERRORS: dict[type[errors.RenderHubError], str] = {
    errors.BadRequest: "The api-version, session id, body or skipToken is not valid; `target` says which.",
    errors.Unauthorized: "The bearer token is missing, malformed, expired or revoked.",
    errors.Forbidden: "The token is for another account.",
    errors.NotFound: "No session with this id exists.",
    errors.Conflict: "A session with this id exists with other settings (create), or has ended (update).",
    errors.UnprocessableEntity: f"The new lease is not larger than the current one, or over {MAX_LEASE_MINUTES}.",
    errors.TooManyRequests: "The account's rate limit is exceeded: retry after Retry-After seconds.",
    errors.RenderHubError: "An unexpected error in the hub.",
    errors.StoreUnavailable: "The hub cannot reach its database: retry shortly.",
}
ERROR_HEADERS: dict[type[errors.RenderHubError], tuple[str, ...]] = {
    errors.Unauthorized: ("WWW-Authenticate",),
    errors.TooManyRequests: ("Retry-After",),
}
EVERY_CALL: tuple[type[errors.RenderHubError], ...] = (
    errors.BadRequest,
    errors.Unauthorized,
    errors.Forbidden,
    errors.TooManyRequests,
    errors.RenderHubError,
    errors.StoreUnavailable,
)


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _headers(*extra: str) -> dict[str, Any]:
    return {name: _ref("headers", name) for name in ("MS-CV", "api-supported-versions", *extra)}


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref("schemas", schema)}}


def _schemas() -> dict[str, Any]:
    port = {"type": "integer", "minimum": PORT_RANGE[0], "maximum": PORT_RANGE[1]}
    error = _ref("schemas", "error")
    return {
        "error": {
            "type": "object",
            "description": "ARR's error object. RenderHub sends `code`, `message` and, for bad input, `target`.",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "examples": ["BadRequest"]},
                "message": {"type": "string", "description": "For people; never carries a secret."},
                "details": {"type": "array", "items": error, "description": "Part of ARR's shape; not sent."},
                "target": {"type": "string", "description": "The parameter or field in error."},
                "innerError": {**error, "description": "Part of ARR's shape; not sent."},
            },
        },
        "error_response": {
            "type": "object",
            "description": "The body of every error response of the session API.",
            "required": ["error"],
            "properties": {"error": error},
        },
        "session_size": {"type": "string", "enum": [size.value for size in ServerSize]},
        "session_status": {
            "type": "string",
            "enum": [status.value for status in SessionStatus],
            "description": "Starting and Ready are live; Stopped, Expired and Error are terminal.",
        },
        "session_properties": {
            "type": "object",
            "description": "A rendering session. Fields a session does not have yet are omitted, never null.",
            "required": ["id", "creationTime", "elapsedTimeMinutes", LEASE, "size", "status"],
            "properties": {
                "id": {"type": "string", "description": "The id given at creation."},
                "creationTime": {"type": "string", "format": "date-time"},
                "elapsedTimeMinutes": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Whole minutes spent Ready, rounded down; frozen once the session ends.",
                },
                LEASE: {"type": "integer", "minimum": 0, "maximum": MAX_LEASE_MINUTES},
                "size": _ref("schemas", "session_size"),
                "status": _ref("schemas", "session_status"),
                "hostname": {"type": "string", "description": "From Ready on: the render server's host."},
                "handshakePort": {**port, "description": "From Ready on: where a client connects."},
                "arrInspectorPort": {**port, "description": "From Ready on: the inspector page."},
                "teraflops": {"type": "number", "description": "The size's computing power, once started."},
                "error": {**error, "description": "Why the session failed; only with status Error."},
            },
        },
        "create_session_settings": {
            "type": "object",
            "description": "Other fields are ignored.",
            "required": [LEASE, "size"],
            "properties": {
                LEASE: {"type": "integer", "minimum": 0, "maximum": MAX_LEASE_MINUTES},
                "size": {**_ref("schemas", "session_size"), "description": "Also accepted in any letter case."},
            },
        },
        "update_session_settings": {
            "type": "object",
            "description": "Other fields are ignored.",
            "required": [LEASE],
            "properties": {
                LEASE: {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": MAX_LEASE_MINUTES,
                    "description": "The new total lease: larger than the current one (it does not add).",
                },
            },
        },
        "sessions_list": {
            "type": "object",
            "required": ["sessions"],
            "properties": {
                "sessions": {"type": "array", "items": _ref("schemas", "session_properties")},
                "@nextLink": {
                    "type": "string",
                    "format": "uri",
                    "description": "Only when another page exists: its whole URL, api-version included.",
                },
            },
        },
        "StsTokenResponseMessage": {
            "type": "object",
            "required": ["AccessToken"],
            "properties": {"AccessToken": {"type": "string", "description": "A JWT for the session API."}},
        },
    }


def _components() -> dict[str, dict[str, Any]]:
    responses = {
        error.code: {
            "description": description,
            "headers": _headers(*ERROR_HEADERS.get(error, ())),
            "content": _json("error_response"),
        }
        for error, description in ERRORS.items()
    }
    return {
        "schemas": _schemas(),
        "responses": responses,
        "parameters": {
            "api_version": {
                "name": "api-version",
                "in": "query",
                "required": True,
                "schema": {"type": "string", "enum": list(API_VERSIONS)},
                "example": API_VERSIONS[0],
            },
            "account_id": {
                "name": "account_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "format": "uuid"},
            },
            "session_id": {
                "name": "session_id",
                "in": "path",
                "required": True,
                "description": "Case-sensitive.",
                "schema": {"type": "string", "pattern": f"^{SESSION_ID.pattern}$"},
            },
        },
        "headers": {
            "MS-CV": {"description": "A new correlation vector per response.", "schema": {"type": "string"}},
            "api-supported-versions": {"schema": {"type": "string"}},
            "WWW-Authenticate": {"schema": {"type": "string"}},
            "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}},
        },
        "securitySchemes": {
            "ArrToken": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": f"A token from the token service ({STS}).",
            },
            "AccountKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "`{accountId}:{accountKey}`, the key verbatim.",
            },
        },
    }


def _session_operation(
    operation_id: str,
    summary: str,
    success: dict[str, Any],
    also: tuple[type[errors.RenderHubError], ...] = (),
    body: str | None = None,
    session: bool = True,
) -> dict[str, Any]:
    params = ["api_version", "account_id"] + (["session_id"] if session else [])
    operation: dict[str, Any] = {
        "tags": [SESSION_TAG],
        "summary": summary,
        "operationId": operation_id,
        "security": [{"ArrToken": []}],
        "parameters": [_ref("parameters", name) for name in params],
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _json(body)}
    failures = sorted((*EVERY_CALL, *also), key=lambda error: error.status)
    operation["responses"] = {**success, **{str(e.status): _ref("responses", e.code) for e in failures}}
    return operation


def _paths() -> dict[str, dict[str, Any]]:
    session = {"description": "The session.", "headers": _headers(), "content": _json("session_properties")}
    created = {**session, "description": "Created: the new session, Starting."}
    retried = {**session, "description": "A session with this id and these settings exists (a retried create)."}
    skip = {
        "name": "skipToken",
        "in": "query",
        "description": "Where a page starts; clients follow @nextLink rather than build it.",
        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
    }
    listing = _session_operation(
        "RemoteRendering_ListSessions",
        "Lists the account's live (Starting and Ready) sessions, a page at a time.",
        {"200": {"description": "A page of sessions.", "headers": _headers(), "content": _json("sessions_list")}},
        session=False,
    )
    listing["parameters"].append(skip)
    return {
        SESSION: {
            "get": _session_operation(
                "RemoteRendering_GetSession", "Gets a session.", {"200": session}, (errors.NotFound,)
            ),
            "put": _session_operation(
                "RemoteRendering_CreateSession",
                "Creates a session and starts its render server.",
                {"200": retried, "201": created},
                (errors.Conflict,),
                body="create_session_settings",
            ),
            "patch": _session_operation(
                "RemoteRendering_UpdateSession",
                "Sets a new total lease.",
                {"200": {**session, "description": "The updated session."}},
                (errors.NotFound, errors.Conflict, errors.UnprocessableEntity),
                body="update_session_settings",
            ),
        },
        SESSION + "/:stop": {
            "post": _session_operation(
                "RemoteRendering_StopSession",
                "Stops a session (idempotent).",
                {"204": {"description": "Stopped; no body.", "headers": _headers()}},
                (errors.NotFound,),
            ),
        },
        SESSIONS: {"get": listing},
        STS: {"get": _token_operation()},
    }


def _token_operation() -> dict[str, Any]:
    versions = [version for version in STS_VERSIONS if version is not None]
    return {
        "tags": [STS_TAG],
        "summary": "Exchanges an account key for an access token; also answered at /accounts/{accountId}/token.",
        "operationId": "GetToken",
        "security": [{"AccountKey": []}],
        "parameters": [
            {"name": "accountId", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}},
            {"name": "api-version", "in": "query", "schema": {"type": "string", "enum": versions}},
        ],
        "responses": {
            "200": {
                "description": "A token.",
                "headers": {**_headers(), "Cache-Control": {"schema": {"type": "string"}}},
                "content": _json("StsTokenResponseMessage"),
            },
            "400": {
                "description": "The api-version is not supported.",
                "headers": _headers(),
                "content": _json("error_response"),
            },
            # ARR's token service answered these two with no body.
            "401": {
                "description": "The Authorization header is missing or names another account or key; no body.",
                "headers": _headers("WWW-Authenticate"),
            },
            "429": {"description": "Too many token requests; no body.", "headers": _headers("Retry-After")},
            "500": _ref("responses", errors.RenderHubError.code),
            "503": _ref("responses", errors.StoreUnavailable.code),
        },
    }


def _name_operations(paths: dict[str, dict[str, Any]]) -> None:
    """No operation id twice in the document (FastAPI gives one route's methods one id)."""
    seen: set[str] = set()
    for item in paths.values():
        for method, operation in item.items():
            operation_id = operation["operationId"]
            if operation_id in seen:  # another method of one route
                operation_id = f"{operation_id}_{method}"
            seen.add(operation_id)
            operation["operationId"] = operation_id


def _declare_path_parameters(paths: dict[str, dict[str, Any]]) -> None:
    """OpenAPI wants every {name} of a path declared; FastAPI declares only those its handlers take."""
    for path, item in paths.items():
        for operation in item.values():
            parameters = operation.setdefault("parameters", [])
            declared = {parameter.get("name") for parameter in parameters}
            for name in re.findall(r"{(\w+)}", path):
                if name not in declared:
                    parameters.append({"name": name, "in": "path", "required": True, "schema": {"type": "string"}})


def build_document(app: FastAPI) -> dict[str, Any]:
    """The whole document for /openapi.json and /docs; built once per app (app.py keeps it)."""
    with warnings.catch_warnings():
        # FastAPI warns of an id it gives two methods of one route; _name_operations fixes it.
        warnings.filterwarnings("ignore", "Duplicate Operation ID", UserWarning)
        document = get_openapi(
            title=app.title,
            version=app.version,
            openapi_version=app.openapi_version,
            description=app.description,
            routes=app.routes,
            separate_input_output_schemas=app.separate_input_output_schemas,
        )
    _declare_path_parameters(document["paths"])
    paths = {**_paths(), **conversion_openapi.paths()}  # the ARR operations first: what /docs is mostly read for
    for path, item in document["paths"].items():
        paths.setdefault(path, {}).update(item)
    _name_operations(paths)
    document["paths"] = paths
    components = document.setdefault("components", {})
    for kind, items in _components().items():
        components.setdefault(kind, {}).update(items)
    components["schemas"].update(conversion_openapi.schemas())
    components["responses"].update(conversion_openapi.responses())
    document["tags"] = [
        {"name": SESSION_TAG, "description": "ARR's session REST API, api-version 2021-01-01."},
        {"name": STS_TAG, "description": "The Mixed Reality STS: an account key in, a bearer token out."},
        *conversion_openapi.TAGS,
    ]
    return document

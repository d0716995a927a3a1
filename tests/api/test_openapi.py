"""The OpenAPI document: ARR's session and STS operations as the swagger names them, valid, and true to the wire."""

from __future__ import annotations

import collections
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest
from fastapi import FastAPI
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from schemathesis.specs.openapi.definitions import OPENAPI_31
from starlette.routing import Route

import renderhub.api.app
from renderhub.api import create_app
from renderhub.api.schemas import session_json
from renderhub.models import ArrError, ServerSize, Session, SessionStatus
from tests.conftest import InProcessHub, hub_settings
from tests.spec import SPEC

# The swagger files (tests/spec.py), the contract the document must name alike.
ARR = json.loads((SPEC / "arr-2021-01-01" / "mr-arr.json").read_text())
STS = json.loads((SPEC / "sts-2019-02-28-preview" / "mr-sts.json").read_text())
SESSIONS = "/accounts/{account_id}/sessions"
ONE = SESSIONS + "/{session_id}"
TOKEN = "/Accounts/{accountId}/token"
METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}
DOC_URI = "urn:renderhub:openapi"
V = {"api-version": "2021-01-01"}


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


# The swagger operations the document must carry: every session and conversion operation, and the token endpoint.
REQUIRED = operations(ARR) + operations(STS)


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local $ref ("#/a/b") to what it names."""
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def response_schema(document: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any] | None:
    response = resolve(document, document["paths"][path][method]["responses"][str(status)])
    content = response.get("content")
    return None if content is None else content["application/json"]["schema"]


def validate(document: dict[str, Any], schema: dict[str, Any] | None, instance: Any) -> None:
    """Validate a body against a schema of the document, its $refs resolved within the document."""
    assert schema is not None and "$ref" in schema, schema
    registry: Registry[Any] = Registry().with_resource(
        DOC_URI, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    jsonschema.Draft202012Validator({"$ref": DOC_URI + schema["$ref"]}, registry=registry).validate(instance)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return create_app(hub_settings(tmp_path_factory.mktemp("openapi")))


@pytest.fixture(scope="module")
def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


@pytest.mark.parametrize(("path", "method", "swagger"), REQUIRED, ids=[o["operationId"] for _, _, o in REQUIRED])
def test_swagger_operation_is_documented_alike(
    document: dict[str, Any], path: str, method: str, swagger: dict[str, Any]
) -> None:
    operation = document["paths"][path][method]
    assert operation["operationId"] == swagger["operationId"]
    # The same path and query parameters, equally required.
    theirs = [resolve(ARR, p) for p in swagger["parameters"]]
    wanted = {(p["name"], p["in"], p.get("required", False)) for p in theirs if p["in"] in ("path", "query")}
    ours = [resolve(document, p) for p in operation.get("parameters", [])]
    assert wanted <= {(p["name"], p["in"], p.get("required", False)) for p in ours}
    # The same body and response models, by the swagger's names; every status it lists, and more.
    body = [p for p in theirs if p["in"] == "body"]
    if body:
        ours_body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ours_body == body[0]["schema"]["$ref"].replace("#/definitions/", "#/components/schemas/")
    assert set(swagger["responses"]) - {"default"} <= set(operation["responses"])
    for status, response in swagger["responses"].items():
        if "schema" in response:
            ours_schema = response_schema(document, path, method, int(status))
            assert ours_schema == {
                "$ref": response["schema"]["$ref"].replace("#/definitions/", "#/components/schemas/")
            }


def test_every_arr_operation_carries_arrs_id(document: dict[str, Any]) -> None:
    swagger = {(path, method): op["operationId"] for path, method, op in operations(ARR)}
    ours = {(path, method): op["operationId"] for path, method, op in operations(document)}
    assert {key: ours.get(key) for key in swagger} == swagger


def test_no_operation_id_twice(document: dict[str, Any]) -> None:
    counts = collections.Counter(op["operationId"] for _, _, op in operations(document))
    assert [name for name, n in counts.items() if n > 1] == []
    # The hub answers /Accounts/... and /accounts/...: documented once, as the swagger spells it.
    assert [path for path in document["paths"] if path.lower().endswith("/token")] == [TOKEN]


def test_models_have_the_swaggers_fields(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    definitions = {**ARR["definitions"], **STS["definitions"]}
    for name in (
        "error",
        "error_response",
        "session_properties",
        "create_session_settings",
        "update_session_settings",
        "sessions_list",
        "StsTokenResponseMessage",
        "conversion",
        "conversion_list",
        "conversion_settings",
        "create_conversion_settings",
        "conversion_input_settings",
        "conversion_output_settings",
    ):
        assert set(schemas[name]["properties"]) == set(definitions[name]["properties"]), name
        assert set(definitions[name]["required"]) <= set(schemas[name]["required"]), name
    for name in ("session_size", "session_status"):
        assert set(schemas[name]["enum"]) == set(definitions[name]["enum"]), name


def test_session_errors_are_in_arrs_error_shape(document: dict[str, Any]) -> None:
    error = {"$ref": "#/components/schemas/error_response"}
    shape = document["components"]["schemas"]["error_response"]
    assert shape["required"] == ["error"] and shape["properties"]["error"] == {"$ref": "#/components/schemas/error"}
    inner = document["components"]["schemas"]["error"]
    assert set(inner["properties"]) == {"code", "message", "details", "target", "innerError"}
    assert set(inner["required"]) == {"code", "message"}
    for path, method, operation in operations(document):
        if not path.startswith(SESSIONS):
            continue
        failures = [int(s) for s in operation["responses"] if int(s) >= 400]
        assert {400, 401, 403, 429, 500} <= set(failures), operation["operationId"]
        for status in failures:
            assert response_schema(document, path, method, status) == error, (operation["operationId"], status)
    token = document["paths"][TOKEN]["get"]
    assert response_schema(document, TOKEN, "get", 400) == error
    assert "content" not in token["responses"]["401"]  # ARR's STS answered 401 with no body; so does the hub


def test_document_is_valid_openapi(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    jsonschema.Draft202012Validator(OPENAPI_31).validate(document)
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    # Every $ref names something in the document.
    pending: list[Any] = [document]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                resolve(document, {"$ref": node["$ref"]})
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    # Every path template's parameters are declared as path parameters, by the same names.
    for path, _, operation in operations(document):
        declared = {resolve(document, p)["name"] for p in operation.get("parameters", [])}
        assert set(re.findall(r"{(\w+)}", path)) <= declared, (path, operation["operationId"])


def test_session_routes_stay_plain_starlette_routes(app: FastAPI, document: dict[str, Any]) -> None:
    """Documented without FastAPI's request machinery (measured slower than the rest of a GET)."""
    plain = {(r.path, method.lower()) for r in app.routes if type(r) is Route for method in r.methods or ()}
    documented = {(path, method) for path, method, _ in operations(document) if path.startswith(SESSIONS)}
    assert len(documented) == 5
    assert documented <= plain


def test_session_objects_match_the_documented_schema(document: dict[str, Any]) -> None:
    """Built by the hub's own session_json: a Starting session, and one with every field."""
    schema = {"$ref": "#/components/schemas/session_properties"}
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    starting = Session("acc", "s-1", ServerSize.STANDARD, 30, SessionStatus.STARTING, created)
    failed = Session(
        "acc",
        "s-2",
        ServerSize.PREMIUM,
        1440,
        SessionStatus.ERROR,
        created,
        ready_at=created + timedelta(seconds=3),
        ended_at=created + timedelta(minutes=5),
        hostname="render-1.example.net",
        handshake_port=49152,
        inspector_port=65534,
        teraflops=8.1,
        error=ArrError("CapacityExceeded", "No room."),
    )
    properties = document["components"]["schemas"]["session_properties"]["properties"]
    for session in (starting, failed):
        body = session_json(session, created + timedelta(minutes=10))
        validate(document, schema, body)
        assert set(body) <= set(properties)
    assert set(session_json(failed, created)) == set(properties)  # every field documented is one the hub sends


async def test_real_answers_match_the_documented_responses(api: InProcessHub) -> None:
    document = api.app.openapi()
    key = {"Authorization": f"Bearer {api.account.id}:{api.primary_key}"}
    token = await api.http.get(f"/Accounts/{api.account.id}/token", headers=key)
    assert token.status_code == 200
    validate(document, response_schema(document, TOKEN, "get", 200), token.json())
    unsupported = await api.http.get(f"/Accounts/{api.account.id}/token", params={"api-version": "1999"}, headers=key)
    assert unsupported.status_code == 400
    validate(document, response_schema(document, TOKEN, "get", 400), unsupported.json())
    refused = await api.http.get(f"/Accounts/{api.account.id}/token", headers={"Authorization": "Bearer x:y"})
    assert refused.status_code == 401 and refused.content == b""
    assert response_schema(document, TOKEN, "get", 401) is None
    auth = {"Authorization": f"Bearer {token.json()['AccessToken']}"}
    answers = [
        (SESSIONS, "get", await api.http.get(api.url(), params=V, headers=auth)),
        (ONE, "get", await api.http.get(api.url("/none"), params=V, headers=auth)),
        (ONE, "get", await api.http.get(api.url("/none"), params={"api-version": "1999"}, headers=auth)),
        (ONE, "get", await api.http.get(api.url("/none"), params=V)),
        (ONE, "patch", await api.http.patch(api.url("/none"), params=V, headers=auth, json={"maxLeaseTimeMinutes": 5})),
        (ONE, "put", await api.http.put(api.url("/bad"), params=V, headers=auth, json={"size": "Huge"})),
        (ONE + "/:stop", "post", await api.http.post(api.url("/none/:stop"), params=V, headers=auth)),
    ]
    assert [r.status_code for _, _, r in answers] == [200, 404, 400, 401, 404, 400, 404]
    for path, method, response in answers:
        validate(document, response_schema(document, path, method, response.status_code), response.json())


async def test_docs_page_and_document_are_served_built_once(api: InProcessHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """The document is built on the first request for it and kept; session requests never build it."""
    built: list[FastAPI] = []
    real_build = renderhub.api.app.build_document

    def counting_build(app: FastAPI) -> dict[str, Any]:
        built.append(app)
        return real_build(app)

    monkeypatch.setattr(renderhub.api.app, "build_document", counting_build)
    api.app.openapi_schema = None
    auth = await api.auth()
    assert (await api.http.get(api.url("/none"), params=V, headers=auth)).status_code == 404
    assert (await api.http.get(api.url(), params=V, headers=auth)).status_code == 200
    assert built == []

    docs = await api.http.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in docs.text
    served = await api.http.get("/openapi.json")
    assert served.status_code == 200
    again = await api.http.get("/openapi.json")
    assert served.json() == again.json() == api.app.openapi()
    assert built == [api.app]
    assert served.json()["paths"][SESSIONS + "/{session_id}"]["get"]["operationId"] == "RemoteRendering_GetSession"

"""Bad input: each gets an ARR-shaped error with the right status, and nothing in the store changes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from renderhub.auth import TokenService, new_signing_key
from tests.conftest import InProcessHub

V = {"api-version": "2021-01-01"}
GOOD = {"size": "Standard", "maxLeaseTimeMinutes": 10}


async def snapshot(api: InProcessHub) -> Any:
    """Everything a bad request must leave as it was."""
    repo = api.repo
    sessions = await repo.list_live_sessions(api.account.id, 0, 1000)
    existing = await repo.get_session(api.account.id, "existing")
    return (
        [(s.id, s.size, s.max_lease_minutes) for s in sessions],
        existing and (existing.max_lease_minutes, existing.size),
        await repo.usage(),
        await repo.list_accounts(),
    )


@pytest.fixture
async def seeded(api: InProcessHub) -> InProcessHub:
    auth = await api.auth()
    assert (await api.http.put(api.url("/existing"), params=V, headers=auth, json=GOOD)).status_code == 201
    return api


BAD_CREATES: list[tuple[str, object, int, str]] = [
    ("malformed JSON", b'{"size": "Standard", ', 400, "not valid JSON"),
    ("not UTF-8", b'{"size": "\xff"}', 400, "not valid JSON"),
    ("an array", [GOOD], 400, "JSON object"),
    ("null body", None, 400, "JSON object"),
    ("empty body", b"", 400, "not valid JSON"),
    ("no size", {"maxLeaseTimeMinutes": 10}, 400, "size"),
    ("size a number", {"size": 5, "maxLeaseTimeMinutes": 10}, 400, "size"),
    ("unknown size", {"size": "Huge", "maxLeaseTimeMinutes": 10}, 400, "Unknown size"),
    ("no lease", {"size": "Standard"}, 400, "maxLeaseTimeMinutes"),
    ("lease a string", {"size": "Standard", "maxLeaseTimeMinutes": "10"}, 400, "integer"),
    ("lease a float", {"size": "Standard", "maxLeaseTimeMinutes": 10.5}, 400, "integer"),
    ("lease a bool", {"size": "Standard", "maxLeaseTimeMinutes": True}, 400, "integer"),
    ("negative lease", {"size": "Standard", "maxLeaseTimeMinutes": -1}, 400, "cannot be negative"),
    ("lease over 1440", {"size": "Standard", "maxLeaseTimeMinutes": 1441}, 400, "1440"),
    ("huge lease", {"size": "Standard", "maxLeaseTimeMinutes": 10**40}, 400, "1440"),
]


@pytest.mark.parametrize(("case", "body", "status", "message"), BAD_CREATES, ids=[c[0] for c in BAD_CREATES])
async def test_bad_create_bodies(seeded: InProcessHub, case: str, body: object, status: int, message: str) -> None:
    api = seeded
    before = await snapshot(api)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await api.http.put(api.url("/new"), params=V, headers=await api.auth(), content=content)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == "BadRequest" and message in error["message"]
    assert await snapshot(api) == before
    assert (await api.http.get(api.url("/new"), params=V, headers=await api.auth())).status_code == 404


BAD_IDS = ["bad id", "a" * 257, "sess%C3%BCon", "a.b", "a%2Fb", "%00"]


@pytest.mark.parametrize("session_id", BAD_IDS)
@pytest.mark.parametrize("method", ["PUT", "GET", "PATCH", "POST"])
async def test_bad_session_ids(seeded: InProcessHub, session_id: str, method: str) -> None:
    api = seeded
    before = await snapshot(api)
    path = api.url(f"/{session_id}") + ("/:stop" if method == "POST" else "")
    response = await api.http.request(method, path, params=V, headers=await api.auth(), json=GOOD)
    assert response.status_code in (400, 404), response.text  # "a%2Fb" is no route at all: 404
    assert response.json()["error"]["code"] in ("BadRequest", "NotFound")
    assert await snapshot(api) == before


@pytest.mark.parametrize("version", [None, "", "2020-01-01", "2021-01-01x", "2019-02-28-preview"])
async def test_missing_or_unknown_api_version(seeded: InProcessHub, version: str | None) -> None:
    api = seeded
    before = await snapshot(api)
    params = {} if version is None else {"api-version": version}
    for method, path in (("PUT", "/new"), ("GET", "/existing"), ("PATCH", "/existing"), ("POST", "/existing/:stop")):
        response = await api.http.request(
            method, api.url(path), params=params, headers=await api.auth(), json={**GOOD, "maxLeaseTimeMinutes": 99}
        )
        assert response.status_code == 400 and "api-version" in response.json()["error"]["message"]
    assert await snapshot(api) == before


async def test_missing_garbled_and_forged_tokens(seeded: InProcessHub) -> None:
    api = seeded
    before = await snapshot(api)
    stranger = TokenService(new_signing_key(), api.hub.tokens.lifetime).issue(api.account, 1, api.clock.now())
    cases = [{}, {"Authorization": "Bearer"}, {"Authorization": "Bearer garbage"},
             {"Authorization": "Bearer a.b.c"}, {"Authorization": f"Basic {await api.token()}"},
             {"Authorization": f"Bearer {stranger}"}]  # fmt: skip
    for headers in cases:
        response = await api.http.put(api.url("/new"), params=V, headers=headers, json=GOOD)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert response.json()["error"]["code"] == "Unauthorized"
    assert await snapshot(api) == before


BAD_UPDATES: list[tuple[object, int]] = [
    ({"maxLeaseTimeMinutes": 10}, 422),  # not larger than the current 10
    ({"maxLeaseTimeMinutes": 5}, 422),
    ({"maxLeaseTimeMinutes": 1441}, 422),
    ({"maxLeaseTimeMinutes": -3}, 400),
    ({"maxLeaseTimeMinutes": "60"}, 400),
    ({}, 400),
    ([], 400),
]


@pytest.mark.parametrize(("body", "status"), BAD_UPDATES)
async def test_bad_updates(seeded: InProcessHub, body: object, status: int) -> None:
    api = seeded
    before = await snapshot(api)
    response = await api.http.patch(api.url("/existing"), params=V, headers=await api.auth(), json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == {400: "BadRequest", 422: "UnprocessableEntity"}[status]
    assert await snapshot(api) == before


async def test_unknown_sessions_routes_and_methods(seeded: InProcessHub) -> None:
    api = seeded
    before = await snapshot(api)
    auth = await api.auth()
    for method, path, status, query in (
        ("GET", api.url("/nope"), 404, V),
        ("PATCH", api.url("/nope"), 404, V),
        ("POST", api.url("/nope/:stop"), 404, V),
        ("DELETE", api.url("/existing"), 405, V),
        ("GET", "/no/such/route", 404, V),
        ("GET", api.url(), 400, {**V, "skipToken": "abc"}),
    ):
        response = await api.http.request(method, path, params=query, headers=auth, json={"maxLeaseTimeMinutes": 50})
        assert response.status_code == status, (method, path, response.text)
        assert set(response.json()["error"]) >= {"code", "message"}
    assert await snapshot(api) == before

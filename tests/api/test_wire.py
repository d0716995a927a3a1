"""The wire contract through the in-process app: headers, STS variants, auth, paging, retention, limits."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from renderhub.auth import hash_key
from renderhub.clock import Clock, FakeClock
from renderhub.models import ServerSize, SessionStatus
from tests.conftest import InProcessHub, hub_settings, in_process_hub

V = {"api-version": "2021-01-01"}
CREATE = {"size": "Standard", "maxLeaseTimeMinutes": 10}


async def wait_status(api: InProcessHub, session_id: str, status: str) -> dict[str, object]:
    headers = await api.auth()
    for _ in range(400):
        body = (await api.http.get(api.url(f"/{session_id}"), params=V, headers=headers)).json()
        if body["status"] == status:
            return body  # type: ignore[no-any-return]
        await asyncio.sleep(0.025)
    raise AssertionError(f"{session_id} never became {status}: {body}")


async def test_every_response_carries_arr_headers(api: InProcessHub) -> None:
    auth = await api.auth()
    for response in (
        await api.http.get(api.url("/none"), params=V, headers=auth),  # 404
        await api.http.put(api.url("/s1"), params=V, headers=auth, json=CREATE),  # 201
        await api.http.post(api.url("/s1/:stop"), params=V, headers=auth),  # 204
        await api.http.get(api.url(), params=V),  # 401
    ):
        assert re.fullmatch(r"[A-Za-z0-9+/]{22}\.0", response.headers["ms-cv"]), response.headers
        assert response.headers["api-supported-versions"] == "2021-01-01-preview, 2021-01-01"
        if response.status_code != 204:
            assert response.headers["content-type"] == "application/json; charset=utf-8"
        else:
            assert response.content == b""


async def test_session_object_fields_by_status(api: InProcessHub) -> None:
    auth = await api.auth()
    created = (await api.http.put(api.url("/s1"), params=V, headers=auth, json=CREATE)).json()
    assert set(created) == {"id", "creationTime", "elapsedTimeMinutes", "maxLeaseTimeMinutes", "size", "status"}
    assert created["status"] == "Starting" and created["creationTime"].endswith("+00:00")
    ready = await wait_status(api, "s1", "Ready")
    assert {"hostname", "handshakePort", "arrInspectorPort", "teraflops"} <= set(ready)
    assert ready["teraflops"] == 8.1 and "error" not in ready
    await api.http.post(api.url("/s1/:stop"), params=V, headers=auth)
    stopped = await wait_status(api, "s1", "Stopped")
    assert stopped["teraflops"] == 8.1  # kept after the end, as ARR did


async def test_sts_variants_of_the_powershell_script_and_the_sdk(api: InProcessHub) -> None:
    auth = {"Authorization": f"Bearer {api.account.id}:{api.primary_key}"}
    sdk = await api.http.get(f"/Accounts/{api.account.id}/token", params={"api-version": "2019-02-28-preview"},
                             headers={**auth, "X-MRC-CV": "abc", "Accept": "application/json"})  # fmt: skip
    script = await api.http.get(f"/accounts/{api.account.id}/token", headers=auth)
    for response in (sdk, script):
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store,no-cache"
        assert response.json()["AccessToken"].count(".") == 2
    secondary = await api.http.get(
        f"/accounts/{api.account.id}/token", headers={"Authorization": f"Bearer {api.account.id}:{api.secondary_key}"}
    )
    assert secondary.status_code == 200


@pytest.mark.parametrize(
    "header",
    ["", "Bearer {id}:wrong-key", "Bearer {other}:{key}", "Basic {id}:{key}", "Bearer {id}", "Bearer {id}:"],
)
async def test_sts_refuses_bad_credentials_with_an_empty_401(api: InProcessHub, header: str) -> None:
    value = header.format(id=api.account.id, key=api.primary_key, other="2a9d1e55-0000-4000-8000-000000000000")
    response = await api.http.get(f"/Accounts/{api.account.id}/token", headers={"Authorization": value})
    assert response.status_code == 401 and response.content == b""


async def test_powershell_style_requests(api: InProcessHub) -> None:
    """RenderingSession.ps1: lower-case size, the preview api-version, JSON content type on GET, extra fields."""
    auth = {**(await api.auth()), "Content-Type": "application/json"}
    preview = {"api-version": "2021-01-01-preview"}
    body = {"size": "standard", "maxLeaseTimeMinutes": 30, "vmSize": "standard", "extra": {"x": 1}}
    created = await api.http.put(api.url("/ps1"), params=preview, headers=auth, json=body)
    assert created.status_code == 201 and created.json()["size"] == "Standard"
    fetched = await api.http.get(api.url("/ps1"), params=preview, headers=auth)
    assert fetched.status_code == 200


async def test_tokens_are_per_account_and_revocable(api: InProcessHub) -> None:
    token = await api.token()
    other = "2a9d1e55-0000-4000-8000-000000000000"
    foreign = await api.http.get(api.url(account_id=other), params=V, headers={"Authorization": f"Bearer {token}"})
    assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "Forbidden"

    secondary = await api.token(api.secondary_key)
    await api.repo.replace_key(api.account.id, 1, hash_key("rotated"))
    revoked = await refused_within_the_account_cache(api, token)
    assert revoked.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    still = await api.http.get(api.url(), params=V, headers={"Authorization": f"Bearer {secondary}"})
    assert still.status_code == 200

    await api.repo.delete_account(api.account.id)
    await refused_within_the_account_cache(api, secondary)


async def refused_within_the_account_cache(api: InProcessHub, token: str) -> httpx.Response:
    """A hub trusts an account it read for `account_cache_seconds` (1 s): revocation lands within that."""
    deadline = time.monotonic() + api.hub.accounts.ttl + 0.5
    while True:
        response = await api.http.get(api.url(), params=V, headers={"Authorization": f"Bearer {token}"})
        if response.status_code == 401:
            return response
        assert response.status_code == 200 and time.monotonic() < deadline, "the revoked token still works"
        await asyncio.sleep(0.05)


async def test_expired_tokens_are_refused(fake_clock_api: InProcessHub) -> None:
    api = fake_clock_api
    headers = await api.auth()
    assert (await api.http.get(api.url(), params=V, headers=headers)).status_code == 200
    assert isinstance(api.clock, FakeClock)
    api.clock.advance(hours=24, seconds=1)
    expired = await api.http.get(api.url(), params=V, headers=headers)
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]


async def test_list_pages_with_complete_next_links(api: InProcessHub) -> None:
    auth = await api.auth()
    await api.repo.set_quota(api.account.id, ServerSize.STANDARD, 8)  # above the default quota: 4 at once
    for i in range(4):
        await api.http.put(api.url(f"/s{i}"), params=V, headers=auth, json=CREATE)
    await api.http.post(api.url("/s3/:stop"), params=V, headers=auth)
    await api.http.put(api.url("/s4"), params=V, headers=auth, json=CREATE)  # Standard capacity is 4
    await api.http.put(api.url("/s5"), params=V, headers=auth, json={**CREATE, "size": "Premium"})
    ids, url, pages = [], api.url(), 0
    params: dict[str, str] | None = V
    while url:
        page = (await api.http.get(url, params=params, headers=auth)).json()
        pages += 1
        ids += [s["id"] for s in page["sessions"]]
        assert all(s["status"] in ("Starting", "Ready") for s in page["sessions"])
        url, params = page.get("@nextLink"), None
        if url:
            parsed = urlparse(url)
            assert parsed.scheme == "https" and parsed.netloc == "hub.test"
            assert parse_qs(parsed.query)["api-version"] == ["2021-01-01"]
    assert ids == ["s0", "s1", "s2", "s4", "s5"] and pages == 2  # page size 3


async def test_ended_sessions_stay_readable_for_the_retention_period(fake_clock_api: InProcessHub) -> None:
    api = fake_clock_api
    auth = await api.auth()
    await api.http.put(api.url("/old"), params=V, headers=auth, json=CREATE)
    deadline = asyncio.get_running_loop().time() + 10  # billed only once Ready: wait for it
    while (await api.http.get(api.url("/old"), params=V, headers=auth)).json()["status"] != "Ready":
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    await api.http.post(api.url("/old/:stop"), params=V, headers=auth)
    assert isinstance(api.clock, FakeClock)
    api.clock.advance(days=29)
    await api.reaper.reap()
    auth = await api.auth()
    assert (await api.http.get(api.url("/old"), params=V, headers=auth)).json()["status"] == "Stopped"
    assert (await api.http.get(api.url(), params=V, headers=auth)).json()["sessions"] == []
    api.clock.advance(days=1, minutes=2)
    await api.reaper.reap()
    auth = await api.auth()
    assert (await api.http.get(api.url("/old"), params=V, headers=auth)).status_code == 404
    assert len(await api.repo.usage(api.account.id)) == 1  # usage outlives retention


@pytest.fixture
async def limited_api(tmp_path: Path) -> AsyncIterator[InProcessHub]:
    settings = hub_settings(tmp_path, rate_limit_per_second=1.0, rate_limit_burst=5)
    async for running in in_process_hub(settings, Clock()):
        yield running


async def test_rate_limit_answers_429_with_retry_after(limited_api: InProcessHub) -> None:
    api = limited_api
    headers = await api.auth()
    statuses = [(await api.http.get(api.url(), params=V, headers=headers)) for _ in range(8)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited and all(int(r.headers["retry-after"]) >= 1 for r in limited)
    assert limited[0].json()["error"]["code"] == "TooManyRequests"


async def test_stop_and_update_on_ended_sessions(api: InProcessHub) -> None:
    auth = await api.auth()
    await api.http.put(api.url("/s1"), params=V, headers=auth, json=CREATE)
    assert (await api.http.post(api.url("/s1/:stop"), params=V, headers=auth)).status_code == 204
    assert (await api.http.post(api.url("/s1/:stop"), params=V, headers=auth)).status_code == 204
    patch = await api.http.patch(api.url("/s1"), params=V, headers=auth, json={"maxLeaseTimeMinutes": 60})
    assert patch.status_code == 409
    again = await api.http.put(api.url("/s1"), params=V, headers=auth, json=CREATE)
    assert again.status_code == 200 and again.json()["status"] == "Stopped"
    other = await api.http.put(api.url("/s1"), params=V, headers=auth, json={**CREATE, "size": "Premium"})
    assert other.status_code == 409


async def test_zero_lease_session_expires_once_ready(api: InProcessHub) -> None:
    auth = await api.auth()
    await api.http.put(api.url("/z"), params=V, headers=auth, json={"size": "Standard", "maxLeaseTimeMinutes": 0})
    expired = await wait_status(api, "z", SessionStatus.EXPIRED.value)
    assert expired["elapsedTimeMinutes"] == 0
    [record] = await api.repo.usage(api.account.id)
    assert record.billable_minutes == 0 and record.ended_at - record.ready_at == timedelta(0)  # type: ignore[operator]


async def test_clients_get_the_ice_servers_behind_the_token(tmp_path: Path) -> None:
    from renderhub.config import parse_ice_server

    turn = parse_ice_server("turn:user:secret@turn.example.org:3478")
    assert turn == {"urls": "turn:turn.example.org:3478", "username": "user", "credential": "secret"}
    for bad in ("http://x", "stun:u:p@host:1", "turn:user@host:1", "turn:"):
        with pytest.raises(ValueError):
            parse_ice_server(bad)
    settings = hub_settings(tmp_path, ice_servers=[parse_ice_server("stun:stun.example.org:3478"), turn])
    async for api in in_process_hub(settings, Clock()):
        assert (await api.http.get("/render/ice-servers")).status_code == 401
        listed = await api.http.get("/render/ice-servers", headers=await api.auth())
        assert listed.json() == {"iceServers": [{"urls": "stun:stun.example.org:3478"}, turn]}

"""Per-account quotas (403 QuotaExceeded before anything starts, set with `renderhub account set-quota`, held under
racing creates on two hubs) and failed creates that do not pile up (no usage record, pruned, capped)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.exceptions import HttpResponseError
from azure.mixedreality.remoterendering import RemoteRenderingClient, RenderingSessionSize

from renderhub.client import ApiError, HubClient
from renderhub.clock import Clock, FakeClock
from renderhub.models import ServerSize
from tests.conftest import InProcessHub, hub_settings, in_process_hub
from tests.fakes import FailingBackend
from tests.hubs import RENDERHUB, ServedHub
from tests.test_sdk import open_sdk, sizes_file  # noqa: F401  (open_sdk: a fixture)

V = {"api-version": "2021-01-01"}
STANDARD = {"size": "Standard", "maxLeaseTimeMinutes": 30}
PREMIUM = {"size": "Premium", "maxLeaseTimeMinutes": 30}


async def put(
    api: InProcessHub, session_id: str, body: dict[str, Any], account_id: str | None = None
) -> httpx.Response:
    return await api.http.put(api.url(f"/{session_id}", account_id), params=V, headers=await api.auth(), json=body)


def quota_error(response: httpx.Response) -> str:
    """The message of a 403 QuotaExceeded in ARR's error shape (fails on anything else)."""
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "QuotaExceeded", error
    return str(error["message"])


async def test_the_default_quota_is_half_of_each_sizes_capacity(api: InProcessHub) -> None:
    """The packaged sizes: Standard capacity 4 (2 per account), Premium capacity 1 (at least one)."""
    assert [(await put(api, f"s{n}", STANDARD)).status_code for n in range(2)] == [201, 201]
    message = quota_error(await put(api, "s2", STANDARD))
    assert "2 live Standard" in message and "set-quota" in message
    assert (await put(api, "p0", PREMIUM)).status_code == 201
    assert "1 live Premium" in quota_error(await put(api, "p1", PREMIUM))
    # Nothing was started or stored for a refused create, and nothing billed.
    auth = await api.auth()
    assert (await api.http.get(api.url("/s2"), params=V, headers=auth)).status_code == 404
    listed = (await api.http.get(api.url(), params=V, headers=auth)).json()["sessions"]
    assert sorted(s["id"] for s in listed) == ["p0", "s0", "s1"]
    assert await api.repo.usage(api.account.id) == []
    # A retried create of a session that exists is still answered as one (the SDK retries PUTs).
    assert (await put(api, "s1", STANDARD)).status_code == 200
    # A stopped session frees its slot.
    assert (await api.http.post(api.url("/s0/:stop"), params=V, headers=auth)).status_code == 204
    assert (await put(api, "s2", STANDARD)).status_code == 201


async def test_the_default_follows_the_sizes_files_capacity(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, sizes_file=sizes_file(tmp_path, 7))  # 7 // 2: three per account
    async for api in in_process_hub(settings, Clock()):
        assert [(await put(api, f"s{n}", STANDARD)).status_code for n in range(3)] == [201] * 3
        quota_error(await put(api, "s3", STANDARD))


async def test_a_second_account_still_creates_while_the_first_is_at_its_quota(api: InProcessHub) -> None:
    from renderhub.auth import new_account

    other, key, _ = new_account("other", api.clock.now())
    await api.repo.insert_account(other)
    for n in range(2):
        assert (await put(api, f"s{n}", STANDARD)).status_code == 201
    quota_error(await put(api, "s2", STANDARD))
    token = await api.http.get(f"/Accounts/{other.id}/token", headers={"Authorization": f"Bearer {other.id}:{key}"})
    auth = {"Authorization": f"Bearer {token.json()['AccessToken']}"}
    for n in range(2):
        created = await api.http.put(api.url(f"/o{n}", other.id), params=V, headers=auth, json=STANDARD)
        assert created.status_code == 201, created.text
    # The two accounts together fill the host's four Standard servers: both got their half.
    for account_id, ids, headers in ((api.account.id, ["s0", "s1"], await api.auth()), (other.id, ["o0", "o1"], auth)):
        for session_id in ids:
            got = await api.http.get(api.url(f"/{session_id}", account_id), params=V, headers=headers)
            assert got.json()["status"] in ("Starting", "Ready"), got.text


def test_the_sdk_gets_the_403_at_once_without_retrying(
    served_hub: ServedHub,
    open_sdk: Callable[..., RemoteRenderingClient],  # noqa: F811
) -> None:
    client = open_sdk(served_hub)
    client.begin_rendering_session("premium-1", RenderingSessionSize.PREMIUM, 10).result(timeout=30)
    attempts: list[int] = []
    with pytest.raises(HttpResponseError) as raised:
        client.begin_rendering_session(
            "premium-2",
            RenderingSessionSize.PREMIUM,
            10,
            raw_response_hook=lambda response: attempts.append(response.http_response.status_code),
        )
    assert raised.value.status_code == 403
    assert raised.value.error is not None and raised.value.error.code == "QuotaExceeded"
    assert attempts == [403], "the SDK sent the PUT once: a 403 is not retried"
    assert {s.id for s in client.list_rendering_sessions()} == {"premium-1"}


def renderhub(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}  # rich's table width when not on a terminal: one line per account
    return subprocess.run([RENDERHUB, *(str(a) for a in args)], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.slow
def test_set_quota_raises_and_lowers_it_on_a_running_hub(served_hub: ServedHub) -> None:
    data = served_hub.data_dir
    account = served_hub.config.account_id
    with HubClient(served_hub.config, verify=str(served_hub.ca)) as client:
        for n in range(2):
            client.create(f"s{n}", "Standard", 30)
        with pytest.raises(ApiError) as refused:
            client.create("s2", "Standard", 30)
        assert (refused.value.status, refused.value.code) == (403, "QuotaExceeded")

        raised = renderhub("account", "set-quota", account, "--size", "standard", "--max", "3", "--data-dir", data)
        assert raised.returncode == 0, raised.stderr
        assert "at most 3 live Standard" in raised.stdout
        client.create("s2", "Standard", 30)  # the hub applies it to the next create
        with pytest.raises(ApiError):
            client.create("s3", "Standard", 30)
        listed = renderhub("account", "list", "--data-dir", data)
        assert listed.returncode == 0, listed.stderr
        row = next(line for line in listed.stdout.splitlines() if account in line)
        assert "3" in row.split() and "1 (default)" in row  # Standard set here, Premium the default

        lowered = renderhub("account", "set-quota", account, "--size", "Standard", "--max", "1", "--data-dir", data)
        assert lowered.returncode == 0, lowered.stderr
        assert {s["id"] for s in client.list()} == {"s0", "s1", "s2"}  # live sessions stay
        client.stop("s0")
        client.stop("s1")
        with pytest.raises(ApiError) as refused:
            client.create("s4", "Standard", 30)  # s2 alone is the quota now
        assert "1 live Standard" in refused.value.message

        back = renderhub("account", "set-quota", account, "--size", "Standard", "--default", "--data-dir", data)
        assert back.returncode == 0, back.stderr
        client.create("s4", "Standard", 30)  # the default: two
        row = next(
            line for line in renderhub("account", "list", "--data-dir", data).stdout.splitlines() if account in line
        )
        assert "2 (default)" in row

    for wrong in (
        ["account", "set-quota", "no-such-account", "--size", "Standard", "--max", "2"],
        ["account", "set-quota", account, "--size", "Standard"],
        ["account", "set-quota", account, "--size", "Standard", "--max", "2", "--default"],
        ["account", "set-quota", account, "--size", "Standard", "--max", "-1"],
        ["account", "set-quota", account, "--size", "Huge", "--max", "2"],
    ):
        result = renderhub(*wrong, "--data-dir", data)
        assert result.returncode != 0 and "Traceback" not in result.stderr, (wrong, result.stderr)


async def _race(hubs: list[InProcessHub], account_id: str, key: str, body: dict[str, Any], count: int) -> Counter[int]:
    """`count` creates at once, spread over the hubs (each with a token of its own); their statuses."""
    headers = []
    for h in hubs:
        token = await h.http.get(
            f"/Accounts/{account_id}/token", headers={"Authorization": f"Bearer {account_id}:{key}"}
        )
        headers.append({"Authorization": f"Bearer {token.json()['AccessToken']}"})
    ids = [f"race-{n}" for n in range(count)]
    responses = await asyncio.gather(
        *(
            hubs[n % len(hubs)].http.put(
                hubs[0].url(f"/{i}", account_id), params=V, headers=headers[n % len(hubs)], json=body
            )
            for n, i in enumerate(ids)
        )
    )
    for response in responses:
        if response.status_code != 201:
            quota_error(response)
    return Counter(r.status_code for r in responses)


@pytest.mark.parametrize("quota", [1, 3, 105])
async def test_racing_creates_on_two_hubs_never_pass_the_quota(tmp_path: Path, database_url: str, quota: int) -> None:
    """Two hubs on one database; every create at once. 105: the first creates far below the quota run side by side
    (PostgreSQL's shared quota lock), the last slots one at a time."""
    # One data dir: the two hubs' in-memory render servers are one machine's, so each health-checks the other's.
    settings = hub_settings(tmp_path, database_url=database_url, sizes_file=sizes_file(tmp_path, 1000))
    async for first in in_process_hub(settings, Clock()):
        async for second in in_process_hub(settings, Clock()):
            account = first.account.id
            assert await first.repo.set_quota(account, ServerSize.STANDARD, quota)
            statuses = await _race([first, second], account, first.primary_key, STANDARD, quota + 15)
            assert statuses == Counter({201: quota, 403: 15})
            live = await first.repo.list_live_sessions(account, 0, 1000)
            assert len([s for s in live if s.size is ServerSize.STANDARD]) == quota


@pytest.fixture
async def failing_api(tmp_path: Path) -> Any:
    """A hub whose render servers never launch, on a fake clock (failed starts kept: the newest 100, for 10 minutes)."""
    settings = hub_settings(tmp_path)
    async for running in in_process_hub(settings, FakeClock(), FailingBackend(settings)):
        yield running


async def test_a_failing_start_loop_leaves_no_usage_and_no_pile_of_errors(failing_api: InProcessHub) -> None:
    api = failing_api
    assert isinstance(api.clock, FakeClock)
    auth = await api.auth()
    ids = [f"fail-{n:03d}" for n in range(103)]
    for session_id in ids:
        assert (await put(api, session_id, STANDARD)).status_code == 201
        # Right after the failure its error reads as the SDK's poller reads it (the quota frees up with it).
        for _ in range(500):
            got = (await api.http.get(api.url(f"/{session_id}"), params=V, headers=auth)).json()
            if got["status"] != "Starting":
                break
            await asyncio.sleep(0.01)
        assert got["status"] == "Error" and got["error"]["code"] == "RenderServerLaunchFailed", got
    assert await api.repo.usage(api.account.id) == [], "a session that never became Ready is not billed"

    async def readable() -> list[str]:
        found = []
        for session_id in ids:
            response = await api.http.get(api.url(f"/{session_id}"), params=V, headers=await api.auth())
            if response.status_code == 200:
                found.append(session_id)
            else:
                assert response.status_code == 404, response.text
        return found

    api.clock.advance(minutes=1)
    await api.reaper.reap()
    assert await readable() == ids[-100:], "beyond the newest 100, failed starts are forgotten"
    api.clock.advance(minutes=8)
    await api.reaper.reap()
    assert await readable() == ids[-100:], "within the retention, the newest stay readable"
    api.clock.advance(minutes=2)
    await api.reaper.reap()
    assert await readable() == [], "after the retention, none"

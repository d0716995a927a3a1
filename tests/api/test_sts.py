"""The STS under key guessing: failed key checks throttled per caller with 429 and Retry-After, logged without
secrets, bounded in memory; and tokens naming a key slot other than 1 or 2 refused."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable

import httpx
import pytest
from azure.core.credentials import AzureKeyCredential
from azure.mixedreality.remoterendering import RemoteRenderingClient

from renderhub.api.sts_throttle import KeyGuesses, address_key
from tests.conftest import InProcessHub
from tests.hubs import HubEndpoint, RunningHub, ServedHub, wait_for

WRONG_KEY = "d3JvbmcgYnV0IHdlbGwtZm9ybWVkIGtleSwgMzIgYnl0ZXM="
ATTEMPTS = 20  # bounded: far past the 5 free failures per (account, address)
FREE = 5


def sts_url(hub: HubEndpoint) -> str:
    return f"{hub.endpoint}/Accounts/{hub.config.account_id}/token"


def credentials(account_id: str, key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {account_id}:{key}"}


def client_from(hub: HubEndpoint, address: str) -> httpx.Client:
    """An HTTPS client to the hub whose connections leave from `address` (any 127.x reaches 127.0.0.1)."""
    trust = ssl.create_default_context(cafile=str(hub.ca))
    return httpx.Client(verify=trust, transport=httpx.HTTPTransport(local_address=address, verify=trust))


def assert_throttled(response: httpx.Response, window: float) -> None:
    assert response.status_code == 429
    assert response.content == b""  # like the STS's 401: nothing to read, the SDK waits Retry-After
    assert 1 <= int(response.headers["retry-after"]) <= window


async def test_wrong_keys_are_throttled_even_for_the_right_key_until_the_window_passes(
    fake_clock_api: InProcessHub,
) -> None:
    api = fake_clock_api
    url = f"/Accounts/{api.account.id}/token"
    statuses = []
    for _ in range(ATTEMPTS):
        response = await api.http.get(url, headers=credentials(api.account.id, WRONG_KEY))
        statuses.append(response.status_code)
        if response.status_code == 401:
            assert response.content == b""  # ARR's STS answered 401 with no body: still so
        else:
            assert_throttled(response, 60)
    assert statuses == [401] * FREE + [429] * (ATTEMPTS - FREE)
    right = credentials(api.account.id, api.primary_key)
    assert_throttled(await api.http.get(url, headers=right), 60)  # no oracle: the right key is refused too
    api.clock.advance(seconds=30)  # type: ignore[attr-defined]
    assert_throttled(await api.http.get(url, headers=right), 30)
    api.clock.advance(seconds=31)  # type: ignore[attr-defined]
    assert (await api.http.get(url, headers=right)).status_code == 200


def test_a_guessing_address_is_refused_while_others_get_tokens_and_the_log_names_no_key(hub: RunningHub) -> None:
    """A real `renderhub serve` over TLS: 127.0.0.2 guesses, 127.0.0.3 and the owner on 127.0.0.1 are untouched."""
    account = hub.config.account_id
    with client_from(hub, "127.0.0.2") as attacker, client_from(hub, "127.0.0.1") as owner:
        statuses = [attacker.get(sts_url(hub), headers=credentials(account, WRONG_KEY)).status_code
                    for _ in range(ATTEMPTS)]  # fmt: skip
        assert statuses == [401] * FREE + [429] * (ATTEMPTS - FREE)
        assert_throttled(attacker.get(sts_url(hub), headers=credentials(account, hub.config.account_key)), 60)
        token = owner.get(sts_url(hub), headers=credentials(account, hub.config.account_key))
        assert token.status_code == 200, token.text
        sessions = owner.get(
            f"{hub.endpoint}/accounts/{account}/sessions",
            params={"api-version": "2021-01-01"},
            headers={"Authorization": f"Bearer {token.json()['AccessToken']}"},
        )
        assert sessions.status_code == 200
    with client_from(hub, "127.0.0.3") as elsewhere:
        assert elsewhere.get(sts_url(hub), headers=credentials(account, hub.config.account_key)).status_code == 200

    wait_for(lambda: "too many failed key checks" in hub.log, 10)
    failures = [line for line in hub.log.splitlines() if "STS: failed key check for" in line]
    assert len(failures) == FREE  # one line per failure; the refused attempts are summed up in one line
    assert all(account in line and "127.0.0.2" in line for line in failures)
    refusals = [line for line in hub.log.splitlines() if "too many failed key checks" in line]
    assert len(refusals) == 1 and account in refusals[0] and "127.0.0.2" in refusals[0]
    assert WRONG_KEY not in hub.log and hub.config.account_key not in hub.log and "Bearer" not in hub.log


@pytest.mark.parametrize("slot", [3, 0, -1, True])
async def test_a_signed_token_naming_no_key_slot_is_refused(api: InProcessHub, slot: int) -> None:
    """Account.serial reads every slot but 1 as the secondary key's, so these once passed as slot 2's tokens."""
    token = api.hub.tokens.issue(api.account, slot, api.clock.now())
    response = await api.http.get(
        api.url(), params={"api-version": "2021-01-01"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "Unauthorized"
    assert "malformed" in response.json()["error"]["message"]


@pytest.mark.slow
def test_the_sdk_waits_out_its_address_throttle_and_gets_a_token(
    served_hub_factory: Callable[..., ServedHub], caplog: pytest.LogCaptureFixture
) -> None:
    """The official SDK's STS client retries a 429 after Retry-After: a user who mistyped their key in a script
    and then runs the SDK from the same machine waits out the window, then works as before."""
    window = 5.0
    hub = served_hub_factory(sts_failure_window_seconds=window)
    caplog.set_level(logging.INFO, logger="renderhub.api.sts")
    first_failure = time.monotonic()
    with client_from(hub, "127.0.0.1") as http:
        statuses = [http.get(sts_url(hub), headers=credentials(hub.config.account_id, WRONG_KEY)).status_code
                    for _ in range(FREE + 1)]  # fmt: skip
    assert statuses == [401] * FREE + [429]
    client = RemoteRenderingClient(
        endpoint=hub.endpoint,
        account_id=hub.config.account_id,
        account_domain="127.0.0.1",
        credential=AzureKeyCredential(hub.config.account_key),
        authentication_endpoint_url=hub.endpoint,
    )
    try:
        assert list(client.list_rendering_sessions()) == []
    finally:
        client.close()
        client._client._config.authentication_policy._credential.stsClient.close()
    # It could get its token only once the window had passed: it met the 429 and waited, not failed.
    assert time.monotonic() - first_failure >= window
    assert sum("too many failed key checks" in record.getMessage() for record in caplog.records) == 1


def test_failures_are_counted_in_bounded_memory() -> None:
    """An attacker cycling addresses and account ids fills fixed-size tables, not the hub's memory."""
    now = [0.0]
    guesses = KeyGuesses(60, 5, 20, now=lambda: now[0], capacity=1000)
    for i in range(20_000):
        guesses.failed(f"account-{i}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert max(len(guesses.callers), len(guesses.addresses), len(guesses.accounts)) <= 1000
    for _ in range(5):
        guesses.failed("victim", "10.9.9.9")
    assert guesses.refusal("victim", "10.9.9.9") is not None  # the newest windows are the ones kept
    now[0] = 61.0
    assert guesses.refusal("victim", "10.9.9.9") is None
    guesses.failed("x", "10.0.0.1")
    assert len(guesses.callers) == 1  # windows that passed are dropped as new ones come


def test_ipv6_callers_are_counted_by_their_64() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("127.0.0.2") == "127.0.0.2"

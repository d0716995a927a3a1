"""Revoked tokens on render servers: a rotated key's tokens are refused within about a second, a stream opened with
one is closed, and while the hub is unreachable the keys of the last contact stand for a grace."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from dataclasses import replace

import httpx
import pytest

from renderhub.client import HubClient
from renderhub.connect import RenderClient
from renderhub.render.access import AccessDenied
from renderhub.render.revocation import KeySerials
from tests.hubs import RENDERHUB, RunningHub, wait_for
from tests.render.test_server import direct, ready, token, trust


def rotate_key(hub: RunningHub) -> str:
    """`renderhub account rotate-key` on the hub's database; returns the new primary key."""
    out = subprocess.run(
        [RENDERHUB, "account", "rotate-key", hub.config.account_id, "--data-dir", str(hub.data_dir)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.search(r"new primary key\s+(\S+)", out)
    assert found, out
    return found.group(1)


def offer_status(hub: RunningHub, session: dict[str, object], bearer: str) -> int:
    """What the render server answers an offer with this token: 401 refused, 400 past the token (a bad SDP)."""
    answer = httpx.post(
        direct(session), json={"type": "offer", "sdp": "v=0"}, headers={"Authorization": f"Bearer {bearer}"},
        verify=trust(hub),
    )  # fmt: skip
    return answer.status_code


def status(hub: RunningHub, session: dict[str, object], bearer: str) -> httpx.Response:
    inspector = f"https://{session['hostname']}:{session['arrInspectorPort']}/status"
    return httpx.get(inspector, headers={"Authorization": f"Bearer {bearer}"}, verify=trust(hub))


async def test_a_rotated_key_is_refused_and_its_stream_closed(hub: RunningHub) -> None:
    session = ready(hub)
    old = token(hub)
    client = RenderClient()
    try:
        await client.connect(direct(session), old, ssl_context=trust(hub), width=320, height=240)
        assert (await asyncio.to_thread(status, hub, session, old)).status_code == 200

        new_key = await asyncio.to_thread(rotate_key, hub)
        rotated = time.monotonic()
        closing = await client.expect("error", timeout=10)
        assert closing["code"] == "TokenRevoked", closing
        closed_after = time.monotonic() - rotated

        refused = await asyncio.to_thread(status, hub, session, old)
        assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
        assert await asyncio.to_thread(offer_status, hub, session, old) == 401
        # About a second (the hub's account cache, then the server's freshness); slack for a loaded machine.
        assert closed_after < 8, closed_after
    finally:
        await client.close()

    # The new key's tokens open the server (once it has noticed that the closed client left).
    with HubClient(replace(hub.config, account_key=new_key), verify=str(hub.ca)) as renewed:
        fresh = renewed.token()
    wait_for(lambda: offer_status(hub, session, fresh) == 400, timeout=15)  # 400: the bad SDP, past the token


def test_while_the_hub_is_unreachable_the_last_known_keys_stand(hub: RunningHub) -> None:
    session = ready(hub)
    valid = token(hub)
    assert offer_status(hub, session, valid) == 400  # the server has asked the hub about this key
    assert hub.process is not None
    hub.process.send_signal(signal.SIGSTOP)  # unreachable: connections hang, as to a hub behind a lost link
    try:
        time.sleep(1)  # past the freshness of the last answer: the server must ask again, and gets no answer
        assert offer_status(hub, session, valid) == 400
    finally:
        hub.process.send_signal(signal.SIGCONT)


class FakeHub:
    """A hub that answers the key serials, or stops answering."""

    def __init__(self) -> None:
        self.serials = {"1": 1, "2": 1}
        self.up = True
        self.asked = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.asked += 1
        if not self.up:
            raise httpx.ConnectError("unreachable", request=request)
        return httpx.Response(200, json={"accountId": "a", "keySerials": self.serials})


async def test_key_serials_grace_and_freshness() -> None:
    now = [0.0]
    hub = FakeHub()
    asking = httpx.AsyncClient(base_url="https://hub.invalid/", transport=httpx.MockTransport(hub.handle))
    keys = KeySerials(asking, fresh=0.5, grace=300, monotonic=lambda: now[0])
    await keys.check("t", 1, 1)
    for _ in range(20):  # many requests within the freshness: one question to the hub
        await keys.check("t", 1, 1)
    assert hub.asked == 1

    hub.up = False
    now[0] = 299.0  # unreachable, within the grace: the last contact's serials stand
    await keys.check("t", 1, 1)
    now[0] = 301.0  # past it: refused until the hub answers again
    with pytest.raises(AccessDenied, match="cannot confirm"):
        await keys.check("t", 1, 1)

    hub.up, hub.serials = True, {"1": 2, "2": 1}  # back, with the primary key rotated
    now[0] = 302.0
    with pytest.raises(AccessDenied, match="revoked"):
        await keys.check("t", 1, 1)
    await keys.check("t2", 1, 2)
    await keys.check("t3", 2, 1)

    asked = hub.asked
    hub.serials = {"1": 3, "2": 1}  # rotated again: a token of the newest key is asked about at once
    await keys.check("t4", 1, 3)
    assert hub.asked == asked + 1
    with pytest.raises(AccessDenied, match="revoked"):
        await keys.check("t2", 1, 2)
    await keys.close()

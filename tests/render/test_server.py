"""A real render server behind a real hub: who may connect, one client at a time, reset, inspector, relay."""

from __future__ import annotations

import asyncio
import ssl
import time
from datetime import timedelta
from typing import Any

import httpx
import numpy as np
import pytest

from renderhub.auth import TokenService, new_account, new_signing_key
from renderhub.clock import Clock
from renderhub.connect import ConnectError, RenderClient
from renderhub.render.camera import orbit_pose
from renderhub.render.encoder import NVENC, X264, probe
from tests.hubs import RunningHub, wait_for


def ready(hub: RunningHub, session_id: str = "s1") -> dict[str, Any]:
    with hub.client() as client:
        client.create(session_id, "Standard", 30)
        return wait_for(lambda: (s := client.get(session_id))["status"] == "Ready" and s, timeout=20)  # type: ignore[no-any-return]


def trust(hub: RunningHub) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(hub.ca))


def direct(session: dict[str, Any], path: str = "/offer") -> str:
    return f"https://{session['hostname']}:{session['handshakePort']}{path}"


def token(hub: RunningHub) -> str:
    with hub.client() as client:
        return client.token()


def expected_encoder() -> str:
    """NVENC where this machine's GPU opens it (never on the CPU-only test machines), else libx264."""
    return NVENC if probe(NVENC) is None else X264


async def frame_after_pose(client: RenderClient, yaw: float) -> np.ndarray:
    """Send one pose and return the first decoded frame that carries it (or a later one)."""
    pose = orbit_pose([0.0, 1.0, 0.0], 7.0, yaw, 25.0)
    pose_id = client.send_pose(pose.position, pose.orientation, pose.fov)
    frame = await client.frame_showing(pose_id)
    return frame.to_ndarray(format="rgb24")


def test_health_over_https_and_the_offer_needs_a_token(hub: RunningHub) -> None:
    session = ready(hub)
    health = httpx.get(direct(session, "/health"), verify=trust(hub))
    assert health.status_code == 200 and health.json()["sessionId"] == "s1"
    other_account, _, _ = new_account("other", Clock().now())
    forged = TokenService(new_signing_key(), timedelta(hours=1)).issue(other_account, 1, Clock().now())
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": f"Bearer {forged}"}):
        refused = httpx.post(direct(session), json={"type": "offer", "sdp": "v=0"}, headers=headers, verify=trust(hub))
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "Unauthorized"
    auth = {"Authorization": f"Bearer {token(hub)}"}
    for body in (b"{", b"[]", b'{"type": "answer", "sdp": "v=0"}', b'{"type": "offer", "sdp": "garbage"}',
                 b'{"type": "offer", "sdp": "v=0", "width": 99999}', b"[" * 5000):  # fmt: skip
        bad = httpx.post(direct(session), content=body, headers=auth, verify=trust(hub))
        assert bad.status_code in (400, 413), body[:40]
        assert bad.json()["error"]["code"] == "BadRequest"
    assert httpx.get(direct(session, "/health"), verify=trust(hub)).status_code == 200  # still serving


async def test_one_client_at_a_time_and_a_reset_scene_for_the_next(hub: RunningHub) -> None:
    session = ready(hub)
    first = RenderClient()
    try:
        hello = await first.connect(direct(session), token(hub), ssl_context=trust(hub), width=640, height=360)
        assert (hello["width"], hello["height"]) == (640, 360) and first.codec == "H264"
        await first.load_model("sample")
        loaded = await frame_after_pose(first, 30.0)
        for yaw in range(35, 60, 5):
            await frame_after_pose(first, float(yaw))
        inspector = f"https://{session['hostname']}:{session['arrInspectorPort']}/status"
        auth = {"Authorization": f"Bearer {token(hub)}"}
        status = (await asyncio.to_thread(httpx.get, inspector, headers=auth, verify=trust(hub))).json()
        recent = status["client"]["recent"]
        assert recent["fps"] > 0 and recent["renderMsP50"] > 0 and recent["poseToSendMsP50"] > 0
        # What the RTP sender sent over the last ~2 s, and the rate the encoder aims at (REMB moves it).
        assert recent["bitrateKbps"] > 0 and recent["targetBitrateKbps"] > 0
        assert status["client"]["model"]["triangles"] > 100_000 and status["client"]["codec"] == "H264"
        assert status["client"]["encoder"] == status["encoder"] == expected_encoder()
        second = RenderClient()
        with pytest.raises(ConnectError, match="409 ClientAlreadyConnected"):
            await second.connect(direct(session), token(hub), ssl_context=trust(hub), width=640, height=360)
        await second.close()
    finally:
        await first.close()

    # The first client left: the next one gets in, and finds an empty scene (ARR's reset).
    third = RenderClient()
    deadline = time.monotonic() + 15
    while True:
        try:
            await third.connect(direct(session), token(hub), ssl_context=trust(hub), width=640, height=360)
            break
        except ConnectError:  # the server notices the departure within moments
            assert time.monotonic() < deadline
            await third.close()
            third = RenderClient()
            await asyncio.sleep(0.1)
    try:
        empty = await frame_after_pose(third, 30.0)
        scene = slice(0, 300)
        assert loaded[scene].std() > 20, "the first client saw its model"
        assert empty[scene].std() < 5, "the next client starts with no model"
    finally:
        await third.close()


async def test_the_hub_relays_offers_for_browsers(hub: RunningHub) -> None:
    ready(hub)
    relay = f"{hub.endpoint}/render/{hub.config.account_id}/s1/offer"
    client = RenderClient()
    try:
        await client.connect(relay, token(hub), ssl_context=trust(hub), width=640, height=360)
        await client.load_model("sample")
        before = await frame_after_pose(client, 0.0)
        after = await frame_after_pose(client, 90.0)
        assert np.abs(before.astype(int) - after.astype(int)).mean() > 3, "the picture follows the camera"
    finally:
        await client.close()


def test_the_relay_refuses_sessions_that_are_not_ready(hub: RunningHub) -> None:
    with hub.client() as api:
        api.create("ended", "Standard", 5)
        api.stop("ended")
        auth = {"Authorization": f"Bearer {api.token()}"}
    url = f"{hub.endpoint}/render/{hub.config.account_id}/ended/offer"
    stopped = httpx.post(url, json={"type": "offer", "sdp": "v=0"}, headers=auth, verify=trust(hub))
    assert stopped.status_code == 409 and "Stopped" in stopped.json()["error"]["message"]


def test_inspector_page_and_status_behind_the_token(hub: RunningHub) -> None:
    session = ready(hub)
    inspector = f"https://{session['hostname']}:{session['arrInspectorPort']}"
    page = httpx.get(inspector + "/", verify=trust(hub))
    assert page.status_code == 200 and "RenderHub inspector" in page.text
    assert httpx.get(inspector + "/status", verify=trust(hub)).status_code == 401
    status = httpx.get(inspector + "/status", headers={"Authorization": f"Bearer {token(hub)}"}, verify=trust(hub))
    body = status.json()
    assert body["sessionId"] == "s1" and body["client"] is None and "llvmpipe" in body["renderer"].lower()
    assert any("render server for session s1" in line for line in body["log"])
    assert body["encoder"] == expected_encoder()
    assert any(f"encoder {body['encoder']}" in line for line in body["log"]), "the self-check names its encoder"

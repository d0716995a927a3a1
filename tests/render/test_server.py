"""A real render server behind a real hub: who may connect, one client at a time, reset, inspector, relay."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
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


async def connect_when_free(hub: RunningHub, session: dict[str, Any], **options: Any) -> tuple[RenderClient, dict]:
    """A client connected as soon as the server lets it (a client that left is noticed within moments)."""
    deadline = time.monotonic() + 15
    while True:
        client = RenderClient()
        try:
            hello = await client.connect(
                direct(session), token(hub), ssl_context=trust(hub), width=640, height=360, **options
            )
            return client, hello
        except ConnectError:
            await client.close()
            assert time.monotonic() < deadline, "the server never let the next client in"
            await asyncio.sleep(0.1)


async def test_one_live_client_at_a_time_and_the_scene_kept_for_the_next(hub: RunningHub) -> None:
    session = ready(hub)
    first = RenderClient()
    try:
        hello = await first.connect(direct(session), token(hub), ssl_context=trust(hub), width=640, height=360)
        assert (hello["width"], hello["height"]) == (640, 360) and first.codec == "H264"
        assert hello["model"] is None and hello["pose"] is None, "a new session's scene is empty"
        await first.load_model("sample")
        for yaw in range(35, 60, 5):
            await frame_after_pose(first, float(yaw))
        inspector = f"https://{session['hostname']}:{session['arrInspectorPort']}/status"
        auth = {"Authorization": f"Bearer {token(hub)}"}
        status = (await asyncio.to_thread(httpx.get, inspector, headers=auth, verify=trust(hub))).json()
        recent = status["client"]["recent"]
        assert recent["fps"] > 0 and recent["renderMsP50"] > 0 and recent["poseToSendMsP50"] > 0
        # What the RTP sender sent over the last ~2 s, and the rate the encoder aims at.
        assert recent["bitrateKbps"] > 0 and recent["targetBitrateKbps"] > 0
        assert status["client"]["model"]["triangles"] > 100_000 and status["client"]["codec"] == "H264"
        assert status["client"]["encoder"] == status["encoder"] == expected_encoder()
        # The first client lives (it pings each second), so a second one is refused: two tabs do not fight.
        await asyncio.sleep(3.5)
        second = RenderClient()
        with pytest.raises(ConnectError, match="409 ClientAlreadyConnected"):
            await second.connect(direct(session), token(hub), ssl_context=trust(hub), width=640, height=360)
        await second.close()
    finally:
        await first.close()

    # The first client left: the next one finds its model and camera, and sees the model without loading it.
    third, hello = await connect_when_free(hub, session)
    try:
        assert hello["model"]["triangles"] > 100_000 and hello["model"]["bounds"]["max"][1] > 0
        last = orbit_pose([0.0, 1.0, 0.0], 7.0, 55.0, 25.0)
        np.testing.assert_allclose(hello["pose"]["position"], last.position, atol=1e-6)
        np.testing.assert_allclose(hello["pose"]["orientation"], last.orientation, atol=1e-6)
        # Loading a model before any pose draws nothing: the last pose is the client before's, in its ids.
        assert (await third.load_model("sample"))["triangles"] > 100_000
        assert await third.frames_until(time.monotonic() + 1.0) == 0
        shown = await frame_after_pose(third, 30.0)
        assert shown[0:300].std() > 20, "the kept model, drawn for the new client"
    finally:
        await third.close()


async def test_a_dead_connection_is_replaced_at_once_and_a_reloaded_tab_takes_its_own_place(
    hub: RunningHub,
) -> None:
    session = ready(hub)
    dead = RenderClient()
    await dead.connect(direct(session), token(hub), ssl_context=trust(hub), width=640, height=360, keepalive=False)
    try:
        await dead.load_model("sample")
        silent_since = time.monotonic()  # just before its last message, the pose below
        await frame_after_pose(dead, 40.0)
        # The browser froze: its connection stays up, but nothing comes from it. A new offer gets in once the
        # server heard nothing for 3 s, long before ICE would give up (about 30 s).
        tab, hello = await connect_when_free(hub, session, instance_id="tab-7")
        assert 3.0 <= time.monotonic() - silent_since < 8.0
        assert hello["model"]["triangles"] > 100_000, "the scene passed to the new client"
        assert (await frame_after_pose(tab, 50.0))[0:300].std() > 20
        # The same tab reloaded: its new connection replaces its old one at once, though that one lives.
        reloaded = RenderClient()
        hello = await reloaded.connect(
            direct(session), token(hub), ssl_context=trust(hub), width=640, height=360, instance_id="tab-7"
        )
        assert hello["model"]["triangles"] > 100_000
        # Another tab does not take it.
        other = RenderClient()
        with pytest.raises(ConnectError, match="409 ClientAlreadyConnected"):
            await other.connect(
                direct(session), token(hub), ssl_context=trust(hub), width=640, height=360, instance_id="tab-8"
            )
        await other.close()
        assert (await frame_after_pose(reloaded, 60.0))[0:300].std() > 20
        await reloaded.close()
        await tab.close()
    finally:
        await dead.close()


def kept_scene(hub: RunningHub, session: dict[str, Any]) -> dict[str, Any] | None:
    """The inspector's account of the scene a departed client left, while the server keeps it."""
    inspector = f"https://{session['hostname']}:{session['arrInspectorPort']}/status"
    auth = {"Authorization": f"Bearer {token(hub)}"}
    kept: dict[str, Any] | None = httpx.get(inspector, headers=auth, verify=trust(hub)).json()["keptScene"]
    return kept


async def test_the_scene_resets_after_the_grace_period_or_at_once_with_none(
    hub_factory: Callable[..., RunningHub],
) -> None:
    for grace in ("3", "0"):
        hub = hub_factory("--rate-limit", "0", "--scene-grace", grace, name=f"grace-{grace}")
        session = ready(hub)
        first, _ = await connect_when_free(hub, session)
        await first.load_model("sample")
        await frame_after_pose(first, 30.0)
        await first.close()
        if grace != "0":
            kept = wait_for(lambda: kept_scene(hub, session), 10)  # noqa: B023  (called within this iteration)
            assert kept["model"]["triangles"] > 100_000 and 0 < kept["secondsLeft"] <= 3
            await asyncio.sleep(3.5)  # past the grace period
        later, hello = await connect_when_free(hub, session)
        try:
            assert hello["model"] is None and hello["pose"] is None, f"--scene-grace {grace}: the scene reset"
            assert (await frame_after_pose(later, 30.0))[0:300].std() < 5
        finally:
            await later.close()


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

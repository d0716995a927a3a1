"""The web viewer in headless Chromium against a real hub: files, sign-in, sessions, streaming, orbit, stats, stop."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import pytest
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from renderhub.render.camera import frame_bounds, orbit_pose
from tests.hubs import RunningHub, wait_for
from tests.web.chromium import CHROMIUM, FLAGS, trusting_home

WEB_DIR = Path(__file__).resolve().parents[2] / "src" / "renderhub" / "web"
OUTPUT = Path(os.environ.get("RENDERHUB_TEST_OUTPUT", Path(tempfile.gettempdir()) / "renderhub-test-output"))

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() or shutil.which("certutil") is None,
    reason="needs Debian's chromium and certutil (libnss3-tools): make system-packages",
)


class Browser:
    """One Chromium with a fresh profile; pages opened here record their uncaught errors."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.errors: list[str] = []

    def page(self) -> Page:
        page = self.context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"{error.name}: {error.message}"))
        return page


@pytest.fixture
def browser(shared_tls: Path, tmp_path: Path) -> Iterator[Browser]:
    """Chromium trusting the hubs' CA through its own HOME's NSS database (no certificate errors ignored).

    Every test hub's TLS files are copies of the session's one CA (tests/conftest.py), so this serves any hub.
    """
    home = tmp_path / "browser-home"
    trusting_home(home, shared_tls / "ca.pem")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "browser-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            env={**os.environ, "HOME": str(home)},
            viewport={"width": 1280, "height": 800},
            has_touch=True,  # pinch-zoom is tested with touch events
        )
        browser = Browser(context)
        try:
            yield browser
        finally:
            context.close()
    assert not browser.errors, f"uncaught errors in the page: {browser.errors}"


def eventually(page: Page, check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` (page.wait_for_function is out: the viewer's CSP forbids the eval it needs)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        page.wait_for_timeout(50)


def sign_in(page: Page, hub: RunningHub, key: str | None = None) -> None:
    page.fill("#account-id", hub.config.account_id)
    page.fill("#account-key", key or hub.config.account_key)
    page.click("#signin-button")


def signed_in_with_sessions(hub: RunningHub, browser: Browser, *names: str, init_script: str = "") -> Page:
    """The viewer signed in, streams set to 640x360, with Ready Standard sessions of these names (10 minutes);
    `init_script` runs in the page before its own scripts."""
    with hub.client() as client:
        for name in names:
            client.create(name, "Standard", 10)
        wait_for(lambda: all(client.get(name)["status"] == "Ready" for name in names), 30)
    page = browser.page()
    if init_script:
        page.add_init_script(init_script)
    page.goto(f"{hub.endpoint}/viewer/")
    sign_in(page, hub)
    page.select_option("#stream-size", "640x360")
    return page


def stat_value(page: Page, name: str) -> str:
    """What a figure of the stats overlay stands for (its data-value): "" while it has none."""
    return page.get_attribute(f"#stat-{name}", "data-value") or ""


def stat(page: Page, name: str) -> float | None:
    """A numeric figure of the stats overlay."""
    value = stat_value(page, name)
    return float(value) if value else None


def video_frames(page: Page) -> int:
    return int(page.evaluate("document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames"))


# Grey levels of the picture at 64 x 36, drawn from the video element.
SNAPSHOT = """() => {
  const video = document.getElementById("video");
  const canvas = document.createElement("canvas");
  canvas.width = 64; canvas.height = 36;
  const context = canvas.getContext("2d", {willReadFrequently: true});
  context.drawImage(video, 0, 0, 64, 36);
  const data = context.getImageData(0, 0, 64, 36).data;
  const grey = [];
  for (let i = 0; i < data.length; i += 4) grey.push((data[i] + data[i + 1] + data[i + 2]) / 3);
  return grey;
}"""


def test_viewer_is_served_and_self_contained(hub: RunningHub) -> None:
    trust = ssl.create_default_context(cafile=str(hub.ca))
    with httpx.Client(base_url=hub.endpoint, verify=trust) as http:
        redirect = http.get("/viewer")
        assert redirect.status_code != 404, "the hub does not serve the viewer: create_app must include api.web.router"
        assert redirect.status_code == 308 and redirect.headers["location"] == "viewer/"
        page = http.get("/viewer", follow_redirects=True)
        assert page.status_code == 200 and page.url.path == "/viewer/"
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.text == (WEB_DIR / "viewer.html").read_text()
        for path in sorted(WEB_DIR.iterdir()):
            response = http.get(f"/viewer/{path.name}")
            assert response.status_code == 200, path.name
            assert response.headers["cache-control"] == "no-cache"
            # Nothing is fetched from elsewhere: no absolute URLs in what the page loads or imports.
            text = path.read_text()
            assert not re.search(
                r"""(src|href)\s*=\s*["']?(https?:)?//|import[^;]*["'](https?:)?//|url\(["']?(https?:)?//""", text
            ), path.name
        assert http.get("/viewer/viewer.js").headers["content-type"].startswith("text/javascript")
        assert http.get("/viewer/missing.js").status_code == 404


def picture_change(page: Page, action: Callable[[], None]) -> float:
    """How much the picture changes (mean grey-level difference) once `action` has had its frames."""
    before = np.array(page.evaluate(SNAPSHOT))
    frames = video_frames(page)
    action()
    eventually(page, lambda: video_frames(page) > frames, 5, "a new frame")
    page.wait_for_timeout(600)  # the last pose's frame arrives
    return float(np.abs(np.array(page.evaluate(SNAPSHOT)) - before).mean())


def test_the_orbit_camera_matches_the_render_server(hub: RunningHub, browser: Browser) -> None:
    """The viewer's orbit camera computes the poses renderhub.render.camera does."""
    page = browser.page()
    page.goto(f"{hub.endpoint}/viewer/")
    poses = [([0, 0, 0], 5.0, 30.0, 20.0, 60.0), ([1.5, -2, 0.25], 0.3, 271.0, -45.0, 35.0), ([0, 1, 0], 12, 0, 89, 90)]
    bounds = [[-1.0, -0.5, -2.0], [3.0, 1.5, 0.5]]
    got = page.evaluate(
        """async ([poses, bounds]) => {
          const { orbitPose, OrbitCamera } = await import("./orbit.js");
          const camera = new OrbitCamera();
          camera.frame({ min: bounds[0], max: bounds[1] });
          return { poses: poses.map((p) => orbitPose(...p)), framed: camera.pose() };
        }""",
        [poses, bounds],
    )
    for (target, distance, yaw, pitch, fov), pose in zip(poses, got["poses"], strict=True):
        want = orbit_pose(target, distance, yaw, pitch, fov=fov)
        np.testing.assert_allclose(pose["position"], want.position, atol=1e-9)
        np.testing.assert_allclose(pose["orientation"], want.orientation, atol=1e-9)
        assert pose["fov"] == fov
    want = frame_bounds(np.array(bounds))
    np.testing.assert_allclose(got["framed"]["position"], want.position, atol=1e-9)
    np.testing.assert_allclose(got["framed"]["orientation"], want.orientation, atol=1e-9)


def test_sign_in_list_and_stop_sessions(hub_factory: Callable[..., RunningHub], browser: Browser) -> None:
    """Sign-in errors, a list that spans pages, the token kept only for the tab, stopping from the list."""
    hub = hub_factory("--rate-limit", "0", "--page-size", "1", name="paged")
    with hub.client() as client:
        for name in ("first", "second"):
            client.create(name, "Standard", 10)
    page = browser.page()
    page.goto(f"{hub.endpoint}/viewer")

    sign_in(page, hub, key="not-the-key")
    expect(page.locator("#signin-error")).to_have_text("The account id or key is not right.")
    sign_in(page, hub)
    expect(page.locator("#app")).to_be_visible()
    # Both sessions, though each page of the list holds one.
    expect(page.locator("#session-list li")).to_have_count(2)
    stored = page.evaluate("JSON.stringify([Object.entries(sessionStorage), Object.entries(localStorage)])")
    assert hub.config.account_key not in stored and "AccessToken" not in stored
    assert hub.config.account_id in stored

    page.reload()  # still signed in: the token lives as long as the tab
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#session-list li")).to_have_count(2)

    page.fill("#new-id", "not a valid id!")
    page.click("#create-button")
    expect(page.locator("#toast-text")).to_contain_text("letters, digits")

    # Stop asks first: dismissed, nothing happens; accepted, the session stops.
    stop_first = "#session-list li[data-session-id='first'] button.danger"
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click(stop_first)
    page.wait_for_timeout(500)
    expect(page.locator("#session-list li")).to_have_count(2)
    with hub.client() as client:
        assert client.get("first")["status"] != "Stopped"
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.click(stop_first)
    expect(page.locator("#session-list li")).to_have_count(1)
    assert asked and asked[0].startswith("Stop session first?")
    expect(page.locator("#session-list li")).to_have_attribute("data-session-id", "second")
    with hub.client() as client:
        assert client.get("first")["status"] == "Stopped"

    page.click("#sign-out")
    expect(page.locator("#signin")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


@pytest.mark.slow
def test_stream_orbit_stats_and_stop(
    hub: RunningHub, browser: Browser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole path: a session made and streamed from the page, the sample model, orbiting, figures, stop."""
    started = time.monotonic()
    page = browser.page()
    page.goto(f"{hub.endpoint}/viewer")
    sign_in(page, hub)
    expect(page.locator("#app")).to_be_visible()
    page.select_option("#stream-size", "640x360")
    page.fill("#new-id", "viewer-e2e")
    page.click("#create-button")
    expect(page.locator("#current-status")).to_have_text("Ready", timeout=30_000)
    expect(page.locator("#model-bar")).to_be_visible(timeout=30_000)
    expect(page.locator("#stage-message")).to_be_hidden(timeout=15_000)  # the first frame is on screen

    # A model the server refuses (a loopback URL: no SSRF) is reported in words, and the stream goes on.
    page.fill("#model-url", "http://127.0.0.1:9/nothing.glb")
    page.click("#load-url")
    expect(page.locator("#model-info")).to_contain_text("Could not load the model", timeout=15_000)
    page.click("#load-sample")
    expect(page.locator("#model-info")).to_contain_text("triangles", timeout=30_000)
    eventually(page, lambda: video_frames(page) > 0, 10, "decoded video frames")
    page.wait_for_timeout(700)  # the framed view of the model arrives
    assert np.array(page.evaluate(SNAPSHOT)).std() > 5, "the picture is blank"

    box = page.locator("#viewport").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    def drag(button: Literal["left", "right"] = "left") -> None:
        page.mouse.move(x, y)
        page.mouse.down(button=button)
        for step in range(1, 21):
            page.mouse.move(x + step * 12, y + step * 3)
            page.wait_for_timeout(25)
        page.mouse.up(button=button)

    assert picture_change(page, drag) > 2, "orbiting did not change the picture"
    assert (stat(page, "fps") or 0) > 0, "no frame rate in the stats overlay while orbiting"
    assert picture_change(page, lambda: drag("right")) > 1, "panning did not change the picture"
    assert picture_change(page, lambda: page.mouse.wheel(0, -300)) > 1, "the wheel did not zoom"
    touch = page.context.new_cdp_session(page)

    def pinch() -> None:
        for kind, spread in [("touchStart", 20), *[("touchMove", 20 + 8 * i) for i in range(1, 11)]]:
            points = [{"x": x - spread, "y": y, "id": 0}, {"x": x + spread, "y": y, "id": 1}]
            touch.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})
            page.wait_for_timeout(25)
        touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})

    assert picture_change(page, pinch) > 1, "pinching did not zoom"

    eventually(page, lambda: stat(page, "p50") is not None, 10, "a pose-to-frame latency")
    page.click("#home")  # back to the framed model, for the screenshot
    page.wait_for_timeout(700)
    page.mouse.click(x, y)  # a click without a drag asks the render server what lies there: the sample's middle
    picked = eventually(page, lambda: stat_value(page, "pick"), 10, "a picked point in the stats")
    assert picked != "none" and all(abs(float(c)) <= 3.01 for c in picked.split(",")), picked
    page.click("#spin")  # a steady stream of poses for the figures
    page.wait_for_timeout(2000)
    names = ("fps", "p50", "p95", "codec", "resolution", "bitrate", "render", "encode", "rtt")
    figures = {name: stat_value(page, name) for name in names}
    screenshot = tmp_path / "viewer.png"
    page.screenshot(path=str(screenshot))
    page.click("#spin")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    kept = OUTPUT / "viewer.png"
    shutil.copyfile(screenshot, kept)
    with capsys.disabled():  # shown without -s too: where to look at the page
        shown = {
            name: value if name in ("codec", "resolution") else round(float(value), 1)
            for name, value in figures.items()
        }
        print(f"\nviewer screenshot: {kept} (also {screenshot})\nstats overlay: {shown}")
    assert float(figures["fps"]) > 0
    assert 0 < float(figures["p50"]) <= float(figures["p95"]) < 5000
    assert figures["resolution"] == "640x360"
    assert figures["codec"] in ("H264", "VP8", "VP9", "AV1")
    assert float(figures["bitrate"]) > 0 and float(figures["render"]) > 0

    page.once("dialog", lambda dialog: dialog.accept())  # "Stop session viewer-e2e? ..."
    page.click("#stop-session")
    expect(page.locator("#stage-title")).to_have_text("Session stopped")
    with hub.client() as client:
        assert client.get("viewer-e2e")["status"] == "Stopped"
    assert time.monotonic() - started < 60


def pose_shown(page: Page) -> int | None:
    """The id of the pose the frame on screen shows, from the stats overlay (its frame message names it)."""
    value = stat(page, "pose")
    return None if value is None else int(value)


def test_session_bar_keys_and_stats_overlay(hub: RunningHub, browser: Browser) -> None:
    """The list marks the session on the stage; keys move the camera; the overlay's switches; extend; stop."""
    page = signed_in_with_sessions(hub, browser, "shown", "other")
    shown = page.locator("#session-list li[data-session-id='shown']")
    other = page.locator("#session-list li[data-session-id='other']")
    expect(shown.locator(".badge")).to_have_text("Ready")
    expect(shown.locator(".meta")).to_have_text(re.compile(r"^Standard · \d+ of 10 min used$"))
    expect(shown.locator("button.primary")).to_have_text("Connect")
    shown.locator("button.primary").click()

    expect(page.locator("#stage-message")).to_be_hidden(timeout=30_000)  # streaming
    expect(page.locator("#current-id")).to_have_text("shown")
    expect(page.locator("#current-status")).to_have_text("Ready")
    expect(page.locator("#current-detail")).to_have_text(re.compile(r"^Standard · \d+ of 10 min used$"))
    expect(shown).to_have_class(re.compile(r"\bcurrent\b"))
    expect(shown.locator("button.primary")).to_have_count(0)  # it is on the stage already
    expect(other).not_to_have_class(re.compile(r"\bcurrent\b"))
    expect(other.locator("button.primary")).to_have_text("Connect")

    # The overlay, in words a person reads.
    stats = page.locator("#stats")
    expect(stats).to_be_visible()
    expect(page.locator("#stat-resolution")).to_have_text("640 \u00d7 360", timeout=10_000)  # a times sign
    expect(page.locator("#stat-fps")).to_have_text(re.compile(r"^\d+( · idle)?$"))
    expect(page.locator("#stat-codec")).to_have_text(re.compile(r"^(H264|VP8|VP9|AV1)$"))
    expect(page.locator("#stat-bitrate")).to_have_text(re.compile(r"^(\d+ kbit/s|\d+\.\d Mbit/s)$"), timeout=10_000)
    expect(page.locator("#stat-p50")).to_have_text(re.compile(r"^\d+ ms$"), timeout=10_000)
    expect(page.locator("#stat-render")).to_have_text(re.compile(r"^\d+\.\d ms$"))
    expect(page.locator("#stat-detail")).to_have_text("full")  # the sample has one level of detail

    # Keys on the view: an arrow turns the camera (a new pose reaches the screen); S and the Stats button switch
    # the overlay; Space starts and stops the turntable.
    viewport = page.locator("#viewport")
    first = eventually(page, lambda: pose_shown(page), 10, "the id of the pose on screen")
    viewport.press("ArrowLeft")
    eventually(page, lambda: (pose_shown(page) or 0) > first, 10, "the arrow key's pose on screen")
    viewport.press("s")
    expect(stats).to_be_hidden()
    expect(page.locator("#toggle-stats")).to_have_attribute("aria-pressed", "false")
    page.click("#toggle-stats")
    expect(stats).to_be_visible()
    expect(page.locator("#toggle-stats")).to_have_attribute("aria-pressed", "true")
    viewport.press("Space")
    expect(page.locator("#spin")).to_have_attribute("aria-pressed", "true")
    viewport.press("Space")
    expect(page.locator("#spin")).to_have_attribute("aria-pressed", "false")

    page.click("#extend")
    expect(page.locator("#toast-text")).to_have_text("The lease is now 40 minutes.", timeout=15_000)
    expect(page.locator("#current-detail")).to_have_text(re.compile(r" of 40 min used$"))
    with hub.client() as client:
        assert client.get("shown")["maxLeaseTimeMinutes"] == 40

    page.click("#disconnect")
    expect(page.locator("#stage-title")).to_have_text("Disconnected")
    expect(page.locator("#stage-text")).to_contain_text("The session keeps running")
    for hidden in ("#stats", "#model-bar", "#view-tools", "#disconnect"):
        expect(page.locator(hidden)).to_be_hidden()
    page.click("#stage-action")  # Reconnect

    def streaming_again() -> bool:
        # The render server may not have seen the last client leave yet: it refuses, and the user tries again.
        if page.locator("#stage-action").is_visible():
            page.click("#stage-action")
        return page.locator("#stage-message").is_hidden() and page.locator("#stats").is_visible()

    eventually(page, streaming_again, 30, "the stream back after Reconnect")

    # Stop from the list: another session just goes; the one on the stage is stopped by the stage. (A stop
    # returns once the render server has exited, which takes a while on a busy machine.)
    page.on("dialog", lambda dialog: dialog.accept())  # each Stop asks first
    other.locator("button.danger").click()
    expect(page.locator("#toast-text")).to_have_text("Session other stopped.", timeout=20_000)
    expect(other).to_have_count(0)
    expect(page.locator("#stage-message")).to_be_hidden()
    shown.locator("button.danger").click()
    expect(page.locator("#stage-title")).to_have_text("Session stopped", timeout=20_000)
    expect(page.locator("#current-status")).to_have_text("Stopped")
    expect(page.locator("#sessions-empty")).to_be_visible()
    with hub.client() as client:
        assert [client.get(name)["status"] for name in ("shown", "other")] == ["Stopped", "Stopped"]


# Every data channel a page opens, so a test can break one as a failing network would.
KEEP_CHANNELS = """(() => {
  const create = RTCPeerConnection.prototype.createDataChannel;
  window.renderhubChannels = [];
  RTCPeerConnection.prototype.createDataChannel = function (...args) {
    const channel = create.apply(this, args);
    window.renderhubChannels.push(channel);
    return channel;
  };
})()"""


def test_a_lost_connection_comes_back_by_itself_with_the_model_and_view(hub: RunningHub, browser: Browser) -> None:
    """The viewer reconnects by itself and says so; the server kept the model; a reloaded tab takes over at once."""
    page = signed_in_with_sessions(hub, browser, "kept", init_script=KEEP_CHANNELS)
    connect = page.locator("#session-list li[data-session-id='kept'] button.primary")
    connect.click()
    expect(page.locator("#stage-message")).to_be_hidden(timeout=30_000)
    page.click("#load-sample")
    expect(page.locator("#model-info")).to_contain_text("loaded in", timeout=30_000)
    page.locator("#viewport").press("ArrowLeft")  # a view of the user's own, not the framing one
    page.wait_for_timeout(1000)
    before = np.array(page.evaluate(SNAPSHOT))
    assert before.std() > 10, "the model is on screen"

    page.evaluate("window.renderhubChannels.at(-1).close()")  # the connection breaks
    expect(page.locator("#stage-title")).to_have_text("Connection lost: reconnecting…", timeout=10_000)
    expect(page.locator("#stage-message")).to_be_hidden(timeout=30_000)
    expect(page.locator("#toast-text")).to_contain_text("Reconnected")
    expect(page.locator("#model-info")).to_contain_text("kept from the last connection")
    eventually(page, lambda: pose_shown(page) is not None, 10, "a frame of the new connection")
    page.wait_for_timeout(1000)
    after = np.array(page.evaluate(SNAPSHOT))
    assert np.abs(after - before).mean() < 4, "the same model from the same view, without loading it again"

    # The tab reloads: its new connection replaces the old one at once (the same tab's id), the model still there.
    page.reload()
    connect.click()
    expect(page.locator("#stage-message")).to_be_hidden(timeout=30_000)
    expect(page.locator("#model-info")).to_contain_text("kept from the last connection")
    page.wait_for_timeout(1000)
    assert np.array(page.evaluate(SNAPSHOT)).std() > 10


def test_the_inspector_page_shows_live_figures(hub: RunningHub, browser: Browser) -> None:
    """The render server's inspector page, as a person opens it: its script runs, and its figures move."""
    with hub.client() as client:
        client.create("inspected", "Standard", 10)
        session = wait_for(lambda: (s := client.get("inspected"))["status"] == "Ready" and s, timeout=30)
        token = client.token()
    page = browser.page()
    page.goto(f"https://{session['hostname']}:{session['arrInspectorPort']}/#token={token}")
    expect(page.locator("#session")).to_have_text("inspected", timeout=10_000)
    expect(page.locator("#state")).to_have_text("no client connected")
    uptime = page.locator("#figures tr", has=page.locator("th", has_text=re.compile("^uptimeSeconds$"))).locator("td")
    first = float(uptime.inner_text())
    eventually(page, lambda: float(uptime.inner_text()) > first, 5, "the uptime read again, and grown")
    expect(page.locator("#figures")).to_contain_text("llvmpipe")
    expect(page.locator("#log")).to_contain_text("render server for session inspected")


# Whether the toast's box meets the box of any visible control on the page.
TOAST_COVERS = """() => {
  const toast = document.getElementById("toast").getBoundingClientRect();
  const covered = [];
  for (const control of document.querySelectorAll("button, input, select, a, #viewport")) {
    const box = control.getBoundingClientRect();
    if (!box.width || !box.height || control.closest("#toast")) continue;
    if (box.left < toast.right && toast.left < box.right && box.top < toast.bottom && toast.top < box.bottom) {
      covered.push(control.id || control.textContent.trim().slice(0, 30));
    }
  }
  return covered;
}"""


def test_models_on_the_hub_errors_that_name_them_and_notifications_that_cover_nothing(
    hub: RunningHub, browser: Browser
) -> None:
    assets = hub.data_dir / "assets"
    shutil.copytree("/usr/share/assimp/models/glTF2/BoxTextured-glTF", assets / "box")
    (assets / "broken.glb").write_bytes(b"glTF\x02\x00\x00\x00" + bytes(100))
    page = signed_in_with_sessions(hub, browser, "picker", "elsewhere")
    page.locator("#session-list li[data-session-id='picker'] button.primary").click()
    expect(page.locator("#stage-message")).to_be_hidden(timeout=30_000)

    # The hub's models to pick from, by the names the render server loads them with.
    picker = page.locator("#named-model")
    expect(picker).to_be_visible(timeout=10_000)
    names = picker.locator("option").all_text_contents()
    assert names[0] == "Models on this hub…" and names[1].startswith("box/BoxTextured.gltf · ")
    assert names[2] == "broken.glb · 108 bytes"
    picker.select_option("box/BoxTextured.gltf")
    expect(page.locator("#model-info")).to_contain_text("12 triangles · 1 draw call · loaded in", timeout=30_000)
    # A broken model: the error names the user's file, not the server's copy, and no Python exception.
    picker.select_option("broken.glb")
    expect(page.locator("#model-info")).to_have_text(re.compile(r"^Could not load the model: broken\.glb: "))
    assert "model.glb" not in (page.text_content("#model-info") or "")

    # A notification sits in the page's flow: it covers no control, and goes with what it was about.
    page.fill("#model-url", "not a link")
    page.click("#load-url")
    expect(page.locator("#toast-text")).to_contain_text("Paste a link")
    assert page.evaluate(TOAST_COVERS) == []
    page.locator("#session-list li[data-session-id='elsewhere'] button.primary").click()
    expect(page.locator("#toast")).to_be_hidden()  # about the session that left the stage

"""Drop to convert, in headless Chromium against a real hub: a model uploaded from the page, converted, loaded into
the session, listed among the account's converted models; a broken file's failure in words; a glTF with its files."""

from __future__ import annotations

import base64
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.hubs import RunningHub
from tests.web import test_viewer
from tests.web.chromium import CHROMIUM
from tests.web.test_viewer import OUTPUT, Browser, sign_in

browser = test_viewer.browser  # the fixture: Chromium trusting the test hubs' CA, failing on uncaught page errors

MODELS = Path("/usr/share/assimp/models")
BOX_FBX = MODELS / "FBX" / "box.fbx"
BOX_GLTF = MODELS / "glTF2" / "BoxTextured-glTF"  # BoxTextured.gltf, BoxTextured0.bin, CesiumLogoFlat.png
TRIANGLES = re.compile(r"^([\d,]+) triangles · ")

pytestmark = [
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() or shutil.which("certutil") is None,
        reason="needs Debian's chromium and certutil (libnss3-tools): make system-packages",
    ),
    pytest.mark.skipif(
        not BOX_FBX.exists() or shutil.which("assimp") is None,
        reason="needs Debian's assimp-testmodels and assimp-utils: make system-packages",
    ),
]

# Every state the convert panel shows, as a person would have seen it, recorded as it changes.
WATCH = """() => {
  const $ = (id) => document.getElementById(id);
  window.convertSeen = [];
  const record = () => {
    const bar = $("convert-progress");
    window.convertSeen.push({
      name: $("convert-name").textContent,
      status: $("convert-status").hidden ? "" : $("convert-status").textContent,
      text: $("convert-text").textContent,
      progress: bar.hidden ? null : bar.hasAttribute("value") ? bar.value : "indeterminate",
    });
  };
  new MutationObserver(record).observe($("convert-job"),
    { subtree: true, childList: true, characterData: true, attributes: true });
}"""

# A drop of files (name, base64 bytes) on the page, as the browser makes it from a person's drag.
DATA_TRANSFER = """(files) => {
  const transfer = new DataTransfer();
  for (const { name, data } of files) {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], name));
  }
  return transfer;
}"""

# Hub.upload (hubapi.js) with the page's own token, recording what it reports as the bytes go out.
UPLOAD = """async (size) => {
  const { Hub } = await import("./hubapi.js");
  const { accountId, token } = JSON.parse(sessionStorage.getItem("renderhub.viewer"));
  const calls = [];
  const onProgress = (sent, total) => calls.push([sent, total]);
  const names = await new Hub(accountId, token).upload("scratch", "big.bin", new Blob([new Uint8Array(size)]),
                                                         { onProgress });
  return { names, calls };
}"""


def console_errors(page: Page) -> list[str]:
    """The page's console errors from now on (failed requests included: Chromium logs them there)."""
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    return errors


def open_viewer(page: Page, hub: RunningHub) -> None:
    page.goto(f"{hub.endpoint}/viewer/")
    sign_in(page, hub)
    expect(page.locator("#app")).to_be_visible()
    page.select_option("#stream-size", "640x360")


def connect_new_session(page: Page, name: str) -> None:
    page.fill("#new-id", name)
    page.click("#create-button")
    expect(page.locator("#model-bar")).to_be_visible(timeout=30_000)
    expect(page.locator("#stage-message")).to_be_hidden(timeout=15_000)  # the first frame is on screen


def triangles(page: Page, timeout: float = 30_000) -> int:
    """The triangle count of the model loaded last, once the model bar says it is loaded."""
    info = page.locator("#model-info")
    expect(info).to_have_text(TRIANGLES, timeout=timeout)
    match = TRIANGLES.match(info.text_content() or "")
    assert match
    return int(match.group(1).replace(",", ""))


def load_and_count(page: Page, click: str) -> int:
    """Click a load button and read the triangles of what it loaded (the bar says "Loading" in between)."""
    page.click(click)
    expect(page.locator("#model-info")).not_to_have_text(TRIANGLES, timeout=5_000)
    return triangles(page)


def seen(page: Page) -> list[dict[str, Any]]:
    return list(page.evaluate("window.convertSeen"))


def statuses(states: list[dict[str, Any]]) -> list[str]:
    """The conversion statuses the badge showed, in order, each once."""
    shown: list[str] = []
    for state in states:
        if state["status"] and (not shown or shown[-1] != state["status"]):
            shown.append(state["status"])
    return shown


@pytest.mark.slow
def test_upload_converts_loads_and_lists_the_model(hub: RunningHub, browser: Browser, tmp_path: Path) -> None:
    """box.fbx through "Upload a model…": progress, status, the model in the session and in the list; a broken
    file's failure said in words, with nothing loaded."""
    page = browser.page()
    errors = console_errors(page)
    open_viewer(page, hub)
    expect(page.locator("#converted-empty")).to_be_visible()
    connect_new_session(page, "convert-e2e")
    page.evaluate(WATCH)

    page.set_input_files("#upload-input", str(BOX_FBX))
    expect(page.locator("#convert-status")).to_have_text("Succeeded", timeout=90_000)
    expect(page.locator("#convert-text")).to_have_text(
        re.compile(r"^Converted in \d+ s; loading it into the session\.$")
    )
    box = triangles(page)
    expect(page.locator("#model-info")).to_contain_text(" · 1 draw call · ")  # one, said as one
    states = seen(page)
    uploading = [state for state in states if state["text"].startswith("Uploading")]
    assert uploading and all(state["name"] == "box.fbx" for state in uploading), states
    assert uploading[-1]["text"] == "Uploading… 100% (17.2 kB of 17.2 kB)" and uploading[-1]["progress"] == 1
    shown = statuses(states)
    # The create answers NotStarted; a quick conversion may pass Running between two polls.
    assert shown in (["NotStarted", "Running", "Succeeded"], ["NotStarted", "Succeeded"]), shown
    waiting = [state for state in states if state["status"] in ("NotStarted", "Running")]
    assert waiting and all(re.fullmatch(r"(Waiting for a converter|Converting)… \d+ s", s["text"]) for s in waiting)
    assert all(state["progress"] == "indeterminate" for state in waiting)
    expect(page.locator("#convert-progress")).to_be_hidden()

    # The converted list: this model, loadable by its name in the hub's storage.
    listed = page.locator("#converted-list li")
    expect(listed).to_have_count(1)
    name = listed.get_attribute("data-model") or ""
    assert re.fullmatch(r"converted/(box-[0-9a-f]{6})/box\.arrAsset", name), name
    folder = name.split("/")[1]
    expect(listed.locator(".title")).to_have_text("box.fbx")
    expect(listed.locator(".meta")).to_have_text(name)
    with hub.client() as client:
        conversion = client.get_conversion(folder)
        assert [blob["name"] for blob in client.blobs("models")] == [f"{folder}/box.fbx"]
        assert {blob["name"] for blob in client.blobs("converted", folder)} >= {f"{folder}/box.arrAsset"}
    assert conversion["status"] == "Succeeded"
    assert conversion["settings"]["inputLocation"] == {
        "storageContainerUri": f"{hub.endpoint}/accounts/{hub.config.account_id}/storage/models",
        "blobPrefix": f"{folder}/",
        "relativeInputAssetPath": "box.fbx",
    }

    # Loading it again from the list, after another model: the box comes back.
    sample = load_and_count(page, "#load-sample")
    assert sample != box, "the sample and the box have as many triangles: the test cannot tell them apart"
    assert load_and_count(page, f"#converted-list li[data-model='{name}'] button.load") == box

    # A broken file: the failure in words, with what failed; nothing is loaded and the list stays as it was.
    broken = tmp_path / "x.fbx"
    broken.write_bytes(os.urandom(4096))
    page.set_input_files("#upload-input", str(broken))
    expect(page.locator("#convert-name")).to_have_text("x.fbx")
    expect(page.locator("#convert-status")).to_have_text("Failed", timeout=90_000)
    text = page.locator("#convert-text")
    expect(text).to_have_text(re.compile(r"^The model could not be converted: x\.fbx: .+\.$"))
    expect(text).to_have_class(re.compile(r"\berror-text\b"))
    assert "Check logs in output container" not in (text.text_content() or "")
    assert (text.get_attribute("title") or "").startswith("ConversionProcessFailed: Invalid input provided.")
    page.wait_for_timeout(1500)  # a load would have been asked for at once
    assert triangles(page, timeout=0) == box and page.locator("#model-progress").is_hidden()
    expect(listed).to_have_count(1)
    expect(page.locator("#upload-button")).to_be_enabled()
    assert not errors, errors


@pytest.mark.slow
def test_a_gltf_dropped_with_its_files_converts_and_loads_later(
    hub: RunningHub, browser: Browser, tmp_path: Path
) -> None:
    """Two models picked together: the page asks which. A .gltf dropped with its .bin and texture converts
    before any session is connected, and so does a .zip of them; Load waits for a connection, then loads."""
    page = browser.page()
    errors = console_errors(page)
    open_viewer(page, hub)

    # The progress bar's figures come from the upload's own progress events, as its bytes go out.
    size = 8 << 20
    upload = page.evaluate(UPLOAD, size)
    assert upload["names"] == ["big.bin"]
    sent = [loaded for loaded, _ in upload["calls"]]
    assert sent and sent == sorted(sent) and sent[-1] == size, sent
    assert {total for _, total in upload["calls"]} == {size}

    page.set_input_files("#upload-input", [str(BOX_FBX), str(BOX_GLTF / "BoxTextured.gltf")])
    expect(page.locator("#convert-choose")).to_be_visible()
    expect(page.locator("#convert-choose-text")).to_have_text(
        "These files hold 2 models. Which one should be converted?"
    )
    expect(page.locator("#convert-model option")).to_have_text(["box.fbx", "BoxTextured.gltf"])
    page.click("#convert-cancel")
    expect(page.locator("#convert-choose")).to_be_hidden()
    expect(page.locator("#convert-text")).to_have_text("Cancelled; nothing was uploaded.")
    with hub.client() as client:
        assert client.blobs("models") == []

    files = [
        {"name": path.name, "data": base64.b64encode(path.read_bytes()).decode()} for path in sorted(BOX_GLTF.iterdir())
    ]
    transfer = page.evaluate_handle(DATA_TRANSFER, files)
    page.dispatch_event("#viewport", "dragenter", {"dataTransfer": transfer})
    expect(page.locator("#drop-overlay")).to_be_visible()
    page.dispatch_event("#viewport", "drop", {"dataTransfer": transfer})
    expect(page.locator("#drop-overlay")).to_be_hidden()
    expect(page.locator("#convert-status")).to_have_text("Succeeded", timeout=90_000)
    expect(page.locator("#convert-name")).to_have_text("BoxTextured.gltf")
    expect(page.locator("#convert-text")).to_have_text(
        re.compile(r"^Converted in \d+ s\. Connect to a session to load it; it is in the list of converted models\.$")
    )
    item = page.locator("#converted-list li")
    expect(item).to_have_count(1)
    name = item.get_attribute("data-model") or ""
    assert re.fullmatch(r"converted/boxtextured-[0-9a-f]{6}/BoxTextured\.arrAsset", name), name
    folder = name.split("/")[1]
    with hub.client() as client:
        uploaded = sorted(blob["name"] for blob in client.blobs("models"))
        conversion = client.get_conversion(folder)
        answer = client.http.get(
            f"{client.storage_uri('converted')}/{folder}/BoxTextured.result.json",
            params={"api-version": "2021-01-01"},
            headers={"Authorization": f"Bearer {client.token()}"},
        )
    assert uploaded == [f"{folder}/{path.name}" for path in sorted(BOX_GLTF.iterdir())]
    assert conversion["settings"]["inputLocation"]["relativeInputAssetPath"] == "BoxTextured.gltf"
    assert answer.json()[-1] == {"result": "succeeded"}  # not "succeeded with warnings": the texture was there
    load = page.locator(f"#converted-list li[data-model='{name}'] button.load")
    expect(load).to_be_disabled()  # no session on the stage yet

    # A .zip of them in a folder: the hub unpacks it, and the model is found inside.
    archive = tmp_path / "Textured Box.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(BOX_GLTF.iterdir()):
            zipped.write(path, f"box/{path.name}")
    page.set_input_files("#upload-input", str(archive))
    expect(page.locator("#converted-list li")).to_have_count(2, timeout=90_000)  # the list refreshed after it
    expect(page.locator("#convert-name")).to_have_text("BoxTextured.gltf")
    expect(page.locator("#convert-status")).to_have_text("Succeeded")
    zipped_name = page.locator("#converted-list li").first.get_attribute("data-model") or ""  # newest first
    assert re.fullmatch(r"converted/textured-box-[0-9a-f]{6}/BoxTextured\.arrAsset", zipped_name), zipped_name
    with hub.client() as client:
        zipped_conversion = client.get_conversion(zipped_name.split("/")[1])
    assert zipped_conversion["settings"]["inputLocation"]["relativeInputAssetPath"] == "box/BoxTextured.gltf"

    connect_new_session(page, "convert-later")
    expect(load).to_be_enabled()
    load.click()
    assert triangles(page) == 12  # a cube
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "viewer-convert.png"))  # to look at the panel and the list
    assert not errors, errors

"""The viewer with a queue (headless Chromium): a session created from the page while every server of its size is
taken says where it waits, in the list and on the stage, and goes on once a server is free."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.hubs import ServedHub, wait_for
from tests.test_sdk import sizes_file
from tests.web import test_viewer
from tests.web.test_viewer import Browser, sign_in
from tests.web.test_viewer_regions import needs_chromium

browser = test_viewer.browser  # the fixture: Chromium trusting the test hubs' CA, failing on uncaught page errors


@pytest.fixture
def one_server_hub(served_hub_factory: Callable[..., ServedHub], tmp_path: Path) -> ServedHub:
    """A hub with one Standard server and a queue; its account may hold two Standard sessions. Started before the
    browser (Playwright's sync API runs an event loop in this thread, and a hub's first start runs one too)."""
    hub = served_hub_factory(sizes_file=sizes_file(tmp_path, 1), queue_timeout_seconds=120)
    hub.set_quota("Standard", 2)
    return hub


@needs_chromium
def test_a_queued_session_says_where_it_waits(one_server_hub: ServedHub, browser: Browser) -> None:
    hub = one_server_hub
    with hub.client() as client:
        client.create("running", "Standard", 10)
        wait_for(lambda: client.get("running")["status"] == "Ready", timeout=30)
        page = browser.page()
        page.goto(f"{hub.endpoint}/viewer")
        sign_in(page, hub)  # type: ignore[arg-type]
        page.fill("#new-id", "waiting")
        page.click("#create-button")
        expect(page.locator("#stage-message")).to_contain_text("Waiting for a free render server", timeout=15_000)
        expect(page.locator("#stage-message")).to_contain_text("number 1 in the queue")
        page.click("#refresh")
        waiting = page.locator("#session-list li", has_text="waiting")
        expect(waiting).to_contain_text(re.compile(r"Standard · number 1 in the queue"))
        client.stop("running")
        expect(page.locator("#current-status")).to_have_text("Ready", timeout=15_000)
        expect(page.locator("#stage-message")).not_to_contain_text("Waiting for a free render server")
        client.stop("waiting")

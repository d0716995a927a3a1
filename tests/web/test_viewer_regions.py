"""The viewer's region picker in headless Chromium, against two regions' hubs on one PostgreSQL database: each
region's round trip from the browser, the nearest preselected, sessions listed, created, connected to and stopped in
the region chosen (at another origin than the page's: real CORS, and a CSP that lets the page call there)."""

from __future__ import annotations

import re
import shutil
import ssl
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Page, Request, expect

from renderhub.api.web import content_security_policy
from renderhub.client import ApiError, HubClient
from tests.hubs import ServedHub, wait_for
from tests.web import test_viewer
from tests.web.chromium import CHROMIUM
from tests.web.test_viewer import Browser, sign_in

browser = test_viewer.browser  # the fixture: Chromium trusting the test hubs' CA, failing on uncaught page errors

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists() or shutil.which("certutil") is None,
    reason="needs Debian's chromium and certutil (libnss3-tools): make system-packages",
)

ROUND_TRIP = re.compile(r"^\d+(\.\d)? ms$")


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def shown_round_trips(page: Page) -> list[tuple[str, str, float]]:
    """The picker's rows top to bottom: (region, round trip as shown, the median it stands for)."""
    rows = page.locator("#region-list label.region")
    return [
        (
            rows.nth(i).get_attribute("data-region") or "",
            rows.nth(i).locator(".rtt").inner_text(),
            float(rows.nth(i).locator(".rtt").get_attribute("data-ms") or "nan"),
        )
        for i in range(rows.count())
    ]


def choose(page: Page, region: str) -> None:
    page.click(f"#region-list label.region[data-region='{region}']")
    expect(page.locator(f"#region-list input[value='{region}']")).to_be_checked()
    expect(page.locator("#sessions-region")).to_have_text(f"in {region}")
    expect(page.locator("#session-list")).not_to_have_class(re.compile(r"\bstale\b"))  # its own list is in


def directory(hub: ServedHub) -> list[dict[str, str]]:
    """The regions a hub lists."""
    trust = ssl.create_default_context(cafile=str(hub.ca))
    return list(httpx.get(f"{hub.endpoint}/regions", verify=trust).json()["regions"])


@pytest.fixture
def west_and_east(postgres_url: str, served_hub_factory: Callable[..., ServedHub]) -> dict[str, ServedHub]:
    """Two regions' hubs on one PostgreSQL database, each knowing of the other; the first account is west's.

    Started before the browser: Playwright's sync API runs an event loop in this thread, and a hub's first start
    runs one of its own."""
    west = served_hub_factory("west", database_url=postgres_url, region="west")
    east = served_hub_factory("east", database_url=postgres_url, region="east")
    east.config = west.config
    # West's directory learns of east within a few seconds of east's start (it reads the database now and then).
    wait_for(lambda: len(directory(west)) == 2, timeout=15)
    return {"west": west, "east": east}


def test_the_policy_names_only_well_formed_origins() -> None:
    """An endpoint an administrator mistyped cannot widen the page's policy: what is not an origin is left out."""
    policy = content_security_policy(["https://b.example:8443", "https://a.example", "https://x.example; script-src *"])
    assert "connect-src 'self' https://a.example https://b.example:8443; object-src" in policy
    assert "script-src *" not in policy and policy.count("script-src") == 1


@needs_chromium
def test_regions_round_trips_and_sessions_in_the_region_chosen(
    west_and_east: dict[str, ServedHub], browser: Browser
) -> None:
    hubs = west_and_east
    west, east = hubs["west"], hubs["east"]

    page = browser.page()
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    response = page.goto(f"{west.endpoint}/viewer/")
    assert response is not None
    csp = response.headers["content-security-policy"]
    # The directory's origins (sorted), so the page may call both hubs.
    assert f"connect-src 'self' {' '.join(sorted([east.endpoint, west.endpoint]))};" in csp, csp
    assert "default-src 'self'; script-src 'self';" in csp and "frame-ancestors 'none'" in csp  # the rest as it was
    sign_in(page, west)
    expect(page.locator("#app")).to_be_visible()

    # Both regions with a round trip in ms, nearest first; the nearest selected; the page's own hub said as much.
    rows = page.locator("#region-list label.region")
    expect(rows).to_have_count(2)
    for i in range(2):
        expect(rows.nth(i).locator(".rtt")).to_have_text(ROUND_TRIP, timeout=15_000)
    expect(page.locator("#measure-regions")).to_be_enabled()
    shown = shown_round_trips(page)
    assert {name for name, _, _ in shown} == {"west", "east"}
    medians = [ms for _, _, ms in shown]
    assert medians == sorted(medians) and all(ms > 0 for ms in medians), shown
    nearest, other = shown[0][0], shown[1][0]
    expect(page.locator("#region-list input:checked")).to_have_value(nearest)
    expect(page.locator("#sessions-region")).to_have_text(f"in {nearest}")
    expect(page.locator("#new-region")).to_have_text(f"in {nearest}")
    expect(rows.filter(has_text="this hub")).to_have_attribute("data-region", "west")
    title = page.get_attribute(f"#region-list label[data-region='{nearest}']", "title") or ""
    assert "median of 8 round trips from this browser" in title, title

    # A session made from the page in each region, the other region first: the page's own hub (relative URLs) and
    # east's (another origin) both. Every call about it goes to its region's endpoint, the relay's offer too.
    with HubClient(west.config, verify=str(west.ca)) as account:
        for region in (other, nearest):
            elsewhere = "east" if region == "west" else "west"
            choose(page, region)
            expect(page.locator("#new-region")).to_have_text(f"in {region}")
            expect(page.locator("#session-list li")).to_have_count(0)
            first_request = len(requests)
            page.fill("#new-id", f"in-{region}")
            page.click("#create-button")
            expect(page.locator("#current-id")).to_have_text(f"in-{region}")
            expect(page.locator("#current-region")).to_have_text(region)
            listed = page.locator(f"#session-list li[data-session-id='in-{region}']")
            expect(listed).to_be_visible()
            expect(listed).to_have_class(re.compile(r"\bcurrent\b"))
            # Its render servers are records in memory: the region's relay knows the session and finds no server
            # (another region's would have answered that it knows no such session).
            expect(page.locator("#stage-title")).to_have_text("Could not show this session", timeout=20_000)
            expect(page.locator("#stage-text")).to_contain_text("The render server did not answer")
            calls = [(r.method, r.url) for r in requests[first_request:] if "/sessions" in r.url or "/render/" in r.url]
            created = f"{hubs[region].endpoint}/accounts/{west.config.account_id}/sessions/in-{region}"
            assert ("PUT", f"{created}?api-version=2021-01-01") in calls, calls
            assert any(method == "POST" and url.endswith(f"/in-{region}/offer") for method, url in calls), calls
            assert {origin(url) for _, url in calls} == {hubs[region].endpoint}, calls

            with account.at(hubs[region].endpoint) as here, account.at(hubs[elsewhere].endpoint) as there:
                assert here.get(f"in-{region}")["status"] in ("Starting", "Ready")
                with pytest.raises(ApiError) as missing:
                    there.get(f"in-{region}")
                assert missing.value.status == 404

    # Each region lists its own sessions only; the session on the stage stays on it while another is selected.
    choose(page, other)
    expect(page.locator("#session-list li")).to_have_count(1)
    expect(page.locator("#session-list li")).to_have_attribute("data-session-id", f"in-{other}")
    expect(page.locator("#current-id")).to_have_text(f"in-{nearest}")

    # A reload keeps the region this tab picked, though it is not the nearest.
    page.reload()
    expect(page.locator("#region-list input:checked")).to_have_value(other, timeout=15_000)
    expect(page.locator("#session-list li")).to_have_attribute("data-session-id", f"in-{other}")

    # Measured again: figures again, the choice kept.
    page.click("#measure-regions")
    expect(page.locator("#measure-regions")).to_be_enabled(timeout=15_000)
    assert all(ROUND_TRIP.match(text) for _, text, _ in shown_round_trips(page)), shown_round_trips(page)
    expect(page.locator("#region-list input:checked")).to_have_value(other)

    # Stopped from the list, each in its region.
    page.on("dialog", lambda dialog: dialog.accept())  # each Stop asks first
    with HubClient(west.config, verify=str(west.ca)) as account:
        for region in (other, nearest):
            choose(page, region)
            page.click(f"#session-list li[data-session-id='in-{region}'] button.danger")
            expect(page.locator("#toast-text")).to_have_text(f"Session in-{region} stopped.", timeout=15_000)
            expect(page.locator("#session-list li")).to_have_count(0)
            with account.at(hubs[region].endpoint) as here:
                assert here.get(f"in-{region}")["status"] == "Stopped"

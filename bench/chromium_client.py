"""bench/stream.py's browser client: the viewer's own stream code (stream.js) in Debian's headless Chromium."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tests package, for its Chromium
from tests.web.chromium import CHROMIUM, FLAGS, trusting_home

SCRIPT = (Path(__file__).parent / "chromium_stream.js").read_text()
CONNECT_TIMEOUT = 20.0  # the render server may still hold the client before for a moment (409)


def available() -> str | None:
    """None when Chromium can run here; else why not."""
    return None if Path(CHROMIUM).exists() else f"no {CHROMIUM} (make system-packages installs it)"


def browser_processes(profile: Path) -> list[int]:
    """Every process of the Chromium whose profile is `profile`: its command lines name the profile folder."""
    marker = f"--user-data-dir={profile}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@contextmanager
def chromium_page(tmp: Path, ca: Path, name: str) -> Iterator[tuple[Page, Path]]:
    """A page of a fresh headless Chromium that trusts the hub's CA; its profile folder names its processes."""
    home = tmp / f"chromium-home-{name}"
    trusting_home(home, ca)
    profile = tmp / f"chromium-profile-{name}"
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS,
            env={**os.environ, "HOME": str(home)}, viewport={"width": 1280, "height": 800},
        )  # fmt: skip
        try:
            yield context.new_page(), profile
        finally:
            context.close()


def stream_in_chromium(
    page: Page, viewer_url: str, settings: dict[str, Any], measuring: Callable[[Callable[[], None]], None]
) -> dict[str, Any]:
    """Open the viewer page, stream and orbit (warm-up included), then the measured window inside
    `measuring(run_window)`, then the still camera; the script's figures."""
    page.goto(viewer_url)
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        try:
            page.evaluate(SCRIPT, settings)
            break
        except PlaywrightError as exc:
            if "Another client" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    measuring(lambda: page.evaluate("() => window.renderhubBench.measure()"))
    figures: dict[str, Any] = page.evaluate("() => window.renderhubBench.finish()")
    return figures

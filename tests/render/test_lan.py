"""Streaming across a LAN: the hub and its render server on one host, `renderhub connect` on another.

The other host is a network namespace joined to this one by a veth pair (tests/netns.py): it has its
loopback and its end of the link and nothing else, so whatever its client receives from the render server
crossed the link, and the ICE pair that carried the media can only be its LAN address and the hub host's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tests.hubs import RENDERHUB, RunningHub, kill_render_servers, new_hub
from tests.netns import Lan, lan, unavailable

FRAMES = 20
# The CLI must trust the hub through the ca.pem it is given, not through the test run's environment.
UNTRUSTED = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")


@dataclass
class LanHub(RunningHub):
    """A hub that this host reaches at `address` (RunningHub assumes 127.0.0.1)."""

    address: str = "127.0.0.1"

    @property
    def endpoint(self) -> str:
        return f"https://{self.address}:{self.port}"


@pytest.fixture
def network() -> Iterator[Lan]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with lan() as created:
        yield created


@pytest.fixture(params=["any-address", "lan-address"])
def lan_hub(request: pytest.FixtureRequest, network: Lan, tmp_path: Path, shared_tls: Path) -> Iterator[LanHub]:
    """A hub serving the LAN as a user sets one up: on every interface with the LAN address as its public
    host, or bound to the LAN address alone (its render servers then listen there too)."""
    if request.param == "any-address":
        args = ["--host", "0.0.0.0", "--public-host", network.host_address]
    else:
        args = ["--host", network.host_address]
    plain = new_hub(tmp_path / "hub", shared_tls, "--rate-limit", "0", *args)
    hub = LanHub(plain.data_dir, plain.port, plain.args, address=network.host_address)
    try:
        hub.start()  # up once its /health answers on the LAN address
        yield hub
    finally:
        hub.stop()
        kill_render_servers(hub.data_dir)


def _client_files(hub: RunningHub, folder: Path) -> Path:
    """What a user copies to the client host: arrconfig.json naming the hub by its LAN address, and the CA."""
    folder.mkdir()
    config = replace(hub.config, account_domain=hub.endpoint, rendering_domain=hub.endpoint)
    path = folder / "arrconfig.json"
    path.write_text(json.dumps(config.to_json()))
    shutil.copy(hub.ca, folder / "ca.pem")
    return path


def _on_peer(network: Lan, config: Path, *args: str) -> Any:
    """Run `renderhub ARGS --json` on the client host with this config; its JSON output."""
    command = network.command([RENDERHUB, *args, "--config", str(config), "--data-dir", str(config.parent), "--json"])
    env = {key: value for key, value in os.environ.items() if key not in UNTRUSTED}
    result = subprocess.run(command, capture_output=True, text=True, timeout=90, cwd=config.parent, env=env)
    assert result.returncode == 0, f"`renderhub {' '.join(args)}` failed on the client host:\n{result.stderr}"
    return json.loads(result.stdout)


def test_the_client_host_reaches_nothing_but_the_link(network: Lan) -> None:
    assert set(network.links()) == {"lo", network.peer_link}
    routes = network.routes()
    assert routes and all(route.get("dev") in ("lo", network.peer_link) for route in routes), routes
    assert not [route for route in routes if route["dst"] == "default"], "the client host must route nowhere"
    lan_routes = [route["dst"] for route in routes if route.get("table") is None and route["dev"] == network.peer_link]
    assert str(network.subnet) in lan_routes, routes


@pytest.mark.parametrize("signalling", ["relay", "direct"])
def test_a_client_on_another_host_streams_over_the_lan(lan_hub: LanHub, network: Lan, tmp_path: Path,
                                                       signalling: str) -> None:  # fmt: skip
    config = _client_files(lan_hub, tmp_path / "client")

    # The whole user flow runs on the client host: create the session, then connect to it.
    session = _on_peer(network, config, "session", "create", "--id", "lan", "--wait")
    assert session["status"] == "Ready", session
    assert session["hostname"] == network.host_address  # what --direct signals to, and browsers connect to

    before = network.received()
    direct = ["--direct"] if signalling == "direct" else []
    figures = _on_peer(network, config, "connect", "lan", "--frames", str(FRAMES),
                       "--width", "320", "--height", "180", *direct)  # fmt: skip
    after = network.received()

    assert figures["fps"] > 0 and figures["frames"] >= FRAMES and figures["codec"] == "H264", figures
    assert 0 < figures["pose_to_frame_ms_p50"] <= figures["pose_to_frame_ms_p95"], figures
    # The client host delivers UDP only from its loopback or the link: every datagram that loopback cannot
    # account for came over the link, and the video alone is at least one datagram per frame.
    assert set(after) == {"lo", network.peer_link, "udp"}, after  # no interface but these two
    delta = {key: after[key] - before[key] for key in after}
    assert delta["udp"] - delta["lo"] >= FRAMES, delta
    assert delta[network.peer_link] >= delta["udp"] - delta["lo"], delta


def test_a_hub_on_every_interface_names_its_lan_address_in_its_certificate(
    network: Lan, tmp_path: Path, shared_tls: Path
) -> None:
    """No --public-host: the certificate still covers the LAN address clients use (no verification turned off)."""
    plain = new_hub(tmp_path / "hub", shared_tls, "--rate-limit", "0", "--host", "0.0.0.0")
    hub = LanHub(plain.data_dir, plain.port, plain.args, address=network.host_address)
    try:
        hub.start()
        config = _client_files(hub, tmp_path / "client")
        assert _on_peer(network, config, "session", "create", "--id", "lan", "--wait")["status"] == "Ready"
        figures = _on_peer(network, config, "connect", "lan", "--frames", "5", "--width", "320", "--height", "180")
        assert figures["fps"] > 0, figures
    finally:
        hub.stop()
        kill_render_servers(hub.data_dir)

"""The render server's edges: request deadlines and sizes, connections per address, headers, and ICE candidates."""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from aiortc import RTCPeerConnection

from renderhub.auth import TokenService, new_account, new_signing_key
from renderhub.clock import Clock
from renderhub.render.candidates import filter_candidates
from renderhub.render.config import RenderConfig
from renderhub.render.http import HEAD_SECONDS, MAX_CONNECTIONS_PER_ADDRESS
from renderhub.tls import ensure_certificates
from tests.hubs import free_port, stop_process, wait_for

SESSION = "s-limits"
CHROMIUM = "/usr/bin/chromium"


@dataclass
class Server:
    port: int
    inspector_port: int
    token: str
    trust: ssl.SSLContext
    host: str = "127.0.0.1"

    def url(self, path: str, port: int | None = None) -> str:
        return f"https://{self.host}:{port or self.port}{path}"

    def tls(self, sock: socket.socket) -> ssl.SSLSocket:
        return self.trust.wrap_socket(sock, server_hostname=self.host)


@contextlib.contextmanager
def render_server(tmp_path: Path, host: str = "127.0.0.1") -> Iterator[Server]:
    """`python -m renderhub.render` as the local backend starts it, on `host`, with a config of our own."""
    now = Clock().now()
    ca, cert, key = ensure_certificates(tmp_path / "tls", sorted({"127.0.0.1", host}), now)
    account, _, _ = new_account("limits", now)
    tokens = TokenService(new_signing_key(), timedelta(hours=1))
    config = RenderConfig(
        account_id=account.id, size="Standard", tls_cert=str(cert), tls_key=str(key), token_public_key=tokens.public_pem
    )
    config.dump(tmp_path / "render.json")
    handshake, inspector = free_port(), free_port()
    command = [sys.executable, "-m", "renderhub.render", "--host", host, "--handshake-port", str(handshake),
               "--inspector-port", str(inspector), "--session-id", SESSION,
               "--config", str(tmp_path / "render.json")]  # fmt: skip
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    running = Server(
        handshake, inspector, tokens.issue(account, 1, now), ssl.create_default_context(cafile=str(ca)), host
    )

    def healthy() -> bool:
        assert process.poll() is None, (tmp_path / "server.log").read_text()
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(running.url("/health"), verify=running.trust).status_code == 200
        return False

    try:
        wait_for(healthy, timeout=60, interval=0.2)
        yield running
    finally:
        stop_process(process, grace=10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with render_server(tmp_path) as running:
        yield running


def seconds_until_closed(sock: socket.socket, trickle: bytes, limit: float) -> float | None:
    """Seconds until the server closes `sock` while it gets one byte of `trickle` every half second; None when
    it is still open after `limit` seconds."""
    started = time.monotonic()
    sock.settimeout(0.5)
    sent = 0
    while time.monotonic() - started < limit:
        try:
            if sent < len(trickle):
                sock.sendall(trickle[sent : sent + 1])
                sent += 1
            if sock.recv(1024) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:  # reset, or a TLS connection cut short
            return time.monotonic() - started
    return None


# ------------------------------------------------------------------------------------------ the HTTP responder


@pytest.mark.integration
def test_a_request_head_trickled_in_is_cut_off_and_so_is_a_silent_connection(server: Server) -> None:
    slowloris = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Padding: " + b"a" * 200
    with server.tls(socket.create_connection(("127.0.0.1", server.port))) as sock:
        closed = seconds_until_closed(sock, slowloris, limit=HEAD_SECONDS + 10)
    assert closed is not None and closed < HEAD_SECONDS + 5, f"still open after {HEAD_SECONDS + 10} s"
    # One that never even starts TLS: the handshake counts against the same deadline.
    with socket.create_connection(("127.0.0.1", server.inspector_port)) as sock:
        closed = seconds_until_closed(sock, b"", limit=HEAD_SECONDS + 10)
    assert closed is not None and closed < HEAD_SECONDS + 5, f"still open after {HEAD_SECONDS + 10} s"
    assert httpx.get(server.url("/health"), verify=server.trust).status_code == 200


@pytest.mark.integration
def test_a_one_megabyte_header_answers_431_and_the_server_carries_on(server: Server) -> None:
    answer = httpx.get(server.url("/health"), headers={"X-Big": "a" * 1_000_000}, verify=server.trust)
    assert answer.status_code == 431 and answer.reason_phrase == "Request Header Fields Too Large"
    assert answer.json()["error"]["code"] == "RequestHeaderFieldsTooLarge"
    health = httpx.get(server.url("/health"), verify=server.trust)
    assert health.status_code == 200 and health.json()["sessionId"] == SESSION


@pytest.mark.integration
def test_a_one_megabyte_offer_answers_413(server: Server) -> None:
    offer = {"type": "offer", "sdp": "v=0\r\n" + "a=x-padding:" + "a" * 1_000_000 + "\r\n"}
    auth = {"Authorization": f"Bearer {server.token}"}
    answer = httpx.post(server.url("/offer"), json=offer, headers=auth, verify=server.trust)
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "ContentTooLarge"
    assert httpx.get(server.url("/health"), verify=server.trust).status_code == 200


@pytest.mark.integration
def test_connections_past_the_cap_for_one_address_are_closed_at_once(server: Server) -> None:
    with contextlib.ExitStack() as held:
        for _ in range(MAX_CONNECTIONS_PER_ADDRESS):
            held.enter_context(socket.create_connection(("127.0.0.1", server.port)))
        time.sleep(0.5)  # the server has accepted them all
        with socket.create_connection(("127.0.0.1", server.port)) as extra:
            closed = seconds_until_closed(extra, b"", limit=HEAD_SECONDS - 1)
        assert closed is not None and closed < 2, "the connection past the cap was left open"
        # Another address (the server listens on 127.0.0.1; 127.0.0.2 is this machine too) is not held up.
        other = httpx.HTTPTransport(local_address="127.0.0.2", verify=server.trust)
        with httpx.Client(transport=other) as client:
            assert client.get(server.url("/health")).status_code == 200
    # Once they are closed, the first address may connect again.
    wait_for(lambda: _health(server) == 200, timeout=10, interval=0.2)


def _health(server: Server) -> int | None:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(server.url("/health"), verify=server.trust).status_code
    return None


@pytest.mark.integration
def test_every_answer_has_nosniff_and_hsts_and_the_inspector_page_a_strict_policy(server: Server) -> None:
    page = httpx.get(server.url("/", server.inspector_port), verify=server.trust)
    answers = [
        page,
        httpx.get(server.url("/status", server.inspector_port), verify=server.trust),  # 401
        httpx.get(server.url("/health"), verify=server.trust),
        httpx.get(server.url("/nowhere"), verify=server.trust),  # 404
    ]
    for answer in answers:
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["strict-transport-security"].startswith("max-age=")
    policy = dict(directive.strip().split(" ", 1) for directive in page.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert policy["connect-src"] == "'self'" and "'unsafe-inline'" not in policy["script-src"]
    assert page.headers["referrer-policy"] == "no-referrer"


@pytest.mark.integration
@pytest.mark.skipif(not Path(CHROMIUM).exists() or shutil.which("certutil") is None, reason="needs Debian's chromium")
def test_the_inspector_page_still_works_in_a_browser_under_its_policy(server: Server) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_context(ignore_https_errors=True).new_page()
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            page.goto(server.url("/", server.inspector_port) + f"#token={server.token}")
            expect(page.locator("#session")).to_have_text(SESSION, timeout=15_000)
            expect(page.locator("#state")).to_have_text("no client connected")
            expect(page.locator("#figures")).to_contain_text("clientsServed")
        finally:
            browser.close()
    assert not [line for line in console if "Content Security Policy" in line], console


# ---------------------------------------------------------------------------------------------- ICE candidates

PUBLIC_ONLY = ["192.0.2.2", "2001:db8::2"]  # a server on the internet with no private interface (nor loopback)
GUARDED = [  # a candidate in each guarded range, and an address of the server's own in that same range
    ("127.0.0.1", "127.0.0.1"),
    ("127.8.8.8", "127.0.0.1"),
    ("::1", "::1"),
    ("::ffff:127.0.0.1", "127.0.0.1"),
    ("169.254.10.10", "169.254.1.1"),
    ("fe80::1", "fe80::2"),
    ("10.1.2.3", "10.200.0.1"),
    ("172.16.5.5", "172.31.0.1"),
    ("192.168.1.20", "192.168.1.10"),
    ("100.64.3.3", "100.127.0.1"),
    ("198.18.0.2", "198.19.0.1"),
    ("fd12::5", "fd00::2"),
]


def offer(*candidates: str, sections: int = 1) -> str:
    """An SDP offer with these candidate lines in each of `sections` media sections."""
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    for section in range(sections):
        lines += ["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", f"a=mid:{section}", *candidates]
    return "\r\n".join(lines) + "\r\n"


def candidate(host: str, port: int = 5000, transport: str = "udp") -> str:
    return f"a=candidate:{port} 1 {transport} 2130706431 {host} {port} typ host"


def kept(sdp: str) -> list[str]:
    return [line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")]


@pytest.mark.parametrize(("host", "own"), GUARDED)
def test_a_candidate_in_a_private_loopback_or_link_local_range_needs_the_server_in_that_range(
    host: str, own: str
) -> None:
    assert kept(filter_candidates(offer(candidate(host)), PUBLIC_ONLY).sdp) == []
    assert kept(filter_candidates(offer(candidate(host)), [*PUBLIC_ONLY, own]).sdp) == [host]


def test_an_address_in_another_private_range_does_not_open_this_one() -> None:
    own = ["10.0.0.5", "127.0.0.1", "fd00::2"]
    filtered = filter_candidates(offer(candidate("192.168.1.20"), candidate("172.16.0.9"), candidate("fe80::9")), own)
    assert kept(filtered.sdp) == [] and (filtered.offered, filtered.dropped) == (3, 3)


def test_public_addresses_and_mdns_names_are_kept_and_the_edges_of_each_range_are_exact() -> None:
    public = ["8.8.8.8", "172.32.0.1", "172.15.255.255", "100.128.0.1", "198.20.0.1", "11.0.0.1", "2001:db8::9"]
    names = ["0f3c7e2a-1b2c-4d5e-8f90-123456789abc.local"]
    filtered = filter_candidates(offer(*(candidate(h) for h in public + names)), PUBLIC_ONLY)
    assert kept(filtered.sdp) == public + names and filtered.dropped == 0


def test_the_unspecified_multicast_and_malformed_candidates_and_tcp_ones_are_always_dropped() -> None:
    own = ["127.0.0.1", "10.0.0.5", "192.0.2.2"]
    bad = [candidate("0.0.0.0"), candidate("::"), candidate("224.0.0.251"), candidate("255.255.255.255"),
           candidate("ff02::1"), candidate("not-an-address"), candidate("10.0.0.9", transport="tcp"),
           "a=candidate:1 1 udp 1 10.0.0.9"]  # fmt: skip
    filtered = filter_candidates(offer(*bad), own)
    assert kept(filtered.sdp) == [] and filtered.dropped == len(bad)


def test_at_most_ten_distinct_addresses_are_kept_and_repeats_in_other_sections_are_free() -> None:
    many = [candidate("203.0.113.7", 6000 + n) for n in range(25)]
    filtered = filter_candidates(offer(*many, sections=2), PUBLIC_ONLY)
    ports = [line.split()[5] for line in filtered.sdp.splitlines() if line.startswith("a=candidate:")]
    assert ports == [str(6000 + n) for n in range(10)] * 2
    assert (filtered.offered, filtered.dropped) == (50, 30)


def test_an_offer_with_nothing_to_drop_is_left_as_it_came() -> None:
    sdp = offer(candidate("127.0.0.1"), candidate("203.0.113.7")).replace("\r\n", "\n")
    assert filter_candidates(sdp, ["127.0.0.1"]).sdp == sdp


def stun_ports(listeners: dict[int, socket.socket], seconds: float) -> set[int]:
    """The listeners' ports that received a STUN message within `seconds`."""
    reached: set[int] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for port, sock in listeners.items():
            with contextlib.suppress(BlockingIOError):
                while True:
                    data = sock.recv(2048)
                    if len(data) >= 20 and struct.unpack("!I", data[4:8])[0] == 0x2112A442:  # the magic cookie
                        reached.add(port)
        time.sleep(0.05)
    return reached


async def offer_loopback_candidates(server: Server, count: int = 30) -> tuple[set[int], list[int], list[str]]:
    """Offer 192.168.x and 10.x candidates (no address of this machine's) and then `count` on loopback ports where
    the test listens: (the ports that got STUN within 8 s, the ports in offer order, the server's log)."""
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.createDataChannel("renderhub")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    with contextlib.ExitStack() as stack:
        listeners: dict[int, socket.socket] = {}
        for _ in range(count):  # UDP ports on this machine's loopback, named as the client's candidates
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            listeners[sock.getsockname()[1]] = sock
        named = [
            f"a=candidate:{n} 1 udp 2130706431 {host} 9 typ host"
            for n, host in enumerate(["192.168.77.1", "10.77.0.1"])
        ]
        named += [f"a=candidate:{port} 1 udp 2130706431 127.0.0.1 {port} typ host" for port in listeners]
        lines = [line for line in sdp.splitlines() if not line.startswith("a=candidate:")]
        first_media = next(n for n, line in enumerate(lines) if line.startswith("m="))
        lines[first_media + 1 : first_media + 1] = named
        body = {"type": "offer", "sdp": "\r\n".join(lines) + "\r\n", "width": 320, "height": 240}
        auth = {"Authorization": f"Bearer {server.token}"}
        async with httpx.AsyncClient(verify=server.trust) as client:
            answer = await client.post(server.url("/offer"), json=body, headers=auth, timeout=60)
            assert answer.status_code == 200, answer.text
            reached = stun_ports(listeners, seconds=8)
            status = await client.get(server.url("/status", server.inspector_port), headers=auth)
    return reached, list(listeners), status.json()["log"]


@pytest.mark.integration
async def test_the_server_checks_only_the_first_ten_candidates_and_drops_private_ones_it_cannot_reach(
    server: Server,
) -> None:
    # The server is bound to loopback, so it has loopback: the first ten loopback ports are kept.
    reached, ports, log = await offer_loopback_candidates(server)
    assert reached, "the server sent no connectivity check at all: the test proves nothing"
    assert reached <= set(ports[:10]), f"{len(reached)} ports got STUN; only the first ten may"
    assert any("dropped 22 of the offer's 32 ICE candidates" in line for line in log)


def network_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (None when it has none)."""
    import ifaddr

    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback:
                return ip.ip
    return None


@pytest.mark.integration
async def test_a_server_on_a_network_address_never_checks_loopback_candidates(tmp_path: Path) -> None:
    host = network_address()
    if host is None:
        pytest.skip("this machine has no network address but loopback")
    with render_server(tmp_path, host) as server:
        reached, _, log = await offer_loopback_candidates(server, count=5)
    assert reached == set(), f"{len(reached)} loopback ports got STUN from a server on {host}"
    assert any("dropped 7 of the offer's 7 ICE candidates" in line for line in log)

"""The hub's HTTP edges against a real `renderhub serve`: slow heads, big heads, many connections, big bodies."""

from __future__ import annotations

import json
import select
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from renderhub.api.limits import HANDSHAKE_TIMEOUT_SECONDS, HEAD_TIMEOUT_SECONDS
from tests.hubs import RENDERHUB, RunningHub, free_port, stop_process, wait_for

V = {"api-version": "2021-01-01"}
SLACK = 5.0  # a loaded machine's scheduling delays, on top of the hub's own deadline


def tls(hub: RunningHub, source: str = "127.0.0.1") -> ssl.SSLSocket:
    """A TLS connection to the hub from a loopback address of our choice."""
    raw = socket.create_connection(("127.0.0.1", hub.port), timeout=10, source_address=(source, 0))
    return ssl.create_default_context(cafile=str(hub.ca)).wrap_socket(raw, server_hostname="127.0.0.1")


def read_response(conn: ssl.SSLSocket) -> tuple[int, dict[str, str], bytes]:
    """One response (status, headers, body) with a Content-Length, as a client reads it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"the hub closed the connection without an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = conn.recv(65536)
        assert chunk, "the hub closed the connection mid-answer"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_by_peer(conn: ssl.SSLSocket, wait: float) -> bool:
    """Whether the hub closes this connection (EOF, reset or TLS close) within `wait` seconds; what else it sends
    (TLS session tickets, which wake select but carry no data) is read and passed over."""
    deadline = time.monotonic() + wait
    conn.setblocking(False)
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            if not conn.pending():
                select.select([conn], [], [], remaining)
            try:
                if conn.recv(65536) == b"":
                    return True
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except OSError:  # ssl.SSLError included
                return True
        return False
    finally:
        conn.settimeout(10)


def refused(conn_factory: Callable[[], ssl.SSLSocket]) -> bool:
    """Whether a new connection is turned away: closed at or right after the handshake, no answer to a request."""
    try:
        conn = conn_factory()
    except (OSError, ssl.SSLError):
        return True
    with conn:
        try:
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: hub\r\n\r\n")
            return conn.recv(65536) == b""
        except (OSError, ssl.SSLError):
            return True


def trust(hub: RunningHub) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(hub.ca))


def health(hub: RunningHub, source: str = "127.0.0.1") -> int:
    transport = httpx.HTTPTransport(verify=trust(hub), local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.get(f"{hub.endpoint}/health").status_code


@pytest.fixture
def http(hub: RunningHub) -> Iterator[httpx.Client]:
    """An HTTPS client with a token for the hub's first account."""
    with hub.client() as hub_client:
        token = hub_client.token()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=hub.endpoint, verify=trust(hub), headers=headers, timeout=30) as client:
        yield client


def session_url(hub: RunningHub, session_id: str) -> str:
    return f"/accounts/{hub.config.account_id}/sessions/{session_id}"


def arr_error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json"), response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] and error["message"], error
    return error


def test_a_head_trickled_a_byte_a_second_is_cut_off(hub: RunningHub) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: hub\r\nX-Slow: " + b"a" * 100
    with tls(hub) as conn:
        started = time.monotonic()
        for byte in head:  # bounded: 100+ seconds of bytes, far past the deadline
            try:
                conn.sendall(bytes([byte]))
            except (OSError, ssl.SSLError):
                break
            if closed_by_peer(conn, 1.0):
                break
            assert time.monotonic() - started < HEAD_TIMEOUT_SECONDS + SLACK, "the hub still waits for the head"
        assert time.monotonic() - started < HEAD_TIMEOUT_SECONDS + SLACK
    assert health(hub) == 200


def test_an_idle_connection_without_a_request_is_closed(hub: RunningHub) -> None:
    with tls(hub) as conn:
        assert closed_by_peer(conn, HEAD_TIMEOUT_SECONDS + SLACK)


def test_a_hub_with_an_idle_keep_alive_client_stops_at_once_and_cleanly(hub: RunningHub) -> None:
    """A pooled client that is not reading (an SDK between calls) never answers a TLS close: the hub cuts its
    connection when told to stop, instead of waiting it out and then failing to close its event loop."""
    with tls(hub) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_response(conn)[0] == 200
        assert hub.process is not None
        started = time.monotonic()
        hub.process.terminate()
        assert hub.process.wait(30) == -signal.SIGTERM  # uvicorn's graceful stop ends by re-raising the signal
        assert time.monotonic() - started < SLACK  # not the graceful stop's whole wait (5 s) or more
        assert closed_by_peer(conn, 1)
    assert "Traceback" not in hub.log and "timeout graceful shutdown exceeded" not in hub.log


def test_a_connection_that_never_starts_tls_is_closed(hub: RunningHub) -> None:
    with socket.create_connection(("127.0.0.1", hub.port), timeout=HANDSHAKE_TIMEOUT_SECONDS + SLACK) as raw:
        try:
            assert raw.recv(1) == b""  # asyncio's default would hold it for a minute
        except ConnectionResetError:
            pass


@pytest.mark.parametrize(
    "headers",
    [b"X-Pad: " + b"a" * 1024 * 1024 + b"\r\n", b"".join(b"X-Many-%d: 1\r\n" % i for i in range(300))],
    ids=["one 1 MB header", "300 header lines"],
)
def test_an_oversized_head_answers_431(hub: RunningHub, headers: bytes) -> None:
    with tls(hub) as conn:
        try:
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: hub\r\n" + headers + b"\r\n")
        except (OSError, ssl.SSLError):
            pass  # the hub may stop reading once it has answered: the answer is what counts
        status, response_headers, body = read_response(conn)
    assert status == 431
    assert json.loads(body)["error"]["code"] == "RequestHeaderFieldsTooLarge"
    assert response_headers["connection"] == "close"
    assert health(hub) == 200


def test_connections_past_the_per_address_cap_are_turned_away(hub_factory: Callable[..., RunningHub]) -> None:
    hub = hub_factory("--rate-limit", "0", "--max-connections-per-address", "4")
    held = [tls(hub) for _ in range(4)]
    try:
        for conn in held:  # answered: so the hub has counted each of them
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: hub\r\n\r\n")
            assert read_response(conn)[0] == 200
        assert refused(lambda: tls(hub))
        assert health(hub, source="127.0.0.2") == 200  # another client is not affected
        held.pop().close()
        wait_for(lambda: not refused(lambda: tls(hub)), timeout=5)
    finally:
        for conn in held:
            conn.close()
    assert "--max-connections-per-address" in hub.log  # the hub said why, naming the knob


@pytest.fixture
def session(hub: RunningHub, http: httpx.Client) -> Iterator[str]:
    """A session with a 20-minute lease; stopped afterwards."""
    created = http.put(session_url(hub, "edges"), params=V, json={"size": "Standard", "maxLeaseTimeMinutes": 20})
    assert created.status_code == 201, created.text
    yield "edges"
    http.post(session_url(hub, "edges") + "/:stop", params=V)


def test_a_10_mb_patch_answers_413_and_changes_nothing(hub: RunningHub, http: httpx.Client, session: str) -> None:
    body = json.dumps({"maxLeaseTimeMinutes": 45, "padding": "x" * 10 * 1024 * 1024}).encode()
    response = http.patch(session_url(hub, session), params=V, content=body)
    assert response.status_code == 413
    assert arr_error(response)["code"] == "ContentTooLarge"
    assert http.get(session_url(hub, session), params=V).json()["maxLeaseTimeMinutes"] == 20
    assert health(hub) == 200


def test_a_chunked_body_past_the_limit_answers_413(hub: RunningHub, http: httpx.Client, session: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"maxLeaseTimeMinutes": 45, "padding": "'
        for _ in range(32):  # 2 MB in all, with no Content-Length to trust
            yield b"x" * 65536
        yield b'"}'

    response = http.patch(session_url(hub, session), params=V, content=chunks())
    assert response.status_code == 413
    assert arr_error(response)["code"] == "ContentTooLarge"
    assert http.get(session_url(hub, session), params=V).json()["maxLeaseTimeMinutes"] == 20


def test_the_relay_answers_413_for_a_1_mb_offer(hub: RunningHub, http: httpx.Client, session: str) -> None:
    offer = json.dumps({"type": "offer", "sdp": "v=0\r\n" + "a=x\r\n" * 200_000}).encode()
    assert len(offer) > 1024 * 1024
    url = f"/render/{hub.config.account_id}/{session}/offer"
    # Refused by the hub itself, before anything else: even while the session is still starting (else 409).
    response = http.post(url, content=offer)
    assert response.status_code == 413
    assert arr_error(response)["code"] == "ContentTooLarge"
    wait_for(
        lambda: http.get(session_url(hub, session), params=V).json()["status"] == "Ready", timeout=90, interval=0.5
    )
    response = http.post(url, content=offer)
    assert response.status_code == 413  # not a 502 from a render server that gave up on it
    assert arr_error(response)["code"] == "ContentTooLarge"


def test_hsts_on_every_tls_response_and_never_over_plain_http(
    hub: RunningHub, http: httpx.Client, tmp_path: Path
) -> None:
    answers = (http.get("/health"), http.get("/no/such/thing"), httpx.get(f"{hub.endpoint}/health", verify=trust(hub)))
    for response in answers:
        assert response.headers["strict-transport-security"] == "max-age=31536000", response.url
    port = free_port()
    command = [RENDERHUB, "serve", "--data-dir", str(tmp_path / "plain"), "--port", str(port), "--insecure-http"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def answer() -> httpx.Response | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            except httpx.HTTPError:
                return None

        response = wait_for(answer, timeout=30, interval=0.2)
        assert response.status_code == 200
        assert "strict-transport-security" not in response.headers
    finally:
        stop_process(process)


def test_a_client_gone_mid_body_leaves_one_log_line(hub: RunningHub, http: httpx.Client, session: str) -> None:
    token = http.headers["authorization"]
    with tls(hub) as conn:
        conn.sendall(
            f"PATCH {session_url(hub, session)}?api-version=2021-01-01 HTTP/1.1\r\nHost: hub\r\n"
            f"Authorization: {token}\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n".encode()
            + b"{"
            + b" " * 99
        )
        time.sleep(0.5)  # the hub has the head and the first bytes: its handler is waiting for the rest
    lines = wait_for(lambda: [line for line in hub.log.splitlines() if "disconnected" in line], timeout=10)
    assert len(lines) == 1, lines
    assert "Traceback" not in hub.log
    assert health(hub) == 200

"""The hub's time limits as a client meets them, against a real `renderhub serve`: how long a slow or silent
connection is held, how soon an oversized head is answered, how long a stop takes with an idle client, and how
soon a render server refuses a revoked key's token. Each beside its configured limit or its plain baseline."""

from __future__ import annotations

import argparse
import re
import signal
import socket
import ssl
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from processes import stop_after
from renderhub.api.limits import HANDSHAKE_TIMEOUT_SECONDS, HEAD_TIMEOUT_SECONDS, TLS_CLOSE_TIMEOUT_SECONDS
from renderhub.client import ArrConfig
from soak import RENDERHUB, Hub, running_hub

API = {"api-version": "2021-01-01"}


def tls(hub: Hub) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", hub.port), timeout=30)
    return ssl.create_default_context(cafile=str(hub.ca)).wrap_socket(raw, server_hostname="127.0.0.1")


def held(conn: socket.socket, trickle: bytes = b"") -> float:
    """Seconds until the hub ends the connection, sending `trickle` a byte a second meanwhile."""
    started = time.monotonic()
    conn.settimeout(1.0)
    try:
        while True:
            try:
                if conn.recv(4096) == b"":
                    break
            except TimeoutError:
                if trickle:
                    conn.sendall(trickle[:1])
                    trickle = trickle[1:] or trickle
            except ssl.SSLWantReadError:
                continue
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        pass
    return time.monotonic() - started


def answered(hub: Hub, head: bytes) -> tuple[float, int]:
    """Seconds from sending a request head to the status line, and the status."""
    with tls(hub) as conn:
        started = time.monotonic()
        conn.sendall(head)
        data = b""
        while b"\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        return time.monotonic() - started, int(data.split()[1])


def stop_time(hub: Hub, idle_client: bool) -> float:
    """Seconds from SIGTERM to the hub's exit, with or without a pooled client that is not reading."""
    conn = None
    if idle_client:
        conn = tls(hub)
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        conn.recv(65536)
    assert hub.process is not None
    started = time.monotonic()
    hub.process.send_signal(signal.SIGTERM)
    hub.process.wait(60)
    took = time.monotonic() - started
    if conn is not None:
        conn.close()
    hub.start()
    return took


def revocation_times(hub: Hub, rounds: int) -> list[float]:
    """Seconds from `renderhub account rotate-key` returning to the render server refusing the old key's token."""
    config = ArrConfig.load(hub.data_dir / "arrconfig.json")
    key = config.account_key
    with httpx.Client(verify=str(hub.ca), timeout=10) as http:

        def token() -> str:
            answer = http.get(
                f"{hub.endpoint}/Accounts/{config.account_id}/token",
                headers={"Authorization": f"Bearer {config.account_id}:{key}"},
            )
            answer.raise_for_status()
            return str(answer.json()["AccessToken"])

        bearer = {"Authorization": f"Bearer {token()}"}
        sessions = f"{hub.endpoint}/accounts/{config.account_id}/sessions/limits-bench"
        http.put(sessions, params=API, json={"maxLeaseTimeMinutes": 30, "size": "Standard"}, headers=bearer)
        deadline = time.monotonic() + 120
        while (session := http.get(sessions, params=API, headers=bearer).json())["status"] == "Starting":
            assert time.monotonic() < deadline, "the session did not start"
            time.sleep(0.2)
        assert session["status"] == "Ready", session
        inspector = f"https://{session['hostname']}:{session['arrInspectorPort']}/status"
        times = []
        try:
            for _ in range(rounds):
                old = {"Authorization": f"Bearer {token()}"}
                assert http.get(inspector, headers=old).status_code == 200
                out = subprocess.run(
                    [RENDERHUB, "account", "rotate-key", config.account_id, "--data-dir", str(hub.data_dir)],
                    capture_output=True, text=True, check=True,
                ).stdout  # fmt: skip
                rotated = time.monotonic()
                found = re.search(r"new primary key\s+(\S+)", out)
                assert found, out
                key = found.group(1)
                while http.get(inspector, headers=old).status_code != 401:
                    assert time.monotonic() - rotated < 30, "the revoked token was still taken after 30 s"
                    time.sleep(0.02)
                times.append(time.monotonic() - rotated)
        finally:
            http.post(f"{sessions}/:stop", params=API, headers={"Authorization": f"Bearer {token()}"})
    return times


def median(measure: Callable[[], float], runs: int) -> tuple[float, float, float]:
    values = [measure() for _ in range(runs)]
    return statistics.median(values), min(values), max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="measurements of each figure (median, min, max)")
    args = parser.parse_args()
    stop_after(900)
    rows: list[tuple[str, tuple[float, float, float], str]] = []
    with tempfile.TemporaryDirectory(prefix="rh-limits-") as tmp, running_hub(Path(tmp)) as hub:

        def slow_head() -> float:
            with tls(hub) as conn:
                return held(conn, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100)

        def silent_tls() -> float:
            with tls(hub) as conn:
                return held(conn)

        def no_handshake() -> float:
            with socket.create_connection(("127.0.0.1", hub.port), timeout=30) as raw:
                return held(raw)

        big = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
        plain = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        rows += [
            ("a head trickled a byte a second: held", median(slow_head, args.runs),
             f"limit {HEAD_TIMEOUT_SECONDS:g} s"),
            ("TLS up, no request: held", median(silent_tls, args.runs), f"limit {HEAD_TIMEOUT_SECONDS:g} s"),
            ("TCP up, no TLS handshake: held", median(no_handshake, args.runs),
             f"limit {HANDSHAKE_TIMEOUT_SECONDS:g} s"),
            ("a 20 kB head: answered 431 after", median(lambda: answered(hub, big)[0], args.runs),
             "baseline below"),
            ("  a plain GET /health: answered after", median(lambda: answered(hub, plain)[0], args.runs), ""),
            ("stop (SIGTERM) with an idle keep-alive client", median(lambda: stop_time(hub, True), args.runs),
             f"TLS close {TLS_CLOSE_TIMEOUT_SECONDS:g} s, grace 5 s"),
            ("  stop with no client", median(lambda: stop_time(hub, False), args.runs), "baseline"),
        ]  # fmt: skip
        assert answered(hub, big)[1] == 431
        revoked = revocation_times(hub, max(args.runs, 5))
        rows.append(
            ("rotate-key -> a render server refuses the old token",
             (statistics.median(revoked), min(revoked), max(revoked)), "designed: within about 1.5 s")
        )  # fmt: skip
    print(f"\n{'figure (seconds)':52} {'median':>7} {'min':>7} {'max':>7}   against")
    for name, (mid, low, high), against in rows:
        print(f"{name:52} {mid:7.3f} {low:7.3f} {high:7.3f}   {against}")


if __name__ == "__main__":
    main()

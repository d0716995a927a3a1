"""A real render-server process with a short model-load limit: a download that trickles on times out cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from renderhub.auth import TokenService, new_account, new_signing_key
from renderhub.clock import Clock
from renderhub.connect import RenderClient
from renderhub.render import protocol
from renderhub.render.camera import orbit_pose
from renderhub.render.config import RenderConfig
from renderhub.tls import ensure_certificates
from tests.hubs import free_port, stop_process, wait_for

# Render workers or servers run as real processes here.
pytestmark = pytest.mark.integration

LOAD_TIMEOUT = 3.0


@dataclass
class Server:
    offer: str
    inspector: str
    token: str
    trust: ssl.SSLContext


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """`python -m renderhub.render` as the local backend starts it, with a config of our own."""
    now = Clock().now()
    ca, cert, key = ensure_certificates(tmp_path / "tls", ["127.0.0.1"], now)
    account, _, _ = new_account("timeouts", now)
    tokens = TokenService(new_signing_key(), timedelta(hours=1))
    config = RenderConfig(
        account_id=account.id, size="Standard", tls_cert=str(cert), tls_key=str(key),
        token_public_key=tokens.public_pem, allow_private_urls=True, model_load_timeout_seconds=LOAD_TIMEOUT,
    )  # fmt: skip
    config.dump(tmp_path / "render.json")
    handshake, inspector = free_port(), free_port()
    command = [sys.executable, "-m", "renderhub.render", "--handshake-port", str(handshake), "--inspector-port",
               str(inspector), "--session-id", "s-timeout", "--config", str(tmp_path / "render.json")]  # fmt: skip
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    trust = ssl.create_default_context(cafile=str(ca))
    base = "https://127.0.0.1:{}"

    def healthy() -> bool:
        assert process.poll() is None, (tmp_path / "server.log").read_text()
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(base.format(handshake) + "/health", verify=trust).status_code == 200
        return False

    try:
        wait_for(healthy, timeout=60, interval=0.2)
        yield Server(base.format(handshake) + "/offer", base.format(inspector), tokens.issue(account, 1, now), trust)
    finally:
        stop_process(process, grace=10)


@dataclass
class Trickle:
    url: str
    served: asyncio.Event
    dropped: asyncio.Event


@contextlib.asynccontextmanager
async def trickling_model() -> AsyncIterator[Trickle]:
    """An HTTP server that promises a 100 kB model and sends one byte of it every 100 ms."""
    served, dropped = asyncio.Event(), asyncio.Event()
    handlers: list[asyncio.Task[None]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: model/gltf-binary\r\nContent-Length: 100000\r\n\r\n")
            served.set()
            for _ in range(100_000):
                writer.write(b"\0")
                await writer.drain()
                await asyncio.sleep(0.1)
        except (ConnectionError, asyncio.IncompleteReadError):
            dropped.set()  # the render server gave up on the download and closed the connection
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield Trickle(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/slow.glb", served, dropped)
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def frame_after_pose(client: RenderClient, yaw: float) -> float:
    """The spread of the first frame showing a new pose, in its upper part (about 0 for an empty scene)."""
    pose = orbit_pose([0.0, 1.0, 0.0], 7.0, yaw, 25.0)
    pose_id = client.send_pose(pose.position, pose.orientation, pose.fov)
    frame = await client.frame_showing(pose_id)
    return float(frame.to_ndarray(format="rgb24")[:300].std())


async def test_a_download_that_never_ends_times_out_and_the_next_model_loads(server: Server) -> None:
    client = RenderClient()
    try:
        async with trickling_model() as trickle:
            await client.connect(server.offer, server.token, ssl_context=server.trust, width=640, height=360)
            assert await frame_after_pose(client, 30.0) < 5
            started = time.monotonic()
            client.send(protocol.load_model(url=trickle.url, ref="slow"))
            error = await client.expect("error", "modelLoaded", timeout=30)
            assert trickle.served.is_set() and time.monotonic() - started >= LOAD_TIMEOUT - 0.5
            assert error["type"] == "error" and error["code"] == protocol.LOAD_TIMEOUT and error["ref"] == "slow"
            assert f"within {LOAD_TIMEOUT:g} s" in error["message"]
            await asyncio.wait_for(trickle.dropped.wait(), 10)  # the download was abandoned, not left running
        loaded = await client.load_model("sample", timeout=30)
        assert loaded["triangles"] > 90_000
        assert await frame_after_pose(client, 40.0) > 20
        auth = {"Authorization": f"Bearer {server.token}"}
        status = await asyncio.to_thread(httpx.get, server.inspector + "/status", headers=auth, verify=server.trust)
        stream = status.json()["client"]
        assert stream["model"]["triangles"] > 90_000 and stream["errorsSent"] == 1
        assert stream["recent"]["bitrateKbps"] > 0
        assert stream["workerRestarts"] == 0, "the worker was idle during the download: nothing to restart"
    finally:
        await client.close()

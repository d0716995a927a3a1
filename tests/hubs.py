"""Test helpers: hubs over TLS (real processes, or the app served in a thread), and render-server cleanup."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from renderhub.api import create_app
from renderhub.backends import local
from renderhub.backends.memory import MemoryBackend
from renderhub.bootstrap import first_start, server_config
from renderhub.client import ArrConfig, HubClient
from renderhub.clock import Clock
from renderhub.config import Settings
from tests.delay_line import FarHost

RENDERHUB = str(Path(sys.executable).parent / "renderhub")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render_server_pids(data_dir: Path) -> list[int]:
    """Live render-server processes started for the hub with this data dir."""
    return [pid for pid in local.render_servers(str(data_dir.resolve())) if pid_alive(pid)]


def kill_render_servers(data_dir: Path) -> None:
    for pid in render_server_pids(data_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop_process(process: subprocess.Popen[Any], sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
    """Signal a process (unless it ended), wait `grace` seconds for it, then kill it."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(predicate, timeout: float, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll until predicate() is truthy; return its value, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


@dataclass
class HubEndpoint:
    """What a client needs to reach a hub over TLS: its address, its CA, its first account."""

    data_dir: Path
    port: int
    config: ArrConfig = field(init=False)

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    def client(self) -> HubClient:
        return HubClient(self.config, verify=str(self.ca))

    def set_quota(self, size: str, max_sessions: int, *extra: str) -> None:
        """`renderhub account set-quota` for the hub's first account (`extra`: e.g. --database-url URL)."""
        subprocess.run(
            [RENDERHUB, "account", "set-quota", self.config.account_id, "--size", size, "--max", str(max_sessions),
             "--data-dir", str(self.data_dir), *extra],
            check=True, capture_output=True,
        )  # fmt: skip

    def new_account(self, name: str) -> ArrConfig:
        """`renderhub account create` on the hub's database: a second account's config."""
        path = self.data_dir / f"{name}.arrconfig.json"
        subprocess.run(
            [RENDERHUB, "account", "create", "--name", name, "--data-dir", str(self.data_dir),
             "--arrconfig", str(path)],
            check=True, capture_output=True,
        )  # fmt: skip
        return ArrConfig.load(path)

    def sdk(self, polling_interval: float = 0.2):  # type: ignore[no-untyped-def]
        """The official Azure SDK client for this hub's account (REQUESTS_CA_BUNDLE is set by conftest)."""
        from azure.core.credentials import AzureKeyCredential
        from azure.mixedreality.remoterendering import RemoteRenderingClient

        return RemoteRenderingClient(
            endpoint=self.endpoint,
            account_id=self.config.account_id,
            account_domain="127.0.0.1",
            credential=AzureKeyCredential(self.config.account_key),
            authentication_endpoint_url=self.endpoint,
            polling_interval=polling_interval,
        )


@dataclass
class RunningHub(HubEndpoint):
    """A `renderhub serve` process: render servers are real processes (or Ray actors)."""

    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> str:
        return (self.data_dir / "hub.log").read_text()

    def command(self) -> list[str]:
        return [RENDERHUB, "serve", "--data-dir", str(self.data_dir), "--port", str(self.port), *self.args]

    def start(self, timeout: float = 30.0) -> RunningHub:
        with (self.data_dir / "hub.log").open("ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"hub exited with {self.process.returncode}:\n{self.log}")
            try:
                trust = ssl.create_default_context(cafile=str(self.ca))
                if httpx.get(f"{self.endpoint}/health", verify=trust, timeout=1).status_code == 200:
                    break
            except (httpx.HTTPError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"hub did not come up:\n{self.log}")
            time.sleep(0.1)
        arrconfig = self.data_dir / "arrconfig.json"
        if arrconfig.exists():  # only the hub that created the database's first account writes one
            self.config = ArrConfig.load(arrconfig)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process:
            stop_process(self.process, sig)


@dataclass
class ServedHub(HubEndpoint):
    """The hub app on uvicorn over TLS in a thread of the test process, its render servers in memory: the API as
    every client sees it, without a hub process or render-server processes to start (logic, wire, fuzzing)."""

    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None

    def start(self, **settings: Any) -> ServedHub:
        unlimited = {"rate_limit_per_second": 0}  # unless the test sets one
        hub_settings = Settings(data_dir=self.data_dir, port=self.port, **{**unlimited, **settings})
        files = asyncio.run(first_start(hub_settings, Clock()))
        app = create_app(hub_settings, backend=MemoryBackend(hub_settings))
        config = server_config(hub_settings, files, app, log_level="warning", access_log=False)
        self.server = server = uvicorn.Server(config)
        self.thread = threading.Thread(target=server.run, name=f"hub on port {self.port}", daemon=True)
        self.thread.start()
        wait_for(lambda: server.started or not self.thread or not self.thread.is_alive(), timeout=30)
        if not server.started:
            raise RuntimeError("the hub did not start (see the log above)")
        if hub_settings.arrconfig_path.exists():  # only the hub that created the database's first account writes one
            self.config = ArrConfig.load(hub_settings.arrconfig_path)
        return self

    def stop(self) -> None:
        if self.server and self.thread:
            self.server.should_exit = True
            self.thread.join(30)
            if self.thread.is_alive():
                raise RuntimeError(f"the hub on port {self.port} did not stop within 30 s")


def hub_dir(data_dir: Path, shared_tls: Path) -> Path:
    """A hub data dir whose TLS files come from the test session's one CA (so one REQUESTS_CA_BUNDLE serves all)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "tls").exists():
        shutil.copytree(shared_tls, data_dir / "tls")
    return data_dir


def new_hub(data_dir: Path, shared_tls: Path, *args: str) -> RunningHub:
    """A `renderhub serve` process to start, on the test session's CA."""
    return RunningHub(hub_dir(data_dir, shared_tls), free_port(), list(args))


@dataclass
class RegionHub(RunningHub):
    """A `renderhub serve` of one region, run on a far host (tests/delay_line.py) and reached at its address."""

    far: FarHost | None = None
    region: str = ""
    extra: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        assert self.far is not None
        return f"https://{self.far.peer_address}:{self.port}"

    def start(self, timeout: float = 60.0) -> RunningHub:
        assert self.far is not None
        self.args = ["--host", self.far.peer_address, "--region", self.region, "--rate-limit", "0", *self.extra]
        return super().start(timeout)

    def command(self) -> list[str]:
        assert self.far is not None
        return self.far.command(super().command())

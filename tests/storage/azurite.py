"""Azurite, the Azure Blob storage emulator, as the tests run it: installed once from the lock file, started on a
free loopback port (HTTP, or HTTPS with a certificate from a local CA), stopped with nothing left behind."""

from __future__ import annotations

import fcntl
import hashlib
import json
import secrets
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.core.credentials import AzureNamedKeyCredential
from azure.storage.blob import ContainerClient, ContainerSasPermissions, generate_container_sas

from renderhub.render.lifetime import die_with_parent
from renderhub.storage.blob import API_VERSION, LinkedAccount, Network
from renderhub.tls import ensure_certificate

TOOL = Path(__file__).resolve().parents[2] / "tools" / "azurite"
EXECUTABLE = TOOL / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key, the same in every installation (not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT = 60.0
NPM_TIMEOUT = 900


def _pinned() -> str:
    return str(json.loads((TOOL / "package.json").read_text())["dependencies"]["azurite"])


def _installed_version() -> str | None:
    manifest = TOOL / "node_modules" / "azurite" / "package.json"
    if not EXECUTABLE.exists() or not manifest.exists():
        return None
    return str(json.loads(manifest.read_text())["version"])


def install() -> Path:
    """The azurite-blob executable, after `npm ci` when node_modules is missing or holds another version. A file
    lock makes parallel test workers wait for one install instead of racing."""
    if _installed_version() == _pinned():
        return EXECUTABLE
    digest = hashlib.sha256(str(TOOL).encode()).hexdigest()[:12]
    with open(Path(tempfile.gettempdir()) / f"renderhub-azurite-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed_version() != _pinned():
            done = subprocess.run(
                ["npm", "ci", "--prefix", str(TOOL), "--no-audit", "--no-fund"],
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"npm ci --prefix {TOOL} failed:\n{(done.stdout + done.stderr)[-4000:]}")
    return EXECUTABLE


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Azurite:
    """A running Azurite blob service and helpers to set up what a test needs in it."""

    endpoint: str  # the account's endpoint, path-style: http(s)://127.0.0.1:PORT/devstoreaccount1
    process: subprocess.Popen[bytes]
    log: Path
    ca_file: str | None = None  # the CA that vouches for its certificate, when it serves HTTPS
    account: str = ACCOUNT
    key: str = KEY

    def linked(self) -> LinkedAccount:
        """This Azurite as an operator would link it to the hub."""
        return LinkedAccount(name=self.account, key=self.key, endpoint=self.endpoint)

    def network(self, **changes: Any) -> Network:
        """Client settings that reach this Azurite: loopback allowed, its CA trusted, short timeouts."""
        network = Network(connect_timeout=5.0, read_timeout=30.0, retries=1, allow_private=True, ca_file=self.ca_file)
        return replace(network, **changes)

    @contextmanager
    def _client(self, container_uri: str) -> Iterator[ContainerClient]:
        with ContainerClient.from_container_url(
            container_uri,
            credential=AzureNamedKeyCredential(self.account, self.key),
            api_version=API_VERSION,
            connection_verify=self.ca_file or True,
        ) as client:
            yield client

    def container(self, name: str | None = None) -> str:
        """A new, empty container (a unique name unless given); returns its URL."""
        uri = f"{self.endpoint}/{name or 'test-' + secrets.token_hex(6)}"
        with self._client(uri) as client:
            client.create_container()
        return uri

    def sas(self, container_uri: str, permission: str, *, expiry: timedelta = timedelta(hours=1)) -> str:
        """A container SAS ('rl', 'cw', 'rwdl', ...) signed with the account key, without a leading '?'."""
        return generate_container_sas(
            self.account,
            container_uri.rstrip("/").rsplit("/", 1)[1],
            account_key=self.key,
            permission=ContainerSasPermissions.from_string(permission),
            expiry=datetime.now(UTC) + expiry,
        )

    def put(self, container_uri: str, name: str, data: bytes) -> None:
        with self._client(container_uri) as client:
            client.upload_blob(name, data, overwrite=True)

    def names(self, container_uri: str) -> list[str]:
        with self._client(container_uri) as client:
            return sorted(blob.name for blob in client.list_blobs())

    def read(self, container_uri: str, name: str) -> bytes:
        with self._client(container_uri) as client:
            return client.download_blob(name).readall()

    def content_type(self, container_uri: str, name: str) -> str | None:
        with self._client(container_uri) as client:
            return client.get_blob_client(name).get_blob_properties().content_settings.content_type

    def stop(self) -> None:
        """Stop the service and wait for it to be gone."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(workdir: Path, *, https: bool = False) -> Azurite:
    """Azurite's blob service on 127.0.0.1, in memory; its log in workdir. Tries another port if the free one was
    taken in between."""
    executable = install()
    workdir.mkdir(parents=True, exist_ok=True)
    options = ["--blobHost", "127.0.0.1", "--disableTelemetry", "--inMemoryPersistence"]
    ca_file = None
    if https:
        tls = workdir / "tls"
        cert, key = ensure_certificate(tls, "azurite", ["127.0.0.1"], datetime.now(UTC))
        options += ["--cert", str(cert), "--key", str(key)]
        ca_file = str(tls / "ca.pem")
    scheme = "https" if https else "http"
    for _ in range(3):
        port = free_port()
        log = workdir / f"azurite-{port}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [str(executable), *options, "--blobPort", str(port)],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # a killed test run leaves no Azurite behind
            )
        azurite = Azurite(f"{scheme}://127.0.0.1:{port}/{ACCOUNT}", process, log, ca_file)
        deadline = time.monotonic() + START_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            if _listening(port):
                return azurite
            time.sleep(0.05)
        azurite.stop()
    raise RuntimeError(f"Azurite did not start:\n{log.read_text(errors='replace')[-4000:]}")

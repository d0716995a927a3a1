"""The render server's configuration: one JSON file the hub's backend writes for each session."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from renderhub.datadir import private_dir, write_secret


@dataclass(frozen=True)
class RenderConfig:
    """Who may connect, what may be loaded, how big a stream may be (ports and ids come on the command line)."""

    account_id: str | None  # None: a pooled server, which accepts nobody until it is assigned a session
    size: str
    tls_cert: str
    tls_key: str
    token_public_key: str  # PEM: the hub's token-signing public key
    asset_roots: list[str] = field(default_factory=list)
    max_primitives: int | None = 20_000_000
    max_model_bytes: int = 512 * 1024 * 1024
    max_width: int = 1920
    max_height: int = 1080
    max_fps: int = 60
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    allow_private_urls: bool = False
    fetch_timeout_seconds: float = 60.0
    # The whole of one loadModel (download, parse, upload): past it the render worker is restarted if it holds the load.
    model_load_timeout_seconds: float = 60.0
    # How long a departed client's scene (model and camera) waits for the next client; 0: reset at once, as ARR.
    scene_grace_seconds: float = 60.0
    device_index: int | None = None
    # On a cluster node the hub's asset directory is elsewhere: named models not found in asset_roots are
    # fetched from the hub (its /render/assets/ URL, trusted through the hub's CA, with the client's token).
    hub_assets_url: str | None = None
    hub_ca_pem: str | None = None
    # Where the server asks whether its clients' keys still hold (render/revocation.py), and fetches a client's
    # converted models from its account's storage when they are not on this host; None: it does not ask.
    hub_url: str | None = None
    # The hub's own storage on this host (the local backend): a folder per account.
    storage_root: str | None = None

    @classmethod
    def load(cls, path: Path) -> RenderConfig:
        return cls(**json.loads(path.read_text()))

    def dump(self, path: Path) -> None:
        """Write the file 0600 in a 0700 folder, whatever the umask: it may carry TURN passwords (ice_servers)."""
        private_dir(path.parent)
        write_secret(path, json.dumps(self.__dict__, indent=2))

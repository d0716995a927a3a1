"""What every backend launches a render server with: its config file and its command line."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from renderhub.backends.base import ServerSpec
from renderhub.config import Settings
from renderhub.errors import BackendError
from renderhub.render.config import RenderConfig
from renderhub.render.ports import read_ports

CONFIG_NAME = re.compile(r"session-(\d+)\.json$")
# Seconds a launched render server may take to bind its ports: its start-up imports, on a loaded machine.
PORTS_TIMEOUT = 30.0


def render_config(settings: Settings, spec: ServerSpec, tls_cert: str, tls_key: str) -> RenderConfig:
    """The render server's config for a session: who may connect, what it may load, its size's limits."""
    profile = spec.profile
    max_mb = profile.get("max_model_mb")
    return RenderConfig(
        account_id=spec.account_id,
        size=spec.size,
        tls_cert=tls_cert,
        tls_key=tls_key,
        token_public_key=spec.token_public_key,
        asset_roots=[str(root.resolve()) for root in settings.asset_roots],
        max_primitives=profile.get("max_primitives"),
        max_model_bytes=int(max_mb * 1024 * 1024) if max_mb else RenderConfig.max_model_bytes,
        max_width=int(profile.get("max_width", RenderConfig.max_width)),
        max_height=int(profile.get("max_height", RenderConfig.max_height)),
        max_fps=int(profile.get("max_fps", RenderConfig.max_fps)),
        ice_servers=settings.ice_servers,
        allow_private_urls=settings.allow_private_model_urls,
    )


def config_path(config_dir: Path, spec: ServerSpec) -> Path:
    """Where a session's config goes; the name carries the session's seq, which reconciliation reads back."""
    return config_dir / f"session-{spec.session_seq}.json"


def ports_path(config: Path) -> Path:
    """Where the server a config is for writes the ports it bound."""
    return config.with_name(config.stem + ".ports.json")


def render_command(bind_host: str, spec: ServerSpec, hub_dir: str, config: Path) -> list[str]:
    """The server binds two free ports in ARR's range itself and writes them to its ports file."""
    return [
        sys.executable, "-m", "renderhub.render",
        "--host", bind_host,
        "--session-id", spec.session_id,
        "--hub-dir", hub_dir,
        "--config", str(config.resolve()),
        "--ports-file", str(ports_path(config).resolve()),
    ]  # fmt: skip


def wait_for_ports(path: Path, alive: Callable[[], bool], timeout: float = PORTS_TIMEOUT) -> tuple[int, int]:
    """The (handshake, inspector) ports a launched server bound; BackendError if it ends or dawdles first."""
    deadline = time.monotonic() + timeout
    while (ports := read_ports(path)) is None:
        if not alive():
            raise BackendError("RenderServerLaunchFailed", "The render server exited before it bound its ports.")
        if time.monotonic() > deadline:
            raise BackendError("RenderServerLaunchFailed", f"The render server bound no ports in {timeout:g} seconds.")
        time.sleep(0.01)
    return ports


def session_seq(command: list[str]) -> int | None:
    """The session seq a render server's command line was launched for (None: not one of ours)."""
    try:
        found = CONFIG_NAME.search(command[command.index("--config") + 1])
    except (ValueError, IndexError):
        return None
    return int(found.group(1)) if found else None

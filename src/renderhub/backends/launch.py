"""What every backend launches a render server with: its config file and its command line."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from renderhub.backends.base import ServerSpec
from renderhub.config import Settings
from renderhub.render.config import RenderConfig

CONFIG_NAME = re.compile(r"session-(\d+)\.json$")


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


def render_command(bind_host: str, spec: ServerSpec, hub_dir: str, config: Path) -> list[str]:
    return [
        sys.executable, "-m", "renderhub.render",
        "--host", bind_host,
        "--handshake-port", str(spec.handshake_port),
        "--inspector-port", str(spec.inspector_port),
        "--session-id", spec.session_id,
        "--hub-dir", hub_dir,
        "--config", str(config.resolve()),
    ]  # fmt: skip


def session_seq(command: list[str]) -> int | None:
    """The session seq a render server's command line was launched for (None: not one of ours)."""
    try:
        found = CONFIG_NAME.search(command[command.index("--config") + 1])
    except (ValueError, IndexError):
        return None
    return int(found.group(1)) if found else None

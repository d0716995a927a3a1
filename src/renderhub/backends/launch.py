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
from renderhub.render.assignment import Assignment, read_assignment
from renderhub.render.config import RenderConfig
from renderhub.render.ports import read_ports

CONFIG_NAME = re.compile(r"(session-(\d+)|pool-([a-z0-9]+))\.json$")
# Seconds a launched render server may take to bind its ports: its start-up imports, on a loaded machine.
PORTS_TIMEOUT = 30.0
ASSIGN_TIMEOUT = 5.0  # seconds a running pooled server may take to take its session


def render_config(settings: Settings, spec: ServerSpec, tls_cert: str, tls_key: str) -> RenderConfig:
    """The render server's config for a session: who may connect, what it may load, its size's limits."""
    profile = spec.profile
    max_mb = profile.get("max_model_mb")
    return RenderConfig(
        account_id=spec.session.account_id if spec.session else None,
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
        scene_grace_seconds=settings.scene_grace_seconds,
        hub_url=hub_url(settings, settings.endpoint),
        hub_ca_pem=hub_ca_pem(settings),
        storage_root=str(settings.storage_root.resolve()),
    )


def hub_url(settings: Settings, local_endpoint: str) -> str:
    """Where a render server asks the hub about its clients' keys: `local_endpoint` (the hub as this machine or
    the cluster reaches it), or with the operator's own certificate the public host, which that certificate names."""
    if settings.tls_cert and not settings.insecure_http:
        host = f"[{settings.advertised_host}]" if ":" in settings.advertised_host else settings.advertised_host
        return f"https://{host}:{settings.port}/"
    return local_endpoint.rstrip("/") + "/"


def hub_ca_pem(settings: Settings) -> str | None:
    """The CA a render server trusts the hub by: the hub's own CA, or None (the system's store) with the
    operator's certificate or plain HTTP."""
    if settings.tls_cert or settings.insecure_http:
        return None
    return (settings.tls_dir / "ca.pem").read_text()


def config_path(config_dir: Path, spec: ServerSpec) -> Path:
    """Where a server's config goes; the name carries its key (the session's seq, or its pool id), which
    reconciliation reads back from the server's command line."""
    return config_dir / f"{spec.key}.json"


def ports_path(config: Path) -> Path:
    """Where the server a config is for writes the ports it bound."""
    return config.with_name(config.stem + ".ports.json")


def assignment_path(config: Path) -> Path:
    """Where a pooled server learns its session (render.assignment)."""
    return config.with_name(config.stem + ".assignment.json")


def render_command(bind_host: str, spec: ServerSpec, hub_dir: str, config: Path) -> list[str]:
    """The server binds two free ports in ARR's range itself and writes them to its ports file; a pooled one
    reads its session from its assignment file when told."""
    if spec.session:
        serves = ["--session-id", spec.session.session_id]
    else:
        serves = ["--assignment-file", str(assignment_path(config).resolve())]
    return [
        sys.executable, "-m", "renderhub.render",
        "--host", bind_host,
        *serves,
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


def launched_for(command: list[str]) -> tuple[int | None, str] | None:
    """(session seq, pool id) of the server a render server's command line launched: the seq of a pooled
    server is its assignment's (None while it has none). None: not one of ours."""
    try:
        config = Path(command[command.index("--config") + 1])
    except (ValueError, IndexError):
        return None
    found = CONFIG_NAME.search(config.name)
    if found is None:
        return None
    if found.group(2):
        return int(found.group(2)), ""
    assignment = read_assignment(assignment_path(config))
    return (assignment.session_seq if assignment else None), found.group(3)


def check_assignable(current: Assignment | None, wanted: Assignment) -> None:
    """A server serves one session in its life: refuse to give it another."""
    if current is not None and current != wanted:
        raise BackendError("RenderServerAssigned", f"The render server serves session {current.session_id} already.")

"""Backends: interchangeable ways to run render servers (local processes, a Ray cluster)."""

from __future__ import annotations

import socket

from renderhub.backends.base import Backend, ServerSpec, ServerState
from renderhub.config import Settings
from renderhub.errors import ConfigurationError


def load_backend(settings: Settings) -> Backend:
    """The backend named in the settings."""
    if settings.backend == "local":
        from renderhub.backends.local import LocalBackend

        return LocalBackend(settings)
    if settings.backend == "ray":
        from renderhub.backends.ray import RayBackend  # Ray is imported only by hubs that use it

        return RayBackend(settings)
    raise ValueError(f"unknown backend {settings.backend!r} (available: local, ray)")


def check_ray_address(address: str | None, timeout: float = 5.0) -> str:
    """The Ray head's address, once something answers there: ray.init would retry for minutes (Ray itself
    is not imported here, so `serve` fails at once)."""
    if not address:
        raise ConfigurationError("--backend ray needs --ray-address HOST:PORT (the Ray head's address)")
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except ValueError:
        raise ConfigurationError(f"--ray-address must be HOST:PORT, not {address!r}") from None
    except OSError as exc:
        raise ConfigurationError(f"Cannot reach the Ray head at {address}: {exc.strerror or exc}") from None
    return address


__all__ = ["Backend", "ServerSpec", "ServerState", "check_ray_address", "load_backend"]

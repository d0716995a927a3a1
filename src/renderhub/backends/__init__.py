"""Backends: interchangeable ways to run render servers (local processes, a Ray cluster)."""

from __future__ import annotations

from renderhub.backends.base import Backend, ServerSpec, ServerState
from renderhub.config import Settings


def load_backend(settings: Settings) -> Backend:
    """The backend named in the settings."""
    if settings.backend == "local":
        from renderhub.backends.local import LocalBackend

        return LocalBackend(settings)
    if settings.backend == "ray":
        from renderhub.backends.ray import RayBackend  # Ray is imported only by hubs that use it

        return RayBackend(settings)
    raise ValueError(f"unknown backend {settings.backend!r} (available: local, ray)")


__all__ = ["Backend", "ServerSpec", "ServerState", "load_backend"]

"""The HTTP API: ARR's session REST API, the STS token endpoint, health; the app factory."""

from renderhub.api.app import create_app

__all__ = ["create_app"]

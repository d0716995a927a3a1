"""The render server's errors: one base with a stable code (clients and tests match on it) and a message."""

from __future__ import annotations


class RenderError(Exception):
    """Base of every error the render server raises on purpose; the hub's errors.py is its twin."""

    code = "RenderError"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

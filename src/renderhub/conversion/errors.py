"""The one error a conversion fails with: an ARR error code for the API and a message for people."""

from __future__ import annotations

BAD_INPUT = "ConversionProcessFailed"  # the input or its settings are at fault
INTERNAL = "InternalServerError"  # our own bug


class ConversionFailed(Exception):
    """code: ARR error code for the API ('ConversionProcessFailed' for bad input/settings, 'InternalServerError'
    for our own bugs); message: for people (names the file / settings property at fault)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def bad_input(message: str) -> ConversionFailed:
    return ConversionFailed(BAD_INPUT, message)

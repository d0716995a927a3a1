"""Storage errors: the ARR error code a failed conversion reports, and a message without secrets."""

from __future__ import annotations

INPUT_DENIED = "InputContainerAccessDenied"
OUTPUT_DENIED = "OutputContainerAccessDenied"
PROCESS_FAILED = "ConversionProcessFailed"
INTERNAL_ERROR = "InternalServerError"

# ARR's own wording (ARR-CONVERSIONS 1.2); the output one is its input twin, which no recording shows.
DENIED_MESSAGES = {
    INPUT_DENIED: "Access to the input blob container was denied. "
    "Invalid access rights or invalid shared access signature.",
    OUTPUT_DENIED: "Access to the output blob container was denied. "
    "Invalid access rights or invalid shared access signature.",
}
INTERNAL_MESSAGE = "Unexpected internal server error encountered."


class StorageError(Exception):
    """Base of the storage errors: a code and a message fit for a conversion's `error` object."""

    def __init__(self, code: str, message: str) -> None:
        # Both in args, so the error pickles across the process boundary the conversion runs behind.
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class StorageDenied(StorageError):
    """The SAS or key does not allow what the conversion needs (code Input- or OutputContainerAccessDenied)."""


class StorageFailed(StorageError):
    """Anything else: ConversionProcessFailed (the input is missing, too big, ...) or InternalServerError."""


def denied(code: str) -> StorageDenied:
    """The denial for one side, worded as ARR worded it."""
    return StorageDenied(code, DENIED_MESSAGES[code])

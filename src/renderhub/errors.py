"""The error tree: each class carries its HTTP status and ARR error code."""

from __future__ import annotations


class RenderHubError(Exception):
    """Base of every error a client may see; the message must never carry a secret."""

    status = 500
    code = "InternalServerError"

    def __init__(self, message: str, *, target: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.target = target


class BadRequest(RenderHubError):
    status = 400
    code = "BadRequest"


class Unauthorized(RenderHubError):
    status = 401
    code = "Unauthorized"


class Forbidden(RenderHubError):
    status = 403
    code = "Forbidden"


class QuotaExceeded(Forbidden):
    """The account holds as many live sessions of a size as its quota allows: 403, not 429, which the SDK would
    retry; nothing was started."""

    code = "QuotaExceeded"


class BudgetExceeded(Forbidden):
    """The create or extension would pass the account's monthly budget: 403 like QuotaExceeded (never retried by
    the SDK); nothing was changed."""

    code = "BudgetExceeded"


class NotFound(RenderHubError):
    status = 404
    code = "NotFound"


class MethodNotAllowed(RenderHubError):
    status = 405
    code = "MethodNotAllowed"


class DelegatedResourceAccessError(RenderHubError):
    """A conversion names a container the hub may not reach: no SAS, and not linked to the account."""

    status = 403
    code = "DelegatedResourceAccessError"


class Conflict(RenderHubError):
    status = 409
    code = "Conflict"


class UnprocessableEntity(RenderHubError):
    status = 422
    code = "UnprocessableEntity"


class TooManyRequests(RenderHubError):
    status = 429
    code = "TooManyRequests"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(RenderHubError):
    """The database could not be reached; translated from the driver's exceptions."""

    status = 503
    code = "ServiceUnavailable"


class BackendError(Exception):
    """A backend could not start or reach a render server; becomes a session's error, never a response."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ConfigurationError(Exception):
    """The hub cannot run as configured; stops it at start with this message."""

"""ARR wire schemas: parsing request bodies and rendering session objects and errors."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from renderhub import leases
from renderhub.errors import BadRequest, RenderHubError
from renderhub.leases import MAX_LEASE_MINUTES
from renderhub.models import ID_PATTERN, ID_RULE, ServerSize, Session, SessionStatus

API_VERSIONS = ("2021-01-01", "2021-01-01-preview")
SESSION_ID = ID_PATTERN
LEASE = "maxLeaseTimeMinutes"
IDLE_TIMEOUT = "idleTimeoutMinutes"  # RenderHub's own: ARR clients never send it


def check_api_version(version: str | None) -> str:
    if version is None:
        raise BadRequest("The api-version query parameter is required.", target="api-version")
    if version not in API_VERSIONS:
        raise BadRequest(
            f"The api-version '{version[:64]}' is not supported; use one of {', '.join(API_VERSIONS)}.",
            target="api-version",
        )
    return version


def check_id(value: str, kind: str) -> str:
    """A session or conversion id (`kind`: "session" or "conversion") as ARR took them, else BadRequest."""
    if not ID_PATTERN.fullmatch(value):
        raise BadRequest(f"The {kind} id must be {ID_RULE}.", target=f"{kind}_id")
    return value


def check_session_id(session_id: str) -> str:
    return check_id(session_id, "session")


def body_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequest("The request body is not valid JSON.") from exc
    except RecursionError as exc:  # e.g. "[[[[...": json.loads recurses once per level
        raise BadRequest("The request body nests too deeply.") from exc
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


def _int_field(body: dict[str, Any], name: str) -> int:
    if name not in body or body[name] is None:
        raise BadRequest(f"The {name} field is required.", target=name)
    value = body[name]
    if type(value) is not int:  # bool is an int subclass, and true is no lease
        raise BadRequest(f"The {name} field must be an integer.", target=name)
    return value


def parse_create(raw: bytes) -> tuple[ServerSize, int, int | None]:
    """The create body: size (case-insensitive), a lease of 0 to 1440 minutes, and RenderHub's own optional
    idleTimeoutMinutes in seconds (None: absent, the account's default; 0: no idle stop); extra fields ignored."""
    body = body_object(raw)
    lease = _int_field(body, LEASE)
    leases.check_new_lease(lease)
    idle = _idle_timeout(body)
    size = body.get("size")
    if size is None:
        raise BadRequest("The size field is required.", target="size")
    if not isinstance(size, str):
        raise BadRequest("The size field must be a string.", target="size")
    try:
        return ServerSize.parse(size), lease, idle
    except ValueError:
        raise BadRequest(f"Unknown size '{size[:64]}'; use Standard or Premium.", target="size") from None


def _idle_timeout(body: dict[str, Any]) -> int | None:
    """idleTimeoutMinutes as seconds: a number of minutes from 0 (no idle stop) to 1440, fractions allowed."""
    minutes = body.get(IDLE_TIMEOUT)
    if minutes is None:
        return None
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not 0 <= minutes <= MAX_LEASE_MINUTES:
        raise BadRequest(
            f"The {IDLE_TIMEOUT} value must be a number of minutes from 0 (no idle stop) to {MAX_LEASE_MINUTES}.",
            target=IDLE_TIMEOUT,
        )
    return round(minutes * 60)


def parse_update(raw: bytes) -> int:
    lease = _int_field(body_object(raw), LEASE)
    leases.check_not_negative(lease)
    return lease


def _timestamp(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def session_json(session: Session, now: datetime) -> dict[str, Any]:
    """The ARR session object; fields a session does not have yet are omitted, never null."""
    body: dict[str, Any] = {
        "id": session.id,
        "creationTime": _timestamp(session.created_at),
        "elapsedTimeMinutes": leases.elapsed_minutes(session, now),
        "maxLeaseTimeMinutes": session.max_lease_minutes,
        "size": session.size.value,
        "status": session.status.value,
    }
    if session.ready_at is not None:
        body["hostname"] = session.hostname
        body["handshakePort"] = session.handshake_port
        body["arrInspectorPort"] = session.inspector_port
    if session.teraflops is not None and session.status is not SessionStatus.STARTING:
        body["teraflops"] = session.teraflops
    if session.error is not None:
        body["error"] = {"code": session.error.code, "message": session.error.message}
    if session.idle_timeout_seconds is not None:
        seconds = session.idle_timeout_seconds  # RenderHub's own, like queuePosition; whole minutes as integers
        body[IDLE_TIMEOUT] = seconds // 60 if seconds % 60 == 0 else round(seconds / 60, 4)
    if session.status is SessionStatus.STARTING and session.queue_position is not None:
        # RenderHub's own: where it waits for a free render server (ARR's SDK ignores fields it does not know).
        body["queuePosition"] = session.queue_position
    return body


def error_json(error: RenderHubError) -> dict[str, Any]:
    inner: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.target:
        inner["target"] = error.target
    return {"error": inner}


def check_skip_token(skip: str) -> int:
    """The list cursor of a @nextLink; anything else is a 400 (never a 500)."""
    # isascii: str.isdigit() also accepts digits such as "²" that int() refuses (that was a 500).
    if not (skip.isascii() and skip.isdigit()) or len(skip) > 18:
        raise BadRequest("The skipToken is not valid.", target="skipToken")
    return int(skip)

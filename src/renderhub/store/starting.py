"""The start path's statements on a Starting session, each built and compiled once (the repository's and the
warm pool's claim)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from renderhub.models import Session, SessionStatus
from renderhub.store.tables import sessions


def key(session: Session) -> dict[str, str]:
    """The parameters naming a session in these statements."""
    return {"key_account": session.account_id, "key_region": session.region, "key_id": session.id}


def while_starting(*columns: str) -> sa.Update:
    """UPDATE a Starting session (parameters key_account, key_region, key_id) setting `columns` (parameters
    new_COLUMN): the start path's statements, each built and compiled once."""
    return (
        sessions.update()
        .where(
            sessions.c.account_id == sa.bindparam("key_account"),
            sessions.c.region == sa.bindparam("key_region"),
            sessions.c.id == sa.bindparam("key_id"),
            sessions.c.status == SessionStatus.STARTING.value,
        )
        .values({name: sa.bindparam(f"new_{name}", type_=sessions.c[name].type) for name in columns})
    )


SET_BACKEND_STATE = while_starting("backend_state", "hostname", "handshake_port", "inspector_port", "queue_position")
SET_QUEUE_POSITION = while_starting("queue_position")
MARK_READY = while_starting("status", "ready_at", "teraflops")


def backend_state_params(session: Session, state: dict[str, Any], hostname: str) -> dict[str, Any]:
    """SET_BACKEND_STATE's parameters: where the session's server runs (its host and the ports it bound, in
    `state`); no longer waiting in a queue."""
    return {
        **key(session),
        "new_backend_state": state,
        "new_hostname": hostname,
        "new_handshake_port": state["handshake_port"],
        "new_inspector_port": state["inspector_port"],
        "new_queue_position": None,
    }

"""A pooled render server's assignment: the ARR session it serves, told through a file and SIGUSR1."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from renderhub.datadir import write_secret

# The signal a backend sends once it has written the assignment file; the server then reads the file.
ASSIGNED = signal.SIGUSR1


@dataclass(frozen=True)
class Assignment:
    """The ARR session a render server serves: the account whose tokens it accepts, and the session's ids."""

    account_id: str
    session_id: str
    session_seq: int


def write_assignment(path: Path, assignment: Assignment) -> None:
    """Written whole (owner-only: it names an account), then renamed into place: a reader never sees half."""
    partial = path.with_name(path.name + ".partial")
    payload = {
        "accountId": assignment.account_id,
        "sessionId": assignment.session_id,
        "sessionSeq": assignment.session_seq,
    }
    write_secret(partial, json.dumps(payload))
    os.replace(partial, path)


def read_assignment(path: Path) -> Assignment | None:
    """The assignment written for a server, or None while it has none."""
    try:
        found = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return Assignment(str(found["accountId"]), str(found["sessionId"]), int(found["sessionSeq"]))

"""A departed client's scene: its render worker (the model loaded in it) and camera, kept for the next client."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the worker module starts processes; its import waits for a client
    from renderhub.render.camera import Pose
    from renderhub.render.worker import RenderWorker

DEFAULT_GRACE_SECONDS = 60.0  # how long a scene waits for a client to come back; 0: reset at once, as ARR did
# A connected client that sent nothing on its data channel for this long has lapsed: a new offer replaces it.
# The viewer pings every 2 s, renderhub connect every second; poses count too.
LAPSE_SECONDS = 3.0
CLIENT_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass
class KeptScene:
    """What the next client takes over: the worker as the last client left it."""

    worker: RenderWorker
    model: dict[str, Any] | None  # as modelLoaded reported it; None for the empty scene
    pose: Pose | None  # the last camera
    since: float = 0.0  # time.monotonic() when its client left

    def __post_init__(self) -> None:
        self.since = self.since or time.monotonic()


def client_instance_id(body: dict[str, Any]) -> str | None:
    """The offer's optional `clientInstanceId` (a tab's id: a reload keeps it); ValueError when malformed."""
    value = body.get("clientInstanceId")
    if value is None:
        return None
    if not isinstance(value, str) or not CLIENT_INSTANCE_ID.fullmatch(value):
        raise ValueError("clientInstanceId must be 1 to 64 letters, digits, '.', '_' or '-'.")
    return value

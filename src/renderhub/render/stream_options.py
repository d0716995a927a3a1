"""How a render server runs each client's stream: one StreamOptions, built once from its configuration."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from renderhub.render import protocol
from renderhub.render.config import RenderConfig
from renderhub.render.protocol import LoadModelMessage

if TYPE_CHECKING:  # rtc imports aiortc, which a server loads only once a client comes
    from renderhub.render.kept_scene import KeptScene
    from renderhub.render.rtc import IceServer

DEFAULT_MAX_BYTES = 2 << 30
CONNECT_TIMEOUT = 30.0
DEFAULT_LOAD_TIMEOUT = 60.0  # seconds; a server takes its config's model_load_timeout_seconds
X264 = "libx264"  # encoder.X264, which imports PyAV

Progress = Callable[[str, float], None]
# (request, progress) -> a local model file, or ModelError; progress(stage, fraction) reaches the client.
ModelResolver = Callable[[LoadModelMessage, Progress], "Awaitable[Path] | Path"]
InputHandler = Callable[[protocol.ClientMessage], None]
ClosedHandler = Callable[[], "Awaitable[None] | None"]
SceneKeeper = Callable[["KeptScene"], None]


@dataclass(frozen=True)
class StreamOptions:
    """Everything about a client's stream but its size and frame rate, which each client asks for."""

    session_id: str = ""  # the ARR session this server serves, told to the client in its hello
    ice_servers: Sequence[IceServer] = ()
    model_resolver: ModelResolver | None = None  # None: this server loads no models
    max_primitives: int | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    load_timeout: float | None = DEFAULT_LOAD_TIMEOUT
    on_closed: ClosedHandler | None = None  # called once the stream closed itself (its client left)
    keep_scene: SceneKeeper | None = None  # given the scene when the client leaves; None: the worker just ends
    on_input: InputHandler | None = None  # pointer and key messages
    device_index: int | None = None  # the GPU the render worker uses
    # Offer loopback ICE candidates, and so accept a client's: for a server bound to loopback only (its clients are
    # on this machine); a server on a network address offers that one, and loopback stays out of a client's reach.
    loopback: bool = True
    connect_timeout: float = CONNECT_TIMEOUT  # the stream closes when ICE has not connected by then
    h264_encoder: str = X264

    @classmethod
    def from_config(
        cls,
        config: RenderConfig,
        session_id: str,
        *,
        h264_encoder: str,
        model_resolver: ModelResolver | None,
        on_closed: ClosedHandler | None,
        keep_scene: SceneKeeper | None = None,
        loopback: bool = True,
    ) -> StreamOptions:
        return cls(
            session_id=session_id,
            ice_servers=tuple(config.ice_servers),
            model_resolver=model_resolver,
            max_primitives=config.max_primitives,
            max_bytes=config.max_model_bytes,
            load_timeout=config.model_load_timeout_seconds,
            on_closed=on_closed,
            keep_scene=keep_scene,
            device_index=config.device_index,
            h264_encoder=h264_encoder,
            loopback=loopback,
        )

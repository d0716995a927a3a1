"""What the server and its render worker process say to each other over their pipe, one class per message."""

from __future__ import annotations

from dataclasses import dataclass, field

from renderhub.render.camera import Hit, Pose

READY_ID = 0  # the start of the process is the request that Ready answers; requests number from 1
# SetPose, Frame and Release cross the pipe for every frame: their __reduce__ pickles them as (class, fields),
# about half the cost of the default for slotted dataclasses (a state list set back field by field).


@dataclass(frozen=True)
class FrameMeta:
    pose_id: int
    frame_number: int
    render_ms: float
    width: int
    height: int
    ready_at: float  # time.monotonic() when the frame was complete; CLOCK_MONOTONIC is shared by processes
    level: int = 0  # the level of detail drawn: 0 is full detail, each one above about a quarter of the triangles
    still: bool = False  # drawn once the camera stopped (full detail); nothing follows until the next pose


@dataclass(frozen=True)
class ModelInfo:
    triangles: int
    draw_calls: int
    load_ms: float
    bounds: tuple[list[float], list[float]] | None
    points: int = 0  # a point cloud's points, which count against the primitive limit beside triangles
    levels: list[int] = field(default_factory=list)  # primitives per level of detail, full detail first


# ----------------------------------------------------- server -> worker, per frame: no id, never answered


@dataclass(frozen=True, slots=True)
class SetPose:
    """Render this pose next; a pose the worker has not started on yet is replaced, never queued."""

    pose_id: int
    pose: Pose

    def __reduce__(self) -> tuple[type[SetPose], tuple[int, Pose]]:
        return SetPose, (self.pose_id, self.pose)


@dataclass(frozen=True, slots=True)
class Release:
    """The server is done with a frame's slot (of this generation of shared memory): the worker may reuse it."""

    generation: int
    slot: int

    def __reduce__(self) -> tuple[type[Release], tuple[int, int]]:
        return Release, (self.generation, self.slot)


# -------------------------------------------------- server -> worker, requests: each reply carries the id back


@dataclass(frozen=True, slots=True)
class Load:
    id: int
    path: str
    max_primitives: int | None
    max_bytes: int


@dataclass(frozen=True, slots=True)
class Pick:
    id: int
    x: float  # fractions of the frame from its top-left
    y: float


@dataclass(frozen=True, slots=True)
class Clear:
    id: int


@dataclass(frozen=True, slots=True)
class Resize:
    id: int
    width: int
    height: int
    shm_name: str  # the new shared-memory block, made by the server
    generation: int
    fps: float | None = None  # a new frame-rate cap, or the same
    # Draw the latest pose again at the new size; False for a new client taking over: the last pose, in the ids of
    # the client before, is forgotten, and nothing is drawn until the new client sends one.
    redraw: bool = True


@dataclass(frozen=True, slots=True)
class Stop:
    id: int


Request = Load | Pick | Clear | Resize | Stop
ToWorker = SetPose | Release | Request


# ------------------------------------------------------------------------- worker -> server, replies


@dataclass(frozen=True, slots=True)
class Ready:
    renderer: str  # the GL renderer's name
    id: int = READY_ID


@dataclass(frozen=True, slots=True)
class Loaded:
    id: int
    refused: tuple[str, str] | None  # (code, message) of the ModelError, or None when `info` is set
    info: ModelInfo | None


@dataclass(frozen=True, slots=True)
class Picked:
    id: int
    pose_id: int | None  # the pose of the frame in the framebuffer; None before the first one
    hit: Hit | None
    failure: str | None  # the exception's name when the depth read-back failed


@dataclass(frozen=True, slots=True)
class Cleared:
    id: int


@dataclass(frozen=True, slots=True)
class Resized:
    id: int


@dataclass(frozen=True, slots=True)
class Stopped:
    id: int


Reply = Ready | Loaded | Picked | Cleared | Resized | Stopped


# ------------------------------------------------------------------------- worker -> server, events


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame is ready in `slot` of this generation's shared memory (its header holds its FrameMeta)."""

    generation: int
    slot: int

    def __reduce__(self) -> tuple[type[Frame], tuple[int, int]]:
        return Frame, (self.generation, self.slot)


@dataclass(frozen=True, slots=True)
class Progress:
    id: int  # the Load this is the progress of
    stage: str
    fraction: float


@dataclass(frozen=True, slots=True)
class Fatal:
    """The worker cannot go on and exits."""

    reason: str


FromWorker = Frame | Progress | Fatal | Reply

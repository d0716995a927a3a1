"""Camera poses in glTF's frame (right-handed, +Y up, metres, looking along local -Z) and their matrices."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

DEFAULT_FOV = 60.0
# Coordinates beyond this overflow float32 on the GPU long before they mean anything.
MAX_COORDINATE = 1e9
# A client's float math drifts; anything further from unit length is a bug on its side, not rounding.
QUATERNION_TOLERANCE = 0.1

Matrix = NDArray[np.float64]


def _finite_numbers(value: object, count: int, name: str) -> tuple[float, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes) or len(value) != count:
        raise ValueError(f"{name} must be a list of {count} numbers")
    numbers = []
    for item in value:
        # bool is an int subclass; true/false in a pose is a client bug, not a coordinate.
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise ValueError(f"{name} must be a list of {count} numbers")
        number = float(item)
        if not math.isfinite(number):
            raise ValueError(f"{name} must hold finite numbers, not {item!r}")
        numbers.append(number)
    return tuple(numbers)


@dataclass(frozen=True)
class Pose:
    """Where the camera is and where it looks; validated on construction, so every Pose is renderable."""

    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]  # unit quaternion x, y, z, w (glTF's order)
    fov: float = DEFAULT_FOV  # vertical field of view, degrees

    def __post_init__(self) -> None:
        position = _finite_numbers(self.position, 3, "position")
        if any(abs(c) > MAX_COORDINATE for c in position):
            raise ValueError(f"position must stay within +-{MAX_COORDINATE:g} metres")
        quaternion = _finite_numbers(self.orientation, 4, "orientation")
        norm = math.sqrt(sum(c * c for c in quaternion))
        if abs(norm - 1.0) > QUATERNION_TOLERANCE:
            raise ValueError(f"orientation must be a unit quaternion [x, y, z, w]; its length is {norm:.3g}")
        fov = _finite_numbers([self.fov], 1, "fov")[0]
        if not 1.0 < fov < 170.0:
            raise ValueError(f"fov must be between 1 and 170 degrees, not {fov:g}")
        object.__setattr__(self, "position", position)
        object.__setattr__(self, "orientation", tuple(c / norm for c in quaternion))
        object.__setattr__(self, "fov", fov)

    @classmethod
    def from_json(cls, obj: object) -> Pose:
        """A pose from a client message: {"position": [x,y,z], "orientation": [x,y,z,w], "fov": degrees}."""
        if not isinstance(obj, dict):
            raise ValueError("a pose must be a JSON object with position and orientation")
        for key in ("position", "orientation"):
            if key not in obj:
                raise ValueError(f"a pose needs {key!r}")
        return cls(obj["position"], obj["orientation"], obj.get("fov", DEFAULT_FOV))

    def to_json(self) -> dict[str, Any]:
        return {"position": list(self.position), "orientation": list(self.orientation), "fov": self.fov}

    def rotation(self) -> Matrix:
        """The 3x3 camera-to-world rotation; its columns are the camera's right, up and backward axes."""
        return quaternion_matrix(self.orientation)

    @property
    def forward(self) -> Matrix:
        return -self.rotation()[:, 2]

    def view_matrix(self) -> Matrix:
        return view_matrix(self)


@dataclass(frozen=True)
class Hit:
    """Where a pick met the model: a world point (metres) and its distance from the camera's eye."""

    position: tuple[float, float, float]
    distance: float


def quaternion_matrix(q: Sequence[float]) -> Matrix:
    """Rotation matrix of a unit quaternion [x, y, z, w]."""
    x, y, z, w = (float(c) for c in q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _quaternion_multiply(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float, float]:
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    )


def _axis_angle(axis: Sequence[float], degrees: float) -> tuple[float, float, float, float]:
    half = math.radians(degrees) / 2
    s = math.sin(half)
    return (axis[0] * s, axis[1] * s, axis[2] * s, math.cos(half))


def view_matrix(pose: Pose) -> Matrix:
    """World-to-camera 4x4 matrix (the inverse of the camera's placement)."""
    rotation = pose.rotation()
    view = np.eye(4)
    view[:3, :3] = rotation.T
    view[:3, 3] = -rotation.T @ np.asarray(pose.position)
    return view


def perspective(fov: float, aspect: float, near: float, far: float) -> Matrix:
    """OpenGL projection: camera space to clip space, depth -1 at near and +1 at far."""
    if not (0 < near < far and aspect > 0):
        raise ValueError(f"bad projection: near={near}, far={far}, aspect={aspect}")
    f = 1.0 / math.tan(math.radians(fov) / 2)
    return np.array(
        [
            [f / aspect, 0, 0, 0],
            [0, f, 0, 0],
            [0, 0, (far + near) / (near - far), 2 * far * near / (near - far)],
            [0, 0, -1, 0],
        ]
    )


def bounding_sphere(bounds: NDArray[np.floating[Any]]) -> tuple[Matrix, float]:
    """Centre and radius of the sphere around axis-aligned bounds [[min xyz], [max xyz]]."""
    lo, hi = np.asarray(bounds, dtype=np.float64)
    return (lo + hi) / 2, float(np.linalg.norm(hi - lo) / 2)


def clip_planes(pose: Pose, bounds: NDArray[np.floating[Any]] | None) -> tuple[float, float]:
    """Near and far planes that keep the whole model between them, as tight as possible for depth precision."""
    if bounds is None:
        return 0.1, 100.0
    centre, radius = bounding_sphere(bounds)
    radius = max(radius, 1e-6)
    distance = float(np.linalg.norm(centre - np.asarray(pose.position)))
    far = distance + radius * 1.01
    # A 24-bit depth buffer keeps about 1e4 of near/far ratio usable; inside the model, clip what is very close.
    near = max(distance - radius * 1.01, far * 1e-4)
    return near, far


def projection_matrix(pose: Pose, aspect: float, bounds: NDArray[np.floating[Any]] | None) -> Matrix:
    near, far = clip_planes(pose, bounds)
    return perspective(pose.fov, aspect, near, far)


def unproject(clip_from_world: Matrix, ndc: Sequence[float]) -> Matrix:
    """The world point at normalised device coordinates (x, y, depth; each -1..1) under a world-to-clip matrix."""
    point = np.linalg.solve(np.asarray(clip_from_world, dtype=np.float64), np.array([*ndc, 1.0]))
    return np.asarray(point[:3] / point[3], dtype=np.float64)


def orbit_pose(target: Sequence[float], distance: float, yaw: float, pitch: float, *, fov: float = DEFAULT_FOV) -> Pose:
    """A camera `distance` from `target` looking at it; yaw (degrees) turns about +Y from +Z, pitch raises it."""
    q = _quaternion_multiply(_axis_angle((0, 1, 0), yaw), _axis_angle((1, 0, 0), -pitch))
    backward = quaternion_matrix(q)[:, 2]
    x, y, z = (float(c) for c in np.asarray(target, dtype=np.float64) + distance * backward)
    return Pose((x, y, z), q, fov)


def frame_bounds(
    bounds: NDArray[np.floating[Any]], *, yaw: float = 30.0, pitch: float = 20.0, fov: float = DEFAULT_FOV
) -> Pose:
    """An orbit pose whose view (at any aspect of at least 1) holds the whole bounding sphere."""
    centre, radius = bounding_sphere(bounds)
    distance = max(radius, 1e-3) / math.sin(math.radians(fov) / 2) * 1.05
    return orbit_pose(centre.tolist(), distance, yaw, pitch, fov=fov)

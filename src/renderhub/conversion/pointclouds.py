"""Point clouds (XYZ, PLY, E57, LAS, LAZ) read into one POINTS primitive, counts checked against file sizes first."""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from renderhub.conversion.errors import bad_input
from renderhub.conversion.model import POINTS, Mesh, Model, Node, Primitive

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2", "ushort": "u2",
    "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4", "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}  # fmt: skip
_PLY_ORDER = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": "="}
_COLOR_NAMES = (("red", "green", "blue"), ("diffuse_red", "diffuse_green", "diffuse_blue"),
                ("ambient_red", "ambient_green", "ambient_blue"))  # fmt: skip
MAX_HEADER_BYTES = 1 << 16
# A compressed point (LAZ, E57's bit packing) takes at least a bit: a header promising more points than that is
# lying, and is refused before anything is allocated for them.
MIN_BITS_PER_POINT = 1


@dataclass
class Cloud:
    positions: NDArray[np.float64]  # (n, 3)
    colors: NDArray[np.uint8] | None  # (n, 3) sRGB, as stored
    version: str = ""
    generator: str = ""


def to_model(cloud: Cloud, name: str) -> Model:
    """One node holding one POINTS primitive; positions relative to the cloud's centre, which the node carries.

    Survey coordinates (UTM: millions of metres) would lose decimetres in float32; relative to the centre they
    keep millimetres, and the node's float64 translation puts them back in place.
    """
    positions = cloud.positions
    if not len(positions):
        raise bad_input(f"{name} holds no points")
    if not np.isfinite(positions).all():
        raise bad_input(f"{name} has non-finite (NaN or infinite) coordinates")
    centre = (positions.min(0) + positions.max(0)) / 2
    attributes: dict[str, np.ndarray] = {"POSITION": (positions - centre).astype(np.float32)}
    if cloud.colors is not None:  # RGBA: a vertex attribute's elements must be 4-byte aligned
        attributes["COLOR_0"] = np.column_stack([cloud.colors, np.full(len(positions), 255, np.uint8)])
    node = Node(name=name, mesh=0)
    node.matrix[:3, 3] = centre
    return Model(nodes=[node], roots=[0], meshes=[Mesh(name, [Primitive(POINTS, attributes)])])


def _as_bytes(channels: NDArray[np.generic], top: float | None = None) -> NDArray[np.uint8]:
    """Colour channels as 0-255: bytes as they are, 16-bit values scaled down (unless all fit in a byte, as many
    LAS writers store them), floats taken as 0-1."""
    if channels.dtype == np.uint8:
        return np.asarray(channels, np.uint8)
    values = channels.astype(np.float64)
    if top is None:
        largest = float(values.max(initial=0))
        if channels.dtype.kind == "f" and largest <= 1.0:
            top = 1.0
        else:
            top = 255.0 if largest <= 255 else 65535.0
    return np.clip(np.round(values / top * 255), 0, 255).astype(np.uint8)


def _grey(intensity: NDArray[np.generic]) -> NDArray[np.uint8]:
    """Intensity as a grey colour, 0 black and the largest white (ARR: LAS/LAZ intensity is the colour when there
    is none); the scale of intensities differs from scanner to scanner, hence the file's own largest."""
    values = np.clip(intensity.astype(np.float64), 0, None)
    high = float(values.max(initial=0))
    grey = np.round(values / high * 255 if high > 0 else values * 0).astype(np.uint8)
    return np.column_stack([grey, grey, grey])


# PLY


@dataclass
class _Element:
    name: str
    count: int
    properties: list[tuple[str, str]]  # (name, numpy type); a list property has type "list"


def _ply_header(path: Path) -> tuple[str, list[_Element], int, str, str]:
    """Format, elements, the data's offset, format version and any 'comment' naming a generator."""
    with path.open("rb") as f:
        head = f.read(MAX_HEADER_BYTES)
    end = re.search(rb"end_header\r?\n", head)
    if not head.startswith(b"ply") or end is None:
        raise bad_input(f"{path.name}: not a PLY file, or its header is longer than {MAX_HEADER_BYTES:,} bytes")
    elements: list[_Element] = []
    kind, version, generator = "", "", ""
    for line in head[: end.start()].decode("ascii", "replace").splitlines()[1:]:
        words = line.split()
        if not words:
            continue
        if words[0] == "format" and len(words) >= 3:
            kind, version = words[1], words[2]
        elif words[0] == "comment" and not generator:
            generator = " ".join(words[1:])[:200]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append(_Element(words[1], int(words[2]), []))
        elif words[0] == "property" and elements and len(words) >= 3:
            if words[1] == "list":
                elements[-1].properties.append((words[-1], "list"))
            elif words[1] in _PLY_TYPES:
                elements[-1].properties.append((words[2], _PLY_TYPES[words[1]]))
            else:
                raise bad_input(f"{path.name}: unknown PLY property type {words[1]!r}")
    if kind not in _PLY_ORDER:
        raise bad_input(f"{path.name}: unknown PLY format {kind!r}")
    return kind, elements, end.end(), version, generator


def ply_is_point_cloud(path: Path) -> bool:
    """A PLY with vertices and no faces (ARR's point-cloud PLY); mesh PLYs go to assimp."""
    _, elements, _, _, _ = _ply_header(path)
    counts = {e.name: e.count for e in elements}
    return counts.get("vertex", 0) > 0 and counts.get("face", 0) == 0 and counts.get("tristrips", 0) == 0


def read_ply(path: Path) -> Cloud:
    kind, elements, offset, version, generator = _ply_header(path)
    order = _PLY_ORDER[kind]
    size = path.stat().st_size
    skipped = 0  # elements before the vertices, skipped over
    for element in elements:
        if element.name == "vertex":
            break
        if any(t == "list" for _, t in element.properties):
            raise bad_input(f"{path.name}: a list property before the vertices is not supported in a point cloud")
        skipped += element.count * (1 if kind == "ascii" else sum(np.dtype(t).itemsize for _, t in element.properties))
    vertex = next(e for e in elements if e.name == "vertex")
    names = [n for n, _ in vertex.properties]
    if any(t == "list" for _, t in vertex.properties):
        raise bad_input(f"{path.name}: its vertices have a list property, which a point cloud cannot have")
    for axis in "xyz":
        if axis not in names:
            raise bad_input(f"{path.name}: its vertices have no '{axis}' property")
    dtype = np.dtype([(n, order + t) for n, t in vertex.properties])
    with path.open("rb") as f:
        if kind == "ascii":
            if vertex.count > (size - offset) // (2 * len(names)):  # a digit and a separator per value at least
                raise bad_input(f"{path.name}: the header promises {vertex.count:,} vertices; the file is too short")
            f.seek(offset)
            text = io.TextIOWrapper(f, encoding="ascii", errors="replace")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # numpy's note that blank lines do not count as rows
                    table = np.loadtxt(text, dtype=np.float64, skiprows=skipped, max_rows=vertex.count, ndmin=2)
            except ValueError as e:
                raise bad_input(f"{path.name}: unreadable vertex data ({str(e)[:200]})") from None
            if table.shape != (vertex.count, len(names)):
                raise bad_input(f"{path.name}: expected {vertex.count:,} vertices of {len(names)} values each, "
                                f"found {table.shape[0]:,} of {table.shape[1]}")  # fmt: skip
            records = np.empty(vertex.count, dtype)
            for i, name in enumerate(names):
                records[name] = table[:, i]
        else:
            start, needed = offset + skipped, vertex.count * dtype.itemsize
            if start + needed > size:
                # Checked before anything is allocated. Debian's pond.0.ply lost 69 bytes to a CR LF -> LF
                # conversion: every point after the first loss reads as garbage, so none is guessed at.
                raise bad_input(f"{path.name}: the header promises {vertex.count:,} vertices of {dtype.itemsize} "
                                f"bytes ({needed:,} bytes); the file holds {max(size - start, 0):,} after its "
                                "header: it is truncated or damaged")  # fmt: skip
            f.seek(start)
            records = np.fromfile(f, dtype, vertex.count)
    positions = np.column_stack([records[a].astype(np.float64) for a in "xyz"])
    colors = None
    for channels in _COLOR_NAMES:
        if all(c in names for c in channels):
            colors = np.column_stack([_as_bytes(records[c]) for c in channels])
            break
    return Cloud(positions, colors, version, generator)


# XYZ


def read_xyz(path: Path) -> Cloud:
    """ARR's XYZ: one point a line, `x y z r g b` (colours 0-255); `x y z` and `x y z intensity` are read too."""
    with path.open("rb") as f:
        first = b""
        for line in f:
            if line.strip() and not line.lstrip().startswith((b"#", b"//")):
                first = line
                break
        if not first:
            raise bad_input(f"{path.name} holds no points")
        delimiter = "," if b"," in first else (";" if b";" in first else None)
        columns = len(re.split(rb"[,;\s]+", first.strip()))
        if columns not in (3, 4) and columns < 6:
            raise bad_input(f"{path.name}: lines have {columns} values; expected x y z r g b (or x y z)")
        used = 3 if columns == 3 else (4 if columns in (4, 5) else 6)
        f.seek(0)
        text = io.TextIOWrapper(f, encoding="ascii", errors="replace")
        try:
            table = np.loadtxt(text, dtype=np.float64, comments=("#", "//"), delimiter=delimiter,
                               usecols=range(used), ndmin=2)  # fmt: skip
        except ValueError as e:
            raise bad_input(f"{path.name}: unreadable point data ({str(e)[:200]})") from None
    positions = np.ascontiguousarray(table[:, :3])
    if used == 6:
        colors = _as_bytes(table[:, 3:6], top=1.0 if table[:, 3:6].max(initial=0) <= 1.0 else 255.0)
    elif used == 4:
        colors = _grey(table[:, 3])
    else:
        colors = None
    return Cloud(positions, colors)


# LAS and LAZ


def read_las(path: Path) -> Cloud:
    import laspy  # here: only point-cloud conversions need it

    size = path.stat().st_size
    try:
        with laspy.open(path) as reader:
            header = reader.header
            count = int(header.point_count)
            record = int(header.point_format.size)
            compressed = _las_compressed(path)
            room = size * 8 // MIN_BITS_PER_POINT if compressed else (size - int(header.offset_to_point_data)) // record
            if count > room:
                raise bad_input(f"{path.name}: the header promises {count:,} points; the file cannot hold that many")
            points = reader.read_points(count)
    except (laspy.LaspyException, ValueError, OSError, EOFError) as e:
        raise bad_input(f"{path.name}: not a readable LAS/LAZ file ({str(e)[:200]})") from None
    if len(points) != count:
        raise bad_input(f"{path.name}: the header promises {count:,} points; the file holds {len(points):,}")
    positions = np.column_stack([np.asarray(points.x), np.asarray(points.y), np.asarray(points.z)]).astype(np.float64)
    dimensions = set(points.point_format.dimension_names)
    if {"red", "green", "blue"} <= dimensions:
        colors = _as_bytes(np.column_stack([points.red, points.green, points.blue]))
    else:
        colors = _grey(np.asarray(points.intensity))
    version = f"{header.version.major}.{header.version.minor}"
    return Cloud(positions, colors, version, str(header.generating_software).strip("\0 "))


def _las_compressed(path: Path) -> bool:
    """LAZ sets the top bits of the header's point format byte (offset 104)."""
    with path.open("rb") as f:
        f.seek(104)
        byte = f.read(1)
    return bool(byte and byte[0] & 0xC0)


# E57


def read_e57(path: Path) -> Cloud:
    """Every scan's points (data3d; image2d is ignored, as ARR did) in the file's common coordinates."""
    import pye57  # here: only point-cloud conversions need it
    from pye57.libe57 import E57Exception

    size = path.stat().st_size
    positions, colors = [], []
    try:
        e57 = pye57.E57(str(path))
        try:
            counts = [int(e57.get_header(i).point_count) for i in range(e57.scan_count)]
            if sum(counts) > size * 8 // MIN_BITS_PER_POINT:
                raise bad_input(f"{path.name}: its headers promise {sum(counts):,} points; the file cannot hold them")
            for i in range(e57.scan_count):
                fields = set(e57.get_header(i).point_fields)
                has_color = {"colorRed", "colorGreen", "colorBlue"} <= fields
                scan = e57.read_scan(i, colors=has_color, intensity="intensity" in fields, ignore_missing_fields=True)
                xyz = np.column_stack([scan["cartesianX"], scan["cartesianY"], scan["cartesianZ"]])
                positions.append(xyz.astype(np.float64))
                if has_color:
                    colors.append(np.column_stack([scan["colorRed"], scan["colorGreen"], scan["colorBlue"]]))
                elif "intensity" in scan:
                    colors.append(_grey(scan["intensity"]))
                else:
                    colors.append(np.full((len(xyz), 3), 255, np.uint8))
        finally:
            e57.close()
    except (E57Exception, RuntimeError, ValueError, KeyError, OSError) as e:
        raise bad_input(f"{path.name}: not a readable E57 file ({str(e)[:200]})") from None
    if not positions:
        raise bad_input(f"{path.name} holds no scans")
    return Cloud(np.concatenate(positions), np.concatenate(colors).astype(np.uint8), "1.0", "")

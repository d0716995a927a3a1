"""The ConversionSettings file: found beside the model, checked against ARR's schema, defaults per input format."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from renderhub.conversion.errors import bad_input

SETTINGS_SUFFIX = ".ConversionSettings.json"
LEGACY_NAME = "conversionSettings.json"  # deprecated by ARR, still read when the model's own file is absent
MAX_SETTINGS_BYTES = 1 << 20
# ARR's note: "For FBX, E57, PLY, LAS, LAZ and XYZ files these settings are set to true by default."
GAMMA_BY_DEFAULT = frozenset({".fbx", ".e57", ".ply", ".las", ".laz", ".xyz"})

_POSITION = ("32_32_32_FLOAT", "16_16_16_16_FLOAT")
_COLOR = ("NONE", "8_8_8_8_UNSIGNED_NORMALIZED")
_VECTOR = ("AUTO", "NONE", "8_8_8_8_SIGNED_NORMALIZED", "16_16_16_16_FLOAT")  # AUTO: the PS schema's, not the docs'
_TEXCOORD = ("NONE", "32_32_FLOAT", "16_16_FLOAT")
VERTEX_FORMATS: Mapping[str, tuple[str, ...]] = {
    "position": _POSITION,
    "color0": _COLOR,
    "color1": _COLOR,
    "normal": _VECTOR,
    "tangent": _VECTOR,
    "binormal": _VECTOR,
    "texcoord0": _TEXCOORD,
    "texcoord1": _TEXCOORD,
}
VERTEX_DEFAULTS: Mapping[str, str] = {
    "position": "32_32_32_FLOAT",
    "color0": "8_8_8_8_UNSIGNED_NORMALIZED",
    "color1": "NONE",
    "normal": "8_8_8_8_SIGNED_NORMALIZED",
    "tangent": "8_8_8_8_SIGNED_NORMALIZED",
    "binormal": "8_8_8_8_SIGNED_NORMALIZED",
    "texcoord0": "32_32_FLOAT",
    "texcoord1": "32_32_FLOAT",
}
AXES = ("default", "+x", "-x", "+y", "-y", "+z", "-z")
_ENUMS: Mapping[str, tuple[str, ...]] = {
    "opaqueMaterialDefaultSidedness": ("SingleSided", "DoubleSided"),
    "sceneGraphMode": ("none", "static", "dynamic"),
}
_BOOLEANS = (
    "recenterToOrigin",
    "gammaToLinearMaterial",
    "gammaToLinearVertex",
    "generateCollisionMesh",
    "unlitMaterials",
    "deduplicateMaterials",
    "fbxAssumeMetallic",
)
PROPERTIES = ("scaling", "material-override", "axis", "vertex", "metadataKeys", *_ENUMS, *_BOOLEANS)


@dataclass(frozen=True)
class Settings:
    """The settings a conversion runs with; `given` is the file's own content, copied into info.json."""

    gamma_to_linear_material: bool = False
    gamma_to_linear_vertex: bool = False
    scaling: float = 1.0
    recenter_to_origin: bool = False
    opaque_material_default_sidedness: str = "DoubleSided"
    material_override: str = ""
    scene_graph_mode: str = "dynamic"
    generate_collision_mesh: bool = True
    unlit_materials: bool = False
    deduplicate_materials: bool = True
    fbx_assume_metallic: bool = True
    axis: tuple[str, str, str] = ("+x", "+y", "+z")
    vertex: Mapping[str, str] = field(default_factory=lambda: dict(VERTEX_DEFAULTS))
    metadata_keys: tuple[str, ...] = ()
    given: Mapping[str, Any] = field(default_factory=dict)


def _fail(name: str, problem: str) -> Exception:
    return bad_input(f"conversion settings: '{name}' {problem}")


def _enum(value: object, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise _fail(name, f"must be one of {', '.join(allowed)}, not {json.dumps(value)[:80]}")
    return value


def validate(document: object, extension: str) -> Settings:
    """Settings from a parsed settings file, refusing what ARR's schema refuses (no additional properties)."""
    if not isinstance(document, dict):
        raise bad_input("conversion settings: the file must hold a JSON object")
    for name in document:
        if name not in PROPERTIES:
            raise _fail(name, f"is not a conversion setting (allowed: {', '.join(sorted(PROPERTIES))})")
    gamma = extension.lower() in GAMMA_BY_DEFAULT
    values: dict[str, Any] = {"gamma_to_linear_material": gamma, "gamma_to_linear_vertex": gamma}
    if "scaling" in document:
        scaling = document["scaling"]
        if isinstance(scaling, bool) or not isinstance(scaling, int | float) or not math.isfinite(scaling):
            raise _fail("scaling", f"must be a number, not {json.dumps(scaling)[:80]}")
        if scaling <= 0:
            raise _fail("scaling", f"must be greater than 0, not {scaling}")
        values["scaling"] = float(scaling)
    for name in _BOOLEANS:
        if name in document:
            if not isinstance(document[name], bool):
                raise _fail(name, f"must be true or false, not {json.dumps(document[name])[:80]}")
            values[_snake(name)] = document[name]
    for name, allowed in _ENUMS.items():
        if name in document:
            values[_snake(name)] = _enum(document[name], name, allowed)
    if "material-override" in document:
        if not isinstance(document["material-override"], str):
            raise _fail("material-override", "must be a string")
        values["material_override"] = document["material-override"]
    if "axis" in document:
        axis = document["axis"]
        if not isinstance(axis, list) or len(axis) != 3:
            raise _fail("axis", f"must be an array of 3 of {', '.join(AXES)}")
        checked = [_enum(a, f"axis[{i}]", AXES) for i, a in enumerate(axis)]
        # "default" keeps the file's own axis in that place; together they must name x, y and z once each.
        chosen = [a[1] if a != "default" else "xyz"[i] for i, a in enumerate(checked)]
        if sorted(chosen) != ["x", "y", "z"]:
            raise _fail("axis", f"must name each of x, y and z once, not {json.dumps(checked)}")
        values["axis"] = (checked[0], checked[1], checked[2])
    if "vertex" in document:
        values["vertex"] = _vertex(document["vertex"])
    if "metadataKeys" in document:
        keys = document["metadataKeys"]
        if not isinstance(keys, list):
            raise _fail("metadataKeys", "must be an array of strings")
        for i, key in enumerate(keys):
            if not isinstance(key, str):
                raise _fail(f"metadataKeys[{i}]", f"must be a string, not {json.dumps(key)[:80]}")
        values["metadata_keys"] = tuple(keys)
    return Settings(**values, given=document)


def _vertex(vertex: object) -> dict[str, str]:
    if not isinstance(vertex, dict):
        raise _fail("vertex", "must be an object")
    formats = dict(VERTEX_DEFAULTS)
    for stream, value in vertex.items():
        if stream not in VERTEX_FORMATS:
            raise _fail(f"vertex.{stream}", f"is not a vertex stream (allowed: {', '.join(VERTEX_FORMATS)})")
        formats[stream] = _enum(value, f"vertex.{stream}", VERTEX_FORMATS[stream])
    return formats


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def settings_file(model: Path) -> Path | None:
    """`<modelName>.ConversionSettings.json` beside the model, else the deprecated `conversionSettings.json`.

    Names are matched exactly first, then ignoring case: ARR ran on Windows, where `Box.conversionsettings.json`
    was found too.
    """
    folder = model.parent
    for name in (model.name.rsplit(".", 1)[0] + SETTINGS_SUFFIX, LEGACY_NAME):
        exact = folder / name
        if exact.is_file():
            return exact
        matches = [p for p in folder.iterdir() if p.name.lower() == name.lower() and p.is_file()]
        if len(matches) == 1:
            return matches[0]
    return None


def load(model: Path) -> Settings:
    """The settings for `model`: its settings file checked, or the defaults for its format."""
    path = settings_file(model)
    extension = model.suffix
    if path is None:
        return validate({}, extension)
    if path.stat().st_size > MAX_SETTINGS_BYTES:
        raise bad_input(f"{path.name} is larger than {MAX_SETTINGS_BYTES:,} bytes")
    try:
        document = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise bad_input(f"{path.name} is not valid JSON ({e})"[:400]) from None
    return validate(document, extension)

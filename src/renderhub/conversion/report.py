"""What a conversion writes beside the asset, as ARR wrote it: `<name>.info.json` and `<name>.result.json`."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from renderhub.conversion.model import Model

MISSING_TEXTURE = "4004"


def input_statistics(model: Model) -> dict[str, int]:
    """ARR's inputStatistics, as its assimp-based importer counted: parts (one material each), faces being
    triangles, lines or points, vertices per part (not per use)."""
    parts = [p for mesh in model.meshes for p in mesh.primitives]
    faces = [p.faces for p in parts]
    walked = list(model.walk())
    usages = sum(len(model.meshes[m].primitives) for i, _, _ in walked if (m := model.nodes[i].mesh) is not None)
    return {
        "numMeshes": len(parts),
        "numFaces": sum(faces),
        "numVertices": sum(p.vertices for p in parts),
        "numMaterial": len(model.materials),
        "numFacesSmallestMesh": min(faces, default=0),
        "numFacesBiggestMesh": max(faces, default=0),
        "numNodes": len(walked),
        "numMeshUsagesInScene": usages,
        "maxNodeDepth": max((depth for _, _, depth in walked), default=0),
    }


def output_statistics(model: Model, recentering: np.ndarray) -> dict[str, Any]:
    """Parts stored in the asset, those drawn more than once, the recentering offset and the bounds (metres)."""
    uses = Counter(model.nodes[i].mesh for i, _, _ in model.walk() if model.nodes[i].mesh is not None)
    bounds = model.bounds()
    low, high = (np.zeros(3), np.zeros(3)) if bounds is None else (bounds[0], bounds[1])
    return {
        "numMeshPartsCreated": sum(len(mesh.primitives) for mesh in model.meshes),
        "numMeshPartsInstanced": sum(
            len(model.meshes[m].primitives) for m, n in uses.items() if m is not None and n > 1
        ),
        "recenteringOffset": [float(v) for v in recentering],
        "boundingBox": {"min": [float(v) for v in low], "max": [float(v) for v in high]},
    }


def conversion_hash(header: dict[str, Any], binary: Iterable[bytes | memoryview]) -> str:
    """16 hex digits over what rendering uses: the glTF without its `asset` (tool versions) and the binary data."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in header.items() if k != "asset"}, sort_keys=True).encode())
    for part in binary:
        digest.update(part)
    return digest.hexdigest()[:16].upper()


def texture_warning(texture: str, material: str, reason: str) -> dict[str, Any]:
    details = {"texture": texture, "material": material}
    if reason != "missing":
        details["reason"] = reason  # found, but unusable: why
    return {"warning": MISSING_TEXTURE, "title": "Missing texture", "details": details}


def result_entries(
    conversion_id: str, warnings: list[dict[str, Any]], error: tuple[str, str] | None
) -> list[dict[str, Any]]:
    """result.json: the conversion's id, its warnings, at most one error, then exactly one result."""
    entries: list[dict[str, Any]] = [{"conversionId": conversion_id}, *warnings]
    if error is not None:
        code, message = error
        internal = code == "InternalServerError"
        entries.append({"internal error" if internal else "error": code, "title": message})
        entries.append({"result": "failed"})
    else:
        entries.append({"result": "succeeded with warnings" if warnings else "succeeded"})
    return entries


def write_json(path: Path, value: object) -> None:
    write_parts(path, [json.dumps(value, indent=2, ensure_ascii=False).encode() + b"\n"])


def write_parts(path: Path, parts: Iterable[bytes | memoryview]) -> None:
    """Written under a temporary name, then renamed: whoever uploads the folder never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as f:
        for part in parts:
            f.write(part)
        f.flush()
        os.fsync(f.fileno())
    partial.replace(path)

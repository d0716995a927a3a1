"""One conversion: read the input, apply its settings, write `<name>.arrAsset`, `.info.json` and `.result.json`.

Importing this module is cheap (numpy and the readers load inside `convert`), so the hub can use its types.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from renderhub.conversion.errors import INTERNAL, ConversionFailed, bad_input

if TYPE_CHECKING:
    from renderhub.conversion.model import Model
    from renderhub.conversion.settings import Settings

__all__ = ["ASSET_SUFFIX", "ConversionFailed", "Outcome", "convert"]

ASSET_SUFFIX = ".arrAsset"
GLTF = frozenset({".gltf", ".glb"})
ASSIMP = frozenset({".fbx", ".obj", ".dae", ".3ds", ".stl"})
POINT_CLOUDS = frozenset({".xyz", ".e57", ".las", ".laz"})
ACCEPTED = "FBX, glTF/GLB, XYZ, PLY, E57, LAS, LAZ, OBJ, DAE, 3DS and STL"
# Settings ARR applies to point clouds; it ignores the rest for them, and so do we.
POINT_CLOUD_SETTINGS = frozenset(
    {"scaling", "recenterToOrigin", "axis", "gammaToLinearVertex", "generateCollisionMesh"}
)


@dataclass(frozen=True)
class Outcome:
    result: str  # "succeeded" | "succeeded with warnings" | "failed"
    error: ConversionFailed | None
    warnings: list[dict[str, object]]  # the result.json warning entries


def convert(input_root: Path, input_path: str, output_dir: Path, output_filename: str, conversion_id: str) -> Outcome:
    """input_root: a local folder holding every downloaded blob under the input blobPrefix (already stripped of
    the prefix); input_path: relativeInputAssetPath inside it ('/'-separated). Writes into output_dir:
    output_filename (the .arrAsset), <stem>.result.json and <stem>.info.json where stem = output_filename without
    '.arrAsset'. result.json is written on failure too (with an 'error' entry and result 'failed'); never raises
    for bad input (returns Outcome with error), only for our own bugs."""
    from renderhub.conversion import report

    cut = output_filename.lower().endswith(ASSET_SUFFIX.lower())
    stem = output_filename[: -len(ASSET_SUFFIX)] if cut else output_filename
    plain = bool(stem) and not any(c in output_filename for c in "/\\\0") and stem not in (".", "..")
    if not plain:
        stem = "output"  # the reports still need a name that stays in output_dir
    warnings: list[dict[str, Any]] = []
    error: ConversionFailed | None = None
    try:
        if not plain:
            raise bad_input(f"the output file name {output_filename!r} is not a plain file name")
        _convert(input_root, input_path, output_dir, output_filename, stem, warnings)
    except ConversionFailed as e:
        error = e
    except MemoryError:
        error = bad_input(f"{input_path}: converting it needs more memory than a conversion may use")
    except BaseException as e:
        report.write_json(output_dir / f"{stem}.result.json", report.result_entries(
            conversion_id, warnings, (INTERNAL, f"unexpected internal error ({type(e).__name__})")))  # fmt: skip
        raise
    if error is not None and plain:
        for leftover in (output_filename, f"{stem}.info.json"):
            (output_dir / leftover).unlink(missing_ok=True)
    entries = report.result_entries(conversion_id, warnings, None if error is None else (error.code, error.message))
    report.write_json(output_dir / f"{stem}.result.json", entries)
    return Outcome(result=entries[-1]["result"], error=error, warnings=warnings)


def _source(input_root: Path, input_path: str) -> Path:
    """The input file, which must lie inside the input folder."""
    relative = PurePosixPath(input_path)
    if not input_path or relative.is_absolute() or ".." in relative.parts or "\\" in input_path or "\0" in input_path:
        raise bad_input(f"the input path {input_path!r} must be a relative path inside the input container")
    source = (input_root / relative).resolve()
    if not source.is_relative_to(input_root.resolve()) or not source.is_file():
        raise bad_input(f"Invalid input provided: {input_path!r} does not exist in the input container")
    if source.stat().st_size == 0:
        raise bad_input(f"{source.name} is empty")
    return source


def _convert(
    input_root: Path, input_path: str, output_dir: Path, output_filename: str, stem: str, warnings: list[dict[str, Any]]
) -> None:
    import numpy as np

    from renderhub.conversion import draw_levels, glb, report, settings, transforms

    source = _source(input_root, input_path)
    extension = source.suffix.lower()
    options = settings.load(source)
    seen: set[tuple[str, str, str]] = set()

    def warn(texture: str, material: str, reason: str) -> None:
        if (texture, material, reason) not in seen:
            seen.add((texture, material, reason))
            warnings.append(report.texture_warning(texture, material, reason))

    model, input_info, tool, points = _read(source, extension, input_root, warn, warnings)
    if points:
        without_effect = sorted(set(options.given) - POINT_CLOUD_SETTINGS)
    else:
        transforms.weld(model)
        without_effect = _without_effect(options, source)
    if not any(mesh.primitives for mesh in model.meshes) or model.bounds() is None:
        raise bad_input(f"{source.name}: its scene holds no geometry to convert")
    statistics = report.input_statistics(model)
    _apply(model, options, points, name=source.name.rsplit(".", 1)[0])
    recentering = transforms.recenter(model) if options.recenter_to_origin else None
    for mesh in model.meshes:
        for primitive in mesh.primitives:
            if not np.isfinite(primitive.attributes["POSITION"]).all():  # scaled or recentred past float32
                raise bad_input(f"{source.name}: its positions are too large for single precision")
    # Levels of detail for meshes (a point cloud, or a model with points, is drawn whole).
    batches = [] if points or _has_points(model) else draw_levels.merged(model)
    chain = draw_levels.levels(batches) if batches else None
    header, binary = glb.document(model, f"RenderHub conversion ({tool})", chain)
    asset = output_dir / output_filename
    report.write_parts(asset, glb.encode(header, binary))
    info = {
        "files": {"input": input_path, **({} if stem == source.stem else {"output": output_filename})},
        "conversionSettings": dict(options.given),
        "inputInfo": {"sourceAssetExtension": source.suffix, **input_info},
        "inputStatistics": statistics,
        "outputInfo": {"conversionToolVersion": tool, "conversionHash": report.conversion_hash(header, binary)},
        "outputStatistics": report.output_statistics(model, np.zeros(3) if recentering is None else recentering),
    }
    ours: dict[str, Any] = {}
    if chain:
        ours["levelsOfDetail"] = [sum(b.triangles for b in level) for level in chain]
    if without_effect:
        ours["settingsWithoutEffect"] = without_effect
    if ours:
        info["renderhub"] = ours
    report.write_json(output_dir / f"{stem}.info.json", info)


def _read(
    source: Path, extension: str, input_root: Path, warn: Any, warnings: list[dict[str, Any]]
) -> tuple[Model, dict[str, str], str, bool]:
    """The model, ARR's inputInfo fields, the tool version and whether it is a point cloud."""
    from renderhub import __version__
    from renderhub.conversion import gltf_import, meshes, pointclouds

    tool = f"renderhub {__version__}"
    if extension in GLTF:
        model, version, generator = gltf_import.read(
            source.read_bytes(), source.name, source.parent, texture_dir=source.parent, root=input_root, warn=warn
        )
        return model, _input_info("glTF2 Importer", version, generator), tool, False
    if extension in POINT_CLOUDS or (extension == ".ply" and pointclouds.ply_is_point_cloud(source)):
        reader = {
            ".xyz": pointclouds.read_xyz,
            ".ply": pointclouds.read_ply,
            ".e57": pointclouds.read_e57,
            ".las": pointclouds.read_las,
            ".laz": pointclouds.read_las,
        }[extension]
        cloud = reader(source)
        kind = f"{extension[1:].upper()} point cloud"
        return pointclouds.to_model(cloud, source.name), _input_info(kind, cloud.version, cloud.generator), tool, True
    if extension in ASSIMP or extension == ".ply":
        meshes.check_available()
        with tempfile.TemporaryDirectory(prefix="renderhub-assimp-") as scratch:
            data, flattened = meshes.export(source, Path(scratch))
            model, _, _ = gltf_import.read(
                meshes.utf8(data), source.name, Path(scratch), texture_dir=source.parent, root=input_root, warn=warn
            )
        if flattened:
            warnings.append(
                {
                    "internal warning": "SceneGraphCollapsed",
                    "title": "The scene graph was collapsed and animations dropped",
                    "details": {"reason": "assimp's glTF exporter failed on the scene as it was"},
                }
            )
        version, generator = meshes.source_info(source)
        tool += f"; assimp {meshes.assimp_version()}"
        return model, _input_info(meshes.FORMATS[extension], version, generator), tool, False
    raise bad_input(f"{source.name}: '{source.suffix}' files are not converted; accepted formats: {ACCEPTED}")


def _has_points(model: Model) -> bool:
    from renderhub.conversion.model import POINTS

    return any(p.mode == POINTS for mesh in model.meshes for p in mesh.primitives)


def _input_info(kind: str, version: str, generator: str) -> dict[str, str]:
    return {"sourceAssetFormat": kind, "sourceAssetFormatVersion": version, "sourceAssetGenerator": generator}


def _apply(model: Model, options: Settings, points: bool, name: str) -> None:
    from renderhub.conversion import transforms

    if options.gamma_to_linear_vertex:
        transforms.gamma_to_linear_vertex(model)
    transforms.reorient(model, options.axis, options.scaling)
    if points:
        return
    if options.gamma_to_linear_material:
        transforms.gamma_to_linear_material(model)
    if options.scene_graph_mode == "none":
        transforms.collapse(model, name)
    transforms.keep_metadata(model, options.metadata_keys)
    transforms.materials(model, options)
    transforms.vertex_streams(model, options.vertex)


def _without_effect(options: Settings, source: Path) -> list[str]:
    """Settings given that change nothing our renderer draws: accepted, and listed in info.json."""
    from renderhub.conversion import settings

    given = options.given
    found = [name for name in ("generateCollisionMesh", "fbxAssumeMetallic") if name in given]
    if options.material_override:
        found.append("material-override")  # material override files are not applied (yet)
    overrides = source.name.rsplit(".", 1)[0] + ".MaterialOverrides.json"
    if (source.parent / overrides).exists():
        found.append(overrides)
    vertex = given.get("vertex", {})
    for stream, value in vertex.items():
        if value not in ("NONE", settings.VERTEX_DEFAULTS[stream]):
            found.append(f"vertex.{stream}")  # our renderer's vertex layout is fixed: the format changes nothing
    return found

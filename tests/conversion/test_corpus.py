"""Every FBX, OBJ, PLY, STL, DAE and 3DS file of Debian's assimp-testmodels converts (or fails) as corpus.json says.

What a conversion reports is checked against readers that are not ours: face, vertex, part, node and material
counts against `assimp info` run with the post-processing the engine asks of assimp, bounds against the same
`assimp info` with every node transform baked in (-ptv), point clouds against trimesh's PLY reader. Each
converted asset must also load through the render server's loader.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from renderhub.conversion.meshes import FLAGS
from renderhub.render.gltf import ModelError
from renderhub.render.scene import load_scene

MANIFEST = json.loads((Path(__file__).parent / "corpus.json").read_text())
ROOT = Path(MANIFEST["root"])
KINDS = (".fbx", ".obj", ".ply", ".stl", ".dae", ".3ds")
TIMEOUT_S = 120
# Bounds: assimp works in float32 and prints 6 decimals; we read its float32 output and transform in float64.
# Relative to the model's largest coordinate (at least 1 m), 1e-5 covers float32's 6e-8 per operation over a
# deep node chain and the printing; the largest difference seen on this corpus was 3.4e-6.
BOUNDS_TOLERANCE = 1e-5
COUNTS = ("numMeshes", "numFaces", "numVertices", "numNodes", "numMaterial", "maxNodeDepth")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.xdist_group("conversion-corpus"),  # one worker converts the corpus once, three files at a time
    pytest.mark.skipif(not ROOT.is_dir(), reason=f"{ROOT} missing: install Debian's assimp-testmodels"),
]


def assimp_info(path: Path, *extra: str) -> tuple[dict[str, int], np.ndarray]:
    """Counts and bounds as `assimp info` prints them, with the engine's post-processing and joined vertices
    (-jiv: the engine joins identical vertices itself, after assimp's export)."""
    done = subprocess.run(
        ["assimp", "info", str(path), *FLAGS, "-jiv", *extra],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=TIMEOUT_S,
        check=True,
    )
    text = done.stdout

    def number(label: str) -> int:
        found = re.search(rf"^{label}:?\s+(\d+)", text, re.MULTILINE)
        assert found, f"no {label!r} in assimp info's output:\n{text[-2000:]}"
        return int(found.group(1))

    counts = {
        "numMeshes": number("Meshes"),
        "numFaces": number("Faces"),
        "numVertices": number("Vertices"),
        "numNodes": number("Nodes"),
        "numMaterial": number("Materials"),
        "maxNodeDepth": number("Maximum depth"),
    }
    corners = [re.search(rf"{k} point\s+\(([^)]*)\)", text) for k in ("Minimum", "Maximum")]
    assert all(corners), text[-2000:]
    return counts, np.array([[float(v) for v in c.group(1).split()] for c in corners if c])


def trimesh_points(path: Path) -> tuple[dict[str, int], np.ndarray]:
    import trimesh

    cloud = trimesh.load(path)
    vertices = np.asarray(cloud.vertices)
    return {"numFaces": len(vertices), "numVertices": len(vertices)}, np.array([vertices.min(0), vertices.max(0)])


def convert(entry: dict[str, Any], out: Path) -> dict[str, Any]:
    """Our converter's command line on one file, and the independent readers' figures for it."""
    folder = out / entry["path"].replace("/", "_")
    folder.mkdir()
    command = [sys.executable, "-m", "renderhub.conversion", "--input-root", str(ROOT), "--input", entry["path"]]
    command += ["--output-dir", str(folder), "--output-name", "model.arrAsset", "--conversion-id", "corpus"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"crashed": f"hung for more than {TIMEOUT_S} s"}
    if done.returncode != 0:
        return {"crashed": f"exit {done.returncode}: {done.stderr[-2000:]}"}
    result: dict[str, Any] = {"line": json.loads(done.stdout), "folder": folder}
    if entry["expect"] == "converts":
        source = ROOT / entry["path"]
        if entry.get("reference") == "trimesh":
            result["counts"], result["bounds"] = trimesh_points(source)
        else:
            result["counts"], _ = assimp_info(source, *(["-ptv"] if entry.get("collapsed") else []))
            _, result["bounds"] = assimp_info(source, "-ptv")
    return result


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """All files, a few at a time: about 40 s on two cores."""
    out = tmp_path_factory.mktemp("corpus")
    with ThreadPoolExecutor(max_workers=(os.cpu_count() or 2) + 1) as pool:
        results = pool.map(lambda entry: convert(entry, out), MANIFEST["models"])
        return {entry["path"]: result for entry, result in zip(MANIFEST["models"], results, strict=True)}


def test_manifest_lists_every_file_of_the_six_kinds() -> None:
    found = {str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and p.suffix.lower() in KINDS}
    listed = [entry["path"] for entry in MANIFEST["models"]]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert set(listed) == found
    assert all(entry["reason"] for entry in MANIFEST["models"])
    assert "PLY/pond.0.ply" in listed


@pytest.mark.parametrize("entry", MANIFEST["models"], ids=[entry["path"] for entry in MANIFEST["models"]])
def test_model(entry: dict[str, Any], outcomes: dict[str, dict[str, Any]]) -> None:
    outcome = outcomes[entry["path"]]
    assert "crashed" not in outcome, outcome
    folder: Path = outcome["folder"]
    entries = json.loads((folder / "model.result.json").read_text())
    assert entries[0] == {"conversionId": "corpus"}
    assert entries[-1]["result"] == outcome["line"]["result"]
    if entry["expect"] != "converts":
        assert outcome["line"]["error"]["code"] == entry["expect"]
        assert entry["message"] in outcome["line"]["error"]["message"]
        assert entries[-1] == {"result": "failed"} and entries[-2]["error"] == entry["expect"]
        assert not (folder / "model.arrAsset").exists() and not (folder / "model.info.json").exists()
        return
    missing = sorted({e["details"]["texture"] for e in entries if e.get("warning") == "4004"})
    assert missing == entry.get("missingTextures", [])
    collapsed = [e for e in entries if e.get("internal warning") == "SceneGraphCollapsed"]
    assert bool(collapsed) == entry.get("collapsed", False)
    assert outcome["line"]["result"] == ("succeeded with warnings" if missing or collapsed else "succeeded")
    info = json.loads((folder / "model.info.json").read_text())
    statistics = info["inputStatistics"]
    for key, expected in outcome["counts"].items():
        # Exact: the same importer and post-processing; our reading of its output must lose or invent nothing.
        assert statistics[key] == expected, (key, statistics, outcome["counts"])
    box = info["outputStatistics"]["boundingBox"]
    ours, theirs = np.array([box["min"], box["max"]]), outcome["bounds"]
    size = max(1.0, float(np.abs(theirs).max()))
    tolerance = entry.get("boundsTolerance", BOUNDS_TOLERANCE)
    assert np.abs(ours - theirs).max() <= tolerance * size, (ours, theirs)
    try:
        scene = load_scene(folder / "model.arrAsset", max_primitives=None, max_bytes=1 << 29)
    except ModelError as e:  # the renderer draws triangles and points: a model of lines alone is refused as such
        assert e.code == "UnsupportedPrimitive", e
        assert statistics["numFaces"] > 0
        return
    assert scene.triangles + scene.points > 0


@pytest.mark.parametrize("path", [e["path"] for e in MANIFEST["models"] if e["path"].startswith("FBX/cubes_")])
def test_fbx_unit_scale_is_applied_against_the_files_own_unit(path: str, tmp_path: Path) -> None:
    """ARR scales FBX to metres by the file's UnitScaleFactor (centimetres per unit): read here from the ASCII file
    itself and checked against assimp's bounds without its unit scaling."""
    from renderhub.conversion.engine import convert as convert_in_process

    text = (ROOT / path).read_text(errors="replace")
    unit = float(re.search(r'"UnitScaleFactor", "double", "Number", "",([0-9.eE+-]+)', text).group(1))  # type: ignore[union-attr]
    convert_in_process(ROOT, path, tmp_path, "model.arrAsset", "unit")
    box = json.loads((tmp_path / "model.info.json").read_text())["outputStatistics"]["boundingBox"]
    done = subprocess.run(["assimp", "info", str(ROOT / path), "-ptv"], capture_output=True, text=True, check=True)
    corners = [re.search(rf"{k} point\s+\(([^)]*)\)", done.stdout) for k in ("Minimum", "Maximum")]
    in_file_units = np.array([[float(v) for v in c.group(1).split()] for c in corners if c])
    np.testing.assert_allclose([box["min"], box["max"]], in_file_units * unit / 100, rtol=1e-5, atol=1e-6)


def test_pond_is_damaged_for_trimesh_too() -> None:
    """pond.0.ply fails on purpose: an independent reader finds it short as well."""
    import trimesh

    with pytest.raises(ValueError, match="unexpected length"):
        trimesh.load(ROOT / "PLY/pond.0.ply")

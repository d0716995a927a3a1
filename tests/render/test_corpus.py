"""Each glTF file of Debian's assimp-testmodels loads as corpus.json expects, in its own process with a timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

MANIFEST = json.loads((Path(__file__).parent / "corpus.json").read_text())
ROOT = Path(MANIFEST["root"])
TIMEOUT_S = 30  # a file that takes longer hangs as far as a client can tell
WIDTH, HEIGHT = 320, 240
MAX_BYTES = 512 * 1024 * 1024


def probe(path: Path) -> dict[str, Any]:
    """Load (and when it loads, render) one file; runs in the child process."""
    from renderhub.render.camera import frame_bounds, projection_matrix, view_matrix
    from renderhub.render.renderer import BACKGROUND_RGB, MAX_POINT_PIXELS, Renderer
    from renderhub.render.scene import STANDARD_MAX_PRIMITIVES, ModelError, load_scene

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            scene = load_scene(path, max_primitives=STANDARD_MAX_PRIMITIVES, max_bytes=MAX_BYTES)
        except ModelError as e:
            return {"outcome": e.code, "message": e.message, "warnings": [str(w.message) for w in caught]}
        with Renderer(WIDTH, HEIGHT) as renderer:
            renderer.upload(scene)
            pose = frame_bounds(scene.bounds)
            frame = renderer.render(pose)
    # Where the model's bounding box lands on screen (row 0 at the top, as the frame is).
    lo, hi = scene.bounds
    corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    clip = corners @ (projection_matrix(pose, WIDTH / HEIGHT, scene.bounds) @ view_matrix(pose)).T
    ndc = clip[:, :2] / clip[:, 3:]
    columns = np.clip(((ndc[:, 0] + 1) / 2 * WIDTH).round().astype(int), 0, WIDTH)
    rows = np.clip(((1 - ndc[:, 1]) / 2 * HEIGHT).round().astype(int), 0, HEIGHT)
    margin = 2 + (int(MAX_POINT_PIXELS) // 2 if scene.points else 0)  # a point's square reaches past its centre
    x0, x1, y0, y1 = columns.min() - margin, columns.max() + margin, rows.min() - margin, rows.max() + margin
    model = (frame != np.array(BACKGROUND_RGB, np.uint8)).any(axis=2)
    inside = int(model[max(y0, 0) : y1, max(x0, 0) : x1].sum())
    return {
        "outcome": "renders",
        "triangles": scene.triangles,
        "points": scene.points,
        "inside": inside,
        "area": int((x1 - x0) * (y1 - y0)),
        "outside": int(model.sum()) - inside,
        "warnings": [str(w.message) for w in caught],
    }


def run_child(entry: dict[str, str]) -> dict[str, Any]:
    command = [sys.executable, __file__, str(ROOT / entry["path"])]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"outcome": f"hung for more than {TIMEOUT_S} s"}
    if done.returncode != 0 or not done.stdout.strip():
        return {"outcome": f"crashed (exit {done.returncode})", "stderr": done.stderr[-2000:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["stderr"] = done.stderr[-2000:]
    return result


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not ROOT.is_dir(), reason=f"{ROOT} missing: install Debian's assimp-testmodels"),
]


@pytest.fixture(scope="module")
def outcomes() -> dict[str, dict[str, Any]]:
    """All files at once, a few processes at a time: the whole corpus in well under a minute on two cores."""
    with ThreadPoolExecutor(max_workers=(os.cpu_count() or 2) + 1) as pool:
        results = pool.map(run_child, MANIFEST["models"])
        return {entry["path"]: result for entry, result in zip(MANIFEST["models"], results, strict=True)}


def test_manifest_lists_every_gltf_file() -> None:
    found = {str(p.relative_to(ROOT)) for folder in ("glTF", "glTF2") for p in (ROOT / folder).rglob("*.gl[tb]*")}
    found = {p for p in found if p.endswith((".gltf", ".glb"))}
    listed = [entry["path"] for entry in MANIFEST["models"]]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert set(listed) == found
    assert all(entry["reason"] and entry["expect"] for entry in MANIFEST["models"])


@pytest.mark.parametrize("entry", MANIFEST["models"], ids=[entry["path"] for entry in MANIFEST["models"]])
def test_model(entry: dict[str, str], outcomes: dict[str, dict[str, Any]]) -> None:
    result = outcomes[entry["path"]]
    assert result["outcome"] == entry["expect"], result
    assert result["warnings"] == [], "loading must not leak warnings"
    if entry["expect"] == "renders":
        assert result["triangles"] + result["points"] > 0
        # Model pixels where its bounding box projects (a blank or misplaced frame fails), none elsewhere; a cloud
        # need not fill its box (the generator's clouds are a square's outline), but most of its points show.
        least = max(20, 0.1 * result["area"]) if result["triangles"] else 0.5 * result["points"]
        assert result["inside"] >= least, result
        assert result["outside"] == 0, result
    else:
        assert result["message"]


if __name__ == "__main__":
    print(json.dumps(probe(Path(sys.argv[1]))))

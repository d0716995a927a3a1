"""Peak memory of a render worker loading each attack file and a legitimate 20 M-triangle model.

Each model loads in a fresh process the way the worker loads it (a GL context, the hard limit, load_scene, upload),
and the peak resident memory (VmHWM) is printed with the outcome. `--src` points at another tree's src/ to measure
code before a change. Run from the repository root: `.venv/bin/python bench/model_memory.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.render.test_model_memory import _glb, overrun, png, textured_quads, zero_triangles  # noqa: E402

GIB = 1 << 30
PROBE = """
import json, sys, time
from pathlib import Path
def status(key):
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return int(line.split()[1]) * 1024
from renderhub.render.renderer import Renderer
renderer = Renderer(64, 64)
try:
    from renderhub.render.model_limits import HardLimit
    HardLimit().apply(int(sys.argv[3]))
except ImportError:
    pass  # code from before the hard limit
from renderhub.render.scene import ModelError, load_scene
started, outcome = time.perf_counter(), "loaded"
try:
    limit = None if sys.argv[2] == "None" else int(sys.argv[2])
    scene = load_scene(Path(sys.argv[1]), max_primitives=limit, max_bytes=int(sys.argv[3]))
    renderer.upload(scene)
    outcome = f"loaded {scene.triangles:,} triangles"
except ModelError as e:
    outcome = f"{e.code}: {e.message[:110]}"
print(json.dumps({"peak": status("VmHWM"), "seconds": time.perf_counter() - started, "outcome": outcome}))
"""


def grid(triangles: int, split: bool = False) -> bytes:
    """A legitimate mesh: a rippled grid with normals, about `triangles` triangles and half as many vertices (as
    many when `split`: each row of quads has vertices of its own, as UV seams and flat shading make them)."""
    n = int((triangles / 2) ** 0.5)
    xs = np.linspace(0, 1, n + 1, dtype=np.float32)
    gx, gz = np.meshgrid(xs, xs)
    points = np.stack([gx, np.sin(gx * 20) * np.cos(gz * 20) * 0.05, gz], -1).astype(np.float32)
    del gx, gz
    row = 2 * (n + 1) if split else n + 1  # vertices from one row of quads to the next
    positions = (np.stack([points[:-1], points[1:]], 1) if split else points).reshape(-1, 3)
    del points
    normals = np.zeros_like(positions)
    normals[:, 1] = 1
    i = np.arange(n, dtype=np.uint32)
    a = (i[:, None] * row + i[None, :]).ravel()
    indices = np.stack([a, a + n + 1, a + 1, a + 1, a + n + 1, a + n + 2], 1).astype(np.uint32)
    blobs = [positions.astype(np.float32).tobytes(), normals.astype(np.float32).tobytes(), indices.tobytes()]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).tolist()
    vec3 = {"componentType": 5126, "count": len(positions), "type": "VEC3"}
    header = {
        "asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "NORMAL": 1}, "indices": 2}]}],
        "accessors": [{"bufferView": 0, **vec3, "min": positions.min(0).tolist(), "max": positions.max(0).tolist()},
                      {"bufferView": 1, **vec3},
                      {"bufferView": 2, "componentType": 5125, "count": indices.size, "type": "SCALAR"}],
        "bufferViews": [{"buffer": 0, "byteOffset": offsets[k], "byteLength": len(b)} for k, b in enumerate(blobs)],
        "buffers": [{"byteLength": offsets[-1]}],
    }  # fmt: skip
    return _glb(header, b"".join(blobs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the src/ folder of the code to measure")
    parser.add_argument("--skip-large", action="store_true", help="leave out the 20 M-triangle models (480 and 720 MB)")
    args = parser.parse_args()
    standard, premium = ("20000000", GIB), ("None", 4 * GIB)
    cases = [
        ("glTF, 20 M zero triangles (Standard)", "zeros.gltf", lambda: zero_triangles(20_000_000), standard),
        ("glTF, 300 M zero triangles (Premium)", "zeros300.gltf", lambda: zero_triangles(300_000_000), premium),
        ("PNG of 13000x13000 (Standard)", "huge.glb", lambda: textured_quads([png(13000, 13000)]), standard),
        ("30 textures of 4096x4096 (Standard)", "thirty.glb", lambda: textured_quads([png(4096, 4096)] * 30), standard),
        ("accessor overrunning its buffer", "overrun.glb", lambda: overrun({}, count=100_000_000), standard),
    ]
    if not args.skip_large:
        cases.append(("20 M triangles, 10 M vertices", "grid.glb", lambda: grid(20_000_000), standard))
        cases.append(("20 M triangles, 20 M vertices", "split.glb", lambda: grid(20_000_000, True), standard))
    env = {**os.environ, "PYTHONPATH": str(args.src)}
    with tempfile.TemporaryDirectory() as folder:
        print(f"{'model':48} {'file bytes':>11} {'peak RSS':>10} {'seconds':>8}  outcome")
        for title, name, make, (primitives, max_bytes) in cases:
            path = Path(folder) / name
            path.write_bytes(make())  # one at a time: the large ones take gigabytes to build
            command = [sys.executable, "-c", PROBE, str(path), primitives, str(max_bytes)]
            # A fence for code without the hard limit: an attack may not take this machine's memory (6 GiB).
            fenced = ["prlimit", f"--data={6 * GIB}", *command]
            done = subprocess.run(fenced, capture_output=True, text=True, env=env, timeout=600, check=False)
            lines = done.stdout.strip().splitlines()
            if not lines:
                print(f"{title:48} {path.stat().st_size:>11,} {'-':>10} {'-':>8}  died: {done.stderr[-200:]!r}")
                continue
            result = json.loads(lines[-1])
            peak = f"{result['peak'] / 2**20:,.0f} MiB"
            print(f"{title:48} {path.stat().st_size:>11,} {peak:>10} {result['seconds']:>8.1f}  {result['outcome']}")
            path.unlink()


if __name__ == "__main__":
    main()

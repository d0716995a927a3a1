"""Frame time of point clouds against triangle models of about as many primitives, at 1280x720.

Each model is written the way the conversion engine writes it (clouds: one POINTS primitive with COLOR_0 under a node
translation; triangles: bench/model_memory.py's rippled grid), then loaded and drawn in a fresh process: load time,
peak resident memory, and render time (readback included) over an orbit of frames, with the CPU time the frame
took in all of llvmpipe's threads: steadier than wall time on a machine others share. Run from the repository root:
`.venv/bin/python bench/points.py` (`--sizes 1000000` for a quick run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.model_memory import grid  # noqa: E402

from renderhub.conversion import glb  # noqa: E402
from renderhub.conversion.pointclouds import Cloud, to_model  # noqa: E402

PROBE = """
import json, statistics, sys, time
from pathlib import Path
from renderhub.render.camera import frame_bounds
from renderhub.render.renderer import Renderer
from renderhub.render.scene import load_scene
renderer = Renderer(int(sys.argv[2]), int(sys.argv[3]))
started = time.perf_counter()
scene = load_scene(Path(sys.argv[1]), max_primitives=None, max_bytes=8 << 30)
renderer.upload(scene)
loaded = time.perf_counter() - started
poses = [frame_bounds(scene.bounds, yaw=15 * i, pitch=35) for i in range(int(sys.argv[4]))]
for pose in poses[:2]:
    renderer.render(pose)  # warm-up: shader compilation, first touches of the buffers
times, cpu = [], []
for pose in poses:
    used = time.process_time()
    renderer.render(pose)
    cpu.append((time.process_time() - used) * 1000)
    times.append(renderer.last_render_ms)
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
times.sort()
print(json.dumps({"triangles": scene.triangles, "points": scene.points, "load": loaded, "peak": peak,
                  "median": statistics.median(times), "p90": times[int(len(times) * 0.9) - 1],
                  "cpu": statistics.median(cpu)}))
"""


def cloud(points: int) -> bytes:
    """A coloured scan of rippled terrain at survey coordinates, as the conversion engine writes an XYZ file."""
    rng = np.random.default_rng(5)
    xz = rng.uniform(0, 200, (points, 2))
    height = np.sin(xz[:, 0] / 15) * np.cos(xz[:, 1] / 11) * 6
    positions = np.column_stack([500_000 + xz[:, 0], height, 4_100_000 + xz[:, 1]])
    colors = np.column_stack([xz * 1.2, (height + 6) * 20]).clip(0, 255).astype(np.uint8)
    header, binary = glb.document(to_model(Cloud(positions, colors), "terrain"), "bench/points.py")
    return b"".join(bytes(part) for part in glb.encode(header, binary))


def measure(path: Path, width: int, height: int, frames: int) -> dict[str, float]:
    command = [sys.executable, "-c", PROBE, str(path), str(width), str(height), str(frames)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{path.name}: exit {done.returncode}\n{done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000], help="primitives per model")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--frames", type=int, default=24, help="frames rendered around each model")
    args = parser.parse_args()
    print(f"{args.width}x{args.height}, {args.frames} frames orbiting each model; render time includes readback")
    print(f"{'model':24} {'file MB':>8} {'load s':>7} {'peak MiB':>9} {'median ms':>10} {'p90 ms':>7} {'CPU ms':>7}")
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            for kind, make in (("points", cloud), ("triangles", grid)):
                path = Path(folder) / f"{kind}-{size}.glb"
                path.write_bytes(make(size))  # one at a time: the large ones take gigabytes to build
                figures = measure(path, args.width, args.height, args.frames)
                count = figures["points"] or figures["triangles"]
                print(
                    f"{f'{count:,.0f} {kind}':24} {path.stat().st_size / 1e6:8.1f} {figures['load']:7.2f}"
                    f" {figures['peak'] / 2**20:9.0f} {figures['median']:10.1f} {figures['p90']:7.1f}"
                    f" {figures['cpu']:7.1f}"
                )
                path.unlink()


if __name__ == "__main__":
    main()

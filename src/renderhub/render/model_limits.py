"""What a model may cost in memory, checked before anything is decoded, and the render worker's hard memory limit."""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import resource
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from PIL import Image

from renderhub.render.gltf import ModelError, view_bytes

if TYPE_CHECKING:
    from renderhub.render.gltf import Estimate

log = logging.getLogger(__name__)

# The hard limit is the size's model limit plus this: the loader's working copies (trimesh widens every index and
# position to 8 bytes) and the upload's (the renderer packs vertices, then copies them to GL). Measured with
# bench/model_memory.py: 20 M triangles on 10 M vertices peaked at 1.9 GiB, on 20 M vertices (915 MiB drawn, near
# Standard's 1 GiB) at 3.0 GiB, of which 0.1 for the empty worker: Standard's largest models load with room to spare.
LOAD_OVERHEAD_BYTES = 2560 * 1024 * 1024
# What loading costs beyond the file itself (read once by trimesh), rounded up from the same measurements (about
# 35 bytes a triangle and 65 to 115 a vertex): no model that passes this estimate should meet the hard limit.
LOAD_BYTES_PER_VERTEX = 96
LOAD_BYTES_PER_TRIANGLE = 48
# A point cloud is read from the file's own memory, placed (12 bytes a point, colours 4), sorted for drawing (as
# much again, and 10 for the order), packed for the GPU and copied there (16 each). Measured: 5 M points from an
# 80 MB GLB peaked 77 bytes a point above the empty renderer, the file's 16 included; rounded up.
LOAD_BYTES_PER_POINT = 80
MAX_TEXTURE_SIZE = 4096  # larger textures are downscaled: sharper than any streamed frame needs
VERTEX_BYTES = 36  # position, normal, texcoord (floats) and an RGBA8 colour, as the renderer uploads them
INDEX_BYTES = 12  # a triangle's three uint32 indices
POINT_BYTES = 16  # a point's position (floats) and RGBA8 colour; 12 without colours
# A larger image is refused: decoding it takes its full size in RGBA before it is downscaled to MAX_TEXTURE_SIZE.
MAX_TEXTURE_PIXELS = 8192 * 8192
_KTX2 = b"\xabKTX 20\xbb\r\n\x1a\n"


def too_large(message: str) -> ModelError:
    return ModelError("ModelTooLarge", message)


def texture_bytes(width: int, height: int) -> int:
    """Memory of one texture as drawn: RGBA, downscaled to MAX_TEXTURE_SIZE, plus a third for mipmaps."""
    scale = min(1.0, MAX_TEXTURE_SIZE / max(width, height, 1))
    return int(width * scale) * int(height * scale) * 4 * 4 // 3


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from an image's header (PNG, JPEG, WebP, KTX2...), decoding nothing; None if unreadable."""
    if data.startswith(_KTX2) and len(data) >= 28:
        width, height = struct.unpack_from("<II", data, 20)
        return width, max(height, 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the decompression-bomb warning: we judge the size ourselves
            with Image.open(io.BytesIO(data)) as image:  # lazy: reads the header only
                width, height = image.size
                return int(width), int(height)
    except Image.DecompressionBombError as e:
        raise too_large(f"an image is larger than the renderer accepts ({e})") from None
    except Exception:  # not an image the loader can read either: it is skipped, and costs nothing
        return None


def _image_bytes(header: dict[str, Any], binary: bytes | None, folder: Path, image: dict[str, Any]) -> bytes:
    if "bufferView" in image:
        return bytes(view_bytes(header, binary, folder, header["bufferViews"][image["bufferView"]]))
    uri = str(image.get("uri", ""))
    if uri.startswith("data:"):
        return base64.b64decode(uri.partition(",")[2])
    with (folder / unquote(uri)).open("rb") as f:
        return f.read(1 << 20)  # a header is at the start; a megabyte covers JPEG's metadata segments before it


def _base_color_images(header: dict[str, Any]) -> set[int]:
    """The images decoded for drawing: base colour textures (other maps are never decoded)."""
    textures, found = header.get("textures", []), set()
    for material in header.get("materials", []):
        reference = material.get("pbrMetallicRoughness", {}).get("baseColorTexture")
        if isinstance(reference, dict) and isinstance(reference.get("index"), int):
            source = textures[reference["index"]].get("source")
            if isinstance(source, int) and 0 <= source < len(header.get("images", [])):
                found.add(source)
    return found


def textures_cost(header: dict[str, Any], binary: bytes | None, folder: Path) -> tuple[int, int, str]:
    """(memory the textures keep once drawn, the largest transient of decoding one, the largest's size), from
    image headers alone."""
    images, kept, transient, largest = header.get("images", []), 0, 0, ""
    for index in sorted(_base_color_images(header)):
        size = image_size(_image_bytes(header, binary, folder, images[index]))
        if size is None:
            continue
        width, height = size
        if width * height > MAX_TEXTURE_PIXELS:
            raise too_large(
                f"image {index} is {width}x{height} ({width * height:,} pixels); the renderer accepts textures of"
                f" up to {MAX_TEXTURE_PIXELS:,} pixels (8192x8192)"
            )
        kept += texture_bytes(width, height)
        if width * height * 4 * 2 > transient:
            transient, largest = width * height * 4 * 2, f"{width}x{height}"  # the decoded image and its RGBA copy
    return kept, transient, largest


def drawn_bytes(estimate: Estimate) -> int:
    """Memory the model's geometry keeps once uploaded, textures aside."""
    return estimate.vertices * VERTEX_BYTES + estimate.triangles * INDEX_BYTES + estimate.points * POINT_BYTES


def check_load(
    header: dict[str, Any], binary: bytes | None, folder: Path, estimate: Estimate, file_bytes: int, max_bytes: int
) -> None:
    """Refuse, before anything is decoded, a model whose textures or load would pass this session's limits."""
    kept, transient, largest = textures_cost(header, binary, folder)
    drawn = drawn_bytes(estimate) + kept
    if drawn > max_bytes:
        textures = f" (textures {kept:,}, the largest {largest})" if kept else ""
        raise too_large(f"the model needs about {drawn:,} bytes of memory{textures}; this session allows {max_bytes:,}")
    loading = (
        file_bytes
        + estimate.data_bytes
        + estimate.vertices * LOAD_BYTES_PER_VERTEX
        + estimate.triangles * LOAD_BYTES_PER_TRIANGLE
        + estimate.points * LOAD_BYTES_PER_POINT
        + kept
        + transient
    )
    budget = max_bytes + LOAD_OVERHEAD_BYTES
    if loading > budget:
        raise too_large(
            f"loading the model would take about {loading:,} bytes of memory; the renderer has {budget:,}"
            f" ({max_bytes:,} for this session's models plus {LOAD_OVERHEAD_BYTES:,} for loading them)"
        )


def out_of_memory() -> ModelError:
    """The refusal for a load that ran into the worker's hard limit (or the machine's memory)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
    if soft == resource.RLIM_INFINITY:
        return too_large("the model does not fit in this machine's memory")
    return too_large(f"loading the model needed more than the render worker's memory limit of {soft:,} bytes")


def data_bytes() -> int:
    """This process's private writable memory (VmData): what RLIMIT_DATA bounds."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    return 0


def _counts_mappings() -> bool:
    """Since Linux 4.7 RLIMIT_DATA bounds private writable mappings (numpy's large arrays), not only the heap."""
    if not Path("/proc/self/status").exists():
        return False
    version = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return version is not None and (int(version[1]), int(version[2])) >= (4, 7)


class HardLimit:
    """The render worker's own memory limit: RLIMIT_DATA at what the empty renderer holds plus the model budget.

    RLIMIT_DATA, not RLIMIT_AS: the NVIDIA driver reserves huge address ranges, which RLIMIT_AS counts; RLIMIT_DATA
    counts only private writable mappings, and such reservations are inaccessible (PROT_NONE) or map the driver's
    device files (shared) - reasoned from the kernel's accounting, not yet measured on an NVIDIA machine; whatever
    the driver does allocate at start is in the baseline. Not a cgroup: it needs no privileges or delegation, so it
    works the same for `make serve`, a container and a Ray node. A load past it gets MemoryError, not the OOM killer.
    """

    def __init__(self) -> None:
        self.baseline = data_bytes()  # the interpreter, the libraries and the GL context, before any model
        self.limit: int | None = None
        self._warned = False

    def apply(self, max_model_bytes: int) -> int | None:
        """Set the limit for a session's models (again for each load: cheap); None where it cannot be set."""
        limit = self.baseline + max_model_bytes + LOAD_OVERHEAD_BYTES
        if limit == self.limit:
            return limit
        try:
            if not _counts_mappings():
                raise OSError("this kernel's RLIMIT_DATA does not count mappings (Linux 4.7 or later does)")
            _, hard = resource.getrlimit(resource.RLIMIT_DATA)
            if hard != resource.RLIM_INFINITY and hard < limit:
                limit = hard
            resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
        except (OSError, ValueError) as e:
            if not self._warned:
                log.warning("the render worker runs without a hard memory limit: %s", e)
                self._warned = True
            return None
        self.limit = limit
        return limit

"""Picture quality as a client measures it: PSNR of a decoded frame's luma against the render server's lossless
reference of the same frame, converted to YUV the way the encoder converted it (BT.601, limited range, as
libswscale does for libx264's yuv420p). RGB PSNR would be capped near 42 dB by 4:2:0 subsampling alone."""

from __future__ import annotations

import io
import math
import ssl
import urllib.error
import urllib.request

import av
import numpy as np
from numpy.typing import NDArray

HTTP_TIMEOUT = 10.0
IDENTICAL_DB = 100.0  # the PSNR reported for identical planes (the true value is infinite)


def luma(frame: av.VideoFrame) -> NDArray[np.uint8]:
    """The frame's Y plane as the encoder's yuv420p holds it: for a decoded frame, a view of it (no copy)."""
    yuv = frame if frame.format.name == "yuv420p" else frame.reformat(format="yuv420p")
    plane = yuv.planes[0]
    return np.frombuffer(memoryview(plane), np.uint8).reshape(yuv.height, plane.line_size)[:, : yuv.width]


def luma_psnr(decoded: av.VideoFrame, reference: NDArray[np.uint8]) -> float | None:
    """PSNR in dB of the decoded frame's luma against the reference RGB picture's; None when the sizes differ."""
    expected = luma(av.VideoFrame.from_ndarray(np.ascontiguousarray(reference), format="rgb24"))
    shown = luma(decoded)
    if expected.shape != shown.shape:
        return None
    mse = float(np.mean((expected.astype(np.float64) - shown.astype(np.float64)) ** 2))
    return IDENTICAL_DB if mse == 0 else round(10 * math.log10(255**2 / mse), 2)


def fetch_reference(url: str, token: str, pose_id: int, context: ssl.SSLContext | None) -> NDArray[np.uint8] | None:
    """The render server's lossless frame of `pose_id` (GET {url}?poseId=N), as RGB; None when it has none now."""
    from PIL import Image

    request = urllib.request.Request(f"{url}?poseId={pose_id}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT, context=context) as response:
            png = response.read()
    except (urllib.error.URLError, OSError):
        return None
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))

"""The pose tag survives drawing, corruption checks, and a real low-bitrate libx264 and VP8 round trip."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from renderhub.render import pose_tag


def scene(width: int, height: int, seed: int) -> np.ndarray:
    """A busy picture: smooth gradients plus noise, the hard case for a low-bitrate encoder."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = (xx * 255 // width + seed * 7) % 256
    frame[..., 1] = (yy * 255 // height) % 256
    frame[..., 2] = rng.integers(0, 256, (height, width), dtype=np.uint8)
    return frame


@pytest.mark.parametrize("pose_id", [0, 1, 0x5A5A5A, 0xFFFFFF, 123456])
@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080), (640, 360), (320, 240), (96, 24)])
def test_draw_then_read(pose_id: int, size: tuple[int, int]) -> None:
    frame = scene(*size, pose_id % 11)
    pose_tag.draw(frame, pose_id)
    assert pose_tag.read(frame) == pose_id
    luma = frame.mean(axis=2).astype(np.uint8)
    assert pose_tag.read(luma) == pose_id


def test_layout_is_the_documented_one() -> None:
    assert pose_tag.tag_rect(1280, 720) == (0, 672, 192, 48)
    assert pose_tag.tag_rect(1920, 1080) == (0, 1024, 192, 48)
    assert pose_tag.tag_rect(320, 240) == (0, 216, 96, 24)
    bits = pose_tag.bits_for(0x800001)
    assert len(bits) == 36
    assert bits[:3] == [1, 0, 1] and bits[25] == 1 and bits[-2:] == [0, 1]
    frame = np.zeros((720, 1280, 3), np.uint8)
    pose_tag.draw(frame, 0x800001)
    assert frame[672 + 8, 8].tolist() == [255, 255, 255]
    assert frame[672 + 8, 16 + 8].tolist() == [0, 0, 0]
    assert frame[:672].max() == 0 and frame[:, 192:].max() == 0


def test_untagged_and_corrupt_frames_read_none() -> None:
    assert pose_tag.read(np.zeros((720, 1280, 3), np.uint8)) is None
    assert pose_tag.read(np.full((720, 1280, 3), 255, np.uint8)) is None
    assert pose_tag.read(scene(1280, 720, 3)) is None
    assert pose_tag.read(np.zeros((10, 10, 3), np.uint8)) is None
    frame = scene(1280, 720, 4)
    pose_tag.draw(frame, 4242)
    cell = 16
    for index in range(36):
        corrupt = frame.copy()
        row, col = divmod(index, 12)
        y, x = 672 + row * cell, col * cell
        corrupt[y : y + cell, x : x + cell] = 255 - corrupt[y : y + cell, x : x + cell]
        assert pose_tag.read(corrupt) is None, f"a flipped cell {index} went unnoticed"


def test_ids_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError):
        pose_tag.bits_for(1 << 24)
    with pytest.raises(ValueError):
        pose_tag.bits_for(-1)
    with pytest.raises(ValueError):
        pose_tag.tag_rect(50, 20)


def _round_trip(codec_name: str, width: int, height: int, bit_rate: int, options: dict[str, str]) -> list[int | None]:
    encoder = av.CodecContext.create(codec_name, "w")
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuv420p"
    encoder.bit_rate = bit_rate
    encoder.framerate = fractions.Fraction(30, 1)
    encoder.time_base = fractions.Fraction(1, 30)
    encoder.options = options
    decoder = av.CodecContext.create("h264" if codec_name == "libx264" else "vp8", "r")
    seen: list[int | None] = []
    ids = [(i * 977_123) % (1 << 24) for i in range(40)]
    for index, pose_id in enumerate([*ids, None]):
        packets = encoder.encode(None) if pose_id is None else None
        if pose_id is not None:
            frame = scene(width, height, index)
            pose_tag.draw(frame, pose_id)
            video = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video.pts = index
            packets = encoder.encode(video)
        for packet in packets or []:
            for decoded in decoder.decode(packet):
                seen.append(pose_tag.read(decoded.to_ndarray(format="rgb24")))
                # Clients may read the luma plane alone, which skips a colour conversion.
                plane = decoded.planes[0]
                luma = np.frombuffer(plane, np.uint8).reshape(height, plane.line_size)[:, :width]
                assert pose_tag.read(luma) == seen[-1]
    assert len(seen) == len(ids)
    return [s if s is None else ids.index(s) for s in seen]


@pytest.mark.parametrize("size", [(1280, 720), (640, 360)])
def test_survives_low_bitrate_h264(size: tuple[int, int]) -> None:
    # 300 kbit/s for a picture full of noise: the encoder is starved, the blocks still read.
    order = _round_trip("libx264", *size, 300_000, {"preset": "ultrafast", "tune": "zerolatency"})
    assert order == list(range(40))


def test_survives_low_bitrate_vp8() -> None:
    order = _round_trip("libvpx", 640, 360, 200_000, {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"})
    assert order == list(range(40))

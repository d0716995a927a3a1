"""The pose tag: a 24-bit camera pose id drawn as black/white blocks at the bottom-left corner of a frame."""

from __future__ import annotations

import numpy as np

COLUMNS = 12
ROWS = 3
ID_BITS = 24
CRC_BITS = 8
MIN_CONTRAST = 48.0
# Guards at both ends of the bit string: white-black first, black-white last. They give the reader its
# black and white levels (decoded video is rarely 0 and 255) and make an untagged or shifted area fail.
_HEAD = (1, 0)
_TAIL = (0, 1)
_CRC_XOR = 0x5A  # so that an all-black id 0 does not carry an all-black checksum


def cell_size(width: int, height: int) -> int:
    """Cell edge in pixels: 16 (one H.264 macroblock) when the frame has room, 8 for small frames, else 0."""
    if width >= 640 and height >= 360:
        return 16
    if width >= COLUMNS * 8 and height >= ROWS * 8:
        return 8
    return 0


def tag_rect(width: int, height: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the tag: left edge at x 0, top edge the lowest multiple of the cell size that fits."""
    cell = cell_size(width, height)
    if not cell:
        raise ValueError(f"a {width}x{height} frame is too small for a pose tag")
    # Aligned to the cell grid from the top, where codecs start their blocks, so no block mixes tag and scene.
    y = (height - ROWS * cell) // cell * cell
    return 0, y, COLUMNS * cell, ROWS * cell


def _crc8(value: int) -> int:
    crc = 0
    for byte in value.to_bytes(3, "big"):
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc ^ _CRC_XOR


def bits_for(pose_id: int) -> list[int]:
    """The 36 cells, row-major from the top-left cell: guard, id (most significant bit first), CRC-8, guard."""
    if not 0 <= pose_id < 1 << ID_BITS:
        raise ValueError(f"pose id {pose_id} does not fit in {ID_BITS} bits")
    crc = _crc8(pose_id)
    id_bits = [(pose_id >> (ID_BITS - 1 - i)) & 1 for i in range(ID_BITS)]
    crc_bits = [(crc >> (CRC_BITS - 1 - i)) & 1 for i in range(CRC_BITS)]
    return [*_HEAD, *id_bits, *crc_bits, *_TAIL]


def draw(frame: np.ndarray, pose_id: int) -> None:
    """Draw the tag for `pose_id` into an RGB (h, w, 3) uint8 frame, in place."""
    height, width = frame.shape[:2]
    x0, y0, _, _ = tag_rect(width, height)
    cell = cell_size(width, height)
    cells = np.array(bits_for(pose_id), dtype=np.uint8).reshape(ROWS, COLUMNS) * 255
    block = np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)
    frame[y0 : y0 + ROWS * cell, x0 : x0 + COLUMNS * cell] = block[:, :, None] if frame.ndim == 3 else block


def read(frame: np.ndarray) -> int | None:
    """The pose id in an RGB (h, w, 3) or luma (h, w) frame, or None when there is no valid tag."""
    height, width = frame.shape[:2]
    cell = cell_size(width, height)
    if not cell:
        return None
    x0, y0, tag_w, tag_h = tag_rect(width, height)
    area = frame[y0 : y0 + tag_h, x0 : x0 + tag_w].astype(np.float32)
    if area.ndim == 3:
        area = area.mean(axis=2)
    # Only the middle half of each cell: deblocking and ringing smear the edges.
    lo, hi = cell // 4, cell - cell // 4
    cells = area.reshape(ROWS, cell, COLUMNS, cell)[:, lo:hi, :, lo:hi].mean(axis=(1, 3)).ravel()
    white = (cells[0] + cells[-1]) / 2
    black = (cells[1] + cells[-2]) / 2
    if white - black < MIN_CONTRAST:
        return None
    bits = [int(v > (white + black) / 2) for v in cells]
    if tuple(bits[:2]) != _HEAD or tuple(bits[-2:]) != _TAIL:
        return None
    pose_id = 0
    for bit in bits[2 : 2 + ID_BITS]:
        pose_id = pose_id << 1 | bit
    crc = 0
    for bit in bits[2 + ID_BITS : 2 + ID_BITS + CRC_BITS]:
        crc = crc << 1 | bit
    return pose_id if crc == _crc8(pose_id) else None

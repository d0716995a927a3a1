// The pose tag (see renderhub/render/pose_tag.py): a 24-bit pose id drawn as 12x3 black/white cells at the
// bottom-left of every frame. This reads it back from the video, following the Python reader exactly.

export const COLUMNS = 12;
export const ROWS = 3;
export const ID_BITS = 24;
export const CRC_BITS = 8;
export const MIN_CONTRAST = 48;
const CRC_XOR = 0x5a;

/** Cell edge in pixels: 16 when the frame has room, 8 for small frames, else 0 (no tag). */
export function cellSize(width, height) {
  if (width >= 640 && height >= 360) return 16;
  if (width >= COLUMNS * 8 && height >= ROWS * 8) return 8;
  return 0;
}

/** {x, y, width, height, cell} of the tag in a frame of this size, or null when the frame is too small. */
export function tagRect(width, height) {
  const cell = cellSize(width, height);
  if (!cell) return null;
  const y = Math.floor((height - ROWS * cell) / cell) * cell;
  return { x: 0, y, width: COLUMNS * cell, height: ROWS * cell, cell };
}

/** CRC-8 (polynomial 0x07) of the id's three bytes, most significant first, xor 0x5A. */
export function crc8(value) {
  let crc = 0;
  for (const byte of [(value >> 16) & 0xff, (value >> 8) & 0xff, value & 0xff]) {
    crc ^= byte;
    for (let i = 0; i < 8; i++) crc = crc & 0x80 ? ((crc << 1) ^ 0x07) & 0xff : (crc << 1) & 0xff;
  }
  return crc ^ CRC_XOR;
}

/**
 * The pose id in the tag's pixels, or null when there is no valid tag.
 * `rgba` holds exactly the tag area (COLUMNS*cell x ROWS*cell pixels, RGBA, as getImageData returns it).
 */
export function readTag(rgba, cell) {
  const width = COLUMNS * cell;
  // Only the middle half of each cell: deblocking and ringing smear the edges.
  const lo = Math.floor(cell / 4);
  const hi = cell - lo;
  const count = (hi - lo) * (hi - lo);
  const cells = new Float64Array(COLUMNS * ROWS);
  for (let row = 0; row < ROWS; row++) {
    for (let column = 0; column < COLUMNS; column++) {
      let sum = 0;
      for (let y = row * cell + lo; y < row * cell + hi; y++) {
        let i = (y * width + column * cell + lo) * 4;
        for (let x = lo; x < hi; x++, i += 4) sum += rgba[i] + rgba[i + 1] + rgba[i + 2];
      }
      cells[row * COLUMNS + column] = sum / 3 / count;
    }
  }
  const last = cells.length - 1;
  const white = (cells[0] + cells[last]) / 2;
  const black = (cells[1] + cells[last - 1]) / 2;
  if (white - black < MIN_CONTRAST) return null;
  const middle = (white + black) / 2;
  const bits = Array.from(cells, (v) => (v > middle ? 1 : 0));
  // Guards: white-black first, black-white last.
  if (bits[0] !== 1 || bits[1] !== 0 || bits[last - 1] !== 0 || bits[last] !== 1) return null;
  let id = 0;
  for (let i = 2; i < 2 + ID_BITS; i++) id = id * 2 + bits[i];
  let crc = 0;
  for (let i = 2 + ID_BITS; i < 2 + ID_BITS + CRC_BITS; i++) crc = crc * 2 + bits[i];
  return crc === crc8(id) ? id : null;
}

/** Reads tags out of video frames through a small canvas that holds only the tag area. */
export class TagReader {
  constructor() {
    this.canvas = document.createElement("canvas");
    this.context = null;
    this.rect = null;
  }

  /** The pose id of the frame `source` (a video element) shows now, or null. */
  read(source, frameWidth, frameHeight) {
    const rect = tagRect(frameWidth, frameHeight);
    if (!rect) return null;
    if (!this.context || this.canvas.width !== rect.width || this.canvas.height !== rect.height) {
      this.canvas.width = rect.width;
      this.canvas.height = rect.height;
      this.context = this.canvas.getContext("2d", { willReadFrequently: true, alpha: false });
    }
    try {
      this.context.drawImage(source, rect.x, rect.y, rect.width, rect.height, 0, 0, rect.width, rect.height);
      return readTag(this.context.getImageData(0, 0, rect.width, rect.height).data, rect.cell);
    } catch {
      return null; // no frame yet, or the frame changed size under us
    }
  }

  /** The mean colour [r, g, b] of the picture just above the tag, to paint over the tag with; null if none. */
  background(source, frameWidth, frameHeight) {
    const rect = tagRect(frameWidth, frameHeight);
    const band = rect ? Math.min(4, rect.y) : 0;
    if (!band || !this.context) return null;
    try {
      this.context.drawImage(source, rect.x, rect.y - band, rect.width, band, 0, 0, rect.width, band);
      const data = this.context.getImageData(0, 0, rect.width, band).data;
      const sum = [0, 0, 0];
      for (let i = 0; i < data.length; i += 4) for (let c = 0; c < 3; c++) sum[c] += data[i + c];
      return sum.map((v) => Math.round(v / (data.length / 4)));
    } catch {
      return null;
    }
  }
}

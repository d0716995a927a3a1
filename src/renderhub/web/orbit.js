// The orbit camera, in the render server's conventions (renderhub/render/camera.py): glTF's frame,
// right-handed, +Y up, metres; the camera looks along its local -Z; quaternions are [x, y, z, w].

export const DEFAULT_FOV = 60;
const MAX_PITCH = 89;
const rad = (degrees) => (degrees * Math.PI) / 180;

export function axisAngle(axis, degrees) {
  const half = rad(degrees) / 2;
  const s = Math.sin(half);
  return [axis[0] * s, axis[1] * s, axis[2] * s, Math.cos(half)];
}

export function multiply(a, b) {
  const [ax, ay, az, aw] = a;
  const [bx, by, bz, bw] = b;
  return [
    aw * bx + ax * bw + ay * bz - az * by,
    aw * by - ax * bz + ay * bw + az * bx,
    aw * bz + ax * by - ay * bx + az * bw,
    aw * bw - ax * bx - ay * by - az * bz,
  ];
}

/** Rotation matrix (rows) of a unit quaternion; its columns are the camera's right, up and backward axes. */
export function rotation([x, y, z, w]) {
  return [
    [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
    [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
    [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
  ];
}

const column = (m, i) => [m[0][i], m[1][i], m[2][i]];

/** A camera `distance` from `target` looking at it; yaw (degrees) turns about +Y from +Z, pitch raises it. */
export function orbitPose(target, distance, yaw, pitch, fov = DEFAULT_FOV) {
  const orientation = multiply(axisAngle([0, 1, 0], yaw), axisAngle([1, 0, 0], -pitch));
  const backward = column(rotation(orientation), 2);
  const position = target.map((t, i) => t + distance * backward[i]);
  return { position, orientation, fov };
}

/** Orbit, pan and zoom around a target; every change is a new pose for the server. */
export class OrbitCamera {
  constructor() {
    this.fov = DEFAULT_FOV;
    this.bounds = null;
    this.home();
  }

  /** Back to the view that frames the model (or a default view when there is none). */
  home() {
    this.yaw = 30;
    this.pitch = 20;
    if (this.bounds) {
      const [lo, hi] = this.bounds;
      this.target = lo.map((v, i) => (v + hi[i]) / 2);
      this.radius = Math.max(Math.hypot(...hi.map((v, i) => v - lo[i])) / 2, 1e-3);
    } else {
      this.target = [0, 0, 0];
      this.radius = 1;
    }
    // As camera.frame_bounds: the whole bounding sphere in view at any aspect of at least 1.
    this.distance = (this.radius / Math.sin(rad(this.fov) / 2)) * 1.05;
  }

  /** Frame a model's axis-aligned bounds {min: [x, y, z], max: [x, y, z]}. */
  frame(bounds) {
    const ok = (v) => Array.isArray(v) && v.length === 3 && v.every(Number.isFinite);
    this.bounds = bounds && ok(bounds.min) && ok(bounds.max) ? [bounds.min, bounds.max] : null;
    this.home();
  }

  pose() {
    return orbitPose(this.target, this.distance, this.yaw, this.pitch, this.fov);
  }

  /** Take over a pose (the camera a reloaded tab left on the server): orbit about the point it looks at, as deep
   * as the framed model's centre (frame first); a pose from this camera comes back unchanged. */
  adopt({ position, orientation, fov }) {
    const backward = column(rotation(orientation), 2);
    const depth = this.target.reduce((sum, t, i) => sum - (t - position[i]) * backward[i], 0);
    if (depth > 0) this.distance = depth;
    this.target = position.map((p, i) => p - this.distance * backward[i]);
    this.pitch = (Math.asin(Math.max(-1, Math.min(1, backward[1]))) * 180) / Math.PI;
    this.yaw = ((((Math.atan2(backward[0], backward[2]) * 180) / Math.PI) % 360) + 360) % 360;
    if (Number.isFinite(fov)) this.fov = fov;
  }

  /** Turn by degrees: positive yaw moves the camera to its right around the target, positive pitch raises it. */
  orbit(dYaw, dPitch) {
    this.yaw = (((this.yaw + dYaw) % 360) + 360) % 360;
    this.pitch = Math.min(MAX_PITCH, Math.max(-MAX_PITCH, this.pitch + dPitch));
  }

  /** Move the target with the picture: (dx, dy) in pixels of a view `viewHeight` pixels tall. */
  pan(dx, dy, viewHeight) {
    const perPixel = (2 * this.distance * Math.tan(rad(this.fov) / 2)) / Math.max(viewHeight, 1);
    const m = rotation(this.pose().orientation);
    const right = column(m, 0);
    const up = column(m, 1);
    this.target = this.target.map((t, i) => t - dx * perPixel * right[i] + dy * perPixel * up[i]);
  }

  /** Move closer (factor < 1) or further (factor > 1), within sane limits for the model's size. */
  zoom(factor) {
    if (!Number.isFinite(factor) || factor <= 0) return;
    this.distance = Math.min(this.radius * 1000, Math.max(this.radius * 0.01, this.distance * factor));
  }
}

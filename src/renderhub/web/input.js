// Input on the view: mouse, touch and keyboard orbit, pan and zoom, the turntable spin, and click-to-pick.

const $ = (id) => document.getElementById(id);
const DEGREES_PER_PIXEL = 0.35;
const SPIN_DEGREES_PER_SECOND = 24;
const CLICK_SLOP_PX = 4; // a press that moves less than this is a click (a pick), not a drag

export class ViewInput {
  /**
   * @param state the ViewerState: its current camera is what input moves, and current.pickRef is set here
   * @param stats the StatsOverlay, which shows what a click picked (and S toggles)
   */
  constructor(state, stats) {
    this.state = state;
    this.stats = stats;
    this.pointers = new Map(); // pointer id -> {x, y}
    this.press = null; // {id, x, y} of a lone press that may still become a click
    this.dragMode = "orbit";
    this.spinning = null; // the animation frame request while the turntable turns
    this.picks = 0; // numbers the picks, so an older click's late answer is not shown as the latest
  }

  /** The height in CSS pixels of the picture inside the viewport (the video is letterboxed). */
  pictureHeight() {
    const { current } = this.state;
    const rect = $("viewport").getBoundingClientRect();
    const { width, height } = current && current.stream ? current.stream.settings : { width: 16, height: 9 };
    return Math.min(rect.height, (rect.width * height) / width);
  }

  pointerDown(event) {
    // The view's own buttons sit inside the viewport: a capture here would steal their clicks.
    if (!this.state.streaming() || event.target.closest("button")) return;
    event.preventDefault();
    $("viewport").focus({ preventScroll: true });
    $("viewport").setPointerCapture(event.pointerId);
    this.pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    if (this.pointers.size === 1) {
      this.dragMode = event.button === 2 || event.button === 1 || event.shiftKey ? "pan" : "orbit";
    }
    const lone = this.pointers.size === 1 && event.button === 0;
    this.press = lone ? { id: event.pointerId, x: event.clientX, y: event.clientY } : null;
    this.stopSpin();
    $("viewport").classList.toggle("dragging", this.dragMode === "orbit");
    $("viewport").classList.toggle("panning", this.dragMode === "pan");
  }

  pointerMove(event) {
    const pointers = this.pointers;
    const previous = pointers.get(event.pointerId);
    if (!previous || !this.state.streaming()) return;
    const press = this.press;
    if (press && Math.hypot(event.clientX - press.x, event.clientY - press.y) < CLICK_SLOP_PX) return;
    this.press = null;
    const camera = this.state.current.camera;
    if (pointers.size === 1) {
      const dx = event.clientX - previous.x;
      const dy = event.clientY - previous.y;
      if (this.dragMode === "pan" || event.shiftKey) camera.pan(dx, dy, this.pictureHeight());
      else camera.orbit(-dx * DEGREES_PER_PIXEL, dy * DEGREES_PER_PIXEL);
    } else if (pointers.size === 2) {
      const [a, b] = [...pointers.values()];
      const before = { mid: [(a.x + b.x) / 2, (a.y + b.y) / 2], distance: Math.hypot(a.x - b.x, a.y - b.y) };
      pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
      const [c, d] = [...pointers.values()];
      const after = { mid: [(c.x + d.x) / 2, (c.y + d.y) / 2], distance: Math.hypot(c.x - d.x, c.y - d.y) };
      if (before.distance > 0 && after.distance > 0) camera.zoom(before.distance / after.distance);
      camera.pan(after.mid[0] - before.mid[0], after.mid[1] - before.mid[1], this.pictureHeight());
    }
    pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    this.state.poseChanged();
  }

  /** Also for pointercancel and lostpointercapture, which end a press without a click. */
  pointerUp(event) {
    const press = this.press;
    if (press && press.id === event.pointerId && event.type === "pointerup") this.pickAt(press.x, press.y);
    this.press = null;
    this.pointers.delete(event.pointerId);
    if (this.pointers.size === 0) $("viewport").classList.remove("dragging", "panning");
    else this.dragMode = "orbit"; // one finger left after a pinch orbits again
  }

  /** Ask the render server what the clicked point of the picture shows; the answer fills "picked" in the stats. */
  pickAt(clientX, clientY) {
    const video = $("video");
    if (!this.state.streaming() || !video.videoWidth || !video.videoHeight) return;
    const box = $("viewport").getBoundingClientRect();
    const scale = Math.min(box.width / video.videoWidth, box.height / video.videoHeight);
    const x = (clientX - box.left - (box.width - video.videoWidth * scale) / 2) / (video.videoWidth * scale);
    const y = (clientY - box.top - (box.height - video.videoHeight * scale) / 2) / (video.videoHeight * scale);
    if (!(x >= 0 && x <= 1 && y >= 0 && y <= 1)) return; // on the letterbox bars
    const current = this.state.current;
    current.pickRef = `pick-${++this.picks}`;
    current.stream.send({ type: "pointer", x, y, buttons: 1, kind: "down", ref: current.pickRef });
  }

  /** The render server's "pick" message. */
  pickAnswered(message) {
    if (message.ref !== this.state.current.pickRef) return; // an older click's answer
    this.stats.showPick(message.hit && Array.isArray(message.position) ? message.position : null);
  }

  wheel(event) {
    if (!this.state.streaming()) return;
    event.preventDefault();
    const scale = event.deltaMode === 1 ? 16 : event.deltaMode === 2 ? 400 : 1;
    this.state.current.camera.zoom(Math.exp(event.deltaY * scale * 0.0015));
    this.state.poseChanged();
  }

  key(event) {
    if (!this.state.streaming() || event.target.closest("input, select, textarea")) return;
    const camera = this.state.current.camera;
    const step = event.shiftKey ? 15 : 5;
    const actions = {
      ArrowLeft: () => camera.orbit(step, 0),
      ArrowRight: () => camera.orbit(-step, 0),
      ArrowUp: () => camera.orbit(0, -step),
      ArrowDown: () => camera.orbit(0, step),
      "+": () => camera.zoom(0.9),
      "=": () => camera.zoom(0.9),
      "-": () => camera.zoom(1 / 0.9),
      f: () => camera.home(),
      " ": () => this.toggleSpin(),
      s: () => this.stats.toggle(),
    };
    const action = actions[event.key];
    if (!action || event.ctrlKey || event.metaKey || event.altKey) return;
    event.preventDefault();
    action();
    this.state.poseChanged();
  }

  /** Back to the view that frames the model (the Frame button, a double-click). */
  home() {
    this.state.current.camera.home();
    this.state.poseChanged();
  }

  doubleClick(event) {
    if (this.state.streaming() && !event.target.closest("button")) this.home();
  }

  toggleSpin() {
    if (this.spinning !== null) return this.stopSpin();
    let last = performance.now();
    const step = (now) => {
      if (this.spinning === null || !this.state.streaming()) return this.stopSpin();
      this.state.current.camera.orbit(((now - last) / 1000) * SPIN_DEGREES_PER_SECOND, 0);
      last = now;
      this.state.poseChanged();
      this.spinning = requestAnimationFrame(step);
    };
    this.spinning = requestAnimationFrame(step);
    $("spin").setAttribute("aria-pressed", "true");
  }

  stopSpin() {
    if (this.spinning !== null) cancelAnimationFrame(this.spinning);
    this.spinning = null;
    $("spin").setAttribute("aria-pressed", "false");
  }
}

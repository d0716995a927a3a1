// The stats overlay: the stream's figures and the picked point.

const $ = (id) => document.getElementById(id);

const ms = (value, digits = 0) => (value === null || value === undefined ? "–" : `${value.toFixed(digits)} ms`);

/** 312443 as "312 k", 4999122 as "5.0 M". */
const count = (n) => (n >= 1e6 ? `${(n / 1e6).toFixed(1)} M` : n >= 1e3 ? `${Math.round(n / 1e3)} k` : `${n}`);

/** The level of detail of the frame on screen: "full" (level 0) or "2 of 4", with the primitives it draws. */
function detail(level, levels) {
  if (level === null) return "–";
  if (!levels || levels.length < 2) return "full";
  const drawn = count(levels[Math.min(level, levels.length - 1)]);
  return level === 0 ? `full · ${drawn}` : `level ${level} of ${levels.length - 1} · ${drawn}`;
}

/** Its only state is in the page: the Stats button's aria-pressed says whether the user wants it. */
export class StatsOverlay {
  /** @param state the ViewerState, only read: whether a stream is open */
  constructor(state) {
    this.state = state;
  }

  get wanted() {
    return $("toggle-stats").getAttribute("aria-pressed") === "true";
  }

  toggle() {
    const show = !this.wanted;
    $("toggle-stats").setAttribute("aria-pressed", String(show));
    $("stats").hidden = !show;
  }

  /** The overlay shows only with a stream, and then only if wanted. */
  setStreaming(show) {
    $("stats").hidden = !show || !this.wanted;
  }

  /** A figure's text, and in data-value what it stands for ("" for nothing), which tests and tools read. */
  set(id, text, value = null) {
    const element = $(id);
    element.textContent = text;
    element.dataset.value = value === null ? "" : String(value);
  }

  /** The figures a RenderStream reports (stream.js, figures()). */
  show(f) {
    this.set("stat-fps", f.fps === 0 && f.idle ? "0 · idle" : f.fps.toFixed(0), f.fps);
    this.set("stat-p50", ms(f.latencyP50), f.latencyP50);
    this.set("stat-p95", ms(f.latencyP95), f.latencyP95);
    this.set("stat-codec", f.codec || "–", f.codec);
    const size = f.width && f.height;
    this.set("stat-resolution", size ? `${f.width} × ${f.height}` : "–", size ? `${f.width}x${f.height}` : null);
    const kbps = f.bitrateKbps;
    const rate =
      kbps === null ? "–" : kbps >= 1000 ? `${(kbps / 1000).toFixed(1)} Mbit/s` : `${kbps.toFixed(0)} kbit/s`;
    this.set("stat-bitrate", rate, kbps);
    this.set("stat-render", ms(f.renderMs, 1), f.renderMs);
    this.set("stat-encode", ms(f.encodeMs, 1), f.encodeMs);
    this.set("stat-rtt", ms(f.rttMs, 1), f.rttMs);
    this.set("stat-detail", detail(f.level, f.levels), f.level);
    const dropped = f.framesDropped ? ` (${f.framesDropped} dropped)` : "";
    this.set("stat-decoded", `${f.framesDecoded}${dropped}`, f.framesDecoded);
    this.set("stat-renderer", f.renderer || "–", f.renderer);
    this.set("stat-pose", f.lastPoseId === null ? "–" : String(f.lastPoseId), f.lastPoseId);
  }

  /** No click answered yet on this connection. */
  clearPick() {
    this.set("stat-pick", "–");
  }

  /** The world point a click hit, or null when it hit the background. */
  showPick(position) {
    if (position === null) {
      this.set("stat-pick", "background", "none");
    } else {
      const where = position.map((c) => Number(c).toFixed(2)).join(", ");
      this.set("stat-pick", `${where} m`, position.join(","));
    }
  }
}

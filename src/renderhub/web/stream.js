// One WebRTC connection to a session's render server: the video, the "renderhub" data channel, the pose
// stream (throttled to the stream's frame rate) and the figures of the stats overlay.

export const CHANNEL_LABEL = "renderhub";
const MAX_POSE_ID = 2 ** 24 - 1;
const ICE_GATHER_TIMEOUT_MS = 5000;
const OPEN_TIMEOUT_MS = 20000;
const STATS_INTERVAL_MS = 1000;
const REPORT_INTERVAL_MS = 500;
const PING_INTERVAL_MS = 2000; // the server takes a client silent for 3 s as gone: pings say it is not
const SILENCE_MS = 6000; // nothing from the server for this long (it answers every ping): the connection is dead
const DISCONNECTED_MS = 4000; // ICE "disconnected" this long: give up on it and reconnect afresh
const FPS_WINDOW_MS = 1000;
const MAX_UNANSWERED_POSES = 4096;
const LATENCY_SAMPLES = 200;
const TIMING_SAMPLES = 30;
const MAX_BUFFERED_BYTES = 256 * 1024;
const RTP_KEPT = 512; // frames remembered by RTP timestamp until their frame message or picture comes

/** The p-th percentile (0-100) of numbers, nearest-rank; null for none. */
export function percentile(values, p) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

const mean = (values) => (values.length ? values.reduce((a, b) => a + b, 0) / values.length : null);

function pushBounded(list, value, limit) {
  list.push(value);
  if (list.length > limit) list.splice(0, list.length - limit);
}

function iceGathered(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      pc.removeEventListener("icecandidate", onCandidate);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    const onCandidate = (event) => !event.candidate && done();
    // Past the timeout, go on with the candidates found so far (a slow STUN server must not block us).
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
    pc.addEventListener("icecandidate", onCandidate);
  });
}

export class RenderStream extends EventTarget {
  /**
   * @param hub        the Hub (hubapi.js) whose relay carries the offer
   * @param sessionId  the session to connect to
   * @param video      the <video> element to show the stream in
   * @param settings   {width, height, fps} asked of the render server, and optional iceServers (STUN/TURN)
   * @param poseSource a function returning the current {position, orientation, fov}
   */
  constructor(hub, sessionId, video, settings, poseSource) {
    super();
    this.hub = hub;
    this.sessionId = sessionId;
    this.video = video;
    this.settings = settings;
    this.poseSource = poseSource;
    this.fps = settings.fps;
    this.pc = null;
    this.channel = null;
    this.closed = false;
    this.abort = new AbortController();
    this.timers = [];
    this.hello = null;
    // poses
    this.nextPoseId = 1;
    this.lastPoseAt = -Infinity;
    this.poseDirty = false;
    this.poseTimer = null;
    this.heardAt = 0; // performance.now() of the server's last message
    this.disconnectedTimer = null;
    this.unanswered = new Map(); // pose id -> performance.now() when sent, in sending order
    // Which pose each video frame shows, by its RTP timestamp: from the server's frame messages, and frames
    // presented before their message came (rtp -> presentation time).
    this.rtpPoses = new Map();
    this.unmatched = new Map();
    this.posesSent = 0;
    // figures
    this.frameTimes = [];
    this.lastPresented = -1;
    this.firstFrame = false;
    this.latencies = [];
    this.renderMs = [];
    this.encodeMs = [];
    this.lastFrameId = null;
    this.rttMs = null;
    this.level = null; // the level of detail of the last frame reported (0: full detail)
    this.levels = null; // primitives per level of detail of the model loaded, full detail first
    this.rtp = { codec: null, width: 0, height: 0, bitrateKbps: null, framesDecoded: 0, framesDropped: 0 };
    this.lastBytes = null;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  state(name, text) {
    this.emit("state", { state: name, text });
  }

  /** Offer, relay, answer, and wait for the data channel; throws a readable Error on failure. */
  async open() {
    this.state("connecting", "Preparing the connection…");
    const pc = new RTCPeerConnection({ iceServers: this.settings.iceServers || [], bundlePolicy: "max-bundle" });
    this.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    const channel = pc.createDataChannel(CHANNEL_LABEL, { ordered: true });
    this.channel = channel;
    pc.addEventListener("track", (event) => {
      // No playout delay: show each frame as soon as it is decoded (a remote view follows the camera, not a clock).
      if ("jitterBufferTarget" in event.receiver) event.receiver.jitterBufferTarget = 0;
      if ("playoutDelayHint" in event.receiver) event.receiver.playoutDelayHint = 0;
      this.video.srcObject = event.streams[0] || new MediaStream([event.track]);
      this.video.play().catch(() => {}); // muted autoplay; a refusal only delays the first frame
    });
    pc.addEventListener("connectionstatechange", () => this.onConnectionState());
    channel.addEventListener("message", (event) => this.onMessage(event.data));
    channel.addEventListener("close", () => this.close("The render server closed the connection."));

    await pc.setLocalDescription(await pc.createOffer());
    this.state("connecting", "Finding network paths…");
    await iceGathered(pc, ICE_GATHER_TIMEOUT_MS);
    this.throwIfClosed();
    const sdp = pc.localDescription.sdp;
    if (!/^a=candidate:/m.test(sdp)) {
      throw new Error("This browser found no network address for the video connection.");
    }
    this.state("connecting", "Asking the render server for a stream…");
    const { width, height, fps, clientInstanceId } = this.settings;
    const answer = await this.hub.offer(
      this.sessionId,
      { type: "offer", sdp, width, height, fps, clientInstanceId },
      this.abort.signal,
    );
    this.throwIfClosed();
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    this.state("connecting", "Connecting video…");
    await this.channelOpen(channel);
    this.throwIfClosed();
    this.watchFrames();
    this.timers.push(setInterval(() => this.readStats(), STATS_INTERVAL_MS));
    this.timers.push(setInterval(() => this.emit("stats", this.figures()), REPORT_INTERVAL_MS));
    this.heardAt = performance.now();
    this.timers.push(setInterval(() => this.keepAlive(), PING_INTERVAL_MS));
    this.state("connected", "Connected. Waiting for the first frame…");
    this.requestPose(); // the server renders only on a pose: this is the first picture
  }

  throwIfClosed() {
    if (this.closed) throw new Error(this.closeReason || "The connection was closed.");
  }

  channelOpen(channel) {
    if (channel.readyState === "open") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error("The video connection did not open. A firewall may be blocking it.")),
        OPEN_TIMEOUT_MS,
      );
      channel.addEventListener("open", () => (clearTimeout(timer), resolve()), { once: true });
      this.addEventListener(
        "closed",
        (event) => (clearTimeout(timer), reject(new Error(event.detail.reason || "The connection was closed."))),
        { once: true },
      );
    });
  }

  /** Ping (the server replaces a client it has not heard from for 3 s), and end a connection gone silent. */
  keepAlive() {
    if (performance.now() - this.heardAt > SILENCE_MS) {
      this.close("The render server stopped answering. The network may have failed.");
      return;
    }
    this.send({ type: "ping", t: performance.now() });
  }

  onConnectionState() {
    const state = this.pc ? this.pc.connectionState : "closed";
    clearTimeout(this.disconnectedTimer);
    if (state === "failed") {
      this.close("The video connection was lost. The render server may have stopped, or the network failed.");
    } else if (state === "disconnected") {
      this.state("reconnecting", "The video connection is interrupted; trying to recover…");
      const lost = () => this.close("The video connection was interrupted and did not recover.");
      this.disconnectedTimer = setTimeout(lost, DISCONNECTED_MS);
    } else if (state === "connected" && this.firstFrame) {
      this.state("streaming", "");
    }
  }

  onMessage(data) {
    this.heardAt = performance.now();
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (!message || typeof message.type !== "string") return;
    if (message.type === "hello") {
      this.hello = message;
      if (Number.isFinite(message.fps) && message.fps > 0) this.fps = message.fps;
      if (message.model && Array.isArray(message.model.levels)) this.levels = message.model.levels; // a kept scene
    } else if (message.type === "frame") {
      if (Number.isInteger(message.rtpTimestamp) && Number.isInteger(message.poseId)) {
        this.rememberFrame(message.rtpTimestamp, message.poseId);
      }
      if (Number.isInteger(message.level)) this.level = message.level;
      if (Number.isFinite(message.renderMs)) pushBounded(this.renderMs, message.renderMs, TIMING_SAMPLES);
      if (Number.isFinite(message.encodeMs)) pushBounded(this.encodeMs, message.encodeMs, TIMING_SAMPLES);
      return; // many per second: not passed on
    } else if (message.type === "pong") {
      if (Number.isFinite(message.t)) this.rttMs = performance.now() - message.t;
      return;
    } else if (message.type === "modelLoaded") {
      this.levels = Array.isArray(message.levels) ? message.levels : null;
      this.unanswered.clear(); // poses sent during the load waited for it: that wait is not the stream's latency
    }
    this.emit("message", message);
  }

  send(message) {
    if (!this.channel || this.channel.readyState !== "open") return false;
    this.channel.send(JSON.stringify(message));
    return true;
  }

  loadModel(source) {
    return this.send({ type: "loadModel", ...source });
  }

  /** Ask for a pose to be sent: at once if the last went out a frame interval ago, else at that moment. */
  requestPose() {
    this.poseDirty = true;
    if (this.poseTimer !== null || this.closed) return;
    const wait = this.lastPoseAt + 1000 / this.fps - performance.now();
    if (wait <= 0) this.flushPose();
    else this.poseTimer = setTimeout(() => ((this.poseTimer = null), this.flushPose()), wait);
  }

  flushPose() {
    if (!this.poseDirty || this.closed || !this.channel || this.channel.readyState !== "open") return;
    if (this.channel.bufferedAmount > MAX_BUFFERED_BYTES) {
      // The channel is backed up: sending more would only add latency; try again a frame later.
      this.poseTimer = setTimeout(() => ((this.poseTimer = null), this.flushPose()), 1000 / this.fps);
      return;
    }
    this.poseDirty = false;
    if (this.nextPoseId > MAX_POSE_ID) {
      this.nextPoseId = 1;
      this.unanswered.clear();
    }
    const id = this.nextPoseId++;
    const now = performance.now();
    this.lastPoseAt = now;
    this.unanswered.set(id, now);
    if (this.unanswered.size > MAX_UNANSWERED_POSES) this.unanswered.delete(this.unanswered.keys().next().value);
    this.channel.send(JSON.stringify({ type: "pose", id, ...this.poseSource() }));
    this.posesSent++;
  }

  watchFrames() {
    if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) {
      this.emit("message", {
        type: "error",
        code: "NoFrameCallback",
        message: "This browser cannot report video frames, so frame rate and latency are not shown.",
      });
      return;
    }
    const onFrame = (now, meta) => {
      if (this.closed) return;
      this.video.requestVideoFrameCallback(onFrame);
      if (meta.presentedFrames === this.lastPresented) return;
      this.lastPresented = meta.presentedFrames;
      const presented = Number.isFinite(meta.presentationTime) ? meta.presentationTime : now;
      const rtp = Number.isInteger(meta.rtpTimestamp) ? meta.rtpTimestamp : null;
      const id = rtp === null ? undefined : this.rtpPoses.get(rtp);
      // Delivered frame rate counts distinct new pictures: a frame showing the same pose as the one before is not.
      if (id === undefined || id !== this.lastFrameId) this.frameTimes.push(now);
      if (id !== undefined) this.matchPose(id, presented);
      else if (rtp !== null) this.remember(this.unmatched, rtp, presented);
      if (!this.firstFrame) {
        this.firstFrame = true;
        this.state("streaming", "");
      }
    };
    this.video.requestVideoFrameCallback(onFrame);
  }

  /** A frame message: the frame of RTP timestamp `rtp` shows pose `poseId` (it may have been presented already). */
  rememberFrame(rtp, poseId) {
    this.remember(this.rtpPoses, rtp, poseId);
    const presented = this.unmatched.get(rtp);
    if (presented === undefined) return;
    this.unmatched.delete(rtp);
    if (this.lastFrameId === null || poseId > this.lastFrameId) this.matchPose(poseId, presented);
  }

  remember(map, key, value) {
    map.set(key, value);
    if (map.size > RTP_KEPT) map.delete(map.keys().next().value);
  }

  /** The first frame showing pose `id` or a later one answers every pose up to `id`: their latencies. */
  matchPose(id, presentedAt) {
    this.lastFrameId = id;
    for (const [key, sentAt] of this.unanswered) {
      if (key > id) break;
      pushBounded(this.latencies, presentedAt - sentAt, LATENCY_SAMPLES);
      this.unanswered.delete(key);
    }
  }

  async readStats() {
    if (!this.pc || this.closed) return;
    let report;
    try {
      report = await this.pc.getStats();
    } catch {
      return;
    }
    for (const r of report.values()) {
      if (r.type !== "inbound-rtp" || r.kind !== "video") continue;
      const codec = r.codecId ? report.get(r.codecId) : null;
      this.rtp.codec = codec ? codec.mimeType.replace(/^video\//, "") : this.rtp.codec;
      this.rtp.width = r.frameWidth || this.rtp.width;
      this.rtp.height = r.frameHeight || this.rtp.height;
      this.rtp.framesDecoded = r.framesDecoded || 0;
      this.rtp.framesDropped = r.framesDropped || 0;
      if (this.lastBytes && r.timestamp > this.lastBytes.timestamp) {
        const bits = (r.bytesReceived - this.lastBytes.bytes) * 8;
        this.rtp.bitrateKbps = bits / (r.timestamp - this.lastBytes.timestamp);
      }
      this.lastBytes = { bytes: r.bytesReceived, timestamp: r.timestamp };
    }
  }

  /** Everything the stats overlay shows. */
  figures() {
    const now = performance.now();
    while (this.frameTimes.length && this.frameTimes[0] < now - FPS_WINDOW_MS) this.frameTimes.shift();
    return {
      fps: (this.frameTimes.length * 1000) / FPS_WINDOW_MS,
      idle: now - this.lastPoseAt > FPS_WINDOW_MS, // the server renders only when the camera moves
      latencyP50: percentile(this.latencies, 50),
      latencyP95: percentile(this.latencies, 95),
      latencySamples: this.latencies.length,
      codec: this.rtp.codec || (this.hello && this.hello.codec) || null,
      width: this.rtp.width || this.video.videoWidth,
      height: this.rtp.height || this.video.videoHeight,
      bitrateKbps: this.rtp.bitrateKbps,
      framesDecoded: this.rtp.framesDecoded,
      framesDropped: this.rtp.framesDropped,
      renderMs: mean(this.renderMs),
      encodeMs: mean(this.encodeMs),
      rttMs: this.rttMs,
      level: this.level,
      levels: this.levels,
      renderer: this.hello ? this.hello.renderer : null,
      lastPoseId: this.lastFrameId,
      posesSent: this.posesSent,
    };
  }

  /** End the connection; `reason` is shown to the user when the end was not asked for. */
  close(reason = null) {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    this.abort.abort();
    for (const timer of this.timers) clearInterval(timer);
    clearTimeout(this.poseTimer);
    clearTimeout(this.disconnectedTimer);
    if (this.channel) this.channel.close();
    if (this.pc) this.pc.close();
    this.video.srcObject = null;
    this.emit("closed", { reason });
  }
}

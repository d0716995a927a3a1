// bench/stream.py's client in Chromium: evaluated in the hub's /viewer/ page, it streams a session with the
// viewer's own RenderStream (stream.js) and orbits the sample as renderhub.connect does. It returns once the
// warm-up is over, leaving window.renderhubBench.measure() (the measured window) and .finish() (the still camera,
// then the figures) for the benchmark to call around its CPU readings.
// Latency is the viewer's: from sending a pose to the presentation time (requestVideoFrameCallback) of the first
// frame whose frame message names that pose, by RTP timestamp.
async ({
  accountId,
  accountKey,
  sessionId,
  width,
  height,
  fps,
  degreesPerSecond,
  warmupMs,
  durationMs,
  psnrSamples,
  stillViewMs,
  afterStillMs,
}) => {
  const { signIn, Hub } = await import("./hubapi.js");
  const { RenderStream } = await import("./stream.js");
  const { orbitPose } = await import("./orbit.js");
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  const hub = new Hub(accountId, await signIn(accountId, accountKey));
  const video = document.createElement("video");
  video.muted = true;
  video.playsInline = true;
  video.style.cssText = "position:fixed;left:0;top:0;width:640px;height:360px;z-index:1000";
  document.body.append(video);

  let pose = orbitPose([0, 0, 0], 3, 0, 20);
  let stream = null;
  const sentAt = new Map(); // pose id -> performance.now() when sent
  const poseSource = () => {
    sentAt.set(stream.nextPoseId - 1, performance.now()); // called as the pose with that id goes out
    return pose;
  };
  stream = new RenderStream(hub, sessionId, video, { width, height, fps }, poseSource);
  const messages = [];
  stream.addEventListener("message", (event) => messages.push(event.detail));
  await stream.open();
  stream.loadModel({ name: "sample" });
  const started = performance.now();
  while (!messages.some((m) => m.type === "modelLoaded" || m.type === "error")) {
    if (performance.now() - started > 60000) throw new Error("the sample did not load in 60 s");
    await sleep(20);
  }
  const loaded = messages.find((m) => m.type === "modelLoaded");
  if (!loaded) throw new Error(messages.find((m) => m.type === "error").message);
  const low = loaded.bounds.min;
  const high = loaded.bounds.max;
  const target = low.map((v, i) => (v + high[i]) / 2);
  const radius = Math.hypot(...high.map((v, i) => v - low[i])) / 2;
  const distance = (Math.max(radius, 1e-3) / Math.sin(Math.PI / 6)) * 1.1;

  // Every presented frame: its RTP timestamp and presentation time.
  const presented = [];
  const capture = document.createElement("canvas");
  const captureContext = capture.getContext("2d", { willReadFrequently: true });
  let measuring = false;
  const grabs = [];
  let grabEvery = 0;
  let lastShown = null;
  let framesSeen = 0;
  const onFrame = (now, meta) => {
    video.requestVideoFrameCallback(onFrame);
    const frame = { at: meta.presentationTime, rtp: meta.rtpTimestamp, pose: undefined };
    lastShown = frame;
    framesSeen++;
    if (measuring) {
      presented.push(frame);
      // The pose it shows, once its frame message is in (soon: the stream remembers only its latest 512 frames).
      setTimeout(() => (frame.pose = stream.rtpPoses.get(frame.rtp)), 500);
      if (grabEvery && presented.length % grabEvery === 0) grabs.push(grab(frame.rtp));
    }
  };
  video.requestVideoFrameCallback(onFrame);

  // Luma (BT.601, limited range, as the encoder converts) of what the video shows now, as Chromium converted it.
  const lumaOf = (source, w, h) => {
    capture.width = w;
    capture.height = h;
    captureContext.drawImage(source, 0, 0, w, h);
    const rgba = captureContext.getImageData(0, 0, w, h).data;
    const y = new Float32Array(w * h);
    for (let i = 0, p = 0; p < y.length; i += 4, p++) {
      y[p] = 16 + (65.481 * rgba[i] + 128.553 * rgba[i + 1] + 24.966 * rgba[i + 2]) / 255;
    }
    return y;
  };
  const psnr = (a, b) => {
    let sum = 0;
    for (let i = 0; i < a.length; i++) sum += (a[i] - b[i]) ** 2;
    const mse = sum / a.length;
    return mse === 0 ? 100 : 10 * Math.log10((255 * 255) / mse);
  };
  // The frame on screen now against the render server's lossless reference of its pose (fetched at once: the
  // server keeps the latest 16 poses' frames).
  async function grab(rtp) {
    const w = video.videoWidth;
    const h = video.videoHeight;
    const shown = lumaOf(video, w, h);
    let poseId;
    for (let tries = 0; (poseId = stream.rtpPoses.get(rtp)) === undefined && tries < 50; tries++) await sleep(10);
    if (poseId === undefined) return null;
    const url = `../render/${encodeURIComponent(accountId)}/${encodeURIComponent(sessionId)}/reference?poseId=${poseId}`;
    const response = await fetch(url, { headers: { Authorization: `Bearer ${hub.token}` }, cache: "no-store" });
    if (!response.ok) return null;
    const reference = await createImageBitmap(await response.blob());
    return psnr(shown, lumaOf(reference, w, h));
  }

  // Orbit at a fixed speed, a pose each 1/fps s on absolute deadlines; the stream throttles to its fps.
  const orbitStart = performance.now();
  let tick = 0;
  let orbiting = true;
  const orbit = async () => {
    while (orbiting) {
      pose = orbitPose(target, distance, ((performance.now() - orbitStart) / 1000) * degreesPerSecond, 20);
      stream.requestPose();
      tick++;
      await sleep(Math.max(0, orbitStart + (tick * 1000) / fps - performance.now()));
    }
  };
  const orbitDone = orbit();
  await sleep(warmupMs);
  let measured = null;
  window.renderhubBench = { measure: async () => (measured = await measure()), finish: async () => finish(measured) };

  async function measure() {
    const inbound = async () => {
      for (const r of (await stream.pc.getStats()).values()) {
        if (r.type === "inbound-rtp" && r.kind === "video") return r;
      }
      return null;
    };
    const before = await inbound();
    const posesBefore = stream.posesSent;
    grabEvery = Math.max(1, Math.floor(((durationMs / 1000) * fps) / psnrSamples));
    const from = performance.now();
    measuring = true;
    await sleep(durationMs);
    measuring = false;
    const seconds = (performance.now() - from) / 1000;
    const after = await inbound();
    const posesSent = stream.posesSent - posesBefore;
    return { from, seconds, posesSent, before, after };
  }

  async function finish({ from, seconds, posesSent, before, after }) {
    orbiting = false;
    await orbitDone;
    await sleep(600); // the last frames' poses are read half a second after they showed
    const moving = (await Promise.all(grabs)).filter((v) => v !== null);

    // Pose-to-frame as the viewer and renderhub.connect measure it: each pose sent is answered by the first frame
    // showing it or a later pose, the pose a frame shows read from its frame message (by RTP timestamp).
    const latencies = [];
    const waiting = [...sentAt.entries()].filter(([, at]) => at >= from).sort((a, b) => a[0] - b[0]);
    let next = 0;
    for (const frame of presented) {
      const id = frame.pose;
      if (id === undefined) continue;
      for (; next < waiting.length && waiting[next][0] <= id; next++) latencies.push(frame.at - waiting[next][1]);
    }

    // The camera stopped: the picture on screen half a second later, then frames for two more seconds.
    await sleep(stillViewMs);
    const still = lastShown ? await grab(lastShown.rtp) : null;
    const seenAtStill = framesSeen;
    await sleep(afterStillMs);
    const framesAfterStill = framesSeen - seenAtStill;
    stream.close();
    video.remove();
    const newFrames = new Set(presented.map((f) => f.pose).filter((id) => id !== undefined));
    return {
      seconds,
      latencies,
      presented: presented.length,
      newFrames: newFrames.size,
      posesSent,
      psnrMoving: moving,
      psnrStill: still,
      framesAfterStill,
      bitrateKbps: before && after ? ((after.bytesReceived - before.bytesReceived) * 8) / seconds / 1000 : null,
      framesDecoded: before && after ? after.framesDecoded - before.framesDecoded : null,
      keyFrames: before && after ? (after.keyFramesDecoded || 0) - (before.keyFramesDecoded || 0) : null,
      renderMs: stream.figures().renderMs,
      encodeMs: stream.figures().encodeMs,
      codec: stream.figures().codec,
      renderer: stream.hello ? stream.hello.renderer : null,
    };
  }
};

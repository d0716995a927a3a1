// The RenderHub viewer: sign in, manage sessions, and look at a session's rendered model in the browser.

import { Hub, HubError, signIn, tokenExpiry } from "./hubapi.js";
import { OrbitCamera } from "./orbit.js";
import { tagRect } from "./posetag.js";
import { RenderStream } from "./stream.js";

const $ = (id) => document.getElementById(id);
const STORE_KEY = "renderhub.viewer"; // sessionStorage: {accountId, token}; never the key
const ACCOUNT_KEY = "renderhub.viewer.account"; // localStorage: the last account id, to fill in the form
const POLL_MS = 1000;
const LIST_REFRESH_MS = 10000;
const SESSION_REFRESH_MS = 15000;
const LEASE_STEP_MINUTES = 30;
const MAX_LEASE_MINUTES = 1440;
const DEGREES_PER_PIXEL = 0.35;
const SPIN_DEGREES_PER_SECOND = 24;
const SESSION_ID = /^[A-Za-z0-9_-]{1,256}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const TERMINAL = new Set(["Stopped", "Expired", "Error"]);
const STAGE_NAMES = { download: "Downloading", parse: "Reading the model", upload: "Preparing to render" };

class Cancelled extends Error {}

let hub = null;
let current = null; // {id, session, stream, camera, loading}
let generation = 0; // bumped whenever the stage changes hands; older async work sees it and stops
const timers = { list: null, session: null, expiry: null, toast: null, help: null };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ------------------------------------------------------------------------------------------ messages

function toast(text, kind = "error") {
  $("toast-text").textContent = text;
  $("toast").className = kind === "error" ? "toast" : "toast notice";
  $("toast").hidden = false;
  clearTimeout(timers.toast);
  timers.toast = setTimeout(() => ($("toast").hidden = true), kind === "error" ? 15000 : 6000);
}

function fail(exc) {
  if (!exc || exc instanceof Cancelled || exc.name === "AbortError") return;
  if (exc instanceof HubError && exc.unauthorized) {
    signOut("Your sign-in has expired. Please sign in again.");
    return;
  }
  toast(exc.message || String(exc));
}

function stage({ title, text = "", spinner = false, error = false, action = null }) {
  $("stage-message").hidden = false;
  $("stage-message").classList.toggle("error", error);
  $("spinner").hidden = !spinner;
  $("stage-title").textContent = title;
  $("stage-text").textContent = text;
  const button = $("stage-action");
  button.hidden = !action;
  if (action) {
    button.textContent = action.label;
    button.onclick = action.run;
  }
}

function endedText(session) {
  if (session.status === "Error") {
    const reason = session.error && session.error.message ? session.error.message : "no reason was given";
    return `The session failed: ${reason}`;
  }
  if (session.status === "Expired") return `The session's lease of ${session.maxLeaseTimeMinutes} minutes ran out.`;
  return "This session was stopped.";
}

// ------------------------------------------------------------------------------------------- sign-in

function showSignIn(message = "") {
  $("app").hidden = true;
  $("who").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("account-id").value = $("account-id").value || localStorage.getItem(ACCOUNT_KEY) || "";
  $("account-key").value = "";
  ($("account-id").value ? $("account-key") : $("account-id")).focus();
}

async function onSignIn(event) {
  event.preventDefault();
  const accountId = $("account-id").value.trim().toLowerCase();
  const key = $("account-key").value.trim();
  if (!UUID.test(accountId)) {
    $("signin-error").textContent = "An account id looks like 8-4-4-4-12 hexadecimal digits, with dashes.";
    return;
  }
  if (!key) {
    $("signin-error").textContent = "Please enter the account key.";
    return;
  }
  $("signin-button").disabled = true;
  $("signin-button").textContent = "Signing in…";
  $("signin-error").textContent = "";
  try {
    const token = await signIn(accountId, key);
    sessionStorage.setItem(STORE_KEY, JSON.stringify({ accountId, token }));
    localStorage.setItem(ACCOUNT_KEY, accountId);
    startApp(accountId, token);
  } catch (exc) {
    $("signin-error").textContent = exc.message || String(exc);
  } finally {
    $("account-key").value = "";
    $("signin-button").disabled = false;
    $("signin-button").textContent = "Sign in";
  }
}

function startApp(accountId, token) {
  hub = new Hub(accountId, token);
  $("signin").hidden = true;
  $("app").hidden = false;
  $("who").hidden = false;
  $("who-account").textContent = accountId;
  $("new-id").value = newSessionId();
  clearView();
  refreshList();
  clearInterval(timers.list);
  timers.list = setInterval(() => document.visibilityState === "visible" && refreshList(true), LIST_REFRESH_MS);
  const expires = tokenExpiry(token) * 1000;
  clearTimeout(timers.expiry);
  if (expires) {
    const left = Math.min(expires - Date.now(), 2 ** 31 - 1);
    timers.expiry = setTimeout(() => signOut("Your sign-in has expired. Please sign in again."), left);
  }
}

function signOut(message = "") {
  clearView();
  for (const name of ["list", "expiry", "session"]) clearInterval(timers[name]);
  hub = null;
  sessionStorage.removeItem(STORE_KEY);
  showSignIn(message);
}

function restore() {
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
  } catch {
    saved = null;
  }
  if (saved && typeof saved.token === "string" && tokenExpiry(saved.token) * 1000 > Date.now() + 60000) {
    startApp(saved.accountId, saved.token);
  } else {
    sessionStorage.removeItem(STORE_KEY);
    showSignIn();
  }
}

// -------------------------------------------------------------------------------------------- sessions

function newSessionId() {
  const bytes = crypto.getRandomValues(new Uint8Array(3));
  return "viewer-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function leaseText(session) {
  if (session.status === "Starting") return `${session.size} · starting · lease ${session.maxLeaseTimeMinutes} min`;
  return `${session.size} · ${session.elapsedTimeMinutes} of ${session.maxLeaseTimeMinutes} min used`;
}

async function refreshList(quiet = false) {
  if (!hub) return;
  try {
    renderList(await hub.listSessions());
  } catch (exc) {
    if (!quiet || (exc instanceof HubError && exc.unauthorized)) fail(exc);
  }
}

function renderList(sessions) {
  sessions.sort((a, b) => String(b.creationTime).localeCompare(String(a.creationTime)));
  const items = sessions.map((session) => {
    const li = document.createElement("li");
    li.dataset.sessionId = session.id;
    li.classList.toggle("current", !!current && current.id === session.id);
    const name = document.createElement("span");
    name.className = "sid";
    const code = document.createElement("code");
    code.textContent = session.id;
    const badge = document.createElement("span");
    badge.className = `badge ${session.status}`;
    badge.textContent = session.status;
    name.append(code, badge);
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = leaseText(session);
    const actions = document.createElement("span");
    actions.className = "actions";
    if (!current || current.id !== session.id) {
      const open = document.createElement("button");
      open.type = "button";
      open.className = "primary";
      open.textContent = session.status === "Ready" ? "Connect" : "Watch";
      open.addEventListener("click", () => openSession(session.id));
      actions.append(open);
    }
    const stop = document.createElement("button");
    stop.type = "button";
    stop.className = "danger";
    stop.textContent = "Stop";
    stop.title = `Stop session ${session.id}`;
    stop.addEventListener("click", () => stopSession(session.id, stop));
    actions.append(stop);
    li.append(name, actions, meta);
    return li;
  });
  $("session-list").replaceChildren(...items);
  $("sessions-empty").hidden = sessions.length > 0;
}

async function onCreate(event) {
  event.preventDefault();
  const id = $("new-id").value.trim();
  const size = $("new-size").value;
  const lease = Number($("new-lease").value);
  if (!SESSION_ID.test(id)) {
    toast("A session id is 1 to 256 letters, digits, '-' or '_'.");
    return;
  }
  if (!Number.isInteger(lease) || lease < 1 || lease > MAX_LEASE_MINUTES) {
    toast(`The lease is a whole number of minutes, from 1 to ${MAX_LEASE_MINUTES}.`);
    return;
  }
  const button = $("create-button");
  button.disabled = true;
  button.textContent = "Creating…";
  try {
    await hub.createSession(id, size, lease);
    $("new-id").value = newSessionId();
    openSession(id);
    refreshList(true);
  } catch (exc) {
    fail(exc);
  } finally {
    button.disabled = false;
    button.textContent = "Create and connect";
  }
}

async function stopSession(id, button) {
  if (current && current.id === id) return stopCurrent();
  button.disabled = true;
  try {
    await hub.stopSession(id);
    toast(`Session ${id} stopped.`, "notice");
  } catch (exc) {
    fail(exc);
  }
  refreshList(true);
}

// ------------------------------------------------------------------------------------ the session view

/** The controls that only make sense while a stream is open. */
function showStreamControls(show) {
  for (const id of ["model-bar", "view-tools", "help", "disconnect"]) $(id).hidden = !show;
  $("stats").hidden = !show || $("toggle-stats").getAttribute("aria-pressed") !== "true";
  if (!show) {
    $("tag-cover").hidden = true;
    stopSpin();
  }
}

function clearView() {
  generation++;
  if (current && current.stream) current.stream.close();
  current = null;
  clearInterval(timers.session);
  showStreamControls(false);
  $("session-bar").hidden = true;
  stage({ title: "Pick a session", text: "Connect to a running session, or create a new one." });
}

function showSession(session) {
  if (!current) return;
  const changed = !current.session || current.session.status !== session.status;
  current.session = session;
  if (changed) refreshList(true); // keep the list's badge in step with the stage
  $("session-bar").hidden = false;
  $("current-id").textContent = session.id;
  $("current-status").className = `badge ${session.status}`;
  $("current-status").textContent = session.status;
  $("current-detail").textContent = TERMINAL.has(session.status) ? "" : leaseText(session);
  const live = !TERMINAL.has(session.status);
  $("extend").hidden = !live;
  $("stop-session").hidden = !live;
  $("disconnect").hidden = !(current.stream && !current.stream.closed);
}

/** Show a session: wait until it is Ready, then connect to it. */
async function openSession(id) {
  clearView();
  const mine = generation;
  current = { id, session: null, stream: null, camera: null, loading: false };
  $("current-id").textContent = id;
  $("current-status").textContent = "";
  $("current-detail").textContent = "";
  $("session-bar").hidden = false;
  markCurrentInList();
  stage({ title: "Looking up the session…", spinner: true });
  try {
    await waitReady(id, mine);
    await connect(mine);
  } catch (exc) {
    if (mine !== generation || exc instanceof Cancelled) return;
    if (exc instanceof HubError && exc.unauthorized) return fail(exc);
    stage({
      title: "Could not show this session",
      text: exc.message || String(exc),
      error: true,
      action: current && !TERMINAL.has(current.session?.status) ? { label: "Try again", run: retry } : null,
    });
  }
}

function retry() {
  if (current) openSession(current.id);
}

function markCurrentInList() {
  for (const li of $("session-list").children) {
    li.classList.toggle("current", !!current && li.dataset.sessionId === current.id);
  }
}

async function waitReady(id, mine) {
  const started = performance.now();
  for (;;) {
    const session = await hub.getSession(id);
    if (mine !== generation) throw new Cancelled();
    showSession(session);
    if (session.status === "Ready") return session;
    if (TERMINAL.has(session.status)) throw new Error(endedText(session));
    const seconds = Math.round((performance.now() - started) / 1000);
    stage({
      title: "Starting the render server…",
      text: `Status: ${session.status} · ${seconds} s. This usually takes a few seconds.`,
      spinner: true,
    });
    await sleep(POLL_MS);
    if (mine !== generation) throw new Cancelled();
  }
}

function streamSettings() {
  const [width, height] = $("stream-size").value.split("x").map(Number);
  return { width, height, fps: Number($("stream-fps").value) };
}

async function connect(mine) {
  const camera = new OrbitCamera();
  const settings = { ...streamSettings(), iceServers: await hub.iceServers() };
  if (mine !== generation) return;
  const stream = new RenderStream(hub, current.id, $("video"), settings, () => camera.pose());
  Object.assign(current, { stream, camera, loading: false, pickRef: null });
  setStat("stat-pick", "–");
  stream.addEventListener("state", (event) => mine === generation && onStreamState(event.detail));
  stream.addEventListener("message", (event) => mine === generation && onServerMessage(event.detail));
  stream.addEventListener("stats", (event) => mine === generation && showStats(event.detail));
  stream.addEventListener("closed", (event) => mine === generation && onStreamClosed(stream, event.detail.reason));
  try {
    await stream.open();
  } catch (exc) {
    const byUs = stream.closed && !stream.closeReason;
    // The failure is reported once, by openSession, not also as a lost connection.
    if (current && current.stream === stream) current.stream = null;
    stream.close();
    if (byUs) throw new Cancelled();
    throw exc;
  }
  if (mine !== generation) throw new Cancelled();
  showStreamControls(true);
  $("load-sample").disabled = $("load-url").disabled = false;
  $("model-info").textContent = "No model loaded yet.";
  $("model-info").classList.remove("error-text");
  $("model-progress").hidden = true;
  $("help").classList.remove("faded");
  clearTimeout(timers.help);
  timers.help = setTimeout(() => $("help").classList.add("faded"), 8000);
  clearInterval(timers.session);
  timers.session = setInterval(() => refreshSession(mine), SESSION_REFRESH_MS);
  $("viewport").focus();
}

function onStreamState({ state, text }) {
  if (state === "streaming") $("stage-message").hidden = true;
  else if (state === "connecting" || state === "connected") {
    if (!current.stream || !current.stream.firstFrame) stage({ title: text, spinner: true });
  } else if (state === "reconnecting") toast(text, "notice");
}

async function onStreamClosed(stream, reason) {
  if (!current || stream !== current.stream || reason === null) return;
  showStreamControls(false);
  const mine = generation;
  let session = null;
  try {
    session = await hub.getSession(current.id);
  } catch {
    session = null;
  }
  if (mine !== generation) return;
  if (session) showSession(session);
  if (session && TERMINAL.has(session.status)) {
    stage({ title: "The session has ended", text: endedText(session) });
    refreshList(true);
  } else {
    stage({ title: "Disconnected", text: reason, error: true, action: { label: "Reconnect", run: retry } });
  }
}

async function refreshSession(mine) {
  if (!current || mine !== generation) return;
  try {
    const session = await hub.getSession(current.id);
    if (mine !== generation) return;
    showSession(session);
    if (TERMINAL.has(session.status) && current.stream) current.stream.close(endedText(session));
  } catch (exc) {
    if (exc instanceof HubError && exc.unauthorized) fail(exc);
  }
}

async function stopCurrent() {
  if (!current) return;
  const mine = generation;
  const { id } = current;
  const button = $("stop-session");
  button.disabled = true;
  button.textContent = "Stopping…";
  try {
    await hub.stopSession(id);
    if (mine !== generation) return;
    if (current.stream) current.stream.close();
    showStreamControls(false);
    showSession({ ...(current.session || { id }), status: "Stopped" });
    stage({ title: "Session stopped", text: `Session ${id} is stopped; its render server is shutting down.` });
  } catch (exc) {
    fail(exc);
  } finally {
    button.disabled = false;
    button.textContent = "Stop session";
    refreshList(true);
  }
}

async function extendLease() {
  if (!current || !current.session) return;
  const lease = current.session.maxLeaseTimeMinutes;
  if (lease >= MAX_LEASE_MINUTES) {
    toast("The lease is already at its maximum of 24 hours.", "notice");
    return;
  }
  try {
    const session = await hub.extendSession(current.id, Math.min(MAX_LEASE_MINUTES, lease + LEASE_STEP_MINUTES));
    showSession(session);
    toast(`The lease is now ${session.maxLeaseTimeMinutes} minutes.`, "notice");
  } catch (exc) {
    fail(exc);
  }
}

function disconnect() {
  if (!current || !current.stream) return;
  current.stream.close();
  showStreamControls(false);
  stage({
    title: "Disconnected",
    text: "The session keeps running (and its lease keeps counting) until it is stopped.",
    action: { label: "Reconnect", run: retry },
  });
}

// ----------------------------------------------------------------------------------------------- models

let loadCounter = 0;

function loadModel(source, label) {
  if (!current || !current.stream) return;
  const ref = `load-${++loadCounter}`;
  if (!current.stream.loadModel({ ...source, ref })) {
    toast("The connection is not open; reconnect and try again.");
    return;
  }
  current.loading = ref;
  $("load-sample").disabled = $("load-url").disabled = true;
  $("model-progress").hidden = false;
  $("model-progress").value = 0;
  $("model-info").classList.remove("error-text");
  $("model-info").textContent = `Loading ${label}…`;
}

function onLoadUrl(event) {
  event.preventDefault();
  const text = $("model-url").value.trim();
  let url;
  try {
    url = new URL(text);
  } catch {
    url = null;
  }
  if (!url || !["http:", "https:"].includes(url.protocol)) {
    toast("Paste a link to a .glb or .gltf file that starts with https:// (or http://).");
    return;
  }
  let name = url.pathname.split("/").pop() || url.host;
  try {
    name = decodeURIComponent(name);
  } catch {
    // keep it as written
  }
  loadModel({ url: url.href }, name);
}

function loadDone() {
  current.loading = false;
  $("load-sample").disabled = $("load-url").disabled = false;
  $("model-progress").hidden = true;
}

/** A render server's error message as a sentence for people. */
function serverErrorText({ code = "", message = "" }) {
  const sentence = (text) => {
    const trimmed = String(text).trim();
    if (!trimmed) return "";
    const capital = trimmed[0].toUpperCase() + trimmed.slice(1);
    return /[.!?]$/.test(capital) ? capital : `${capital}.`;
  };
  switch (code) {
    case "Busy":
      return "A model is still loading; wait until it has finished.";
    case "InvalidPose":
      return `The render server refused a camera position: ${sentence(message)}`;
    case "BadMessage":
    case "UnknownType":
    case "MessageTooLarge":
      return `The render server did not understand the viewer: ${sentence(message)}`;
    case "InternalError":
      return `The render server had a problem: ${sentence(message) || "no details."}`;
    default:
      return sentence(message) || `The render server reported an error (${code || "no code"}).`;
  }
}

function onServerMessage(message) {
  if (!current) return;
  if (message.type === "progress") {
    const fraction = Number(message.fraction) || 0;
    $("model-progress").hidden = false;
    $("model-progress").value = fraction;
    const what = STAGE_NAMES[message.stage] || String(message.stage || "Loading");
    $("model-info").textContent = `${what}… ${Math.round(fraction * 100)}%`;
  } else if (message.type === "modelLoaded") {
    loadDone();
    const seconds = (Number(message.loadMs) || 0) / 1000;
    const triangles = Number(message.triangles || 0).toLocaleString("en-US");
    const draws = Number(message.drawCalls || 0).toLocaleString("en-US");
    $("model-info").textContent = `${triangles} triangles · ${draws} draw calls · loaded in ${seconds.toFixed(2)} s`;
    current.camera.frame(message.bounds);
    poseChanged();
  } else if (message.type === "pick") {
    if (message.ref !== current.pickRef) return; // an older click's answer
    if (!message.hit || !Array.isArray(message.position)) {
      setStat("stat-pick", "background", "none");
    } else {
      const where = message.position.map((c) => Number(c).toFixed(2)).join(", ");
      setStat("stat-pick", `${where} m`, message.position.join(","));
    }
  } else if (message.type === "error") {
    const text = serverErrorText(message);
    const aboutModel = (message.ref && message.ref === current.loading) || (!message.ref && current.loading);
    if (aboutModel) {
      loadDone();
      $("model-info").textContent = `Could not load the model: ${text}`;
      $("model-info").classList.add("error-text");
    } else {
      toast(text);
    }
  }
}

// ---------------------------------------------------------------------------------------------- stats

function setStat(id, text, value = null) {
  const element = $(id);
  element.textContent = text;
  element.dataset.value = value === null ? "" : String(value);
}

const ms = (value, digits = 0) => (value === null || value === undefined ? "–" : `${value.toFixed(digits)} ms`);

function showStats(f) {
  setStat("stat-fps", f.fps === 0 && f.idle ? "0 · idle" : f.fps.toFixed(0), f.fps);
  setStat("stat-p50", ms(f.latencyP50), f.latencyP50);
  setStat("stat-p95", ms(f.latencyP95), f.latencyP95);
  setStat("stat-codec", f.codec || "–", f.codec);
  const size = f.width && f.height;
  setStat("stat-resolution", size ? `${f.width} × ${f.height}` : "–", size ? `${f.width}x${f.height}` : null);
  const kbps = f.bitrateKbps;
  const rate = kbps === null ? "–" : kbps >= 1000 ? `${(kbps / 1000).toFixed(1)} Mbit/s` : `${kbps.toFixed(0)} kbit/s`;
  setStat("stat-bitrate", rate, kbps);
  setStat("stat-render", ms(f.renderMs, 1), f.renderMs);
  setStat("stat-encode", ms(f.encodeMs, 1), f.encodeMs);
  setStat("stat-rtt", ms(f.rttMs, 1), f.rttMs);
  const dropped = f.framesDropped ? ` (${f.framesDropped} dropped)` : "";
  setStat("stat-decoded", `${f.framesDecoded}${dropped}`, f.framesDecoded);
  setStat("stat-renderer", f.renderer || "–", f.renderer);
  $("tag-cover").textContent = f.lastPoseId === null ? "" : `pose ${f.lastPoseId}`;
  if (f.tagBackground) $("tag-cover").style.backgroundColor = `rgb(${f.tagBackground.join(",")})`;
  placeTagCover();
}

/** Put the tag cover over the pose tag as the letterboxed video shows it. */
function placeTagCover() {
  const video = $("video");
  const cover = $("tag-cover");
  const rect = video.videoWidth && video.videoHeight ? tagRect(video.videoWidth, video.videoHeight) : null;
  if (!rect || !streaming()) {
    cover.hidden = true;
    return;
  }
  const box = $("viewport").getBoundingClientRect();
  const scale = Math.min(box.width / video.videoWidth, box.height / video.videoHeight);
  const left = (box.width - video.videoWidth * scale) / 2;
  const top = (box.height - video.videoHeight * scale) / 2;
  // A pixel of margin all round: scaling blurs the tag's edges into its neighbours.
  cover.style.left = `${Math.floor(left + rect.x * scale) - 1}px`;
  cover.style.top = `${Math.floor(top + rect.y * scale) - 1}px`;
  cover.style.width = `${Math.ceil(rect.width * scale) + 2}px`;
  cover.style.height = `${Math.ceil(rect.height * scale) + 2}px`;
  cover.hidden = false;
}

// ---------------------------------------------------------------------------------------------- input

const pointers = new Map(); // pointer id -> {x, y}
const CLICK_SLOP_PX = 4; // a press that moves less than this is a click (a pick), not a drag
let press = null; // {id, x, y} of a lone press that may still become a click
let picks = 0;
let dragMode = "orbit";
let spinning = null;

function streaming() {
  return !!(current && current.stream && current.stream.channel && current.stream.channel.readyState === "open");
}

function poseChanged() {
  if (streaming()) current.stream.requestPose();
}

/** The height in CSS pixels of the picture inside the viewport (the video is letterboxed). */
function pictureHeight() {
  const rect = $("viewport").getBoundingClientRect();
  const { width, height } = current && current.stream ? current.stream.settings : { width: 16, height: 9 };
  return Math.min(rect.height, (rect.width * height) / width);
}

function onPointerDown(event) {
  // The view's own buttons sit inside the viewport: a capture here would steal their clicks.
  if (!streaming() || event.target.closest("button")) return;
  event.preventDefault();
  $("viewport").focus({ preventScroll: true });
  $("viewport").setPointerCapture(event.pointerId);
  pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
  if (pointers.size === 1) dragMode = event.button === 2 || event.button === 1 || event.shiftKey ? "pan" : "orbit";
  const lone = pointers.size === 1 && event.button === 0;
  press = lone ? { id: event.pointerId, x: event.clientX, y: event.clientY } : null;
  stopSpin();
  $("viewport").classList.toggle("dragging", dragMode === "orbit");
  $("viewport").classList.toggle("panning", dragMode === "pan");
}

function onPointerMove(event) {
  const previous = pointers.get(event.pointerId);
  if (!previous || !streaming()) return;
  if (press && Math.hypot(event.clientX - press.x, event.clientY - press.y) < CLICK_SLOP_PX) return;
  press = null;
  const camera = current.camera;
  if (pointers.size === 1) {
    const dx = event.clientX - previous.x;
    const dy = event.clientY - previous.y;
    if (dragMode === "pan" || event.shiftKey) camera.pan(dx, dy, pictureHeight());
    else camera.orbit(-dx * DEGREES_PER_PIXEL, dy * DEGREES_PER_PIXEL);
  } else if (pointers.size === 2) {
    const [a, b] = [...pointers.values()];
    const before = { mid: [(a.x + b.x) / 2, (a.y + b.y) / 2], distance: Math.hypot(a.x - b.x, a.y - b.y) };
    pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    const [c, d] = [...pointers.values()];
    const after = { mid: [(c.x + d.x) / 2, (c.y + d.y) / 2], distance: Math.hypot(c.x - d.x, c.y - d.y) };
    if (before.distance > 0 && after.distance > 0) camera.zoom(before.distance / after.distance);
    camera.pan(after.mid[0] - before.mid[0], after.mid[1] - before.mid[1], pictureHeight());
  }
  pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
  poseChanged();
}

/** Ask the render server what the clicked point of the picture shows; the answer fills "picked" in the stats. */
function pickAt(clientX, clientY) {
  const video = $("video");
  if (!streaming() || !video.videoWidth || !video.videoHeight) return;
  const box = $("viewport").getBoundingClientRect();
  const scale = Math.min(box.width / video.videoWidth, box.height / video.videoHeight);
  const x = (clientX - box.left - (box.width - video.videoWidth * scale) / 2) / (video.videoWidth * scale);
  const y = (clientY - box.top - (box.height - video.videoHeight * scale) / 2) / (video.videoHeight * scale);
  if (!(x >= 0 && x <= 1 && y >= 0 && y <= 1)) return; // on the letterbox bars
  current.pickRef = `pick-${++picks}`;
  current.stream.send({ type: "pointer", x, y, buttons: 1, kind: "down", ref: current.pickRef });
}

function onPointerUp(event) {
  if (press && press.id === event.pointerId && event.type === "pointerup") pickAt(press.x, press.y);
  press = null;
  pointers.delete(event.pointerId);
  if (pointers.size === 0) $("viewport").classList.remove("dragging", "panning");
  else dragMode = "orbit"; // one finger left after a pinch orbits again
}

function onWheel(event) {
  if (!streaming()) return;
  event.preventDefault();
  const scale = event.deltaMode === 1 ? 16 : event.deltaMode === 2 ? 400 : 1;
  current.camera.zoom(Math.exp(event.deltaY * scale * 0.0015));
  poseChanged();
}

function onKey(event) {
  if (!streaming() || event.target.closest("input, select, textarea")) return;
  const camera = current.camera;
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
    " ": () => toggleSpin(),
    s: () => toggleStats(),
  };
  const action = actions[event.key];
  if (!action || event.ctrlKey || event.metaKey || event.altKey) return;
  event.preventDefault();
  action();
  poseChanged();
}

function toggleSpin() {
  if (spinning !== null) return stopSpin();
  let last = performance.now();
  const step = (now) => {
    if (spinning === null || !streaming()) return stopSpin();
    current.camera.orbit(((now - last) / 1000) * SPIN_DEGREES_PER_SECOND, 0);
    last = now;
    poseChanged();
    spinning = requestAnimationFrame(step);
  };
  spinning = requestAnimationFrame(step);
  $("spin").setAttribute("aria-pressed", "true");
}

function stopSpin() {
  if (spinning !== null) cancelAnimationFrame(spinning);
  spinning = null;
  $("spin").setAttribute("aria-pressed", "false");
}

function toggleStats() {
  const show = $("toggle-stats").getAttribute("aria-pressed") !== "true";
  $("toggle-stats").setAttribute("aria-pressed", String(show));
  $("stats").hidden = !show;
}

// ------------------------------------------------------------------------------------------------ wiring

function wire() {
  $("signin-form").addEventListener("submit", onSignIn);
  $("sign-out").addEventListener("click", () => signOut());
  $("toast-close").addEventListener("click", () => ($("toast").hidden = true));
  $("refresh").addEventListener("click", () => refreshList());
  $("create-form").addEventListener("submit", onCreate);
  $("extend").addEventListener("click", extendLease);
  $("disconnect").addEventListener("click", disconnect);
  $("stop-session").addEventListener("click", stopCurrent);
  $("load-sample").addEventListener("click", () => loadModel({ name: "sample" }, "the sample model"));
  $("url-form").addEventListener("submit", onLoadUrl);
  $("home").addEventListener("click", () => (current.camera.home(), poseChanged()));
  $("spin").addEventListener("click", toggleSpin);
  $("toggle-stats").addEventListener("click", toggleStats);
  const viewport = $("viewport");
  viewport.addEventListener("pointerdown", onPointerDown);
  viewport.addEventListener("pointermove", onPointerMove);
  viewport.addEventListener("pointerup", onPointerUp);
  viewport.addEventListener("pointercancel", onPointerUp);
  viewport.addEventListener("lostpointercapture", onPointerUp);
  viewport.addEventListener("wheel", onWheel, { passive: false });
  viewport.addEventListener("contextmenu", (event) => event.preventDefault());
  viewport.addEventListener("dblclick", (event) => {
    if (streaming() && !event.target.closest("button")) (current.camera.home(), poseChanged());
  });
  viewport.addEventListener("keydown", onKey);
  new ResizeObserver(placeTagCover).observe(viewport);
  $("video").addEventListener("resize", placeTagCover);
  // Leaving the page ends the connection at once, so the server is free for the next client.
  window.addEventListener("pagehide", () => current && current.stream && current.stream.close());
}

wire();
restore();

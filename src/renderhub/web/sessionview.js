// The session on the stage: wait until it is Ready, stream it, and the session bar's extend, disconnect and stop.

import { HubError } from "./hubapi.js";
import { Cancelled } from "./messages.js";
import { OrbitCamera } from "./orbit.js";
import { confirmStop, leaseText, MAX_LEASE_MINUTES } from "./sessionlist.js";
import { RenderStream } from "./stream.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;
const SESSION_REFRESH_MS = 15000;
const LEASE_STEP_MINUTES = 30;
const TERMINAL = new Set(["Stopped", "Expired", "Error"]);
const RECONNECT_DELAYS_MS = [500, 1000, 2000, 4000, 8000]; // after a lost connection, then the user decides
const INSTANCE_KEY = "renderhub.clientInstanceId";
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function endedText(session) {
  if (session.status === "Error") {
    const reason = session.error && session.error.message ? session.error.message : "no reason was given";
    return `The session failed: ${reason}`;
  }
  if (session.status === "Expired") return `The session's lease of ${session.maxLeaseTimeMinutes} minutes ran out.`;
  return "This session was stopped.";
}

/** This tab's id for itself, kept across reloads (sessionStorage is per tab): its new connection replaces its
 * old one on the render server at once, where another tab's would be refused. */
function clientInstanceId() {
  let id = sessionStorage.getItem(INSTANCE_KEY);
  if (!id) {
    id = crypto.randomUUID();
    sessionStorage.setItem(INSTANCE_KEY, id);
  }
  return id;
}

function streamSettings() {
  const [width, height] = $("stream-size").value.split("x").map(Number);
  return { width, height, fps: Number($("stream-fps").value), clientInstanceId: clientInstanceId() };
}

export class SessionView {
  /**
   * @param state    the ViewerState, whose `current` this module alone replaces
   * @param messages the Messages: the stage message, toasts, failures
   * @param parts    {list, stats, input, models, converted}: the parts that show what happens on the stage
   */
  constructor(state, messages, { list, stats, input, models, converted }) {
    this.state = state;
    this.messages = messages;
    this.list = list;
    this.stats = stats;
    this.input = input;
    this.models = models;
    this.converted = converted;
    // Bumped whenever the stage changes hands; async work keeps the number it started under and, once it
    // differs, stops (it belongs to a session no longer shown).
    this.generation = 0;
    this.refreshTimer = null; // re-reads the shown session, for its lease and status
    this.helpTimer = null; // fades the help line once the user has had time to read it
  }

  /** The controls that only make sense while a stream is open. */
  showStreamControls(show) {
    for (const id of ["model-bar", "view-tools", "help", "disconnect"]) $(id).hidden = !show;
    this.stats.setStreaming(show);
    this.converted.setStreaming(show);
    if (!show) this.input.stopSpin();
  }

  /** An empty stage: its stream closed, and whatever was under way for it told to stop. */
  clear() {
    this.generation++;
    const { current } = this.state;
    if (current && current.stream) current.stream.close();
    this.state.current = null;
    clearInterval(this.refreshTimer);
    this.showStreamControls(false);
    for (const topic of ["connection", "session", "model"]) this.messages.dismissToast(topic);
    $("session-bar").hidden = true;
    this.messages.stage({ title: "Pick a session", text: "Connect to a running session, or create a new one." });
  }

  /** Show what the hub says of the session on the stage. */
  show(session) {
    const { current } = this.state;
    if (!current) return;
    const changed = !current.session || current.session.status !== session.status;
    current.session = session;
    if (changed) this.list.refresh(true); // keep the list's badge in step with the stage
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

  /** Put a session of a region (the selected one unless told) on the stage: wait until it is Ready, then connect. */
  async open(id, region = this.state.region) {
    this.clear();
    const mine = this.generation;
    this.state.current = { id, region, session: null, stream: null, camera: null, loading: false, pickRef: null };
    $("current-id").textContent = id;
    $("current-region").textContent = region.name;
    $("current-status").textContent = "";
    $("current-detail").textContent = "";
    $("session-bar").hidden = false;
    this.list.markCurrent();
    this.messages.stage({ title: "Looking up the session…", spinner: true });
    try {
      await this.waitReady(id, mine);
      await this.connect(mine);
    } catch (exc) {
      if (mine !== this.generation || exc instanceof Cancelled) return;
      if (exc instanceof HubError && exc.unauthorized) return this.messages.fail(exc);
      const { current } = this.state;
      const retryable = current && !TERMINAL.has(current.session?.status);
      this.messages.stage({
        title: "Could not show this session",
        text: exc.message || String(exc),
        error: true,
        action: retryable ? { label: "Try again", run: () => this.retry() } : null,
      });
    }
  }

  retry() {
    const { current } = this.state;
    if (current) this.open(current.id, current.region);
  }

  async waitReady(id, mine) {
    const started = performance.now();
    for (;;) {
      const session = await this.state.current.region.hub.getSession(id);
      if (mine !== this.generation) throw new Cancelled();
      this.show(session);
      if (session.status === "Ready") return session;
      if (TERMINAL.has(session.status)) throw new Error(endedText(session));
      const seconds = Math.round((performance.now() - started) / 1000);
      const queued = session.queuePosition;
      this.messages.stage(
        queued
          ? {
              title: "Waiting for a free render server…",
              text: `Every ${session.size} server is in use: this session is number ${queued} in the queue · ${seconds} s.`,
              spinner: true,
            }
          : {
              title: "Starting the render server…",
              text: `Status: ${session.status} · ${seconds} s. This usually takes a few seconds.`,
              spinner: true,
            },
      );
      await sleep(POLL_MS);
      if (mine !== this.generation) throw new Cancelled();
    }
  }

  async connect(mine) {
    const current = this.state.current;
    const camera = current.camera || new OrbitCamera(); // a reconnect keeps the view where it was
    const { hub } = current.region; // the relay of the session's region: only its hubs know the session
    const settings = { ...streamSettings(), iceServers: await hub.iceServers() };
    if (mine !== this.generation) return;
    const stream = new RenderStream(hub, current.id, $("video"), settings, () => camera.pose());
    Object.assign(current, { stream, camera, loading: false, pickRef: null });
    this.stats.clearPick();
    // Events from a stream whose session has left the stage are dropped here, once for all handlers.
    const ours = (handler) => (event) => mine === this.generation && handler(event.detail);
    stream.addEventListener(
      "state",
      ours((detail) => this.onStreamState(detail)),
    );
    stream.addEventListener(
      "message",
      ours((detail) => this.onServerMessage(detail)),
    );
    stream.addEventListener(
      "stats",
      ours((detail) => this.stats.show(detail)),
    );
    stream.addEventListener(
      "closed",
      ours((detail) => this.onStreamClosed(stream, detail.reason)),
    );
    this.models.reset(); // before the hello, which may say the server kept a model for this stream
    try {
      await stream.open();
    } catch (exc) {
      const byUs = stream.closed && !stream.closeReason;
      // The failure is reported once, by open(), not also as a lost connection.
      if (this.state.current && this.state.current.stream === stream) this.state.current.stream = null;
      stream.close();
      if (byUs) throw new Cancelled();
      throw exc;
    }
    if (mine !== this.generation) throw new Cancelled();
    this.showStreamControls(true);
    $("help").classList.remove("faded");
    clearTimeout(this.helpTimer);
    this.helpTimer = setTimeout(() => $("help").classList.add("faded"), 8000);
    clearInterval(this.refreshTimer);
    this.refreshTimer = setInterval(() => this.refresh(mine), SESSION_REFRESH_MS);
    $("viewport").focus();
  }

  onStreamState({ state, text }) {
    const { current } = this.state;
    if (state === "streaming") {
      this.messages.hideStage();
      if (current.stream && current.stream.firstFrame) this.messages.dismissToast("interrupted");
    } else if (state === "connecting" || state === "connected") {
      if (!current.stream || !current.stream.firstFrame) this.messages.stage({ title: text, spinner: true });
    } else if (state === "reconnecting") this.messages.toast(text, "notice", "interrupted");
  }

  onServerMessage(message) {
    if (!this.state.current) return;
    if (message.type === "pick") this.input.pickAnswered(message);
    else this.models.onMessage(message);
  }

  async onStreamClosed(stream, reason) {
    if (!this.state.current || stream !== this.state.current.stream) return;
    this.messages.dismissToast("interrupted"); // what it described is over, one way or the other
    if (reason === null) return;
    this.showStreamControls(false);
    const mine = this.generation;
    let session = null;
    try {
      session = await this.state.current.region.hub.getSession(this.state.current.id);
    } catch {
      session = null;
    }
    if (mine !== this.generation) return;
    if (session) this.show(session);
    if (session && TERMINAL.has(session.status)) {
      this.messages.stage({ title: "The session has ended", text: endedText(session) });
      this.list.refresh(true);
    } else {
      await this.reconnect(mine, reason);
    }
  }

  /** After a lost connection: connect again by itself, a few times, saying so; the scene waits on the server. */
  async reconnect(mine, reason) {
    for (const [attempt, delay] of RECONNECT_DELAYS_MS.entries()) {
      this.messages.stage({
        title: "Connection lost: reconnecting…",
        text: `${reason} Attempt ${attempt + 1} of ${RECONNECT_DELAYS_MS.length}; the model and view are kept.`,
        spinner: true,
      });
      await sleep(delay);
      if (mine !== this.generation) return;
      try {
        await this.connect(mine);
        this.messages.toast("Reconnected: the model and view are as you left them.", "notice", "connection");
        return;
      } catch (exc) {
        if (mine !== this.generation || exc instanceof Cancelled) return;
        if (exc instanceof HubError && exc.unauthorized) return this.messages.fail(exc);
        reason = exc.message || String(exc);
      }
    }
    this.messages.stage({
      title: "Disconnected",
      text: `${reason} Reconnecting did not work; the session may still be running.`,
      error: true,
      action: { label: "Reconnect", run: () => this.retry() },
    });
  }

  /** The periodic re-read of the shown session: its lease, and a stream to end if the session has. */
  async refresh(mine) {
    if (!this.state.current || mine !== this.generation) return;
    try {
      const session = await this.state.current.region.hub.getSession(this.state.current.id);
      if (mine !== this.generation) return;
      this.show(session);
      const { current } = this.state;
      if (TERMINAL.has(session.status) && current.stream) current.stream.close(endedText(session));
    } catch (exc) {
      if (exc instanceof HubError && exc.unauthorized) this.messages.fail(exc);
    }
  }

  async stopCurrent() {
    if (!this.state.current) return;
    const mine = this.generation;
    const { id, region } = this.state.current;
    if (!confirmStop(id)) return;
    const button = $("stop-session");
    button.disabled = true;
    button.textContent = "Stopping…";
    try {
      await region.hub.stopSession(id);
      if (mine !== this.generation) return;
      const { current } = this.state;
      if (current.stream) current.stream.close();
      this.showStreamControls(false);
      this.show({ ...(current.session || { id }), status: "Stopped" });
      this.messages.stage({
        title: "Session stopped",
        text: `Session ${id} is stopped; its render server is shutting down.`,
      });
    } catch (exc) {
      this.messages.fail(exc);
    } finally {
      button.disabled = false;
      button.textContent = "Stop session";
      this.list.refresh(true);
    }
  }

  async extendLease() {
    const { current } = this.state;
    if (!current || !current.session) return;
    const lease = current.session.maxLeaseTimeMinutes;
    if (lease >= MAX_LEASE_MINUTES) {
      this.messages.toast("The lease is already at its maximum of 24 hours.", "notice", "session");
      return;
    }
    try {
      const session = await current.region.hub.extendSession(
        current.id,
        Math.min(MAX_LEASE_MINUTES, lease + LEASE_STEP_MINUTES),
      );
      this.show(session);
      this.messages.toast(`The lease is now ${session.maxLeaseTimeMinutes} minutes.`, "notice", "session");
    } catch (exc) {
      this.messages.fail(exc);
    }
  }

  /** Leave the session running: only this browser's stream ends. */
  disconnect() {
    const { current } = this.state;
    if (!current || !current.stream) return;
    current.stream.close();
    this.showStreamControls(false);
    this.messages.stage({
      title: "Disconnected",
      text: "The session keeps running (and its lease keeps counting) until it is stopped.",
      action: { label: "Reconnect", run: () => this.retry() },
    });
  }

  /** Leaving the page ends the connection at once, so the server is free for the next client. */
  leave() {
    const { current } = this.state;
    if (current && current.stream) current.stream.close();
  }
}

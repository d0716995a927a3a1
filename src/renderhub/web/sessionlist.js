// The session list and the new-session form: the account's live sessions in the selected region, creating one
// there, stopping one.

import { HubError } from "./hubapi.js";

const $ = (id) => document.getElementById(id);
const LIST_REFRESH_MS = 10000;
const SESSION_ID = /^[A-Za-z0-9_-]{1,256}$/;
export const MAX_LEASE_MINUTES = 1440;

/** The size and lease of a session, as one line under its name. */
export function leaseText(session) {
  if (session.status === "Starting" && session.queuePosition) {
    return `${session.size} · number ${session.queuePosition} in the queue · lease ${session.maxLeaseTimeMinutes} min`;
  }
  if (session.status === "Starting") return `${session.size} · starting · lease ${session.maxLeaseTimeMinutes} min`;
  return `${session.size} · ${session.elapsedTimeMinutes} of ${session.maxLeaseTimeMinutes} min used`;
}

/** Whether a session on the stage is this one of this region (an id names one session per region). */
export function isCurrent(current, id, region) {
  return !!current && current.id === id && current.region.name === region.name;
}

/** Whether the person means to stop a session: a stopped session cannot be started again, and its model is gone. */
export function confirmStop(id) {
  return window.confirm(`Stop session ${id}? Its render server shuts down; a stopped session cannot be resumed.`);
}

function newSessionId() {
  const bytes = crypto.getRandomValues(new Uint8Array(3));
  return "viewer-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class SessionList {
  /**
   * @param state    the ViewerState, only read: the selected region (its hub), and which session is on the stage
   * @param messages the Messages, for toasts and failures
   * @param view     {open(id, region), stopCurrent()}: what the list asks of the session view
   */
  constructor(state, messages, view) {
    this.state = state;
    this.messages = messages;
    this.view = view;
    this.timer = null;
  }

  /** Signed in: a fresh id to create with, the list once a region is selected, and again every little while the
   * tab is seen. */
  start() {
    $("new-id").value = newSessionId();
    $("session-list").replaceChildren();
    $("sessions-empty").hidden = true;
    $("sessions-waiting").hidden = false;
    this.refresh();
    clearInterval(this.timer);
    this.timer = setInterval(() => document.visibilityState === "visible" && this.refresh(true), LIST_REFRESH_MS);
  }

  stop() {
    clearInterval(this.timer);
  }

  /** Another region is selected (or the first): its sessions replace the last region's, which meanwhile stay
   * in place, dimmed and out of reach, so the panel does not jump. */
  regionChanged() {
    $("session-list").inert = true;
    $("session-list").classList.add("stale");
    this.refresh();
  }

  /** Fetch and show the list; `quiet` (background refreshes) reports only an expired sign-in. */
  async refresh(quiet = false) {
    const { region } = this.state;
    if (!this.state.hub || !region) return;
    try {
      const sessions = await region.hub.listSessions();
      if (this.state.region === region) this.render(sessions, region); // else: a region no longer selected
    } catch (exc) {
      if (this.state.region !== region) return;
      if ($("session-list").inert) this.render([], region, `Could not list the sessions in ${region.name}.`);
      if (!quiet || (exc instanceof HubError && exc.unauthorized)) this.messages.fail(exc);
    }
  }

  render(sessions, region, emptyText = "No running sessions. Create one below.") {
    const { current } = this.state;
    sessions.sort((a, b) => String(b.creationTime).localeCompare(String(a.creationTime)));
    const items = sessions.map((session) => {
      const li = document.createElement("li");
      li.dataset.sessionId = session.id;
      li.classList.toggle("current", isCurrent(current, session.id, region));
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
      if (!isCurrent(current, session.id, region)) {
        const open = document.createElement("button");
        open.type = "button";
        open.className = "primary";
        open.textContent = session.status === "Ready" ? "Connect" : "Watch";
        open.addEventListener("click", () => this.view.open(session.id, region));
        actions.append(open);
      }
      const stop = document.createElement("button");
      stop.type = "button";
      stop.className = "danger";
      stop.textContent = "Stop";
      stop.title = `Stop session ${session.id}`;
      stop.addEventListener("click", () => this.stopSession(session.id, region, stop));
      actions.append(stop);
      li.append(name, actions, meta);
      return li;
    });
    $("session-list").replaceChildren(...items);
    $("session-list").inert = false;
    $("session-list").classList.remove("stale");
    $("sessions-waiting").hidden = true;
    $("sessions-empty").textContent = emptyText;
    $("sessions-empty").hidden = sessions.length > 0;
  }

  /** Highlight the session on the stage without waiting for the next listing. */
  markCurrent() {
    const { current, region } = this.state;
    for (const li of $("session-list").children) {
      li.classList.toggle("current", !!region && isCurrent(current, li.dataset.sessionId, region));
    }
  }

  async create(event) {
    event.preventDefault();
    const id = $("new-id").value.trim();
    const size = $("new-size").value;
    const lease = Number($("new-lease").value);
    if (!SESSION_ID.test(id)) {
      this.messages.toast("A session id is 1 to 256 letters, digits, '-' or '_'.");
      return;
    }
    if (!Number.isInteger(lease) || lease < 1 || lease > MAX_LEASE_MINUTES) {
      this.messages.toast(`The lease is a whole number of minutes, from 1 to ${MAX_LEASE_MINUTES}.`);
      return;
    }
    const button = $("create-button");
    button.disabled = true;
    button.textContent = this.state.region ? "Creating…" : "Measuring regions…";
    try {
      // Clicked while the regions are still being measured: created where the measurement leads.
      const region = await this.state.whenRegion();
      if (!region) return; // signed out meanwhile
      button.textContent = "Creating…";
      await region.hub.createSession(id, size, lease);
      $("new-id").value = newSessionId();
      this.view.open(id, region);
      this.refresh(true);
    } catch (exc) {
      this.messages.fail(exc);
    } finally {
      button.disabled = false;
      button.textContent = "Create and connect";
    }
  }

  /** The list's Stop button; the session on the stage is stopped by the view, which also updates the stage. */
  async stopSession(id, region, button) {
    if (isCurrent(this.state.current, id, region)) return this.view.stopCurrent();
    if (!confirmStop(id)) return;
    button.disabled = true;
    try {
      await region.hub.stopSession(id);
      this.messages.toast(`Session ${id} stopped.`, "notice");
    } catch (exc) {
      this.messages.fail(exc);
    }
    this.refresh(true);
  }
}

// Telling the user things: the toast for news and failures, and the stage message over the video.

import { HubError } from "./hubapi.js";

const $ = (id) => document.getElementById(id);

/** Thrown by work that a newer action superseded (another session opened, a sign-out); never reported. */
export class Cancelled extends Error {}

export class Messages {
  /** @param onUnauthorized called when the hub refused the token: the user has to sign in again */
  constructor(onUnauthorized) {
    this.onUnauthorized = onUnauthorized;
    this.toastTimer = null;
    this.toastTopic = null;
  }

  /** News ("notice") or a failure; `topic` names what it is about ("connection", "model", "session"), so it
   * goes when that does (dismiss(topic)), else when it times out or is closed. */
  toast(text, kind = "error", topic = null) {
    this.toastTopic = topic;
    $("toast-text").textContent = text;
    $("toast").className = kind === "error" ? "toast" : "toast notice";
    $("toast").hidden = false;
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => ($("toast").hidden = true), kind === "error" ? 15000 : 6000);
  }

  /** Hide the toast: any, or only one about `topic`. */
  dismissToast(topic = undefined) {
    if (topic === undefined || topic === this.toastTopic) $("toast").hidden = true;
  }

  /** Report what went wrong; an expired sign-in signs out instead, and superseded work says nothing. */
  fail(exc) {
    if (!exc || exc instanceof Cancelled || exc.name === "AbortError") return;
    if (exc instanceof HubError && exc.unauthorized) {
      this.onUnauthorized();
      return;
    }
    this.toast(exc.message || String(exc));
  }

  /** The message over the video: what the stage waits for, or why it shows nothing, with an optional button. */
  stage({ title, text = "", spinner = false, error = false, action = null }) {
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

  /** The picture is on screen: nothing to say over it. */
  hideStage() {
    $("stage-message").hidden = true;
  }
}

// The account's converted models: the conversions that succeeded into the hub's storage, each loadable by name.

import { HubError } from "./hubapi.js";
import { baseName } from "./modelfiles.js";

const $ = (id) => document.getElementById(id);

/**
 * A conversion's model as render servers load it by name, `container/prefix/file.arrAsset`, or null unless it
 * succeeded into this account's storage on the hub (`.../accounts/{account}/storage/{container}`).
 */
export function convertedModelName(conversion, accountId) {
  const output = conversion && conversion.settings && conversion.settings.outputLocation;
  if (!output || conversion.status !== "Succeeded" || !output.outputAssetFilename) return null;
  let segments;
  try {
    segments = new URL(output.storageContainerUri).pathname.replace(/\/+$/, "").split("/").map(decodeURIComponent);
  } catch {
    return null; // not a URL, or a malformed escape in it
  }
  const [empty, accounts, account, storage, container] = segments;
  if (segments.length !== 5 || empty !== "" || accounts !== "accounts" || storage !== "storage") return null;
  if (account.toLowerCase() !== String(accountId).toLowerCase()) return null;
  return `${container}/${output.blobPrefix || ""}${output.outputAssetFilename}`;
}

export class ConvertedList {
  /**
   * @param state    the ViewerState, only read: the hub, and whether a stream is open
   * @param messages the Messages, for failures
   * @param models   the ModelBar, which loads a model into the session
   */
  constructor(state, messages, models) {
    this.state = state;
    this.messages = messages;
    this.models = models;
    this.generation = 0; // a listing that started before a sign-out is not shown after it
  }

  /** Fetch and show the list; `quiet` reports only an expired sign-in. */
  async refresh(quiet = false) {
    const hub = this.state.hub;
    if (!hub) return;
    const mine = ++this.generation;
    try {
      const conversions = await hub.listConversions();
      if (mine === this.generation && this.state.hub === hub) this.render(conversions, hub.accountId);
    } catch (exc) {
      if (!quiet || (exc instanceof HubError && exc.unauthorized)) this.messages.fail(exc);
    }
  }

  clear() {
    this.generation++;
    $("converted-list").replaceChildren();
    $("converted-empty").hidden = false;
  }

  render(conversions, accountId) {
    const models = conversions
      .map((conversion) => ({ conversion, name: convertedModelName(conversion, accountId) }))
      .filter(({ name }) => name)
      .sort((a, b) => String(b.conversion.creationTime).localeCompare(String(a.conversion.creationTime)));
    const streaming = this.state.streaming();
    const items = models.map(({ conversion, name }) => {
      const li = document.createElement("li");
      li.dataset.model = name;
      const title = document.createElement("span");
      title.className = "title";
      title.textContent = baseName(conversion.settings.inputLocation.relativeInputAssetPath || name);
      const code = document.createElement("code");
      code.className = "meta";
      code.textContent = name;
      code.title = `Converted ${new Date(conversion.creationTime).toLocaleString()}`;
      const load = document.createElement("button");
      load.type = "button";
      load.className = "load";
      load.textContent = "Load";
      load.disabled = !streaming;
      load.title = streaming ? `Load ${name} into the session` : "Connect to a session to load a model";
      load.addEventListener("click", () => this.models.load({ name }, baseName(name)));
      li.append(title, load, code);
      return li;
    });
    $("converted-list").replaceChildren(...items);
    $("converted-empty").hidden = models.length > 0;
  }

  /** A stream opened or closed: Load works only while one is open. */
  setStreaming(streaming) {
    for (const button of $("converted-list").querySelectorAll("button.load")) {
      button.disabled = !streaming;
      const name = button.closest("li").dataset.model;
      button.title = streaming ? `Load ${name} into the session` : "Connect to a session to load a model";
    }
  }
}

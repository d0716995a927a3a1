// Drop to convert: upload a model to the account's storage on the hub, convert it, follow the conversion, and
// load the converted model into the session on the stage.

import { convertedModelName } from "./convertedlist.js";
import { HubError } from "./hubapi.js";
import { Cancelled } from "./messages.js";
import { baseName, folderFor, isZip, MODEL_SUFFIXES, modelsAmong, stem } from "./modelfiles.js";

const $ = (id) => document.getElementById(id);
const INPUT_CONTAINER = "models"; // as `renderhub convert` uploads
const OUTPUT_CONTAINER = "converted"; // where a converted model's name starts
const POLL_MS = 1000;
const MAX_POLL_FAILURES = 5; // a hub restarting, a network blip: the conversion goes on meanwhile
const TERMINAL = new Set(["Succeeded", "Failed", "Cancelled"]);
// ARR's first sentence of a ConversionProcessFailed message; the hub adds what failed after it.
const ARR_INVALID_INPUT = "Invalid input provided. Check logs in output container for details.";
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A byte count as people read it. */
function bytesText(bytes) {
  if (bytes < 1000) return `${bytes} B`;
  const units = ["kB", "MB", "GB"];
  let value = bytes / 1000;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(value < 100 ? 1 : 0)} ${units[unit]}`;
}

/** A failed conversion's error ({code, message}) in words a person understands, with what failed. */
export function conversionErrorText(error) {
  const code = (error && error.code) || "";
  let detail = String((error && error.message) || "").trim();
  if (detail.startsWith(ARR_INVALID_INPUT)) detail = detail.slice(ARR_INVALID_INPUT.length).trim();
  if (detail && !/[.!?]$/.test(detail)) detail += ".";
  switch (code) {
    case "ConversionProcessFailed":
      return `The model could not be converted: ${detail || "the converter gave no reason."}`;
    case "InputContainerAccessDenied":
      return `The hub could not read the uploaded files: ${detail || "access was denied."}`;
    case "OutputContainerAccessDenied":
      return `The hub could not write the converted model: ${detail || "access was denied."}`;
    case "InternalServerError":
      return `The hub had a problem converting the model: ${detail || "no details."}`;
    default:
      return detail ? `The conversion failed: ${detail}` : `The conversion failed (${code || "no reason given"}).`;
  }
}

/** What a hand-over of files becomes: {zip} for a lone .zip, {models} to choose from, or {error} to show. */
function plan(files) {
  if (!files.length) return { error: "Nothing to upload: the drop held no files." };
  if (files.length === 1 && isZip(files[0].path)) return { zip: true, models: [] };
  if (files.some(({ path }) => isZip(path))) {
    return { error: "A .zip goes on its own: drop or pick it alone (or the files it holds, without it)." };
  }
  const models = modelsAmong(files.map(({ path }) => path));
  if (!models.length) {
    const names = files.slice(0, 3).map(({ path }) => baseName(path)).join(", ") + (files.length > 3 ? ", …" : "");
    const kinds = MODEL_SUFFIXES.join(" ");
    return { error: `None of these files is a model RenderHub converts (${names}). It converts ${kinds}.` };
  }
  return { zip: false, models };
}

export class Converter {
  /**
   * @param state     the ViewerState, only read: the hub, and whether a stream is open
   * @param messages  the Messages, for toasts and an expired sign-in
   * @param parts     {models, converted}: the ModelBar that loads a converted model, the ConvertedList to refresh
   */
  constructor(state, messages, { models, converted }) {
    this.state = state;
    this.messages = messages;
    this.models = models;
    this.converted = converted;
    this.busy = false;
    this.generation = 0; // bumped by stop(): work started before belongs to a signed-out account
    this.xhr = null; // the upload in flight, to abort on sign-out
    this.choice = null; // resolves the "which model?" question
  }

  /** The "Upload a model…" button's file input. */
  pick(event) {
    const input = event.target;
    const files = Array.from(input.files || [], (file) => ({ file, path: file.name }));
    input.value = ""; // picking the same file again is a new upload
    if (files.length) this.convert({ files, name: "" });
  }

  /** Signed out: whatever was under way stops, and the panel empties. */
  stop() {
    this.generation++;
    if (this.xhr) this.xhr.abort();
    if (this.choice) this.choice(null);
    this.busy = false;
    $("upload-button").disabled = false;
    $("convert-job").hidden = true;
  }

  /** The panel's job line: a title, the conversion's status badge, a progress bar and a sentence. */
  show({ name, status = "", text = "", error = false, progress }) {
    $("convert-job").hidden = false;
    if (name !== undefined) $("convert-name").textContent = name;
    $("convert-status").hidden = !status;
    $("convert-status").className = `badge ${status}`;
    $("convert-status").textContent = status;
    $("convert-text").textContent = text;
    $("convert-text").classList.toggle("error-text", error);
    $("convert-text").title = "";
    const bar = $("convert-progress");
    bar.hidden = progress === undefined;
    if (progress === null) bar.removeAttribute("value"); // indeterminate: the conversion tells no fraction
    else if (progress !== undefined) bar.value = progress;
  }

  /** Ask which model to convert when the files hold several; resolves to a path, or null when cancelled. */
  choose(models) {
    if (models.length === 1) return Promise.resolve(models[0]);
    $("convert-choose-text").textContent = `These files hold ${models.length} models. Which one should be converted?`;
    $("convert-model").replaceChildren(...models.map((path) => new Option(path, path)));
    $("convert-choose").hidden = false;
    return new Promise((resolve) => {
      this.choice = (path) => {
        this.choice = null;
        $("convert-choose").hidden = true;
        resolve(path);
      };
    });
  }

  /** The chooser's Convert (ok) and Cancel buttons. */
  chosen(ok) {
    if (this.choice) this.choice(ok ? $("convert-model").value : null);
  }

  /** Upload files ({file, path}), convert the model among them, and load it into the session. */
  async convert({ files, name }) {
    const hub = this.state.hub;
    if (!hub) return;
    if (this.busy) {
      this.messages.toast("A model is being converted; wait until it has finished.", "notice");
      return;
    }
    const planned = plan(files);
    if (planned.error) {
      this.show({ name: "Nothing converted", text: planned.error, error: true });
      return;
    }
    const mine = ++this.generation;
    this.busy = true;
    $("upload-button").disabled = true;
    try {
      let model = planned.zip ? null : await this.choose(planned.models);
      if (mine !== this.generation) throw new Cancelled();
      if (!planned.zip && !model) {
        this.show({ name: "Nothing converted", text: "Cancelled; nothing was uploaded." });
        return;
      }
      const folder = folderFor(name || stem(model || files[0].path));
      const uploaded = await this.upload(hub, folder, files, planned.zip, mine);
      if (planned.zip) {
        const models = modelsAmong(uploaded);
        if (!models.length) {
          throw new Error(`The .zip holds no model RenderHub converts (${MODEL_SUFFIXES.join(" ")}).`);
        }
        model = await this.choose(models);
        if (mine !== this.generation) throw new Cancelled();
        if (!model) {
          const where = `${INPUT_CONTAINER}/${folder}`;
          this.show({ text: `Cancelled. The uploaded files stay in the hub's storage, in ${where}.` });
          return;
        }
      }
      this.show({ name: baseName(model), text: "Starting the conversion…", progress: null });
      const started = performance.now();
      const created = await hub.createConversion(folder, {
        inputLocation: {
          storageContainerUri: hub.storageUri(INPUT_CONTAINER),
          blobPrefix: folder,
          relativeInputAssetPath: model,
        },
        outputLocation: { storageContainerUri: hub.storageUri(OUTPUT_CONTAINER), blobPrefix: folder },
      });
      const conversion = await this.follow(hub, created, started, mine);
      this.finish(hub, conversion, started, `${OUTPUT_CONTAINER}/${folder}/${stem(model)}.arrAsset`);
    } catch (exc) {
      if (mine !== this.generation || exc instanceof Cancelled || exc.name === "AbortError") return;
      if (exc instanceof HubError && exc.unauthorized) {
        this.messages.fail(exc);
        return;
      }
      this.show({ text: exc.message || String(exc), error: true });
    } finally {
      if (mine === this.generation) {
        this.busy = false;
        this.xhr = null;
        $("upload-button").disabled = false;
      }
    }
  }

  /** Every file into models/folder (a .zip unpacked there), one request each; returns the paths in the folder. */
  async upload(hub, folder, files, zip, mine) {
    const total = files.reduce((sum, { file }) => sum + file.size, 0);
    const what = files.length === 1 ? baseName(files[0].path) : `${files.length} files`;
    let done = 0;
    const progress = (sent) => {
      const bytes = Math.min(total, done + sent);
      const fraction = total ? bytes / total : 1;
      this.show({
        name: what,
        text: `Uploading… ${Math.floor(fraction * 100)}% (${bytesText(bytes)} of ${bytesText(total)})`,
        progress: fraction,
      });
    };
    const options = { onProgress: progress, onStart: (xhr) => (this.xhr = xhr) };
    progress(0);
    if (zip) {
      const names = await hub.upload(INPUT_CONTAINER, folder, files[0].file, { ...options, extract: true });
      done = total;
      progress(0);
      return names.map((blob) => (blob.startsWith(`${folder}/`) ? blob.slice(folder.length + 1) : blob));
    }
    for (const { file, path } of files) {
      await hub.upload(INPUT_CONTAINER, `${folder}/${path}`, file, options);
      if (mine !== this.generation) throw new Cancelled();
      done += file.size;
      progress(0);
    }
    return files.map(({ path }) => path);
  }

  /** Poll the conversion every second, showing its status and the seconds since it was asked for, to its end. */
  async follow(hub, conversion, started, mine) {
    let failures = 0;
    while (!TERMINAL.has(conversion.status)) {
      const seconds = Math.round((performance.now() - started) / 1000);
      const doing = conversion.status === "NotStarted" ? "Waiting for a converter" : "Converting";
      this.show({ status: conversion.status, text: `${doing}… ${seconds} s`, progress: null });
      await sleep(POLL_MS);
      if (mine !== this.generation) throw new Cancelled();
      try {
        conversion = await hub.getConversion(conversion.id);
        failures = 0;
      } catch (exc) {
        const final = exc instanceof HubError && (exc.unauthorized || exc.status === 404);
        if (final || ++failures >= MAX_POLL_FAILURES) throw exc;
      }
      if (mine !== this.generation) throw new Cancelled();
    }
    return conversion;
  }

  /** A conversion ended: load what it made into the session, or say why it failed; the list shows the news. */
  finish(hub, conversion, started, expectedName) {
    const seconds = Math.round((performance.now() - started) / 1000);
    this.converted.refresh(true);
    if (conversion.status !== "Succeeded") {
      this.show({ status: conversion.status, text: conversionErrorText(conversion.error), error: true });
      if (conversion.error) $("convert-text").title = `${conversion.error.code}: ${conversion.error.message}`;
      return;
    }
    const name = convertedModelName(conversion, hub.accountId) || expectedName;
    if (!this.state.streaming()) {
      this.show({
        status: "Succeeded",
        text: `Converted in ${seconds} s. Connect to a session to load it; it is in the list of converted models.`,
      });
      return;
    }
    this.show({ status: "Succeeded", text: `Converted in ${seconds} s; loading it into the session.` });
    this.models.load({ name }, baseName(name));
  }
}

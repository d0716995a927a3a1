// The model bar: load the sample, a glTF URL or a converted model into the session, and show how the load goes.

const $ = (id) => document.getElementById(id);
const STAGE_NAMES = { download: "Downloading", parse: "Reading the model", upload: "Preparing to render" };

/** A render server's error message as a sentence for people. */
function serverErrorText({ code = "", message = "" }) {
  const sentence = (text) => {
    const trimmed = String(text).trim();
    if (!trimmed) return "";
    // A word starts a sentence with a capital; a file name or URL (broken.glb: …) stays as its user wrote it.
    const plainWord = /^[a-z][a-z']*[,:]?$/.test(trimmed.split(/\s/, 1)[0]);
    const capital = plainWord ? trimmed[0].toUpperCase() + trimmed.slice(1) : trimmed;
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

/** "1 draw call", "12,300 triangles": a count with its noun, singular for one. */
function counted(value, noun) {
  const n = Number(value || 0);
  return `${n.toLocaleString("en-US")} ${noun}${n === 1 ? "" : "s"}`;
}

/** 3412 bytes as "3.3 KB", 52428800 as "50 MB". */
function size(bytes) {
  const units = ["bytes", "KB", "MB", "GB"];
  let value = Number(bytes) || 0;
  let unit = 0;
  for (; value >= 1024 && unit < units.length - 1; unit++) value /= 1024;
  return unit ? `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}` : `${value} bytes`;
}

/** A loaded model in a line: "121 k triangles · 1 draw call · 4 levels of detail". */
function describe(model) {
  const points = Number(model.points || 0);
  const cloud = points ? ` · ${counted(points, "point")}` : "";
  const levels = Array.isArray(model.levels) && model.levels.length > 1;
  const detail = levels ? ` · ${model.levels.length} levels of detail` : "";
  return `${counted(model.triangles, "triangle")}${cloud} · ${counted(model.drawCalls, "draw call")}${detail}`;
}

export class ModelBar {
  /**
   * @param state    the ViewerState: loads go to its current stream; current.loading is set here only
   * @param messages the Messages, for errors that are not about a load
   */
  constructor(state, messages) {
    this.state = state;
    this.messages = messages;
    this.loads = 0; // numbers the loads, so the server's answers name the load they are about
  }

  /** A new connection: nothing loaded yet, and the buttons free; the hub's models listed anew. */
  reset() {
    this.messages.dismissToast("model"); // about the connection before
    this.setBusy(false);
    $("model-info").textContent = "No model loaded yet.";
    $("model-info").classList.remove("error-text");
    $("model-progress").hidden = true;
    this.listNamed();
  }

  setBusy(busy) {
    $("load-sample").disabled = $("load-url").disabled = $("named-model").disabled = busy;
  }

  /** The named models of the session's region's hub in the picker (hidden when there are none; its render servers
   * load them); a failure leaves the picker out. */
  async listNamed() {
    const { current } = this.state;
    let models = [];
    try {
      models = current ? await current.region.hub.namedModels() : [];
    } catch {
      models = []; // the other ways to load stay; the list is a convenience
    }
    if (this.state.current !== current) return;
    const picker = $("named-model");
    const options = models.map(({ name, bytes }) => {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = `${name} · ${size(bytes)}`;
      return option;
    });
    picker.replaceChildren(picker.options[0], ...options);
    picker.value = "";
    picker.hidden = !options.length;
  }

  loadNamed() {
    const name = $("named-model").value;
    $("named-model").value = "";
    if (name) this.load({ name }, name);
  }

  /** Ask the render server for a model: {name} (the sample, a converted model) or {url}; one load at a time. */
  load(source, label) {
    const { current } = this.state;
    if (!current || !current.stream) return;
    if (current.loading) {
      this.messages.toast("A model is still loading; wait until it has finished.", "notice", "model");
      return;
    }
    const ref = `load-${++this.loads}`;
    if (!current.stream.loadModel({ ...source, ref })) {
      this.messages.toast("The connection is not open; reconnect and try again.", "error", "model");
      return;
    }
    current.loading = ref;
    this.setBusy(true);
    $("model-progress").hidden = false;
    $("model-progress").value = 0;
    $("model-info").classList.remove("error-text");
    $("model-info").textContent = `Loading ${label}…`;
  }

  loadSample() {
    this.load({ name: "sample" }, "the sample model");
  }

  /** The URL form: only http(s) links, named in the bar by their file name. */
  loadUrl(event) {
    event.preventDefault();
    const text = $("model-url").value.trim();
    let url;
    try {
      url = new URL(text);
    } catch {
      url = null;
    }
    if (!url || !["http:", "https:"].includes(url.protocol)) {
      this.messages.toast(
        "Paste a link to a .glb or .gltf file that starts with https:// (or http://).",
        "error",
        "model",
      );
      return;
    }
    let name = url.pathname.split("/").pop() || url.host;
    try {
      name = decodeURIComponent(name);
    } catch {
      // keep it as written
    }
    this.load({ url: url.href }, name);
  }

  done() {
    this.state.current.loading = false;
    this.setBusy(false);
    $("model-progress").hidden = true;
  }

  /** The render server's messages about loads (progress, modelLoaded) and its errors. */
  onMessage(message) {
    const { current } = this.state;
    if (message.type === "progress") {
      const fraction = Number(message.fraction) || 0;
      $("model-progress").hidden = false;
      $("model-progress").value = fraction;
      const what = STAGE_NAMES[message.stage] || String(message.stage || "Loading");
      $("model-info").textContent = `${what}… ${Math.round(fraction * 100)}%`;
    } else if (message.type === "modelLoaded") {
      this.done();
      const seconds = (Number(message.loadMs) || 0) / 1000;
      $("model-info").textContent = `${describe(message)} · loaded in ${seconds.toFixed(2)} s`;
      current.camera.frame(message.bounds);
      this.state.poseChanged();
    } else if (message.type === "hello" && message.model) {
      // The render server kept the scene of a connection before (this tab's, or the tab before a reload).
      $("model-info").textContent = `${describe(message.model)} · kept from the last connection`;
      if (!current.camera.bounds) {
        current.camera.frame(message.model.bounds);
        if (message.pose) current.camera.adopt(message.pose);
      }
      this.state.poseChanged();
    } else if (message.type === "error") {
      const text = serverErrorText(message);
      const aboutModel = (message.ref && message.ref === current.loading) || (!message.ref && current.loading);
      if (aboutModel) {
        this.done();
        $("model-info").textContent = `Could not load the model: ${text}`;
        $("model-info").classList.add("error-text");
      } else {
        this.messages.toast(text, "error", "model");
      }
    }
  }
}

// The RenderHub viewer's entry module: makes its parts, connects them to each other and to the page, starts.

// Sign in (signin.js), pick a region (regions.js), manage its sessions (sessionlist.js), and look at a session's rendered model (sessionview.js,
// with modelbar.js, input.js and stats.js); convert models dropped on the page (dropzone.js, converter.js) and
// load converted ones (convertedlist.js); messages.js speaks to the user, viewerstate.js is what they share.
import { ConvertedList } from "./convertedlist.js";
import { Converter } from "./converter.js";
import { DropZone } from "./dropzone.js";
import { ViewInput } from "./input.js";
import { Messages } from "./messages.js";
import { ModelBar } from "./modelbar.js";
import { RegionPicker } from "./regions.js";
import { SessionList } from "./sessionlist.js";
import { SessionView } from "./sessionview.js";
import { SignIn } from "./signin.js";
import { StatsOverlay } from "./stats.js";
import { ViewerState } from "./viewerstate.js";

const $ = (id) => document.getElementById(id);

const state = new ViewerState();
// The arrows reach parts made further down: they run only on events, after this module has finished.
const messages = new Messages(() => signin.expired());
const stats = new StatsOverlay(state);
const input = new ViewInput(state, stats);
const models = new ModelBar(state, messages);
const converted = new ConvertedList(state, messages, models);
const converter = new Converter(state, messages, { models, converted });
const list = new SessionList(state, messages, {
  open: (id, region) => view.open(id, region),
  stopCurrent: () => view.stopCurrent(),
});
const view = new SessionView(state, messages, { list, stats, input, models, converted });
const regions = new RegionPicker(state, { list });
const signin = new SignIn(state, { regions, list, view, converter, converted });
const drops = new DropZone(
  () => !!state.hub,
  (dropped) => converter.convert(dropped),
  (exc) => messages.fail(exc),
);

/** Every way the page reaches the parts, in one place. */
function wire() {
  $("signin-form").addEventListener("submit", (event) => signin.submit(event));
  $("sign-out").addEventListener("click", () => signin.signOut());
  $("toast-close").addEventListener("click", () => messages.dismissToast());
  $("measure-regions").addEventListener("click", () => regions.measure());
  $("refresh").addEventListener("click", () => list.refresh());
  $("create-form").addEventListener("submit", (event) => list.create(event));
  $("extend").addEventListener("click", () => view.extendLease());
  $("disconnect").addEventListener("click", () => view.disconnect());
  $("stop-session").addEventListener("click", () => view.stopCurrent());
  $("load-sample").addEventListener("click", () => models.loadSample());
  $("named-model").addEventListener("change", () => models.loadNamed());
  $("url-form").addEventListener("submit", (event) => models.loadUrl(event));
  $("upload-button").addEventListener("click", () => $("upload-input").click());
  $("upload-input").addEventListener("change", (event) => converter.pick(event));
  $("convert-go").addEventListener("click", () => converter.chosen(true));
  $("convert-cancel").addEventListener("click", () => converter.chosen(false));
  $("converted-refresh").addEventListener("click", () => converted.refresh());
  drops.wire();
  $("home").addEventListener("click", () => input.home());
  $("spin").addEventListener("click", () => input.toggleSpin());
  $("toggle-stats").addEventListener("click", () => stats.toggle());
  const viewport = $("viewport");
  viewport.addEventListener("pointerdown", (event) => input.pointerDown(event));
  viewport.addEventListener("pointermove", (event) => input.pointerMove(event));
  for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
    viewport.addEventListener(type, (event) => input.pointerUp(event));
  }
  viewport.addEventListener("wheel", (event) => input.wheel(event), { passive: false });
  viewport.addEventListener("contextmenu", (event) => event.preventDefault());
  viewport.addEventListener("dblclick", (event) => input.doubleClick(event));
  viewport.addEventListener("keydown", (event) => input.key(event));
  window.addEventListener("pagehide", () => view.leave());
}

wire();
signin.restore();

// The region picker: the deployment's regions as the page's own hub lists them, each one's round trip measured from
// this browser the way ARR's latency page did it, nearest first. The region chosen is where the viewer lists,
// creates, stops and streams sessions (state.region); the sign-in itself stays with the page's own hub.

const $ = (id) => document.getElementById(id);
const WARMUPS = 1; // opens the connection (TCP and TLS): not a sample of the round trip
const SAMPLES = 8;
const PROBE_TIMEOUT_MS = 3000;
// Each hub limits the probes per address (20 a second): "Measure again" comes back no sooner than this.
const MEASURE_SPACING_MS = 1500;
const CHOSEN_KEY = "renderhub.viewer.region"; // sessionStorage: the region this tab's user picked, by name
const GOOD_MS = 60; // below this, interaction feels immediate; above FAIR_MS it is sluggish
const FAIR_MS = 150;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The middle of some numbers (the mean of the middle two for an even count). */
export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** A round trip as the picker shows it: tenths of a millisecond under 10 ms, whole ones above. */
export function roundTripText(ms) {
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

/** The round trips to a probe URL in ms: a warm-up, then SAMPLES requests, one after another over the connection
 * the warm-up opened. Rejects with an Error saying, in words, why the region cannot be reached. */
export async function measure(url, { warmups = WARMUPS, samples = SAMPLES, timeoutMs = PROBE_TIMEOUT_MS } = {}) {
  const times = [];
  for (let i = 0; i < warmups + samples; i++) {
    const started = performance.now();
    let response;
    try {
      response = await fetch(url, { cache: "no-store", credentials: "omit", signal: AbortSignal.timeout(timeoutMs) });
      await response.arrayBuffer(); // read to the end, so the connection is free for the next request
    } catch (exc) {
      if (exc && exc.name === "TimeoutError") throw new Error(`No answer within ${timeoutMs / 1000} s.`);
      throw new Error("Cannot reach its hub from this browser, or it does not let this page in.");
    }
    const took = performance.now() - started;
    if (response.status === 429) throw new Error("Its hub is busy with other measurements; measure again shortly.");
    if (!response.ok) throw new Error(`Its hub answered HTTP ${response.status}.`);
    if (i >= warmups) times.push(took);
  }
  return times;
}

/** Regions nearest first: by median round trip, the unreachable ones last, by name among equals. */
export function nearestFirst(regions) {
  const key = (region) => (region.ms === null ? Infinity : region.ms);
  return [...regions].sort((a, b) => key(a) - key(b) || a.name.localeCompare(b.name));
}

/** The directory from the page's own hub; a hub without one is a region of its own, reached where the page is. */
async function readDirectory() {
  try {
    const response = await fetch("../regions", { cache: "no-store", credentials: "omit" });
    const body = response.ok ? await response.json() : null;
    if (body && Array.isArray(body.regions) && body.regions.length) return body;
  } catch {
    // no directory to read: the fallback below
  }
  return { region: "", regions: [{ name: "this hub", endpoint: "", probeUrl: "../probe" }] };
}

export class RegionPicker {
  /**
   * @param state the ViewerState, whose `region` this module alone sets: {name, endpoint, hub}, `hub` the signed-in
   *              account's Hub at that region's endpoint
   * @param list  the SessionList, told when the region changes
   */
  constructor(state, { list }) {
    this.state = state;
    this.list = list;
    this.regions = []; // [{name, endpoint, probeUrl, ms, samples, error, measuring}], nearest first once measured
    this.own = ""; // the region of the page's own hub
    this.chosen = null; // the name the user picked, else null: the nearest is selected
    this.generation = 0; // a measurement that a sign-out or a newer one superseded shows nothing
  }

  /** Signed in: the directory, each region measured, the nearest (or the one this tab picked before) selected. */
  start() {
    this.chosen = sessionStorage.getItem(CHOSEN_KEY);
    this.state.selectRegion(null);
    this.measure();
  }

  stop() {
    this.generation++;
    this.state.dropRegion();
    this.chosen = null;
    sessionStorage.removeItem(CHOSEN_KEY);
  }

  /** Read the directory and measure every region side by side (each over a connection of its own). */
  async measure() {
    const mine = ++this.generation;
    const started = performance.now();
    const button = $("measure-regions");
    button.disabled = true;
    $("region-list").setAttribute("aria-busy", "true");
    const directory = await readDirectory();
    if (mine !== this.generation) return;
    this.own = directory.region;
    const before = new Map(this.regions.map((region) => [region.name, region]));
    // Known regions keep their place and last figure while measured again: the list does not jump about.
    this.regions = directory.regions.map(({ name, endpoint, probeUrl }) => {
      const last = before.get(name);
      return { name, endpoint, probeUrl, ms: last ? last.ms : null, samples: [], error: null, measuring: true };
    });
    if (before.size) this.regions.sort((a, b) => this.rank(before, a) - this.rank(before, b));
    this.render();
    await Promise.all(
      this.regions.map(async (region) => {
        try {
          region.samples = await measure(this.probeUrl(region));
          region.ms = median(region.samples);
        } catch (exc) {
          region.ms = null;
          region.error = exc.message;
        }
        region.measuring = false;
      }),
    );
    if (mine !== this.generation) return;
    this.regions = nearestFirst(this.regions);
    this.select(this.preferred());
    $("region-list").setAttribute("aria-busy", "false");
    await sleep(Math.max(0, MEASURE_SPACING_MS - (performance.now() - started)));
    if (mine === this.generation) button.disabled = false;
  }

  /** A region's place in the list before it was measured again (new ones last). */
  rank(before, region) {
    const names = [...before.keys()];
    return before.has(region.name) ? names.indexOf(region.name) : names.length;
  }

  /** The page's own region is probed where the page reaches its hub, as its session calls will. */
  probeUrl(region) {
    return region.name === this.own ? "../probe" : region.probeUrl;
  }

  /** The region to select: the user's pick while it answers, else the nearest, else the page's own hub's. */
  preferred() {
    const reachable = this.regions.filter((region) => region.ms !== null);
    const picked = reachable.find((region) => region.name === this.chosen);
    const own = this.regions.find((region) => region.name === this.own);
    return picked || reachable[0] || own || this.regions[0];
  }

  /** The user picked a region: it stays selected (in this tab) until they pick another or sign out. */
  choose(name) {
    const region = this.regions.find((candidate) => candidate.name === name);
    if (!region) return;
    this.chosen = name;
    sessionStorage.setItem(CHOSEN_KEY, name);
    this.select(region);
  }

  /** Make `region` the one sessions go to; the list reloads only when that changed. */
  select(region) {
    const current = this.state.region;
    const changed = !current || current.name !== region.name || current.endpoint !== region.endpoint;
    if (changed) {
      // The page's own region by relative URLs: the page may reach its hub by another name than the directory's.
      const hub = this.state.hub.at(region.name === this.own ? null : region.endpoint);
      this.state.selectRegion({ name: region.name, endpoint: region.endpoint, hub });
    }
    this.render();
    if (changed) this.list.regionChanged();
  }

  /** One row per region: a radio button, its name, its round trip (or why there is none). */
  render() {
    const selected = this.state.region ? this.state.region.name : null;
    const single = this.regions.length === 1;
    const rows = this.regions.map((region) => {
      const label = document.createElement("label");
      label.className = "region";
      label.dataset.region = region.name;
      const radio = document.createElement("input");
      radio.type = "radio";
      radio.name = "region";
      radio.value = region.name;
      radio.checked = region.name === selected;
      radio.disabled = !region.measuring && region.ms === null;
      radio.addEventListener("change", () => radio.checked && this.choose(region.name));
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = region.name;
      if (region.name === this.own && !single) {
        const here = document.createElement("span");
        here.className = "here";
        here.textContent = "this hub";
        name.append(here);
      }
      const rtt = document.createElement("span");
      rtt.className = "rtt";
      if (region.ms !== null) {
        rtt.textContent = roundTripText(region.ms);
        rtt.dataset.ms = region.ms.toFixed(3);
        rtt.classList.add(region.ms < GOOD_MS ? "good" : region.ms < FAIR_MS ? "fair" : "poor");
      } else {
        rtt.textContent = region.measuring ? "measuring…" : "unreachable";
        rtt.classList.add(region.measuring ? "pending" : "down");
      }
      rtt.classList.toggle("stale", region.measuring && region.ms !== null);
      label.title = region.error
        ? `${region.name}: ${region.error}`
        : region.samples.length
          ? `${region.name}: median of ${region.samples.length} round trips from this browser, ` +
            `${roundTripText(Math.min(...region.samples))} to ${roundTripText(Math.max(...region.samples))}`
          : region.name;
      label.append(radio, name, rtt);
      return label;
    });
    $("region-list").replaceChildren(...rows);
    $("region-list").classList.toggle("single", single);
    // The region's name beside the sessions' headings and the session on the stage: not worth a word with one.
    $("app").classList.toggle("one-region", single);
    for (const id of ["sessions-region", "new-region"]) $(id).textContent = selected ? `in ${selected}` : "";
  }
}

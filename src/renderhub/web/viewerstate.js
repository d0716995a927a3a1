// What the viewer's modules share: the signed-in hub, the selected region and the session on the stage, each with
// its one writer.

/**
 * One object handed to the modules that need it, in place of module-level variables, so that who changes
 * what is written down here rather than spread over the files:
 *   hub      set and cleared by signin.js only; everyone else just calls it.
 *   region   set and cleared by regions.js only; the session list lists and creates there.
 *   current  made, replaced and set to null by sessionview.js only, which also fills in its session, stream
 *            and camera (and starts each connection with loading and pickRef cleared); after that,
 *            modelbar.js alone changes current.loading and input.js alone current.pickRef.
 */
export class ViewerState {
  constructor() {
    /** The signed-in account's Hub (hubapi.js) at the page's own hub, or null while signed out: the conversions. */
    this.hub = null;
    /**
     * The selected region, or null until one is (or while signed out): {name, endpoint, hub}, `hub` the account's
     * Hub at the region's endpoint, where its sessions are listed, created, stopped and streamed.
     */
    this.region = null;
    /**
     * The session on the stage, or null: {id, region, session, stream, camera, loading, pickRef}, `region` the
     * one it was opened in (it stays there when another is selected). A new object each time a session is opened
     * (Reconnect and Try again too), so nothing of an old connection lingers.
     */
    this.current = null;
    this.regionWaiters = []; // whenRegion()'s callers, until a region is selected
  }

  /** The selected region once there is one (null if the user signs out first): a create clicked while the regions
   * are still being measured goes to the region the measurement selects. */
  whenRegion() {
    if (this.region) return Promise.resolve(this.region);
    return new Promise((resolve) => this.regionWaiters.push(resolve));
  }

  /** regions.js: select a region (null: none yet); whoever waits for one gets it. */
  selectRegion(region) {
    this.region = region;
    if (region) for (const resolve of this.regionWaiters.splice(0)) resolve(region);
  }

  /** regions.js: signed out: no region, and nobody waits for one any more. */
  dropRegion() {
    this.region = null;
    for (const resolve of this.regionWaiters.splice(0)) resolve(null);
  }

  /** Whether the stage's data channel is open: only then can poses and picks reach the render server. */
  streaming() {
    const current = this.current;
    return !!(current && current.stream && current.stream.channel && current.stream.channel.readyState === "open");
  }

  /** The camera moved: have the stream send its pose (the stream throttles poses to its frame rate). */
  poseChanged() {
    if (this.streaming()) this.current.stream.requestPose();
  }
}

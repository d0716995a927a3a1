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

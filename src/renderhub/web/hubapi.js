// The hub's REST API as the viewer uses it: the STS token, ARR's session operations, the signalling relay,
// and (for drop-to-convert) ARR's conversion operations and uploads to the account's storage on the hub.
// Every failure becomes a HubError whose message a person can read.

export const API_VERSION = "2021-01-01";
const RETRIES = 3; // on 429, for requests that are safe to repeat

export class HubError extends Error {
  constructor(message, { status = 0, code = "", retryAfter = 0 } = {}) {
    super(message);
    this.name = "HubError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  get unauthorized() {
    return this.status === 401;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function readError(response) {
  try {
    const body = await response.json();
    if (body && body.error && typeof body.error.message === "string") return body.error;
  } catch {
    // an empty or non-JSON body: the status says it all
  }
  return null;
}

/** A sentence for a failed response: the hub's own message where it sent one, else one for the status. */
function explain(status, error, what) {
  const message = error ? error.message : "";
  switch (status) {
    case 401:
      return "Your sign-in is not valid any more. Please sign in again.";
    case 403:
      return "This account may not do that.";
    case 404:
      return message || `${what}: not found.`;
    case 429:
      return "The hub is busy right now. Please try again in a moment.";
    case 502:
    case 504:
      return message || "The render server did not answer. The session may have just ended.";
    default:
      if (message) return message;
      if (status >= 500) return `The hub had a problem (${status}). Please try again.`;
      return `${what} failed (HTTP ${status}).`;
  }
}

async function send(url, init) {
  let response;
  try {
    response = await fetch(url, { cache: "no-store", credentials: "omit", ...init });
  } catch (exc) {
    if (exc && exc.name === "AbortError") throw exc;
    throw new HubError("Cannot reach the hub. Check your network connection and that the hub is running.");
  }
  return response;
}

function base64UrlJson(part) {
  const padded = part.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((part.length + 3) % 4);
  return JSON.parse(atob(padded));
}

/** Seconds since the epoch when a JWT expires, or 0 when it cannot be read. */
export function tokenExpiry(token) {
  try {
    const exp = base64UrlJson(token.split(".")[1]).exp;
    return Number.isFinite(exp) ? exp : 0;
  } catch {
    return 0;
  }
}

/** Exchange an account key for a token at the hub's STS endpoint; the key goes nowhere else. */
export async function signIn(accountId, accountKey) {
  const url = `../Accounts/${encodeURIComponent(accountId)}/token`;
  const response = await send(url, {
    headers: { Authorization: `Bearer ${accountId}:${accountKey}`, Accept: "application/json" },
  });
  if (response.status === 401) throw new HubError("The account id or key is not right.", { status: 401 });
  if (response.status === 429) {
    // The STS throttles an address after several wrong keys, for up to a minute (Retry-After says how long).
    const wait = Number(response.headers.get("Retry-After")) || 60;
    throw new HubError(`Too many failed sign-ins. Please try again in ${wait} seconds.`, { status: 429 });
  }
  if (!response.ok) {
    throw new HubError(explain(response.status, await readError(response), "Sign-in"), { status: response.status });
  }
  const body = await response.json();
  if (!body || typeof body.AccessToken !== "string") throw new HubError("The hub sent no token.");
  return body.AccessToken;
}

/**
 * An account's API at one hub, with its token: the page's own (`base` "../", relative to the page, so a proxy's
 * path prefix is kept), or another region's (`base` its endpoint and "/"; the token is valid in every region).
 */
export class Hub {
  constructor(accountId, token, base = "../") {
    this.accountId = accountId;
    this.token = token;
    this.base = base;
  }

  /** The same account and token at another region's hub: `endpoint` an absolute URL, or null for the page's own. */
  at(endpoint) {
    return new Hub(this.accountId, this.token, endpoint ? `${endpoint.replace(/\/+$/, "")}/` : "../");
  }

  sessionsUrl(path = "") {
    return `${this.base}accounts/${encodeURIComponent(this.accountId)}/sessions${path}`;
  }

  /** One call; JSON in and out; retries 429 for idempotent calls as the hub's Retry-After says. */
  async call(method, url, { body, what = "The request", retry = method !== "POST", signal } = {}) {
    const headers = { Authorization: `Bearer ${this.token}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    for (let attempt = 0; ; attempt++) {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const response = await send(url, { method, headers, body: payload, signal });
      if (response.status === 429 && retry && attempt < RETRIES) {
        const wait = Number(response.headers.get("Retry-After")) || 1;
        await sleep(Math.min(wait, 10) * 1000);
        continue;
      }
      if (!response.ok) {
        const error = await readError(response);
        throw new HubError(explain(response.status, error, what), {
          status: response.status,
          code: error ? error.code : "",
          retryAfter: Number(response.headers.get("Retry-After")) || 0,
        });
      }
      if (response.status === 204) return null;
      try {
        return await response.json();
      } catch {
        throw new HubError(`${what}: the hub sent an answer that is not JSON.`);
      }
    }
  }

  /** Every live (Starting or Ready) session, across pages. */
  async listSessions() {
    const sessions = [];
    let url = this.sessionsUrl(`?api-version=${API_VERSION}`);
    for (let page = 0; page < 1000 && url; page++) {
      const body = await this.call("GET", url, { what: "Listing sessions" });
      sessions.push(...(body.sessions || []));
      const next = body["@nextLink"];
      // The link is absolute; follow it where this hub is reached (it may not know the name we reach it by).
      url = next ? this.onBase(next) : null;
    }
    return sessions;
  }

  getSession(id, signal) {
    return this.call("GET", this.sessionsUrl(`/${encodeURIComponent(id)}?api-version=${API_VERSION}`), {
      what: `Session ${id}`,
      signal,
    });
  }

  createSession(id, size, maxLeaseTimeMinutes) {
    return this.call("PUT", this.sessionsUrl(`/${encodeURIComponent(id)}?api-version=${API_VERSION}`), {
      body: { size, maxLeaseTimeMinutes },
      what: "Creating the session",
    });
  }

  extendSession(id, maxLeaseTimeMinutes) {
    return this.call("PATCH", this.sessionsUrl(`/${encodeURIComponent(id)}?api-version=${API_VERSION}`), {
      body: { maxLeaseTimeMinutes },
      what: "Extending the lease",
    });
  }

  async stopSession(id) {
    await this.call("POST", this.sessionsUrl(`/${encodeURIComponent(id)}/:stop?api-version=${API_VERSION}`), {
      what: "Stopping the session",
    });
  }

  /** The STUN/TURN servers the hub's operator configured (an empty list on a LAN). */
  async iceServers() {
    const body = await this.call("GET", `${this.base}render/ice-servers`, { what: "Reading the ICE servers" });
    return body.iceServers || [];
  }

  /** The models on the hub a session loads by name (the operator's asset directory): [{name, bytes}]. */
  async namedModels() {
    const body = await this.call("GET", `${this.base}render/assets`, { what: "Listing the hub's models" });
    return Array.isArray(body.models) ? body.models : [];
  }

  /** Hand a WebRTC offer to the session's render server through the hub; returns the answer. */
  async offer(sessionId, offer, signal) {
    const url = `${this.base}render/${encodeURIComponent(this.accountId)}/${encodeURIComponent(sessionId)}/offer`;
    const answer = await this.call("POST", url, { body: offer, what: "Connecting to the render server", signal });
    if (!answer || answer.type !== "answer" || typeof answer.sdp !== "string") {
      throw new HubError("The render server sent no usable answer.");
    }
    return answer;
  }

  // ---- Conversions and the account's own storage on the hub (drop-to-convert: converter.js, convertedlist.js)

  /** A path under the account's part of the hub's API. */
  accountUrl(path) {
    return `${this.base}accounts/${encodeURIComponent(this.accountId)}/${path}`;
  }

  /** A container of the account's storage as conversions name it: an absolute URL on this hub. */
  storageUri(container) {
    return new URL(this.accountUrl(`storage/${container}`), location.href).href;
  }

  /**
   * PUT one file into the account's storage at container/path, or with `extract` a .zip unpacked under path.
   * XMLHttpRequest, not fetch: only it reports upload progress, as onProgress(bytesSent, bytesTotal).
   * Resolves to the blob names the hub stored; an `abort()` from onStart's handle rejects with an AbortError.
   */
  upload(container, path, file, { extract = false, onProgress = () => {}, onStart = () => {} } = {}) {
    const query = `?api-version=${API_VERSION}${extract ? "&extract=zip" : ""}`;
    const url = this.accountUrl(`storage/${container}/${blobPath(path)}${query}`);
    const what = `Uploading ${path.split("/").pop()}`;
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", url);
      xhr.setRequestHeader("Authorization", `Bearer ${this.token}`);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("Content-Type", extract ? "application/zip" : "application/octet-stream");
      xhr.upload.addEventListener("progress", (event) => onProgress(event.loaded, event.total || file.size));
      xhr.addEventListener("load", () => {
        if (xhr.status < 200 || xhr.status >= 300) {
          const error = xhrError(xhr);
          reject(new HubError(explain(xhr.status, error, what), { status: xhr.status, code: error ? error.code : "" }));
          return;
        }
        try {
          resolve(JSON.parse(xhr.responseText).blobs || []);
        } catch {
          reject(new HubError(`${what}: the hub sent an answer that is not JSON.`));
        }
      });
      xhr.addEventListener("error", () =>
        reject(new HubError("Cannot reach the hub. Check your network connection and that the hub is running.")),
      );
      xhr.addEventListener("abort", () => reject(new DOMException("The upload was cancelled.", "AbortError")));
      onStart(xhr);
      xhr.send(file);
    });
  }

  /** Create a conversion (ARR's PUT); its id names it for getConversion. */
  createConversion(id, settings) {
    const url = this.accountUrl(`conversions/${encodeURIComponent(id)}?api-version=${API_VERSION}`);
    return this.call("PUT", url, { body: { settings }, what: "Starting the conversion" });
  }

  getConversion(id) {
    const url = this.accountUrl(`conversions/${encodeURIComponent(id)}?api-version=${API_VERSION}`);
    return this.call("GET", url, { what: `Conversion ${id}` });
  }

  /** Every conversion of the account, oldest first, across pages. */
  async listConversions() {
    const conversions = [];
    let url = this.accountUrl(`conversions?api-version=${API_VERSION}`);
    for (let page = 0; page < 1000 && url; page++) {
      const body = await this.call("GET", url, { what: "Listing conversions" });
      conversions.push(...(body.conversions || []));
      const next = body["@nextLink"];
      url = next ? this.onBase(next) : null;
    }
    return conversions;
  }

  /** A link the hub wrote, on the origin this Hub reaches it at. */
  onBase(link) {
    const where = new URL(this.base, location.href);
    const parsed = new URL(link, where);
    return new URL(parsed.pathname + parsed.search, where).href;
  }
}

/** A blob path with each segment escaped (the "/" between them kept). */
function blobPath(path) {
  return path.split("/").map(encodeURIComponent).join("/");
}

/** The hub's JSON error from an XMLHttpRequest's answer, or null. */
function xhrError(xhr) {
  try {
    const body = JSON.parse(xhr.responseText);
    if (body && body.error && typeof body.error.message === "string") return body.error;
  } catch {
    // not JSON: the status says it all
  }
  return null;
}

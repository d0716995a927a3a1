"""The inspector page (ARR had ArrInspector): static here; its figures come from /status, behind the token."""

import base64
import hashlib

STYLE = """
 body{font:14px/1.4 system-ui,sans-serif;margin:2em;background:#1d1f23;color:#e6e6e6}
 h1{font-size:1.3em} table{border-collapse:collapse;margin:1em 0} th,td{padding:.25em .8em;text-align:left}
 th{color:#9aa4b2;font-weight:normal} td{font-variant-numeric:tabular-nums}
 pre{background:#121316;padding:1em;max-height:20em;overflow:auto} .err{color:#ff7b72}
"""

# The page holds no data itself: it reads the token from the URL fragment (never sent to a server) or
# asks for it, then polls /status with it every second.
SCRIPT = """
const fragment = new URLSearchParams(location.hash.slice(1));
let token = fragment.get("token") || sessionStorage.getItem("renderhub-token") || "";
if (!token) { token = prompt("Access token for this session's account") || ""; }
sessionStorage.setItem("renderhub-token", token);
const fmt = (v) => v === null || v === undefined ? "-" : String(typeof v === "number" ? +v.toFixed(2) : v);
function rows(obj, prefix = "") {
  return Object.entries(obj).flatMap(([k, v]) =>
    v && typeof v === "object" && !Array.isArray(v) ? rows(v, prefix + k + ".") : [[prefix + k, v]]);
}
async function poll() {
  try {
    const r = await fetch("status", {headers: {Authorization: "Bearer " + token}, cache: "no-store"});
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
    document.getElementById("session").textContent = body.sessionId;
    document.getElementById("state").textContent = body.client ? "client connected" : "no client connected";
    const log = body.log || []; delete body.log;
    document.getElementById("figures").innerHTML = rows(body).map(([k, v]) =>
      `<tr><th>${k}</th><td>${fmt(v).replace(/[<>&]/g, "")}</td></tr>`).join("");
    document.getElementById("log").textContent = log.join("\\n");
  } catch (e) {
    const s = document.getElementById("state"); s.textContent = "error: " + e.message; s.className = "err";
  }
  setTimeout(poll, 1000);
}
poll();
"""

INSPECTOR_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>RenderHub inspector</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head><body>
<h1>Render server <span id="session"></span></h1>
<p id="state">connecting…</p>
<table id="figures"></table>
<h2>Recent log</h2><pre id="log"></pre>
<script>{SCRIPT}</script></body></html>
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# The hub viewer's headers (renderhub.api.web), with the page's own inline style and script allowed by their
# hashes (nothing else inline runs) and its one request, /status, to its own origin.
INSPECTOR_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_sha256(SCRIPT)}; style-src {_sha256(STYLE)}; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}

// The door's page: polls the API with relative URLs. The token lives in this tab's memory only and travels
// in an Authorization header (never in a URL, never in a cookie); images that show a face are fetched with
// it and shown from blob: URLs.
"use strict";

const $ = (id) => document.getElementById(id);
let token = "";
let labels = [];
const snapshotUrls = new Map(); // snapshot name -> blob: URL, fetched once

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "–";
}

function num(x, digits) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

function duration(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min` : m ? `${m} min ${Math.floor(s % 60)} s` : `${Math.floor(s)} s`;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (options.auth) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, { method: options.method || "GET", headers, body: options.body, cache: "no-store" });
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    const err = new Error(message);
    err.status = response.status;
    throw err;
  }
  return response;
}

function setOnline(online) {
  const badge = $("connection");
  badge.textContent = online ? "online" : "offline";
  badge.className = "badge " + (online ? "online" : "offline");
  if (!online) {
    $("state").textContent = "offline";
    $("state").className = "state offline";
    $("reason").textContent = "the door does not answer; its state is unknown";
  }
  $("facts").className = online ? "" : "stale";
}

// `door serve` has no camera and no relay: no unlock button, no live view, no snapshots to review, and no
// token to ask for when none of them is there.
function showWhatExists(s) {
  const door = s.state !== "no door";
  $("unlock").hidden = !door;
  $("live-card").hidden = !door;
  $("review-card").hidden = !s.snapshots;
  $("adapt-card").hidden = !door;  // adapting learns from the door's labelled snapshots
  $("token-card").hidden = !door && !s.snapshots;
}

async function refreshState() {
  let s;
  try {
    s = await (await api("door/state")).json();
  } catch (_) {
    setOnline(false);
    return;
  }
  setOnline(true);
  showWhatExists(s);
  labels = s.labels;
  const stateEl = $("state");
  stateEl.textContent = s.state;
  stateEl.className = "state " + (s.state === "open" ? "open" : s.state.includes("fault") ? "fault" : "locked");
  $("reason").textContent = s.ready ? "ready" : "not ready: " + s.reason;
  // The door's own loud line (a refused token: manual unlock is off until it is replaced).
  $("notice").textContent = s.notice || "";
  $("notice").hidden = !s.notice;
  const facts = [
    ["model", `${s.model} (${s.file})`],
    ["threshold", num(s.threshold, 3)],
    ["FAR / FRR", s.rates || "–"],
    ["rule", s.votes ? `${s.votes} of the last ${s.window} frames` : "–"],
    ["uptime", duration(s.uptime_seconds)],
    ["frames/s", num(s.fps, 1)],
    ["last decision", s.last_latency_ms === null ? "–" : `${num(s.last_latency_ms, 1)} ms`],
  ];
  const dl = $("facts");
  dl.replaceChildren();
  for (const [k, v] of facts) { dl.append(el("dt", k), el("dd", v)); }
}

async function refreshTimeline() {
  let t;
  try { t = await (await api("door/timeline?limit=40")).json(); } catch (_) { return; }
  const body = $("timeline").querySelector("tbody");
  body.replaceChildren();
  for (const d of t.decisions) {
    const row = el("tr", undefined, d.opened ? "opened" : "");
    const votes = d.k ? `${d.votes}/${d.n}` : "–";
    const what = d.opened ? "OPENED" : d.probability === null && d.k ? "no face" : d.decision;
    row.append(el("td", when(d.time)), el("td", num(d.probability, 3)), el("td", votes), el("td", what));
    body.append(row);
  }
  const faults = $("faults");
  faults.replaceChildren();
  for (const f of t.faults) faults.append(el("li", `${when(f.time)} ${f.reason}`));
  if (!t.faults.length) faults.append(el("li", "none", "muted"));
}

function tokenProblem(err) {
  if (err.status === 401 || err.status === 403 || err.status === 429) {
    if (err.status !== 429) token = "";
    $("token-message").textContent = err.message;
    return true;
  }
  return false;
}

async function refreshLive() {
  if (!token || $("live-card").hidden) return;
  try {
    const blob = await (await api("door/live.jpg", { auth: true })).blob();
    const img = $("live");
    const old = img.src;
    img.src = URL.createObjectURL(blob);
    img.style.display = "block";
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
    $("live-message").textContent = "";
  } catch (err) {
    if (!tokenProblem(err)) $("live-message").textContent = err.message;
  }
}

async function snapshotImage(name) {
  if (!snapshotUrls.has(name)) {
    const blob = await (await api("door/snapshots/" + encodeURIComponent(name), { auth: true })).blob();
    snapshotUrls.set(name, URL.createObjectURL(blob));
  }
  return snapshotUrls.get(name);
}

async function relabel(name, label, card) {
  try {
    const r = await api(`door/snapshots/${encodeURIComponent(name)}/label`, {
      method: "POST", auth: true, headers: { "Content-Type": "application/json" }, body: JSON.stringify({ label }),
    });
    const done = await r.json();
    card.remove();
    URL.revokeObjectURL(snapshotUrls.get(name) || "");
    snapshotUrls.delete(name);
    $("review-message").textContent = `${name} labelled ${label}: ${done.path}`;
  } catch (err) {
    if (!tokenProblem(err)) $("review-message").textContent = err.message;
  }
}

async function refreshSnapshots() {
  if (!token || $("review-card").hidden) return;
  let list;
  try {
    list = await (await api("door/snapshots?limit=30", { auth: true })).json();
  } catch (err) {
    if (!tokenProblem(err)) $("review-message").textContent = err.message;
    return;
  }
  const mb = (b) => (b / 1e6).toFixed(1);
  $("review-message").textContent =
    `${list.snapshots.length} shown, ${mb(list.total_bytes)} of ${mb(list.cap_bytes)} MB used. ` +
    "Give a snapshot its true label: it goes to the folder the next fine-tune reads.";
  const box = $("snapshots");
  box.replaceChildren();
  for (const s of list.snapshots) {
    const card = el("div", undefined, "snap" + (s.opened ? " opened" : ""));
    card.dataset.name = s.name;
    const img = el("img");
    img.alt = s.name;
    card.append(img, el("div", `${when(s.time)} p=${num(s.probability, 3)} ${s.opened ? "OPENED" : s.decision}`));
    for (const label of list.labels) {
      const b = el("button", label);
      b.type = "button";
      b.className = "label";
      b.dataset.label = label;
      b.addEventListener("click", () => relabel(s.name, label, card));
      card.append(b);
    }
    box.append(card);
    snapshotImage(s.name).then((url) => { img.src = url; }).catch(() => { img.alt = "gone"; });
  }
}

async function unlock() {
  const given = $("token").value || token || window.prompt("Unlock token") || "";
  if (!given) return;
  token = given;
  try {
    const r = await (await api("door/open", { method: "POST", auth: true })).json();
    $("token-message").textContent = `unlocked for ${r.seconds} s`;
  } catch (err) {
    tokenProblem(err) || ($("token-message").textContent = err.message);
  }
  refreshState();
}

function useToken(event) {
  event.preventDefault();
  token = $("token").value;
  $("token").value = "";
  $("token-message").textContent = token ? "token set for this tab" : "";
  refreshLive();
  refreshSnapshots();
}

function every(ms, fn) {
  fn();
  setInterval(fn, ms);
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", useToken);
  $("unlock").addEventListener("click", unlock);
  every(1000, refreshState);
  every(2000, refreshTimeline);
  every(1000, refreshLive);
  every(15000, refreshSnapshots);
});

// The page's adapt card: labelled photos per class, "Adapt to this camera", the head versions and rollback.
// Uses page.js' token, api(), el(), num() and tokenProblem(); every call needs the token.
"use strict";

const labelledUrls = new Map(); // "label/name" -> blob: URL, fetched once
let adaptRunning = false;
let estimatedFor = null; // the labelled counts the last estimate was asked for (one dry run per change)

function adaptSay(text) { $("adapt-message").textContent = text; }

async function adaptCall(path, method, body) {
  try {
    const options = { method, auth: true };
    if (body !== undefined) {
      options.headers = { "Content-Type": "application/json" };
      options.body = JSON.stringify(body);
    }
    return await (await api(path, options)).json();
  } catch (err) {
    if (!tokenProblem(err)) adaptSay(err.message);
    return null;
  }
}

async function labelledImage(key) {
  if (!labelledUrls.has(key)) {
    const blob = await (await api("door/labelled/" + key.split("/").map(encodeURIComponent).join("/"),
      { auth: true })).blob();
    labelledUrls.set(key, URL.createObjectURL(blob));
  }
  return labelledUrls.get(key);
}

function versionRow(v) {
  const tr = el("tr", undefined, v.current ? "serving" : "");
  if (v.error) {
    tr.append(el("td", v.id), el("td", v.error));
    return tr;
  }
  const counts = Object.entries(v.counts || {}).map(([k, n]) => `${k} ${n}`).join(", ");
  const ci = v.cv_interval_95 ? ` [${num(v.cv_interval_95[0], 2)}–${num(v.cv_interval_95[1], 2)}]` : "";
  tr.append(el("td", v.id + (v.current ? " ✓" : "")), el("td", (v.created || "").replace("T", " ").replace("Z", "")),
    el("td", counts), el("td", num(v.cv_accuracy, 3) + ci), el("td", num(v.threshold, 3)),
    el("td", v.far_upper_95 === null || v.far_upper_95 === undefined ? "–" : "≤ " + num(v.far_upper_95, 3)));
  const cell = el("td");
  if (!v.current) {
    const use = el("button", "use");
    use.type = "button";
    use.addEventListener("click", async () => { await adaptCall("door/adapt/rollback", "POST", { to: v.id }); refreshAdapt(); });
    cell.append(use);
  }
  const del = el("button", "delete");
  del.type = "button";
  del.addEventListener("click", async () => {
    if (!window.confirm(`Delete version ${v.id}?`)) return;
    await adaptCall("door/adapt/versions/" + encodeURIComponent(v.id), "DELETE");
    refreshAdapt();
  });
  cell.append(del);
  tr.append(cell);
  return tr;
}

function photoStrip(label, info) {
  const row = el("div", undefined, "labelled-row");
  row.append(el("div", `${label}: ${info.count} labelled`, "labelled-head"));
  for (const name of info.photos.slice(0, 8)) {
    const key = `${label}/${name}`;
    const box = el("span", undefined, "thumb");
    const img = el("img");
    img.alt = name;
    const x = el("button", "×");
    x.type = "button";
    x.title = "delete this photo";
    x.addEventListener("click", async () => {
      if (await adaptCall("door/labelled/" + key.split("/").map(encodeURIComponent).join("/"), "DELETE")) {
        box.remove();
        refreshAdapt();
      }
    });
    box.append(img, x);
    row.append(box);
    labelledImage(key).then((url) => { img.src = url; }).catch(() => { img.alt = "gone"; });
  }
  return row;
}

async function refreshAdapt() {
  if (!token) return;
  const s = await adaptCall("door/adapt", "GET");
  if (!s) return;
  const job = s.job;
  adaptRunning = job.status === "running";
  $("adapt-button").disabled = adaptRunning || !s.can_adapt;
  if (!s.can_adapt) adaptSay(s.reason);
  else if (!s.state) adaptSay("No state folder: run the door with --state DIR to keep versions.");
  else adaptSay(`Serving: ${s.serving ? "version " + s.serving : "the export's own head"}` +
    (s.version_error ? ` (${s.version_error})` : ""));
  const latest = s.versions.find((v) => !v.error);
  const est = job.estimate;
  $("adapt-estimate").textContent = (est
    ? `Estimate on the ${est.n} labelled photos (before adapting): CV ${num(est.accuracy, 3)} (95 % ` +
      `${num(est.interval_95[0], 2)}–${num(est.interval_95[1], 2)}); the head deciding now scores ` +
      `${num(est.current_accuracy, 3)} on them. ` : "") + (latest
    ? `Last CV estimate: ${num(latest.cv_accuracy, 3)} (95 % ${num(latest.cv_interval_95[0], 2)}–` +
      `${num(latest.cv_interval_95[1], 2)}); the head it replaced scored ${num(latest.current_accuracy, 3)} on the same photos.`
    : "No version yet: label at least 10 photos of each class in Review, then adapt.");
  const strips = $("adapt-labelled");
  strips.replaceChildren(...Object.entries(s.labelled).map(([label, info]) => photoStrip(label, info)));
  const body = $("adapt-versions").querySelector("tbody");
  body.replaceChildren(...s.versions.map(versionRow));
  $("adapt-job").textContent = job.status === "idle" ? "" :
    `${job.status}${job.message ? ": " + job.message : ""}\n${job.lines.join("\n")}`;
  if (adaptRunning) setTimeout(refreshAdapt, 1000);
  else estimateAdapt(s);
}

// What "Adapt" would reach on the photos labelled now: a dry run (nothing written), once per change of the counts.
async function estimateAdapt(s) {
  const counts = JSON.stringify(Object.entries(s.labelled).map(([label, info]) => [label, info.count]));
  if (!s.can_adapt || !s.state || counts === estimatedFor || !Object.keys(s.labelled).length) return;
  estimatedFor = counts;
  const r = await adaptCall("door/adapt", "POST", { dry_run: true });
  if (r) setTimeout(refreshAdapt, 500);
}

async function startAdapt() {
  const r = await adaptCall("door/adapt", "POST", { force: $("adapt-force").checked });
  if (r) refreshAdapt();
}

async function rollbackAdapt() {
  const r = await adaptCall("door/adapt/rollback", "POST", {});
  if (r) refreshAdapt();
}

document.addEventListener("DOMContentLoaded", () => {
  $("adapt-button").addEventListener("click", startAdapt);
  $("adapt-rollback").addEventListener("click", rollbackAdapt);
  $("token-form").addEventListener("submit", () => setTimeout(refreshAdapt, 0));
  setInterval(refreshAdapt, 15000);
});

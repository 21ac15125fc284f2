"use strict";
// The page of 'alzmri serve': everything it needs comes from this server (no CDN).
// A token given as /?token=TOKEN is moved out of the address bar (and so out of the history and
// any copied link) into this tab's session storage.
const token = (() => {
  const params = new URLSearchParams(window.location.search);
  const given = params.get("token");
  if (given === null) return sessionStorage.getItem("alzmri-token");
  sessionStorage.setItem("alzmri-token", given);
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", window.location.pathname + (rest ? "?" + rest : "") + window.location.hash);
  return given;
})();
const headers = token ? { Authorization: "Bearer " + token } : {};
const $ = (id) => document.getElementById(id);
let needsAge = false;

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function dataUrl(base64, type) {
  return "data:" + type + ";base64," + base64;
}

let blobUrls = [];  // the previous result's downloads, released when the next result is shown

function blobUrl(blob) {
  const url = URL.createObjectURL(blob);
  blobUrls.push(url);
  return url;
}

function base64Blob(base64, type) {
  return new Blob([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], { type: type });
}

async function loadModel() {
  try {
    const response = await fetch("/api/model", { headers: headers });
    const body = await response.json();
    if (!response.ok) { status(body.error || response.statusText, true); return; }
    $("model-line").textContent = body.model + " · " + body.classes.join(" / ") + " · " + body.engine;
    $("accepts").textContent = "Accepts a " + body.input + ": " + body.accepts_text + " (up to " + body.max_upload_mb + " MB)." +
      (body.evidence_note ? " " + body.evidence_note : "");
    needsAge = body.needs_age;
    $("age").hidden = $("age-label").hidden = !needsAge;
    $("age").required = needsAge;
  } catch (err) {
    status("cannot reach the server: " + err, true);
  }
}

function show(result) {
  for (const url of blobUrls) URL.revokeObjectURL(url);
  blobUrls = [];
  $("predicted").textContent = result.predicted;
  const rows = $("probabilities").querySelector("tbody");
  rows.replaceChildren();
  for (const name of result.classes) {
    const p = result.probabilities[name];
    const row = document.createElement("tr");
    if (name === result.predicted) row.className = "best";
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = Math.round(p * 200) + "px";
    for (const cell of [name, p.toFixed(3)]) {
      const td = document.createElement("td");
      td.textContent = cell;
      row.appendChild(td);
    }
    const td = document.createElement("td");
    td.appendChild(bar);
    row.appendChild(td);
    rows.appendChild(row);
  }
  const qc = result.qc || {};
  $("qc").textContent = qc.warnings && qc.warnings.length ? "QC warnings: " + qc.warnings.join("; ") : "QC: no warnings (" + (qc.input_shape || "") + " → " + (qc.model_grid || "") + ")";
  $("qc").className = qc.warnings && qc.warnings.length ? "warn" : "";
  $("scan-image").src = dataUrl(result.images.scan, "image/png");
  $("download-scan").href = dataUrl(result.images.scan, "image/png");
  const evidence = result.images.evidence;
  $("evidence-figure").hidden = !evidence;
  $("download-evidence").hidden = !evidence;
  if (evidence) {
    $("evidence-image").src = dataUrl(evidence, "image/png");
    $("download-evidence").href = dataUrl(evidence, "image/png");
    $("evidence-caption").textContent = result.evidence.method + " evidence for " + result.predicted + " over the model's input";
  }
  const nifti = result.evidence && result.evidence.nifti_gz;
  $("download-nifti").hidden = !nifti;
  if (nifti) $("download-nifti").href = blobUrl(base64Blob(nifti, "application/gzip"));
  $("download-json").href = blobUrl(new Blob([JSON.stringify(result, null, 1)], { type: "application/json" }));
  showProgression(result.progression);
  $("result").hidden = false;
}

function showProgression(progression) {
  $("progression").hidden = !progression;
  if (!progression) return;
  $("progression-start").textContent = progression.start_stage || "the input";
  $("progression-note").textContent = [progression.note, progression.caveat].filter(Boolean).join(". ");
  const rows = $("progression-steps").querySelector("tbody");
  rows.replaceChildren();
  for (const step of progression.steps || []) {
    const row = document.createElement("tr");
    for (const cell of [step.stage, step.predicted + " (" + step.probabilities[step.predicted].toFixed(2) + ")", step.mean_abs_change.toFixed(3)]) {
      const td = document.createElement("td");
      td.textContent = cell;
      row.appendChild(td);
    }
    rows.appendChild(row);
  }
  const picture = progression.image;
  $("progression-figure").hidden = $("progression-steps").hidden = !picture;
  $("download-gif").hidden = $("download-progression").hidden = !picture;
  if (!picture) return;
  $("progression-image").src = dataUrl(picture, "image/png");
  $("progression-caption").textContent = "Input, then the image the run generates at each later stage; below, each change from the input";
  $("download-progression").href = dataUrl(picture, "image/png");
  $("download-gif").href = blobUrl(base64Blob(progression.gif, "image/gif"));
}

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) { status("choose a file first", true); return; }
  const form = new FormData();
  form.append("file", file);
  if (needsAge && $("age").value) form.append("age", $("age").value);
  $("submit").disabled = true;
  status("preprocessing and predicting " + file.name + " …", false);
  try {
    const response = await fetch("/api/predict", { method: "POST", body: form, headers: headers });
    const body = await response.json();
    if (!response.ok) { status(body.error || response.statusText, true); return; }
    show(body);
    status("done in " + body.seconds + " s", false);
  } catch (err) {
    status("request failed: " + err, true);
  } finally {
    $("submit").disabled = false;
  }
});

loadModel();

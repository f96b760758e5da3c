// emollm serve: the page. Plain JS, no libraries; every server string goes through textContent (never innerHTML).
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#3559e0", "#e04f35", "#2e9e5b", "#c08a00", "#8e44ad", "#1496b8", "#7a7a7a", "#d6336c"];
const state = { file: null, limits: null, auth: false, recorder: null, chunks: [], timer: null };

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function headers() {
  const key = $("api-key").value.trim() || sessionStorage.getItem("emollm-key") || "";
  return key ? { Authorization: "Bearer " + key } : {};
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setStatus(text) { $("status").textContent = text; }

// ------------------------------------------------------------------------------------------------ start-up
async function init() {
  try {
    const health = await (await fetch("/health")).json();
    state.limits = health.limits;
    state.auth = health.auth;
    $("key-row").hidden = !health.auth;
    $("limits").textContent = `Limits: ${health.limits.max_upload_mb} MB, ${health.limits.max_duration_s} s of media; ` +
      `labels: ${health.labels.join(", ")}.`;
  } catch (e) {
    showError("The server does not answer /health: " + e);
  }
  loadVersion();
  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder) {
    $("record-controls").hidden = false;
  }
}

async function loadVersion() {
  const r = await fetch("/version", { headers: headers() });
  if (r.ok) $("produced-by").textContent = "Server: " + producedByLine((await r.json()).produced_by);
  else if (r.status === 401) $("produced-by").textContent = "Enter the API key to use this server.";
}

function producedByLine(p) {
  if (!p || !p.mode) return "";
  const models = Object.entries(p.models || {}).filter(([, v]) => v && typeof v !== "object")
    .map(([k, v]) => `${k}: ${v}`);
  const enc = p.models && p.models.encoders ? Object.entries(p.models.encoders).map(([k, v]) => `${k}: ${v}`) : [];
  const where = p.checkpoint ? ` (${p.checkpoint})` : "";
  return `${p.mode} mode${where}; ${models.concat(enc).join("; ")}; precision ${p.precision || "?"}`;
}

// ------------------------------------------------------------------------------------------------ input
function choose(file) {
  state.file = file;
  showError("");
  $("analyze").disabled = !file;
  const v = $("preview");
  if (file && (file.type.startsWith("video/") || file.type.startsWith("audio/"))) {
    v.src = URL.createObjectURL(file);
    v.hidden = false;
  } else {
    v.hidden = true;
  }
  if (file && state.limits && file.size > state.limits.max_upload_mb * 1048576) {
    showError(`413: ${file.name} is ${(file.size / 1048576).toFixed(1)} MB, over the server's ` +
      `${state.limits.max_upload_mb} MB limit.`);
    $("analyze").disabled = true;
  }
}

async function startRecording() {
  showError("");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  } catch (e) {
    showError("Cannot use the camera/microphone: " + e.message);
    return;
  }
  const v = $("preview");
  v.srcObject = stream;
  v.hidden = false;
  v.play();
  state.chunks = [];
  const type = ["video/webm;codecs=vp8,opus", "video/webm", "video/mp4"].find((t) => MediaRecorder.isTypeSupported(t));
  state.recorder = new MediaRecorder(stream, type ? { mimeType: type } : undefined);
  state.recorder.ondataavailable = (e) => e.data.size && state.chunks.push(e.data);
  state.recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    v.srcObject = null;
    const mime = state.recorder.mimeType || "video/webm";
    const ext = mime.includes("mp4") ? "mp4" : "webm";
    choose(new File(state.chunks, `recording.${ext}`, { type: mime.split(";")[0] }));
    clearInterval(state.timer);
    $("record").hidden = false;
    $("stop").hidden = true;
  };
  state.recorder.start(250);
  const t0 = Date.now();
  const maxS = Math.min(30, (state.limits && state.limits.max_duration_s) || 30);
  state.timer = setInterval(() => {
    const s = (Date.now() - t0) / 1000;
    $("record-time").textContent = `${s.toFixed(0)} s (stops at ${maxS} s)`;
    if (s >= maxS) stopRecording();
  }, 250);
  $("record").hidden = true;
  $("stop").hidden = false;
}

function stopRecording() {
  if (state.recorder && state.recorder.state !== "inactive") state.recorder.stop();
}

// ------------------------------------------------------------------------------------------------ request
const STATUS_TEXT = {
  400: "The server could not use this file",
  401: "API key needed or wrong",
  413: "Too large",
  503: "The server is busy",
  504: "The analysis timed out",
};

async function analyze() {
  if (!state.file) return;
  const key = $("api-key").value.trim();
  if (key) sessionStorage.setItem("emollm-key", key);
  showError("");
  $("result").hidden = true;  // never show a previous file's result beside this one's error
  $("analyze").disabled = true;
  setStatus("Uploading and analysing…");
  const form = new FormData();
  form.append("file", state.file, state.file.name);
  const subtitle = $("subtitle").value.trim();
  if (subtitle) form.append("subtitle", subtitle);
  const t0 = performance.now();
  try {
    const url = $("want-timeline").checked ? "/v1/analyze?timeline=1" : "/v1/analyze";
    const r = await fetch(url, { method: "POST", body: form, headers: headers() });
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) {
      let msg = `${r.status} ${STATUS_TEXT[r.status] || "Error"}: ${(body && (body.error || body.detail)) || r.statusText}`;
      if (r.status === 503 && r.headers.get("Retry-After")) msg += ` (Retry-After: ${r.headers.get("Retry-After")} s)`;
      if (r.status === 401) $("key-row").hidden = false;
      showError(msg);
      setStatus("");
      return;
    }
    let media = {};
    try { media = JSON.parse(r.headers.get("X-Emollm-Media") || "{}"); } catch (e) { media = {}; }
    setStatus(`Done in ${((performance.now() - t0) / 1000).toFixed(1)} s.`);
    render(body, media);
    loadVersion();
  } catch (e) {
    showError("The request failed (network or server stopped): " + e.message);
    setStatus("");
  } finally {
    $("analyze").disabled = !state.file;
  }
}

// ------------------------------------------------------------------------------------------------ result
function render(res, media) {
  $("result").hidden = false;
  $("result-label").textContent = res.label || "no label";
  $("result-mode").textContent = res.mode + " mode";
  barChart($("prob-chart"), res.probabilities || {}, res.label);
  $("reasoning").textContent = res.reasoning || "(none)";
  $("reasoning-source").textContent = res.reasoning_source || "?";
  $("transcript").textContent = res.subtitle ? `“${res.subtitle}”` : "(no transcript)";
  const miss = $("missing");
  miss.replaceChildren();
  for (const [m, why] of Object.entries(res.missing || {})) {
    const li = document.createElement("li");
    const b = document.createElement("strong");
    b.textContent = m + ": ";
    li.append(b, why);
    miss.append(li);
  }
  if (!miss.children.length) miss.append(Object.assign(document.createElement("li"), { textContent: "none" }));
  const notes = $("notes"); // inputs cut to the prompt's bound (max_text_chars), one line each
  notes.replaceChildren(...(res.notes || []).map((n) => Object.assign(document.createElement("li"), { textContent: n })));
  $("notes-section").hidden = !notes.children.length;
  const face = (res.evidence || {}).face;
  $("face-section").hidden = !face;
  if (face) renderFace(face, media);
  const audio = (res.evidence || {}).audio;
  $("audio-section").hidden = !(audio && audio.tone);
  if (audio && audio.tone) $("tone").textContent = audio.tone;
  $("timeline-section").hidden = !res.timeline;
  if (res.timeline) {
    const tl = res.timeline;
    timelineChart($("timeline-chart"), tl.entries, tl.labels, tl.transcript.words, tl.hop_s);
  }
  const total = res.timings && res.timings.total;
  $("result-produced-by").textContent = "Produced by: " + producedByLine(res.produced_by) +
    (total ? `; ${total.toFixed(2)} s on the server` : "");
  $("raw").textContent = JSON.stringify(res, null, 2);
}

function barChart(box, probs, top) {
  const entries = Object.entries(probs);
  box.replaceChildren();
  if (!entries.length) {
    box.textContent = "No distribution: no modality gave evidence.";
    return;
  }
  const rowH = 26, labelW = 90, barW = 260, W = labelW + barW + 60;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${entries.length * rowH + 4}`, role: "img",
    "aria-label": "label probabilities" });
  entries.forEach(([label, p], i) => {
    const y = i * rowH + 2;
    svg.append(svgEl("text", { x: labelW - 6, y: y + 16, "text-anchor": "end" }, label));
    svg.append(svgEl("rect", { x: labelW, y: y + 3, width: Math.max(1, p * barW), height: rowH - 8, rx: 3,
      class: "bar" + (label === top ? " top" : ""), "data-label": label, "data-p": p }));
    svg.append(svgEl("text", { x: labelW + p * barW + 6, y: y + 16 }, p.toFixed(3)));
  });
  box.append(svg);
}

function renderFace(face, media) {
  const tbody = $("aus").querySelector("tbody");
  tbody.replaceChildren();
  for (const [au, v] of Object.entries(face.aus || {})) {
    const tr = document.createElement("tr");
    for (const text of [au, v.name, Number(v.intensity).toFixed(2)]) {
      tr.append(Object.assign(document.createElement("td"), { textContent: text }));
    }
    tbody.append(tr);
  }
  if (!tbody.children.length) {
    tbody.append(Object.assign(document.createElement("tr"), { textContent: face.aus_missing || "none active" }));
  }
  $("au-label").textContent = face.au_label ? `AU table at the peak: ${face.au_label} (${face.au_strength || "?"})` : "";
  lineChart($("expr-chart"), face.frames || [], face.expression_over_time || [], face.peak_frame);
  drawPeak(face, media);
}

function lineChart(box, frames, rows, peak) {
  box.replaceChildren();
  if (!rows.length) return;
  const names = Object.keys(rows[0]);
  const W = 640, H = 180, L = 34, R = 110, T = 8, B = 24;
  const x0 = frames[0] ?? 0, x1 = frames[frames.length - 1] ?? rows.length - 1;
  const sx = (f) => L + ((f - x0) / Math.max(1, x1 - x0)) * (W - L - R);
  const sy = (p) => T + (1 - p) * (H - T - B);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "expression scores over time" });
  svg.append(svgEl("line", { x1: L, y1: sy(0), x2: W - R, y2: sy(0), class: "axis" }));
  svg.append(svgEl("line", { x1: L, y1: sy(0), x2: L, y2: sy(1), class: "axis" }));
  for (const p of [0, 0.5, 1]) svg.append(svgEl("text", { x: L - 4, y: sy(p) + 4, "text-anchor": "end" }, p));
  svg.append(svgEl("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, "frame"));
  if (peak !== undefined && peak !== null) {
    svg.append(svgEl("line", { x1: sx(peak), y1: sy(0), x2: sx(peak), y2: sy(1), stroke: "#f04438",
      "stroke-dasharray": "4 3" }));
    const right = sx(peak) > (W - R) - 40;
    svg.append(svgEl("text", { x: sx(peak) + (right ? -4 : 4), y: T + 10, "text-anchor": right ? "end" : "start" },
      `peak (${peak})`));
  }
  names.forEach((name, k) => {
    const pts = rows.map((row, i) => `${sx(frames[i] ?? i).toFixed(1)},${sy(row[name]).toFixed(1)}`).join(" ");
    const color = COLORS[k % COLORS.length];
    svg.append(svgEl("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 2, "data-name": name }));
    svg.append(svgEl("rect", { x: W - R + 8, y: T + 3 + k * 16, width: 10, height: 10, style: `fill: ${color}` }));
    svg.append(svgEl("text", { x: W - R + 22, y: T + 12 + k * 16, style: `fill: ${color}` }, name));
  });
  box.append(svg);
}

// The peak frame of the uploaded clip with the face box (coordinates are in the decoded frame: box_scale maps them).
function drawPeak(face, media) {
  const canvas = $("peak-canvas"), caption = $("peak-caption");
  canvas.hidden = true;
  const box = face.face_box, peak = face.peak_frame;
  const numbers = `peak frame ${peak ?? "?"}` + (box ? `, face box (x0, y0, x1, y1) = ${box.join(", ")}` : "");
  caption.textContent = numbers;
  if (!state.file || !box) return;
  const scale = media.box_scale || 1;
  const draw = (src, w, h) => {
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(src, 0, 0, w, h);
    const [x0, y0, x1, y1] = box.map((v) => v / scale);
    ctx.strokeStyle = "#f04438";
    ctx.lineWidth = Math.max(2, w / 160);
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    canvas.hidden = false;
    caption.textContent = numbers + (media.fps ? ` at ${((peak + 0.5) / media.fps).toFixed(2)} s` : "");
  };
  const url = URL.createObjectURL(state.file);
  if (media.kind === "image") {
    const img = new Image();
    img.onload = () => draw(img, img.naturalWidth, img.naturalHeight);
    img.src = url;
  } else if (media.kind === "video" && media.fps) {
    const v = document.createElement("video");
    v.muted = true;
    v.preload = "auto";
    v.onloadeddata = () => { v.currentTime = Math.min((peak + 0.5) / media.fps, Math.max(0, v.duration - 0.01)); };
    v.onseeked = () => draw(v, v.videoWidth, v.videoHeight);
    v.onerror = () => { caption.textContent = numbers + " (this browser cannot decode the clip to show the frame)"; };
    v.src = url;
  }
}

// ------------------------------------------------------------------------------------------------ wiring
$("file").addEventListener("change", (e) => choose(e.target.files[0] || null));
$("analyze").addEventListener("click", analyze);
$("record").addEventListener("click", startRecording);
$("stop").addEventListener("click", stopRecording);
$("api-key").addEventListener("change", loadVersion);
init();

// emollm serve: the live card (camera + microphone -> WS /v1/stream) and the timeline chart (also used for uploads).
// Plain JS, no libraries; server strings go through textContent. Uses $, svgEl, COLORS, barChart from app.js.
"use strict";

const LIVE = {
  ws: null, stream: null, audioCtx: null, node: null, frameTimer: null, canvas: null,
  rate: 16000, samples: 0, pending: [], pendingLen: 0, sentFrames: 0, sentSize: [320, 240],
  entries: [], latencies: [], words: [], labels: [], summary: null, running: false, t0: 0,
};
const LIVE_FPS = 3, CHUNK_S = 0.1;

function liveError(message) {
  const box = $("live-error");
  box.textContent = message || "";
  box.hidden = !message;
}

function liveStatus(text) { $("live-status").textContent = text; }

function liveClock() {
  // The session clock: samples of audio captured so far (audio and frames share it), else wall time.
  return LIVE.audioCtx ? LIVE.samples / LIVE.rate : (performance.now() - LIVE.t0) / 1000;
}

function packMedia(kind, t, payload) {
  const out = new Uint8Array(9 + payload.byteLength);
  out[0] = kind.charCodeAt(0);
  new DataView(out.buffer).setFloat64(1, t, true);
  out.set(new Uint8Array(payload), 9);
  return out.buffer;
}

async function liveStart() {
  liveError("");
  LIVE.entries = []; LIVE.latencies = []; LIVE.words = []; LIVE.summary = null; LIVE.samples = 0;
  LIVE.pending = []; LIVE.pendingLen = 0; LIVE.sentFrames = 0;
  $("live-download").disabled = true;
  $("live-summary").textContent = "";
  $("live-words").textContent = "";
  $("live-tentative").textContent = "";
  try {
    LIVE.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: true });
  } catch (e) {
    liveError("Cannot use the camera/microphone: " + e.message);
    return;
  }
  const v = $("live-video");
  v.srcObject = LIVE.stream;
  await v.play().catch(() => {});
  const audioTrack = LIVE.stream.getAudioTracks()[0];
  if (audioTrack) {
    try {
      LIVE.audioCtx = new AudioContext({ sampleRate: 16000 });
    } catch (e) {
      LIVE.audioCtx = new AudioContext();  // the server resamples other rates
    }
    LIVE.rate = LIVE.audioCtx.sampleRate;
  }
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/v1/stream`);
  ws.binaryType = "arraybuffer";
  LIVE.ws = ws;
  liveStatus("Connecting… (the first session loads the models)");
  ws.onopen = () => {
    const start = { type: "start" };
    if (LIVE.audioCtx) start.audio = { format: "pcm16", sample_rate: LIVE.rate };
    const key = $("api-key").value.trim() || sessionStorage.getItem("emollm-key") || "";
    if (key) start.api_key = key;
    ws.send(JSON.stringify(start));
  };
  ws.onmessage = (e) => liveMessage(JSON.parse(e.data));
  ws.onerror = () => liveError("The live connection failed (is the server running?)");
  ws.onclose = (e) => {
    if (LIVE.running) liveError(`The server closed the session (${e.code}${e.reason ? ": " + e.reason : ""}).`);
    liveTeardown();
  };
  $("live-start").disabled = true;
  $("live-stop").disabled = false;
}

async function liveCapture() {
  // Called once the server is ready: microphone chunks and camera frames, both stamped with the session clock.
  LIVE.running = true;
  LIVE.t0 = performance.now();
  if (LIVE.audioCtx) {
    await LIVE.audioCtx.audioWorklet.addModule("/static/pcm-worklet.js");
    const source = LIVE.audioCtx.createMediaStreamSource(LIVE.stream);
    LIVE.node = new AudioWorkletNode(LIVE.audioCtx, "pcm-capture");
    const mute = LIVE.audioCtx.createGain();
    mute.gain.value = 0;
    source.connect(LIVE.node).connect(mute).connect(LIVE.audioCtx.destination);
    LIVE.node.port.onmessage = (e) => liveAudio(e.data);
    await LIVE.audioCtx.resume();
  }
  LIVE.canvas = document.createElement("canvas");
  LIVE.frameTimer = setInterval(liveFrame, 1000 / LIVE_FPS);
}

function liveAudio(block) {
  if (!LIVE.running || !LIVE.ws || LIVE.ws.readyState !== WebSocket.OPEN) return;
  LIVE.pending.push(block);
  LIVE.pendingLen += block.length;
  if (LIVE.pendingLen < CHUNK_S * LIVE.rate) return;
  const pcm = new Int16Array(LIVE.pendingLen);
  let i = 0;
  for (const b of LIVE.pending) for (const x of b) pcm[i++] = Math.max(-32768, Math.min(32767, Math.round(x * 32767)));
  const t = LIVE.samples / LIVE.rate;
  LIVE.samples += LIVE.pendingLen;
  LIVE.pending = [];
  LIVE.pendingLen = 0;
  LIVE.ws.send(packMedia("A", t, pcm.buffer));
}

function liveFrame() {
  const v = $("live-video");
  if (!LIVE.running || !v.videoWidth || !LIVE.ws || LIVE.ws.readyState !== WebSocket.OPEN) return;
  const scale = Math.min(1, 320 / Math.max(v.videoWidth, v.videoHeight));
  const w = Math.round(v.videoWidth * scale), h = Math.round(v.videoHeight * scale);
  LIVE.canvas.width = w;
  LIVE.canvas.height = h;
  LIVE.canvas.getContext("2d").drawImage(v, 0, 0, w, h);
  const t = liveClock();
  LIVE.sentSize = [w, h];
  LIVE.canvas.toBlob(async (blob) => {
    if (!blob || !LIVE.ws || LIVE.ws.readyState !== WebSocket.OPEN) return;
    LIVE.ws.send(packMedia("V", t, await blob.arrayBuffer()));
    LIVE.sentFrames += 1;
  }, "image/jpeg", 0.8);
}

function liveStop() {
  if (!LIVE.ws || LIVE.ws.readyState !== WebSocket.OPEN) { liveTeardown(); return; }
  liveStatus("Stopping: the server answers the last window and the session's summary…");
  LIVE.running = false;
  clearInterval(LIVE.frameTimer);
  LIVE.ws.send(JSON.stringify({ type: "stop", rationale: $("live-rationale").checked }));
  $("live-stop").disabled = true;
}

function liveTeardown() {
  LIVE.running = false;
  clearInterval(LIVE.frameTimer);
  if (LIVE.node) LIVE.node.port.onmessage = null;
  if (LIVE.audioCtx) LIVE.audioCtx.close().catch(() => {});
  const v = $("live-video");
  if (LIVE.canvas && LIVE.canvas.width) v.poster = LIVE.canvas.toDataURL("image/jpeg");  // keep the last frame shown
  if (LIVE.stream) LIVE.stream.getTracks().forEach((t) => t.stop());
  v.srcObject = null;
  LIVE.audioCtx = null; LIVE.node = null; LIVE.stream = null; LIVE.ws = null;
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
}

function pct(values, q) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
}

function liveMessage(msg) {
  if (msg.type === "ready") {
    LIVE.labels = msg.labels;
    LIVE.hop = msg.hop_s;
    liveStatus(`Live: ${msg.window_s} s windows, one answer every ${msg.hop_s} s` +
      (msg.warm_up_s ? ` (models loaded in ${msg.warm_up_s} s)` : "") + ".");
    liveCapture().catch((e) => liveError("Cannot capture audio: " + e.message));
  } else if (msg.type === "hop") {
    LIVE.entries.push(msg);
    LIVE.latencies.push(msg.latency_ms);
    $("live-label").textContent = msg.label || "no label";
    $("live-window").textContent = `(${msg.start.toFixed(1)}-${msg.end.toFixed(1)} s)`;
    barChart($("live-bars"), msg.probabilities || {}, msg.label);
    $("live-hops").textContent = String(LIVE.entries.length);
    $("live-latency").textContent = `${Math.round(msg.latency_ms)} / ${Math.round(pct(LIVE.latencies, 0.5))} / ` +
      `${Math.round(pct(LIVE.latencies, 0.95))} ms`;
    const f = msg.frames || {};
    $("live-dropped").textContent = `${f.dropped || 0} / ${f.received || 0}` +
      (f.received ? ` (${(100 * (f.dropped_share || 0)).toFixed(0)} %)` : "");
    $("live-skipped").textContent = String(msg.skipped_hops || 0);
    for (const w of msg.transcript_new || []) LIVE.words.push(w);
    $("live-words").textContent = LIVE.words.map((w) => w.word).join(" ");
    const committed = LIVE.words.length ? LIVE.words[LIVE.words.length - 1].end : -1;
    const ev = msg.evidence || {};
    $("live-tentative").textContent = (ev.words || []).filter((w) => w.end > committed).map((w) => w.word).join(" ");
    drawFaceBox(ev.face && ev.face.face_box);
    timelineChart($("live-timeline"), LIVE.entries, LIVE.labels, LIVE.words, LIVE.hop);
  } else if (msg.type === "error") {
    liveError(msg.error);
  } else if (msg.type === "summary") {
    LIVE.summary = msg;
    const lat = msg.latency_ms || {}, f = msg.frames || {};
    $("live-label").textContent = msg.label || "no label";
    $("live-window").textContent = "(whole session)";
    barChart($("live-bars"), msg.probabilities || {}, msg.label);
    $("live-summary").textContent = `Session: ${msg.label || "no label"} over ${msg.media_s} s; ${msg.hops} hops, ` +
      `latency p50 ${lat.p50} ms, p95 ${lat.p95} ms; ${f.dropped} of ${f.received} frames dropped; ${msg.ended}.` +
      (msg.reasoning ? ` Rationale (${msg.reasoning_source}): ${msg.reasoning}` : "");
    if (msg.transcript) $("live-words").textContent = msg.transcript;
    $("live-tentative").textContent = "";
    $("live-download").disabled = !msg.timeline;
    liveStatus("Stopped.");
  }
}

function drawFaceBox(box) {
  const c = $("live-overlay"), v = $("live-video");
  c.width = v.clientWidth;
  c.height = v.clientHeight;
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  if (!box) return;
  const sx = c.width / LIVE.sentSize[0], sy = c.height / LIVE.sentSize[1];
  ctx.strokeStyle = "#f04438";
  ctx.lineWidth = 3;
  ctx.strokeRect(box[0] * sx, box[1] * sy, (box[2] - box[0]) * sx, (box[3] - box[1]) * sy);
}

function liveDownload() {
  const timeline = LIVE.summary && LIVE.summary.timeline;
  if (!timeline) return;
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([JSON.stringify(timeline, null, 2)], { type: "application/json" }));
  a.download = "emollm-timeline.json";
  a.click();
}

// The label probabilities of every window over time (a point at each window's end), a strip with each window's
// label, and the words at their times under the axis.
function timelineChart(box, entries, labels, words, hop) {
  box.replaceChildren();
  if (!entries || !entries.length) return;
  labels = labels && labels.length ? labels : Object.keys(entries[0].probabilities || {});
  const W = 760, L = 34, R = 110, T = 22, PH = 150, B = 22, WH = 44, H = T + PH + B + WH;
  const tMax = Math.max(...entries.map((e) => e.end), ...(words || []).map((w) => w.end), 1);
  const sx = (t) => L + (t / tMax) * (W - L - R);
  const sy = (p) => T + (1 - p) * PH;
  const color = (lab) => COLORS[Math.max(0, labels.indexOf(lab)) % COLORS.length];
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "label probabilities over time" });
  svg.append(svgEl("line", { x1: L, y1: sy(0), x2: W - R, y2: sy(0), class: "axis" }));
  svg.append(svgEl("line", { x1: L, y1: sy(0), x2: L, y2: sy(1), class: "axis" }));
  for (const p of [0, 0.5, 1]) svg.append(svgEl("text", { x: L - 4, y: sy(p) + 4, "text-anchor": "end" }, p));
  const step = tMax > 30 ? 10 : tMax > 10 ? 2 : 1;
  for (let t = 0; t <= tMax + 1e-9; t += step) {
    svg.append(svgEl("text", { x: sx(t), y: T + PH + 14, "text-anchor": "middle" }, `${t}s`));
  }
  entries.forEach((e) => {  // the strip: each window's label over the hop it answered
    const x0 = sx(Math.max(e.start, e.end - (hop || e.end - e.start)));
    svg.append(svgEl("rect", { x: x0, y: 4, width: Math.max(1, sx(e.end) - x0), height: 10, class: "band",
      style: `fill: ${e.label ? color(e.label) : "#d0d5dd"}`, "data-label": e.label || "" }));
  });
  labels.forEach((lab, k) => {
    const pts = entries.filter((e) => e.probabilities && lab in e.probabilities)
      .map((e) => `${sx(e.end).toFixed(1)},${sy(e.probabilities[lab]).toFixed(1)}`).join(" ");
    if (pts) svg.append(svgEl("polyline", { points: pts, fill: "none", stroke: color(lab), "stroke-width": 2,
      "data-name": lab }));
    svg.append(svgEl("rect", { x: W - R + 8, y: T + 3 + k * 16, width: 10, height: 10, style: `fill: ${color(lab)}` }));
    svg.append(svgEl("text", { x: W - R + 22, y: T + 12 + k * 16, style: `fill: ${color(lab)}` }, lab));
  });
  const g = svgEl("g", { class: "words" });
  const rowEnd = [-1e9, -1e9, -1e9];  // where the last word of each row ends (6.2 units a character)
  for (const w of words || []) {  // three rows, so that neighbouring words do not overlap
    const x = sx(w.start);
    let row = rowEnd.findIndex((end) => x >= end + 4);
    if (row < 0) row = rowEnd.indexOf(Math.min(...rowEnd));
    rowEnd[row] = x + 6.2 * w.word.length;
    g.append(svgEl("text", { x, y: T + PH + B + 10 + row * 13, "data-start": w.start }, w.word));
  }
  svg.append(g);
  box.append(svg);
}

$("live-start").addEventListener("click", liveStart);
$("live-stop").addEventListener("click", liveStop);
$("live-download").addEventListener("click", liveDownload);
if (!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.WebSocket && window.AudioWorkletNode)) {
  $("live-start").disabled = true;
  liveStatus("This browser cannot capture live (needs getUserMedia, AudioWorklet and WebSocket).");
}

// The page of daml_tf's camera service: no build step and nothing from the internet, so it
// works on a camera network without one. The chart is drawn on a <canvas> by the few lines
// below instead of a chart library for the same reason (and nothing to vendor and keep patched).
"use strict";

const HISTORY = 300;  // Score points a chart shows.
window.damlScoresReceived = 0;  // Counters the browser test reads from the page itself.
window.damlPictureChanges = 0;
window.damlEventsShown = 0;

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  Object.assign(node, attrs || {});
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawChart(canvas, points, threshold) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  // The scores' own range (and the threshold's): they often sit close to the threshold.
  // (detect without a threshold: no line.)
  const values = points.map(p => p.score).filter(v => v !== null);
  if (threshold !== null) values.push(threshold);
  if (values.length === 0) return;
  let low = Math.min(...values), high = Math.max(...values);
  const pad = Math.max((high - low) * 0.1, Math.abs(high) * 0.01, 1e-12);
  low -= pad; high += pad;
  const y = v => h - 4 - ((v - low) / (high - low)) * (h - 8);
  const x = i => (i / Math.max(HISTORY - 1, 1)) * w;
  if (threshold !== null) {
    ctx.strokeStyle = "#f80"; ctx.setLineDash([6, 4]); ctx.beginPath();
    ctx.moveTo(0, y(threshold)); ctx.lineTo(w, y(threshold)); ctx.stroke(); ctx.setLineDash([]);
    ctx.fillStyle = "#ccc"; ctx.font = "12px sans-serif";
    ctx.fillText("threshold " + threshold.toPrecision(3), 4, Math.max(12, y(threshold) - 4));
  }
  const offset = HISTORY - points.length;
  for (let i = 1; i < points.length; i++) {
    const a = points[i - 1], b = points[i];
    if (a.score === null || b.score === null) continue;
    ctx.strokeStyle = b.alarm ? "#f33" : "#4cf";
    ctx.beginPath(); ctx.moveTo(x(offset + i - 1), y(a.score));
    ctx.lineTo(x(offset + i), y(b.score)); ctx.stroke();
  }
}

function stateText(s) {
  const age = s.last_frame_age_s === null ? "no frame yet" : s.last_frame_age_s.toFixed(1) + " s ago";
  return `${s.camera_fps.toFixed(1)} frames/s · last frame ${age} · reconnects ${s.reconnects}` +
         ` · score ${s.score === null ? "–" : s.score.toPrecision(3)}`;
}

// Whether the picture changed since the last look: drawn on a small canvas and compared.
function watchPicture(img, stateLine) {
  const canvas = el("canvas", {width: 64, height: 36});
  const ctx = canvas.getContext("2d", {willReadFrequently: true});
  let last = "";
  setInterval(() => {
    if (!img.complete || img.naturalWidth === 0) return;
    try { ctx.drawImage(img, 0, 0, 64, 36); } catch (e) { return; }
    const now = ctx.getImageData(0, 0, 64, 36).data.join(",");
    if (last && now !== last) { window.damlPictureChanges++; img.dataset.changes = window.damlPictureChanges; }
    last = now;
  }, 700);
}

function addCamera(name, info) {
  const card = document.getElementById("camera-template").content.firstElementChild.cloneNode(true);
  card.id = "camera-" + name;
  card.querySelector(".name").textContent = name;
  const img = card.querySelector(".live");
  img.src = info.stream;
  const stateLine = card.querySelector(".state");
  stateLine.textContent = stateText(info);
  const canvas = card.querySelector(".chart");
  document.getElementById("cameras").appendChild(card);
  watchPicture(img, stateLine);
  let points = [], threshold = info.threshold;
  const source = new EventSource(info.scores);
  source.addEventListener("hello", e => { threshold = JSON.parse(e.data).threshold; });
  source.addEventListener("scores", e => {
    const batch = JSON.parse(e.data);
    window.damlScoresReceived += batch.length;
    points = points.concat(batch).slice(-HISTORY);
    drawChart(canvas, points, threshold);
    card.dataset.scores = window.damlScoresReceived;
  });
  source.addEventListener("state", e => {
    const s = JSON.parse(e.data);
    stateLine.textContent = stateText(s);
    if (s.alarm) stateLine.appendChild(el("span", {className: "alarm"}, " · ALARM"));
  });
  source.addEventListener("alarm", () => loadEvents());
}

function eventItem(ev) {
  const li = el("li", {id: "event-" + ev.id});
  if (ev.snapshot_url) {
    li.appendChild(el("img", {src: ev.snapshot_url, alt: "snapshot", className: "thumb", loading: "lazy"}));
  }
  const text = el("div");
  const start = new Date(ev.start_time * 1000).toLocaleString();
  text.appendChild(el("div", {}, `${ev.camera} · ${start}`));
  text.appendChild(el("div", {}, ev.end_time === null ? "ongoing" :
      `${(ev.end_time - ev.start_time).toFixed(1)} s · top score ${ev.top_score === null ? "–" : Number(ev.top_score).toPrecision(3)}`));
  if (ev.clip_url) text.appendChild(el("a", {href: ev.clip_url}, "clip"));
  li.appendChild(text);
  return li;
}

let loading = false;
async function loadEvents() {
  if (loading) return;
  loading = true;
  try {
    const events = await (await fetch("/api/events?limit=50")).json();
    const list = document.getElementById("events");
    list.replaceChildren(...events.map(eventItem));
    window.damlEventsShown = events.length;
  } catch (e) { /* The next refresh tries again. */ }
  loading = false;
}

async function loadHealth() {
  const badge = document.getElementById("health");
  try {
    const response = await fetch("/healthz");
    const body = await response.json();
    badge.textContent = response.ok ? "healthy" : "stale: " + Object.keys(body.stale).join(", ");
    badge.className = "badge " + (response.ok ? "ok" : "stale");
  } catch (e) { badge.textContent = "service unreachable"; badge.className = "badge stale"; }
}

async function start() {
  const cameras = await (await fetch("/api/cameras")).json();
  for (const [name, info] of Object.entries(cameras)) addCamera(name, info);
  loadEvents(); loadHealth();
  // Snapshots and clips are written a moment after their alarm's notice: look again.
  setInterval(loadEvents, 5000);
  setInterval(loadHealth, 5000);
}
start();

"""The Live tab's page (served at `/live?key=K` by `live.LiveHub`; the protocol is in live.py's docstring) and the
panel that embeds it in the tab. Plain HTML and JavaScript, no framework; nothing is loaded from elsewhere."""

from __future__ import annotations


def panel_html(key: str) -> str:
    """What the Live tab shows after *Start live*: the page in an iframe allowed to use the camera, and a link."""
    url = f"live?key={key}"
    return (f'<iframe src="{url}" allow="camera" title="live avatar (synthetic)" '
            'style="width:100%;height:760px;border:0"></iframe>'
            f'<p><a href="{url}" target="_blank" rel="noopener">open the live page in its own window</a></p>')


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>talking-heads live (synthetic video)</title>
<meta name="robots" content="noindex">
<style>
body{font-family:system-ui,sans-serif;margin:.5em;color:#222;background:#fff}
#label{display:inline-block;background:#b00;color:#fff;font-weight:bold;padding:.2em .6em;border-radius:4px}
#view{display:block;margin:.6em 0;max-width:100%;background:#222}
#cam{display:none}
button{font-size:1em;padding:.3em 1em}
td{padding:.05em 1em .05em 0} .k{color:#666}
#error{color:#b00;font-weight:bold}
</style></head><body>
<div id="label">SYNTHETIC: the avatar is AI-generated, driven by your camera's face landmarks</div>
<div>
<button id="start">Start camera</button> <button id="stop" disabled>Stop</button>
<label><input type="checkbox" id="side" checked> side by side (camera | avatar)</label>
<label><input type="checkbox" id="mirror" checked> mirror</label>
</div>
<div id="error"></div>
<canvas id="view" width="512" height="256"></canvas>
<video id="cam" playsinline muted></video>
<table>
<tr><td class="k">state</td><td id="state">press Start camera and allow the camera</td></tr>
<tr><td class="k">avatar frames</td><td id="fps">-</td></tr>
<tr><td class="k">latency (camera frame -> avatar on screen)</td><td id="lat">-</td></tr>
<tr><td class="k">server time per frame</td><td id="srv">-</td></tr>
<tr><td class="k">frames dropped (newest frame wins)</td><td id="drop">-</td></tr>
</table>
<script>
"use strict";
const IN_FLIGHT = %IN_FLIGHT%, SEND_WIDTH = %WIDTH%, QUALITY = %QUALITY%;
const key = new URLSearchParams(location.search).get("key");
const $ = (id) => document.getElementById(id);
const set = (id, text) => { $(id).textContent = text; };
const view = $("view"), ctx = view.getContext("2d"), cam = $("cam");
const grab = document.createElement("canvas"), gctx = grab.getContext("2d");
let ws = null, stream = null, nextId = 1, inflight = 0, outSize = 256;
const pending = new Map();  // frame id -> the camera frame sent (drawn beside the avatar it produced)
const shown = [];  // display times (ms) of the last avatar frames
const stats = window.liveStats = {frames: 0, fps: 0, latencyMedian: null, latencies: [], serverMs: null,
                                  dropped: 0, clock: "-", sent: 0, skipped: 0, noFace: 0};
const kept = [];  // canvases holding the frames in flight (reused: no allocation per frame)
function keep(id, w, h) {
  let c = kept.find((k) => !pending.has(k.id));
  if (!c) { c = {id: 0, canvas: document.createElement("canvas")}; kept.push(c); }
  if (c.canvas.width !== w || c.canvas.height !== h) { c.canvas.width = w; c.canvas.height = h; }
  c.canvas.getContext("2d").drawImage(grab, 0, 0);
  c.id = id;
  return c.canvas;
}
const median = (a) => { const b = [...a].sort((x, y) => x - y); return b.length ? b[b.length >> 1] : null; };

function onCameraFrame(now, meta) {
  if (!stream) return;
  cam.requestVideoFrameCallback(onCameraFrame);
  if (!ws || ws.readyState !== 1) return;
  if (inflight >= IN_FLIGHT) { stats.skipped++; return; }
  const captured = (meta && meta.captureTime) ? meta.captureTime : now;
  stats.clock = (meta && meta.captureTime) ? "camera capture time" : "frame callback time";
  const w = Math.min(SEND_WIDTH, cam.videoWidth), h = Math.round(cam.videoHeight * w / cam.videoWidth);
  if (grab.width !== w || grab.height !== h) { grab.width = w; grab.height = h; }
  gctx.save();
  if ($("mirror").checked) { gctx.translate(w, 0); gctx.scale(-1, 1); }
  gctx.drawImage(cam, 0, 0, w, h);
  gctx.restore();
  const id = nextId++;
  inflight++;
  pending.set(id, $("side").checked ? keep(id, w, h) : null);
  grab.toBlob((blob) => {
    if (!blob || !ws || ws.readyState !== 1) { inflight--; pending.delete(id); return; }
    const head = new DataView(new ArrayBuffer(16));
    [0x54, 0x48, 0x4c, 0x31].forEach((c, i) => head.setUint8(i, c));
    head.setUint32(4, id, true);
    head.setFloat64(8, captured, true);
    ws.send(new Blob([head.buffer, blob]));
    stats.sent++;
  }, "image/jpeg", QUALITY);
}

async function onReply(buf) {
  const dv = new DataView(buf);
  const id = dv.getUint32(4, true), captured = dv.getFloat64(8, true), serverMs = dv.getFloat32(16, true);
  const dropped = dv.getUint32(20, true), face = dv.getUint8(24);
  for (const old of pending.keys()) { if (old < id) { pending.delete(old); inflight = Math.max(0, inflight - 1); } }
  const sent = pending.get(id);  // its canvas is not reused before it is drawn (deleted below)
  inflight = Math.max(0, inflight - 1);
  const bitmap = await createImageBitmap(new Blob([buf.slice(25)], {type: "image/jpeg"}));
  outSize = bitmap.width;
  const side = $("side").checked && sent;
  const W = side ? 2 * outSize : outSize;
  if (view.width !== W || view.height !== outSize) { view.width = W; view.height = outSize; }
  if (side) {
    const s = Math.min(outSize / sent.width, outSize / sent.height);
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, outSize, outSize);
    ctx.drawImage(sent, (outSize - sent.width * s) / 2, (outSize - sent.height * s) / 2, sent.width * s, sent.height * s);
  }
  ctx.drawImage(bitmap, side ? outSize : 0, 0);
  bitmap.close();
  pending.delete(id);
  const t = performance.now();
  shown.push(t);
  while (shown.length && shown[0] < t - 2000) shown.shift();
  stats.frames++;
  stats.noFace += face ? 0 : 1;
  stats.fps = shown.length / 2;
  stats.latencies.push(t - captured);
  if (stats.latencies.length > 300) stats.latencies.shift();
  stats.latencyMedian = median(stats.latencies.slice(-60));
  stats.serverMs = serverMs;
  stats.dropped = dropped;
}

function show() {
  set("fps", stats.frames ? stats.fps.toFixed(1) + " frames/s (" + stats.frames + " shown"
      + (stats.noFace ? ", " + stats.noFace + " without a face" : "") + ")" : "-");
  set("lat", stats.latencyMedian === null ? "-" : stats.latencyMedian.toFixed(0) + " ms median of the last 60 ("
      + stats.clock + ")");
  set("srv", stats.serverMs === null ? "-" : stats.serverMs.toFixed(0) + " ms (decode, track, render, encode)");
  set("drop", stats.sent ? stats.dropped + " on the server, " + stats.skipped + " camera frames not sent" : "-");
}
setInterval(show, 500);

function connect() {
  const proto = location.protocol === "https:" ? "wss://" : "ws://";
  ws = new WebSocket(proto + location.host + "/live/ws?key=" + encodeURIComponent(key));
  ws.binaryType = "arraybuffer";
  ws.onopen = () => set("state", "connected");
  ws.onclose = (ev) => { set("state", "disconnected" + (ev.reason ? ": " + ev.reason : "")); stopCamera(); };
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") {
      const m = JSON.parse(ev.data);
      if (m.error) set("error", m.error);
      if (m.ready) set("state", "live");
      return;
    }
    onReply(ev.data).catch((err) => set("error", "could not show a frame: " + err));
  };
}

async function startCamera() {
  set("error", "");
  try {
    stream = await navigator.mediaDevices.getUserMedia({video: {width: {ideal: 640}, height: {ideal: 480},
                                                                frameRate: {ideal: 30}}, audio: false});
  } catch (err) {
    set("error", "no camera: " + err.message + " (allow the camera for this page, or connect one)");
    return;
  }
  cam.srcObject = stream;
  await cam.play();
  inflight = 0; pending.clear();
  connect();
  cam.requestVideoFrameCallback(onCameraFrame);
  $("start").disabled = true; $("stop").disabled = false;
}

function stopCamera() {
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  if (ws && ws.readyState <= 1) ws.close();
  $("start").disabled = false; $("stop").disabled = true;
}

$("start").onclick = startCamera;
$("stop").onclick = stopCamera;
</script></body></html>
"""

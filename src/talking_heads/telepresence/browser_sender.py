"""`talking-heads send --browser`: the sending side of a call as a web page, the camera and the microphone in the
browser (docs/telepresence.md, "A call in the browser").

The command serves a page on this machine (127.0.0.1 by default; `GET /?key=K`, K random and printed) whose
WebSocket (`/capture?key=K`) carries, from the page to this process:
- `THL1` | u32 frame id | f64 capture time (ms, wall clock) | JPEG of a camera frame (the Live tab's format,
  with a wall-clock time instead of the page's clock);
- `THM1` | f64 capture time of the first sample (ms, wall clock) | int16 PCM, 48 kHz mono (the microphone).
This process does what `send --camera` does with them: the newest camera frame is tracked (`BrowserSource`,
the `send` loop's source: a frame replaced before it was tracked counts as skipped), coded and sent to the
receiver over the authenticated WebSocket; the microphone goes as Opus on the voice connection (`voice.py`).
The token stays in this process: the page never sees it. Both clocks are this machine's wall clock, so the
receiver plays voice and pictures in step.
"""

from __future__ import annotations

import asyncio
import http
import logging
import secrets
import struct
import threading
import time
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from ..live import LatestSlot
from ..web.live import FrameError, decode_jpeg, parse_frame
from ..web.settings import WebSettings
from .access import token_matches
from .transport import _html

log = logging.getLogger(__name__)

MIC_MAGIC = b"THM1"
MIC_HEADER = struct.Struct("<4sd")
MAX_MESSAGE = 2_000_000  # bytes: a camera frame (checked again by parse_frame) or 0.1-1 s of sound
CAPTURE_PATH = "/capture"


class BrowserSource:
    """The page's camera as a `send` source: `frames()` yields the newest frame the page sent (RGB), with its
    capture time; the page's microphone as an async iterator of (capture ms, PCM) (`voice()`)."""

    def __init__(self, fps: float = 30.0, seconds: float | None = None):
        self.fps = fps
        self.frame_size = (0, 0)
        self.seconds = seconds
        self.skipped = 0  # frames replaced by a newer one before they were tracked
        self.t0: float | None = None
        self.slot = LatestSlot()
        self.mic: asyncio.Queue = asyncio.Queue(maxsize=100)  # 2 s of 20 ms chunks; older ones are dropped
        self.ended = threading.Event()
        self.settings = WebSettings()

    # --- from the page (event loop) ---
    def camera(self, data: bytes) -> None:
        _, capture_ms, payload = parse_frame(data, self.settings)
        if self.slot.put((capture_ms, payload)):
            self.skipped += 1

    def microphone(self, data: bytes) -> None:
        if len(data) <= MIC_HEADER.size or (len(data) - MIC_HEADER.size) % 2:
            raise FrameError("not a microphone chunk of this page")
        _, capture_ms = MIC_HEADER.unpack_from(data)
        pcm = np.frombuffer(data, "<i2", offset=MIC_HEADER.size).astype(np.int16)
        if self.mic.full():
            self.mic.get_nowait()
        self.mic.put_nowait((capture_ms, pcm))

    def end(self) -> None:
        self.ended.set()
        self.slot.close()
        try:
            self.mic.put_nowait(None)
        except asyncio.QueueFull:
            self.mic.get_nowait()
            self.mic.put_nowait(None)

    # --- to `send` ---
    def frames(self) -> Iterator[tuple[int, np.ndarray, float]]:
        """(index, RGB frame, capture time s) of the newest frames, until the page leaves or `seconds` have passed
        since its first frame (the page may be opened long after the command started)."""
        i, start = 0, None
        while not self.ended.is_set() and (self.seconds is None or start is None or time.time() - start < self.seconds):
            item = self.slot.take(0.2)
            if item is None:
                continue
            capture_ms, payload = item
            try:
                frame = decode_jpeg(payload)
            except FrameError:
                continue
            if self.t0 is None:
                self.t0, start = capture_ms / 1000.0, time.time()
            yield i, frame, capture_ms / 1000.0
            i += 1

    async def voice(self):
        while (item := await self.mic.get()) is not None:
            yield item


class CapturePage:
    """The page's server (module docstring): `await start(host, port)`, then the page feeds `source`."""

    def __init__(self, source: BrowserSource):
        self.source = source
        self.key = secrets.token_urlsafe(16)
        self.connected = asyncio.Event()
        self.bad = 0
        self.server = None

    async def start(self, host: str, port: int) -> int:
        self.server = await serve(self._handler, host, port, process_request=self._process_request,
                                  compression=None, max_size=MAX_MESSAGE, max_queue=8, open_timeout=5,
                                  server_header=None)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def _process_request(self, connection, request):
        url = urlsplit(request.path)
        if url.path not in ("/", CAPTURE_PATH):
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        if not token_matches(parse_qs(url.query).get("key", [None])[0], self.key):
            return connection.respond(http.HTTPStatus.FORBIDDEN, "this page needs the key `send` printed\n")
        if url.path == "/":
            return _html(connection, PAGE, media=True)
        return None

    async def _handler(self, connection) -> None:
        if self.connected.is_set():  # one page at a time
            await connection.close(1013, "another page is sending")
            return
        self.connected.set()
        try:
            async for message in connection:
                try:
                    if isinstance(message, str):
                        raise FrameError("text is not a camera frame")
                    (self.source.camera if message[:4] != MIC_MAGIC else self.source.microphone)(message)
                except FrameError as err:
                    self.bad += 1
                    await connection.send(f'{{"error": "{err}"}}')
                    if self.bad >= self.source.settings.live_bad_frames:
                        await connection.close(1008, "bad frames")
                        break
        except ConnectionClosed:
            pass
        finally:
            self.source.end()


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>talking-heads: send (camera and microphone)</title>
<meta name="robots" content="noindex">
<style>
body{font-family:system-ui,sans-serif;margin:1em;color:#222}
#cam{width:320px;background:#222;transform:scaleX(-1)}
button{font-size:1em;padding:.3em 1em} td{padding:.05em 1em .05em 0} .k{color:#666} #error{color:#b00}
</style></head><body>
<h1>talking-heads: the sending side of a call</h1>
<p>Your camera's face landmarks and your microphone go to <b>this machine's</b> <code>talking-heads send</code>,
which sends the landmarks (a few hundred bits per frame) and your voice (Opus) to the receiver; no video leaves
this machine. The receiver shows an AI-generated avatar, not you.</p>
<button id="start">Start camera and microphone</button> <button id="stop" disabled>Stop</button>
<div id="error"></div>
<video id="cam" playsinline muted></video>
<table>
<tr><td class="k">state</td><td id="state">press Start and allow the camera and the microphone</td></tr>
<tr><td class="k">camera frames sent</td><td id="frames">-</td></tr>
<tr><td class="k">microphone</td><td id="mic">-</td></tr>
</table>
<script>
"use strict";
const params = new URLSearchParams(location.search);
const key = params.get("key");
// echo cancellation, noise suppression and gain control on (a call through loudspeakers), off with &raw=1
const ECHO = params.get("raw") !== "1";
const $ = (id) => document.getElementById(id);
const set = (id, text) => { $(id).textContent = text; };
const cam = $("cam"), grab = document.createElement("canvas"), gctx = grab.getContext("2d");
const stats = window.senderStats = {frames: 0, chunks: 0, busy: 0};
let ws = null, stream = null, actx = null, nextId = 1, encoding = false;
const wall = () => performance.timeOrigin + performance.now();

function onCameraFrame(now, meta) {
  if (!stream) return;
  cam.requestVideoFrameCallback(onCameraFrame);
  if (!ws || ws.readyState !== 1) return;
  if (encoding || ws.bufferedAmount > 200000) { stats.busy++; return; }  // never queue: the newest frame wins
  const captured = performance.timeOrigin + ((meta && meta.captureTime) ? meta.captureTime : now);
  const w = Math.min(480, cam.videoWidth), h = Math.round(cam.videoHeight * w / cam.videoWidth);
  if (grab.width !== w || grab.height !== h) { grab.width = w; grab.height = h; }
  gctx.drawImage(cam, 0, 0, w, h);
  encoding = true;
  const id = nextId++;
  grab.toBlob((blob) => {
    encoding = false;
    if (!blob || !ws || ws.readyState !== 1) return;
    const head = new DataView(new ArrayBuffer(16));
    [0x54, 0x48, 0x4c, 0x31].forEach((c, i) => head.setUint8(i, c));
    head.setUint32(4, id, true);
    head.setFloat64(8, captured, true);
    ws.send(new Blob([head.buffer, blob]));
    stats.frames++;
    set("frames", stats.frames + " (" + stats.busy + " skipped while busy)");
  }, "image/jpeg", 0.8);
}

const WORKLET = `class Tap extends AudioWorkletProcessor {
  process(inputs) { const x = inputs[0][0]; if (x) this.port.postMessage([currentTime, x.slice(0)]); return true; }
}
registerProcessor("tap", Tap);`;
let pending = [], pendingStart = null, nextMs = null;
function onSound(ev) {
  const [t, x] = ev.data;  // the audio clock's time of this block's first sample, 128 samples
  if (pendingStart === null) {
    // the sound is continuous: each chunk starts 20 ms after the last, re-anchored on the wall clock (through
    // the audio clock's output timestamp) only when they drift apart by more than 100 ms
    const stamp = actx.getOutputTimestamp();
    const ms = performance.timeOrigin + stamp.performanceTime + (t - stamp.contextTime) * 1000;
    if (nextMs === null || Math.abs(ms - nextMs) > 100) nextMs = ms;
    pendingStart = nextMs;
  }
  for (let i = 0; i < x.length; i++) pending.push(Math.max(-32768, Math.min(32767, Math.round(x[i] * 32767))));
  if (pending.length < 960) return;  // 20 ms chunks
  const head = new DataView(new ArrayBuffer(12));
  [0x54, 0x48, 0x4d, 0x31].forEach((c, i) => head.setUint8(i, c));
  head.setFloat64(4, pendingStart, true);
  const pcm = Int16Array.from(pending);
  if (ws && ws.readyState === 1) { ws.send(new Blob([head.buffer, pcm.buffer])); stats.chunks++; }
  nextMs = pendingStart + 1000 * pending.length / 48000;
  pending = []; pendingStart = null;
  set("mic", stats.chunks + " chunks of 20 ms sent");
}

async function start() {
  set("error", "");
  try {
    stream = await navigator.mediaDevices.getUserMedia({video: {width: {ideal: 640}, height: {ideal: 480}},
                                                        audio: {channelCount: 1, echoCancellation: ECHO, noiseSuppression: ECHO, autoGainControl: ECHO}});
  } catch (err) {
    set("error", "no camera or microphone: " + err.message + " (allow them for this page)");
    return;
  }
  cam.srcObject = stream;
  await cam.play();
  ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/capture?key="
                     + encodeURIComponent(key));
  ws.onopen = () => set("state", "sending");
  ws.onclose = (ev) => set("state", "stopped" + (ev.reason ? ": " + ev.reason : ""));
  ws.onmessage = (ev) => { try { set("error", JSON.parse(ev.data).error || ""); } catch (e) {} };
  actx = new AudioContext({sampleRate: 48000});
  await actx.audioWorklet.addModule(URL.createObjectURL(new Blob([WORKLET], {type: "text/javascript"})));
  const tap = new AudioWorkletNode(actx, "tap");
  tap.port.onmessage = onSound;
  actx.createMediaStreamSource(stream).connect(tap);
  await actx.resume();
  cam.requestVideoFrameCallback(onCameraFrame);
  $("start").disabled = true; $("stop").disabled = false;
}

function stop() {
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  if (actx) actx.close();
  if (ws) ws.close();
  $("start").disabled = false; $("stop").disabled = true;
}
$("start").onclick = start;
$("stop").onclick = stop;
</script></body></html>
"""

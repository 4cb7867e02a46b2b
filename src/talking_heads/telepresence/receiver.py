"""The receiving end: packets in, the avatar's live picture out.

Three threads of work, each with bounded buffers:
- the event loop (`transport.PacketServer`) authenticates, limits and receives packets, and decodes each one
  at once (`codec.LandmarkDecoder`, cheap): statistics stay exact even when frames are dropped;
- the renderer takes the newest decoded frame from a one-frame slot and drives the avatar with the
  pipeline's live stage (`live.LiveStage`: adaptation to the avatar, render). A frame that is replaced in
  the slot before the renderer got to it is stale and counted as dropped: the receiver never builds a
  backlog, whatever the sender's rate and the renderer's speed;
- the recorder (with `out`) writes the rendered frames to a labelled H.264 mp4 (`media.VideoWriter`:
  synthetic marker and watermark on every frame) at the stream's frame rate, each frame at the video frame of
  its capture time (the sender's clock: frames the sender skipped, or the receiver dropped, hold the last
  picture), so a 20 s call records 20 s. A sender that reconnects starts a new segment right after the last.
The page (`page_html`) shows the newest picture (watermarked JPEG, with a visible "synthetic" label), plays the
sender's voice (voice.py) in step with it (each sound chunk at its capture time plus the pictures' delay and a
40 ms jitter buffer; "Sound on": browsers start sound only after a click), and shows the
current rendering fps, end-to-end latency (capture on the sender -> rendered here, on one wall clock: exact on
loopback, plus the clock offset between two machines) and received bitrate (codec bytes).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import struct
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import provenance
from ..data.crop import CropTransform
from ..live import REFERENCE_SECONDS, LatestSlot
from ..media import VideoWriter, add_voice
from .codec import CodecError, Frame, LandmarkDecoder, StreamGap
from .settings import TelepresenceConfig
from .transport import PacketServer, PacketSink, ws_header_bytes
from .voice import RATE as VOICE_RATE
from .voice import VoiceDecoder, VoiceError, VoiceRecording

log = logging.getLogger(__name__)


@dataclass
class ReceiverStats:
    """Counters of a receiver's run (all streams); `snapshot()` adds the windowed rates."""

    streams: int = 0  # sender connections served
    packets: int = 0  # packets received from authenticated senders
    bytes: int = 0  # their codec bytes
    wire_bytes: int = 0  # the same with their WebSocket framing (TCP/IP headers not counted)
    decoded: int = 0  # frames decoded
    bad_packets: int = 0  # undecodable packets (gaps included)
    gaps: int = 0  # delta frames out of sequence (on a WebSocket, which loses nothing: damaged or forged)
    rendered: int = 0  # frames rendered
    dropped: int = 0  # decoded frames replaced by a newer one before they could be rendered
    out_of_order: int = 0  # rendered frames whose sequence number did not increase (must stay 0)
    recorded: int = 0  # video frames written to the mp4
    voice_packets: int = 0  # voice packets decoded (voice.py)
    voice_bytes: int = 0  # their bytes
    voice_bad: int = 0  # voice packets that could not be decoded
    voice_seconds: float = 0.0  # sound placed in the recording
    last_rendered_seq: int | None = None
    latency_ms: float | None = None  # mean over the last RATE_WINDOW seconds of rendered frames
    latency_max_ms: float | None = None  # largest latency of the run
    fps: float = 0.0  # rendered frames per second over the window
    kbps: float = 0.0  # received codec kbit/s over the window
    last_reason: str = ""  # why the last stream ended
    latencies: deque = field(default_factory=lambda: deque(maxlen=2000))  # ms, the last rendered frames

    def snapshot(self) -> dict:
        d = asdict(self)
        lat = np.asarray(d.pop("latencies"), np.float64)
        d["latency_run_mean_ms"] = float(lat.mean()) if lat.size else None  # over the last 2,000 rendered frames
        d["latency_p95_ms"] = float(np.percentile(lat, 95)) if lat.size else None
        return d


RATE_WINDOW = 3.0  # s over which fps, bitrate and latency are averaged on the page
MAX_GAP_MS = 600_000  # a sender back within 10 min (its clock says) continues the recording's timeline
FRAME_MAGIC, AUDIO_MAGIC = b"THF1", b"THA1"  # the page's binary messages: frame | ts | JPEG, voice | ts | PCM


class _Window:
    """Events (time, value) of the last RATE_WINDOW seconds; bounded."""

    def __init__(self):
        self.items: deque = deque(maxlen=4096)

    def add(self, value: float, now: float) -> None:
        self.items.append((now, value))

    def values(self, now: float) -> list[float]:
        while self.items and self.items[0][0] < now - RATE_WINDOW:
            self.items.popleft()
        return [v for _, v in self.items]


class Recorder(threading.Thread):
    """Writes (slot, picture) pairs to a labelled mp4, holding the previous picture over skipped slots."""

    def __init__(self, path: Path, fps: float, maxsize: int):
        super().__init__(name="telepresence-recorder", daemon=True)
        self.path, self.fps = Path(path), fps
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.frames = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        previous, written = None, -1
        try:
            with VideoWriter(self.path, self.fps) as writer:
                while True:
                    item = self.queue.get()
                    if item is None:
                        break
                    slot, image = item
                    if slot <= written:  # two frames captured within one video frame: the first is kept
                        continue
                    while previous is not None and written + 1 < slot:  # dropped frames: hold the last picture
                        writer.write(previous)
                        written += 1
                    writer.write(image)
                    previous, written = image, slot
                    self.frames = writer.frames
                if writer.frames == 0:
                    raise ValueError("no frame was rendered: nothing to record")
            self.frames = writer.frames
        except BaseException as err:  # reported by finish(); the writer left no partial file
            self.error = err
            while self.queue.get() is not None:  # let the renderer go on
                pass

    def finish(self) -> None:
        self.queue.put(None)
        self.join()


class Receiver(PacketSink):
    """Decode, render, record, publish (module docstring). `pipe` and `avatar` are the pipeline's."""

    def __init__(self, pipe, avatar, *, settings: TelepresenceConfig | None = None, bases=None, adapt: bool = True,
                 smooth: bool = False, out: str | Path | None = None, fps: float = 25.0, once: bool = False):
        self.pipe, self.avatar, self.adapt, self.smooth = pipe, avatar, adapt, smooth
        self.settings = settings or TelepresenceConfig()
        self.bases = bases
        self.out = Path(out) if out is not None else None
        self.record_fps = fps  # of the mp4: the first stream's frame rate (from its key frames)
        self.once = once
        self.stats = ReceiverStats()
        self.server: PacketServer | None = None
        self.slot = LatestSlot()
        self.done = threading.Event()  # with once: the first stream has ended and its frames are rendered
        self._decoder: LandmarkDecoder | None = None
        self._stream_id = 0  # of the connected (or last) sender, set by the event loop
        self._stream_first_ms: int | None = None  # capture time of the stream's first frame (sender clock)
        # the recording's clock (ms from the run's first frame): a stream starts at its own capture time when
        # the sender's clock says it came back within MAX_GAP_MS (a reconnection: the pause is recorded),
        # else right after what was recorded before (another sender, another clock)
        self._run_first_ms: int | None = None
        self._stream_rec_ms = 0.0  # recording ms of the current stream's first frame
        self._rec_end_ms = 0.0  # recording ms after the last frame so far
        self._voice_decoder: VoiceDecoder | None = None
        self._voice_rec = VoiceRecording()
        self._ended = 0  # id of the last stream whose connection ended
        self._recorder: Recorder | None = None
        self._bytes, self._renders, self._lat = _Window(), _Window(), _Window()
        self._lock = threading.Lock()
        self._render_thread = threading.Thread(target=self._render_loop, name="telepresence-render", daemon=True)
        self._stopping = False
        self.error: BaseException | None = None
        # renderer state (renderer thread only)
        self._live = None
        self._live_stream = 0  # stream the live stage belongs to

    # --- PacketSink (event loop thread) ---
    def open_stream(self, peer: str) -> None:
        self._stream_id += 1
        self._stream_first_ms = None
        self._decoder = LandmarkDecoder(self.bases)
        self.stats.streams += 1
        log.info("sender connected from %s", peer)

    def packet(self, data: bytes) -> bool:
        s = self.stats
        now = time.monotonic()
        with self._lock:
            s.packets += 1
            s.bytes += len(data)
            s.wire_bytes += len(data) + ws_header_bytes(len(data), masked=True)
            self._bytes.add(len(data), now)
        try:
            frame = self._decoder.decode(data)
        except StreamGap:  # TCP delivers every packet in order: a gap is a damaged or forged packet
            s.gaps += 1
            s.bad_packets += 1
            return False
        except CodecError as err:
            s.bad_packets += 1
            log.debug("bad packet: %s", err)
            return False
        s.decoded += 1
        if self._stream_first_ms is None:
            self._start_stream(frame)
        rec_ms = self._stream_rec_ms + max(0, _seq_after(self._stream_first_ms, frame.timestamp_ms))
        self._rec_end_ms = max(self._rec_end_ms, rec_ms + 1000.0 / frame.fps)
        if frame.end and frame.points is None:
            return True  # the end-of-stream marker: nothing to show
        if self.slot.put((self._stream_id, rec_ms, frame)):
            s.dropped += 1
        return True

    def _start_stream(self, frame: Frame) -> None:
        """The recording's clock for a new stream (see __init__)."""
        self._stream_first_ms = frame.timestamp_ms
        if self._run_first_ms is None:
            self._run_first_ms, self._stream_rec_ms = frame.timestamp_ms, 0.0
            if self._recorder is None:
                self.record_fps = frame.fps
            return
        since = _seq_after(self._run_first_ms, frame.timestamp_ms)
        self._stream_rec_ms = float(since) if self._rec_end_ms <= since <= self._rec_end_ms + MAX_GAP_MS \
            else self._rec_end_ms

    def open_voice(self, peer: str) -> None:
        self._voice_decoder = VoiceDecoder()
        log.info("voice connected from %s", peer)

    def voice(self, data: bytes) -> bool:
        """A voice packet: decoded, sent to the pages, placed in the recording by its capture time."""
        s = self.stats
        try:
            ts, pcm = self._voice_decoder.decode(data)
        except VoiceError as err:
            s.voice_bad += 1
            log.debug("bad voice packet: %s", err)
            return False
        s.voice_packets += 1
        s.voice_bytes += len(data)
        s.wire_bytes += len(data) + ws_header_bytes(len(data), masked=True)
        if self.server is not None and self.server.viewers:
            self.server.publish_audio(AUDIO_MAGIC + struct.pack("<I", ts) + pcm.astype("<i2").tobytes())
        if self.out is not None and self._stream_first_ms is not None:
            self._voice_rec.add(self._stream_rec_ms + _seq_after(self._stream_first_ms, ts), pcm)
            s.voice_seconds = self._voice_rec.length / VOICE_RATE
        return True

    def close_stream(self, reason: str) -> None:
        self.stats.last_reason = reason
        log.info("sender disconnected: %s", reason)
        self._ended = self._stream_id

    # --- renderer thread ---
    def _render_loop(self) -> None:
        try:
            while not self._stopping:
                ended = self.once and self._ended and self._ended == self._stream_id  # read before taking
                item = self.slot.take(0.1)
                if item is not None:
                    self._render(*item)
                elif ended:  # every frame of the ended stream was put before it ended: all are rendered
                    self.done.set()
        except BaseException as err:  # reported by run(); stop serving
            self.error = err
            log.exception("renderer failed")
            self.done.set()

    def _render(self, stream: int, rec_ms: float, frame: Frame) -> None:
        s = self.stats
        if stream != self._live_stream:  # a new sender: a new reference frame, a new segment of the video
            self._live = self.pipe.live(self.avatar, adapt=self.adapt, smooth=self.smooth, fps=frame.fps,
                                        eye_contact=self.settings.eye_contact,
                                        reference_seconds=REFERENCE_SECONDS if self.settings.reference == "auto" else 0)
            self._live_stream = stream
            with self._lock:
                s.last_rendered_seq = None
        points = None
        if frame.points is not None:  # with the iris centres placed by the sender's gaze (v3; NaN: not seen)
            c = frame.crop
            points = CropTransform(c.x0, c.y0, c.side, c.size, 0, 0).to_frame(frame.points_with_iris())  # sender px
        image = self._live.step(points, t=frame.timestamp_ms / 1000.0)
        now = time.monotonic()
        latency = _ms_since(frame.timestamp_ms)
        with self._lock:
            if s.last_rendered_seq is not None and _seq_after(s.last_rendered_seq, frame.seq) <= 0:
                s.out_of_order += 1
            s.last_rendered_seq = frame.seq
            s.rendered += 1
            s.latencies.append(latency)
            s.latency_max_ms = latency if s.latency_max_ms is None else max(s.latency_max_ms, latency)
            self._renders.add(1, now)
            self._lat.add(latency, now)
        if self.out is not None:
            if self._recorder is None:
                self._recorder = Recorder(self.out, self.record_fps, self.settings.record_queue)
                self._recorder.start()
            slot = int(round(rec_ms * self.record_fps / 1000))
            self._recorder.queue.put((slot, image))
        if self.server is not None and self.server.viewers:
            self.server.publish_frame(FRAME_MAGIC + struct.pack("<I", frame.timestamp_ms)
                                      + provenance.labelled_jpeg(image, self.settings.jpeg_quality))

    # --- statistics ---
    def snapshot(self) -> dict:
        s = self.stats
        now = time.monotonic()
        with self._lock:
            lat = self._lat.values(now)
            s.fps = len(self._renders.values(now)) / RATE_WINDOW
            s.kbps = sum(self._bytes.values(now)) * 8 / RATE_WINDOW / 1000
            s.latency_ms = float(np.mean(lat)) if lat else None
            s.recorded = self._recorder.frames if self._recorder is not None else 0
            snap = s.snapshot()
        if self.server is not None:
            snap["refused"] = asdict(self.server.counts)
        return snap

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.stats_interval)
            if self.server is not None and self.server.viewers:
                self.server.publish_stats(self.snapshot())

    # --- running ---
    async def run(self, token: str, *, host: str, port: int, ssl_context=None, ready=None,
                  stop: asyncio.Event | None = None) -> dict:
        """Serve until `stop` is set (or, with once, until the first stream ended); returns the final
        statistics. ready(port, view_key) is called once listening."""
        self.server = PacketServer(self, token, self.settings, page=page_html, ssl_context=ssl_context)
        self._render_thread.start()
        stats_task = asyncio.create_task(self._stats_loop())
        try:
            bound = await self.server.start(host, port)
            if ready is not None:
                ready(bound, self.server.view_key)
            stop = stop or asyncio.Event()
            done = asyncio.ensure_future(asyncio.to_thread(self.done.wait))
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({done, stopper}, return_when=asyncio.FIRST_COMPLETED)
            self.done.set()
            for task in (done, stopper):
                task.cancel()
        finally:
            stats_task.cancel()
            await self.server.close()
            self._stopping = True
            self.slot.close()
            self._render_thread.join()
            if self.slot.take(0) is not None:  # stopped with a frame still waiting: it was never shown
                self.stats.dropped += 1
            if self._recorder is not None:
                self._recorder.finish()
                if self._recorder.error is None and self._voice_rec.length:  # the voice, in step with the video
                    await asyncio.to_thread(add_voice, self.out, self._voice_rec.pcm(), VOICE_RATE, self.out)
            self._voice_rec.close()
        if self.error is not None:
            raise self.error
        if self._recorder is not None and self._recorder.error is not None:
            raise self._recorder.error
        return self.snapshot()


def _ms_since(timestamp_ms: int) -> float:
    """Now minus a capture timestamp (wall clock ms mod 2^32), as a signed difference."""
    d = (int(time.time() * 1000) - timestamp_ms) & 0xFFFFFFFF
    return float(d - (1 << 32) if d >= 1 << 31 else d)


def _seq_after(a: int, b: int) -> int:
    """b - a for 32-bit sequence numbers or millisecond timestamps (signed)."""
    d = (b - a) & 0xFFFFFFFF
    return d - (1 << 32) if d >= 1 << 31 else d


def page_html(view_key: str) -> str:
    """The receiver's page: the live picture, labelled synthetic, and its statistics."""
    return _PAGE.replace("%KEY%", view_key)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>talking-heads receiver (synthetic video)</title>
<meta name="robots" content="noindex">
<style>
body{font-family:system-ui,sans-serif;background:#111;color:#eee;margin:2em}
#label{display:inline-block;background:#b00;color:#fff;font-weight:bold;padding:.3em .7em;border-radius:4px}
#frame{display:block;margin:1em 0;width:512px;height:512px;background:#222;image-rendering:auto}
td{padding:.1em 1em .1em 0} .k{color:#aaa}
</style></head><body>
<h1>talking-heads receiver</h1>
<div id="label">SYNTHETIC: an AI-generated avatar driven by received face landmarks, not a camera picture</div>
<img id="frame" alt="the avatar rendered from the received landmarks (synthetic)">
<table>
<tr><td class="k">state</td><td id="state">connecting</td></tr>
<tr><td class="k">rendering</td><td id="fps">-</td></tr>
<tr><td class="k">end-to-end latency</td><td id="lat">-</td></tr>
<tr><td class="k">received bitrate</td><td id="kbps">-</td></tr>
<tr><td class="k">frames</td><td id="frames">-</td></tr>
<tr><td class="k">refused</td><td id="refused">-</td></tr>
<tr><td class="k">voice</td><td id="voice">-</td></tr>
<tr><td class="k">sound</td><td><span id="sound">off</span> <button id="sound-on">Sound on</button></td></tr>
</table>
<script>
const key = "%KEY%";
const img = document.getElementById("frame");
const proto = location.protocol === "https:" ? "wss://" : "ws://";
const ws = new WebSocket(proto + location.host + "/view?key=" + encodeURIComponent(key));
ws.binaryType = "arraybuffer";
let url = null;
const set = (id, text) => document.getElementById(id).textContent = text;
const now32 = () => (Date.now() % 4294967296);  // the wall clock, as the sender's timestamps (ms mod 2^32)
const since = (ts) => { let d = (now32() - ts) % 4294967296; if (d < 0) d += 4294967296; return d >= 2147483648 ? d - 4294967296 : d; };
const median = (a) => { const b = [...a].sort((x, y) => x - y); return b.length ? b[b.length >> 1] : null; };
// the voice plays in step with the pictures: each chunk at its capture time plus the pictures' delay (median
// of the last 50 frames: the renderer's latency, and the clock offset between the machines) or the voice's own
// delay when that is longer, plus MARGIN ms of jitter buffer
const MARGIN = 40;
const voice = window.voiceStats = {chunks: 0, late: 0, played: [], avOffsetMs: null, on: false};
const videoDelays = [], voiceDelays = [];
let actx = null, offsets = [];
function soundOn() {
  if (!actx) actx = new AudioContext({sampleRate: 48000});
  actx.resume();
  voice.on = true;
  set("sound", "on");
}
document.getElementById("sound-on").onclick = soundOn;
function playVoice(buf) {
  const dv = new DataView(buf);
  const ts = dv.getUint32(4, true);
  voiceDelays.push(since(ts)); if (voiceDelays.length > 50) voiceDelays.shift();
  voice.chunks++;
  if (!actx || actx.state !== "running") return;
  const pcm = new Int16Array(buf, 8);
  let sum = 0;
  const f = new Float32Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) { f[i] = pcm[i] / 32768; sum += f[i] * f[i]; }
  const delay = Math.max(median(videoDelays) ?? 0, Math.max(...voiceDelays)) + MARGIN;
  const stamp = actx.getOutputTimestamp();  // the audio clock against the page's clock
  const wallNow = performance.timeOrigin + stamp.performanceTime;
  const playWall = Date.now() - since(ts) + delay;  // wall ms at which this chunk should sound
  let at = stamp.contextTime + (playWall - wallNow) / 1000;
  if (at < actx.currentTime) { voice.late++; at = actx.currentTime; }
  const b = actx.createBuffer(1, f.length, 48000);
  b.copyToChannel(f, 0);
  const src = actx.createBufferSource();
  src.buffer = b; src.connect(actx.destination); src.start(at);
  const played = playWall - (Date.now() - since(ts) + (median(videoDelays) ?? 0));  // sound - picture of one instant
  offsets.push(played); if (offsets.length > 100) offsets.shift();
  voice.avOffsetMs = median(offsets);
  voice.played.push([ts, Math.sqrt(sum / Math.max(1, f.length))]);
  if (voice.played.length > 3000) voice.played.shift();
  set("voice", voice.chunks + " chunks, " + voice.late + " late; sound " + (voice.avOffsetMs ?? 0).toFixed(0)
      + " ms after the picture of the same instant");
}
ws.onopen = () => set("state", "connected, waiting for a sender");
ws.onclose = () => set("state", "disconnected from the receiver");
ws.onmessage = (ev) => {
  if (typeof ev.data === "string") {
    const s = JSON.parse(ev.data);
    set("state", s.last_rendered_seq === null ? "waiting for a sender" : "streaming");
    set("fps", s.fps.toFixed(1) + " frames/s");
    set("lat", s.latency_ms === null ? "-" : s.latency_ms.toFixed(0) + " ms (mean over 3 s)");
    set("kbps", s.kbps.toFixed(2) + " kbit/s (landmark codec bytes)");
    set("frames", s.decoded + " decoded, " + s.rendered + " rendered, " + s.dropped + " dropped as stale, "
        + s.bad_packets + " bad, " + s.gaps + " after a gap");
    const r = s.refused || {};
    set("refused", (r.bad_token || 0) + " bad token, " + (r.busy || 0) + " busy, " + (r.too_large || 0)
        + " too large, " + (r.rate_limited || 0) + " over the rate");
    return;
  }
  const dv = new DataView(ev.data);
  const kind = String.fromCharCode(dv.getUint8(0), dv.getUint8(1), dv.getUint8(2), dv.getUint8(3));
  if (kind === "THA1") { playVoice(ev.data); return; }
  if (kind !== "THF1") return;
  videoDelays.push(since(dv.getUint32(4, true))); if (videoDelays.length > 50) videoDelays.shift();
  const next = URL.createObjectURL(new Blob([ev.data.slice(8)], {type: "image/jpeg"}));
  img.onload = () => { if (url) URL.revokeObjectURL(url); url = next; };
  img.src = next;
};
</script></body></html>
"""

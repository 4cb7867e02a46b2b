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
The page (`page_html`) shows the newest picture (watermarked JPEG, with a visible "synthetic" label) and the
current rendering fps, end-to-end latency (capture on the sender -> rendered here, on one wall clock: exact on
loopback, plus the clock offset between two machines) and received bitrate (codec bytes).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import provenance
from ..data.crop import CropTransform
from ..live import REFERENCE_SECONDS, LatestSlot
from ..media import VideoWriter
from .codec import CodecError, Frame, LandmarkDecoder, StreamGap
from .settings import TelepresenceConfig
from .transport import PacketServer, PacketSink, ws_header_bytes

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
        self._base = 0  # video frame of the current stream's first sequence number
        self._next_slot = 0  # first video frame after everything recorded so far

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
            self._stream_first_ms = frame.timestamp_ms
            if self._recorder is None:
                self.record_fps = frame.fps
        if frame.end and frame.points is None:
            return True  # the end-of-stream marker: nothing to show
        if self.slot.put((self._stream_id, self._stream_first_ms, frame)):
            s.dropped += 1
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

    def _render(self, stream: int, first_ms: int, frame: Frame) -> None:
        s = self.stats
        if stream != self._live_stream:  # a new sender: a new reference frame, a new segment of the video
            self._live = self.pipe.live(self.avatar, adapt=self.adapt, smooth=self.smooth, fps=frame.fps,
                                        eye_contact=self.settings.eye_contact,
                                        reference_seconds=REFERENCE_SECONDS if self.settings.reference == "auto" else 0)
            self._live_stream, self._base = stream, self._next_slot
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
            slot = self._base + int(round(max(0, _seq_after(first_ms, frame.timestamp_ms)) * self.record_fps / 1000))
            self._next_slot = max(self._next_slot, slot + 1)
            self._recorder.queue.put((slot, image))
        if self.server is not None and self.server.viewers:
            self.server.publish_frame(provenance.labelled_jpeg(image, self.settings.jpeg_quality))

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
</table>
<script>
const key = "%KEY%";
const img = document.getElementById("frame");
const proto = location.protocol === "https:" ? "wss://" : "ws://";
const ws = new WebSocket(proto + location.host + "/view?key=" + encodeURIComponent(key));
ws.binaryType = "blob";
let url = null;
const set = (id, text) => document.getElementById(id).textContent = text;
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
  } else {
    const next = URL.createObjectURL(ev.data);
    img.onload = () => { if (url) URL.revokeObjectURL(url); url = next; };
    img.src = next;
  }
};
</script></body></html>
"""

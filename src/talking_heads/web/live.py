"""The Live tab: the browser's camera drives the current avatar in real time (docs/web.md, "Live").

Why a page of our own and not Gradio's streaming webcam input: Gradio streams through its event queue (an
HTTP round trip and a queue slot per frame, JSON with base64 images), and its stream interval is a fixed
timer, so frames queue up behind a slow renderer. Here the page sends JPEG frames over one WebSocket on the
web app's own server and shows what comes back; both ends drop instead of queueing (measured:
docs/benchmarks.md, "Live tab").

- `GET /live?key=K`: the page (`PAGE`); the Live tab embeds it. K is a random key the Gradio session gets
  when the visitor presses "Start" (`LiveHub.open`); it names that session's current avatar and ends with the
  session (or when a new one is opened), so nobody without it can drive, or watch, the avatar.
- `WS /live/ws?key=K`: frames in, rendered frames out (binary, little-endian):
  page -> server  `THL1` | u32 frame id | f64 capture time (ms, the page's clock) | JPEG of the camera frame
  server -> page  `THL2` | u32 frame id | f64 the capture time echoed | f32 server ms (decode, track, render,
                  encode) | u32 frames dropped so far | u8 face found | JPEG of the avatar (watermarked, with
                  a "synthetic" comment; at the model's output size)
  and JSON text messages from the server: {"error": "..."} (a bad frame: shown on the page) or {"ready": ...}.

The newest frame wins everywhere. The page keeps at most `live_in_flight` frames unanswered and takes a new
camera frame only then (`requestVideoFrameCallback`: each camera frame once, with its capture time where the
browser reports it). On the server (`LiveSession`) two threads overlap: one decodes and tracks the newest
frame (`landmarks.tracking.FaceTracker`, with the iris locator for a model that renders gaze), the other
renders the newest tracked landmarks with the pipeline's live stage (`live.LiveStage`: smoothing, the
neutral reference chosen over the first seconds, adaptation, gaze) and sends the result; a frame replaced
before it was tracked or rendered is dropped and counted. The page measures frames per second and latency
(capture -> the avatar's frame drawn on screen) and shows them.

Bounds: `live_sessions` sessions at once (more are refused with a message), frames of at most
`live_max_bytes` bytes and `live_max_side` px a side (checked in the JPEG header before decoding), at most
`live_bad_frames` undecodable frames per session.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
import struct
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .. import provenance
from ..config import DataConfig
from ..landmarks.iris import iris_points, uses_gaze, with_iris
from ..landmarks.tracking import FaceTracker
from ..live import LatestSlot
from .live_page import PAGE
from .settings import WebSettings

log = logging.getLogger(__name__)

IN_MAGIC, OUT_MAGIC = b"THL1", b"THL2"
IN_HEADER = struct.Struct("<4sId")  # magic, frame id, capture ms
OUT_HEADER = struct.Struct("<4sIdfIB")  # magic, frame id, capture ms, server ms, dropped, face
MIN_SIDE = 32  # px: smaller camera frames hold no trackable face


class FrameError(ValueError):
    """A frame from the page that cannot be used (the message is shown on the page)."""


def parse_frame(data: bytes, settings: WebSettings) -> tuple[int, float, bytes]:
    """(frame id, capture ms, JPEG) of one page message, checked from its header and the JPEG's header alone
    (cheap: done as messages arrive, so every bad one is counted); FrameError says what is wrong with it."""
    if len(data) > settings.live_max_bytes:
        raise FrameError(f"a camera frame of {len(data)} bytes is over the limit ({settings.live_max_bytes})")
    if len(data) < IN_HEADER.size or data[:4] != IN_MAGIC:
        raise FrameError("not a camera frame of this page (wrong header)")
    _, frame_id, capture_ms = IN_HEADER.unpack_from(data)
    payload = data[IN_HEADER.size:]
    try:
        with Image.open(io.BytesIO(payload)) as img:
            kind, (w, h) = img.format, img.size
    except Image.DecompressionBombError:
        raise FrameError(f"camera frames must be {MIN_SIDE} to {settings.live_max_side} px a side") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise FrameError("the camera frame is not an image") from None
    if kind != "JPEG":
        raise FrameError(f"camera frames must be JPEG, got {kind}")
    if max(w, h) > settings.live_max_side or min(w, h) < MIN_SIDE:
        raise FrameError(f"camera frames must be {MIN_SIDE} to {settings.live_max_side} px a side, got {w} x {h}")
    if not np.isfinite(capture_ms):
        raise FrameError("the camera frame's capture time is not a number")
    return frame_id, float(capture_ms), payload


def decode_jpeg(payload: bytes) -> np.ndarray:
    """The RGB frame of a checked JPEG (`parse_frame`); FrameError for a damaged one."""
    bgr = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FrameError("the camera frame could not be decoded (a damaged JPEG)")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def encode_reply(frame_id: int, capture_ms: float, server_ms: float, dropped: int, face: bool, jpeg: bytes) -> bytes:
    return OUT_HEADER.pack(OUT_MAGIC, frame_id & 0xFFFFFFFF, capture_ms, server_ms, dropped & 0xFFFFFFFF,
                           int(face)) + jpeg


@dataclass
class LiveStats:
    """What a live session did (the page shows its own measurements; these are the server's)."""

    received: int = 0  # frames that arrived
    bad: int = 0  # frames that could not be used
    dropped: int = 0  # frames replaced by a newer one before they were tracked or rendered
    rendered: int = 0
    no_face: int = 0  # rendered frames in which no face was found (the last good landmarks held)
    track_s: float = 0.0  # time spent decoding and tracking (all frames tracked)
    tracked: int = 0
    render_s: float = 0.0  # time spent rendering and encoding (all frames rendered)

    def summary(self) -> str:
        return (f"{self.received} frames received, {self.rendered} rendered, {self.dropped} dropped as stale, {self.bad} "
                f"bad, {self.no_face} without a face; decode + track {1000 * self.track_s / max(1, self.tracked):.1f} ms, "
                f"render + encode {1000 * self.render_s / max(1, self.rendered):.1f} ms per frame")


def live_renderer(pipe, choice: str):
    """The pipeline a live session renders with: `choice` "auto" = onnxruntime (fp32) when the pipeline would
    render fp32 with torch on a CPU (no bf16: onnxruntime is 1.3-1.8x faster at batch 1 there, docs/benchmarks.md
    "Live tab") and the model can be exported (not the TPS renderer); "torch" / "onnxruntime" as named; "model":
    the pipeline's own settings."""
    from ..inference import OnnxModelError, check_exportable, resolve_precision

    inf = pipe.cfg.inference
    if choice == "model":
        return pipe
    if choice == "auto":
        cpu_fp32 = (inf.backend == "torch" and pipe.device.type == "cpu"
                    and resolve_precision(inf.precision, pipe.device) == "fp32")
        try:
            check_exportable(pipe.generator)
        except OnnxModelError:
            return pipe
        return pipe.with_inference(backend="onnxruntime", precision="fp32") if cpu_fp32 else pipe
    return pipe if choice == inf.backend else pipe.with_inference(backend=choice, precision="fp32")


class LiveSession:
    """One page's live puppeteering (module docstring): `submit(message)` from the event loop, rendered
    replies go to `reply(bytes)` (called from the render thread). `close()` stops both threads."""

    def __init__(self, pipe, avatar, settings: WebSettings, reply, *, eye_contact: bool = False):
        self.settings, self.reply = settings, reply
        self.tracker = FaceTracker("dlib", redetect_every=DataConfig.redetect_every,
                                   iris=DataConfig.iris if uses_gaze(pipe.cfg) else "none")
        self.stage = live_renderer(pipe, settings.live_backend).live(avatar, smooth=True, fps=30.0,
                                                                      eye_contact=eye_contact)
        self.stage.render(self.stage.points)  # builds (or exports) the avatar's renderer before the first frame
        self.stats = LiveStats()
        self.inbox, self.tracked = LatestSlot(), LatestSlot()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._threads = [threading.Thread(target=self._guard, args=(self._track_loop,), name="live-track", daemon=True),
                         threading.Thread(target=self._guard, args=(self._render_loop,), name="live-render",
                                          daemon=True)]
        for thread in self._threads:
            thread.start()

    def submit(self, data: bytes) -> None:
        """A page message: checked at once (`parse_frame`; a bad one is counted and reported to the page), then
        left for the tracking thread (replacing one it has not taken yet)."""
        self.stats.received += 1
        arrived = time.perf_counter()
        try:
            frame = parse_frame(data, self.settings)
        except FrameError as err:
            self.bad(str(err))
            return
        if self.inbox.put((frame, arrived)):
            self.stats.dropped += 1

    def bad(self, why: str) -> None:
        self.stats.bad += 1
        self.reply(json.dumps({"error": why}))

    def _guard(self, loop) -> None:
        try:
            loop()
        except BaseException as err:  # reported to the page by the handler; the log has the traceback
            self.error = err
            log.exception("live session failed")
            self._stop.set()

    def _track_loop(self) -> None:
        while not self._stop.is_set():
            item = self.inbox.take(0.1)
            if item is None:
                continue
            (frame_id, capture_ms, payload), arrived = item
            started = time.perf_counter()
            try:
                frame = decode_jpeg(payload)
            except FrameError as err:
                self.bad(str(err))
                continue
            points, _, _ = self.tracker.update(frame)
            if points is not None and self.tracker.iris_locator is not None:
                points = with_iris(points, iris_points(self.tracker.iris))
            self.stats.track_s += time.perf_counter() - started
            self.stats.tracked += 1
            if self.tracked.put((frame_id, capture_ms, points, (frame.shape[1], frame.shape[0]), arrived)):
                self.stats.dropped += 1

    def _render_loop(self) -> None:
        while not self._stop.is_set():
            item = self.tracked.take(0.1)
            if item is None:
                continue
            frame_id, capture_ms, points, size, arrived = item
            started = time.perf_counter()
            image = self.stage.step(points, t=capture_ms / 1000.0, frame_size=size)
            jpeg = provenance.labelled_jpeg(image, self.settings.live_jpeg_quality)
            s = self.stats
            s.render_s += time.perf_counter() - started
            s.rendered += 1
            s.no_face += points is None
            self.reply(encode_reply(frame_id, capture_ms, 1000 * (time.perf_counter() - arrived), s.dropped,
                                    points is not None, jpeg))

    def close(self) -> None:
        self._stop.set()
        self.inbox.close()
        self.tracked.close()
        for thread in self._threads:
            thread.join(timeout=5)


class LiveHub:
    """Avatars opened for live driving, by key (module docstring), and the sessions running."""

    def __init__(self, pipe, settings: WebSettings):
        self.pipe, self.settings = pipe, settings
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[str, object, bool]] = {}  # key -> (gradio session, avatar, eye contact)
        self.running = 0  # live sessions now
        self.last_summary = ""  # of the last session that ended

    def open(self, session: str, avatar, *, eye_contact: bool = False) -> str:
        """A new key for this Gradio session's avatar (an older key of the session stops working)."""
        key = secrets.token_urlsafe(24)
        with self._lock:
            for old in [k for k, v in self._keys.items() if v[0] == session]:
                del self._keys[old]
            self._keys[key] = (session, avatar, eye_contact)
        return key

    def close_session(self, session: str) -> None:
        with self._lock:
            for old in [k for k, v in self._keys.items() if v[0] == session]:
                del self._keys[old]

    def lookup(self, key: str | None) -> tuple[object, bool] | None:
        """(avatar, eye contact) of a valid key, else None (compared in constant time)."""
        if not key:
            return None
        with self._lock:
            for k, (_, avatar, eye_contact) in self._keys.items():
                if secrets.compare_digest(k.encode(), key.encode()):
                    return avatar, eye_contact
        return None

    # --- the Starlette endpoints -------------------------------------------------------------------------
    def routes(self) -> list:
        from starlette.routing import Route, WebSocketRoute

        return [Route("/live", self.page), WebSocketRoute("/live/ws", self.socket)]

    async def page(self, request):
        from starlette.responses import HTMLResponse, PlainTextResponse

        if self.lookup(request.query_params.get("key")) is None:
            return PlainTextResponse("this live page's key is unknown or has ended: press Start on the Live tab "
                                     "again\n", status_code=403)
        s = self.settings
        body = (PAGE.replace("%IN_FLIGHT%", str(s.live_in_flight)).replace("%WIDTH%", str(s.live_send_width))
                .replace("%QUALITY%", f"{s.live_send_quality:g}"))
        return HTMLResponse(body, headers={
            "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'unsafe-inline'; "
                                       "script-src 'unsafe-inline'; connect-src 'self' ws: wss:; media-src 'self' "
                                       "blob: mediastream:"})

    async def socket(self, websocket):
        from starlette.websockets import WebSocketDisconnect

        opened = self.lookup(websocket.query_params.get("key"))
        if opened is None:
            await websocket.close(code=1008, reason="unknown or ended key")
            return
        with self._lock:
            busy = self.running >= self.settings.live_sessions
            if not busy:
                self.running += 1
        if busy:
            await websocket.accept()
            await websocket.send_text(json.dumps({"error": f"{self.settings.live_sessions} live session(s) are "
                                                           "already running on this server: try again later"}))
            await websocket.close(code=1013)
            return
        try:
            await websocket.accept()
            await self._serve(websocket, *opened)
        except WebSocketDisconnect:
            pass
        finally:
            with self._lock:
                self.running -= 1

    async def _serve(self, websocket, avatar, eye_contact: bool) -> None:
        from starlette.websockets import WebSocketDisconnect

        loop = asyncio.get_running_loop()
        outbox: asyncio.Queue = asyncio.Queue(maxsize=4)

        def reply(message) -> None:  # render thread -> event loop; a full outbox (a stalled page) drops it
            def put() -> None:
                if not outbox.full():
                    outbox.put_nowait(message)
            loop.call_soon_threadsafe(put)

        session = await asyncio.to_thread(LiveSession, self.pipe, avatar, self.settings, reply,
                                          eye_contact=eye_contact)

        async def sender() -> None:
            while True:
                message = await outbox.get()
                if isinstance(message, str):
                    await websocket.send_text(message)
                else:
                    await websocket.send_bytes(message)

        send_task = asyncio.create_task(sender())
        await websocket.send_text(json.dumps({"ready": True, "output_size": int(self.pipe.frame_size(avatar))}))
        try:
            while session.error is None:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                if data is None:  # text is not the protocol
                    session.bad("text messages are not camera frames")
                else:
                    session.submit(data)
                if session.stats.bad >= self.settings.live_bad_frames:
                    await asyncio.sleep(0)  # the errors queued by call_soon_threadsafe reach the outbox
                    send_task.cancel()
                    while not outbox.empty():  # what each bad frame was, then why the session stops
                        message = outbox.get_nowait()
                        if isinstance(message, str):
                            await websocket.send_text(message)
                    await websocket.send_text(json.dumps({"error": f"{session.stats.bad} frames could not be used: "
                                                                   "stopped"}))
                    await websocket.close(code=1008)
                    break
            if session.error is not None:
                await websocket.send_text(json.dumps({"error": "the renderer failed; the server log has the details"}))
        except WebSocketDisconnect:
            pass
        finally:
            send_task.cancel()
            await asyncio.to_thread(session.close)
            log.info("live session ended: %s", session.stats.summary())
            self.last_summary = session.stats.summary()

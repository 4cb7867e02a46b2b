"""The sending end: a camera (or a video file played as one) -> 68 landmarks per frame -> packets.

Per frame (`LandmarkStream.process`): track the face (`landmarks.tracking.FaceTracker`: a full detection on the
first frame and now and then, otherwise a search around the last box), express the points in the sender's
head crop (`data.crop.StreamCrop`: the VoxCeleb box of the first face, refitted only when the head leaves it),
smooth them (One Euro on the shape basis's motion coefficients, `basis.BasisFilter`, or on the points;
optional) and encode them (`codec.LandmarkEncoder`). Frames without a face are sent as
such (the receiver holds the last picture).

A video file stands in for a camera (`FileSource`): frame i is "captured" at t0 + i / fps on the wall clock,
and frames that the sender had no time for are skipped and counted, exactly as a camera's frames would be
missed; `realtime=False` reads every frame as fast as it can (measurements). `CameraSource` reads an OpenCV
camera. The capture timestamp in each packet is the wall-clock time of capture (ms mod 2^32), so the
receiver's latency includes tracking, coding, the network and rendering. A video file's sound (or, later, a
microphone) goes as Opus on a second connection, time-stamped on the same clock (`voice.py`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
from websockets.exceptions import ConnectionClosed

from ..config import DataConfig
from ..data.crop import StreamCrop
from ..data.video import probe, read_frames
from ..landmarks.filters import OneEuroFilter
from ..landmarks.iris import conjugate, iris_points, relative_gaze
from ..landmarks.tracking import FaceTracker
from .basis import BasisFilter, load_basis
from .codec import KEY_MAGIC, PREDICT_PREVIOUS, Basis, CropBox, LandmarkEncoder
from .settings import TelepresenceConfig
from .transport import VOICE_PATH, TransportError, connect_sender, ws_header_bytes
from .voice import RATE as VOICE_RATE
from .voice import VoiceEncoder

log = logging.getLogger(__name__)

PREDICT_RAW, PREDICT_SMOOTHED = 1, 2  # the shipped basis's predictors (basis.py)


# --- sources -------------------------------------------------------------------------------------------

class FileSource:
    """A video file (or folder of frames) played as a camera (module docstring)."""

    def __init__(self, path: str | Path, *, realtime: bool = True, seconds: float | None = None):
        self.path = Path(path)
        info = probe(self.path)
        self.fps = float(info.fps)
        self.frame_size = (info.width, info.height)
        self.realtime = realtime
        self.limit = None if seconds is None else max(1, int(round(seconds * self.fps)))
        self.skipped = 0  # frames missed because the sender was busy
        self.t0: float | None = None  # wall-clock time of frame 0 (the voice is paced from it)

    def frames(self) -> Iterator[tuple[int, np.ndarray, float]]:
        """(frame index, RGB frame, capture time in s on the wall clock)."""
        t0 = self.t0 = time.time()
        for i, frame in read_frames(self.path):
            if self.limit is not None and i >= self.limit:
                return
            due = t0 + i / self.fps
            if self.realtime:
                now = time.time()
                if now > due + 1.0 / self.fps:  # this frame's slot has passed: a camera would have dropped it
                    self.skipped += 1
                    continue
                if now < due:
                    time.sleep(due - now)
            yield i, frame, (due if self.realtime else time.time())


class CameraSource:
    """An OpenCV camera (index N): frames as they come, timestamped when read."""

    def __init__(self, index: int, *, seconds: float | None = None):
        self.capture = cv2.VideoCapture(int(index))
        if not self.capture.isOpened():
            raise TransportError(f"camera {index}: cannot open it (no such camera, or no permission)")
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 30.0)
        w, h = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.frame_size = (w, h)
        self.seconds = seconds
        self.skipped = 0

    def frames(self) -> Iterator[tuple[int, np.ndarray, float]]:
        t0, i = time.time(), 0
        try:
            while self.seconds is None or time.time() - t0 < self.seconds:
                ok, bgr = self.capture.read()
                if not ok:
                    return
                yield i, np.ascontiguousarray(bgr[:, :, ::-1]), time.time()
                i += 1
        finally:
            self.capture.release()


# --- frames -> packets ----------------------------------------------------------------------------------

@dataclass
class SenderStats:
    """What a sender did."""

    frames: int = 0  # frames tracked and sent
    skipped: int = 0  # frames the source delivered too late to be processed (a busy sender)
    no_face: int = 0  # frames sent without landmarks
    key_frames: int = 0
    bytes: int = 0  # codec bytes sent (all packets, the end marker included)
    wire_bytes: int = 0  # the same with their WebSocket framing (TCP/IP headers not counted)
    seconds: float = 0.0  # wall time of the stream
    reconnects: int = 0  # connections re-established after the receiver went away
    voice_bytes: int = 0  # voice packets' bytes (voice.py), WebSocket framing excluded
    voice_packets: int = 0
    discarded: int = 0  # packets that could not be sent while the receiver was away
    process_ms: float = 0.0  # mean tracking + coding time per frame
    fps: float = 0.0  # source frame rate
    sent: list = field(default_factory=list)  # (seq, source frame index) of every packet, when asked for

    @property
    def kbps(self) -> float:
        """Average codec bitrate: bytes sent over the stream's elapsed time."""
        return self.bytes * 8 / self.seconds / 1000 if self.seconds > 0 else 0.0

    @property
    def wire_kbps(self) -> float:
        return self.wire_bytes * 8 / self.seconds / 1000 if self.seconds > 0 else 0.0

    @property
    def bits_per_frame(self) -> float:
        return self.bytes * 8 / max(1, self.frames)

    def summary(self) -> str:
        return (f"{self.frames} frames sent ({self.no_face} without a face, {self.key_frames} key frames, "
                f"{self.skipped} skipped as late) in {self.seconds:.1f} s; {self.bytes} codec bytes = "
                f"{self.bits_per_frame:.0f} bit/frame, {self.kbps:.2f} kbit/s ({self.wire_kbps:.2f} kbit/s with the "
                f"WebSocket framing); tracking + coding {self.process_ms:.1f} ms/frame"
                + (f"; reconnected {self.reconnects} time(s), {self.discarded} packets lost meanwhile"
                   if self.reconnects else "")
                + (f"; voice {self.voice_packets} packets, {self.voice_bytes * 8 / self.seconds / 1000:.1f} kbit/s "
                   "(Opus)" if self.voice_packets and self.seconds > 0 else ""))


def make_encoder(settings: TelepresenceConfig, fps: float) -> LandmarkEncoder:
    """The codec as the settings ask (the shipped basis unless use_basis is off or it is missing)."""
    basis, predictor = Basis.identity(), PREDICT_PREVIOUS
    if settings.use_basis:
        try:
            basis = load_basis()
            predictor = PREDICT_SMOOTHED if settings.smooth else PREDICT_RAW
        except FileNotFoundError:
            log.warning("the codec's shape basis is not installed: coding point by point (higher bitrate)")
    if not basis.supports(settings.version, predictor):  # a basis file without this version's predictors
        predictor = PREDICT_PREVIOUS
    return LandmarkEncoder(basis, fps=fps, step=settings.step, deadzone=settings.deadzone,
                           key_interval=settings.key_interval, predictor=predictor, version=settings.version)


def make_filter(settings: TelepresenceConfig):
    """The sender's smoothing as the settings ask: None, the filter on the basis's motion coefficients
    (`basis.BasisFilter`, the default), or the One Euro filter on the points (also when the basis is missing)."""
    if not settings.smooth:
        return None
    if settings.smooth_space not in ("basis", "points"):
        raise ValueError(f"smooth_space must be 'basis' or 'points', got {settings.smooth_space!r}")
    if settings.smooth_space == "basis":
        try:
            return BasisFilter(load_basis().motion_vectors, size=settings.crop_size)
        except FileNotFoundError:
            pass
    return OneEuroFilter()


class LandmarkStream:
    """Frames -> packets (module docstring). One per stream; `process` is called once per frame in order."""

    def __init__(self, fps: float, settings: TelepresenceConfig | None = None, *, backend: str = "dlib"):
        self.settings = settings or TelepresenceConfig()
        self.fps = float(fps)
        # gaze (packet version 3): the iris locator beside the landmarks (landmarks/iris.py)
        self.tracker = FaceTracker(backend, redetect_every=DataConfig.redetect_every,
                                   iris=DataConfig.iris if self.settings.version >= 3 else "none")
        self.crop = StreamCrop(self.settings.crop_size)
        self.filter = make_filter(self.settings)
        self.gaze_filter = OneEuroFilter() if self.settings.smooth else None
        self.encoder = make_encoder(self.settings, self.fps)
        self.box: CropBox | None = None
        self.points: np.ndarray | None = None  # (68,2) crop px of the last frame sent (None: no face)
        self.gaze: np.ndarray | None = None  # (2,) its gaze (eye widths, both eyes alike; None: not seen)
        self._last_t: float | None = None
        self.key_requested = False

    def landmarks(self, frame: np.ndarray, t: float) -> np.ndarray | None:
        """(68,2) landmarks of `frame` in the crop (smoothed), or None without a face."""
        points, _, _ = self.tracker.update(frame)
        self.gaze = None
        if points is None:
            if self.filter is not None:
                self.filter.reset()
            return None
        if self.tracker.iris_locator is not None:
            g = conjugate(relative_gaze(points, iris_points(self.tracker.iris))).mean(0)
            if np.isfinite(g).all():
                dt = 1.0 / self.fps if self._last_t is None else max(1e-3, t - self._last_t)
                # One Euro on the gaze in 1/100 eye widths (the filter's units: about a 256 px crop's pixels)
                self.gaze = g if self.gaze_filter is None else self.gaze_filter(g * 100, dt) / 100
            elif self.gaze_filter is not None:
                self.gaze_filter.reset()
        crop = self.crop.update(points, (frame.shape[1], frame.shape[0]))
        tf = self.crop.transform
        self.box = CropBox(tf.x0, tf.y0, tf.side, tf.size)
        if self.filter is not None:
            if self.crop.changed:
                self.filter.reset()
            dt = 1.0 / self.fps if self._last_t is None else max(1e-3, t - self._last_t)
            crop = self.filter(crop, dt)
        self._last_t = t
        return np.asarray(crop, np.float32)

    def process(self, frame: np.ndarray, t: float) -> bytes:
        """One packet for one RGB frame captured at wall-clock time t (s); a key frame after `request_key`."""
        self.points = self.landmarks(frame, t)
        box = self.box or CropBox(0, 0, max(frame.shape[:2]), self.settings.crop_size)
        key, self.key_requested = self.key_requested, False
        return self.encoder.encode(self.points, _ms(t), box, gaze=self.gaze, key=key)

    def request_key(self) -> None:
        """The next packet is a key frame (a new connection: the receiver has a new decoder). Thread-safe."""
        self.key_requested = True

    def end(self, t: float) -> bytes:
        """The end-of-stream marker."""
        box = self.box or CropBox(0, 0, self.settings.crop_size, self.settings.crop_size)
        return self.encoder.encode(None, _ms(t), box, end=True)


def _ms(t: float) -> int:
    return int(round(t * 1000)) & 0xFFFFFFFF


# --- streaming -------------------------------------------------------------------------------------------

@dataclass
class Reconnect:
    """How a sender waits for its receiver: at start (`wait_s`: a receiver started after the sender) and after
    a lost connection (`reconnect_s`: a receiver restarting, or stalled until the WebSocket's ping timed out),
    retrying with exponential backoff from `first_s` up to `max_s` between attempts."""

    wait_s: float = 30.0
    reconnect_s: float = 60.0
    first_s: float = 0.25
    max_s: float = 4.0


async def connect_with_retry(host: str, port: int, token: str, *, ssl_context, within_s: float, policy: Reconnect,
                             stop: threading.Event, say: Callable[[str], None]):
    """A sender's connection, retried with backoff for `within_s` seconds (None when `stop` is set first); a
    refusal that retrying cannot mend (a wrong token, another sender streaming) is raised at once."""
    deadline = time.monotonic() + within_s
    delay, said = policy.first_s, False
    while True:
        try:
            return await connect_sender(host, port, token, ssl_context=ssl_context)
        except TransportError as err:
            if "refused the token" in str(err) or time.monotonic() + delay > deadline:
                raise
            if not said:
                say(f"{err}; retrying for up to {max(0.0, deadline - time.monotonic()):.0f} s")
                said = True
        await asyncio.sleep(delay)
        if stop.is_set():
            return None
        delay = min(policy.max_s, delay * 2)


async def send(source, host: str, port: int, token: str, *, settings: TelepresenceConfig | None = None,
               ssl_context=None, record_sent: bool = False, on_frame: Callable | None = None,
               stop: threading.Event | None = None, reconnect: Reconnect | None = None,
               say: Callable[[str], None] = log.warning, voice=None) -> SenderStats:
    """Stream `source` (FileSource or CameraSource) to a receiver; returns the statistics when the source
    ends (or `stop` is set) and the connection is closed cleanly. on_frame(seq, index, frame, stream) is
    called for every frame sent (the demo keeps the originals this way).

    Tracking and coding run in a worker thread that hands packets to the event loop through a small queue
    (backpressure: a slow link makes the source skip frames); None in the queue ends the stream. The receiver
    is waited for at the start and, when the connection is lost, reconnected to (`Reconnect`; `say` reports
    what happened): the packets made meanwhile are discarded and the stream resumes with a key frame.
    voice: PCM chunks (`voice.file_voice`), sent as Opus on their own connection (`_send_voice`)."""
    stop, policy = stop or threading.Event(), reconnect or Reconnect()
    connection = await connect_with_retry(host, port, token, ssl_context=ssl_context, within_s=policy.wait_s,
                                          policy=policy, stop=stop, say=say)
    stream, stats = LandmarkStream(source.fps, settings or TelepresenceConfig()), SenderStats(fps=source.fps)
    if connection is None:
        return stats
    loop = asyncio.get_running_loop()
    packets: asyncio.Queue = asyncio.Queue(maxsize=4)
    failure: list[BaseException] = []

    def put(packet: bytes | None) -> None:  # from the worker thread; waits while the queue is full
        asyncio.run_coroutine_threadsafe(packets.put(packet), loop).result()

    def produce() -> None:
        try:
            _encode_frames(source, stream, stats, put, stop, record_sent, on_frame)
        except BaseException as err:  # re-raised below, after a clean close
            failure.append(err)
        finally:
            put(None)

    started = time.perf_counter()
    worker = threading.Thread(target=produce, name="telepresence-sender", daemon=True)
    worker.start()
    speaking = asyncio.create_task(_send_voice(voice, source, host, port, token, ssl_context, stats, stop, say)) \
        if voice is not None else None
    try:
        awaiting_key = False
        while connection is not None:
            try:
                await _pump(connection, packets, stats, awaiting_key)
                break
            except ConnectionClosed as err:
                say(f"the receiver's connection was lost ({err.rcvd or err.sent or 'no close frame'}); reconnecting")
                connection = await _reconnect(host, port, token, ssl_context, policy, stop, stream, packets, stats,
                                              say)
                awaiting_key = True  # packets coded for the old connection are not sent
    finally:
        stop.set()
        if speaking is not None:
            await asyncio.gather(speaking, return_exceptions=True)
        await _drain(worker, packets)
        stats.seconds = time.perf_counter() - started
        stats.skipped = getattr(source, "skipped", 0)
    if failure:
        raise failure[0]
    return stats


async def _send_voice(chunks, source, host: str, port: int, token: str, ssl_context, stats: SenderStats,
                      stop: threading.Event, say: Callable[[str], None]) -> None:
    """The voice connection: `chunks` as Opus packets until the stream ends, the source's `seconds` are over,
    or the receiver takes no voice (it says so). A file's PCM chunks are each sent when their first sample's
    time (the source's first frame + its offset) has come; a microphone's arrive as (capture ms, PCM) pairs
    from an async iterator (`browser_sender`)."""
    try:
        connection = await connect_sender(host, port, token, ssl_context=ssl_context, path=VOICE_PATH)
    except TransportError as err:
        say(f"voice not sent: {err}")
        return
    encoder = VoiceEncoder()

    async def send_pcm(pcm: np.ndarray, t_ms: float) -> None:
        for packet in encoder.encode(pcm, t_ms):
            await connection.send(packet)
            stats.voice_packets += 1
            stats.voice_bytes += len(packet)
            stats.wire_bytes += len(packet) + ws_header_bytes(len(packet), masked=True)

    try:
        if hasattr(chunks, "__aiter__"):
            async for t_ms, pcm in chunks:
                if stop.is_set():
                    break
                await send_pcm(pcm, t_ms)
        else:
            await _paced(chunks, source, stop, send_pcm)
        await connection.close()
    except ConnectionClosed:
        say("the receiver closed the voice connection")


async def _paced(chunks, source, stop: threading.Event, send_pcm) -> None:
    """A file's PCM chunks, each handed on when its time has come on the source's clock."""
    samples, limit = 0, getattr(source, "limit", None)
    end_s = None if limit is None else limit / source.fps
    while getattr(source, "t0", None) is None and not stop.is_set():
        await asyncio.sleep(0.005)
    for pcm in chunks:
        offset = samples / VOICE_RATE
        if stop.is_set() or (end_s is not None and offset >= end_s):
            return
        due = source.t0 + offset
        await asyncio.sleep(max(0.0, due - time.time()))
        await send_pcm(pcm, due * 1000.0)
        samples += pcm.size


async def _pump(connection, packets: asyncio.Queue, stats: SenderStats, awaiting_key: bool) -> None:
    """Send the worker's packets until its None, then close; with awaiting_key, those before the next key frame
    are discarded. ConnectionClosed when the receiver goes away."""
    while (packet := await packets.get()) is not None:
        if awaiting_key and packet[:4] != KEY_MAGIC:
            stats.discarded += 1
            continue
        awaiting_key = False
        await connection.send(packet)
        stats.bytes += len(packet)
        stats.wire_bytes += len(packet) + ws_header_bytes(len(packet), masked=True)
    await connection.close()


async def _reconnect(host, port, token, ssl_context, policy: Reconnect, stop: threading.Event, stream: LandmarkStream,
                     packets: asyncio.Queue, stats: SenderStats, say: Callable[[str], None]):
    """A new connection after a lost one (None when stopped meanwhile); the packets made meanwhile are
    discarded and a key frame is asked for. Raises TransportError when the receiver stays away."""
    async def discard() -> None:  # the worker keeps tracking (and the source skipping) meanwhile
        while True:
            packet = await packets.get()
            if packet is None:
                stop.set()
                return
            stats.discarded += 1

    discarding = asyncio.create_task(discard())
    try:
        connection = await connect_with_retry(host, port, token, ssl_context=ssl_context, within_s=policy.reconnect_s,
                                              policy=policy, stop=stop, say=say)
    except TransportError as err:
        raise TransportError(f"the receiver did not come back within {policy.reconnect_s:g} s ({err})") from None
    finally:
        discarding.cancel()
    if connection is not None and stop.is_set():
        await connection.close()
        return None
    if connection is None:
        return None
    stream.request_key()
    stats.reconnects += 1
    say(f"reconnected to {host}:{port} (reconnection {stats.reconnects}); resuming with a key frame")
    return connection


def _encode_frames(source, stream: LandmarkStream, stats: SenderStats, put: Callable[[bytes | None], None],
                   stop: threading.Event, record_sent: bool, on_frame: Callable | None) -> None:
    """The worker thread's loop: every frame of `source` -> one packet handed to `put`, then the end-of-stream
    marker; counts into `stats` (process_ms: the mean tracking + coding time per frame)."""
    total = 0.0
    try:
        for index, frame, t in source.frames():
            if stop.is_set():
                break
            t0 = time.perf_counter()
            seq = stream.encoder.seq
            packet = stream.process(frame, t)
            total += time.perf_counter() - t0
            stats.frames += 1
            stats.no_face += stream.points is None
            stats.key_frames += packet[:4] == KEY_MAGIC
            if record_sent:
                stats.sent.append((seq, index))
            if on_frame is not None:
                on_frame(seq, index, frame, stream)
            put(packet)
        put(stream.end(time.time()))
    finally:
        stats.process_ms = 1000 * total / max(1, stats.frames)


async def _drain(worker: threading.Thread, packets: asyncio.Queue) -> None:
    """Empty the queue until the worker has finished (it may be waiting to put a packet)."""
    while worker.is_alive():
        try:
            packets.get_nowait()
        except asyncio.QueueEmpty:
            await asyncio.sleep(0.01)

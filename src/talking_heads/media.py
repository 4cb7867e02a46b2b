"""Writing what the pipeline renders: H.264 mp4 with the driver's audio, side-by-side panels, PNG sheets.

Every frame and image written here carries the provenance labels of `provenance.py` (metadata marker and
invisible watermark); there is no switch to turn them off. Every file is written under a temporary name
beside its target and renamed into place when complete (`atomic.atomic_path`): an error or a kill leaves
no partial output.

Video: libx264 at FFmpeg's default quality (crf 23), yuv420p (the pixel format every player decodes), even
width and height (odd sizes are padded by repeating the last row/column), at the driver's frame rate
(kept exact for NTSC rates such as 30000/1001). Audio: the first audio stream of `audio` (the driving
video, or a sound file beside a folder of frames) is decoded and re-encoded to AAC, whatever its codec
(PCM in .mov or .wav, MP3, Opus, AAC), and cut at the video's duration.
"""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

from . import provenance
from .atomic import atomic_path

log = logging.getLogger(__name__)


def frame_rate(fps: float) -> Fraction:
    """A float frame rate as an exact fraction (29.97 -> 30000/1001)."""
    rate = Fraction(float(fps)).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"frame rate must be positive, got {fps}")
    return rate


def even_size(frame: np.ndarray) -> np.ndarray:
    """Pad an (H,W,3) frame by edge replication to even H and W (yuv420p needs them)."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class VideoWriter:
    """`with VideoWriter(path, fps, audio=...) as w: w.write(rgb_uint8)`: an atomic, labelled H.264 mp4.

    All frames must have the size of the first one. `audio`: a media file whose first audio stream is
    carried over, encoded in step with the video (None: silent video). Leaving the block with an exception
    deletes the temporary file.
    """

    def __init__(self, path: str | os.PathLike, fps: float, audio: str | os.PathLike | None = None):
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise ValueError(f"{self.path}: the output video must be an .mp4 file")
        self.rate = frame_rate(fps)
        self.audio_source = Path(audio) if audio is not None else None
        self.frames = 0
        self._stack = ExitStack()
        self._container = None
        self._stream = None
        self._audio: AudioTrack | None = None
        self._size: tuple[int, int] | None = None

    @property
    def audio_written(self) -> bool:
        """An audio stream was carried over."""
        return self._audio is not None and self._audio.stream is not None

    def __enter__(self) -> "VideoWriter":
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._container = self._stack.enter_context(
            av.open(str(tmp), "w", format="mp4", options={"movflags": "use_metadata_tags"}))
        self._container.metadata.update(provenance.video_metadata())
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 (H,W,3) frame (watermarked here)."""
        frame = even_size(np.ascontiguousarray(frame))
        if self._stream is None:
            self._open_streams(frame.shape[1], frame.shape[0])
        elif (frame.shape[1], frame.shape[0]) != self._size:
            raise ValueError(f"frame {self.frames} is {frame.shape[1]}x{frame.shape[0]}, the video is "
                             f"{self._size[0]}x{self._size[1]}")
        if provenance.can_watermark(frame):
            frame = provenance.embed_watermark(frame)
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)
        self.frames += 1
        if self._audio is not None:
            self._audio.feed(self.frames / float(self.rate))

    def _open_streams(self, width: int, height: int) -> None:
        """Every stream must exist before the first packet is written (the header)."""
        self._stream = self._container.add_stream("libx264", rate=self.rate)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        self._size = (width, height)
        if self.audio_source is not None:
            self._audio = self._stack.enter_context(AudioTrack(self.audio_source, self._container))

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            try:
                self._finish()
            except BaseException as err:  # close and delete the temporary file, then report the error
                if not self._stack.__exit__(type(err), err, err.__traceback__):
                    raise
                return False
        return bool(self._stack.__exit__(exc_type, exc, tb))

    def _finish(self) -> None:
        if self._stream is None:
            raise ValueError(f"{self.path}: no frame was written")
        for packet in self._stream.encode():  # flush the video encoder
            self._container.mux(packet)
        if self._audio is not None:
            self._audio.finish(self.frames / float(self.rate))


def add_voice(video: str | os.PathLike, pcm: np.ndarray, rate: int, out: str | os.PathLike) -> Path:
    """`out`: the labelled mp4 `video` with `pcm` (int16 mono at `rate` Hz, from the video's start) as its AAC
    sound: the video stream is copied as it is (no re-encoding: frames and watermark unchanged); atomic."""
    out = Path(out)
    pcm = np.asarray(pcm, np.int16).reshape(-1)
    with av.open(str(video)) as src, atomic_path(out) as tmp:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "use_metadata_tags"}) as dst:
            dst.metadata.update(provenance.video_metadata())
            vin = src.streams.video[0]
            vout = dst.add_stream_from_template(vin)
            aout = dst.add_stream("aac", rate=rate, layout="mono")
            resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate)
            audio = []
            for i in range(0, pcm.size, 1024):
                frame = av.AudioFrame.from_ndarray(pcm[None, i:i + 1024], format="s16", layout="mono")
                frame.sample_rate, frame.pts = rate, i
                audio.extend(p for f in resampler.resample(frame) for p in aout.encode(f))
            audio.extend(aout.encode(None))
            for packet in src.demux(vin):
                if packet.dts is None:  # the demuxer's final flush packet
                    continue
                packet.stream = vout
                dst.mux(packet)
            for packet in audio:
                dst.mux(packet)
    return out


class AudioTrack:
    """The first audio stream of `source`, decoded and re-encoded to AAC into `container` in step with the
    video (`feed(seconds)`), cut sample-exactly at the video's end (`finish(seconds)`). A source without
    readable audio gives a silent video and a logged warning; audio that breaks part-way is kept up to the
    damage."""

    def __init__(self, source: Path, container):
        self.source, self.container = source, container
        self.stream = None
        self.written = 0  # samples encoded
        self._queue: list = []  # resampled frames not encoded yet (the first may be the rest of a cut one)
        self._frames = None
        try:
            self._src = av.open(str(source), metadata_errors="ignore")
        except (av.FFmpegError, OSError) as err:
            log.warning("%s: audio not carried over (%s)", source, err)
            self._src = None
            return
        if not self._src.streams.audio:
            return
        src_stream = self._src.streams.audio[0]
        layout = "mono" if src_stream.codec_context.channels == 1 else "stereo"
        self.rate = src_stream.codec_context.sample_rate or 44100
        self.stream = container.add_stream("aac", rate=self.rate, layout=layout)
        self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=self.rate)
        self._frames = self._src.decode(src_stream)

    def __enter__(self) -> "AudioTrack":
        return self

    def __exit__(self, *exc) -> None:
        if self._src is not None:
            self._src.close()

    def feed(self, seconds: float) -> None:
        """Encode the source's audio up to `seconds`."""
        if self.stream is None:
            return
        limit = int(round(seconds * self.rate))
        while self.written < limit:
            piece = self._next()
            if piece is None:
                return
            keep = min(piece.samples, limit - self.written)
            if keep < piece.samples:  # the rest waits for the next video frame
                self._queue.insert(0, _audio_slice(piece, keep, piece.samples))
                piece = _audio_slice(piece, 0, keep)
            self._encode(piece)

    def finish(self, seconds: float) -> None:
        """Encode up to `seconds` (the video's duration) and flush."""
        if self.stream is None:
            return
        self.feed(seconds)
        for packet in self.stream.encode(None):
            self.container.mux(packet)

    def _next(self):
        """The next resampled frame, or None at the end of the source (or where it is damaged)."""
        while not self._queue:
            if self._frames is None:
                return None
            try:
                frame = next(self._frames, None)
            except av.FFmpegError as err:
                log.warning("%s: audio damaged after %.2f s (%s); the rest is silent", self.source,
                            self.written / self.rate, err)
                frame = None
            if frame is None:  # end of the source: drain the resampler
                self._frames = None
            self._queue.extend(self._resampler.resample(frame))
        return self._queue.pop(0)

    def _encode(self, frame) -> None:
        frame.pts = None  # the encoder numbers samples itself
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.written += frame.samples


def _audio_slice(frame, start: int, stop: int):
    """Samples [start, stop) of a planar float audio frame, as a new frame."""
    samples = np.ascontiguousarray(frame.to_ndarray()[:, start:stop])  # fltp: (channels, samples)
    out = av.AudioFrame.from_ndarray(samples, format="fltp", layout=frame.layout.name)
    out.sample_rate = frame.sample_rate
    return out


# --- images -----------------------------------------------------------------------------------------

def resize(image: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """Resize an RGB image to `height` (and `width`; default keeps the aspect ratio)."""
    h, w = image.shape[:2]
    width = width or max(1, int(round(w * height / h)))
    if (h, w) == (height, width):
        return image
    interp = cv2.INTER_AREA if height < h else cv2.INTER_CUBIC
    return cv2.resize(image, (width, height), interpolation=interp)


def side_by_side(panels: list[np.ndarray], height: int | None = None) -> np.ndarray:
    """Panels (H_i,W_i,3) resized to a common height (default: the first one's) and put in a row."""
    height = height or panels[0].shape[0]
    return np.concatenate([resize(p, height) for p in panels], axis=1)


def contact_sheet(rows: list[list[np.ndarray]], tile: int, gap: int = 4) -> np.ndarray:
    """A grid of square tiles (`tile` px) with `gap` px dark separators; rows may differ in length."""
    cols = max(len(r) for r in rows)
    h = len(rows) * tile + (len(rows) + 1) * gap
    w = cols * tile + (cols + 1) * gap
    sheet = np.full((h, w, 3), 24, np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            y, x = gap + i * (tile + gap), gap + j * (tile + gap)
            sheet[y:y + tile, x:x + tile] = resize(image, tile, tile)
    return sheet


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Atomically write an RGB uint8 image as a labelled PNG (tEXt marker + watermark when large enough)."""
    path = Path(path)
    if provenance.can_watermark(image):
        image = provenance.embed_watermark(image)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", pnginfo=provenance.png_info())
    return path

"""Voice for telepresence: the sender's sound as Opus, time-stamped by the sender's clock like the landmark
packets, on a second authenticated WebSocket (`/voice`, the same token), decoded at the receiver, played by its
page in sync with the avatar and recorded with it (docs/telepresence.md, "Voice").

Packet (little-endian): `THV1` | u32 sequence number | u32 capture time of its first sample (ms, the sender's
wall clock mod 2^32) | one Opus frame (RFC 6716: 20 ms of 48 kHz mono; the packet at most MAX_PACKET bytes). Opus through
PyAV's libopus, `BITRATE` bits/s (about 24 kbit/s with the headers). A receiver of an earlier release has no
`/voice` (HTTP 404): the sender says so and streams the landmarks alone.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path
from typing import Iterator

import av
import numpy as np

VOICE_MAGIC = b"THV1"
HEADER = struct.Struct("<4sII")  # magic, sequence number, capture ms
RATE = 48_000  # Hz, Opus's own rate
FRAME = 960  # samples per packet: 20 ms
MAX_PACKET = 1024  # bytes, the transport's limit for every message (a 20 ms Opus frame at 20 kbit/s is ~50)
BITRATE = 20_000  # bits/s of Opus payload (about 25 kbit/s with the packet and WebSocket headers)


class VoiceError(ValueError):
    """A voice packet that cannot be used."""


class VoiceEncoder:
    """PCM (int16, mono, RATE) in any chunk sizes -> voice packets, one per FRAME samples."""

    def __init__(self, bitrate: int = BITRATE):
        self.codec = av.CodecContext.create("libopus", "w")
        self.codec.sample_rate, self.codec.layout, self.codec.format = RATE, "mono", "s16"
        self.codec.bit_rate = int(bitrate)
        self.codec.open()
        self.seq = 0
        self._pending = np.zeros(0, np.int16)
        self._pending_ms = 0.0  # capture time of the first pending sample
        self._samples = 0

    def encode(self, pcm: np.ndarray, t_ms: float) -> list[bytes]:
        """Packets for `pcm` whose first sample was captured at t_ms (wall clock ms)."""
        pcm = np.asarray(pcm, np.int16).reshape(-1)
        if not self._pending.size:
            self._pending_ms = t_ms
        self._pending = np.concatenate([self._pending, pcm])
        out = []
        while self._pending.size >= FRAME:
            chunk, self._pending = self._pending[:FRAME], self._pending[FRAME:]
            frame = av.AudioFrame.from_ndarray(chunk[None], format="s16", layout="mono")
            frame.sample_rate, frame.pts = RATE, self._samples
            self._samples += FRAME
            for packet in self.codec.encode(frame):
                out.append(HEADER.pack(VOICE_MAGIC, self.seq & 0xFFFFFFFF, int(round(self._pending_ms)) & 0xFFFFFFFF)
                           + bytes(packet))
                self.seq += 1
            self._pending_ms += 1000.0 * FRAME / RATE
        return out


def parse(packet: bytes) -> tuple[int, int, bytes]:
    """(sequence number, capture ms, Opus frame) of a voice packet; VoiceError for anything else."""
    if not isinstance(packet, (bytes, bytearray)) or len(packet) <= HEADER.size or len(packet) > MAX_PACKET:
        raise VoiceError(f"a voice packet has {HEADER.size + 1} to {MAX_PACKET} bytes")
    magic, seq, ts = HEADER.unpack_from(packet)
    if magic != VOICE_MAGIC:
        raise VoiceError("not a voice packet (bad magic)")
    return seq, ts, bytes(packet[HEADER.size:])


class VoiceDecoder:
    """Voice packets -> (capture ms, int16 PCM at RATE); VoiceError for a packet libopus refuses."""

    def __init__(self):
        self.codec = av.CodecContext.create("libopus", "r")
        self.codec.sample_rate, self.codec.layout = RATE, "mono"
        self.codec.open()

    def decode(self, packet: bytes) -> tuple[int, np.ndarray]:
        _, ts, payload = parse(packet)
        try:
            frames = self.codec.decode(av.Packet(payload))
        except (av.error.FFmpegError, ValueError) as err:
            raise VoiceError(f"undecodable Opus frame ({err})") from None
        pcm = [_to_int16(f.to_ndarray()) for f in frames]
        out = np.concatenate(pcm) if pcm else np.zeros(0, np.int16)
        if out.size > 6 * FRAME:  # an Opus packet holds at most 120 ms
            raise VoiceError("an Opus frame longer than 120 ms")
        return ts, out


def _to_int16(a: np.ndarray) -> np.ndarray:
    """Mono int16 samples of a decoded frame's array (planar (channels, n) or packed (1, n); float in [-1, 1]
    or integer)."""
    a = np.asarray(a)
    floating = np.issubdtype(a.dtype, np.floating)
    if a.ndim == 2:
        a = a[0] if a.shape[0] == 1 else a.mean(axis=0)
    if floating:
        return np.clip(np.round(a * 32767), -32768, 32767).astype(np.int16)
    return a.astype(np.int16)


def file_voice(path: str | Path) -> Iterator[np.ndarray] | None:
    """The first audio stream of a media file as int16 mono PCM at RATE, in chunks; None without one."""
    with av.open(str(path)) as probe:
        if not probe.streams.audio:
            return None

    def chunks() -> Iterator[np.ndarray]:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        with av.open(str(path)) as container:
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    yield _to_int16(out.to_ndarray())
            for out in resampler.resample(None):
                yield _to_int16(out.to_ndarray())

    return chunks()


class VoiceRecording:
    """Received PCM placed at its capture time (ms from the recording's start; gaps stay silent) in an anonymous
    temporary file, so a long call costs disk, not memory; at most `seconds` long (later sound is counted and
    dropped). `pcm()` maps it for the mux at the end; `close()` deletes it."""

    def __init__(self, seconds: float = 4 * 3600):
        self.max_samples = int(seconds * RATE)
        self.length = 0
        self.dropped = 0
        self._file = None

    def add(self, offset_ms: float, pcm: np.ndarray) -> None:
        start = int(round(offset_ms * RATE / 1000))
        end = start + pcm.size
        if start < 0 or end > self.max_samples:
            self.dropped += pcm.size
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="talking-heads-voice-")
        self._file.seek(2 * start)  # past the end: the gap reads as zeros
        self._file.write(np.asarray(pcm, "<i2").tobytes())
        self.length = max(self.length, end)

    def pcm(self) -> np.ndarray:
        if self._file is None or not self.length:
            return np.zeros(0, np.int16)
        self._file.flush()
        return np.memmap(self._file, dtype="<i2", mode="r", shape=(self.length,))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

"""Landmark codec: 68 face landmarks per frame in a few bytes. Pure: bytes in, bytes out.

The sender tracks 68 points per frame, expresses them in its head crop (a square of `crop_size` px, 256 by
default, cut by the VoxCeleb rule of `data/crop.py`) and encodes each frame into one packet; the receiver
decodes the packets and drives an avatar (`live.LiveStage`). The format is specified byte by byte in
docs/telepresence.md; in short:

* **Key frames** (`KEY_MAGIC` "THLM", version, flags, 32-bit sequence number, 32-bit capture timestamp in ms,
  frame rate, quantisation step, crop size, the crop box in the sender's frame, transform and predictor ids)
  are self-contained: the decoder can start, or restart after a loss, at any key frame. Their points are
  coded as coefficients of a shape basis around a mean shape (`Basis.shape_*`).
* **Delta frames** carry a 1-byte header in version 2 (`DELTA2_MARK` | FACE << 6 | END << 5 | sequence number
  mod 32; version 1: 2 bytes, `DELTA_MARK` | flags, sequence number mod 256); the capture time and the points
  are predicted from the previous frames and only the quantised prediction error is sent. A missing sequence
  number or a delta without its key frame is a `StreamGap`: nothing is decoded until the next key frame (at
  most `key_interval` frames later). The decoder reads both versions: a delta is read by the version of the
  stream's last key frame.
* **Transform and prediction.** Points x (136 values) are mapped to coefficients c = M^T x with an
  orthonormal motion basis M (PCA of frame-to-frame changes on the training split, `basis.py`; the identity
  when no basis is used). Version 2 predicts each coefficient j with a damped trend of its own past
  reconstructions: level l, trend u, prediction p = l + phi_j u; after a frame l' = p + alpha_j (c_hat - p),
  u' = beta_j (l' - l) + (1 - beta_j) phi_j u (parameters fitted per coefficient on the training split,
  `basis.fit_trend`; version 1: the exponential smoother p <- p + alpha_j (c_hat - p)). The error c_j - p_j
  is quantised with a uniform step q (a dead zone of `deadzone` x q around 0 on the encoder's side only).
  Encoder and decoder run the same prediction on the reconstruction (closed loop), so errors never
  accumulate.
* **Entropy coding.** Exact arithmetic coding over Python integers (no carries, no precision limits) of
  every integer through a two-sided geometric ("Laplacian") model with 16 width classes. Each coefficient
  keeps an integer running mean of its magnitude that picks its class for the next frame (it moves by 1/8 of
  the difference per frame in version 2, 1/4 in version 1); the state restarts at every key frame. A packet's code
  is cut to the fewest whole bytes that identify it (the decoder reads missing bits as zeros): a frame whose
  changes are all zero can take no payload byte at all.

Everything that encoder and decoder must agree on is integer arithmetic (model tables, class choice, header
fields) except the prediction state, whose float64 rounding differences between implementations only move
the decoded points by about 1e-12 px (the state is never used to take a decision on the decoder's side).

Robustness: `LandmarkDecoder.decode` either returns a `Frame` or raises `CodecError` (a ValueError) for any
byte string: packets over `MAX_PACKET` bytes are refused before parsing, every header field is range-checked,
the number of coded symbols is fixed by the format (so the work per packet is bounded), escape codes are
limited to `MAX_ESCAPE_BITS`, and decoded points outside [-crop_size, 2 crop_size] are refused. The format
carries no floating-point number, so no NaN can arrive; the encoder treats NaN points as "no face".

Modules: `packet.py` (header layouts, flags, `Frame`, errors), `entropy.py` (arithmetic coding, magnitude
classes), `prediction.py` (`Basis`, the stream state both ends update), this file (encoder and decoder).

Glossary: x points (68,2) crop px; c coefficients (136,); q quantisation step (px); k quantised integers;
S crop size (px); seq sequence number; ts capture timestamp (ms, sender's wall clock mod 2^32).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .entropy import ArithmeticDecoder, ArithmeticEncoder, magnitude_class, put_int, take_int, update_state
from .packet import (DELTA2_END, DELTA2_FACE, DELTA2_HEADER_SIZE, DELTA2_MARK, DELTA2_SEQ, DELTA_HEADER, DELTA_MARK,
                     DIM, FLAG_BITS, FLAG_END, FLAG_FACE, GAZE_MAX, GAZE_STEP, KEY_HEADER, KEY_MAGIC, MAX_PACKET,
                     NUM_POINTS,
                     PREDICT_PREVIOUS, TRANSFORM_IDENTITY, VERSION, VERSIONS, CodecError, CropBox, Frame, StreamGap,
                     StreamParams, delta2_byte)
from .prediction import Basis, StreamModel

__all__ = ["DELTA2_END", "DELTA2_FACE", "DELTA2_MARK", "DELTA_MARK", "DIM", "KEY_HEADER", "KEY_MAGIC", "MAX_PACKET",
           "PREDICT_PREVIOUS", "VERSION", "VERSIONS", "ArithmeticDecoder", "ArithmeticEncoder", "Basis",
           "CodecError", "CropBox", "Frame", "LandmarkDecoder", "LandmarkEncoder", "StreamGap", "StreamParams",
           "check_key_interval", "check_step", "put_int", "take_int"]


def _check_points(points: np.ndarray, size: int) -> np.ndarray:
    x = np.asarray(points, np.float64).reshape(DIM)
    if not (np.all(x >= -size) and np.all(x <= 2 * size)):
        raise CodecError(f"decoded points fall outside [-{size}, {2 * size}] px: corrupt packet")
    return x.reshape(NUM_POINTS, 2).astype(np.float32)


# --- encoder -----------------------------------------------------------------------------------------


def check_step(step: float, what: str = "step") -> int:
    """The quantisation step q (px at the crop) as the packets carry it: a whole number of 1/64 px, 1..255 of
    them; InputError (naming the step as `what`, e.g. a command's flag) for anything else, NaN included."""
    if not 1 <= step * 64 <= 255:  # False for NaN too
        raise InputError(f"{what} {step}: must be between 1/64 and 255/64 px")
    return int(round(step * 64))


def check_key_interval(frames: int, what: str = "key_interval") -> int:
    """Frames between key frames: 1..255 (the decoder waits at most this long after a lost packet)."""
    if not 1 <= frames <= 255:
        raise InputError(f"{what} {frames}: must be between 1 and 255 frames")
    return frames


class LandmarkEncoder:
    """Stateful: `encode(points, timestamp_ms, box)` -> one packet per frame (module docstring).

    step: quantisation step q in px at the crop (a multiple of 1/64, 1/64..255/64); deadzone: fraction of q
    added to the rounding threshold of prediction errors (fewer bits, a little more error); key_interval:
    frames between key frames (a lost packet costs at most this many frames); version: the packet format
    to write (2, or 1 for old receivers; the decoder reads both).
    """

    def __init__(self, basis: Basis, *, fps: float, step: float = 0.5, deadzone: float = 0.15,
                 key_interval: int = 50, predictor: int = PREDICT_PREVIOUS, version: int = VERSION):
        q64 = check_step(step)
        check_key_interval(key_interval)
        if not 1 <= fps <= 120:
            raise ValueError(f"fps must be between 1 and 120, got {fps}")
        if not 0 <= deadzone < 0.5:
            raise ValueError(f"deadzone must be in [0, 0.5), got {deadzone}")
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {version}")
        (basis.alpha if version == 1 else basis.trend)(predictor)  # defined?
        self.version = version
        self.basis, self.q64, self.fps100 = basis, q64, int(round(fps * 100))
        self.deadzone, self.key_interval, self.predictor = deadzone, key_interval, predictor
        self.seq = 0
        self._model: StreamModel | None = None
        self._gaze = GazeCoder()
        self._since_key = 0

    def encode(self, points: np.ndarray | None, timestamp_ms: int, box: CropBox, *, end: bool = False,
               key: bool = False, gaze: np.ndarray | None = None) -> bytes:
        """One packet. points (68,2) in crop px at box.size (None or NaN: no face); timestamp_ms: capture time;
        gaze (2,) eye widths (`iris.relative_gaze`, both eyes alike; None or NaN: not seen), sent by version 3."""
        if points is not None:
            points = np.asarray(points, np.float64)
            if points.shape != (NUM_POINTS, 2):
                raise ValueError(f"expected points of shape (68, 2), got {points.shape}")
            if not np.isfinite(points).all():
                points = None
            else:  # the range the decoder accepts, with room for the quantisation error
                points = np.clip(points, -0.9 * box.size, 1.9 * box.size)
        ts = int(timestamp_ms) & 0xFFFFFFFF
        self._pending_gaze = None if gaze is None else np.asarray(gaze, np.float64).reshape(2)
        params = StreamParams(self.fps100, self.q64, box, self.basis.transform_id, self.predictor, self.version)
        m = self._model
        need_key = (key or m is None or m.params != params or self._since_key >= self.key_interval
                    or (points is not None and m.pred is None)  # the face (re)appears
                    or abs(_ts_jitter(ts, m.ts, params.period_ms)) > 60_000)
        seq = self.seq
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        if need_key:
            self._since_key = 1
            return self._key(points, seq, ts, params, end)
        self._since_key += 1
        return self._delta(points, seq, ts, end)

    def _key(self, points, seq: int, ts: int, params: StreamParams, end: bool) -> bytes:
        box = params.crop
        for name, v, lo, hi in (("x0", box.x0, -32768, 32767), ("y0", box.y0, -32768, 32767),
                                ("side", box.side, 1, 65535), ("size", box.size, 16, 4096)):
            if not lo <= v <= hi:
                raise ValueError(f"crop box {name}={v} outside {lo}..{hi}")
        self._model = model = StreamModel(self.basis, params)
        flags = (FLAG_FACE if points is not None else 0) | (FLAG_END if end else 0)
        header = KEY_HEADER.pack(KEY_MAGIC, params.version, flags, seq, ts, params.fps100, params.q64, box.size,
                                 box.x0, box.y0, box.side, params.transform_id, params.predictor)
        self._gaze.reset()
        if points is None:
            model.start(None, seq, ts)
            return header
        enc = ArithmeticEncoder()
        c = self.basis.shape_vectors.T @ (points.reshape(DIM) - model.mean)
        k = np.round(c / params.step).astype(np.int64)
        for v, a in zip(k, model.key_states):
            put_int(enc, int(v), magnitude_class(a))
        model.start(model.key_points(k.astype(np.float64)), seq, ts)
        if params.version >= 3:
            self._gaze.put(enc, self._pending_gaze)
        return header + enc.finish()

    def _delta(self, points, seq: int, ts: int, end: bool) -> bytes:
        m = self._model
        flags = (FLAG_FACE if points is not None else 0) | (FLAG_END if end else 0)
        enc = ArithmeticEncoder()
        jitter = _ts_jitter(ts, m.ts, m.params.period_ms)
        put_int(enc, jitter, magnitude_class(m.ts_state))
        m.ts_state = update_state(m.ts_state, jitter)
        m.seq, m.ts = seq, ts
        if points is not None:
            err = self.basis.motion_vectors.T @ points.reshape(DIM) - m.pred
            r = err / m.params.step
            k = (np.sign(r) * np.floor(np.abs(r) + 0.5 - self.deadzone)).astype(np.int64)
            for v, a in zip(k, m.states):
                put_int(enc, int(v), magnitude_class(a))
            m.advance(k.astype(np.float64))
            if m.params.version >= 3:
                self._gaze.put(enc, self._pending_gaze)
        else:
            m.stop()  # the face is gone: it comes back with a key frame
        if m.params.version == 1:
            return DELTA_HEADER.pack(DELTA_MARK | flags, seq & 0xFF) + enc.finish()
        return bytes([delta2_byte(flags, seq)]) + enc.finish()


class GazeCoder:
    """Version 3's gaze block, after a frame's points (both ends keep one; `reset` at every key frame): whether
    the eyes are seen, as a change from the previous frame (0: as before), then, when seen, the quantised gaze
    (step `GAZE_STEP` eye widths, |q| <= `GAZE_MAX`) as a change from the last gaze sent (0 after a key frame),
    each integer with its own running magnitude class, like the points."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.seen = 0
        self.q = np.zeros(2, np.int64)
        self.states = [0, 10 << 8, 10 << 8]  # a first gaze after a key frame is about 10 steps from 0

    def _put(self, enc: ArithmeticEncoder, value: int, i: int) -> None:
        put_int(enc, value, magnitude_class(self.states[i]))
        self.states[i] = update_state(self.states[i], value)

    def _take(self, dec: ArithmeticDecoder, i: int) -> int:
        value = take_int(dec, magnitude_class(self.states[i]))
        self.states[i] = update_state(self.states[i], value)
        return value

    def put(self, enc: ArithmeticEncoder, gaze: np.ndarray | None) -> None:
        seen = int(gaze is not None and bool(np.isfinite(gaze).all()))
        self._put(enc, seen - self.seen, 0)
        self.seen = seen
        if seen:
            q = np.clip(np.round(np.asarray(gaze) / GAZE_STEP), -GAZE_MAX, GAZE_MAX).astype(np.int64)
            for j in range(2):
                self._put(enc, int(q[j] - self.q[j]), 1 + j)
            self.q = q

    def take(self, dec: ArithmeticDecoder) -> np.ndarray | None:
        """The gaze (2,) eye widths, or None when not seen; CodecError for values out of range."""
        seen = self.seen + self._take(dec, 0)
        if seen not in (0, 1):
            raise CodecError(f"gaze seen flag {seen}: corrupt packet")
        self.seen = seen
        if not seen:
            return None
        q = self.q + np.array([self._take(dec, 1 + j) for j in range(2)], np.int64)
        if np.abs(q).max() > GAZE_MAX:
            raise CodecError(f"gaze {q.tolist()} out of range: corrupt packet")
        self.q = q
        return q.astype(np.float64) * GAZE_STEP


def _ts_jitter(ts: int, prev: int, period: int) -> int:
    """ts - prev - period as a signed 32-bit difference."""
    d = (ts - prev - period) & 0xFFFFFFFF
    return d - (1 << 32) if d >= 1 << 31 else d


# --- decoder -----------------------------------------------------------------------------------------


class LandmarkDecoder:
    """Stateful: `decode(packet) -> Frame`, or `CodecError` (`StreamGap` when waiting for a key frame).

    bases: the transforms this end knows, by transform id (the identity is always known).
    """

    def __init__(self, bases: dict[int, Basis] | Basis | None = None, *, max_packet: int = MAX_PACKET):
        if isinstance(bases, Basis):
            bases = {bases.transform_id: bases}
        self.bases = {TRANSFORM_IDENTITY: Basis.identity(), **(bases or {})}
        self.max_packet = max_packet
        self._model: StreamModel | None = None
        self._gaze = GazeCoder()

    def decode(self, packet: bytes) -> Frame:
        if not isinstance(packet, (bytes, bytearray, memoryview)):
            raise CodecError(f"a packet is bytes, got {type(packet).__name__}")
        packet = bytes(packet)
        if len(packet) > self.max_packet:
            raise CodecError(f"packet of {len(packet)} bytes exceeds the {self.max_packet}-byte limit")
        if packet[:4] == KEY_MAGIC:
            return self._key(packet)
        version = self._model.params.version if self._model is not None else None
        if version == 1 and len(packet) >= DELTA_HEADER.size and packet[0] & 0xF0 == DELTA_MARK:
            return self._delta(packet)
        if version is not None and version >= 2 and packet and packet[0] & DELTA2_MARK:
            return self._delta(packet)
        if version is None and packet and packet[0] & DELTA2_MARK:  # a delta of either version
            raise StreamGap("delta frame before any key frame: waiting for a key frame")
        raise CodecError("not a landmark packet (bad magic)")

    def _key(self, packet: bytes) -> Frame:
        self._model = None  # whatever happens next, the old state is gone
        if len(packet) < KEY_HEADER.size:
            raise CodecError(f"key frame truncated ({len(packet)} bytes, header is {KEY_HEADER.size})")
        (_, version, flags, seq, ts, fps100, q64, size, x0, y0, side, transform, predictor) = \
            KEY_HEADER.unpack_from(packet)
        if version not in VERSIONS:
            raise CodecError(f"unsupported packet version {version} (this decoder speaks {', '.join(map(str, VERSIONS))})")
        if flags & ~FLAG_BITS:
            raise CodecError(f"reserved flag bits set (0x{flags:02x})")
        if not 100 <= fps100 <= 12_000:
            raise CodecError(f"frame rate {fps100 / 100:g} fps outside 1..120")
        if q64 == 0:
            raise CodecError("quantisation step 0")
        if not 16 <= size <= 4096 or side < 1:
            raise CodecError(f"crop size {size} px / box side {side} px out of range")
        if transform not in self.bases:
            raise CodecError(f"unknown transform {transform} (known: {sorted(self.bases)}): sender and receiver "
                             "need the same shape basis")
        crop = CropBox(x0, y0, side, size)
        params = StreamParams(fps100, q64, crop, transform, predictor, version)
        model = StreamModel(self.bases[transform], params)  # CodecError for an unknown predictor
        points = gaze = None
        self._gaze.reset()
        if flags & FLAG_FACE:
            dec = ArithmeticDecoder(packet[KEY_HEADER.size:])
            k = np.array([take_int(dec, magnitude_class(a)) for a in model.key_states], np.float64)
            points = model.key_points(k)
            points = _check_points(points, size)
            if version >= 3:
                gaze = self._gaze.take(dec)
        elif len(packet) > KEY_HEADER.size:
            raise CodecError("key frame without a face carries a payload")
        model.start(None if points is None else model.key_points(k), seq, ts)  # as on the encoder's side
        self._model = model
        return Frame(seq, ts, True, bool(flags & FLAG_END), points, crop, fps100 / 100, len(packet), gaze)

    def _delta(self, packet: bytes) -> Frame:
        m = self._model
        if m.params.version == 1:
            first, seq_low = DELTA_HEADER.unpack_from(packet)
            flags, header, modulus = first & 0x0F, DELTA_HEADER.size, 0x100
            if flags & ~FLAG_BITS:
                raise CodecError(f"reserved flag bits set (0x{flags:02x})")
        else:
            first = packet[0]
            flags = (FLAG_FACE if first & DELTA2_FACE else 0) | (FLAG_END if first & DELTA2_END else 0)
            seq_low, header, modulus = first & DELTA2_SEQ, DELTA2_HEADER_SIZE, DELTA2_SEQ + 1
        seq = (m.seq + 1) & 0xFFFFFFFF
        if seq_low != seq % modulus:
            self._model = None
            raise StreamGap(f"packet(s) missing before sequence number {seq_low} (mod {modulus}; expected "
                            f"{seq % modulus}): waiting for the next key frame")
        if flags & FLAG_FACE and m.pred is None:
            self._model = None
            raise CodecError("a face reappears in a delta frame (the encoder sends a key frame then)")
        try:
            dec = ArithmeticDecoder(packet[header:])
            jitter = take_int(dec, magnitude_class(m.ts_state))
            m.ts_state = update_state(m.ts_state, jitter)
            ts = (m.ts + m.params.period_ms + jitter) & 0xFFFFFFFF
            points = gaze = None
            if flags & FLAG_FACE:
                k = np.array([take_int(dec, magnitude_class(a)) for a in m.states], np.float64)
                points = _check_points(m.advance(k), m.params.crop.size)
                if m.params.version >= 3:
                    gaze = self._gaze.take(dec)
            else:
                m.stop()
        except CodecError:
            self._model = None
            raise
        m.seq, m.ts = seq, ts
        return Frame(seq, ts, False, bool(flags & FLAG_END), points, m.params.crop, m.params.fps100 / 100,
                     len(packet), gaze)


"""Landmark codec: 68 face landmarks per frame in a few bytes (telepresence, issue 14). Pure: bytes in, bytes out.

The sender tracks 68 points per frame, expresses them in its head crop (a square of `crop_size` px, 256 by
default, cut by the VoxCeleb rule of `data/crop.py`) and encodes each frame into one packet; the receiver
decodes the packets and drives an avatar (`pipeline.LiveStage`). The format is specified byte by byte in
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

Glossary: x points (68,2) crop px; c coefficients (136,); q quantisation step (px); k quantised integers;
S crop size (px); seq sequence number; ts capture timestamp (ms, sender's wall clock mod 2^32).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

VERSION = 2  # what the encoder writes by default
VERSIONS = (1, 2)  # what the decoder reads
KEY_MAGIC = b"THLM"  # first bytes of a key frame
DELTA_MARK = 0xD0  # v1: high nibble of a delta frame's first byte; its low nibble holds the flags
DELTA2_MARK = 0x80  # v2: top bit of a delta frame's only header byte ("T" of the key magic has it clear)
DELTA2_FACE, DELTA2_END, DELTA2_SEQ = 0x40, 0x20, 0x1F  # v2 delta byte: 1 F E s s s s s (seq mod 32)
MAX_PACKET = 1024  # bytes; a key frame of a fast-moving face at the finest step is about 300
NUM_POINTS = 68
DIM = 2 * NUM_POINTS

FLAG_FACE = 0x01  # the frame carries landmarks (0: no face in this frame)
FLAG_END = 0x02  # the sender's last packet: the stream ends cleanly
_FLAGS = FLAG_FACE | FLAG_END  # other bits must be 0

KEY_HEADER = struct.Struct(">4sBBIIHBHhhHBB")  # magic, version, flags, seq, ts, fps*100, q*64, S, x0, y0, side, transform, predictor
DELTA_HEADER = struct.Struct(">BB")  # v1: DELTA_MARK | flags, seq mod 256
DELTA2_HEADER_SIZE = 1  # v2: DELTA2_MARK | FACE << 6 | END << 5 | seq mod 32

# Magnitude model: |k| in 0..MAX_SYMBOL, else an escape followed by an Elias-gamma code of |k| - MAX_SYMBOL - 1
# (equiprobable bits); a sign bit (equiprobable) after every non-zero magnitude. Class s is a two-sided
# geometric distribution of ratio THETA_Q16[s] / 65536 whose mean |k| is 0.02 * 600^(s/15).
MAX_SYMBOL = 20
MAX_ESCAPE_BITS = 24  # |k| < 2^24 + MAX_SYMBOL
THETA_Q16 = (655, 1004, 1537, 2353, 3598, 5489, 8330, 12499, 18316, 25740, 34042, 42035, 48782, 53962, 57702, 60302)
CLASS_THRESHOLDS_Q8 = (6, 10, 15, 23, 35, 53, 82, 125, 192, 294, 451, 691, 1058, 1620, 2482)  # mean |k| * 256
STATE_SHIFT = 2  # running mean of |k| (Q8): a <- a + floor(((min(|k|, 64) << 8) - a) / 2^shift)
STATE_SHIFT_V2 = 3  # v2: the coefficients' running means adapt more slowly (the timestamp's keeps STATE_SHIFT)
TS_CLASS_INIT_Q8 = 64  # initial running mean of the timestamp jitter's magnitude (ms, Q8)

TRANSFORM_IDENTITY = 0  # x coded directly (no shape basis)
PREDICT_PREVIOUS = 0  # alpha = 1 for every coefficient
PREDICTORS = {PREDICT_PREVIOUS: "previous frame", 1: "fitted on raw tracks", 2: "fitted on One Euro smoothed tracks"}
# v1 predictors 1, 2 are exponential smoothers (gain alpha per coefficient); v2 predictors 1, 2 are damped
# trend (Holt) predictors (alpha, beta, phi per coefficient), `Basis.holt`.


class CodecError(InputError):
    """A packet that cannot be decoded (malformed, unsupported, out of range); the message says why."""


class StreamGap(CodecError):
    """A delta frame that cannot be decoded because a packet before it is missing: wait for a key frame."""


def _tables() -> list[tuple[list[int], int]]:
    """Per class: (frequencies of |k| = 0..MAX_SYMBOL and of the escape, their total). Integer recurrence."""
    out = []
    for theta in THETA_Q16:
        f = [1 << 14]
        for _ in range(MAX_SYMBOL + 1):
            f.append(max(1, (f[-1] * theta) >> 16))
        freq = [f[0]] + [2 * v for v in f[1:MAX_SYMBOL + 1]]
        freq.append(max(2, (2 * f[MAX_SYMBOL + 1] << 16) // (65536 - theta)))  # the escape: the tail's mass
        out.append((freq, sum(freq)))
    return out


_TABLES = _tables()
_CUM = [[sum(freq[:i]) for i in range(len(freq) + 1)] for freq, _ in _TABLES]


def magnitude_class(mean_q8: int) -> int:
    """Class (0..15) for a running mean |k| in Q8 (number of thresholds at or below it)."""
    s = 0
    while s < len(CLASS_THRESHOLDS_Q8) and CLASS_THRESHOLDS_Q8[s] <= mean_q8:
        s += 1
    return s


def update_state(mean_q8: int, k: int, shift: int = STATE_SHIFT) -> int:
    return mean_q8 + (((min(abs(k), 64) << 8) - mean_q8) >> shift)


# --- exact arithmetic coding ---------------------------------------------------------------------------

class ArithmeticEncoder:
    """Interval [low/den, (low+width)/den) narrowed symbol by symbol; `finish` gives the shortest whole-byte code."""

    def __init__(self):
        self.low, self.width, self.den = 0, 1, 1

    def put(self, cum: int, freq: int, total: int) -> None:
        self.low = self.low * total + self.width * cum
        self.width *= freq
        self.den *= total

    def finish(self) -> bytes:
        nbytes = 0
        while True:
            shift = 8 * nbytes
            v = -((-self.low << shift) // self.den)  # ceil(low * 2^shift / den)
            if v * self.den < (self.low + self.width) << shift:
                return v.to_bytes(nbytes, "big") if nbytes else b""
            nbytes += 1


class ArithmeticDecoder:
    """Reads the code of `ArithmeticEncoder` (missing trailing bits are zeros)."""

    def __init__(self, code: bytes):
        self.value, self.shift = int.from_bytes(code, "big"), 8 * len(code)
        self.low, self.width, self.den = 0, 1, 1

    def target(self, total: int) -> int:
        """floor((x - low/den) / (width/den) * total) for the code's value x."""
        num = (self.value * self.den - (self.low << self.shift)) * total
        t = num // (self.width << self.shift)
        if not 0 <= t < total:
            raise CodecError("corrupt payload: the arithmetic code leaves its interval")
        return t

    def take(self, cum: int, freq: int, total: int) -> None:
        self.low = self.low * total + self.width * cum
        self.width *= freq
        self.den *= total


def put_int(enc: ArithmeticEncoder, k: int, cls: int) -> None:
    """A signed integer through magnitude class `cls` (module docstring)."""
    freq, total = _TABLES[cls]
    cum = _CUM[cls]
    m = abs(k)
    if m <= MAX_SYMBOL:
        enc.put(cum[m], freq[m], total)
    else:
        enc.put(cum[MAX_SYMBOL + 1], freq[MAX_SYMBOL + 1], total)
        e = m - MAX_SYMBOL  # >= 1: Elias gamma, (n-1) zeros then the n bits of e
        n = e.bit_length()
        if n > MAX_ESCAPE_BITS:
            raise ValueError(f"integer {k} too large for the codec")
        for _ in range(n - 1):
            enc.put(0, 1, 2)
        for i in range(n - 1, -1, -1):
            enc.put((e >> i) & 1, 1, 2)
    if m:
        enc.put(1 if k < 0 else 0, 1, 2)


def take_int(dec: ArithmeticDecoder, cls: int) -> int:
    freq, total = _TABLES[cls]
    cum = _CUM[cls]
    t = dec.target(total)
    m = 0
    while cum[m + 1] <= t:  # linear search over at most MAX_SYMBOL + 2 entries
        m += 1
    dec.take(cum[m], freq[m], total)
    if m > MAX_SYMBOL:
        n = 1
        while _take_bit(dec) == 0:
            n += 1
            if n > MAX_ESCAPE_BITS:
                raise CodecError("corrupt payload: escape code too long")
        e = 1
        for _ in range(n - 1):
            e = (e << 1) | _take_bit(dec)
        m = MAX_SYMBOL + e
    if m and _take_bit(dec):
        return -m
    return m


def _take_bit(dec: ArithmeticDecoder) -> int:
    bit = dec.target(2)
    dec.take(bit, 1, 2)
    return bit


# --- transform ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Basis:
    """The transform both ends share (`basis.py` fits and loads it). Arrays at a 256 px crop; integer tables
    so that the entropy models start identically everywhere.

    shape_mean (136,) px, shape_vectors (136,136) orthonormal columns, shape_std (136,) int (px/256);
    motion_vectors (136,136) orthonormal columns, motion_std (136,) int (px/256) of frame-to-frame changes;
    alphas {predictor id: (136,) smoother gains in (0, 1]} (v1 streams);
    holt {predictor id: (136, 3) damped-trend parameters alpha, beta, phi} and residual_std {predictor id:
    (136,) int (px/256), the prediction errors' spread that starts the entropy models} (v2 streams).
    transform_id 0 is reserved for `identity()`.
    """

    transform_id: int
    shape_mean: np.ndarray
    shape_vectors: np.ndarray
    shape_std: np.ndarray
    motion_vectors: np.ndarray
    motion_std: np.ndarray
    alphas: dict = field(default_factory=dict)
    reference_size: int = 256
    holt: dict = field(default_factory=dict)
    residual_std: dict = field(default_factory=dict)

    @classmethod
    def identity(cls) -> "Basis":
        """No shape basis: points coded one by one around the crop centre, predicted from the previous frame."""
        eye = np.eye(DIM)
        return cls(TRANSFORM_IDENTITY, np.full(DIM, 128.0), eye, np.full(DIM, 20 * 256, np.int64), eye,
                   np.full(DIM, 2 * 256, np.int64), {PREDICT_PREVIOUS: np.ones(DIM)})

    def alpha(self, predictor: int) -> np.ndarray:
        if predictor == PREDICT_PREVIOUS:
            return np.ones(DIM)
        if predictor not in self.alphas:
            raise CodecError(f"predictor {predictor} is not defined for transform {self.transform_id}")
        return np.asarray(self.alphas[predictor], np.float64)

    def trend(self, predictor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """v2: (alpha, beta, phi, residual std in px/256) per coefficient; predictor 0 is the previous frame."""
        if predictor == PREDICT_PREVIOUS:
            return np.ones(DIM), np.zeros(DIM), np.zeros(DIM), np.asarray(self.motion_std, np.int64)
        if predictor not in self.holt or predictor not in self.residual_std:
            raise CodecError(f"predictor {predictor} is not defined for transform {self.transform_id} in version 2")
        h = np.asarray(self.holt[predictor], np.float64)
        return h[:, 0], h[:, 1], h[:, 2], np.asarray(self.residual_std[predictor], np.int64)

    def supports(self, version: int, predictor: int) -> bool:
        try:
            (self.alpha if version == 1 else self.trend)(predictor)
        except CodecError:
            return False
        return True


def _initial_states(std: np.ndarray, crop_size: int, q64: int, reference: int) -> list[int]:
    """Initial running means |k| (Q8) ~ 0.8 std / q at crop size S, in integers: 51 std S // (q64 reference)
    with std in px/256 at the reference size and q = q64 / 64 px."""
    return [int(v) for v in (51 * np.asarray(std, np.int64) * crop_size) // (q64 * reference)]


# --- frames ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CropBox:
    """The sender's crop: a square (x0, y0, side) in its frame pixels, coordinates given at `size` px."""

    x0: int
    y0: int
    side: int
    size: int


@dataclass
class Frame:
    """One decoded packet."""

    seq: int  # 32-bit sequence number
    timestamp_ms: int  # capture time, sender's wall clock in ms mod 2^32
    key: bool
    end: bool  # the sender's last packet
    points: np.ndarray | None  # (68,2) float32 crop px (None: no face in this frame)
    crop: CropBox
    fps: float
    nbytes: int  # packet size


@dataclass(frozen=True)
class StreamParams:
    """What a key frame announces."""

    fps100: int
    q64: int
    crop: CropBox
    transform_id: int
    predictor: int
    version: int = VERSION

    @property
    def step(self) -> float:
        return self.q64 / 64.0

    @property
    def period_ms(self) -> int:
        """Nominal frame period in ms, rounded half up, in integers (100000 / fps100)."""
        return (100_000 + self.fps100 // 2) // self.fps100


class _Model:
    """State shared by the encoder and the decoder between key frames (closed-loop prediction)."""

    def __init__(self, basis: Basis, params: StreamParams):
        self.basis, self.params = basis, params
        s = params.crop.size
        scale = s / basis.reference_size
        self.mean = basis.shape_mean * scale
        self.key_states = _initial_states(basis.shape_std, s, params.q64, basis.reference_size)
        if params.version == 1:
            self.alpha = basis.alpha(params.predictor)
            self.motion_init = _initial_states(basis.motion_std, s, params.q64, basis.reference_size)
        else:
            self.alpha, self.beta, self.phi, spread = basis.trend(params.predictor)
            self.motion_init = _initial_states(spread, s, params.q64, basis.reference_size)
        self.states = list(self.motion_init)
        self.ts_state = TS_CLASS_INIT_Q8
        self.pred: np.ndarray | None = None  # (136,) motion coefficients predicted for the next frame
        self.level: np.ndarray | None = None  # v2: level and trend of the damped-trend predictor
        self.trend: np.ndarray | None = None
        self.seq = 0
        self.ts = 0

    def key_points(self, k: np.ndarray) -> np.ndarray:
        return self.mean + self.basis.shape_vectors @ (k * self.params.step)

    def start(self, points: np.ndarray | None, seq: int, ts: int) -> None:
        self.states = list(self.motion_init)
        self.ts_state = TS_CLASS_INIT_Q8
        self.pred = None if points is None else self.basis.motion_vectors.T @ points.reshape(DIM)
        self.level = self.pred
        self.trend = None if points is None else np.zeros(DIM)
        self.seq, self.ts = seq, ts

    def stop(self) -> None:
        """No face: the prediction ends (the face comes back in a key frame)."""
        self.pred = self.level = self.trend = None

    def advance(self, k: np.ndarray) -> np.ndarray:
        """Reconstruct the coefficients from quantised errors k, update the prediction; returns points (136,)."""
        c_hat = self.pred + k * self.params.step
        if self.params.version == 1:
            self.pred = self.pred + self.alpha * (c_hat - self.pred)
        else:  # damped trend: level l, trend t; prediction p = l + phi t
            level = self.pred + self.alpha * (c_hat - self.pred)
            self.trend = self.beta * (level - self.level) + (1 - self.beta) * self.phi * self.trend
            self.level = level
            self.pred = level + self.phi * self.trend
        shift = STATE_SHIFT if self.params.version == 1 else STATE_SHIFT_V2
        self.states = [update_state(a, int(v), shift) for a, v in zip(self.states, k)]
        return self.basis.motion_vectors @ c_hat


def _check_points(points: np.ndarray, size: int) -> np.ndarray:
    x = np.asarray(points, np.float64).reshape(DIM)
    if not (np.all(x >= -size) and np.all(x <= 2 * size)):
        raise CodecError(f"decoded points fall outside [-{size}, {2 * size}] px: corrupt packet")
    return x.reshape(NUM_POINTS, 2).astype(np.float32)


# --- encoder -----------------------------------------------------------------------------------------

class LandmarkEncoder:
    """Stateful: `encode(points, timestamp_ms, box)` -> one packet per frame (module docstring).

    step: quantisation step q in px at the crop (a multiple of 1/64, 1/64..255/64); deadzone: fraction of q
    added to the rounding threshold of prediction errors (fewer bits, a little more error); key_interval:
    frames between key frames (a lost packet costs at most this many frames); version: the packet format
    to write (2, or 1 for old receivers; the decoder reads both).
    """

    def __init__(self, basis: Basis, *, fps: float, step: float = 0.5, deadzone: float = 0.15,
                 key_interval: int = 50, predictor: int = PREDICT_PREVIOUS, version: int = VERSION):
        q64 = int(round(step * 64))
        if not 1 <= q64 <= 255:
            raise ValueError(f"step must be between 1/64 and 255/64 px, got {step}")
        if not 1 <= fps <= 120:
            raise ValueError(f"fps must be between 1 and 120, got {fps}")
        if not 1 <= key_interval <= 255:
            raise ValueError(f"key_interval must be between 1 and 255 frames, got {key_interval}")
        if not 0 <= deadzone < 0.5:
            raise ValueError(f"deadzone must be in [0, 0.5), got {deadzone}")
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {version}")
        (basis.alpha if version == 1 else basis.trend)(predictor)  # defined?
        self.version = version
        self.basis, self.q64, self.fps100 = basis, q64, int(round(fps * 100))
        self.deadzone, self.key_interval, self.predictor = deadzone, key_interval, predictor
        self.seq = 0
        self._model: _Model | None = None
        self._since_key = 0

    def encode(self, points: np.ndarray | None, timestamp_ms: int, box: CropBox, *, end: bool = False,
               key: bool = False) -> bytes:
        """One packet. points (68,2) in crop px at box.size (None or NaN: no face); timestamp_ms: capture time."""
        if points is not None:
            points = np.asarray(points, np.float64)
            if points.shape != (NUM_POINTS, 2):
                raise ValueError(f"expected points of shape (68, 2), got {points.shape}")
            if not np.isfinite(points).all():
                points = None
            else:  # the range the decoder accepts, with room for the quantisation error
                points = np.clip(points, -0.9 * box.size, 1.9 * box.size)
        ts = int(timestamp_ms) & 0xFFFFFFFF
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
        self._model = model = _Model(self.basis, params)
        flags = (FLAG_FACE if points is not None else 0) | (FLAG_END if end else 0)
        header = KEY_HEADER.pack(KEY_MAGIC, params.version, flags, seq, ts, params.fps100, params.q64, box.size,
                                 box.x0, box.y0, box.side, params.transform_id, params.predictor)
        if points is None:
            model.start(None, seq, ts)
            return header
        enc = ArithmeticEncoder()
        c = self.basis.shape_vectors.T @ (points.reshape(DIM) - model.mean)
        k = np.round(c / params.step).astype(np.int64)
        for v, a in zip(k, model.key_states):
            put_int(enc, int(v), magnitude_class(a))
        model.start(model.key_points(k.astype(np.float64)), seq, ts)
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
        else:
            m.stop()  # the face is gone: it comes back with a key frame
        if m.params.version == 1:
            return DELTA_HEADER.pack(DELTA_MARK | flags, seq & 0xFF) + enc.finish()
        return bytes([delta2_byte(flags, seq)]) + enc.finish()


def delta2_byte(flags: int, seq: int) -> int:
    """The v2 delta header: 1 F E s s s s s."""
    return (DELTA2_MARK | (DELTA2_FACE if flags & FLAG_FACE else 0) | (DELTA2_END if flags & FLAG_END else 0)
            | (seq & DELTA2_SEQ))


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
        self._model: _Model | None = None

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
        if version == 2 and packet and packet[0] & DELTA2_MARK:
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
        if flags & ~_FLAGS:
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
        model = _Model(self.bases[transform], params)  # CodecError for an unknown predictor
        points = None
        if flags & FLAG_FACE:
            dec = ArithmeticDecoder(packet[KEY_HEADER.size:])
            k = np.array([take_int(dec, magnitude_class(a)) for a in model.key_states], np.float64)
            points = model.key_points(k)
            points = _check_points(points, size)
        elif len(packet) > KEY_HEADER.size:
            raise CodecError("key frame without a face carries a payload")
        model.start(None if points is None else model.key_points(k), seq, ts)  # as on the encoder's side
        self._model = model
        return Frame(seq, ts, True, bool(flags & FLAG_END), points, crop, fps100 / 100, len(packet))

    def _delta(self, packet: bytes) -> Frame:
        m = self._model
        if m.params.version == 1:
            first, seq_low = DELTA_HEADER.unpack_from(packet)
            flags, header, modulus = first & 0x0F, DELTA_HEADER.size, 0x100
            if flags & ~_FLAGS:
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
            points = None
            if flags & FLAG_FACE:
                k = np.array([take_int(dec, magnitude_class(a)) for a in m.states], np.float64)
                points = _check_points(m.advance(k), m.params.crop.size)
            else:
                m.stop()
        except CodecError:
            self._model = None
            raise
        m.seq, m.ts = seq, ts
        return Frame(seq, ts, False, bool(flags & FLAG_END), points, m.params.crop, m.params.fps100 / 100,
                     len(packet))

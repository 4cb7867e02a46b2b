"""The landmark codec's packet format: header constants and layouts, flags, the codec's errors, and the decoded
`Frame` (docs/telepresence.md specifies it byte by byte; `codec.py` explains it). Pure: no state."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

VERSION = 3  # what the encoder writes by default
VERSIONS = (1, 2, 3)  # what the decoder reads (3 = 2 + the gaze after the points)
KEY_MAGIC = b"THLM"  # first bytes of a key frame
DELTA_MARK = 0xD0  # v1: high nibble of a delta frame's first byte; its low nibble holds the flags
DELTA2_MARK = 0x80  # v2: top bit of a delta frame's only header byte ("T" of the key magic has it clear)
DELTA2_FACE, DELTA2_END, DELTA2_SEQ = 0x40, 0x20, 0x1F  # v2 delta byte: 1 F E s s s s s (seq mod 32)
MAX_PACKET = 1024  # bytes; a key frame of a fast-moving face at the finest step is about 300
NUM_POINTS = 68
DIM = 2 * NUM_POINTS
GAZE_STEP = 1 / 64  # v3: gaze quantisation step, eye widths (landmarks/iris.py relative_gaze)
GAZE_MAX = 40  # v3: |quantised gaze| limit (0.62 eye widths; an iris lies within 0.35 of its eye's middle)

FLAG_FACE = 0x01  # the frame carries landmarks (0: no face in this frame)
FLAG_END = 0x02  # the sender's last packet: the stream ends cleanly
FLAG_BITS = FLAG_FACE | FLAG_END  # other bits must be 0

KEY_HEADER = struct.Struct(">4sBBIIHBHhhHBB")  # magic, version, flags, seq, ts, fps*100, q*64, S, x0, y0, side, transform, predictor
DELTA_HEADER = struct.Struct(">BB")  # v1: DELTA_MARK | flags, seq mod 256
DELTA2_HEADER_SIZE = 1  # v2: DELTA2_MARK | FACE << 6 | END << 5 | seq mod 32

TRANSFORM_IDENTITY = 0  # x coded directly (no shape basis)
PREDICT_PREVIOUS = 0  # alpha = 1 for every coefficient
PREDICTORS = {PREDICT_PREVIOUS: "previous frame", 1: "fitted on raw tracks", 2: "fitted on One Euro smoothed tracks"}
# v1 predictors 1, 2 are exponential smoothers (gain alpha per coefficient); v2 predictors 1, 2 are damped
# trend (Holt) predictors (alpha, beta, phi per coefficient), `Basis.holt`.


class CodecError(InputError):
    """A packet that cannot be decoded (malformed, unsupported, out of range); the message says why."""


class StreamGap(CodecError):
    """A delta frame that cannot be decoded because a packet before it is missing: wait for a key frame."""


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
    gaze: np.ndarray | None = None  # v3: (2,) the eyes' gaze (eye widths, x right, y down; iris.relative_gaze, both eyes alike); None: not seen or not sent

    def points_with_iris(self) -> np.ndarray | None:
        """(70,2) crop px: the points and both iris centres placed by `gaze` (NaN when not seen), for a live
        stage that renders gaze; None without a face."""
        if self.points is None:
            return None
        from ..landmarks.iris import place_gaze, with_iris

        if self.gaze is None:
            return with_iris(self.points, None)
        return with_iris(self.points, place_gaze(self.points, np.stack([self.gaze, self.gaze])))


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


def delta2_byte(flags: int, seq: int) -> int:
    """The v2 delta header: 1 F E s s s s s."""
    return (DELTA2_MARK | (DELTA2_FACE if flags & FLAG_FACE else 0) | (DELTA2_END if flags & FLAG_END else 0)
            | (seq & DELTA2_SEQ))

"""Entropy coding of the landmark codec: exact arithmetic coding over Python integers (no carries, no
precision limits) of signed integers through 16 two-sided geometric ("Laplacian") magnitude classes, and the
integer running means that choose a coefficient's class (`codec.py` explains the format). Every number the
two ends must agree on is an integer, so both start and stay identical."""

from __future__ import annotations

import numpy as np

from .packet import CodecError

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


TABLES = _tables()
_CUM = [[sum(freq[:i]) for i in range(len(freq) + 1)] for freq, _ in TABLES]


def magnitude_class(mean_q8: int) -> int:
    """Class (0..15) for a running mean |k| in Q8 (number of thresholds at or below it)."""
    s = 0
    while s < len(CLASS_THRESHOLDS_Q8) and CLASS_THRESHOLDS_Q8[s] <= mean_q8:
        s += 1
    return s


def update_state(mean_q8: int, k: int, shift: int = STATE_SHIFT) -> int:
    return mean_q8 + (((min(abs(k), 64) << 8) - mean_q8) >> shift)


def initial_states(std: np.ndarray, crop_size: int, q64: int, reference: int) -> list[int]:
    """Initial running means |k| (Q8) ~ 0.8 std / q at crop size S, in integers: 51 std S // (q64 reference)
    with std in px/256 at the reference size and q = q64 / 64 px."""
    return [int(v) for v in (51 * np.asarray(std, np.int64) * crop_size) // (q64 * reference)]


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
    freq, total = TABLES[cls]
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
    freq, total = TABLES[cls]
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


"""Temporal filtering of driving landmark sequences (puppeteering, paper.md section 1 stage 3).

Per-frame detections jitter by a pixel or two; rendered through the generator that becomes a shimmering
face. The One Euro filter (Casiez, Roussel, Vogel, CHI 2012) is a low-pass filter whose cut-off rises with
speed: strong smoothing when the face is still, little lag when it moves. Used for driving sequences only;
training data keeps the raw per-frame landmarks.

Frames without a face (NaN points) are left NaN and restart the filter; `fill_gaps` interpolates short gaps
when the caller wants a landmark image for every frame (an explicit choice: preprocessing never does it).
"""

from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One Euro filter over arrays of any shape (all points filtered independently).

    min_cutoff (Hz): smoothing at rest (lower = smoother); beta: speed coefficient (higher = less lag);
    d_cutoff (Hz): cut-off of the derivative estimate. Positions in pixels, time in seconds.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        self.x_prev: np.ndarray | None = None
        self.dx_prev: np.ndarray | None = None

    def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.x_prev is None:
            self.x_prev, self.dx_prev = x.copy(), np.zeros_like(x)
            return x.copy()
        dx = (x - self.x_prev) / dt
        a_d = _alpha(self.d_cutoff, dt)
        dx_hat = a_d * dx + (1 - a_d) * self.dx_prev
        cutoff = self.min_cutoff + self.beta * np.abs(dx_hat)
        a = _alpha(cutoff, dt)
        x_hat = a * x + (1 - a) * self.x_prev
        self.x_prev, self.dx_prev = x_hat, dx_hat
        return x_hat


def smooth_sequence(points: np.ndarray, fps: float, min_cutoff: float = 1.0, beta: float = 0.05,
                    d_cutoff: float = 1.0) -> np.ndarray:
    """One Euro filter along the first axis of points (F,P,2); NaN frames stay NaN and restart the filter.

    beta is in 1/px: the defaults suit faces of about 100-300 px at 25-30 fps.
    """
    points = np.asarray(points, dtype=np.float64)
    out = np.full_like(points, np.nan)
    f = OneEuroFilter(min_cutoff, beta, d_cutoff)
    dt = 1.0 / float(fps)
    for i, p in enumerate(points):
        if not np.isfinite(p).all():
            f.reset()
            continue
        out[i] = f(p, dt)
    return out.astype(np.float32)


def fill_gaps(points: np.ndarray, found: np.ndarray | None = None, max_gap: int | None = None) -> np.ndarray:
    """Linearly interpolate missing frames (F,P,2) between found ones; ends are held at the nearest found
    frame. Gaps longer than `max_gap` frames stay NaN. All-missing input is returned unchanged."""
    points = np.asarray(points, dtype=np.float32).copy()
    if found is None:
        found = np.isfinite(points).reshape(len(points), -1).all(axis=1)
    found = np.asarray(found, bool)
    idx = np.flatnonzero(found)
    if idx.size == 0:
        return points
    t = np.arange(len(points))
    flat = points.reshape(len(points), -1)
    for j in range(flat.shape[1]):
        flat[:, j] = np.interp(t, idx, flat[idx, j])
    if max_gap is not None:
        missing = ~found
        start = None
        for i in range(len(points) + 1):
            if i < len(points) and missing[i]:
                start = i if start is None else start
            elif start is not None:
                if i - start > max_gap:
                    flat[start:i] = np.nan
                start = None
    return flat.reshape(points.shape)

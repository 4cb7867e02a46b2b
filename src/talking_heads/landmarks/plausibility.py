"""Is a frame's 68-point shape trustworthy? (drivers in profile, half-occluded or sideways).

Two tests, both measured on ../shared/data (the numbers below set the thresholds):
- the tracker's confidence (`LandmarkTrack.confidence`, dlib's detector score mapped to [0, 1]). Real,
  upright test footage: per-clip minima 0.58 to 0.87 over 10 test clips (60 frames each; the lowest, 0.58, a
  1280 x 720 wide shot). The same 16-frame clip degraded: rotated 90 degrees without a rotation tag 0.33-0.43,
  a third of the face occluded 0.43-0.53, the lower half covered 0.39-0.45, squeezed to half width 0.28-0.44.
  Frames below `MIN_CONFIDENCE` = 0.55 are not trusted.
- the shape: the mean distance of the 68 points from the neutral template after the best similarity fit
  (Umeyama), relative to the fitted face size. Real footage: up to 0.092 (expressive talking), so
  `MAX_SHAPE_RESIDUAL` = 0.15 only catches shapes no face makes (a tracker that latched onto something else).
A driver holds the last trusted landmarks over untrusted frames and counts them (`driver.load_driver`).
"""

from __future__ import annotations

import numpy as np

from .adaptation import fit_similarity
from .motions import neutral_face

MIN_CONFIDENCE = 0.55
MAX_SHAPE_RESIDUAL = 0.15


def shape_residual(points: np.ndarray) -> np.ndarray:
    """(F,) mean point distance from the neutral template after a similarity fit, over the fitted face size
    (NaN for frames that are not finite)."""
    p = np.asarray(points, np.float64)
    out = np.full(len(p), np.nan)
    ok = np.isfinite(p).all(axis=(1, 2))
    if not ok.any():
        return out
    tmpl = neutral_face(256).astype(np.float64)
    q = p[ok]
    s, r, t = fit_similarity(np.broadcast_to(tmpl, q.shape), q)
    fit = s[:, None, None] * np.einsum("fij,pj->fpi", r, tmpl) + t[:, None, :]
    size = np.maximum(s * float((tmpl.max(0) - tmpl.min(0)).max()), 1e-9)
    out[ok] = np.linalg.norm(fit - q, axis=-1).mean(-1) / size
    return out


def trusted(points: np.ndarray, confidence: np.ndarray | None) -> np.ndarray:
    """(F,) bool: frames whose landmarks are confident enough and shaped like a face."""
    res = shape_residual(points)
    ok = np.isfinite(res) & (res <= MAX_SHAPE_RESIDUAL)
    if confidence is not None:
        ok &= np.asarray(confidence, np.float64) >= MIN_CONFIDENCE
    return ok


__all__ = ["MIN_CONFIDENCE", "MAX_SHAPE_RESIDUAL", "shape_residual", "trusted"]

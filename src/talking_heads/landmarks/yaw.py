"""Head turn (yaw) from 68 points, and a limit on how far a 2-D warp is asked to turn a head.

A renderer that warps the photo in 2-D (the TPS renderer, models/tps.py) turns a head cleanly up to about
15 degrees; beyond 20-25 the far cheek squeezes, hair and glasses bend, and past 30 it breaks
(../shared/design/warp_renderer.md section 2). `clamp_yaw` keeps the driven landmarks within `limit` degrees
of the photo's own yaw: past it, the part of the motion that is turning is taken back to the limit while
everything else (mouth, lids, brows, nods, tilts, translation) is kept, so a driver that turns far gives
an avatar that turns as far as it can and keeps talking.

Yaw is read from the nose tip's offset from the eye-corner midline along the eye axis, over the inter-ocular
distance (roll and scale free), and converted to degrees with the built-in motions' 3-D template
(landmarks/motions.py), turned from -80 to 80 degrees: the same template gives the turning motion that the
clamp takes back (mapped to the face by a least-squares similarity on the stable points).

Points are (68,2) / (F,68,2) float pixels (x right, y down), iBUG 300-W order.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .adaptation import STABLE_POINTS, fit_similarity
from .motions import FaceControls, face_landmarks

CALIBRATION_DEGREES = np.linspace(-80.0, 80.0, 161)
ITERATIONS = 4  # corrections of the turn at most
TOLERANCE = 0.25  # degrees: close enough to the limit
YAW_SLACK = 4.0  # degrees: `follow_yaw`'s slack around the driver's and the avatar's own yaw (the estimate's noise)


def yaw_proxy(points: np.ndarray) -> np.ndarray:
    """(...,) the nose tip's offset from the eye-corner midline along the eye axis, over the inter-ocular
    distance."""
    p = np.asarray(points, np.float64)
    mid = 0.5 * (p[..., 36, :] + p[..., 45, :])
    axis = p[..., 45, :] - p[..., 36, :]
    iod = np.maximum(np.linalg.norm(axis, axis=-1), 1e-9)
    return ((p[..., 30, :] - mid) * axis).sum(-1) / (iod * iod)


@functools.lru_cache(maxsize=1)
def _calibration() -> tuple[np.ndarray, np.ndarray]:
    """(proxy, degrees) of the template turned over CALIBRATION_DEGREES, sorted by proxy."""
    proxies = np.array([yaw_proxy(face_landmarks(FaceControls(yaw=math.radians(d)))) for d in CALIBRATION_DEGREES])
    order = np.argsort(proxies)
    return proxies[order], CALIBRATION_DEGREES[order]


def estimate_yaw(points: np.ndarray) -> np.ndarray:
    """(...,) yaw in degrees (the template's sign convention), from `yaw_proxy`."""
    proxy, degrees = _calibration()
    return np.interp(yaw_proxy(points), proxy, degrees)


def clamp_yaw(points: np.ndarray, reference: np.ndarray, limit: float) -> np.ndarray:
    """`points` (68,2) with the head turned at most `limit` degrees away from `reference`'s yaw (the photo's
    own face): unchanged within the limit; past it, the template's turn from the estimated yaw back to the
    limit, mapped onto the face, is added (module docstring). limit <= 0: unchanged."""
    if limit <= 0:
        return np.asarray(points, np.float32)
    own = float(estimate_yaw(reference))
    return turn_within(points, own - limit, own + limit)


def follow_yaw(points: np.ndarray, face: np.ndarray, driver: np.ndarray, limit: float = 0.0) -> np.ndarray:
    """Adapted `points` (68,2) turned no further than the driver: their yaw kept between the avatar's own
    (`face`) and the driver's (`driver`, its landmarks as seen by its camera), with YAW_SLACK degrees of slack,
    and within `limit` of its own when limit > 0. Adaptation moves the avatar by the driver's turn since its
    reference frame, so a reference frame turned away from the camera made the avatar turn the other way,
    past frontal, when the driver turned back to the camera (seen on a clip from outside the data set)."""
    own, seen = float(estimate_yaw(face)), float(estimate_yaw(driver))
    low, high = min(own, seen) - YAW_SLACK, max(own, seen) + YAW_SLACK
    if limit > 0:
        low, high = max(low, own - limit), min(high, own + limit)
    return turn_within(points, low, max(low, high))


def turn_within(points: np.ndarray, low: float, high: float) -> np.ndarray:
    """`points` (68,2) unchanged when their yaw is within [low, high] degrees; else the template's turn back to
    the nearer bound, mapped onto the face, is added (a few corrections: a real face is not the template)."""
    p = np.asarray(points, np.float64)
    if not np.isfinite(p).all():
        return np.asarray(points, np.float32)
    for _ in range(ITERATIONS):
        yaw = float(estimate_yaw(p))
        target = float(np.clip(yaw, low, high))
        if abs(target - yaw) < TOLERANCE:
            break
        now = face_landmarks(FaceControls(yaw=math.radians(yaw)))
        back = face_landmarks(FaceControls(yaw=math.radians(target)))
        scale, rot, _ = fit_similarity(now[STABLE_POINTS], p[STABLE_POINTS])
        p = p + scale * (back - now) @ rot.T
    return p.astype(np.float32)


__all__ = ["clamp_yaw", "estimate_yaw", "follow_yaw", "turn_within", "yaw_proxy"]

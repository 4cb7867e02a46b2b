"""Masks and reference frames from 68 landmarks, for puppeteering photos without a moving background.

- `head_mask(points, size)`: a soft (feathered) mask of the head in a crop: the face hull, the forehead and
  hair above it (the brows raised by `hair` x the face height), the neck below the chin, grown by `grow` x
  the face size. Used for paste-back: inside the union of the source's and the current frame's head masks
  the rendered frame is shown, outside it the source photo itself, so nothing outside the person moves.
- `neutral_frame(points)`: the most neutral frame of a driving sequence (mouth closed, eyes open, frontal,
  upright), the reference that landmark adaptation measures motion against: a driver that starts with the
  mouth open would otherwise barely open the avatar's mouth.
- `border_window(size)`: 0 at a crop's border, 1 inside: what paste-back masks are multiplied by.

Points are (68,2) / (F,68,2) float pixels (x right, y down), iBUG 300-W order.
"""

from __future__ import annotations

import cv2
import numpy as np

JAW, BROWS = slice(0, 17), slice(17, 27)


def head_mask(points: np.ndarray, size: int, *, hair: float = 0.55, neck: float = 0.35, grow: float = 0.12,
              feather: float = 0.06) -> np.ndarray:
    """(size,size) float32 in [0,1]: 1 on the head (face, hair, neck), 0 far from it, feathered edges."""
    p = np.asarray(points, np.float64).reshape(68, 2)
    if not np.isfinite(p).all():
        raise ValueError("landmarks contain NaN or inf: no head mask")
    centre = p.mean(0)
    up = p[27] - p[8]  # chin -> nose bridge: the face's "up", any roll
    height = float(np.linalg.norm(up)) or 1.0
    up = up / height
    side = float(np.linalg.norm(p[16] - p[0])) or height
    forehead = p[BROWS] + hair * height * up + 0.08 * (p[BROWS] - centre)  # brows raised and widened: hair
    chin = p[4:13] - neck * height * up  # below the lower jaw: the neck
    hull = cv2.convexHull(np.concatenate([p, forehead, chin]).astype(np.float32))
    scale = 4  # draw at 4x for smooth edges
    canvas = np.zeros((size * scale, size * scale), np.uint8)
    cv2.fillConvexPoly(canvas, np.round((hull.reshape(-1, 2) + 0.5) * scale - 0.5).astype(np.int32), 255,
                       lineType=cv2.LINE_AA)
    mask = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    g = max(1, int(round(grow * side)))
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * g + 1, 2 * g + 1)))
    sigma = max(0.5, feather * side)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    return np.clip(mask, 0.0, 1.0)


def border_window(size: int, fade: float = 0.06) -> np.ndarray:
    """(size,size) float32: 0 on the outermost pixels of a crop, rising smoothly to 1 over `fade` x size
    inside. Paste-back masks are multiplied by it, so a rendered crop never ends in a visible square edge
    (a head mask that reaches the crop's border, e.g. hair above the forehead, fades out before it)."""
    d = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float32)
    r = np.clip(d / max(1.0, fade * size), 0.0, 1.0)
    r = r * r * (3 - 2 * r)
    return np.minimum(r[:, None], r[None, :])


def neutrality(points: np.ndarray) -> np.ndarray:
    """(F,) badness of each frame as a neutral reference (lower is more neutral): mouth opening, eye
    closure, yaw (nose off the eye-corner midline) and roll, each relative to the inter-ocular distance;
    inf for frames with non-finite points."""
    p = np.asarray(points, np.float64).reshape(-1, 68, 2)
    iod = np.linalg.norm(p[:, 45] - p[:, 36], axis=-1)
    iod = np.where(iod > 1e-6, iod, np.nan)
    mouth = np.linalg.norm(p[:, 66] - p[:, 62], axis=-1) / iod

    def openness(a, b, c, d, e, f):  # eye aspect ratio: lid gaps over eye width
        gaps = np.linalg.norm(p[:, b] - p[:, f], axis=-1) + np.linalg.norm(p[:, c] - p[:, e], axis=-1)
        return gaps / (2 * np.linalg.norm(p[:, d] - p[:, a], axis=-1) + 1e-9)

    ear = 0.5 * (openness(36, 37, 38, 39, 40, 41) + openness(42, 43, 44, 45, 46, 47))
    closed = np.clip(0.25 - ear, 0, None) * 4
    mid = 0.5 * (p[:, 36] + p[:, 45])
    axis = (p[:, 45] - p[:, 36]) / iod[:, None]
    yaw = np.abs(((p[:, 30] - mid) * axis).sum(-1)) / iod
    roll = np.abs(np.arctan2(axis[:, 1], axis[:, 0]))
    score = mouth + closed + yaw + 0.5 * roll
    return np.where(np.isfinite(score), score, np.inf)


def neutral_frame(points: np.ndarray) -> int:
    """Index of the most neutral frame of a sequence (F,68,2) (see `neutrality`); 0 when none is finite."""
    score = neutrality(points)
    return int(np.argmin(score)) if np.isfinite(score).any() else 0

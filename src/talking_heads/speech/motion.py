"""The motion space of speech: mouth and chin points relative to the speaker's neutral face, head pose removed.

For a landmark sequence D (F,68,2) and its neutral frame D_r (mouth closed, eyes open, frontal:
`landmarks.masks.neutral_frame`), frame t is mapped back into the reference pose by the similarity fitted on
the stable points (eye corners and nose, as `landmarks.adaptation` does); its change from D_r at the
`SPEECH_POINTS` (chin 2-14 and mouth 48-67), rotated so that the reference's eye line is level and divided by
its outer-eye-corner distance, is the motion (F, P, 2): the same numbers for any face size, position, tilt or
head turn. `place_motion` does the inverse onto another sequence: the head's own pose per frame, its reference
face, and the mouth and chin of the motion (every other point keeps the head's own motion: blinks, brows).

Measurements of the evaluation live here too: the inner-lip opening of a motion, and the mouth landmark
distance (LMD) between two motions in these units (inter-ocular distances, pose removed).
"""

from __future__ import annotations

import numpy as np

from ..landmarks.adaptation import STABLE_POINTS, fit_similarity

CHIN = np.arange(2, 15)
MOUTH = np.arange(48, 68)
SPEECH_POINTS = np.concatenate([CHIN, MOUTH])  # 33 points
MOUTH_IN_MOTION = np.arange(len(CHIN), len(SPEECH_POINTS))  # the mouth's rows of a motion (20)
# inner lips (upper, lower) as rows of a motion: 61-67, 62-66, 63-65
_INNER_PAIRS = tuple((int(np.flatnonzero(SPEECH_POINTS == u)[0]), int(np.flatnonzero(SPEECH_POINTS == lo)[0]))
                     for u, lo in ((61, 67), (62, 66), (63, 65)))


def _frame(reference: np.ndarray) -> tuple[np.ndarray, float]:
    """(rotation (2,2) that levels the reference's eye line, its outer eye-corner distance)."""
    eye = reference[45] - reference[36]
    iod = float(np.linalg.norm(eye))
    if not np.isfinite(iod) or iod < 1e-6:
        raise ValueError("the reference face has no eye distance (landmarks collapsed)")
    c, s = eye / iod
    return np.array([[c, s], [-s, c]]), iod


def _unposed(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(F,68,2) each frame mapped into the reference frame's pose (stable-point similarity)."""
    d = np.asarray(points, np.float64)
    ref = np.asarray(reference, np.float64)
    s, r, t = fit_similarity(np.broadcast_to(ref[STABLE_POINTS], (len(d), len(STABLE_POINTS), 2)),
                             d[:, STABLE_POINTS])
    return np.einsum("fji,fpj->fpi", r, d - t[:, None]) / s[:, None, None]


def speech_motion(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(F,P,2) float32 motion of finite landmarks (F,68,2) relative to `reference` (68,2) (module docstring)."""
    ref = np.asarray(reference, np.float64)
    level, iod = _frame(ref)
    delta = _unposed(points, ref)[:, SPEECH_POINTS] - ref[SPEECH_POINTS]
    return (delta @ level.T / iod).astype(np.float32)


def place_motion(head: np.ndarray, reference: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """(F,68,2) float32: the head's landmarks (F,68,2) with their mouth and chin replaced by `reference`'s
    (68,2: the head's neutral face) moved by `motion` (F,P,2) and posed like each head frame."""
    d = np.asarray(head, np.float64)
    ref = np.asarray(reference, np.float64)
    m = np.asarray(motion, np.float64)
    if len(m) != len(d):
        raise ValueError(f"motion of {len(m)} frames for a head of {len(d)}")
    level, iod = _frame(ref)
    mouth = ref[SPEECH_POINTS] + iod * (m @ level)  # F,P,2 in the reference pose
    s, r, t = fit_similarity(np.broadcast_to(ref[STABLE_POINTS], (len(d), len(STABLE_POINTS), 2)),
                             d[:, STABLE_POINTS])
    out = d.copy()
    out[:, SPEECH_POINTS] = s[:, None, None] * np.einsum("fij,fpj->fpi", r, mouth) + t[:, None]
    return out.astype(np.float32)


def motion_opening(motion: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """(F,) inner-lip gap of a motion (F,P,2) in inter-ocular units: mean of the three inner-lip pairs' vertical
    distance, the reference's own gap included when `reference` (68,2) is given (else the change from it)."""
    m = np.asarray(motion, np.float64)
    gap = np.mean([m[:, lo, 1] - m[:, up, 1] for up, lo in _INNER_PAIRS], axis=0)
    if reference is not None:
        ref = np.asarray(reference, np.float64)
        level, iod = _frame(ref)
        r = (ref[SPEECH_POINTS] @ level.T) / iod
        gap = gap + np.mean([r[lo, 1] - r[up, 1] for up, lo in _INNER_PAIRS])
    return gap


def mouth_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(F,) LMD: mean distance of the 20 mouth points between motions a and b (F,P,2), inter-ocular units."""
    d = np.asarray(a, np.float64)[:, MOUTH_IN_MOTION] - np.asarray(b, np.float64)[:, MOUTH_IN_MOTION]
    return np.linalg.norm(d, axis=-1).mean(-1)

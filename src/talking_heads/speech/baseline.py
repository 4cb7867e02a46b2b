"""Baseline (a) of the speech evaluation, fitted when the model trains and saved with it (`model_io`)."""

from __future__ import annotations

import numpy as np

from .audio import loudness_db


class LoudnessBaseline:
    """Baseline (a) of the evaluation: the motion is a fixed shape times a loudness envelope,
    motion_t = shape * clip((dB_t - floor) / span, 0, 1), the shape least-squares fitted on the training clips
    (so the baseline gets its best mouth-opening direction and size)."""

    FLOOR, SPAN = -50.0, 40.0

    def __init__(self, shape: np.ndarray):
        self.shape = np.asarray(shape, np.float32)

    @classmethod
    def envelope(cls, samples: np.ndarray) -> np.ndarray:
        return np.clip((loudness_db(samples) - cls.FLOOR) / cls.SPAN, 0.0, 1.0)

    @classmethod
    def fit(cls, clips: list) -> "LoudnessBaseline":
        env = np.concatenate([cls.envelope(c.samples)[c.valid] for c in clips])
        motion = np.concatenate([c.motion[c.valid] for c in clips])
        shape = np.einsum("t,tpc->pc", env, motion) / max(float((env ** 2).sum()), 1e-9)
        return cls(shape)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        return self.envelope(samples)[:, None, None] * self.shape

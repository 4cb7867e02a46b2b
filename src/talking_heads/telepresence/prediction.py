"""The landmark codec's transform and prediction: the shape basis both ends share (`Basis`), and the state of
a stream between key frames (`StreamModel`) that the encoder and the decoder update identically (closed-loop
prediction on the reconstruction, so errors never accumulate; `codec.py` explains the predictors)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .entropy import STATE_SHIFT, STATE_SHIFT_V2, TS_CLASS_INIT_Q8, initial_states, update_state
from .packet import DIM, PREDICT_PREVIOUS, TRANSFORM_IDENTITY, CodecError, StreamParams


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


class StreamModel:
    """State shared by the encoder and the decoder between key frames (closed-loop prediction)."""

    def __init__(self, basis: Basis, params: StreamParams):
        self.basis, self.params = basis, params
        s = params.crop.size
        scale = s / basis.reference_size
        self.mean = basis.shape_mean * scale
        self.key_states = initial_states(basis.shape_std, s, params.q64, basis.reference_size)
        if params.version == 1:
            self.alpha = basis.alpha(params.predictor)
            self.motion_init = initial_states(basis.motion_std, s, params.q64, basis.reference_size)
        else:
            self.alpha, self.beta, self.phi, spread = basis.trend(params.predictor)
            self.motion_init = initial_states(spread, s, params.q64, basis.reference_size)
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

"""Landmark error: how well a generated frame follows the motion it was driven with (not in the paper's Table 1;
it is what cross-identity puppeteering is judged by).

Per frame: the 68 points detected on the generated frame (dlib HOG + 68-point predictor, `faces.find_landmarks`,
frames upscaled to `EvalConfig.detect_size` first) against the 68 driving points:
    error = mean_k |p_detected_k - p_driving_k|  /  |p_driving_36 - p_driving_45|
i.e. normalised by the driving face's inter-ocular (outer eye corner) distance, the 300-W convention.
A frame where no face is detected gets NaN: the aggregate reports it in `failed` (and as "k/N detected"),
it is never silently dropped. Lower is better; about 0 for a real frame against its own detected points.
"""

from __future__ import annotations

import numpy as np

from ..landmarks.backend import get_backend
from .base import PairedMetric, as_uint8
from .faces import find_landmarks, inter_ocular


def landmark_errors(images, points: np.ndarray, detect_size: int = 256) -> np.ndarray:
    """(N,) normalised mean point error of uint8 images / [-1,1] tensors against driving points (N,68,2)."""
    images = as_uint8(images)
    points = np.asarray(points, np.float64).reshape(len(images), 68, 2)
    out = np.full(len(images), np.nan)
    for i, img in enumerate(images):
        found = find_landmarks(img, detect_size)
        if found is not None:
            out[i] = np.linalg.norm(found - points[i], axis=-1).mean() / inter_ocular(points[i])
    return out


class LandmarkError(PairedMetric):
    """Registry entry "landmark_error": needs the driving points; the ground-truth image is not used."""

    name = "landmark_error"
    higher_is_better = False
    description = "mean 68-point error / inter-ocular distance, points detected on the generated frame"

    def __init__(self, cfg=None, device: str = "cpu"):
        super().__init__(cfg, device)
        try:
            get_backend("dlib")
        except (ImportError, RuntimeError) as err:
            self.available, self.reason = False, f"dlib landmark detector unavailable: {err}"

    def reference(self, real, points=None) -> None:
        return None  # only the driving points matter

    def _per_frame(self, fake, reference, points):
        if points is None:
            raise ValueError("landmark_error needs the driving landmarks (points=...)")
        return landmark_errors(fake, points, self.cfg.detect_size)

    def extra_summary(self, values: np.ndarray) -> dict:
        return {"detected": int((~np.isnan(values)).sum()), "undetected": int(np.isnan(values).sum())}

"""Face finding shared by the face metrics (CSIM, landmark error), on the dlib backend of `talking_heads.landmarks`.

Generated frames are small (32-256 px crops) and dlib's HOG detector needs faces of about 80 px, so a
frame smaller than `detect_size` is first upscaled to `detect_size` px (bicubic); detection and the 68-point
fit run there and the points are mapped back to the frame's pixels. Only the HOG detector is used (no CNN
fallback): it is the same for every method compared, and far cheaper.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..landmarks.backend import detect_faces, get_backend


def upscaled(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """(image resized so its long side is at least `size`, scale factor s; frame px p -> (p + 0.5) s - 0.5)."""
    h, w = image.shape[:2]
    s = max(1.0, size / max(h, w))
    if s == 1.0:
        return image, 1.0
    return cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_CUBIC), s


def to_scaled(points: np.ndarray, s: float) -> np.ndarray:
    return (np.asarray(points, np.float64) + 0.5) * s - 0.5


def from_scaled(points: np.ndarray, s: float) -> np.ndarray:
    return (np.asarray(points, np.float64) + 0.5) / s - 0.5


def find_landmarks(image: np.ndarray, detect_size: int = 256) -> np.ndarray | None:
    """68 points (68,2) float64 in `image` pixels of its largest face, or None when no face is detected."""
    backend = get_backend("dlib")
    big, s = upscaled(image, detect_size)
    faces = detect_faces(big, backend, max_side=max(640, detect_size), robust=False)
    if not faces:
        return None
    points, _ = backend.landmarks(big, faces[0].box)
    return from_scaled(points, s)


def inter_ocular(points: np.ndarray) -> np.ndarray:
    """Distance between the outer eye corners (iBUG points 36 and 45), (...,68,2) -> (...)."""
    p = np.asarray(points, np.float64)
    return np.linalg.norm(p[..., 36, :] - p[..., 45, :], axis=-1)

"""The landmark-detector interface (paper.md section 2: 68 iBUG 300-W points per frame).

A backend does two things, both on RGB uint8 images (H,W,3):
- `detect(image) -> list[Detection]`: face boxes in image pixels with a detector score (any scale; the
  caller decides how far to downscale large images first);
- `landmarks(image, box) -> (points (68,2) float32, confidence float)`: the 68 iBUG points inside one face
  box, in image pixels (pixel-centre convention: the centre of pixel (i, j) is (x=j, y=i)).

Everything downstream (tracking, crops, rasterisation, episodes) only sees 68-point arrays, so a second
backend (for instance a 478-point mesh with iris points for gaze) implements this interface, maps its own
points to the 68 iBUG ones in `landmarks()` and may expose the full set through `extra_points()`.
Backends register themselves in `BACKENDS` (`register_backend`, called by the backend's own module;
`landmarks/__init__.py` imports the shipped dlib backend, so it is registered whenever this package is
loaded); `get_backend(name)` builds one (cached per process, models are loaded once per worker).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

NUM_POINTS = 68  # iBUG 300-W scheme


@dataclass(frozen=True)
class Detection:
    """One detected face: box (x0, y0, x1, y1) in image pixels and the detector's raw score."""

    box: tuple[float, float, float, float]
    score: float

    @property
    def size(self) -> float:
        x0, y0, x1, y1 = self.box
        return float(max(x1 - x0, y1 - y0))

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2.0, (y0 + y1) / 2.0

    def scaled(self, s: float, dx: float = 0.0, dy: float = 0.0) -> "Detection":
        """The box mapped by p -> p * s + (dx, dy) (from a resized or cropped image back to the original)."""
        x0, y0, x1, y1 = self.box
        return Detection((x0 * s + dx, y0 * s + dy, x1 * s + dx, y1 * s + dy), self.score)


class LandmarkBackend:
    """Base class of detector backends (see the module docstring)."""

    name: str = "base"
    min_face_px: int = 40  # smallest face side (px) the detector finds without upsampling the image

    def detect(self, image: np.ndarray, threshold: float = 0.0, upsample: int = 0) -> list[Detection]:
        """Faces in `image` as given (no resizing beyond `upsample` doublings), score >= `threshold`."""
        raise NotImplementedError  # pragma: no cover - interface

    def detect_robust(self, image: np.ndarray) -> list[Detection]:
        """A slower detector for hard cases (profile faces) tried when `detect` finds nothing; scores on the
        same scale as `detect`'s. Default: none."""
        return []

    def landmarks(self, image: np.ndarray, box: tuple[float, float, float, float]) -> tuple[np.ndarray, float]:
        raise NotImplementedError  # pragma: no cover - interface

    def confidence(self, score: float) -> float:
        """Map a raw detector score to [0, 1] (used as the per-frame confidence)."""
        return float(1.0 / (1.0 + np.exp(-score)))

    def extra_points(self, image: np.ndarray, box) -> np.ndarray | None:
        """Backend-specific points beyond the 68 (e.g. iris); None when the backend has none."""
        return None


BACKENDS: dict[str, Callable[[], LandmarkBackend]] = {}
_CACHE: dict[str, LandmarkBackend] = {}


def register_backend(name: str, factory: Callable[[], LandmarkBackend]) -> None:
    BACKENDS[name] = factory


def get_backend(name: str | LandmarkBackend = "dlib") -> LandmarkBackend:
    """A backend by name (built once per process) or the instance itself when one is given."""
    if isinstance(name, LandmarkBackend):
        return name
    if name not in BACKENDS:
        raise ValueError(f"unknown landmark backend {name!r}; available: {sorted(BACKENDS)}")
    if name not in _CACHE:
        _CACHE[name] = BACKENDS[name]()
    return _CACHE[name]


def resized(image: np.ndarray, s: float) -> np.ndarray:
    """`image` scaled by `s` (area averaging down, bilinear up)."""
    import cv2  # lazy: start-up time of every command (landmarks/__init__.py)

    if s == 1.0:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))),
                      interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


def detect_faces(image: np.ndarray, backend: LandmarkBackend, max_side: int = 640,
                 threshold: float = 0.0, robust: bool = True, robust_side: int = 384) -> list[Detection]:
    """Faces of an image of any size, largest first, boxes in `image` pixels.

    Detection runs on a copy whose long side is at most `max_side` (huge images are downscaled: a 10000 px
    photo costs what a 640 px one does). When nothing is found there, larger scales are tried (the original
    resolution in steps of 2x, then one 2x upsampling for small images) so that small faces in wide shots
    and tiny images are still found; then, with `robust`, the backend's slower robust detector on a copy of
    long side `robust_side` (profile faces).
    """
    h, w = image.shape[:2]
    long_side = max(h, w)
    scales = []
    s = min(1.0, max_side / long_side)
    while True:
        scales.append(s)
        if s >= 1.0:
            break
        s = min(1.0, s * 2.0)
    for s in scales:
        small = resized(image, s)  # s <= 1
        found = backend.detect(small, threshold=threshold)
        if not found and s == 1.0 and long_side <= 2 * max_side:
            found = backend.detect(small, threshold=threshold, upsample=1)
        if found:
            sx, sy = w / small.shape[1], h / small.shape[0]
            out = [d.scaled(0.5 * (sx + sy)) for d in found]
            return sorted(out, key=lambda d: -d.size)
    if robust:
        small = resized(image, min(1.0, robust_side / long_side))
        found = backend.detect_robust(small)
        sx = w / small.shape[1]
        return sorted((d.scaled(sx) for d in found), key=lambda d: -d.size)
    return []

"""Sharpness: the variance of the Laplacian of the face, relative to the real frame's (not in the paper).

A blurry generator scores well on L1 and PSNR (the mean is the safest guess) while looking nothing like a
photo. The variance of the Laplacian (Pech-Pacheco et al. 2000, the usual focus measure) is low for blurred
images; it is measured against the real frame's own, so a frame only scores 1 for being as detailed as it:

- per frame: luma Y = 0.299 R + 0.587 G + 0.114 B (intensities 0-255), the 4-neighbour Laplacian
  (OpenCV's `Laplacian` with ksize 1), its variance over the face box: the bounding box of the 68 landmarks
  the frame was driven with, grown by 10 % of its side on each side and clipped to the image (the whole
  frame when no landmarks are given);
- value: that variance for the generated frame divided by the same for the real frame, so 1.0 is "as sharp
  as the real test frame" and 0.5 is half of it; averaged over frames (frames whose real face box is flat,
  variance 0, are counted as failed). Higher is better, up to about 1 (well above 1 means added noise or
  artefacts, which the other metrics catch).
"""

from __future__ import annotations

import numpy as np

from .base import PairedMetric, as_uint8

LUMA = np.array([0.299, 0.587, 0.114])
MARGIN = 0.10  # the face box grows by this fraction of its side on each side


def face_box(points: np.ndarray | None, height: int, width: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the landmarks' bounding box grown by MARGIN, clipped; the image when no points."""
    if points is None or not np.isfinite(points).all():
        return 0, 0, width, height
    lo, hi = points.min(axis=0), points.max(axis=0)
    pad = MARGIN * (hi - lo)
    x0, y0 = np.floor(lo - pad).astype(int)
    x1, y1 = np.ceil(hi + pad).astype(int) + 1
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    return (x0, y0, x1, y1) if x1 - x0 >= 3 and y1 - y0 >= 3 else (0, 0, width, height)


def laplacian_variance(images, points: np.ndarray | None = None) -> np.ndarray:
    """(N,) variance of the 4-neighbour Laplacian of each image's luma inside its face box."""
    images = as_uint8(images)
    n, h, w, _ = images.shape
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        x0, y0, x1, y1 = face_box(None if points is None else np.asarray(points[i], np.float64), h, w)
        y = images[i, y0:y1, x0:x1].astype(np.float64) @ LUMA
        lap = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4.0 * y[1:-1, 1:-1]
        out[i] = lap.var()
    return out


class Sharpness(PairedMetric):
    name = "sharpness"
    higher_is_better = True
    description = "variance of the Laplacian of the face, generated / real (1 = as sharp as the real frame)"

    def reference(self, real, points: np.ndarray | None = None) -> np.ndarray:
        return laplacian_variance(real, points)

    def _per_frame(self, fake, reference, points):
        ref = np.asarray(reference, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(ref > 0, laplacian_variance(fake, points) / ref, np.nan)

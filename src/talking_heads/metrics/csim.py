"""CSIM: identity similarity, the cosine similarity of face-recognition descriptors of a generated frame and
the ground-truth frame (paper.md section 7).

The paper used ArcFace embeddings (a network unlike the VGGFace of its content loss). No ArcFace weights
can be had offline here, so this is **dlib's 128-D face-recognition ResNet**
(`dlib_face_recognition_resnet_model_v1.dat`, shipped in `face-recognition-models`), which is also unlike
VGGFace. Its values are not comparable with the paper's: dlib's descriptors of unrelated faces already have
cosine similarities of about 0.75-0.9 (same person about 0.95+), while ArcFace's are near 0, so CSIM here
lives on a compressed, high range. Compare methods with each other, not with the paper's numbers.

Alignment: a descriptor is computed on dlib's 150 px aligned face chip (padding 0.25) cut with 68 points.
- With `points` (the landmarks the frame was driven with, i.e. the ground truth's own in self-reenactment):
  both frames are cut with those same points, so no detection can fail on a poor generated frame, and a
  generated face in the wrong place is penalised rather than re-centred.
- Without points: each image's face is detected (`faces.find_landmarks`); NaN where none is found.
Frames smaller than `EvalConfig.detect_size` are upscaled first (bicubic). Higher is better; identical
images give 1.
"""

from __future__ import annotations

import numpy as np

from .base import PairedMetric, as_uint8
from .faces import find_landmarks, to_scaled, upscaled

RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE, CHIP_PADDING = 150, 0.25  # dlib's standard alignment for this network


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (N,D) and (N,D) or (D,) arrays; NaN rows stay NaN."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    num = np.sum(a * b, axis=-1)
    return num / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


class FaceDescriptor:
    """dlib's 128-D face-recognition ResNet with 68-point alignment (see the module docstring)."""

    def __init__(self, detect_size: int = 256):
        import dlib

        from ..landmarks.dlib_backend import model_path

        self._dlib = dlib
        self._net = dlib.face_recognition_model_v1(str(model_path(RECOGNITION_MODEL)))
        self.detect_size = detect_size

    def describe(self, image: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
        """(128,) descriptor of the face in a uint8 RGB image (H,W,3), cut with `points` (68,2) or with detected
        landmarks; all-NaN when no face is found."""
        if points is None:
            points = find_landmarks(image, self.detect_size)
            if points is None:
                return np.full(128, np.nan)
        big, s = upscaled(image, self.detect_size)
        p = to_scaled(points, s)
        dlib = self._dlib
        x0, y0 = np.floor(p.min(0)).astype(int)
        x1, y1 = np.ceil(p.max(0)).astype(int)
        shape = dlib.full_object_detection(dlib.rectangle(int(x0), int(y0), int(x1), int(y1)),
                                           [dlib.point(int(round(x)), int(round(y))) for x, y in p])
        chip = dlib.get_face_chip(np.ascontiguousarray(big), shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        return np.asarray(self._net.compute_face_descriptor(chip), np.float64)

    def describe_all(self, images, points: np.ndarray | None = None) -> np.ndarray:
        """(N,128) descriptors of uint8 images / [-1,1] tensors; NaN rows where no face is found."""
        images = as_uint8(images)
        return np.stack([self.describe(img, None if points is None else points[i]) for i, img in enumerate(images)])

    def identity(self, images, points: np.ndarray | None = None) -> np.ndarray:
        """(128,) mean of the unit-normalised descriptors of several images of one person (NaN if none found)."""
        d = self.describe_all(images, points)
        d = d[~np.isnan(d).any(axis=1)]
        if not len(d):
            return np.full(128, np.nan)
        return (d / np.linalg.norm(d, axis=1, keepdims=True)).mean(0)


class CSIM(PairedMetric):
    """Registry entry "csim" (see the module docstring)."""

    name = "csim"
    higher_is_better = True
    description = "cosine similarity of dlib 128-D face descriptors (the paper used ArcFace; values not comparable)"

    def __init__(self, cfg=None, device: str = "cpu"):
        super().__init__(cfg, device)
        try:
            self.net = FaceDescriptor(self.cfg.detect_size)
        except (ImportError, RuntimeError) as err:
            self.available, self.reason = False, f"dlib face recognition model unavailable: {err}"

    def reference(self, real, points=None) -> np.ndarray:
        """(N,128) descriptors of the real frames."""
        self._check()
        return self.net.describe_all(real, None if points is None else np.asarray(points, np.float64))

    def _per_frame(self, fake, reference, points):
        return cosine(self.net.describe_all(fake, points), reference)

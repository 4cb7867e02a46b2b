"""CSIM: identity similarity, the cosine similarity of face-recognition descriptors of a generated frame and
the ground-truth frame (paper.md section 7).

The paper used ArcFace embeddings (a network unlike the VGGFace of its content loss). No ArcFace weights
can be had offline here, so this is **dlib's 128-D face-recognition ResNet**
(`dlib_face_recognition_resnet_model_v1.dat`, shipped in `face-recognition-models`), run by the project's
own PyTorch port (`models/face_identity.py`: batched, GPU-able, equal to dlib's `compute_face_descriptor`
within 1e-4 on the same chip and within 0.006 in distance through the whole landmarks -> chip -> descriptor
path; tests/test_face_identity.py). Its values are not comparable with the paper's: dlib's descriptors of
unrelated faces already have cosine similarities of about 0.75-0.9 (same person about 0.95+), while
ArcFace's are near 0, so CSIM here lives on a compressed, high range; the calibrated identity figures of
`metrics/identity.py` (verification at dlib's 0.6 distance, with chance level and ceiling) are the ones
that tell people apart.

Alignment: a descriptor is computed on dlib's 150 px aligned face chip (padding 0.25) cut with 68 points
(`landmarks/face_chips.py`, which reproduces dlib's `get_face_chip` including its image pyramid and 8-bit
rounding).
- With `points` (the landmarks the frame was driven with, i.e. the ground truth's own in self-reenactment):
  both frames are cut with those same points, so no detection can fail on a poor generated frame, and a
  generated face in the wrong place is penalised rather than re-centred.
- Without points: each image's face is detected (`faces.find_landmarks`, frames smaller than
  `EvalConfig.detect_size` upscaled for the detector); NaN where none is found.
Higher is better; identical images give 1.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch

from ..images import to_tensor
from ..landmarks.face_chips import chip_transform, crop_chips
from ..models.dlib_format import DlibFormatError
from ..models.face_identity import shared_face_identity
from .base import PairedMetric, as_uint8
from .faces import find_landmarks

DESCRIPTOR_DIM = 128
CHUNK = 32  # chips per network call


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (N,D) and (N,D) or (D,) arrays; NaN rows stay NaN."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    num = np.sum(a * b, axis=-1)
    return num / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


class FaceDescriptor:
    """dlib's 128-D face descriptor of images, with 68-point alignment (see the module docstring), batched on
    `device`. The last few results are memoised, so CSIM, the identity rate and the descriptor FID of the
    same frames cost one pass."""

    def __init__(self, detect_size: int = 256, device: str = "cpu", weights: str = ""):
        self.net = shared_face_identity(weights or None, device)
        self.device = torch.device(device)
        self.detect_size = detect_size
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()

    def describe(self, image: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
        """(128,) descriptor of the face in a uint8 RGB image (H,W,3), cut with `points` (68,2) or with detected
        landmarks; all-NaN when no face is found."""
        return self.describe_all(np.asarray(image)[None], None if points is None else np.asarray(points)[None])[0]

    def describe_all(self, images, points: np.ndarray | None = None) -> np.ndarray:
        """(N,128) float64 descriptors of uint8 images / [-1,1] tensors (N,...); NaN rows where no face is found
        (or the given points are not finite)."""
        images = as_uint8(images)
        if points is not None:
            points = np.asarray(points, np.float64).reshape(len(images), 68, 2)
        key = hashlib.sha1(images.tobytes() + (b"" if points is None else points.tobytes())
                           + str(images.shape).encode()).hexdigest()
        if key in self._memo:
            self._memo.move_to_end(key)
            return self._memo[key].copy()
        out = self._compute(images, points)
        self._memo[key] = out
        while len(self._memo) > 8:
            self._memo.popitem(last=False)
        return out.copy()

    def _compute(self, images: np.ndarray, points: np.ndarray | None) -> np.ndarray:
        if points is None:
            found = [find_landmarks(img, self.detect_size) for img in images]
            points = np.stack([np.full((68, 2), np.nan) if p is None else p for p in found]) if len(images) else \
                np.zeros((0, 68, 2))
        out = np.full((len(images), DESCRIPTOR_DIM), np.nan)
        ok = np.flatnonzero(np.isfinite(points).all(axis=(1, 2)))
        for start in range(0, len(ok), CHUNK):
            idx = ok[start:start + CHUNK]
            # one image size per call (frames of one evaluation share it; photos may not)
            for shape in {images[i].shape for i in idx}:
                sub = [i for i in idx if images[i].shape == shape]
                x = to_tensor(images[sub], self.device)  # B,3,H,W in [-1,1]
                with torch.no_grad():
                    chips = crop_chips(x, chip_transform(points[sub]), dlib_rounding=True)  # B,3,150,150
                    out[sub] = self.net(chips).double().cpu().numpy()
        return out

    def identity(self, images, points: np.ndarray | None = None) -> np.ndarray:
        """(128,) mean of the unit-normalised descriptors of several images of one person (NaN if none found)."""
        d = self.describe_all(images, points)
        d = d[~np.isnan(d).any(axis=1)]
        if not len(d):
            return np.full(DESCRIPTOR_DIM, np.nan)
        return (d / np.linalg.norm(d, axis=1, keepdims=True)).mean(0)


class CSIM(PairedMetric):
    """Registry entry "csim" (see the module docstring)."""

    name = "csim"
    higher_is_better = True
    description = "cosine similarity of dlib 128-D face descriptors (the paper used ArcFace; values not comparable)"

    def __init__(self, cfg=None, device: str = "cpu"):
        super().__init__(cfg, device)
        self.net = face_descriptor(self.cfg, device)
        if isinstance(self.net, str):
            self.available, self.reason = False, self.net

    def reference(self, real, points=None) -> np.ndarray:
        """(N,128) descriptors of the real frames."""
        self._check()
        return self.net.describe_all(real, None if points is None else np.asarray(points, np.float64))

    def _per_frame(self, fake, reference, points):
        return cosine(self.net.describe_all(fake, points), reference)


def face_descriptor(cfg, device: str = "cpu") -> "FaceDescriptor | str":
    """A FaceDescriptor for an EvalConfig, or the reason why none can be built (for `available = False`)."""
    try:
        return FaceDescriptor(cfg.detect_size, device, getattr(cfg, "face_weights", ""))
    except (ImportError, RuntimeError, DlibFormatError) as err:
        return f"dlib face recognition model unavailable: {err}"

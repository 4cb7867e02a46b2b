"""dlib backend: HOG face detector + the 68-point shape predictor (iBUG 300-W) from `face-recognition-models`.

The model files are located with `importlib.util.find_spec` and never imported: importing
`face_recognition_models` fails with setuptools >= 81 (environment.md). The 68-point model was trained on
iBUG 300-W, whose licence excludes commercial use.

Detectors: the HOG detector (fast, frontal to about 45 degrees of yaw) for everything; the CNN "MMOD"
detector (`mmod_human_face_detector.dat`, handles profiles, much slower) only as `detect_robust`,
i.e. when HOG finds nothing.

Scores: dlib's HOG detector returns an SVM margin (0 at its default threshold, about 1-3 for clear frontal
faces); `confidence()` maps it through a logistic function, so a face at the default threshold has
confidence 0.5. MMOD confidences (about 0.5-1.1 for real faces) are shifted by -1 onto that scale, so a
face only the CNN finds gets a confidence of at most about 0.5. The shape predictor gives no confidence.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .backend import Detection, LandmarkBackend, register_backend

SHAPE_PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"
MMOD_DETECTOR = "mmod_human_face_detector.dat"
ROBUST_MIN_SIDE = 40  # px: the CNN detector needs images at least this big (its filters must fit; faces are far larger)


def model_path(filename: str) -> Path:
    """Path of a model file shipped by the `face-recognition-models` package (without importing it)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the face-recognition-models package is not installed "
                           "(pip install face-recognition-models==0.3.0)")
    for root in spec.submodule_search_locations:
        path = Path(root) / "models" / filename
        if path.is_file():
            return path
    raise RuntimeError(f"{filename} not found in face-recognition-models ({list(spec.submodule_search_locations)})")


class DlibBackend(LandmarkBackend):
    """HOG detector (about 80 px minimum face) and 68-point regression-tree shape predictor."""

    name = "dlib"
    min_face_px = 80

    def __init__(self) -> None:
        import dlib  # lazy: start-up time of every command (landmarks/__init__.py)

        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(model_path(SHAPE_PREDICTOR_68)))
        self._cnn = None  # loaded on first use

    def detect(self, image: np.ndarray, threshold: float = 0.0, upsample: int = 0) -> list[Detection]:
        image = np.ascontiguousarray(image)
        rects, scores, _ = self._detector.run(image, upsample, threshold)
        return [Detection((float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1)), float(s))
                for r, s in zip(rects, scores)]

    def detect_robust(self, image: np.ndarray) -> list[Detection]:
        if min(image.shape[:2]) < ROBUST_MIN_SIDE:  # the CNN's filters do not fit: dlib raises an internal error
            return []
        if self._cnn is None:
            self._cnn = self._dlib.cnn_face_detection_model_v1(str(model_path(MMOD_DETECTOR)))
        found = self._cnn(np.ascontiguousarray(image), 0)
        return [Detection((float(d.rect.left()), float(d.rect.top()), float(d.rect.right() + 1),
                           float(d.rect.bottom() + 1)), float(d.confidence) - 1.0) for d in found]

    def landmarks(self, image: np.ndarray, box) -> tuple[np.ndarray, float]:
        """68 points for a face box; large faces are processed on a local, downscaled window (speed)."""
        import cv2  # lazy: start-up time of every command (landmarks/__init__.py)

        x0, y0, x1, y1 = (float(v) for v in box)
        side = max(x1 - x0, y1 - y0)
        offset, scale = np.zeros(2), 1.0
        if side > 320:  # predictor accuracy is scale-free; a 200 px face is plenty and much cheaper to copy
            h, w = image.shape[:2]
            m = 0.5 * side
            cx0, cy0 = max(0, int(x0 - m)), max(0, int(y0 - m))
            cx1, cy1 = min(w, int(np.ceil(x1 + m))), min(h, int(np.ceil(y1 + m)))
            scale = 200.0 / side
            image = cv2.resize(image[cy0:cy1, cx0:cx1], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            offset = np.array([cx0, cy0], dtype=np.float64)
            x0, y0, x1, y1 = (x0 - cx0) * scale, (y0 - cy0) * scale, (x1 - cx0) * scale, (y1 - cy0) * scale
        rect = self._dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)) - 1, int(round(y1)) - 1)
        shape = self._predictor(np.ascontiguousarray(image), rect)
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        if scale != 1.0:  # pixel-centre convention under resize: x_src = (x_dst + 0.5) / s - 0.5
            pts = (pts + 0.5) / scale - 0.5 + offset
        return pts.astype(np.float32), 1.0


register_backend("dlib", DlibBackend)

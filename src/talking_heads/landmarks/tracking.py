"""Landmarks over a video: detect, then track frame to frame (paper.md section 2: 68 points for every frame).

Tracking is detection in a search window: once a face is found, each next frame is searched only in a
window around the previous box (`roi_scale` x the face size), rescaled so that the face is about
`roi_face_px` pixels. That costs the same on a 224 px crop and on a 1080p shot, keeps to the same person
when several are visible, and still gives every frame a real detector score, which is the per-frame
confidence. When the fast detector finds nothing in the window (typically a profile view), the backend's
robust detector (dlib: the CNN) searches the same window. A full-frame detection runs on the first frame,
whenever the face is lost, and every `redetect_every` frames (it replaces the tracked box only when it
overlaps it, so the track never jumps to another person). Frames where no face is found are marked
(`found` False, points NaN, confidence 0): no landmarks are ever invented. Filling gaps or smoothing is
the caller's choice (`filters.py`). After a loss, a face overlapping the last known box is preferred over
the largest one. Faces smaller than about 80 px (the HOG detector's window) are not found at
their own scale; such footage is too small for a 256 px crop anyway and ends up reported as "no face".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from ..config import DataConfig
from .backend import NUM_POINTS, Detection, LandmarkBackend, detect_faces, get_backend, resized
from .iris import get_iris_locator


@dataclass
class LandmarkTrack:
    """68-point landmarks of a frame sequence, in original frame pixels.

    points (F,68,2) float32, NaN where `found` is False; confidence (F,) float32 in [0, 1] (0 where not
    found); found (F,) bool; boxes (F,4) float32 detector boxes (x0,y0,x1,y1), NaN where not found;
    frame_indices (F,) int64 indices of these frames in the source; fps of the source (of the frames as
    listed: sub-sampling does not change it); frame_size (width, height).
    """

    points: np.ndarray
    confidence: np.ndarray
    found: np.ndarray
    boxes: np.ndarray
    frame_indices: np.ndarray
    fps: float
    frame_size: tuple[int, int]
    num_source_frames: int = 0
    warnings: list[str] = field(default_factory=list)
    iris: np.ndarray | None = None  # (F,2,4) iris centre x, y, radius, confidence per eye (iris.py); None = not located

    def __len__(self) -> int:
        return int(self.points.shape[0])


def iou(a, b) -> float:
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    iw, ih = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return float(inter / union) if union > 0 else 0.0


class FaceTracker:
    """Stateful per-frame landmark tracker (see the module docstring). Feed frames in order to `update`."""

    def __init__(self, backend: str | LandmarkBackend = "dlib", redetect_every: int = DataConfig.redetect_every,
                 roi_scale: float = 2.2,
                 roi_face_px: int = 90, roi_threshold: float = -0.3, max_side: int = 640, robust: bool = True,
                 robust_face_px: int = 80, iris: str = "none"):
        self.backend = get_backend(backend)
        # iris centres of every face found (gaze; iris.py), in `self.iris` after each `update`
        self.iris_locator = None if iris == "none" else get_iris_locator(iris)
        self.iris = np.zeros((2, 4), np.float32)
        self.robust = robust  # try the backend's slower robust detector (profiles) when the fast one fails
        self.robust_face_px = robust_face_px  # face size inside the window for the robust detector
        self.redetect_every = max(1, int(redetect_every))
        self.roi_scale = roi_scale  # search window side / face size
        self.roi_face_px = max(roi_face_px, self.backend.min_face_px + 8)  # face size inside the window
        self.roi_threshold = roi_threshold  # detector threshold inside the window (a face was just there)
        self.max_side = max_side  # long side for full-frame detection of an unknown face size
        self.reset()

    def reset(self) -> None:
        self.box: tuple[float, float, float, float] | None = None  # box tracked in the previous frame
        self.last_box: tuple[float, float, float, float] | None = None  # last box ever found (kept while lost)
        self.size_hint: float | None = None  # last known face size (px), kept while lost
        self.since_full = 0  # frames since the last full-frame detection
        self.lost_frames = 0

    # --- detection helpers ---------------------------------------------------------------------------
    def _full_detect(self, frame: np.ndarray, exhaustive: bool) -> list[Detection]:
        """Whole-frame detection, largest first.

        exhaustive: all scales (`detect_faces`). Otherwise one scale: where the last known face size is
        comfortable for the detector, or the `max_side` downscale when no size is known yet.
        """
        if exhaustive:
            return detect_faces(frame, self.backend, max_side=self.max_side, robust=self.robust)
        h, w = frame.shape[:2]
        if self.size_hint is not None:
            s = min(1.0, 1.3 * self.roi_face_px / self.size_hint)
        else:
            s = min(1.0, self.max_side / max(h, w))
        small = resized(frame, s)  # s <= 1
        sx = w / small.shape[1]
        return sorted((d.scaled(sx) for d in self.backend.detect(small)), key=lambda d: -d.size)

    def _roi_detect(self, frame: np.ndarray) -> Detection | None:
        """Search the window around the last box: HOG first, the robust detector when HOG finds nothing."""
        x0, y0, x1, y1 = self.box
        side = max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        r = 0.5 * self.roi_scale * side
        h, w = frame.shape[:2]
        X0, Y0 = int(max(0, cx - r)), int(max(0, cy - r))
        X1, Y1 = int(min(w, np.ceil(cx + r))), int(min(h, np.ceil(cy + r)))
        if X1 - X0 < 8 or Y1 - Y0 < 8:
            return None
        roi = frame[Y0:Y1, X0:X1]
        attempts = [(self.roi_face_px / side, lambda im: self.backend.detect(im, threshold=self.roi_threshold))]
        if self.robust:
            attempts.append((self.robust_face_px / side, self.backend.detect_robust))
        for s, detect in attempts:
            small = resized(roi, s)
            found = detect(small)
            if found:
                sx = (X1 - X0) / small.shape[1]
                cands = [d.scaled(sx, X0, Y0) for d in found]
                return max(cands, key=lambda d: iou(d.box, self.box) + 1e-3 * d.score)
        return None

    # --- one frame -----------------------------------------------------------------------------------
    def update(self, frame: np.ndarray) -> tuple[np.ndarray | None, float, Detection | None]:
        """Landmarks of the next frame: (points (68,2) or None, confidence, detection or None)."""
        det = None
        if self.box is not None:
            if self.since_full + 1 >= self.redetect_every:
                self.since_full = 0
                full = self._full_detect(frame, exhaustive=False)
                overlapping = [d for d in full if iou(d.box, self.box) > 0.3]
                if overlapping:
                    det = max(overlapping, key=lambda d: iou(d.box, self.box))
            else:
                self.since_full += 1
            if det is None:
                det = self._roi_detect(frame)
        if det is None:  # lost, or nothing tracked yet: whole frame; exhaustive now and then
            full = self._full_detect(frame, exhaustive=self.lost_frames % self.redetect_every == 0)
            self.since_full = 0
            if full:
                det = full[0]
                if self.last_box is not None:  # prefer the face we were following
                    near = max(full, key=lambda d: iou(d.box, self.last_box))
                    det = near if iou(near.box, self.last_box) > 0 else det
        if det is None:
            self.lost_frames += 1
            self.box = None
            self.iris = np.zeros((2, 4), np.float32)
            return None, 0.0, None
        self.lost_frames = 0
        points, _ = self.backend.landmarks(frame, det.box)
        if self.iris_locator is not None:
            self.iris = self.iris_locator.locate(frame, points)
        self.box = self.last_box = det.box
        self.size_hint = det.size
        return points, self.backend.confidence(det.score), det


def track_frames(frames: Iterable[np.ndarray], *, backend: str | LandmarkBackend = "dlib",
                 redetect_every: int = DataConfig.redetect_every, roi_scale: float = 2.2, fps: float = 25.0,
                 frame_indices: Iterable[int] | None = None, frame_size: tuple[int, int] | None = None,
                 robust: bool = True, iris: str = "none") -> LandmarkTrack:
    """Track landmarks over RGB uint8 frames (any iterable; consumed once). See `LandmarkTrack`. iris: the
    iris locator's name (`iris.get_iris_locator`; "none" = no iris points)."""
    tracker = FaceTracker(backend, redetect_every=redetect_every, roi_scale=roi_scale, robust=robust, iris=iris)
    pts, conf, found, boxes, irises = [], [], [], [], []
    size = frame_size
    for frame in frames:
        if size is None:
            size = (int(frame.shape[1]), int(frame.shape[0]))
        p, c, det = tracker.update(frame)
        found.append(p is not None)
        pts.append(p if p is not None else np.full((NUM_POINTS, 2), np.nan, np.float32))
        conf.append(c)
        boxes.append(det.box if det is not None else (np.nan,) * 4)
        irises.append(tracker.iris)
    n = len(pts)
    idx = np.arange(n, dtype=np.int64) if frame_indices is None else np.asarray(list(frame_indices), np.int64)[:n]
    return LandmarkTrack(
        points=np.asarray(pts, np.float32).reshape(n, NUM_POINTS, 2),
        confidence=np.asarray(conf, np.float32), found=np.asarray(found, bool),
        boxes=np.asarray(boxes, np.float32).reshape(n, 4), frame_indices=idx, fps=float(fps),
        frame_size=size or (0, 0), num_source_frames=n,
        iris=None if iris == "none" else np.asarray(irises, np.float32).reshape(n, 2, 4))

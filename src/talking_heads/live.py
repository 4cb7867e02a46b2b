"""The live stage: puppeteering one frame at a time (paper.md section 1 stage 3, section 8's adaptation).

`LiveStage(renderer, avatar, ...)` (or `pipeline.TalkingHeadPipeline.live(avatar, ...)`) takes one frame of
driver landmarks and gives one rendered frame: `step(points) -> frame`. Per frame:

1. the crop: the driver's points into a crop at the model's resolution, with a fixed `crop` or a
   `data.crop.StreamCrop` fitted on the first frame with a face;
2. One Euro smoothing (optional), in the units of a 256 px crop, where the filter's defaults are tuned;
3. adaptation (`landmarks.adaptation.MotionTransfer`, built from the reference frame and the avatar's face)
   of the motion since the reference frame to the avatar's own face; adapt=False is the paper's placement of
   the driver's landmarks by the crop rule. The adapted head turns no further than the driver's own head (as
   its camera sees it) nor past `inference.max_yaw` (`landmarks.yaw.follow_yaw`). Without a given reference (a live camera or a telepresence
   stream: no file to search), the reference is chosen as `animate` chooses it, the most neutral frame
   (`landmarks.masks.neutrality`: mouth closed, eyes open, frontal), over the stream's first
   `reference_seconds`: the first face frame at once, replaced whenever a clearly more neutral one arrives in
   that time (a sender whose first frame has an open mouth would otherwise drive a closed-mouth avatar by
   the *closing* of its mouth); 0 = the first face frame, fixed;
4. render (`Renderer.render_frames`).

`pipeline.animate` is a loop over it (a driver file's landmarks in, an mp4 out); the telepresence receiver
feeds it decoded landmarks as they arrive, so both share one code path.

Points are (68,2) float pixels (x right, y down), iBUG 300-W order. For a model that renders gaze
(`config.uses_gaze`) they may carry the driver's iris centres as rows 68-69 ((70,2); NaN = not seen): the
driver's gaze relative to its eye corners, as a change from its neutral gaze (`gaze_reference`), is moved onto
the avatar's eyes (`landmarks.iris`), gaps held then eased to the avatar's own gaze (`GazeFilter`), or, with
`eye_contact`, turned towards the camera; the landmarks rendered then have 70 rows.
"""

from __future__ import annotations

from typing import Sequence

import threading

import numpy as np

from .avatar import Avatar
from .data.crop import CropTransform, StreamCrop
from .landmarks.adaptation import MotionTransfer
from .landmarks.filters import OneEuroFilter
from .landmarks.masks import neutrality
from .landmarks.iris import GazeFilter, place_gaze, relative_gaze, uses_gaze, with_iris
from .landmarks.yaw import follow_yaw
from .renderer import PipelineError, Renderer

__all__ = ["LatestSlot", "LiveStage", "require_landmarks"]

FILTER_UNITS = 256.0  # One Euro smoothing runs on points in the units of a crop this many px wide
REFERENCE_SECONDS = 3.0  # without a given reference: the most neutral face frame of the stream's first seconds
REFERENCE_MARGIN = 0.05  # ... replaces the current one when this much more neutral (`neutrality` units)


class LiveStage:
    """Puppeteering one frame at a time: `step(points) -> frame` (module docstring).

    points (68,2) are the driver's landmarks in its own pixels (a camera frame, the sender's crop, or a
    driver clip's crop); None or NaN = no face in this frame (the last good landmarks are held; before the
    first face the avatar's own face is shown). reference (68,2): the driver's neutral frame in the points'
    pixels (None: the first frame with a face); crop: driver pixels -> the model's crop (None: fixed by the
    first frame with a face, refitted when the head leaves it). `points` holds what was rendered (the avatar's
    crop px), `driver_points` the driver's landmarks in its crop at the model's resolution.
    """

    def __init__(self, renderer: Renderer, avatar: Avatar, *, adapt: bool = True, reference: np.ndarray | None = None,
                 smooth: bool = False, fps: float = 25.0, crop: CropTransform | None = None,
                 eye_contact: bool = False, gaze_reference: np.ndarray | None = None,
                 reference_seconds: float = REFERENCE_SECONDS):
        if adapt:
            require_landmarks(avatar)
        self.renderer, self.avatar, self.adapt, self.fps = renderer, avatar, adapt, float(fps)
        self.crop = StreamCrop(renderer.image_size, renderer.cfg.data)
        self.crop.transform = crop
        self.fixed_crop = crop is not None
        # the driver's motion since the reference frame -> the avatar's face; without a reference: built on
        # the first frame with a face
        self.transfer = MotionTransfer(reference, avatar.face) if adapt and reference is not None else None
        self.fixed_reference = reference is not None
        self.reference_seconds = float(reference_seconds)
        self.reference_score = np.inf  # neutrality of the chosen reference frame (module docstring)
        self.reference_changes = 0  # references replaced by a more neutral frame
        self._first_face_t: float | None = None
        self.filter = OneEuroFilter() if smooth else None
        self._last_t: float | None = None
        self._gaze_t: float | None = None
        # the driver's gaze relative to its neutral one (gaze_reference (2,2); None: its first gaze seen)
        self.gaze = GazeFilter(avatar.rest_gaze, reference=gaze_reference, eye_contact=eye_contact) \
            if uses_gaze(renderer.cfg) else None
        neutral = avatar.face if avatar.face is not None else np.full((68, 2), np.nan, np.float32)
        self.points = np.asarray(neutral, np.float32)  # (68,2) or with gaze (70,2) rendered last, avatar crop px
        if self.gaze is not None and avatar.face is not None:
            self.points = with_iris(neutral, place_gaze(neutral, avatar.rest_gaze))
        self.driver_points: np.ndarray | None = None  # (68,2) the driver's last landmarks, its crop px
        self.frames = 0  # frames stepped
        self.lost = 0  # of which without a face (held the last good landmarks)

    def landmarks(self, points: np.ndarray | None, t: float | None = None,
                  frame_size: tuple[int, int] | None = None) -> np.ndarray:
        """Stages 1-3 for one frame: the landmarks to render (68,2) in the avatar's crop px. t: capture time
        (s) for the smoothing filter (default: frames 1/fps apart); frame_size (w, h) of the driver's frames
        for a new crop box (default: just big enough for the points)."""
        self.frames += 1
        p = None if points is None else np.asarray(points, np.float64)
        if p is not None and p.shape not in ((68, 2), (70, 2)):
            raise PipelineError(f"landmarks must be (68,2), or (70,2) with the iris centres, got {p.shape}")
        iris = p[68:] if p is not None and len(p) == 70 else None
        p = None if p is None else p[:68]
        if p is None or not np.isfinite(p).all():
            self.lost += 1
            return self.points
        gaze = relative_gaze(p, iris) if iris is not None else None  # in the driver's own pixels
        size = frame_size or tuple(int(np.ceil(v)) + 1 for v in p.max(axis=0))
        if self.fixed_crop:
            in_crop = self.crop.transform.to_crop(p)
        else:
            in_crop = self.crop.update(p, size)
        p = self._smooth(p, t)
        if self.filter is not None:
            in_crop = self.crop.transform.to_crop(p)
        self.driver_points = np.asarray(in_crop, np.float32)
        if not self.adapt:
            self.points = self._with_gaze(self.driver_points, gaze, t)
            return self.points
        self._choose_reference(p, t)
        adapted = follow_yaw(self.transfer.apply(p), self.avatar.face, p, self.renderer.cfg.inference.max_yaw)
        self.points = self._with_gaze(adapted, gaze, t)
        return self.points

    def _choose_reference(self, p: np.ndarray, t: float | None) -> None:
        """The first face frame is the reference; within `reference_seconds` of it (capture times, else frames
        1/fps apart) a frame more neutral by REFERENCE_MARGIN replaces it (module docstring)."""
        if self.fixed_reference:
            return
        now = t if t is not None else self.frames / self.fps
        if self._first_face_t is None:
            self._first_face_t = now
        if self.transfer is not None and now - self._first_face_t > self.reference_seconds:
            return
        score = float(neutrality(p)[0])
        if self.transfer is None or score < self.reference_score - REFERENCE_MARGIN:
            if self.transfer is not None:
                self.reference_changes += 1
            self.transfer = MotionTransfer(p, self.avatar.face)
            self.reference_score = score

    def _with_gaze(self, points: np.ndarray, gaze: np.ndarray | None, t: float | None) -> np.ndarray:
        """(70,2) points with the filtered gaze placed on their eyes, for a model that renders gaze; else as
        given. The filter's clock: capture times when given, else frames 1/fps apart."""
        if self.gaze is None:
            return points
        dt = 1.0 / self.fps if t is None or self._gaze_t is None else max(0.0, t - self._gaze_t)
        self._gaze_t = t
        return with_iris(points, place_gaze(points, self.gaze(gaze, dt)))

    def _smooth(self, p: np.ndarray, t: float | None) -> np.ndarray:
        """One Euro filter on the points in FILTER_UNITS-px-crop units (the crop box fixes the scale); frame
        px out."""
        if self.filter is None:
            return p
        dt = 1.0 / self.fps if t is None or self._last_t is None else max(1e-3, t - self._last_t)
        self._last_t = t
        if self.crop.changed and not self.fixed_crop:
            self.filter.reset()  # a new box: the old positions are in other units
        unit = FILTER_UNITS / self.crop.transform.side
        return self.filter(p * unit, dt) / unit

    def render(self, points: np.ndarray) -> np.ndarray:
        """Stage 4: one RGB uint8 frame (`frame_size(avatar)` px) for landmarks (68,2) in the avatar's crop px."""
        if not np.isfinite(points).all():  # nothing to show yet (no face, and an avatar without landmarks)
            size = self.renderer.frame_size(self.avatar)
            return np.zeros((size, size, 3), np.uint8)
        return self.renderer.render_frames(self.avatar, np.asarray(points, np.float32)[None])[0]

    def render_batch(self, points: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Stage 4 for several frames' landmarks at once (one generator call): offline jobs."""
        if not all(np.isfinite(p).all() for p in points):
            return [self.render(p) for p in points]
        return self.renderer.render_frames(self.avatar, np.stack(points).astype(np.float32)) if len(points) else []

    def step(self, points: np.ndarray | None, t: float | None = None,
             frame_size: tuple[int, int] | None = None) -> np.ndarray:
        """One frame: landmarks in, RGB uint8 (output_size, output_size, 3) frame out (class docstring)."""
        return self.render(self.landmarks(points, t, frame_size))


class LatestSlot:
    """One item waiting for a consumer thread; putting a new one drops the old one (`put` returns True): live
    consumers always take the newest frame and never build a backlog."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item = None
        self.closed = False

    def put(self, item) -> bool:
        with self._cond:
            dropped = self._item is not None
            self._item = item
            self._cond.notify()
            return dropped

    def take(self, timeout: float):
        """The waiting item (None after `timeout` s without one, or once closed)."""
        with self._cond:
            if self._item is None and not self.closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def require_landmarks(avatar: Avatar) -> None:
    """PipelineError for an avatar without source landmarks: it cannot be driven with adaptation."""
    if avatar.face is None:
        raise PipelineError("this avatar has no source landmarks (made from tensors without landmarks=), so "
                            "landmarks cannot be adapted to it: animate it with adapt=False (--no-adapt)")

"""Entry points for the inference pipeline: one photo -> a head crop with landmarks; one video -> a landmark track.

`prepare_photo` (few-shot sources, paper.md section 1 stage 2): load any still image (path, PIL image or
array: grayscale, RGBA, 16-bit, float, EXIF-rotated, 10000 px or 64 px), detect faces on a downscaled copy,
take the largest (a warning names the others), fit 68 landmarks, and cut the VoxCeleb-style crop of
`crop.py`. No face, or a face too small to fill the model's input, raises `FaceNotFoundError` whose message
says what to do.

`track_video` (driving videos, stage 3) and `track_file` (its footage part, which preprocessing uses too):
landmarks of every frame (or of `max_frames` evenly spaced frames) in original frame pixels, with per-frame
confidence and found mask (see `landmarks/tracking.py`). Cropping a driving sequence is the caller's next step:
`crop.clip_crop(track.points[track.found], track.frame_size, size)`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..config import DataConfig, ModelConfig
from ..landmarks.backend import LandmarkBackend, detect_faces, get_backend
from ..landmarks.iris import get_iris_locator, iris_points
from ..landmarks.tracking import LandmarkTrack, track_frames
from ..errors import InputError
from .crop import CropTransform, clip_crop, face_extent
from .video import VideoError, VideoInfo, even_indices, probe, read_frames, read_image, to_rgb_uint8

log = logging.getLogger(__name__)

DETECT_MAX_SIDE = 640  # long side of the copy faces are first searched in


class FaceNotFoundError(InputError):
    """No usable face in the input; the message says what to do about it."""


@dataclass
class FaceCrop:
    """A prepared photo: the crop (size,size,3) RGB uint8, its landmarks (68,2) float32 in crop pixels, the
    crop -> frame transform (for paste-back), the original image size (w, h) and human-readable warnings."""

    image: np.ndarray
    landmarks: np.ndarray
    transform: CropTransform
    frame_size: tuple[int, int]
    confidence: float
    warnings: list[str] = field(default_factory=list)
    iris: np.ndarray | None = None  # (2,2) iris centres in crop pixels, NaN where not seen (data.iris; iris.py)


def min_face_size(size: int) -> int:
    """Smallest accepted face (landmark extent, px) for a `size` px crop: size/4, within [32, 64]."""
    return int(min(64, max(32, size // 4)))


def load_photo(image_or_path) -> tuple[np.ndarray, str]:
    """(RGB uint8 image, name for messages) from a path, PIL image or array."""
    if isinstance(image_or_path, (str, os.PathLike)):
        path = Path(image_or_path)
        try:
            return read_image(path), path.name
        except VideoError as err:
            raise FaceNotFoundError(f"{err}. Give a JPEG or PNG photo of one person's face.") from None
    try:
        return to_rgb_uint8(image_or_path), "the image"
    except VideoError as err:
        raise FaceNotFoundError(f"{err}. Give an RGB, grayscale or RGBA image.") from None


def prepare_photo(image_or_path, size: int = ModelConfig.image_size, data_cfg: DataConfig | None = None,
                  backend: str | LandmarkBackend = "dlib", min_face_px: int | None = None) -> FaceCrop:
    """Crop a photo for the model: largest face, 68 landmarks, VoxCeleb-style square crop of `size` px."""
    cfg = data_cfg or DataConfig()
    backend = get_backend(backend)
    image, name = load_photo(image_or_path)
    h, w = image.shape[:2]
    if min(h, w) < min_face_size(size):  # dlib's detectors fail on such images with an internal error
        raise FaceNotFoundError(f"{name} is only {w}x{h} px: too small to hold a face (a face at least "
                                f"{min_face_size(size)} px across is needed). Use a larger photo.")
    warnings: list[str] = []
    if max(h, w) > 4 * DETECT_MAX_SIDE:
        warnings.append(f"{name} is {w}x{h} px: faces were searched on a {DETECT_MAX_SIDE} px copy")
    faces = detect_faces(image, backend, max_side=DETECT_MAX_SIDE)
    if not faces:
        raise FaceNotFoundError(
            f"no face found in {name} ({w}x{h} px). Use a photo where one face is clearly visible, roughly "
            f"frontal, well lit, and at least {min_face_size(size)} px across.")
    if len(faces) > 1:
        warnings.append(f"{len(faces)} faces found in {name}; using the largest "
                        f"({faces[0].size:.0f} px, next {faces[1].size:.0f} px). Crop the photo to choose another.")
    face = faces[0]
    points, _ = backend.landmarks(image, face.box)
    _, extent = face_extent(points)
    need = min_face_px if min_face_px is not None else min_face_size(size)
    if extent < need:
        raise FaceNotFoundError(
            f"the face in {name} is only {extent:.0f} px across (at least {need} px are needed for a {size} px "
            f"model). Use a closer or higher-resolution photo, or crop it around the head.")
    crop = clip_crop(points[None], (w, h), size, cfg.crop_scale, cfg.crop_shift).transform
    if crop.side < 0.75 * size:  # upsampled by more than 4/3: visibly soft
        warnings.append(f"small face in {name}: the head region is only {crop.side} px, upsampled "
                        f"{size / crop.side:.1f}x to {size} px (the result will look soft; use a closer or "
                        "higher-resolution photo)")
    x0, y0, x1, y1 = crop.box
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        warnings.append("the head is close to the image border: the crop was padded by edge replication")
    for msg in warnings:  # returned to the caller, who reports them (the CLI prints each once)
        log.debug(msg)
    iris = None
    if cfg.iris != "none":  # on the photo at its own resolution
        iris = crop.to_crop(iris_points(get_iris_locator(cfg.iris).locate(image, points)))
    return FaceCrop(image=crop.crop(image), landmarks=crop.to_crop(points), transform=crop, frame_size=(w, h),
                    confidence=backend.confidence(face.score), warnings=warnings, iris=iris)


def tracking_roi_scale(keep: Sequence[int] | None) -> float:
    """The tracker's search window (face sizes) for the frames `keep` of a clip (None: every frame): 2.2
    while kept frames are at most 2 source frames apart on average (`even_indices` then never leaves a gap of
    3), 3.0 for sparser frames, between which the face moves further."""
    if keep is None or len(keep) < 2:
        return 2.2
    gap = (keep[-1] - keep[0]) / (len(keep) - 1)
    return 2.2 if gap <= 2 else 3.0


def track_file(path: str | os.PathLike, *, max_frames: int, backend: str | LandmarkBackend = "dlib",
               redetect_every: int = DataConfig.redetect_every, threads: int = 0, frames_fps: float | None = None,
               on_frame: Callable[[int, np.ndarray], None] | None = None, iris: str = "none"
               ) -> tuple[LandmarkTrack, VideoInfo]:
    """(track, probe info) of `max_frames` evenly spaced frames (0: all) of a video file or folder of frames.

    The track's points are in original frame pixels; its frame_indices are the source index of every tracked
    frame and its warnings the decoder's (a list the caller may add to). on_frame(i, frame) sees every decoded
    RGB frame as it is tracked (preprocessing keeps them for cropping). Raises VideoError.
    """
    info = probe(path, **({"frames_fps": frames_fps} if frames_fps else {}))
    keep = even_indices(info.num_frames, max_frames) if max_frames and info.num_frames else None
    warnings: list[str] = list(info.warnings)
    kept: list[int] = []

    def frames():
        for i, frame in read_frames(path, keep, threads=threads, warnings=warnings):
            kept.append(i)
            if on_frame is not None:
                on_frame(i, frame)
            yield frame

    track = track_frames(frames(), backend=backend, redetect_every=redetect_every, fps=info.fps,
                         roi_scale=tracking_roi_scale(keep), frame_size=(info.width, info.height), iris=iris)
    track.frame_indices = np.asarray(kept, np.int64)
    track.num_source_frames = max(info.num_frames, kept[-1] + 1 if kept else 0)
    track.warnings = warnings
    return track, info


def track_video(path_or_frames: str | os.PathLike | Iterable[np.ndarray], *, max_frames: int | None = None,
                data_cfg: DataConfig | None = None, backend: str | LandmarkBackend = "dlib",
                fps: float | None = None, redetect_every: int | None = None, threads: int = 0,
                iris: str = "none") -> LandmarkTrack:
    """68-point landmarks of a video file, a folder of frames or an iterable of RGB uint8 frames.

    Points are in original frame pixels (NaN where no face was found). max_frames: keep at most this many
    frames, evenly spaced (None = `data_cfg.max_frames`, 0 = all). fps: frame rate for a frame iterable
    or a folder of frames (default 25). Raises VideoError when the file cannot be read at all.
    """
    cfg = data_cfg or DataConfig()
    max_frames = cfg.max_frames if max_frames is None else max_frames
    every = redetect_every or cfg.redetect_every
    if isinstance(path_or_frames, (str, os.PathLike)):
        return track_file(path_or_frames, max_frames=max_frames, backend=backend, redetect_every=every,
                          threads=threads, frames_fps=fps, iris=iris)[0]
    frames = (to_rgb_uint8(f) for f in path_or_frames)
    if max_frames:
        frames_list = list(frames)
        idx = even_indices(len(frames_list), max_frames)
        track = track_frames((frames_list[i] for i in idx), backend=backend, redetect_every=every,
                             roi_scale=tracking_roi_scale(idx), fps=fps or 25.0, frame_indices=idx, iris=iris)
        track.num_source_frames = len(frames_list)
        return track
    return track_frames(frames, backend=backend, redetect_every=every, fps=fps or 25.0, iris=iris)

"""Driving sequences for puppeteering (paper.md section 1 stage 3): the landmarks of every output frame.

A driver is a video file, a folder of frames, a saved landmark sequence (`.npy`, float (F,68,2) pixels of
any frame size, rows of NaN where there is no face) or the name of a built-in motion
(`landmarks/motions.py`). `load_driver` turns any of them into a `DriverSequence`: landmarks (F,68,2) in a
`size` px crop of the driver cut by the same VoxCeleb-style rule as the avatar's photo (one stable box for
the whole clip, `data/crop.py`), the frame rate, the audio source and the number of frames without a face.
A driver whose face moves across the frame (a dancing, full-body clip: `crop.face_motion` above
DataConfig.follow_threshold face sizes) is cut by a box per frame that follows the face instead
(`crop.follow_crop`, smoothed over DataConfig.follow_smoothing seconds), so the face stays in the avatar's frame.

Frames where the face is lost hold the last good landmarks (frames before the first face take the first
good ones) and are counted in `lost_frames`; a driver with no face at all is an error. Optional smoothing
is the One Euro filter of `landmarks/filters.py`. Adapting the landmarks to the avatar's face is the
pipeline's next step (`landmarks/adaptation.py`), measured from a reference frame of the driver
(`check_reference_index` refuses a negative one before any work, `check_reference_frame` one the driver
does not have); `driver_points` keeps the driver's own for display.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from . import limits
from .config import DataConfig, InferenceConfig
from .data.crop import CropTrack, CropTransform, clip_crop, face_motion, follow_crop, hold_index, smoothing_window
from .data.faces import track_video
from .data.video import FRAMES_FPS, VideoError, is_frames_folder, probe, read_frames
from .errors import InputError
from .landmarks.filters import smooth_sequence
from .landmarks.iris import iris_points, place_gaze, with_iris
from .landmarks.motions import MOTIONS, motion_gaze, motion_landmarks
from .landmarks.plausibility import MIN_CONFIDENCE, trusted
from .landmarks.raster import rasterize
from .paths import input_file

log = logging.getLogger(__name__)

AUDIO_BESIDE_FRAMES = (".mp3", ".wav", ".m4a", ".aac", ".flac", ".ogg")  # FOLDER.mp3 etc. for a frames folder


class DriverError(InputError):
    """The driver cannot be used; the message says why and what to give instead."""


@dataclass
class DriverSequence:
    """Landmarks of every output frame; see the module docstring."""

    points: np.ndarray  # (F,68,2) float32 what is rendered: crop px at `size` (after adaptation: avatar's crop)
    driver_points: np.ndarray  # (F,68,2) float32 the driver's own landmarks in its crop at `size`
    size: int  # crop side the points refer to (the model's image size)
    fps: float
    kind: str  # "video", "frames", "landmarks" or "motion"
    source: str  # path, or the motion's name
    audio: Path | None = None  # media file whose audio is carried over
    lost_frames: int = 0  # frames where no face was found (they hold the last good landmarks)
    held_frames: int = 0  # frames with a face not to trust (profile, occluded: low confidence or shape), held too
    transform: CropTransform | CropTrack | None = None  # driver frame -> crop (video, frames); a CropTrack if followed
    adapted: bool = False  # points were adapted to an avatar
    warnings: list[str] = field(default_factory=list)
    followed: bool = False  # the crop follows a face that moves across the frame (a box per frame; module docstring)
    iris: np.ndarray | None = None  # (F,2,2) float32 the driver's iris centres in its crop at `size` (NaN: not seen); None = not located (gaze off)

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def head(self, frames: int) -> "DriverSequence":
        """The first `frames` frames (at least 1); audio is cut with the video when written."""
        n = max(1, int(frames))
        tf = self.transform[:n] if isinstance(self.transform, CropTrack) else self.transform
        return dataclasses.replace(self, points=self.points[:n], driver_points=self.driver_points[:n], transform=tf,
                                   lost_frames=min(self.lost_frames, n),  # an upper bound once cut
                                   iris=None if self.iris is None else self.iris[:n])

    def driver_points_with_iris(self, i: int) -> np.ndarray:
        """Frame i's driver landmarks (68,2), or (70,2) with its iris centres when located (NaN: not seen)."""
        if self.iris is None:
            return self.driver_points[i]
        return with_iris(self.driver_points[i], self.iris[i])

    def panels(self, size: int) -> Iterator[np.ndarray]:
        """What the driver looks like, one RGB uint8 (size,size,3) image per frame: the driver's crop for
        footage, its landmark image for landmark sequences and motions."""
        if self.transform is not None:
            tf = self.transform.resized(size)
            boxes = itertools.islice(tf if isinstance(tf, CropTrack) else itertools.repeat(tf), len(self))
            for box, (_, frame) in zip(boxes, read_frames(self.source)):
                yield box.crop(frame)
            return
        for i in range(len(self)):  # with the pupils where the iris points are known (gaze)
            yield rasterize(self.driver_points_with_iris(i) * (size / self.size), size, pupils=True)


def load_driver(driver: str | os.PathLike, *, size: int, data_cfg: DataConfig, inference_cfg: InferenceConfig,
                smooth: bool = False, duration: float | None = None, gaze: bool = False) -> DriverSequence:
    """A `DriverSequence` for a video, a folder of frames, a .npy landmark file or a motion name. gaze: also
    the iris centres (footage: located with `data_cfg.iris`; motions: their gaze; .npy files have none)."""
    if isinstance(driver, str) and driver in MOTIONS and not Path(driver).exists():
        return _motion(driver, size, data_cfg, inference_cfg, duration, gaze)
    path = Path(driver)
    if not path.exists():
        hint = f" (built-in motions: {', '.join(MOTIONS)})" if not path.suffix else ""
        raise DriverError(f"{path}: no such file or folder{hint}")
    if path.suffix.lower() == ".npy":
        raw, frame_size = _read_npy(path), None
        fps, kind, audio, warnings, confidence, iris = inference_cfg.motion_fps, "landmarks", None, [], None, None
    else:
        raw, frame_size, fps, kind, audio, warnings, confidence, iris = _track(path, data_cfg, gaze)
    face, found = _usable_and_trusted(raw, confidence, path)
    points = hold_last_good(raw, found)
    if smooth:
        points = smooth_sequence(points, fps)
    if frame_size is None:
        frame_size = tuple(int(np.ceil(v)) + 1 for v in raw[found].max(axis=(0, 1)))
    tf, followed = _driver_crop(points, found, frame_size, size, fps, data_cfg, path.name)
    crop_points = tf.to_crop(points)
    crop_iris = None
    if iris is not None:  # seen irises of trusted frames only; the rest is for the live stage to hold or ease
        centres = np.stack([iris_points(i) for i in iris]).astype(np.float32)
        centres[~found] = np.nan
        crop_iris = tf.to_crop(centres)
    lost, held = int((~face).sum()), int((face & ~found).sum())
    if lost:
        warnings.append(f"no face in {lost} of {len(raw)} driver frames: they hold the last good landmarks")
    if held:
        warnings.append(f"{held} of {len(raw)} driver frames show the face too poorly to trust (in profile, "
                        "occluded or blurred: low landmark confidence or a distorted shape): they hold the last "
                        "good landmarks")
    for msg in warnings:
        log.debug("%s: %s", path.name, msg)  # returned in .warnings: the caller reports them once
    return DriverSequence(crop_points, crop_points.copy(), size, fps, kind, str(path), audio, lost,
                          held_frames=held, transform=tf if kind != "landmarks" else None, warnings=warnings,
                          followed=followed, iris=crop_iris)


def _motion(name: str, size: int, data_cfg: DataConfig, inference_cfg: InferenceConfig,
            duration: float | None, gaze: bool = False) -> DriverSequence:
    """A built-in motion of `duration` seconds (None: inference.motion_seconds), with its gaze when `gaze`."""
    seconds = inference_cfg.motion_seconds if duration is None else duration
    limits.check_seconds(seconds, "the motion's duration (seconds)")
    try:
        points = motion_landmarks(name, seconds, inference_cfg.motion_fps, size, data_cfg)
    except ValueError as err:
        raise DriverError(str(err)) from None
    iris = None
    if gaze:
        g = motion_gaze(name, seconds, inference_cfg.motion_fps)
        iris = np.stack([place_gaze(p, gf) for p, gf in zip(points, g)]).astype(np.float32)
    return DriverSequence(points, points.copy(), size, inference_cfg.motion_fps, "motion", name, iris=iris)


def _usable_and_trusted(raw: np.ndarray, confidence: np.ndarray | None, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(face, found) (F,) bool: frames with usable landmarks, and those among them clear enough to drive with
    (profile / occluded frames are held like frames without a face); DriverError when none is found."""
    face = usable_frames(raw)
    found = face & trusted(raw, confidence)
    held = int((face & ~found).sum())
    if held and not found.any():
        raise DriverError(f"{path}: a face is found in {held} frames but never clearly enough to drive with "
                          f"(landmark confidence below {MIN_CONFIDENCE} or a distorted shape): a sideways video "
                          "without a rotation tag, a profile or an occluded face? Use a driver that faces the "
                          "camera, upright.")
    if not found.any():
        raise DriverError(f"{path}: no face found in any of its {len(raw)} frames (no usable face: none detected, "
                          "or landmarks that are not finite, all in one point or implausibly large). Use a driver "
                          "where one face is clearly visible, roughly frontal and at least 80 px across.")
    return face, found


def _driver_crop(points: np.ndarray, found: np.ndarray, frame_size: tuple[int, int], size: int, fps: float,
                 data_cfg: DataConfig, name: str) -> tuple[CropTransform | CropTrack, bool]:
    """The driver's crop (module docstring): one stable box, or a box per frame following a face that moves
    more than `data_cfg.follow_threshold` face sizes; and whether it follows."""
    window = smoothing_window(data_cfg.follow_smoothing, fps)
    motion = face_motion(points, window, found)
    if not motion > data_cfg.follow_threshold:  # NaN motion: one stable box
        return clip_crop(points[found], frame_size, size, data_cfg.crop_scale, data_cfg.crop_shift).transform, False
    log.info("%s: the face moves %.2f face sizes across the frame (more than follow_threshold %.2f): the crop "
             "follows it (a box per frame, smoothed over %d frames)", name, motion, data_cfg.follow_threshold, window)
    return follow_crop(points, frame_size, size, window, data_cfg.crop_scale, data_cfg.crop_shift, found=found), True


def check_reference_index(reference_frame, what: str = "reference frame") -> int:
    """A reference frame number as given (an int, or a page's text of one), checked before the driver is
    loaded: a whole number >= 0. Whether the driver has that frame is `check_reference_frame`'s, once loaded."""
    number = limits.whole_number(reference_frame, what)
    if number < 0:
        raise DriverError(f"{what} {number}: give a frame number >= 0")
    return number


def check_reference_frame(seq: DriverSequence, reference_frame: int) -> None:
    """The driver frame adaptation measures motion from must be one of the driver's frames."""
    reference_frame = check_reference_index(reference_frame)
    if reference_frame >= len(seq):
        raise DriverError(f"reference frame {reference_frame} is outside the driver's {len(seq)} frames "
                          f"(0..{len(seq) - 1})")


MAX_COORDINATE = 100_000.0  # px: landmarks beyond this are not of any real frame
MIN_FACE_EXTENT = 2.0  # px: a frame whose 68 points span less than this (e.g. all equal) holds no face


def usable_frames(points: np.ndarray) -> np.ndarray:
    """(F,) bool: frames whose landmarks are finite, within +-MAX_COORDINATE px and not collapsed into a point
    (the others count as frames without a face: they hold the last good landmarks)."""
    p = np.asarray(points, np.float64)
    ok = np.isfinite(p).all(axis=(1, 2))
    safe = np.where(ok[:, None, None], p, 0.0)
    ok &= (np.abs(safe) <= MAX_COORDINATE).all(axis=(1, 2))
    extent = (safe.max(axis=1) - safe.min(axis=1)).max(axis=1)
    return ok & (extent >= MIN_FACE_EXTENT)


def hold_last_good(points: np.ndarray, found: np.ndarray) -> np.ndarray:
    """(F,68,2) with every frame where `found` is False replaced by the last found frame before it (the
    first found frame for those before it)."""
    return np.asarray(points, np.float32)[hold_index(found)]


def _read_npy(path: Path) -> np.ndarray:
    """(F,68,2) float32 of a .npy file; the header (magic, shape, dtype) is checked before any data is read."""
    input_file(path, "driver")
    with open(path, "rb") as f:
        magic = f.read(6)
        if magic[:2] == b"PK":
            raise DriverError(f"{path}: is an .npz archive (zip) named .npy; save one array with numpy.save, or "
                              "extract the landmarks array from the archive")
        if magic != b"\x93NUMPY":
            raise DriverError(f"{path}: not a .npy file (no NumPy header); expected landmarks (frames, 68, 2) "
                              "saved with numpy.save")
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)  # the header only
        except (ValueError, OSError, EOFError, SyntaxError) as err:
            raise DriverError(f"{path}: damaged .npy header ({err})") from None
    if len(shape) != 3 or tuple(shape[1:]) != (68, 2) or shape[0] < 1 or dtype.hasobject \
            or not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise DriverError(f"{path}: expected landmarks of shape (frames, 68, 2) as real numbers, got {shape} {dtype}")
    limits.check("driver_frames", int(shape[0]), f"{path}: frames")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DriverError(f"{path}: not a readable .npy landmark file ({err}); truncated?") from None
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype(np.float32)


def _track(path: Path, data_cfg: DataConfig, gaze: bool = False):
    """(points (F,68,2) NaN where lost, frame size, fps, kind, audio, warnings, confidence, iris (F,2,4) or
    None) of a video or frames folder; iris located with `data_cfg.iris` when `gaze`."""
    try:
        info = probe(path)
        limits.check("driver_frames", info.num_frames, f"{path}: frames")
        track = track_video(path, max_frames=0, data_cfg=data_cfg,
                            iris=data_cfg.iris if gaze else "none")
    except VideoError as err:
        raise DriverError(str(err)) from None
    if len(track) == 0:
        raise DriverError(f"{path}: no frame could be read")
    kind = "frames" if is_frames_folder(path) else "video"
    if kind == "frames":
        beside = [path.parent / f"{path.name}{s}" for s in AUDIO_BESIDE_FRAMES]
        audio = next((f for f in beside if f.is_file()), None)
        fps = FRAMES_FPS
    else:
        audio = path if info.has_audio else None
        fps = info.fps
    return track.points, track.frame_size, fps, kind, audio, list(track.warnings), track.confidence, track.iris

"""The inference pipeline: few-shot avatars and puppeteering from files (paper.md section 1 stages 2-3, sections 6, 8).

One object, built from a model directory, used by the CLI, the evaluation, the demo, the web app and the
telepresence receiver (architecture.md principle 7). Python API:

    from talking_heads.pipeline import TalkingHeadPipeline, Avatar

    pipe = TalkingHeadPipeline.from_pretrained()              # shipped sample model; or ("runs/x/model", "cuda")
    avatar = pipe.create_avatar(["me.jpg"])                   # FF: e_new = mean E, psi' = P e_new
    avatar = pipe.create_avatar("me.mp4", frames=8, finetune=True, epochs=40)   # FT (paper section 6)
    avatar.save("avatars/me")                                 # self-describing directory (stage "avatar")
    avatar = Avatar.load("avatars/me", pipe)
    result = pipe.animate(avatar, "driver.mp4", "out.mp4", side_by_side=True)  # or a motion: "talk", "nod"
    print(result.video, result.contact_sheet, result.frames, result.lost_frames)

Three layers:
- `renderer.Renderer`: the tensor stages: `embed` (FF), `finetune` (FT), `render` (landmark images -> frames,
  batched, no grad, through the avatar's specialised renderer), `paste_back` / `paste_mask`,
  `model_fingerprint`. No file I/O: evaluation and the live stage need nothing more. The pipeline is a
  Renderer (it inherits these stages) that adds the files;
- `live.LiveStage` (`pipe.live(avatar)`): one frame of driver landmarks in, one rendered frame out (crop,
  optional One Euro smoothing, adaptation against a reference frame, render);
- here, the orchestration from files: `detect_and_crop` (largest face, 68 landmarks, VoxCeleb-style crop),
  `create_avatar` (detect and crop photos or a video, then FF or FT), `load_driver` / `driver_landmarks`
  (`driver.py`, adapted to the avatar by `landmarks/adaptation.py`), `animate` (a driver file in, an mp4 out:
  a loop over the live stage, optionally pasted back into the source photo), `write_video` (H.264 + audio +
  provenance labels, `media.py`) and contact sheets.

Errors caused by the input (no face, unreadable file, T larger than the frames available, an avatar made
with another model, ...) are `errors.InputError`s (`INPUT_ERRORS`), ValueErrors with a message that says what to do.
Outputs are written under a temporary name and renamed when complete: a failure leaves nothing at `out_path`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from . import limits, media
from .avatar import Avatar
from .model_dir import load_model_dir
from .config import Config
from .data.crop import CropTransform, StreamCrop
from .data.faces import FaceCrop, FaceNotFoundError, load_photo, min_face_size, prepare_photo
from .data.video import (even_indices, is_frames_folder, is_video_file, probe, read_frames, read_image,
                         to_rgb_uint8)
from .driver import DriverError, DriverSequence, check_reference_frame, load_driver
from .errors import InputError
from .identity import check_same_person
from .images import to_tensor
from .landmarks.adaptation import adapt_landmarks
from .landmarks.iris import complete_gaze, neutral_gaze, uses_gaze
from .landmarks.masks import neutral_frame
from .landmarks.raster import rasterize, rasterize_tensor
from .live import REFERENCE_SECONDS, LiveStage, require_landmarks
from .metrics.flicker import BackgroundFlicker, paste_back_flicker
from .paths import output_file
from .renderer import PipelineError, Renderer

log = logging.getLogger(__name__)

__all__ = ["TalkingHeadPipeline", "Avatar", "AnimationResult", "DriverSequence", "LiveStage", "StreamCrop",
           "PipelineError", "INPUT_ERRORS", "sample_model_dir", "shipped_model_dir", "SHIPPED_MODELS"]

PASTE_MAX_SIDE = 1920  # paste-back frames larger than this (long side, px) are downscaled first

INPUT_ERRORS = (InputError,)  # every input error of the library (PipelineError, DriverError, FaceNotFoundError, ...)


@dataclass
class AnimationResult:
    """What `animate` wrote."""

    video: Path
    contact_sheet: Path | None
    frames: int
    lost_frames: int  # driver frames without a face (held the last good landmarks)
    fps: float
    warnings: list[str] = field(default_factory=list)
    held_frames: int = 0  # driver frames with a face too poorly seen to trust (profile, occluded): held too
    background_change: float | None = None  # paste-back: mean change per frame outside the person, 1/255 (flicker.py)


@dataclass
class _Sources:
    """The first source's full image and where it came from (thumbnail, paste-back)."""

    image: np.ndarray
    path: str | None
    names: list[str]
    frames: list[np.ndarray] | None = None  # every crop's full image, kept for the TPS renderer only


def _crop_iris(crops: Sequence[FaceCrop]) -> np.ndarray | None:
    """(T,2,2) the crops' iris centres (NaN: not seen), or None when none was located (data.iris = "none")."""
    if all(c.iris is None for c in crops):
        return None
    return np.stack([c.iris if c.iris is not None else np.full((2, 2), np.nan, np.float32) for c in crops])


def photo_pixels(crops: Sequence[FaceCrop], frames: Sequence[np.ndarray], size: int
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The TPS renderer's sources: each crop's box cut from its full image at `size` px (T,size,size,3), where
    that box lies inside the image (T,size,size) uint8 255 / 0 (past the edge nothing is replicated: the
    renderer generates it), and a warning when the photo holds fewer pixels than `size` across the box."""
    images, valid, warnings = [], [], []
    for crop, frame in zip(crops, frames):
        tf = crop.transform.resized(size)
        images.append(tf.crop(frame, pad="black"))
        valid.append(tf.crop(np.full(frame.shape[:2], 255, np.uint8), pad="black"))
    smallest = min(c.transform.side for c in crops)
    if smallest < size:
        warnings.append(f"the photo holds {smallest} px across the head crop: the {size} px avatar is upsampled "
                        f"{size / smallest:.1f}x (a closer or larger photo, or a smaller --size, keeps it sharp)")
    return np.stack(images), (np.stack(valid) >= 128).astype(np.uint8) * 255, warnings


SHIPPED_MODELS = {"sample": "sample_model", "tps": "tps_model"}  # --model NAME -> talking_heads/assets/<folder>


def sample_model_dir() -> Path:
    """The model directory shipped inside the package (talking_heads/assets/sample_model)."""
    return shipped_model_dir("sample")


def shipped_model_dir(name: str | None = None) -> Path:
    """A model directory shipped inside the package by its name (SHIPPED_MODELS; None: "sample")."""
    folder = SHIPPED_MODELS[name or "sample"]
    return Path(str(resources.files("talking_heads").joinpath("assets", folder)))


class TalkingHeadPipeline(Renderer):
    """Few-shot avatars and puppeteering with one meta-learned model, from files (module docstring): the
    Renderer's tensor stages plus everything that reads or writes files."""

    def __init__(self, cfg: Config, networks, *, device: str | torch.device = "cpu", meta: dict | None = None,
                 model_dir: str | os.PathLike | None = None):
        super().__init__(cfg, networks, device=device)
        self.meta = dict(meta or {})
        self.model_dir = Path(model_dir) if model_dir is not None else None

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike | None = None,
                        device: str | torch.device = "cpu") -> "TalkingHeadPipeline":
        """Load a model directory (`talking-heads train` output); None: the shipped sample model; a name of
        SHIPPED_MODELS ("sample", "tps") that is not a folder here: that shipped model."""
        if model_dir is None or (str(model_dir) in SHIPPED_MODELS and not Path(model_dir).exists()):
            model_dir = sample_model_dir() if model_dir is None else shipped_model_dir(str(model_dir))
            if not (model_dir / "config.json").is_file():
                raise PipelineError("no model directory given and this installation ships no sample model "
                                    f"({model_dir}); pass the model directory of a `talking-heads train` run "
                                    "(--model DIR)")
        cfg, meta, networks = load_model_dir(model_dir, device)
        return cls(cfg, networks, device=device, meta=meta, model_dir=model_dir)

    # --- stage: detect and crop -----------------------------------------------------------------------
    def detect_and_crop(self, sources, *, frames: int | None = None) -> list[FaceCrop]:
        """Head crops (model resolution) with landmarks of photos (paths, arrays) or of T frames spread over
        one video / folder of frames. frames: T (photos: pick T of them; video: default inference.video_frames)."""
        return self._crop_sources(sources, frames)[0]

    def _crop_sources(self, sources, frames: int | None) -> tuple[list[FaceCrop], _Sources]:
        items = [sources] if isinstance(sources, (str, os.PathLike, np.ndarray)) or hasattr(sources, "mode") \
            else list(sources)
        if not items:
            raise PipelineError("no source given: pass one or more photos, or one video")
        frames = limits.check_shots(frames, "T")
        videos = [s for s in items if isinstance(s, (str, os.PathLike)) and (is_video_file(s) or is_frames_folder(s))]
        if videos:
            if len(items) > 1:
                raise PipelineError("give either photos or one video (or folder of frames) as the source, not both")
            return self._crop_video(Path(videos[0]), frames or self.cfg.inference.video_frames)
        return self._crop_photos(items, frames)

    def _crop_photos(self, photos: list, frames: int | None) -> tuple[list[FaceCrop], _Sources]:
        t = frames or len(photos)
        if t > len(photos):
            raise PipelineError(f"T={t} frames asked for but only {len(photos)} photo(s) given: give more photos, "
                                f"a video, or T <= {len(photos)}")
        chosen = [photos[i] for i in even_indices(len(photos), t)]
        crops = [prepare_photo(p, self.image_size, self.cfg.data) for p in chosen]
        first = chosen[0]
        is_path = isinstance(first, (str, os.PathLike))
        image = read_image(first) if is_path else to_rgb_uint8(first)
        names = [Path(p).name if isinstance(p, (str, os.PathLike)) else "<array>" for p in chosen]
        frames = [image] + [load_photo(p)[0] for p in chosen[1:]] if self.needs_points else None
        return crops, _Sources(image, str(Path(first).resolve()) if is_path else None, names, frames)

    def _crop_video(self, path: Path, t: int) -> tuple[list[FaceCrop], _Sources]:
        n = probe(path).num_frames
        if n and t > n:
            raise PipelineError(f"{path.name} has {n} frames: cannot pick T={t} of them (use T <= {n})")
        crops, first, skipped, frames = [], None, [], []
        for i, frame in read_frames(path, even_indices(n, t) if n else None):
            try:
                crops.append(prepare_photo(frame, self.image_size, self.cfg.data))
            except FaceNotFoundError:
                skipped.append(i)
                continue
            first = frame if first is None else first
            if self.needs_points:
                frames.append(frame)
            if len(crops) == t:
                break
        if not crops:
            raise PipelineError(f"no usable face in the {t} frames picked from {path.name}. Use a video where one "
                                f"face is clearly visible and at least {min_face_size(self.image_size)} px across.")
        if skipped:
            msg = f"{len(skipped)} of the {t} frames picked from {path.name} had no usable face and were skipped"
            log.debug(msg)  # in the crop's warnings: reported once by the caller
            crops[0].warnings.append(msg)
        return crops, _Sources(first, None, [path.name], frames if self.needs_points else None)

    def crops_to_tensors(self, crops: Sequence[FaceCrop]) -> tuple[Tensor, Tensor]:
        """x (T,3,H,W) frames and y (T,3,H,W) landmark images in [-1,1] of `detect_and_crop`'s crops."""
        x = torch.stack([to_tensor(c.image) for c in crops])
        points = np.stack([c.landmarks for c in crops])
        if self.cfg.data.pupils:
            points = complete_gaze(points, _crop_iris(crops))
        y = rasterize_tensor(points, self.image_size, self.cfg.data.line_thickness, self.cfg.data.pupils)
        return x, y

    def create_avatar(self, sources, *, frames: int | None = None, finetune: bool = False, epochs: int | None = None,
                      progress: bool = True) -> Avatar:
        """An avatar from photos or a video (module docstring): detect and crop, then FF or FT. Sources that do
        not look like one person are allowed, with a warning (`identity.check_same_person`)."""
        crops, src = self._crop_sources(sources, frames)
        x, y = self.crops_to_tensors(crops)
        photo, warnings = None, []
        if src.frames is not None:  # the TPS renderer: the photos themselves at the output size
            size = self.render_size_for(min(c.transform.side for c in crops))
            *photo, warnings = photo_pixels(crops, src.frames, size)
        avatar = self.create_avatar_from_tensors(x, y, landmarks=np.stack([c.landmarks for c in crops]),
                                                 iris=_crop_iris(crops),
                                                 finetune=finetune, epochs=epochs, progress=progress,
                                                 photo=None if photo is None else tuple(photo))
        avatar.warnings = list(avatar.warnings) + warnings
        first = crops[0].transform
        avatar.thumbnail = first.resized(self.cfg.inference.thumbnail_size).crop(src.image)
        avatar.transform, avatar.background = first, src.image
        avatar.source_path, avatar.sources = src.path, src.names
        avatar.warnings = (list(avatar.warnings) + [w for c in crops for w in c.warnings]
                           + check_same_person(crops, src.names, self.cfg.eval))
        return avatar

    # --- driving --------------------------------------------------------------------------------------
    def load_driver(self, driver, *, smooth: bool = False, duration: float | None = None) -> DriverSequence:
        """The driver's own landmarks (no adaptation) in a crop at the model's resolution (`driver.py`)."""
        if isinstance(driver, DriverSequence):
            return driver
        return load_driver(driver, size=self.image_size, data_cfg=self.cfg.data, inference_cfg=self.cfg.inference,
                           smooth=smooth, duration=duration, gaze=uses_gaze(self.cfg))

    def driver_landmarks(self, driver, *, avatar: Avatar | None = None, adapt: bool = True, reference_frame: int = 0,
                         smooth: bool = False, duration: float | None = None) -> DriverSequence:
        """Landmarks (F,68,2) of every output frame in the avatar's crop (`.points`), with fps, audio source and
        lost-frame count. adapt (with an avatar): the driver's motion relative to `reference_frame` applied to
        the avatar's own face; otherwise the driver's landmarks placed by the crop rule (the paper)."""
        seq = self.load_driver(driver, smooth=smooth, duration=duration)
        if avatar is None or not adapt:
            return dataclasses.replace(seq, points=seq.driver_points.copy(), adapted=False)
        require_landmarks(avatar)
        self.check_reference_frame(seq, reference_frame)
        points = adapt_landmarks(seq.driver_points, avatar.face, reference_frame)
        return dataclasses.replace(seq, points=points, adapted=True)

    def speech_driver(self, audio, *, head=None, smooth: bool = False, speech_model=None) -> DriverSequence:
        """A driver whose mouth and chin follow `audio` (a path to any file with sound, or a `speech.audio.Audio`)
        and whose head and blinks follow `head` (None: the built-in `idle` motion; else any driver `load_driver`
        takes); `speech/drive.py`. speech_model: a speech model folder (None: the shipped one)."""
        from .speech.audio import Audio, load_audio
        from .speech.drive import speech_driver

        sound = audio if isinstance(audio, Audio) else load_audio(audio, what="audio")
        head_seq = self.load_driver("idle" if head is None else head, smooth=smooth,
                                    duration=sound.seconds if head is None else None)
        return speech_driver(sound, self.speech_model(speech_model), head_seq)

    def speech_model(self, path=None):
        """The speech-to-motion model (`speech.model_io`), loaded once per folder."""
        from .speech.model_io import load_speech_model

        cache = self.__dict__.setdefault("_speech_models", {})
        key = str(path) if path is not None else ""
        if key not in cache:
            cache[key] = load_speech_model(path)
        return cache[key]

    @staticmethod
    def check_reference_frame(seq: DriverSequence, reference_frame: int) -> None:
        """`driver.check_reference_frame`, raised as the pipeline's own error."""
        try:
            check_reference_frame(seq, reference_frame)
        except DriverError as err:
            raise PipelineError(str(err)) from None

    def live(self, avatar: Avatar, *, adapt: bool = True, reference: np.ndarray | None = None, smooth: bool = False,
             fps: float = 25.0, crop: CropTransform | None = None, eye_contact: bool = False,
             gaze_reference: np.ndarray | None = None, reference_seconds: float = REFERENCE_SECONDS) -> LiveStage:
        """The per-frame live stage (`live.LiveStage`) on this model: driver landmarks in, rendered frames out,
        one at a time. eye_contact: the driver's gaze turned towards the camera; gaze_reference: the driver's
        neutral gaze (gaze models); reference_seconds: without a reference, how long the most neutral frame is
        sought (0: the first face frame)."""
        return LiveStage(self, avatar, adapt=adapt, reference=reference, smooth=smooth, fps=fps, crop=crop,
                         eye_contact=eye_contact, gaze_reference=gaze_reference, reference_seconds=reference_seconds)

    # --- stage: paste back ----------------------------------------------------------------------------
    def paste_target(self, avatar: Avatar) -> tuple[np.ndarray, CropTransform]:
        """The first source's full frame and its crop transform, downscaled to PASTE_MAX_SIDE at most."""
        if avatar.transform is None:
            raise PipelineError("paste-back needs the avatar's source photo and crop; this avatar has none "
                                "(made from tensors)")
        frame = avatar.background if avatar.background is not None else self._reload_source(avatar)
        tf = avatar.transform.resized(self.frame_size(avatar))
        scale = PASTE_MAX_SIDE / max(frame.shape[:2])
        if scale < 1:
            frame = media.resize(frame, int(round(frame.shape[0] * scale)), int(round(frame.shape[1] * scale)))
            tf = CropTransform(int(round(tf.x0 * scale)), int(round(tf.y0 * scale)),
                               max(2, int(round(tf.side * scale))), tf.size, frame.shape[1], frame.shape[0])
        return frame, tf

    def _reload_source(self, avatar: Avatar) -> np.ndarray:
        path = avatar.source_path
        tf = avatar.transform
        if not path:
            raise PipelineError("paste-back needs the avatar's source image, and this avatar was made from a video "
                                "or an in-memory image: animate with --source instead of --avatar")
        if not Path(path).is_file():
            raise PipelineError(f"paste-back needs the avatar's source photo, which is no longer at {path or '?'}: "
                                "animate with --source PHOTO instead of --avatar, or put the photo back")
        image = read_image(path)
        if (image.shape[1], image.shape[0]) != (tf.frame_width, tf.frame_height):
            raise PipelineError(f"{path} is {image.shape[1]}x{image.shape[0]} px but the avatar was made from a "
                                f"{tf.frame_width}x{tf.frame_height} image: the photo changed")
        return image

    # --- animate: a driver file in, an mp4 out ----------------------------------------------------------
    def animate(self, avatar: Avatar, driver=None, out_path: str | os.PathLike | None = None, *, adapt: bool = True,
                reference_frame: int | None = None, smooth: bool = False, side_by_side: bool = False,
                paste_back: bool = False, paste_mask: bool = True, contact_sheet: bool = True, progress: bool = True,
                duration: float | None = None, eye_contact: bool = False, audio=None) -> AnimationResult:
        """Drive `avatar` with a video, frames folder, .npy landmarks or motion name; write `out_path` (.mp4)
        and, with `contact_sheet`, `<out>.contact.png`. duration: seconds of a built-in motion. audio: speech
        (a file with sound) that moves the mouth, `driver` (default: the `idle` motion) moving the head and the
        video carrying that sound (`speech_driver`). A loop over
        the live stage: the driver's landmarks (in its clip-stable crop, `driver.py`) one frame at a time.
        reference_frame: the driver frame adaptation measures motion from (None: the most neutral one, mouth
        closed, eyes open, frontal: `landmarks.masks.neutral_frame`). paste_back with paste_mask: blended
        through the head mask (`paste_mask`), so only the person moves; without: a feathered square.
        eye_contact: a model that renders gaze looks at the camera where the driver looked near it (`live.py`)."""
        if out_path is None:
            raise PipelineError("animate needs out_path, the .mp4 to write")
        if driver is None and audio is None:
            driver = "talk"
        out_path = self._animation_path(avatar, driver, out_path, getattr(audio, "source", audio))
        if audio is not None and not isinstance(driver, DriverSequence):
            seq = self.speech_driver(audio, head=driver, smooth=smooth)
        else:
            seq = self.load_driver(driver, smooth=smooth, duration=duration)
        reference = self._reference_points(avatar, seq, reference_frame) if adapt else None
        live = self.live(avatar, adapt=adapt, reference=reference, fps=seq.fps,
                         crop=CropTransform(0, 0, seq.size, self.image_size, seq.size, seq.size), eye_contact=eye_contact,
                         gaze_reference=neutral_gaze(seq.driver_points, seq.iris))
        target = self.paste_target(avatar) if paste_back else None
        flicker = paste_back_flicker(avatar.face, *target, self.image_size) if target is not None else None
        compose = _Composer(self, avatar, target, paste_mask, side_by_side,
                            picks=set(even_indices(len(seq), self.cfg.inference.contact_sheet_frames)), flicker=flicker)
        panels = seq.panels(self.frame_size(avatar))
        frames = (compose(i, points, crop, next(panels, None))
                  for i, points, crop in self._rendered(seq, live, progress))
        count = self.write_video(frames, out_path, seq.fps, audio=seq.audio)
        sheet_path = None
        if contact_sheet:
            sheet_path = self.write_contact_sheet(avatar, compose.sheet, out_path.with_suffix(".contact.png"))
        return AnimationResult(out_path, sheet_path, count, seq.lost_frames, seq.fps, list(seq.warnings),
                               seq.held_frames, flicker.value if flicker is not None else None)

    @staticmethod
    def _animation_path(avatar: Avatar, driver, out_path: str | os.PathLike, audio=None) -> Path:
        """The checked output path of `animate` (`paths.output_file`: an .mp4 that overwrites no input)."""
        inputs = [g for g in (getattr(driver, "source", driver), avatar.source_path, audio)  # a path, or a loaded driver's
                  if isinstance(g, (str, os.PathLike))]
        try:
            return output_file(out_path, "output", suffixes=(".mp4",), inputs=inputs)
        except InputError as err:
            raise PipelineError(str(err)) from None

    def _reference_points(self, avatar: Avatar, seq: DriverSequence, reference_frame: int | None) -> np.ndarray:
        """The driver's landmarks (68,2) that adaptation measures motion from: frame `reference_frame`, or the
        most neutral one."""
        require_landmarks(avatar)
        if reference_frame is None:
            reference_frame = neutral_frame(seq.driver_points)
        self.check_reference_frame(seq, reference_frame)
        return seq.driver_points[reference_frame]

    def _rendered(self, seq: DriverSequence, live: LiveStage, progress: bool
                  ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(frame index, landmarks rendered (68,2) in crop px, rendered crop (output_size px)) for every driver
        frame: the live stage's landmarks frame by frame, rendered in batches (offline: throughput)."""
        for batch, bar in self.frame_batches(len(seq), progress):
            chunk = [live.landmarks(seq.driver_points_with_iris(i)).copy() for i in batch]
            for i, (points, crop) in enumerate(zip(chunk, live.render_batch(chunk)), batch.start):
                yield i, points, crop
                bar.update(1)

    # --- stage: write video ---------------------------------------------------------------------------
    def write_video(self, frames: Iterator[np.ndarray], out_path: str | os.PathLike, fps: float,
                    audio: str | os.PathLike | None = None) -> int:
        """Encode RGB frames to a labelled H.264 mp4 (with `audio`'s sound), atomically; returns the count."""
        with media.VideoWriter(out_path, fps, audio=audio) as writer:
            for frame in frames:
                writer.write(frame)
        return writer.frames

    def write_contact_sheet(self, avatar: Avatar, columns: list[tuple[np.ndarray, ...]], path: Path) -> Path:
        """PNG, one column per picked frame: driver, landmarks rendered (adapted), result; the source thumbnail
        heads the first column. Labelled synthetic like every output."""
        tile = max(128, self.frame_size(avatar) // 2)
        blank = np.full((tile, tile, 3), 24, np.uint8)
        source = avatar.thumbnail if avatar.thumbnail is not None else blank
        columns = [(source, blank, blank)] + list(columns)
        return media.write_png(path, media.contact_sheet([list(row) for row in zip(*columns)], tile))


@dataclass
class _Composer:
    """How `animate` turns one rendered crop into a video frame: pasted back into the source photo (`target`,
    through the head masks when `masked`, else a feathered square), beside the driver's panel when
    `side_by_side`; on the way it collects the contact sheet's columns (frames in `picks`) and feeds the
    background `flicker` measure."""

    renderer: Renderer
    avatar: Avatar
    target: tuple[np.ndarray, CropTransform] | None
    masked: bool
    side_by_side: bool
    picks: set[int]
    flicker: BackgroundFlicker | None = None
    sheet: list[tuple[np.ndarray, ...]] = field(default_factory=list)  # (driver, landmarks, result) per pick

    def __call__(self, i: int, points: np.ndarray, crop: np.ndarray, panel: np.ndarray | None) -> np.ndarray:
        """Frame i's video frame from its landmarks (68,2) crop px, its rendered crop and the driver's panel."""
        if panel is None:
            panel = np.zeros_like(crop)
        if i in self.picks:
            self.sheet.append((panel, rasterize(points * (crop.shape[0] / self.renderer.image_size),
                                                crop.shape[0], pupils=self.renderer.cfg.data.pupils), crop))
        frame = crop
        if self.target is not None:
            mask = self.renderer.paste_mask(self.avatar, points[:68]) if self.masked else None
            frame = self.renderer.paste_back(crop, self.target, mask)
        if self.flicker is not None:
            self.flicker.update(frame)
        return media.side_by_side([panel, frame], height=frame.shape[0]) if self.side_by_side else frame

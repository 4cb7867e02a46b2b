"""The inference pipeline: few-shot avatars and puppeteering (paper.md section 1 stages 2-3, sections 6, 8).

One object, built from a model directory, used by the CLI, the evaluation, the demo and any later server
(architecture.md principle 7). Python API:

    from talking_heads.pipeline import TalkingHeadPipeline, Avatar

    pipe = TalkingHeadPipeline.from_pretrained()              # shipped sample model; or ("runs/x/model", "cuda")
    avatar = pipe.create_avatar(["me.jpg"])                   # FF: e_new = mean E, psi' = P e_new
    avatar = pipe.create_avatar("me.mp4", frames=8, finetune=True, epochs=40)   # FT (paper section 6)
    avatar.save("avatars/me")                                 # self-describing directory (stage "avatar")
    avatar = Avatar.load("avatars/me", pipe)
    result = pipe.animate(avatar, "driver.mp4", "out.mp4", side_by_side=True)  # or a motion: "talk", "nod"
    print(result.video, result.contact_sheet, result.frames, result.lost_frames)

Named stages (methods): `detect_and_crop` (largest face, 68 landmarks, VoxCeleb-style crop), `embed` (FF),
`finetune` (FT, `train.finetune.finetune`: the training issue's step functions, no second loop), `render`
(landmark images -> frames, batched, no grad), `paste_back` (into the source photo's full frame),
`write_video` (H.264 + audio + provenance labels, `media.py`). `driver_landmarks` loads a driver
(`driver.py`) and adapts its landmarks to the avatar (`landmarks/adaptation.py`).

The live stage, `pipe.live(avatar) -> LiveStage` with `.step(points) -> frame`, does puppeteering one frame at a
time: crop (a box fixed by the first frame with a face, `StreamCrop`), optional One Euro smoothing,
adaptation against a reference frame, render. `animate` is a loop over it (a driver file's landmarks in, an
mp4 out); the telepresence receiver feeds it decoded landmarks as they arrive, so both share one code path.

Errors caused by the input (no face, unreadable file, T larger than the frames available, an avatar made
with another model, ...) are the `INPUT_ERRORS` classes, all ValueErrors with a message that says what to do.
Outputs are written under a temporary name and renamed when complete: a failure leaves nothing at `out_path`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from . import media
from .avatar import Avatar
from .checkpoint import CheckpointError, load_model_dir
from .config import Config
from .data.crop import CropTransform
from .data.faces import FaceCrop, FaceNotFoundError, min_face_size, prepare_photo
from .data.video import VideoError, even_indices, is_frames_folder, is_video_file, probe, read_frames, read_image
from .driver import DriverError, DriverSequence, load_driver
from .inference import RendererCache
from .landmarks.adaptation import adapt_landmarks
from .landmarks.raster import rasterize, rasterize_tensor, to_tensor
from .errors import InputError

log = logging.getLogger(__name__)

__all__ = ["TalkingHeadPipeline", "Avatar", "AnimationResult", "DriverSequence", "LiveStage", "StreamCrop",
           "PipelineError", "INPUT_ERRORS", "sample_model_dir"]

PASTE_MAX_SIDE = 1920  # paste-back frames larger than this (long side, px) are downscaled first


class PipelineError(InputError):
    """A request the pipeline cannot satisfy with the given input; the message says what to do."""


INPUT_ERRORS = (PipelineError, DriverError, FaceNotFoundError, VideoError, CheckpointError)


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
    background_change: float | None = None  # paste-back: mean change per frame outside the person, in 1/255 (metrics/flicker.py)


@dataclass
class _Sources:
    """The first source's full image and where it came from (thumbnail, paste-back)."""

    image: np.ndarray
    path: str | None
    names: list[str]


def sample_model_dir() -> Path:
    """The model directory shipped inside the package (talking_heads/assets/sample_model)."""
    from importlib import resources

    return Path(str(resources.files("talking_heads").joinpath("assets", "sample_model")))


class TalkingHeadPipeline:
    """Few-shot avatars and puppeteering with one meta-learned model (module docstring)."""

    def __init__(self, cfg: Config, networks, *, device: str | torch.device = "cpu", meta: dict | None = None,
                 model_dir: str | os.PathLike | None = None):
        self.cfg = cfg
        self.networks = networks
        self.device = torch.device(device)
        self.meta = dict(meta or {})
        self.model_dir = Path(model_dir) if model_dir is not None else None
        for name in ("embedder", "generator", "discriminator"):
            getattr(networks, name).to(self.device).eval()  # eval: spectral-norm buffers never change
        self._fingerprint: str | None = None
        self._content_loss = None
        self._renderers = RendererCache()  # the avatar-specialised renderers (`renderer`)
        self.content_loss_warnings: list[str] = []

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike | None = None,
                        device: str | torch.device = "cpu") -> "TalkingHeadPipeline":
        """Load a model directory (`talking-heads train` output); None: the shipped sample model."""
        if model_dir is None:
            model_dir = sample_model_dir()
            if not (model_dir / "config.json").is_file():
                raise PipelineError("no model directory given and this installation ships no sample model "
                                    f"({model_dir}); pass the model directory of a `talking-heads train` run "
                                    "(--model DIR)")
        cfg, meta, networks = load_model_dir(model_dir, device)
        return cls(cfg, networks, device=device, meta=meta, model_dir=model_dir)

    def set_config(self, cfg: Config) -> None:
        """Use another Config with the same networks, e.g. another FT recipe (finetune.*, loss.*); the
        architecture (`model`) must stay the model's own. Cached state built from the old one is dropped."""
        if cfg.model != self.cfg.model:
            raise PipelineError("a config with another architecture (model.*) does not fit this model's networks")
        self.cfg, self._content_loss = cfg, None

    @property
    def image_size(self) -> int:
        return int(self.cfg.model.image_size)

    @property
    def output_size(self) -> int:
        """Side of rendered frames in videos: the model's resolution, at least `inference.output_size`."""
        return max(self.image_size, int(self.cfg.inference.output_size))

    @property
    def model_fingerprint(self) -> str:
        """Hash of the meta-learned E and G weights: what an FF avatar's psi' depends on."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for name in ("embedder", "generator"):
                for key, value in sorted(getattr(self.networks, name).state_dict().items()):
                    h.update(key.encode())
                    h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

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
        if frames is not None and frames < 1:
            raise PipelineError(f"the number of frames T must be at least 1, got {frames}")
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
        image = read_image(first) if is_path else _rgb(first)
        names = [Path(p).name if isinstance(p, (str, os.PathLike)) else "<array>" for p in chosen]
        return crops, _Sources(image, str(Path(first).resolve()) if is_path else None, names)

    def _crop_video(self, path: Path, t: int) -> tuple[list[FaceCrop], _Sources]:
        n = probe(path).num_frames
        if n and t > n:
            raise PipelineError(f"{path.name} has {n} frames: cannot pick T={t} of them (use T <= {n})")
        crops, first, skipped = [], None, []
        for i, frame in read_frames(path, even_indices(n, t) if n else None):
            try:
                crops.append(prepare_photo(frame, self.image_size, self.cfg.data))
            except FaceNotFoundError:
                skipped.append(i)
                continue
            first = frame if first is None else first
            if len(crops) == t:
                break
        if not crops:
            raise PipelineError(f"no usable face in the {t} frames picked from {path.name}. Use a video where one "
                                f"face is clearly visible and at least {min_face_size(self.image_size)} px across.")
        if skipped:
            msg = f"{len(skipped)} of the {t} frames picked from {path.name} had no usable face and were skipped"
            log.debug(msg)  # in the crop's warnings: reported once by the caller
            crops[0].warnings.append(msg)
        return crops, _Sources(first, None, [path.name])

    def crops_to_tensors(self, crops: Sequence[FaceCrop]) -> tuple[Tensor, Tensor]:
        """x (T,3,H,W) frames and y (T,3,H,W) landmark images in [-1,1] of `detect_and_crop`'s crops."""
        x = torch.stack([to_tensor(c.image) for c in crops])
        y = rasterize_tensor(np.stack([c.landmarks for c in crops]), self.image_size, self.cfg.data.line_thickness)
        return x, y

    # --- stages: embed (FF) and fine-tune (FT) --------------------------------------------------------
    def embed(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """FF: (e_new (1,N) = mean_t E(x_t, y_t), psi' (1,A) = P e_new), E and P untouched."""
        from .train.finetune import embed_frames, initial_psi

        e_new = embed_frames(self.networks.embedder, x.to(self.device), y.to(self.device),
                             chunk=max(1, self.cfg.inference.batch_size))
        return e_new, initial_psi(self.networks.generator, e_new)

    def finetune(self, x: Tensor, y: Tensor, *, epochs: int | None = None, progress: bool = True,
                 landmarks: np.ndarray | None = None):
        """FT (paper section 6) on T frames: `train.finetune.finetune` -> FinetuneResult (the pipeline's
        networks are not modified; E stays frozen). `landmarks` (T,68,2) feed the face terms of the content
        loss when the model uses them (`loss.face_network`)."""
        from .train.finetune import finetune

        from . import limits

        if epochs is not None and epochs < 0:
            raise PipelineError(f"epochs must be >= 0, got {epochs}")
        if epochs is not None:
            limits.check("epochs", epochs, "fine-tuning epochs")
        return finetune(self.networks, x.to(self.device), y.to(self.device), self.cfg,
                        content_loss=self.content_loss(), epochs=epochs, seed=self.cfg.train.seed, progress=progress,
                        points=None if landmarks is None else torch.as_tensor(np.asarray(landmarks, np.float32)))

    def content_loss(self):
        """L_CNT for fine-tuning, with the model's VGG files when they exist here (else the offline loss). A
        fallback is never silent: `content_loss_warnings` says what is missing (FT avatars carry it in their
        warnings, which the CLI prints, and record the loss they were fine-tuned with)."""
        if self._content_loss is None:
            from .losses import ContentLoss

            loss = self.cfg.loss
            paths = {k: getattr(loss, k) for k in ("vgg19_weights", "vggface_weights", "face_network_weights")}
            missing = {k: p for k, p in paths.items() if p and not Path(p).is_file()}
            self.content_loss_warnings = [
                f"the model was trained with loss.{k}={p}, which is not on this machine: fine-tuning "
                + ("uses the copy inside face-recognition-models" if k == "face_network_weights" else
                   "runs WITHOUT it (a different content loss than the model's; give the file at that path, or "
                   f"--set loss.{k}=PATH, for the model's own loss)") for k, p in missing.items()]
            for msg in self.content_loss_warnings:
                log.debug("content loss: %s", msg)  # in the FT avatar's warnings
            cfg = dataclasses.replace(self.cfg, loss=dataclasses.replace(loss, **{k: "" for k in missing}))
            self._content_loss = ContentLoss(cfg).to(self.device)
        return self._content_loss

    def create_avatar(self, sources, *, frames: int | None = None, finetune: bool = False, epochs: int | None = None,
                      progress: bool = True) -> Avatar:
        """An avatar from photos or a video (module docstring): detect and crop, then FF or FT."""
        crops, src = self._crop_sources(sources, frames)
        x, y = self.crops_to_tensors(crops)
        avatar = self.create_avatar_from_tensors(x, y, landmarks=np.stack([c.landmarks for c in crops]),
                                                 finetune=finetune, epochs=epochs, progress=progress)
        first = crops[0].transform
        avatar.thumbnail = first.resized(self.cfg.inference.thumbnail_size).crop(src.image)
        avatar.transform, avatar.background = first, src.image
        avatar.source_path, avatar.sources = src.path, src.names
        avatar.warnings = (list(avatar.warnings) + [w for c in crops for w in c.warnings]
                           + self.check_same_person(crops, src.names))
        return avatar

    def check_same_person(self, crops: Sequence[FaceCrop], names: Sequence[str]) -> list[str]:
        """Warnings for sources that do not look like the first one's person: dlib face descriptors of the
        crops (`identity.py`) farther apart than dlib's same-person distance 0.6. An avatar of two people is
        allowed (it may be wanted), but never silently."""
        if len(crops) < 2:
            return []
        from .identity import SAME_PERSON
        from .metrics.csim import face_descriptor

        net = face_descriptor(self.cfg.eval, "cpu")
        if isinstance(net, str):
            return [f"could not check that the sources show one person ({net})"]
        desc = net.describe_all(np.stack([c.image for c in crops]),
                                np.stack([c.landmarks for c in crops]).astype(np.float64))
        dist = np.linalg.norm(desc - desc[0], axis=1)
        names = list(names) + [f"source {i + 1}" for i in range(len(names), len(crops))]
        out = [f"{names[i]} does not look like the same person as {names[0]} (face descriptor distance "
               f"{d:.2f} > {SAME_PERSON}): the avatar mixes their faces" for i, d in enumerate(dist)
               if i and np.isfinite(d) and d > SAME_PERSON]
        return out  # reported with the avatar's other warnings (avatar.warnings; the CLI prints them)

    def create_avatar_from_tensors(self, x: Tensor, y: Tensor, *, landmarks: np.ndarray | None = None,
                                   finetune: bool = False, epochs: int | None = None, progress: bool = True) -> Avatar:
        """An avatar from T preprocessed frames x and landmark images y, (T,3,H,W) in [-1,1].
        landmarks (T,68,2) crop px: needed for landmark adaptation when animating."""
        s = self.image_size
        if x.dim() != 4 or x.shape != y.shape or tuple(x.shape[1:]) != (3, s, s) or len(x) < 1:
            raise PipelineError(f"x and y must both be (T,3,{s},{s}) for this model; got {tuple(x.shape)} and "
                                f"{tuple(y.shape)}")
        if landmarks is not None and np.asarray(landmarks).shape != (len(x), 68, 2):
            raise PipelineError(f"landmarks must be ({len(x)},68,2), got {np.asarray(landmarks).shape}")
        thumb = _to_uint8(x[:1])[0]
        needs_sources = getattr(self.networks.generator, "needs_sources", False)
        if needs_sources and landmarks is None:
            raise PipelineError("this model's generator warps the source frames and needs their landmarks: pass "
                                "landmarks= (T,68,2)")
        common = dict(cfg=self.cfg, landmarks=None if landmarks is None else np.asarray(landmarks, np.float32),
                      thumbnail=media.resize(thumb, self.cfg.inference.thumbnail_size),
                      model_fingerprint=self.model_fingerprint,
                      source_images=_to_uint8(x) if needs_sources else None)
        if finetune:
            if landmarks is None and self.content_loss().face is not None:
                raise PipelineError("this model fine-tunes with face terms that need the frames' landmarks: "
                                    "pass landmarks= (T,68,2)")
            result = self.finetune(x, y, epochs=epochs, progress=progress, landmarks=landmarks)
            return Avatar(kind="ft", psi=result.psi, e_new=result.e_new, generator=result.generator.eval(),
                          discriminator=result.discriminator.eval(), history=result.history,
                          epochs=self.cfg.finetune.epochs if epochs is None else epochs,
                          content_loss=self.content_loss().mode, warnings=list(self.content_loss_warnings),
                          **common)
        e_new, psi = self.embed(x, y)
        return Avatar(kind="ff", psi=psi, e_new=e_new, **common)

    # --- stage: render --------------------------------------------------------------------------------
    @torch.no_grad()
    def render(self, avatar: Avatar, y: Tensor, batch_size: int = 8) -> Tensor:
        """Frames x_hat (B,3,H,W) in [-1,1] for landmark images y (B,3,H,W); no grad, on the pipeline's device,
        through the avatar's specialised renderer (`renderer`)."""
        s = self.image_size
        if y.dim() != 4 or tuple(y.shape[1:]) != (3, s, s):
            raise PipelineError(f"landmark images must be (B,3,{s},{s}) for this model, got {tuple(y.shape)}")
        renderer = self.renderer(avatar)
        out = [renderer(yb).to(self.device) for yb in y.split(max(1, batch_size))]
        return torch.cat(out) if out else y.new_zeros((0, 3, s, s), device=self.device)

    def renderer(self, avatar: Avatar, *, onnx_file: str | os.PathLike | None = None):
        """The avatar's renderer `y -> x_hat` (`inference.py`: spectral norm, psi' and sources folded in, at
        `inference.precision` with `inference.backend`), built once per avatar and cached. onnx_file: with the
        onnxruntime backend, run that export (`talking-heads export`) of this avatar instead of exporting now."""
        from .inference import build_renderer

        inf = self.cfg.inference
        if onnx_file is not None and inf.backend != "onnxruntime":
            raise PipelineError("an .onnx file is run by the onnxruntime backend: set inference.backend = "
                                "'onnxruntime' (--backend onnxruntime)")
        generator = avatar.generator if avatar.generator is not None else self.networks.generator
        key = (id(avatar.psi), avatar.psi._version, id(generator), id(avatar.source_images), inf.precision, inf.backend)

        def build():
            generator, psi, sources = self.render_inputs(avatar)
            return build_renderer(generator, psi, sources, device=self.device, precision=inf.precision,
                                  backend=inf.backend, onnx_file=onnx_file,
                                  describe=lambda: self.describe_render_inputs(generator, psi, sources),
                                  calibration=lambda: self.calibration_images(avatar))

        return self._renderers.get(avatar, key, build, rebuild=onnx_file is not None)

    CALIBRATION_MOTIONS = ("talk", "turn", "surprise")  # int8 calibration: 4 frames of each (calibration_images)

    def calibration_images(self, avatar: Avatar) -> Tensor:
        """Landmark images (N,3,S,S) like those `avatar` will render, on which int8 calibrates its activation
        ranges (`inference.quantize_int8`): the avatar's own source landmarks (up to 8) and 4 frames each of
        the built-in talk, turn and surprise motions applied to its face (without source landmarks, the motions
        on the neutral template)."""
        from .landmarks.motions import motion_landmarks

        s = self.image_size
        motions = [motion_landmarks(m, 2.0, 2.0, s, self.cfg.data) for m in self.CALIBRATION_MOTIONS]  # 4 each
        if avatar.face is not None:  # each motion starts on the neutral face: its frame 0 is the reference
            motions = [adapt_landmarks(m, avatar.face, 0) for m in motions]
            motions.insert(0, avatar.landmarks[:8])
        points = np.concatenate(motions).astype(np.float32)
        return rasterize_tensor(points, s, self.cfg.data.line_thickness).to(self.device)

    def render_inputs(self, avatar: Avatar) -> tuple[torch.nn.Module, Tensor, tuple[Tensor, Tensor] | None]:
        """What renders `avatar`: (its generator (FT) or the model's, in eval mode; psi' (1,A); the warp
        generator's sources (T,3,S,S) x 2, else None)."""
        generator = (avatar.generator if avatar.generator is not None else self.networks.generator).eval()
        sources = None
        if getattr(generator, "needs_sources", False):  # the warp generator: the avatar's T crops
            sources = avatar.source_tensors(self.device, self.cfg.data.line_thickness)
            if sources is None:
                raise PipelineError("this model's generator needs the avatar's source frames; create the avatar "
                                    "again with this model")
        return generator, avatar.psi.to(self.device), sources

    def describe_render_inputs(self, generator, psi, sources) -> dict[str, str]:
        """The metadata an ONNX export of these render inputs carries (`inference.avatar_metadata`)."""
        from .inference import avatar_metadata

        return avatar_metadata(generator, psi, sources, image_size=self.image_size,
                               generator_name=self.cfg.model.generator, model_fingerprint=self.model_fingerprint)

    def render_sequence(self, avatar: Avatar, points: np.ndarray, *, progress: bool = True) -> Iterator[np.ndarray]:
        """RGB uint8 frames (output_size px) for landmarks (F,68,2) in crop px, rendered in batches."""
        from tqdm import tqdm

        bs = max(1, self.cfg.inference.batch_size)
        bar = tqdm(total=len(points), unit="frame", desc="rendering", disable=not progress, dynamic_ncols=True)
        try:
            for i in range(0, len(points), bs):
                yield from self.render_frames(avatar, points[i:i + bs])
                bar.update(len(points[i:i + bs]))
        finally:
            bar.close()

    def render_frames(self, avatar: Avatar, points: np.ndarray) -> list[np.ndarray]:
        """RGB uint8 frames (output_size px) for landmarks (B,68,2) in the avatar's crop px, one generator call."""
        y = rasterize_tensor(points, self.image_size, self.cfg.data.line_thickness)
        return [media.resize(image, self.output_size) for image in _to_uint8(self.render(avatar, y, batch_size=len(y)))]

    # --- driving --------------------------------------------------------------------------------------
    def load_driver(self, driver, *, smooth: bool = False, duration: float | None = None) -> DriverSequence:
        """The driver's own landmarks (no adaptation) in a crop at the model's resolution (`driver.py`)."""
        if isinstance(driver, DriverSequence):
            return driver
        return load_driver(driver, size=self.image_size, data_cfg=self.cfg.data, inference_cfg=self.cfg.inference,
                           smooth=smooth, duration=duration)

    def driver_landmarks(self, driver, *, avatar: Avatar | None = None, adapt: bool = True, reference_frame: int = 0,
                         smooth: bool = False, duration: float | None = None) -> DriverSequence:
        """Landmarks (F,68,2) of every output frame in the avatar's crop (`.points`), with fps, audio source and
        lost-frame count. adapt (with an avatar): the driver's motion relative to `reference_frame` applied to
        the avatar's own face; otherwise the driver's landmarks placed by the crop rule (the paper)."""
        seq = self.load_driver(driver, smooth=smooth, duration=duration)
        if avatar is None or not adapt:
            return dataclasses.replace(seq, points=seq.driver_points.copy(), adapted=False)
        if avatar.face is None:
            raise PipelineError("this avatar has no source landmarks (made from tensors without landmarks=), so "
                                "landmarks cannot be adapted to it: animate it with adapt=False (--no-adapt)")
        self.check_reference_frame(seq, reference_frame)
        points = adapt_landmarks(seq.driver_points, avatar.face, reference_frame)
        return dataclasses.replace(seq, points=points, adapted=True)

    @staticmethod
    def check_reference_frame(seq: DriverSequence, reference_frame: int) -> None:
        if not 0 <= reference_frame < len(seq):
            raise PipelineError(f"reference frame {reference_frame} is outside the driver's {len(seq)} frames "
                                f"(0..{len(seq) - 1})")

    # --- stage: paste back ----------------------------------------------------------------------------
    def paste_target(self, avatar: Avatar) -> tuple[np.ndarray, CropTransform]:
        """The first source's full frame and its crop transform, downscaled to PASTE_MAX_SIDE at most."""
        if avatar.transform is None:
            raise PipelineError("paste-back needs the avatar's source photo and crop; this avatar has none "
                                "(made from tensors)")
        frame = avatar.background if avatar.background is not None else self._reload_source(avatar)
        tf = avatar.transform.resized(self.output_size)
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

    @staticmethod
    def paste_back(crop: np.ndarray, target: tuple[np.ndarray, CropTransform], mask: np.ndarray | None = None
                   ) -> np.ndarray:
        """A rendered crop blended into (a copy of) the source's full frame: through `mask` (crop-space
        weights, e.g. `paste_mask`) or, without one, a feathered square."""
        frame, tf = target
        return tf.paste_back(crop, frame, mask)

    def paste_mask(self, avatar: Avatar, points: np.ndarray) -> np.ndarray | None:
        """Crop-space (S,S) paste-back weights for one frame: the union of the head masks of the avatar's own
        face (where the photo's head is) and of the landmarks being rendered (where the head is now), so the
        rendered pixels cover both and everything else is the untouched photo: no background flicker.
        None for an avatar without landmarks (then the feathered square is used)."""
        from .landmarks.masks import head_mask

        if avatar.face is None or not np.isfinite(points).all():
            return None
        s = self.image_size
        return np.maximum(head_mask(avatar.face, s), head_mask(points, s))

    # --- stage: write video ---------------------------------------------------------------------------
    def write_video(self, frames: Iterator[np.ndarray], out_path: str | os.PathLike, fps: float,
                    audio: str | os.PathLike | None = None) -> int:
        """Encode RGB frames to a labelled H.264 mp4 (with `audio`'s sound), atomically; returns the count."""
        with media.VideoWriter(out_path, fps, audio=audio) as writer:
            for frame in frames:
                writer.write(frame)
        return writer.frames

    # --- puppeteering ---------------------------------------------------------------------------------
    def live(self, avatar: Avatar, *, adapt: bool = True, reference: np.ndarray | None = None, smooth: bool = False,
             fps: float = 25.0, crop: CropTransform | None = None) -> "LiveStage":
        """The per-frame live stage (`LiveStage`): driver landmarks in, rendered frames out, one at a time.
        reference (68,2): the driver's neutral frame in the points' pixels (None: the first frame with a face);
        crop: driver pixels -> the model's crop for adapt=False (None: fixed by the first frame with a face)."""
        if adapt and avatar.face is None:
            raise PipelineError("this avatar has no source landmarks (made from tensors without landmarks=), so "
                                "landmarks cannot be adapted to it: animate it with adapt=False (--no-adapt)")
        return LiveStage(self, avatar, adapt=adapt, reference=reference, smooth=smooth, fps=fps, crop=crop)

    def animate(self, avatar: Avatar, driver, out_path: str | os.PathLike, *, adapt: bool = True,
                reference_frame: int | None = None, smooth: bool = False, side_by_side: bool = False,
                paste_back: bool = False, paste_mask: bool = True, contact_sheet: bool = True, progress: bool = True,
                duration: float | None = None) -> AnimationResult:
        """Drive `avatar` with a video, frames folder, .npy landmarks or motion name; write `out_path` (.mp4)
        and, with `contact_sheet`, `<out>.contact.png`. duration: seconds of a built-in motion. A loop over
        the live stage: the driver's landmarks (in its clip-stable crop, `driver.py`) one frame at a time.
        reference_frame: the driver frame adaptation measures motion from (None: the most neutral one, mouth
        closed, eyes open, frontal: `landmarks.masks.neutral_frame`). paste_back with paste_mask: blended
        through the head mask (`paste_mask`), so only the person moves; without: a feathered square."""
        from tqdm import tqdm

        from .paths import output_file

        inputs = [g for g in (getattr(driver, "source", driver), avatar.source_path)  # a path, or a loaded driver's
                  if isinstance(g, (str, os.PathLike))]
        try:
            out_path = output_file(out_path, "output", suffixes=(".mp4",), inputs=inputs)
        except InputError as err:
            raise PipelineError(str(err)) from None
        seq = self.load_driver(driver, smooth=smooth, duration=duration)
        if adapt:
            if avatar.face is None:
                self.live(avatar, adapt=True)  # the error for an avatar without landmarks
            if reference_frame is None:
                from .landmarks.masks import neutral_frame

                reference_frame = neutral_frame(seq.driver_points)
            self.check_reference_frame(seq, reference_frame)
        live = self.live(avatar, adapt=adapt, reference=seq.driver_points[reference_frame] if adapt else None,
                         fps=seq.fps, crop=CropTransform(0, 0, seq.size, self.image_size, seq.size, seq.size))
        target = self.paste_target(avatar) if paste_back else None
        flicker = self.background_flicker(avatar, target) if target is not None else None
        picks = set(even_indices(len(seq), self.cfg.inference.contact_sheet_frames))
        sheet: list[tuple[np.ndarray, ...]] = []

        def frames() -> Iterator[np.ndarray]:
            panels = seq.panels(self.output_size)
            bar = tqdm(total=len(seq), unit="frame", desc="rendering", disable=not progress, dynamic_ncols=True)
            bs = max(1, self.cfg.inference.batch_size)
            try:
                for start in range(0, len(seq), bs):
                    # the live stage's landmarks frame by frame, rendered in batches (offline: throughput)
                    chunk = [live.landmarks(p).copy() for p in seq.driver_points[start:start + bs]]
                    for i, (points, crop) in enumerate(zip(chunk, live.render_batch(chunk)), start):
                        panel = next(panels, None)
                        if panel is None:
                            panel = np.zeros_like(crop)
                        if i in picks:
                            sheet.append((panel, rasterize(points * (crop.shape[0] / self.image_size),
                                                           crop.shape[0]), crop))
                        mask = self.paste_mask(avatar, points) if target is not None and paste_mask else None
                        frame = self.paste_back(crop, target, mask) if target is not None else crop
                        if flicker is not None:
                            flicker.update(frame)
                        yield media.side_by_side([panel, frame], height=frame.shape[0]) if side_by_side else frame
                        bar.update(1)
            finally:
                bar.close()

        count = self.write_video(frames(), out_path, seq.fps, audio=seq.audio)
        sheet_path = None
        if contact_sheet:
            sheet_path = self.write_contact_sheet(avatar, sheet, out_path.with_suffix(".contact.png"))
        return AnimationResult(out_path, sheet_path, count, seq.lost_frames, seq.fps, list(seq.warnings),
                               seq.held_frames, flicker.value if flicker is not None else None)

    def background_flicker(self, avatar: Avatar, target: tuple[np.ndarray, CropTransform]):
        """A `metrics.flicker.BackgroundFlicker` for frames pasted into `target`'s photo: outside the photo's
        own head mask (the whole crop box when the avatar has no landmarks)."""
        from .landmarks.masks import head_mask
        from .metrics.flicker import BackgroundFlicker

        frame, tf = target
        s = self.image_size
        inside = head_mask(avatar.face, s) if avatar.face is not None else np.ones((s, s), np.float32)
        person = tf.paste_back(np.ones((s, s), np.float32), np.zeros(frame.shape[:2], np.float32), inside)
        return BackgroundFlicker(person)

    def write_contact_sheet(self, avatar: Avatar, columns: list[tuple[np.ndarray, ...]], path: Path) -> Path:
        """PNG, one column per picked frame: driver, landmarks rendered (adapted), result; the source thumbnail
        heads the first column. Labelled synthetic like every output."""
        tile = max(128, self.output_size // 2)
        blank = np.full((tile, tile, 3), 24, np.uint8)
        source = avatar.thumbnail if avatar.thumbnail is not None else blank
        columns = [(source, blank, blank)] + list(columns)
        return media.write_png(path, media.contact_sheet([list(row) for row in zip(*columns)], tile))


# --- the live stage ---------------------------------------------------------------------------------

class StreamCrop:
    """The VoxCeleb-style crop of a stream whose frames arrive one by one (`data/crop.py`'s rule on the first
    frame with a face, instead of the median over a whole clip). The box then stays put, so that the points'
    coordinates only move with the head; it is refitted on the current frame when a landmark leaves the box
    by more than `refit` x its side (the person moved away), and `changed` says so."""

    def __init__(self, size: int, data_cfg=None, refit: float = 0.25):
        from .config import DataConfig

        self.size, self.cfg, self.refit = int(size), data_cfg or DataConfig(), refit
        self.transform: CropTransform | None = None
        self.changed = False  # the last update fitted a new box

    def update(self, points: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
        """(68,2) frame px (finite) -> crop px at `size`; fits or refits the box as needed."""
        from .data.crop import clip_crop

        tf = self.transform
        self.changed = tf is None
        if tf is not None:
            x0, y0, x1, y1 = tf.box
            m = self.refit * tf.side
            self.changed = bool((points < [x0 - m, y0 - m]).any() or (points > [x1 + m, y1 + m]).any())
        if self.changed:
            self.transform = clip_crop(points[None], frame_size, self.size, self.cfg.crop_scale,
                                       self.cfg.crop_shift).transform
        return self.transform.to_crop(points)


class LiveStage:
    """Puppeteering one frame at a time (`TalkingHeadPipeline.live`): `step(points) -> frame`.

    points (68,2) are the driver's landmarks in its own pixels (a camera frame, the sender's crop, or a
    driver clip's crop); None or NaN = no face in this frame (the last good landmarks are held; before the
    first face the avatar's own face is shown). Per frame: 1. the crop (adapt=False: the paper's placement of
    the driver's landmarks by the crop rule, with `crop` or a `StreamCrop` fixed by the first face); 2. One
    Euro smoothing (optional, in the units of a 256 px crop, where the filter's defaults are tuned);
    3. adaptation (`landmarks/adaptation.py`) of the motion since the reference frame to the avatar's face;
    4. render (`render_frames`). `points` holds what was rendered (the avatar's crop px), `driver_points` the
    driver's landmarks in its crop at the model's resolution.
    """

    def __init__(self, pipe: TalkingHeadPipeline, avatar: Avatar, *, adapt: bool, reference: np.ndarray | None,
                 smooth: bool, fps: float, crop: CropTransform | None):
        from .landmarks.filters import OneEuroFilter

        self.pipe, self.avatar, self.adapt, self.fps = pipe, avatar, adapt, float(fps)
        self.crop = StreamCrop(pipe.image_size, pipe.cfg.data)
        self.crop.transform = crop
        self.fixed_crop = crop is not None
        self.reference = None if reference is None else np.asarray(reference, np.float64)
        self.filter = OneEuroFilter() if smooth else None
        self._last_t: float | None = None
        neutral = avatar.face if avatar.face is not None else np.full((68, 2), np.nan, np.float32)
        self.points = np.asarray(neutral, np.float32)  # (68,2) rendered last, avatar crop px
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
        if p is not None and p.shape != (68, 2):
            raise PipelineError(f"landmarks must be (68,2), got {p.shape}")
        if p is None or not np.isfinite(p).all():
            self.lost += 1
            return self.points
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
            self.points = self.driver_points
            return self.points
        if self.reference is None:
            self.reference = p
        from .landmarks.adaptation import adapt_landmarks

        self.points = adapt_landmarks(np.stack([self.reference, p]), self.avatar.face, 0)[1]
        return self.points

    def _smooth(self, p: np.ndarray, t: float | None) -> np.ndarray:
        """One Euro filter on the points in 256-px-crop units (the crop box fixes the scale); frame px out."""
        if self.filter is None:
            return p
        dt = 1.0 / self.fps if t is None or self._last_t is None else max(1e-3, t - self._last_t)
        self._last_t = t
        if self.crop.changed and not self.fixed_crop:
            self.filter.reset()  # a new box: the old positions are in other units
        unit = 256.0 / self.crop.transform.side
        return self.filter(p * unit, dt) / unit

    def render(self, points: np.ndarray) -> np.ndarray:
        """Stage 4: one RGB uint8 frame (output_size px) for landmarks (68,2) in the avatar's crop px."""
        if not np.isfinite(points).all():  # nothing to show yet (no face, and an avatar without landmarks)
            return np.zeros((self.pipe.output_size, self.pipe.output_size, 3), np.uint8)
        return self.pipe.render_frames(self.avatar, np.asarray(points, np.float32)[None])[0]

    def render_batch(self, points: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Stage 4 for several frames' landmarks at once (one generator call): offline jobs."""
        if not all(np.isfinite(p).all() for p in points):
            return [self.render(p) for p in points]
        return self.pipe.render_frames(self.avatar, np.stack(points).astype(np.float32)) if len(points) else []

    def step(self, points: np.ndarray | None, t: float | None = None,
             frame_size: tuple[int, int] | None = None) -> np.ndarray:
        """One frame: landmarks in, RGB uint8 (output_size, output_size, 3) frame out (class docstring)."""
        return self.render(self.landmarks(points, t, frame_size))


# --- small helpers ----------------------------------------------------------------------------------

def _to_uint8(x: Tensor) -> np.ndarray:
    """(B,3,H,W) in [-1,1] -> (B,H,W,3) uint8."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _rgb(image) -> np.ndarray:
    from .data.video import to_rgb_uint8

    return to_rgb_uint8(image)

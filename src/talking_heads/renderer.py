"""The renderer: the tensor stages of few-shot avatars and puppeteering (paper.md section 1 stages 2-3, section 6).

`Renderer(cfg, networks, device=...)` holds one meta-learned model (E, G, D on a device, in eval mode) and does
everything between tensors: no file I/O, no driver files, no CLI concepts. The evaluation, the live stage
(`live.py`), the web app and the orchestration (`pipeline.py`, which holds one) call it.

- `embed` (FF): e_new = mean_t E(x_t, y_t), psi' = P e_new; `finetune` (FT, paper section 6:
  `train.finetune.finetune`, the training step functions, no second loop) with `content_loss`;
  `create_avatar_from_tensors` makes an `Avatar` with either.
- `render` (landmark images -> frames, batched, no grad) through `renderer(avatar)`, the avatar's specialised
  renderer (`inference.py`: spectral norm, psi' and the warp generator's sources folded in), built once per
  avatar and cached; `render_frames` / `render_sequence` from landmarks (crop px) to uint8 frames.
- `paste_back` / `paste_mask`: array maths that blend a rendered crop into the source photo's full frame.
- `model_fingerprint`: the hash of E and G that an FF avatar's psi' belongs to (`avatar.py` checks it).

Errors caused by the input are `PipelineError`s (an InputError) whose message says what to do.

Glossary: x frames (T,3,S,S) and y landmark images (T,3,S,S) in [-1,1], S = model.image_size; e_new (1,N);
psi' (1,A) AdaIN parameters; points (F,68,2) landmarks in crop px at S.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from . import limits, media
from .avatar import Avatar
from .config import Config
from .data.crop import CropTransform
from .errors import InputError
from .images import to_tensor, to_uint8
from .inference import RendererCache, avatar_metadata, build_renderer, calibration_images
from .landmarks.iris import complete_gaze, place_gaze, uses_gaze, with_iris
from .landmarks.masks import border_window, head_mask
from .landmarks.raster import rasterize_tensor
from .losses import ContentLoss
from .models import Networks, TalkingHeadGenerator
from .models.tps_prior import normalise_points
from .train.finetune import FinetuneResult, embed_frames, finetune, initial_psi

log = logging.getLogger(__name__)

__all__ = ["Renderer", "PipelineError", "DEFAULT_FRAME_SIZE", "LARGE_FRAME_SIZE"]

DEFAULT_FRAME_SIZE = 256  # frames rendered at the model's size are upscaled to this when no size is set
LARGE_FRAME_SIZE = 512  # a TPS avatar is kept at this size where the photo holds the pixels


class PipelineError(InputError):
    """A request the pipeline cannot satisfy with the given input; the message says what to do."""


class Renderer:
    """The tensor stages of one meta-learned model (module docstring)."""

    def __init__(self, cfg: Config, networks: Networks, *, device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.networks = networks
        self.device = torch.device(device)
        for name in ("embedder", "generator", "discriminator"):
            getattr(networks, name).to(self.device).eval()  # eval: spectral-norm buffers never change
        self._fingerprint: str | None = None
        self._content_loss: ContentLoss | None = None
        self._renderers = RendererCache()  # the avatar-specialised renderers (`renderer`)
        self.content_loss_warnings: list[str] = []

    def set_config(self, cfg: Config) -> None:
        """Use another Config with the same networks, e.g. another FT recipe (finetune.*, loss.*); the
        architecture (`model`) must stay the model's own. Cached state built from the old one is dropped."""
        if cfg.model != self.cfg.model:
            raise PipelineError("a config with another architecture (model.*) does not fit this model's networks")
        self.cfg, self._content_loss = cfg, None

    @property
    def generator(self) -> TalkingHeadGenerator:
        """The meta-learned G (FF avatars render with it; FT avatars carry their own copy)."""
        return self.networks.generator

    @property
    def image_size(self) -> int:
        return int(self.cfg.model.image_size)

    @property
    def output_size(self) -> int:
        """Side of rendered frames in videos when no avatar says otherwise (`frame_size`)."""
        return self.frame_size(None)

    def frame_size(self, avatar: Avatar | None) -> int:
        """Side (px) of an avatar's rendered video frames: `inference.output_size` when set (> 0, and at least
        the model's resolution); else the avatar's own render size where it renders above the model's (the
        TPS renderer, at the size it was made for); else the model's resolution upscaled to DEFAULT_FRAME_SIZE."""
        chosen = int(self.cfg.inference.output_size)
        if chosen > 0:
            return max(self.image_size, chosen)
        if avatar is not None and avatar.render_size > self.image_size:
            return avatar.render_size
        return max(self.image_size, DEFAULT_FRAME_SIZE)

    def render_size_for(self, smallest_side: int) -> int:
        """The size (px) a TPS avatar's photo crops are kept at: `inference.output_size` when set, else
        LARGE_FRAME_SIZE where the photo holds at least 3/4 of it across the head crop (`smallest_side`, px
        of the photo), else DEFAULT_FRAME_SIZE."""
        chosen = int(self.cfg.inference.output_size)
        if chosen > 0:
            return max(self.image_size, chosen)
        return LARGE_FRAME_SIZE if smallest_side >= 0.75 * LARGE_FRAME_SIZE else max(self.image_size, DEFAULT_FRAME_SIZE)

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

    # --- embed (FF) and fine-tune (FT) ----------------------------------------------------------------
    def embed(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """FF: (e_new (1,N) = mean_t E(x_t, y_t), psi' (1,A) = P e_new), E and P untouched."""
        e_new = embed_frames(self.networks.embedder, x.to(self.device), y.to(self.device),
                             chunk=max(1, self.cfg.inference.batch_size))
        return e_new, initial_psi(self.networks.generator, e_new)

    def finetune(self, x: Tensor, y: Tensor, *, epochs: int | None = None, progress: bool = True,
                 landmarks: np.ndarray | None = None, photo: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> FinetuneResult:
        """FT (paper section 6) on T frames: `train.finetune.finetune` -> FinetuneResult (the renderer's
        networks are not modified; E stays frozen). `landmarks` (T,68,2) feed the face terms of the content
        loss when the model uses them (`loss.face_network`). photo: the TPS renderer's sources as it will
        render them (`pipeline.photo_pixels`: (T,R,R,3) uint8, validity (T,R,R)), given to G' at the model's
        size, black and marked invalid past the photo's edge, so that FT trains what rendering uses."""
        epochs = limits.check_epochs(epochs, "fine-tuning epochs")
        sources = None  # (x_src, valid) at the model's size: the photo as the TPS renderer renders it
        if photo is not None:
            s = self.image_size
            images = torch.stack([to_tensor(media.resize(im, s)) for im in photo[0]])
            valid = torch.stack([torch.from_numpy(media.resize(v, s).astype(np.float32) / 255) for v in photo[1]])
            x_src = images * valid[:, None] - (1 - valid[:, None])
            sources = (x_src.to(self.device), valid[:, None].to(self.device))
        return finetune(self.networks, x.to(self.device), y.to(self.device), self.cfg,
                        content_loss=self.content_loss(), epochs=epochs, seed=self.cfg.train.seed, progress=progress,
                        points=None if landmarks is None else torch.as_tensor(np.asarray(landmarks, np.float32)),
                        photo=sources)

    def content_loss(self) -> ContentLoss:
        """L_CNT for fine-tuning, with the model's VGG files when they exist here (else the offline loss). A
        fallback is never silent: `content_loss_warnings` says what is missing (FT avatars carry it in their
        warnings, which the CLI prints, and record the loss they were fine-tuned with)."""
        if self._content_loss is None:
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

    def create_avatar_from_tensors(self, x: Tensor, y: Tensor, *, landmarks: np.ndarray | None = None,
                                   finetune: bool = False, epochs: int | None = None, progress: bool = True,
                                   photo: tuple[np.ndarray, np.ndarray] | None = None,
                                   iris: np.ndarray | None = None) -> Avatar:
        """An avatar from T preprocessed frames x and landmark images y, (T,3,H,W) in [-1,1].
        landmarks (T,68,2) crop px: needed for landmark adaptation when animating. photo: the TPS renderer's
        sources at the output size and their validity (`pipeline.photo_pixels`; default: x itself). iris
        (T,2,2) crop px, NaN where not seen: the sources' iris centres (gaze)."""
        self._check_avatar_tensors(x, y, landmarks)
        needs_sources = self.generator.needs_sources
        common = dict(cfg=self.cfg, landmarks=None if landmarks is None else np.asarray(landmarks, np.float32),
                      thumbnail=media.resize(to_uint8(x[:1])[0], self.cfg.inference.thumbnail_size),
                      model_fingerprint=self.model_fingerprint,
                      source_images=(to_uint8(x) if photo is None else photo[0]) if needs_sources else None,
                      source_valid=photo[1] if needs_sources and photo is not None else None,
                      iris=None if iris is None or landmarks is None else np.asarray(iris, np.float32))
        if finetune:
            if landmarks is None and self.content_loss().face is not None:
                raise PipelineError("this model fine-tunes with face terms that need the frames' landmarks: "
                                    "pass landmarks= (T,68,2)")
            if landmarks is not None and self.cfg.model.generator == "tps" and self.cfg.model.tps_iris:
                landmarks = complete_gaze(landmarks, iris)  # the TPS warps by the iris centres too
            result = self.finetune(x, y, epochs=epochs, progress=progress, landmarks=landmarks,
                                   photo=photo if self.needs_points else None)
            return Avatar(kind="ft", psi=result.psi, e_new=result.e_new, generator=result.generator.eval(),
                          discriminator=result.discriminator.eval(), history=result.history,
                          epochs=self.cfg.finetune.epochs if epochs is None else epochs,
                          content_loss=self.content_loss().mode, warnings=list(self.content_loss_warnings),
                          **common)
        e_new, psi = self.embed(x, y)
        return Avatar(kind="ff", psi=psi, e_new=e_new, **common)

    def _check_avatar_tensors(self, x: Tensor, y: Tensor, landmarks: np.ndarray | None) -> None:
        """PipelineError unless x, y are (T,3,S,S) for this model and landmarks (T,68,2) (needed by the warp
        generator)."""
        s = self.image_size
        if x.dim() != 4 or x.shape != y.shape or tuple(x.shape[1:]) != (3, s, s) or len(x) < 1:
            raise PipelineError(f"x and y must both be (T,3,{s},{s}) for this model; got {tuple(x.shape)} and "
                                f"{tuple(y.shape)}")
        if landmarks is not None and np.asarray(landmarks).shape != (len(x), 68, 2):
            raise PipelineError(f"landmarks must be ({len(x)},68,2), got {np.asarray(landmarks).shape}")
        if self.generator.needs_sources and landmarks is None:
            raise PipelineError("this model's generator warps the source frames and needs their landmarks: pass "
                                "landmarks= (T,68,2)")

    # --- render ---------------------------------------------------------------------------------------
    @property
    def needs_points(self) -> bool:
        """Whether rendering needs the driver's landmarks besides their images (the TPS renderer)."""
        return bool(getattr(self.generator, "needs_points", False))

    @torch.no_grad()
    def render(self, avatar: Avatar, y: Tensor, batch_size: int = 8, points: np.ndarray | Tensor | None = None
               ) -> Tensor:
        """Frames x_hat (B,3,R,R) in [-1,1] for landmark images y (B,3,S,S) (R = `avatar.render_size`); no grad,
        on the renderer's device, through the avatar's specialised renderer (`renderer`). points (B,68,2):
        y's landmarks in crop px at S, needed by the TPS renderer."""
        s = self.image_size
        if y.dim() != 4 or tuple(y.shape[1:]) != (3, s, s):
            raise PipelineError(f"landmark images must be (B,3,{s},{s}) for this model, got {tuple(y.shape)}")
        renderer = self.renderer(avatar)
        bs = max(1, batch_size)
        if not self.needs_points:
            out = [renderer(yb).to(self.device) for yb in y.split(bs)]
        else:
            p = self._check_points(points, len(y))
            if not (self.cfg.model.generator == "tps" and self.cfg.model.tps_iris):
                p = p[:, :68]  # the iris rows are for models that warp by them
            elif p.shape[1] != 70:  # the avatar's own gaze
                p = torch.as_tensor(self.gaze_points(avatar, p.numpy()))
            p = normalise_points(p, s)
            out = [renderer(yb, pb).to(self.device) for yb, pb in zip(y.split(bs), p.split(bs))]
        r = avatar.render_size if self.needs_points else s
        return torch.cat(out) if out else y.new_zeros((0, 3, r, r), device=self.device)

    @staticmethod
    def _check_points(points, n: int) -> Tensor:
        """The landmarks of the n frames to render as a CPU float32 (n,68,2) tensor; PipelineError otherwise."""
        if points is None:
            raise PipelineError("the TPS renderer needs the landmarks of the frames it renders: pass points=")
        p = points.detach().float().cpu() if isinstance(points, Tensor) else \
            torch.as_tensor(np.asarray(points, np.float32))
        if tuple(p.shape) not in ((n, 68, 2), (n, 70, 2)):
            raise PipelineError(f"points must be ({n},68,2) or ({n},70,2) for {n} landmark images, got {tuple(p.shape)}")
        if not torch.isfinite(p).all():
            raise PipelineError("points contain NaN or infinite values: every rendered frame needs its 68 landmarks")
        return p

    def with_inference(self, **changes) -> "Renderer":
        """This renderer (or pipeline) with other `inference` settings (e.g. `backend`), sharing its networks and
        its cache of avatar renderers (keyed by precision and backend); this one is unchanged."""
        other = copy.copy(self)
        other.cfg = dataclasses.replace(self.cfg, inference=dataclasses.replace(self.cfg.inference, **changes))
        return other

    def renderer(self, avatar: Avatar, *, onnx_file: str | os.PathLike | None = None):
        """The avatar's renderer `y -> x_hat` (`inference.py`: spectral norm, psi' and sources folded in, at
        `inference.precision` with `inference.backend`), built once per avatar and cached. onnx_file: with the
        onnxruntime backend, run that export (`talking-heads export`) of this avatar instead of exporting now."""
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

    def calibration_images(self, avatar: Avatar) -> Tensor:
        """Landmark images (N,3,S,S) on the renderer's device on which int8 calibrates its activation ranges
        for `avatar` (`inference.calibration_images`)."""
        return calibration_images(avatar.landmarks, self.image_size, self.cfg.data).to(self.device)

    def render_inputs(self, avatar: Avatar) -> tuple[nn.Module, Tensor, tuple[Tensor, Tensor] | None]:
        """What renders `avatar`: (its generator (FT) or the model's, in eval mode; psi' (1,A); the warp
        generator's sources (T,3,S,S) x 2, else None)."""
        generator = (avatar.generator if avatar.generator is not None else self.networks.generator).eval()
        sources = None
        if generator.needs_sources:  # the warp generators: the avatar's T crops
            sources = avatar.source_tensors(self.device, self.cfg.data.line_thickness,
                                            gaze=uses_gaze(self.cfg), pupils=self.cfg.data.pupils)
            if sources is not None and not getattr(generator, "needs_points", False):
                sources = sources[:2]  # (x, y): what the warp generator reads (and its exports' fingerprints hold)
            if sources is None:
                raise PipelineError("this model's generator needs the avatar's source frames; create the avatar "
                                    "again with this model")
        return generator, avatar.psi.to(self.device), sources

    def describe_render_inputs(self, generator, psi, sources) -> dict[str, str]:
        """The metadata an ONNX export of these render inputs carries (`inference.avatar_metadata`)."""
        return avatar_metadata(generator, psi, sources, image_size=self.image_size,
                               generator_name=self.cfg.model.generator, model_fingerprint=self.model_fingerprint)

    def render_sequence(self, avatar: Avatar, points: np.ndarray, *, progress: bool = True) -> Iterator[np.ndarray]:
        """RGB uint8 frames (`frame_size(avatar)` px) for landmarks (F,68,2) in crop px, rendered in batches."""
        for batch, bar in self.frame_batches(len(points), progress):
            yield from self.render_frames(avatar, points[batch.start:batch.stop])
            bar.update(len(batch))

    def frame_batches(self, n: int, progress: bool) -> Iterator[tuple[range, tqdm]]:
        """Frames 0..n-1 in batches of `inference.batch_size` (the indices of each), with the "rendering"
        progress bar that the caller advances as frames are done."""
        bs = max(1, self.cfg.inference.batch_size)
        bar = tqdm(total=n, unit="frame", desc="rendering", disable=not progress, dynamic_ncols=True)
        try:
            for start in range(0, n, bs):
                yield range(start, min(n, start + bs)), bar
        finally:
            bar.close()

    def render_frames(self, avatar: Avatar, points: np.ndarray) -> list[np.ndarray]:
        """RGB uint8 frames (`frame_size(avatar)` px) for landmarks (B,68,2) in the avatar's crop px, or (B,70,2)
        with the iris centres (gaze), one generator call. A model that renders gaze given 68 points looks the way
        the avatar's photo looks (`Avatar.rest_gaze`)."""
        points = self.gaze_points(avatar, points)
        y = rasterize_tensor(points, self.image_size, self.cfg.data.line_thickness, self.cfg.data.pupils)
        frames = to_uint8(self.render(avatar, y, batch_size=len(y), points=points))
        size = self.frame_size(avatar)
        return [media.resize(image, size) for image in frames]

    def gaze_points(self, avatar: Avatar, points: np.ndarray) -> np.ndarray:
        """(B,70,2) for a model that renders gaze (68-point rows get the avatar's rest gaze), else (B,68,2)."""
        points = np.asarray(points, np.float32)
        if not uses_gaze(self.cfg):
            return points[:, :68]
        if points.shape[1] == 70:
            return points
        rest = avatar.rest_gaze
        return np.stack([with_iris(p, place_gaze(p, rest)) for p in points])

    # --- paste back -----------------------------------------------------------------------------------
    @staticmethod
    def paste_back(crop: np.ndarray, target: tuple[np.ndarray, CropTransform], mask: np.ndarray | None = None
                   ) -> np.ndarray:
        """A rendered crop blended into (a copy of) the source's full frame: through `mask` (crop-space
        weights, e.g. `paste_mask`) or, without one, a feathered square. target: (frame, its crop transform)."""
        frame, tf = target
        return tf.paste_back(crop, frame, mask)

    def paste_mask(self, avatar: Avatar, points: np.ndarray) -> np.ndarray | None:
        """Crop-space (S,S) paste-back weights for one frame: the union of the head masks of the avatar's own
        face (where the photo's head is) and of the landmarks being rendered (where the head is now), so the
        rendered pixels cover both and everything else is the untouched photo: no background flicker. It fades
        to 0 before the crop's border (`border_window`): no square edge where the head mask reaches it.
        None for an avatar without landmarks (then the feathered square is used)."""
        if avatar.face is None or not np.isfinite(points).all():
            return None
        s = self.image_size
        if self.needs_points:  # the TPS renderer's frame is the photo itself wherever nothing moves: the whole
            return border_window(s)  # crop (a head mask would leave the photo's old hair line beside the moved one)
        return np.maximum(head_mask(avatar.face, s), head_mask(points, s)) * border_window(s)

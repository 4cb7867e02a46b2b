"""A personalised talking head (paper.md section 1 stage 2): what few-shot learning produces, saved and loaded.

FF (feed-forward): e_new = mean_t E(x_t, y_t) and psi' = P e_new; the meta-learned G renders it, so the
saved avatar is tiny (psi', e_new, landmarks, a thumbnail: a few kB to a few hundred kB).
FT (fine-tuned, paper section 6): psi' and a fine-tuned copy of G (and optionally D') are stored as well.

Avatar directory (the model directory format of `model_dir.py`, stage "avatar"):
    config.json            the Config of the model it was made with + meta: kind ("ff" | "ft"), num_frames T,
                           model_fingerprint (of the meta-learned E and G), epochs, sources (file names),
                           source_path (first source, for paste-back), crop (its CropTransform), history
    avatar.safetensors     tensors: psi (1,A), e_new (1,N), iris (T,2,3) (centre x, y in crop px, seen 0/1;
                           optional: gaze), landmarks (T,68,2) in crop px at the model's
                           image size, thumbnail (s,s,3) uint8 crop of the first source; with a generator that
                           needs sources (the warp generators) also source_images (T,R,R,3) uint8, the T
                           crops (R = S, or the TPS renderer's output size), and for the TPS renderer
                           source_valid (T,R,R) uint8 (255 where the crop shows the photo, 0 past its edge)
    generator.safetensors  FT only: the fine-tuned G (its P is the meta-learned one, unused)
    discriminator.safetensors  FT, optional: D' = (V, w', b), only needed to fine-tune further
Loading checks that the avatar fits the model it is loaded for (an `AvatarModel`: the renderer or the
pipeline): the same architecture (`cfg.model`) always, the same weights (fingerprint) for FF avatars, whose
psi' only means something to the G that made it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from .config import Config
from .data.crop import CropTransform
from .images import to_tensor
from .landmarks.iris import complete_gaze, conjugate, relative_gaze
from .landmarks.raster import rasterize_tensor
from .model_dir import read_config, save_dir
from .models import ConvPart, PersonDiscriminator, Sources, TalkingHeadGenerator, build_generator
from .models.tps_prior import normalise_points
from .safetensors_io import CheckpointError, load_module, load_tensors

KINDS = ("ff", "ft")
MAX_RENDER_SIZE = 8192  # the largest source crop an avatar may hold (px; inference.output_size's range)


class AvatarModel(Protocol):
    """What loading an avatar needs to know about the model it is for: `renderer.Renderer` has it (and the
    pipeline, which holds one)."""

    @property
    def cfg(self) -> Config: ...  # the model's config (architecture, data settings)

    @property
    def device(self) -> torch.device: ...  # where the avatar's tensors and FT networks go

    @property
    def generator(self) -> TalkingHeadGenerator: ...  # the meta-learned G (psi' size, whether it needs sources)

    @property
    def model_fingerprint(self) -> str: ...  # of the meta-learned E and G (FF avatars must match it)


@dataclass
class Avatar:
    """A person's AdaIN parameters psi' (and, for FT, a fine-tuned generator), ready to render."""

    cfg: Config  # the model's config (image size, ...)
    kind: str  # "ff" or "ft"
    psi: Tensor  # (1, num_adain_params) psi'
    e_new: Tensor  # (1, N) mean embedding of the T frames
    landmarks: np.ndarray | None  # (T,68,2) float32 source landmarks in crop px at cfg.model.image_size
    thumbnail: np.ndarray | None = None  # (s,s,3) uint8 crop of the first source
    generator: nn.Module | None = None  # FT: the fine-tuned G (eval mode); FF: None (the model's G)
    discriminator: nn.Module | None = None  # FT: D' (PersonDiscriminator), kept only when asked for
    model_fingerprint: str = ""  # of the meta-learned E and G the avatar was made with
    transform: CropTransform | None = None  # first source: frame -> crop (paste-back)
    source_path: str | None = None  # first source's file (paste-back after loading)
    sources: list[str] = field(default_factory=list)  # names of the source files (information)
    background: np.ndarray | None = None  # first source's full image, in memory only (paste-back)
    epochs: int = 0  # FT epochs
    history: list[dict[str, float]] = field(default_factory=list)  # FT: one loss record per G' step
    warnings: list[str] = field(default_factory=list)
    source_images: np.ndarray | None = None  # (T,R,R,3) uint8 crops: the warp generators' sources (R = S, or the TPS renderer's output size)
    source_valid: np.ndarray | None = None  # (T,R,R) uint8, 255 where a source crop shows the photo, 0 past its edge (TPS renderer)
    content_loss: str = ""  # FT: the content loss it was fine-tuned with (ContentLoss.mode; "" for FF)
    iris: np.ndarray | None = None  # (T,2,2) float32 iris centres per source (crop px at S; NaN = not seen; landmarks/iris.py)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"avatar kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "ft" and self.generator is None:
            raise ValueError("an FT avatar needs its fine-tuned generator")

    @property
    def num_frames(self) -> int:
        """T, the number of frames it was made from."""
        return 0 if self.landmarks is None else int(self.landmarks.shape[0])

    @property
    def render_size(self) -> int:
        """Side (px) of the frames this avatar renders: its source crops' (the TPS renderer renders at the size
        the avatar was made for), else the model's."""
        if self.source_images is not None:
            return int(self.source_images.shape[1])
        return int(self.cfg.model.image_size)

    def source_tensors(self, device, thickness: float | None = None, *, gaze: bool = False,
                       pupils: bool = False) -> Sources | None:
        """The T source crops x (T,3,R,R) in [-1,1], their landmark images y (T,3,S,S) (S = the model's size),
        landmarks (T,68,2) normalised, or (T,70,2) with the iris centres for a model that renders gaze
        (`gaze_points`) with `gaze`, y drawn with the pupils with `pupils`, and validity (T,1,R,R) in [0,1] (None
        when not stored); None without source crops."""
        if self.source_images is None or self.landmarks is None:
            return None
        s = int(self.cfg.model.image_size)
        x = torch.stack([to_tensor(img) for img in self.source_images])
        lm = self.gaze_points() if gaze else self.landmarks
        y = rasterize_tensor(lm, s, thickness, pupils)
        points = normalise_points(torch.as_tensor(np.asarray(lm, np.float32)), s)
        valid = None
        if self.source_valid is not None:
            valid = torch.from_numpy(np.ascontiguousarray(self.source_valid)).float().div(255)[:, None]
        return Sources(x.to(device), y.to(device), points.to(device), None if valid is None else valid.to(device))

    def gaze_points(self) -> np.ndarray | None:
        """(T,70,2): the source landmarks with their iris centres (not seen: the avatar's usual gaze, or the
        eye's middle; `iris.complete_gaze`)."""
        return None if self.landmarks is None else complete_gaze(self.landmarks, self.iris)

    @property
    def rest_gaze(self) -> np.ndarray:
        """(2,2) the first source's gaze (relative, `iris.relative_gaze`): where the avatar looks when the
        driver's eyes are not seen, and the camera for eye contact; 0 (the eye's middle) when not seen."""
        if self.landmarks is None or self.iris is None:
            return np.zeros((2, 2))
        g = conjugate(relative_gaze(self.landmarks[0], self.iris[0]))
        return np.where(np.isfinite(g), g, 0.0)

    @property
    def face(self) -> np.ndarray | None:
        """(68,2) the landmarks whose shape adapted driving keeps: those of the first source frame."""
        return None if self.landmarks is None else self.landmarks[0]

    # --- saving ---------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, with_discriminator: bool = False) -> Path:
        """Write the avatar directory atomically (module docstring). FT: `with_discriminator` adds D'.
        An existing avatar directory at `path` is replaced; anything else there is an error (never overwritten)."""
        _check_target(Path(path))
        tensors: dict[str, Tensor] = {"psi": self.psi.detach().float().cpu(),
                                      "e_new": self.e_new.detach().float().cpu()}
        if self.landmarks is not None:
            tensors["landmarks"] = torch.from_numpy(np.asarray(self.landmarks, np.float32))
        if self.thumbnail is not None:
            tensors["thumbnail"] = torch.from_numpy(np.ascontiguousarray(self.thumbnail, np.uint8))
        if self.source_images is not None:
            tensors["source_images"] = torch.from_numpy(np.ascontiguousarray(self.source_images, np.uint8))
        if self.iris is not None:  # (T,2,3) x, y, seen: the file holds finite numbers only
            c = np.asarray(self.iris, np.float32)
            seen = np.isfinite(c).all(-1, keepdims=True)
            tensors["iris"] = torch.from_numpy(np.concatenate([np.where(seen, c, 0), seen], -1).astype(np.float32))
        if self.source_valid is not None:
            tensors["source_valid"] = torch.from_numpy(np.ascontiguousarray(self.source_valid, np.uint8))
        parts: dict[str, Any] = {"avatar": tensors}
        if self.kind == "ft":
            parts["generator"] = self.generator
            if with_discriminator and self.discriminator is not None:
                parts["discriminator"] = self.discriminator
        meta = {"kind": self.kind, "num_frames": self.num_frames, "model_fingerprint": self.model_fingerprint,
                "epochs": int(self.epochs), "sources": list(self.sources), "source_path": self.source_path,
                "crop": self.transform.to_dict() if self.transform is not None else None,
                "history": self.history[-1:] if self.history else [],
                **({"content_loss": self.content_loss} if self.content_loss else {})}
        return save_dir(path, self.cfg, parts, stage="avatar", meta=meta)

    # --- loading --------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, model: AvatarModel) -> "Avatar":
        """Load an avatar directory for `model` (the renderer or the pipeline); CheckpointError when it is not
        one or does not fit the model."""
        cfg, meta = read_config(path, expected="avatar")
        if meta.get("stage") != "avatar":
            raise CheckpointError(f"{path}: holds a {meta.get('stage')!r} directory, not an avatar "
                                  "(make one with `talking-heads avatar create`)")
        _check_model(path, cfg, meta, model)
        tensors = load_tensors(path, "avatar", model.device)
        _check_tensors(path, tensors, model)
        kind = meta.get("kind")
        if kind not in KINDS:
            raise CheckpointError(f"{path}: meta.kind must be one of {list(KINDS)}, got {kind!r}")
        generator, discriminator = _load_networks(path, kind, meta, model)
        crop = meta.get("crop")
        lm = tensors.get("landmarks")
        thumb = tensors.get("thumbnail")
        src = tensors.get("source_images")
        valid = tensors.get("source_valid")
        iris = tensors.get("iris")
        if model.generator.needs_sources and src is None:
            raise CheckpointError(f"{path}: this model's generator needs the avatar's source frames, which the "
                                  "avatar does not hold; create the avatar again")
        try:
            return cls(cfg=model.cfg, kind=kind, psi=tensors["psi"], e_new=tensors["e_new"],
                       landmarks=None if lm is None else lm.cpu().numpy(),
                       thumbnail=None if thumb is None else thumb.cpu().numpy(), generator=generator,
                       discriminator=discriminator, model_fingerprint=str(meta.get("model_fingerprint", "")),
                       transform=CropTransform.from_dict(crop) if crop else None,
                       source_path=meta.get("source_path"), sources=list(meta.get("sources", [])),
                       epochs=int(meta.get("epochs", 0)), history=list(meta.get("history", [])),
                       content_loss=str(meta.get("content_loss", "")),
                       source_images=None if src is None else src.cpu().numpy(),
                       source_valid=None if valid is None else valid.cpu().numpy(),
                       iris=None if iris is None else
                       np.where(iris[..., 2:].cpu().numpy() > 0.5, iris[..., :2].cpu().numpy(), np.nan))
        except ValueError as err:
            raise CheckpointError(f"{path}: not a valid avatar ({err})") from None


def _load_networks(path, kind: str, meta: dict, model: AvatarModel) -> tuple[nn.Module | None, nn.Module | None]:
    """(G', D') of an FT avatar, on the model's device in eval mode (D' None unless saved); (None, None) for FF."""
    if kind != "ft":
        return None, None
    generator = load_module(path, "generator", build_generator(model.cfg)).to(model.device).eval()
    discriminator = None
    if meta.get("files", {}).get("discriminator"):
        discriminator = load_module(path, "discriminator", _fresh_discriminator(model.cfg)).to(model.device).eval()
    return generator, discriminator


def _check_tensors(path, tensors: dict[str, Tensor], model: AvatarModel) -> None:
    """CheckpointError unless avatar.safetensors holds psi (1,A), e_new (1,N), landmarks (T,68,2), a uint8
    thumbnail (s,s,3) and source crops (T,S,S,3) as this model needs them (values are finite: load_tensors)."""
    file = Path(path) / "avatar.safetensors"
    a = int(model.generator.num_adain_params)
    n = int(model.cfg.model.embedding_dim)
    for key, want in (("psi", (1, a)), ("e_new", (1, n))):
        if key not in tensors:
            raise CheckpointError(f"{file}: lacks {key!r}; not an avatar file (create the avatar again)")
        got = tuple(tensors[key].shape)
        if got != want:
            raise CheckpointError(f"{file}: {key} is {list(got)}, this model needs {list(want)}: the avatar was "
                                  "made with another model or the file is damaged")
        if not tensors[key].is_floating_point():
            raise CheckpointError(f"{file}: {key} must hold floating-point values, got {tensors[key].dtype}")
    lm = tensors.get("landmarks")
    if lm is not None and (lm.dim() != 3 or tuple(lm.shape[1:]) != (68, 2) or len(lm) < 1):
        raise CheckpointError(f"{file}: landmarks are {list(lm.shape)}, expected (T,68,2)")
    for key, dims in (("thumbnail", 3), ("source_images", 4)):
        t = tensors.get(key)
        if t is not None and (t.dtype != torch.uint8 or t.dim() != dims or t.shape[-1] != 3):
            raise CheckpointError(f"{file}: {key} must be uint8 {'(s,s,3)' if dims == 3 else '(T,S,S,3)'}, got "
                                  f"{t.dtype} {list(t.shape)}")
    src = tensors.get("source_images")
    if src is not None and (lm is None or len(src) != len(lm)):
        raise CheckpointError(f"{file}: source_images and landmarks disagree on T")
    if src is not None and (src.shape[1] != src.shape[2] or not 16 <= src.shape[1] <= MAX_RENDER_SIZE):
        raise CheckpointError(f"{file}: source_images are {list(src.shape)}: square crops of 16 to "
                              f"{MAX_RENDER_SIZE} px expected")
    s = int(model.cfg.model.image_size)
    if src is not None and not getattr(model.generator, "needs_points", False) and src.shape[1] != s:
        raise CheckpointError(f"{file}: source_images are {src.shape[1]} px, this model's generator reads them at "
                              f"its own {s} px: the avatar was made with another model or the file is damaged")
    iris = tensors.get("iris")
    if iris is not None and (lm is None or tuple(iris.shape) != (len(lm), 2, 3)):
        raise CheckpointError(f"{file}: iris is {list(iris.shape)}, expected (T,2,3) (x, y, seen) like the landmarks")
    valid = tensors.get("source_valid")
    if valid is not None and (src is None or valid.dtype != torch.uint8 or tuple(valid.shape) != tuple(src.shape[:3])):
        raise CheckpointError(f"{file}: source_valid must be uint8 (T,R,R) like source_images, got {valid.dtype} "
                              f"{list(valid.shape)}")


def _check_target(path: Path) -> None:
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return
    try:
        _, meta = read_config(path)
    except CheckpointError:
        meta = {}
    if meta.get("stage") != "avatar":
        raise CheckpointError(f"{path} exists and is not an avatar directory: not overwriting it (choose another -o)")


def _check_model(path, cfg: Config, meta: dict, model: AvatarModel) -> None:
    """CheckpointError when the avatar was made for another architecture (or other weights, for FF)."""
    if cfg.model != model.cfg.model:
        diff = [f"{k}: avatar {v} vs model {getattr(model.cfg.model, k)}" for k, v in vars(cfg.model).items()
                if getattr(model.cfg.model, k) != v]
        raise CheckpointError(f"{path}: the avatar was made with a different model architecture "
                              f"({'; '.join(diff[:4])}). Load it with the model it was made with (--model), or "
                              "create the avatar again with this one.")
    made_with = str(meta.get("model_fingerprint", ""))
    if meta.get("kind") == "ff" and made_with != model.model_fingerprint:
        raise CheckpointError(f"{path}: this feed-forward avatar was made with other model weights (fingerprint "
                              f"{made_with or 'unknown'}, this model {model.model_fingerprint}); its AdaIN "
                              "parameters only fit the generator that made them. Load it with that model "
                              "(--model), or create the avatar again.")


def _fresh_discriminator(cfg: Config) -> nn.Module:
    """An untrained D' = (V, w', b) of the model's architecture, for load_module to fill."""
    n = cfg.model.embedding_dim
    return PersonDiscriminator(ConvPart(cfg.model), torch.zeros(n), torch.zeros(()))

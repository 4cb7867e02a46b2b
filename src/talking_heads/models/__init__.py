"""The paper's three networks (paper.md section 3) and the perceptual nets of the content loss.

- `Embedder` E(x, y) -> e                               models/embedder.py
- `Generator` G(y, psi), psi = P e (`adain_params`)     models/generator.py
- `Discriminator` D(x, y, i) = V^T (W_i + w0) + b        models/discriminator.py (`single_person` -> D')
- `VGG19`, `VGGFace`                                     models/perceptual.py (loaded by path, frozen)
- `WarpGenerator` (option `model.generator = "warp"`)     models/warp.py: warp-then-refine, same interface
- `TpsGenerator` (option `model.generator = "tps"`)       models/tps.py (+ tps_prior.py): the photo warped by its
  landmarks, a learned residual flow and mask, generated fill for what the photo lacks; `Sources` models/sources.py
- `TalkingHeadGenerator`, the generators' interface      models/interface.py
- `FaceIdentityNet` (dlib's face ResNet, frozen)         models/face_identity.py + dlib_format.py (its reader)

Generators are built from `GENERATORS` by `model.generator`; they share one interface
(`TalkingHeadGenerator`, models/interface.py), so training steps, checkpoints, fine-tuning and the pipeline
take any of them. A new generator is its own module plus one line in `GENERATORS`.

`build_networks(cfg, num_videos)` builds E, G, D for a Config; `parameter_counts(cfg)` counts them.
Initialisation is deterministic given torch.manual_seed (modules are built in a fixed order E, G, D).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..config import Config
from .discriminator import ConvPart, Discriminator, PersonDiscriminator
from .embedder import Embedder
from .generator import Generator
from .interface import TalkingHeadGenerator
from .sources import Sources
from .tps import TpsGenerator
from .warp import WarpGenerator

# generators by `model.generator`, each a TalkingHeadGenerator (models/interface.py)
GENERATORS: dict[str, type[TalkingHeadGenerator]] = {"adain": Generator, "warp": WarpGenerator,
                                                     "tps": TpsGenerator}

__all__ = ["Embedder", "Generator", "WarpGenerator", "TpsGenerator", "Sources", "TalkingHeadGenerator", "GENERATORS", "build_generator",
           "Discriminator", "PersonDiscriminator", "ConvPart", "Networks", "build_networks", "parameter_counts"]


@dataclass
class Networks:
    """The meta-learned networks (what a model directory stores, one safetensors file each)."""

    embedder: Embedder
    generator: TalkingHeadGenerator
    discriminator: Discriminator


def build_generator(cfg: Config) -> TalkingHeadGenerator:
    """The generator `cfg.model.generator` names (GENERATORS)."""
    if cfg.model.generator not in GENERATORS:
        raise ValueError(f"model.generator must be one of {sorted(GENERATORS)}, got {cfg.model.generator!r}")
    return GENERATORS[cfg.model.generator](cfg.model)


def build_networks(cfg: Config, num_videos: int) -> Networks:
    """E, G, D for `cfg.model`, with a W table of `num_videos` rows. On the default device, train mode."""
    return Networks(embedder=Embedder(cfg.model), generator=build_generator(cfg),
                    discriminator=Discriminator(cfg.model, num_videos))


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts(cfg: Config, num_videos: int = 1) -> dict[str, int]:
    """Parameter counts of E, G (P included; P also alone), V (D's conv part, without W, w0, b), D, and the
    size of psi. Built on the meta device (no memory, no initialisation) without spectral norm, which only
    adds buffers (u, v), never parameters, so the counts are the same."""
    cfg = replace(cfg, model=replace(cfg.model, spectral_norm=False))
    with torch.device("meta"):
        nets = build_networks(cfg, num_videos)
    g = nets.generator
    return {
        "embedder": _count(nets.embedder),
        "generator": _count(g),
        "projection": _count(g.projection),
        "adain_params": g.num_adain_params,
        "discriminator_V": _count(nets.discriminator.V),
        "discriminator": _count(nets.discriminator),
    }

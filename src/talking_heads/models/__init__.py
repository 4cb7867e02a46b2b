"""The paper's three networks (paper.md section 3) and the perceptual nets of the content loss.

- `Embedder` E(x, y) -> e                               models/embedder.py
- `Generator` G(y, psi), psi = P e (`adain_params`)     models/generator.py
- `Discriminator` D(x, y, i) = V^T (W_i + w0) + b        models/discriminator.py (`single_person` -> D')
- `VGG19`, `VGGFace`                                     models/perceptual.py (loaded by path, frozen)

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

__all__ = ["Embedder", "Generator", "Discriminator", "PersonDiscriminator", "ConvPart", "Networks",
           "build_networks", "parameter_counts"]


@dataclass
class Networks:
    """The meta-learned networks (what a model directory stores, one safetensors file each)."""

    embedder: Embedder
    generator: Generator
    discriminator: Discriminator


def build_networks(cfg: Config, num_videos: int) -> Networks:
    """E, G, D for `cfg.model`, with a W table of `num_videos` rows. On the default device, train mode."""
    return Networks(embedder=Embedder(cfg.model), generator=Generator(cfg.model),
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

"""What a meta-learning run trains, bound once (paper.md sections 4, 5): E and G as one module, D, their Adam
optimisers, the content loss and the options, as a `steps.GanStep` whose generator forward is E over the K
source frames, psi = P e_hat, G.

Distributed: E and G sit in one module (`EmbedderGenerator`) wrapped in a single DDP, D in another; the G step
calls D unwrapped (`critic`), the D step through its wrapper. `networks` keeps the plain modules, which is
what checkpoints store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from .. import dist
from ..config import Config
from ..losses import ContentLoss
from ..models.sources import Sources
from ..models.tps_prior import normalise_points
from . import steps
from .augment import DiffAugment, LeCam


class EmbedderGenerator(nn.Module):
    """E and G (incl. P) as one module, so that one DDP wrapper and one forward cover the generator side."""

    def __init__(self, embedder: nn.Module, generator: nn.Module):
        super().__init__()
        self.embedder, self.generator = embedder, generator

    def forward(self, x_src: Tensor, y_src: Tensor, y_tgt: Tensor, with_aux: bool = False,
                p_src: Tensor | None = None, p_tgt: Tensor | None = None, valid_src: Tensor | None = None):
        """(x_fake (B,3,H,W), e_hat (B,N)), plus the generator's aux dict with `with_aux` (the warp
        generators' regularisers). A generator that `needs_sources` gets the K source frames too, one that
        `needs_points` their landmarks p_src (B,K,68,2) and the target's p_tgt (B,68,2) (crop px), and where
        the sources are real, valid_src (B,K,1,H,W) (border dropout; None = everywhere)."""
        b, k = x_src.shape[:2]
        e = self.embedder(x_src.flatten(0, 1), y_src.flatten(0, 1))  # B*K,N
        e_hat = e.view(b, k, -1).mean(1)  # B,N
        psi = self.generator.adain_params(e_hat)  # B,num_adain_params
        sources, points = None, None
        if self.generator.needs_sources:
            sources = Sources(x_src, y_src)
        if getattr(self.generator, "needs_points", False):
            if p_src is None or p_tgt is None:
                raise ValueError("this generator needs the landmarks of the sources and the target (p_src, p_tgt)")
            size = y_tgt.shape[-1]
            sources = Sources(x_src, y_src, normalise_points(p_src, size), valid_src)
            points = normalise_points(p_tgt, size)
        x_fake, aux = self.generator.forward_with_aux(y_tgt, psi, sources, points)  # B,3,H,W
        return (x_fake, e_hat, aux) if with_aux else (x_fake, e_hat)


@dataclass(eq=False, kw_only=True)
class MetaState(steps.GanStep):
    """Everything one meta-learning step touches: the GAN step over episodes (x_src, y_src (B,K,3,H,W),
    x_tgt, y_tgt (B,3,H,W), video (B,), optional p_tgt, aug_seed) and the plain networks."""

    networks: Any  # models.Networks: the plain modules (what checkpoints store)

    RENDER_RANGE = "meta.eg_forward"

    @property
    def eg(self) -> nn.Module:
        """EmbedderGenerator, DDP-wrapped in a world > 1 (and compiled with train.compile)."""
        return self.generator

    @property
    def d(self) -> nn.Module:
        """The discriminator as the D step calls it (DDP-wrapped in a world > 1)."""
        return self.discriminator

    def render(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        x_fake, e_hat, aux = self.generator(batch["x_src"], batch["y_src"], batch["y_tgt"], with_aux=True,
                                            p_src=batch.get("p_src"), p_tgt=batch.get("p_tgt"),
                                            valid_src=batch.get("valid_src"))
        return x_fake, e_hat, aux


def build_optimizers(networks, cfg: Config) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    t = cfg.train
    g_params = list(networks.embedder.parameters()) + networks.generator.meta_parameters()
    opt_g = steps.adam(g_params, lr=t.lr_generator, betas=t.betas, impl=t.adam)
    opt_d = steps.adam(networks.discriminator.parameters(), lr=t.lr_discriminator, betas=t.betas, impl=t.adam)
    return opt_g, opt_d


def build_meta_state(cfg: Config, networks, info: dist.DistInfo, content_loss: nn.Module | None = None) -> MetaState:
    """Move networks to the device, wrap them for DDP / torch.compile, build optimisers and the content loss."""
    for m in (networks.embedder, networks.generator, networks.discriminator):
        m.to(info.device).train()
    opt_g, opt_d = build_optimizers(networks, cfg)
    eg: nn.Module = EmbedderGenerator(networks.embedder, networks.generator)
    d: nn.Module = networks.discriminator
    eg, d = dist.wrap_ddp(eg, info), dist.wrap_ddp(d, info)
    if cfg.train.compile:
        eg, d = torch.compile(eg), torch.compile(d)
    if content_loss is None:
        content_loss = ContentLoss(cfg)
    content_loss = content_loss.to(info.device).eval()
    steps.set_requires_grad([content_loss], False)
    t = cfg.train
    return MetaState(networks=networks, generator=eg, discriminator=d, critic=networks.discriminator,
                     opt_g=opt_g, opt_d=opt_d, content_loss=content_loss, loss=cfg.loss, d_steps=t.d_steps_per_g_step,
                     amp=t.amp, amp_cpu=steps.cpu_amp(t.amp_cpu), match=cfg.loss.match_loss,
                     augment=DiffAugment(t.diffaugment) or None,
                     lecam=LeCam(t.lecam_decay) if t.lecam_weight > 0 else None, lecam_weight=t.lecam_weight)

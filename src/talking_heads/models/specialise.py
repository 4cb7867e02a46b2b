"""A generator specialised to one avatar, for rendering (paper section 1 stage 3, puppeteering).

While an avatar is being rendered, everything person-specific is fixed: psi' (FF: P e_new; FT: the fine-tuned
psi'), the (fine-tuned) generator weights and, for the warp generator, the avatar's T source frames and their
landmark images. `specialise(generator, psi, sources)` (the generator's own `specialise` method, which for
the generators of models.GENERATORS is `AvatarGenerator.from_generator`) turns that into a plain eval-mode
module `AvatarGenerator: y (B,3,H,W) -> x_hat (B,3,H,W)` whose forward does only per-frame work:

- spectral norm folded into plain weights (`fold_spectral_norm`): W / sigma(W) evaluated once with the stored
  power-iteration vectors u, v (eval mode: exactly what every eval forward computes, so no power iteration and
  no weight recomputation per frame);
- AdaIN parameters precomputed (the generator's `fix_adain`, models/blocks.py's `FixedNorm`): each AdaIN
  layer's slice of psi becomes a per-channel scale 1 + gamma and bias beta, applied by the instance norm's
  own affine step (one fused op instead of three); the encoder's instance norms become the same module (fast
  on channels_last tensors);
- the resampling convolutions' fused kernels (upsampling + conv3x3 as one transposed convolution, conv3x3 +
  average pooling as one stride-2 convolution; models/blocks.py) computed once (`fuse_resampling`);
- the warp generators' sources held as buffers (no rasterising of the T landmark images per frame; the TPS
  renderer's landmarks and validity masks too).

The result is the same function as `generator(y, psi, sources)` (tested to 1e-5 in fp32), traceable and
exportable to ONNX (`talking_heads.inference.export_onnx`). Pure: tensors in, tensors out; the original
generator is not modified (deep copy).

Glossary: y landmark image, psi AdaIN parameters (1, A), sources (x_src, y_src) (T,3,H,W).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .blocks import FixedConvAvgPool, FixedNorm, FixedUpsampleConv, ResBlock
from .sources import NAMES, Sources, as_sources

__all__ = ["AvatarGenerator", "FixedNorm", "fold_spectral_norm", "fix_norms", "fuse_resampling", "specialise"]


def fold_spectral_norm(module: nn.Module) -> nn.Module:
    """Replace every parametrised submodule (spectral norm) of `module` by a plain one of its original class
    whose weight is the tensor the parametrisation evaluates to, in place (`module` itself must not be
    parametrised). Needs eval mode, so that evaluating runs no power iteration step.

    Not `parametrize.remove_parametrizations`: it deletes the weight property from the parametrised class,
    which a deep copy shares with its original, so folding a copy would break the original."""
    if any(m.training for m in module.modules()):
        raise ValueError("fold_spectral_norm needs an eval-mode module (training mode would step u, v)")
    with torch.no_grad():
        for parent in list(module.modules()):
            for name, child in list(parent.named_children()):
                if parametrize.is_parametrized(child):
                    setattr(parent, name, _plain(child))
    return module


def _plain(m: nn.Module) -> nn.Module:
    """A copy of parametrised `m` as its original class, each parametrised tensor evaluated once."""
    cls = parametrize.type_before_parametrizations(m)
    plain = cls.__new__(cls)
    plain.__dict__ = dict(m.__dict__)
    plain._parameters, plain._buffers = dict(m._parameters), dict(m._buffers)
    plain._modules = {k: v for k, v in m._modules.items() if k != "parametrizations"}
    for name in m.parametrizations.keys():
        plain._parameters[name] = nn.Parameter(getattr(m, name).detach().clone())
    return plain


def fix_norms(module: nn.Module) -> nn.Module:
    """Replace every affine nn.InstanceNorm2d of `module` (the generator's encoder) by a FixedNorm, in place."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.InstanceNorm2d):
                setattr(parent, name, FixedNorm.from_instance_norm(child))
    return module


def fuse_resampling(module: nn.Module) -> nn.Module:
    """In every ResBlock of `module`, compute the fused resampling kernels once, in place: an up block's
    upsampling + conv0 becomes a FixedUpsampleConv, a down block's conv1 + pooling a FixedConvAvgPool (the
    same linear maps ResBlock otherwise folds from the weights every call; models/blocks.py)."""
    for block in module.modules():
        if isinstance(block, ResBlock) and block.resample == "up" and isinstance(block.conv0, nn.Conv2d):
            block.conv0 = FixedUpsampleConv(block.conv0)
        if isinstance(block, ResBlock) and block.resample == "down" and isinstance(block.conv1, nn.Conv2d):
            block.conv1 = FixedConvAvgPool(block.conv1)
    return module


class AvatarGenerator(nn.Module):
    """One avatar's renderer: `forward(y) -> x_hat` (module docstring). Build it with `specialise` (or a
    generator's `specialise` method)."""

    def __init__(self, generator: nn.Module, sources: Sources | tuple[Tensor, Tensor] | None = None):
        super().__init__()
        self.generator = generator
        self.needs_sources = bool(generator.needs_sources)
        self.needs_points = bool(getattr(generator, "needs_points", False))
        sources = as_sources(sources)
        if self.needs_sources and sources is None:
            raise ValueError("this generator needs the avatar's source frames and landmark images")
        self.source_names: list[str] = []
        for name, t in ([] if sources is None else sources.tensors()):
            self.register_buffer(name, t.detach().clone())  # x_src, y_src (T,3,H,W); p_src (T,68,2); valid_src
            self.source_names.append(name)

    @classmethod
    def from_generator(cls, generator: nn.Module, psi: Tensor, sources: tuple[Tensor, Tensor] | None = None
                       ) -> "AvatarGenerator":
        """The recipe the generators' `specialise` methods share: a frozen eval-mode copy of `generator` with
        spectral norm folded, psi (1, A) fixed by the generator's own `fix_adain`, the instance norms fixed
        and the resampling kernels fused."""
        g = copy.deepcopy(generator).eval()
        fold_spectral_norm(g)
        g.fix_adain(psi.to(next(g.parameters()).device))
        fix_norms(g)
        fuse_resampling(g)
        for p in g.parameters():
            p.requires_grad_(False)
        return cls(g, sources).eval()

    def sources(self) -> Sources | None:
        """The held sources (None for a generator that does not use them)."""
        if not self.needs_sources:
            return None
        held = {name: getattr(self, name) for name in self.source_names}
        return Sources(*(held.get(name) for name in NAMES))

    def forward(self, y: Tensor, points: Tensor | None = None) -> Tensor:
        """y (B,3,S,S) landmark images in [-1,1] (and, for the TPS renderer, the driver's landmarks points
        (B,68,2), normalised) -> x_hat (B,3,R,R) in [-1,1] (R = S but for the TPS renderer: its sources')."""
        if self.needs_points:
            return self.generator(y, None, self.sources(), points)
        return self.generator(y, None, self.sources())


def specialise(generator: nn.Module, psi: Tensor, sources: tuple[Tensor, Tensor] | None = None) -> AvatarGenerator:
    """An eval-mode AvatarGenerator equal to `generator(y, psi, sources)` for every y (module docstring):
    `generator.specialise(psi, sources)`. generator: any of models.GENERATORS (models/interface.py); psi
    (1, A); sources (T,3,H,W) x 2 for generators that need them."""
    return generator.specialise(psi, sources)

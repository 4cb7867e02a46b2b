"""LPIPS v0.1 (Zhang et al. 2018), learned perceptual distance between generated and ground-truth frames (not in
the paper's Table 1; a perceptual reference point next to SSIM). Lower is better; 0 for identical images.

Defined here (torchvision is not usable) with the key layout of the standard files, loaded by path, nothing
downloaded; without the files LPIPS is "not available", never 0:
- linear layers: the `lpips` package's `weights/v0.1/alex.pth` or `vgg.pth` (keys `lin0.model.1.weight` ...
  `lin4.model.1.weight`, shapes (1,C,1,1)) -> `EvalConfig.lpips_weights` / `--lpips-weights`. The backbone
  (alex or vgg) is recognised from these shapes.
- backbone: torchvision's ImageNet `alexnet-owt-7be5be79.pth` or `vgg16-397923af.pth` (keys
  `features.N.weight/bias`; `classifier.*` ignored) -> `EvalConfig.lpips_backbone` / `--lpips-backbone`.
  May be omitted when the lin file also holds the `features.*` keys (what `LPIPS.state_dict()` writes).

d(x0, x1) = sum_l mean_hw( w_l . (f_l(x0)/|f_l(x0)| - f_l(x1)/|f_l(x1)|)^2 ), f_l the ReLU outputs of the
backbone's 5 stages (alex: relu1-5, vgg16: relu1_2, 2_2, 3_3, 4_3, 5_3), unit-normalised over channels
(eps 1e-10), on inputs in [-1,1] shifted and scaled by LPIPS's fixed ImageNet constants.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from ..images import to_tensor
from ..models.perceptual import VGG16_CFG, PerceptualWeightsError, read_state_dict, vgg_features
from .base import PairedMetric

SHIFT = (-0.030, -0.088, -0.188)  # LPIPS ScalingLayer
SCALE = (0.458, 0.448, 0.450)

# backbone -> (channels of the 5 tapped stages, indices of the tapped ReLUs in torchvision's `features`)
NETS = {
    "alex": ((64, 192, 384, 256, 256), (1, 4, 7, 9, 11)),
    "vgg": ((64, 128, 256, 512, 512), (3, 8, 15, 22, 29)),
}


def alexnet_features() -> nn.Sequential:
    """torchvision's `alexnet().features` layout, truncated after relu5 (index 11)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
    )


class NetLin(nn.Module):
    """1x1 convolution C -> 1 without bias, as `model.1` (index 0 was a Dropout in the original training code)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """`forward(x0, x1)` RGB (B,3,H,W) in [-1,1] -> (B,) distances."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in NETS:
            raise ValueError(f"unknown LPIPS backbone {net!r}; choose one of {sorted(NETS)}")
        self.net_name = net
        channels, self.taps = NETS[net]
        self.features = alexnet_features() if net == "alex" else vgg_features(VGG16_CFG, self.taps[-1])
        self.lins = nn.ModuleList(NetLin(c) for c in channels)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def stages(self, x: Tensor) -> list[Tensor]:
        h = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                out.append(h)
        return out

    def forward(self, x0: Tensor, x1: Tensor) -> Tensor:
        total = x0.new_zeros(x0.shape[0])
        for lin, f0, f1 in zip(self.lins, self.stages(x0), self.stages(x1)):
            n0 = f0 / (f0.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            n1 = f1 / (f1.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((n0 - n1) ** 2).mean(dim=(1, 2, 3))  # B
        return total

    # --- weights ----------------------------------------------------------------------------------------
    @staticmethod
    def convert_state_dict(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Map the standard files' keys (`lin{k}.model.{0,1}.weight`, `[module.]features.N.*`, `lins.k.*`) onto
        this module's (`lins.k.model.1.weight`, `features.N.*`); anything else is dropped."""
        out = {}
        for key, value in sd.items():
            m = re.fullmatch(r"(?:module\.)?(?:net\.)?lins?\.?(\d)\.model\.\d\.weight", key)
            if m:
                out[f"lins.{m.group(1)}.model.1.weight"] = value
                continue
            m = re.fullmatch(r"(?:module\.)?(?:net\.)?features\.(\d+)\.(weight|bias)", key)
            if m:
                out[f"features.{m.group(1)}.{m.group(2)}"] = value
        return out

    @staticmethod
    def detect_net(sd: Mapping[str, Tensor]) -> str:
        """"alex" or "vgg" from the linear layers' input channels."""
        chans = tuple(int(sd[f"lins.{k}.model.1.weight"].shape[1]) for k in range(5)
                      if f"lins.{k}.model.1.weight" in sd)
        for name, (channels, _) in NETS.items():
            if chans == channels:
                return name
        raise ValueError(f"LPIPS linear layers with input channels {chans} match no supported backbone "
                         f"({ {n: c for n, (c, _) in NETS.items()} })")

    @classmethod
    def from_files(cls, lin_path: str | os.PathLike, backbone_path: str | os.PathLike | None = None) -> "LPIPS":
        """Load the linear layers (and, unless they hold it too, the backbone) from standard files; strict."""
        sd = cls.convert_state_dict(read_state_dict(lin_path))
        if backbone_path:
            sd.update({k: v for k, v in cls.convert_state_dict(read_state_dict(backbone_path)).items()
                       if k.startswith("features.")})
        try:
            net = cls(cls.detect_net(sd))
        except ValueError as err:
            raise PerceptualWeightsError(f"{lin_path}: {err}") from None
        expected = net.state_dict()
        missing = sorted(set(expected) - set(sd))
        bad = [k for k in expected if k in sd and sd[k].shape != expected[k].shape]
        if missing or bad:
            where = f"{lin_path}" + (f" + {backbone_path}" if backbone_path else "")
            hint = "" if backbone_path else " (give the torchvision backbone file with --lpips-backbone)"
            raise PerceptualWeightsError(f"{where}: not LPIPS-{net.net_name} weights: missing {missing[:4]}, "
                                         f"wrong shape {bad[:4]}{hint}")
        net.load_state_dict({k: sd[k] for k in expected})
        return net.eval().requires_grad_(False)


class LPIPSMetric(PairedMetric):
    """Registry entry "lpips": available with `EvalConfig.lpips_weights` (+ `lpips_backbone`) loadable."""

    name = "lpips"
    higher_is_better = False
    description = "LPIPS v0.1 perceptual distance"
    batch_size = 16

    def __init__(self, cfg=None, device: str = "cpu"):
        super().__init__(cfg, device)
        lin, backbone = self.cfg.lpips_weights, self.cfg.lpips_backbone
        self.net = None
        missing = [p for p in (lin, backbone) if p and not Path(p).is_file()]
        if not lin:
            self.available, self.reason = False, "no LPIPS weights given (--lpips-weights alex.pth " \
                                                 "--lpips-backbone alexnet-owt-7be5be79.pth)"
        elif missing:
            self.available, self.reason = False, f"LPIPS weights not found: {', '.join(missing)}"
        else:
            try:
                self.net = LPIPS.from_files(lin, backbone or None).to(device)
            except (ValueError, OSError) as err:
                self.available, self.reason = False, str(err)
        if self.net is not None:
            self.description = f"LPIPS v0.1 ({self.net.net_name}) perceptual distance"

    @torch.no_grad()
    def _per_frame(self, fake, reference, points):
        def t(a: np.ndarray) -> Tensor:
            return to_tensor(a).to(self.device)

        out = [self.net(t(fake[i:i + self.batch_size]), t(reference[i:i + self.batch_size])).double().cpu()
               for i in range(0, len(fake), self.batch_size)]
        return torch.cat(out).numpy()

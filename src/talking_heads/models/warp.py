"""Warp-then-refine generator (`model.generator = "warp"`; NOT in the paper, an option of this project).

Why (../shared/design/quality.md section 3): at our data and compute scale a direct-synthesis generator must
re-paint hair, clothes and background from a 512-number code every frame and cannot (blur, weak likeness,
flicker). Warping models (X2Face, FOMM, the same lab's Fast Bi-layer) copy those pixels from the source and
learn only a motion field plus inpainting. This generator keeps the paper's AdaIN generator, its
conditioning psi = P e_hat, meta-learning, the projection discriminator and fine-tuning unchanged, and gives
it a warped source as extra input:

    for each source frame k (K in meta-learning, T in fine-tuning and inference):
        flow_k, c_k = F(y_src_k, y, x_src_k)          F: `FlowNet`, at `warp_scale` of the image
        w_k = grid_sample(x_src_k, identity + flow_k)  the source moved to the driver's pose
    fused = sum_k softmax_k(c_k) w_k,  conf = sum_k softmax_k(c_k) sigmoid(c_k)
    x_hat = G([y, fused, 2 conf - 1], psi)             G: the paper's generator with 3 + 3 + 1 input channels

The flow is in grid_sample's normalised units and starts at zero (identity warp: F's last layer is zero-
initialised). A smoothness regulariser, the total variation of the flow (`loss.warp_smoothness_weight`), keeps
it from tearing; `forward_with_aux` returns it. ONNX: grid_sample is 2-D (bilinear, border padding), which
opset 16 exports.

It implements models/interface.py's TalkingHeadGenerator, as `Generator` does, so steps, checkpoints,
fine-tuning and the pipeline take either; psi, P and the AdaIN layers are its core's.

Glossary: y driver landmark image (B,3,H,W), sources (x_src, y_src) (B,K,3,H,W) frames and landmark images
of the person, psi AdaIN parameters (B,A), flow (B*K,2,h,w).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig
from .generator import Generator
from .specialise import AvatarGenerator
from .tps_prior import identity_grid


class FlowNet(nn.Module):
    """A small U-Net: (source landmarks, driver landmarks, source frame) (B,9,h,w) -> flow (B,2,h,w) and a
    confidence logit (B,1,h,w). Plain convs with LeakyReLU (no spectral norm: it is part of G's side, whose
    stability comes from the adversarial game through G)."""

    def __init__(self, channels: tuple[int, ...], out_channels: int = 3):
        super().__init__()
        self.down = nn.ModuleList()
        cin = 9
        for c in channels:
            self.down.append(nn.Sequential(nn.Conv2d(cin, c, 3, stride=2, padding=1), nn.LeakyReLU(0.2)))
            cin = c
        self.up = nn.ModuleList()
        skips = [9, *channels[:-1]]
        for c, s in zip(reversed(channels), reversed(skips)):
            out = max(s, 16)
            self.up.append(nn.Sequential(nn.Conv2d(c + s, out, 3, padding=1), nn.LeakyReLU(0.2)))
            cin = out
        self.head = nn.Conv2d(cin, out_channels, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)  # flow 0 (identity warp), confidence 0 (equal weights) at the start

    def forward(self, h: Tensor) -> Tensor:
        """(B,9,h,w) -> (B,out_channels,h,w): the warp generator reads channels 0-1 as the flow, 2 as the
        confidence logit."""
        feats = [h]
        for block in self.down:
            h = block(h)  # B,C_i,h/2^(i+1),w/2^(i+1)
            feats.append(h)
        feats.pop()
        for block in self.up:
            skip = feats.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], 1))
        return self.head(h)  # B,out_channels,h,w


def total_variation(flow: Tensor) -> Tensor:
    """Mean absolute difference of neighbouring flow vectors (B,2,h,w) -> scalar."""
    return (flow[..., 1:, :] - flow[..., :-1, :]).abs().mean() + (flow[..., :, 1:] - flow[..., :, :-1]).abs().mean()


class WarpGenerator(nn.Module):
    """See the module docstring. Pure: tensors in, tensors out."""

    needs_sources = True
    needs_points = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not 0 < cfg.warp_scale <= 1:
            raise ValueError(f"model.warp_scale must be in (0, 1], got {cfg.warp_scale}")
        self.core = Generator(cfg, in_channels=7)  # y (3) + fused warp (3) + confidence (1)
        self.flow = FlowNet(tuple(cfg.warp_channels))
        self.scale = float(cfg.warp_scale)

    @property
    def num_adain_params(self) -> int:
        return self.core.num_adain_params

    @property
    def projection(self) -> nn.Module:
        return self.core.projection

    def adain_params(self, e: Tensor) -> Tensor:
        return self.core.adain_params(e)

    def meta_parameters(self) -> list[nn.Parameter]:
        """What meta-learning trains: every weight (core with P, then the flow network)."""
        return list(self.parameters())

    def finetune_parameters(self) -> list[nn.Parameter]:
        """What fine-tuning trains besides psi': every weight but P (core, then the flow network)."""
        return self.core.finetune_parameters() + list(self.flow.parameters())

    def fix_adain(self, psi: Tensor) -> None:
        """Fix one person's psi (1, num_adain_params) into the core's AdaIN layers, in place."""
        self.core.fix_adain(psi)

    def specialise(self, psi: Tensor, sources: tuple[Tensor, Tensor] | None = None) -> AvatarGenerator:
        """One avatar's renderer, equal to `self(y, psi, sources)` for sources (T,3,H,W) x 2, held as buffers
        (models/specialise.py)."""
        return AvatarGenerator.from_generator(self, psi, sources)

    def warp(self, y: Tensor, sources: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(fused warped source (B,3,H,W), confidence (B,1,H,W) in [0,1], flow (B*K,2,h,w)). The networks
        may hold bf16 weights (a bf16 renderer); the resizes, the sampling grid and grid_sample stay fp32
        whatever they hold (bf16 pixel coordinates are off by up to a pixel at 256 px, and the antialiased
        resize has no bf16 kernel); fused and confidence come back in the networks' dtype."""
        x_src, y_src = sources[0], sources[1]
        if x_src.dim() == 4:  # (K,3,H,W) shared by the whole batch (an avatar's T frames)
            x_src, y_src = x_src[None].expand(y.shape[0], -1, -1, -1, -1), y_src[None].expand(y.shape[0], -1, -1, -1, -1)
        b, k, _, h, w = x_src.shape
        h, w = int(h), int(w)  # the image size: constants when traced for ONNX (batch stays dynamic)
        if y.shape[0] != b or y_src.shape != x_src.shape:
            raise ValueError(f"sources {tuple(x_src.shape)} / {tuple(y_src.shape)} do not fit y {tuple(y.shape)}")
        dtype = self.flow.head.weight.dtype  # the networks' (fp32 in training, also under autocast)
        xs, ys = x_src.reshape(b * k, 3, h, w).float(), y_src.reshape(b * k, 3, h, w).float()
        yt = y[:, None].expand(b, k, 3, h, w).reshape(b * k, 3, h, w).float()
        inp = torch.cat([ys, yt, xs], 1)  # BK,9,H,W
        lh, lw = max(8, round(h * self.scale)), max(8, round(w * self.scale))
        small = F.interpolate(inp, size=(lh, lw), mode="bilinear", align_corners=False, antialias=self.scale < 1)
        out = self.flow(small.to(dtype))
        flow, logit = out[:, :2], out[:, 2:]  # BK,2,lh,lw ; BK,1,lh,lw
        flow_full = F.interpolate(flow.float(), size=(h, w), mode="bilinear", align_corners=False)
        logit = F.interpolate(logit.float(), size=(h, w), mode="bilinear", align_corners=False)
        grid = identity_grid(b * k, h, w, xs) + flow_full.permute(0, 2, 3, 1)  # BK,H,W,2
        warped = F.grid_sample(xs, grid, mode="bilinear", padding_mode="border", align_corners=False)  # BK,3,H,W
        weights = torch.softmax(logit.view(b, k, 1, h, w), dim=1)  # B,K,1,H,W
        fused = (warped.view(b, k, 3, h, w) * weights).sum(1)  # B,3,H,W
        conf = (torch.sigmoid(logit.view(b, k, 1, h, w)) * weights).sum(1)  # B,1,H,W
        return fused.to(dtype), conf.to(dtype), flow

    def forward_with_aux(self, y: Tensor, psi: Tensor | None, sources: tuple[Tensor, Tensor] | None = None,
                         points: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        if sources is None:
            raise ValueError("the warp generator needs the person's source frames and landmark images")
        fused, conf, flow = self.warp(y, sources)
        x_hat = self.core(torch.cat([y, fused, conf * 2 - 1], 1), psi)  # B,3,H,W
        return x_hat, {"warped": fused, "confidence": conf, "flow_tv": total_variation(flow)}

    def forward(self, y: Tensor, psi: Tensor | None, sources: tuple[Tensor, Tensor] | None = None,
                points: Tensor | None = None) -> Tensor:
        return self.forward_with_aux(y, psi, sources)[0]

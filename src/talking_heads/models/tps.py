"""The TPS renderer (`model.generator = "tps"`; NOT in the paper, an option of this project).

Why (../shared/design/warp_renderer.md): a generator that re-paints the face from a 512-number code gives a
different person at 128 px; a thin-plate-spline warp of the photo itself, driven by the landmarks, keeps the
person and the photo's resolution. This generator warps the photo by that prior, corrects the warp with a
learned residual flow, and paints only what the photo lacks:

    for each source frame k (K in meta-learning, T for an avatar), at the source's own resolution R:
        prior_k      = TPS(driver points -> source points)                    models/tps_prior.py
        residual_k, a_k, v_k = F(y_src_k, y, x_src_k warped by prior_k)        F: FlowNet at `warp_scale` x S
        w_k          = grid_sample(x_src_k, identity + prior_k + residual_k)   at R
    warped = sum_k softmax_k(a_k) w_k;  v = sum_k softmax_k(a_k) v_k
    m      = sigmoid(v + MASK_BIAS - MOUTH_BIAS * max(mouth_interior(driver), the photo's open mouth warped))
             x where the source is real
    fill   = G([y, warped at S, 2m - 1], psi_face) at S, upsampled to R, with the mouth view
             G_mouth([y, warped, 2m - 1] cropped around the driver's mouth at `tps_mouth_size`, psi_mouth)
             pasted over it through a feathered box (the mouth at several times the face's detail)
    x_hat  = m * warped + (1 - m) * fill                                       at R (composited once)

- The residual flow's last layer is zero-initialised (training starts from the TPS prior, not from no
  motion) and its smoothness is regularised (`loss.warp_smoothness_weight`, aux "flow_tv"); the mask starts
  at "warp everywhere but inside the open mouth" and what the network adds to the generated area is
  penalised (`loss.tps_mask_weight`, aux "mask_area") so that warping stays preferred.
- G is the paper's AdaIN generator with 7 input planes, G_mouth a smaller one; psi = P e_hat feeds both
  (psi = [psi_face, psi_mouth], one projection P), so the paper's embedder, AdaIN conditioning, projection
  discriminator, meta-learning and FF / FT variants keep their roles.
- y and the embedder stay at the model's size S; the sources (and so x_hat) may be larger (R >= S): the
  avatar keeps its photo crop at the output size and the warp runs there (the rendered frame is the photo's
  pixels where m = 1). In training R = S.
- Sources may carry a validity mask (where the crop lies inside the photo, `Sources.valid`): what a crop
  past the photo's edge would show (edge replication, streaks) is never warped in, the generator fills it.

Glossary: y driver landmark image (B,3,S,S); points (B,68,2) the driver's landmarks (normalised,
or (B,70,2) with the iris centres, by which the eyes' openings shift (model.tps_iris, tps_prior.iris_shift),
tps_prior.normalise_points); sources x (B,K,3,R,R), y (B,K,3,S,S), points (B,K,68,2), valid (B,K,1,R,R) or
None, each also (K,...) shared by the batch; psi (B, A).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig
from .tps_prior import (border_taper, box_to_view, grid_from_displacement, iris_shift, mouth_box, mouth_interior,
                        prior_displacement, view_to_frame)
from .blocks import sn
from .generator import Generator
from .sources import Sources, as_sources
from .specialise import AvatarGenerator
from .warp import FlowNet, total_variation

MASK_BIAS = 5.0  # the mask's logit where nothing is known: warp (sigmoid(5) = 0.993)
MOUTH_BIAS = 10.0  # subtracted inside the open mouth: fill (sigmoid(-5) = 0.007)
FILL_THRESHOLD = 0.02  # rendering skips the face generator where no pixel outside the mouth view is more generated


def _batched(t: Tensor | None, b: int, dims: int) -> Tensor | None:
    """A source tensor shared by the batch ((K,...), `dims` dims) expanded to (B,K,...)."""
    if t is None or t.dim() == dims + 1:
        return t
    return t[None].expand(b, *t.shape)


class TpsGenerator(nn.Module):
    """See the module docstring. Pure: tensors in, tensors out."""

    needs_sources = True
    needs_points = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not 0 < cfg.warp_scale <= 1:
            raise ValueError(f"model.warp_scale must be in (0, 1], got {cfg.warp_scale}")
        self.image_size = int(cfg.image_size)
        self.mouth_size = int(cfg.tps_mouth_size)
        self.grid_size = int(cfg.tps_grid_size)
        self.scale = float(cfg.warp_scale)
        self.fill_own_mouth = bool(cfg.tps_fill_own_mouth)
        self.core = Generator(cfg, in_channels=7)  # y (3) + warped photo (3) + mask (1)
        mouth_cfg = dataclasses.replace(
            cfg, image_size=self.mouth_size, generator_down_channels=tuple(cfg.tps_mouth_channels),
            generator_up_channels=tuple(reversed(cfg.tps_mouth_channels)), generator_down_attention_at=(),
            generator_up_attention_at=(), generator_res_blocks=1)
        self.mouth = Generator(mouth_cfg, in_channels=7)
        self.core.projection = nn.Identity()  # psi comes from this module's P, split between the two
        self.mouth.projection = nn.Identity()
        self.projection = sn(nn.Linear(cfg.embedding_dim, self.core.num_adain_params + self.mouth.num_adain_params),
                             cfg.spectral_norm)
        self.flow = FlowNet(tuple(cfg.warp_channels), out_channels=4)  # residual flow (2), source logit, mask logit
        window = border_taper(self.mouth_size, torch.zeros(()))  # the mouth view's feathered paste-back weight
        self.register_buffer("mouth_window", window[None, None], persistent=False)

    # --- the interface (models/interface.py) ----------------------------------------------------------
    @property
    def num_adain_params(self) -> int:
        return self.core.num_adain_params + self.mouth.num_adain_params

    def adain_params(self, e: Tensor) -> Tensor:
        return self.projection(e)

    def meta_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def finetune_parameters(self) -> list[nn.Parameter]:
        """Every weight but P (the core, the mouth generator, the flow network)."""
        return list(self.core.parameters()) + list(self.mouth.parameters()) + list(self.flow.parameters())

    def fix_adain(self, psi: Tensor) -> None:
        face, mouth = psi.split([self.core.num_adain_params, self.mouth.num_adain_params], dim=1)
        self.core.fix_adain(face)
        self.mouth.fix_adain(mouth)

    def specialise(self, psi: Tensor, sources: Sources | None = None) -> AvatarGenerator:
        """One avatar's renderer; the sources' copy at the model's size is computed here once."""
        sources = as_sources(sources)
        if sources is not None and sources.x_small is None and sources.x.shape[-1] != self.image_size:
            sources = sources._replace(x_small=self.small(sources.x.float(), self.image_size))
        return AvatarGenerator.from_generator(self, psi, sources)

    @staticmethod
    def small(t: Tensor, size: int) -> Tensor:
        """(N,C,R,R) -> (N,C,size,size), antialiased; unchanged at that size."""
        if t.shape[-1] == size:
            return t
        return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    # --- the renderer ---------------------------------------------------------------------------------
    def prior(self, points: Tensor, p_src: Tensor) -> tuple[Tensor, Tensor, Callable[[int], Tensor | float]]:
        """(source points (BK,n,2), the TPS prior (BK,2,g,g), the eyes' shift at a given size (0 without the
        iris centres)) for driver points (B,n,2) and source points (B,K,n,2); n = 68, or 70 with the iris
        centres (model.tps_iris)."""
        b, k, n = p_src.shape[0], p_src.shape[1], points.shape[-2]
        if p_src.shape[-2] != n:
            raise ValueError(f"the driver has {n} landmarks but the sources {p_src.shape[-2]}: both must carry "
                             "the iris centres (70) or neither (68)")
        drv = points.float()[:, None].expand(b, k, n, 2).reshape(b * k, n, 2)
        p_src = p_src.reshape(b * k, n, 2)
        prior = prior_displacement(drv[:, :68], p_src[:, :68], self.grid_size)  # BK,2,g,g
        return p_src, prior, (lambda size: iris_shift(drv, p_src, size, prior=prior)) if n == 70 else (lambda size: 0.0)

    def warp(self, y: Tensor, sources: Sources, points: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(warped photo (B,3,R,R), mask logit v (B,1,S',S') from the network, validity (B,1,R,R) or None,
        residual flow (BK,2,h,w), where the photo's own open mouth lands (B,1,S,S) in [0,1]: its inner-lip
        polygon carried by the warp, which a closed driven mouth must not show as squeezed teeth). Sampling
        grids and grid_sample stay fp32 whatever the networks hold."""
        b = y.shape[0]
        x_src = _batched(sources.x, b, 4).float()
        y_src = _batched(sources.y, b, 4).float()
        p_src = _batched(sources.points, b, 3).float()
        valid = _batched(sources.valid, b, 4)
        _, k, _, r, _ = x_src.shape
        s = int(y.shape[-1])
        r = int(r)
        xs = x_src.reshape(b * k, 3, r, r)
        p_src, prior, eyes = self.prior(points, p_src)
        n = points.shape[-2]
        x_small = _batched(sources.x_small, b, 4)
        xs_small = self.small(xs, s) if x_small is None else x_small.float().reshape(b * k, 3, s, s)
        prior_s = F.interpolate(prior, size=(s, s), mode="bilinear", align_corners=False) + eyes(s)
        prior_small = F.grid_sample(xs_small, grid_from_displacement(prior_s, s), mode="bilinear",
                                    padding_mode="border", align_corners=False)
        yt = y.float()[:, None].expand(b, k, 3, s, s).reshape(b * k, 3, s, s)
        inp = torch.cat([y_src.reshape(b * k, 3, s, s), yt, prior_small], 1)  # BK,9,S,S
        lh = max(8, round(s * self.scale))
        if lh != s:
            inp = F.interpolate(inp, size=(lh, lh), mode="bilinear", align_corners=False, antialias=True)
        dtype = self.flow.head.weight.dtype
        out = self.flow(inp.to(dtype)).float()  # BK,4,lh,lh
        residual, logits = out[:, :2], out[:, 2:]
        prior_r = F.interpolate(prior, size=(lh, lh), mode="bilinear", align_corners=False) if prior.shape[-1] != lh \
            else prior
        flow = prior_r + residual
        if n == 70:  # the eyes' shift at the output size (a few px wide: a coarser grid would blur it)
            flow = F.interpolate(flow, size=(r, r), mode="bilinear", align_corners=False) + eyes(r)
        grid = grid_from_displacement(flow, r)  # BK,R,R,2
        warped = F.grid_sample(xs, grid, mode="bilinear", padding_mode="border", align_corners=False)
        valid_w = None if valid is None else F.grid_sample(valid.reshape(b * k, 1, r, r).float(), grid, mode="bilinear",
                                                            padding_mode="zeros", align_corners=False)
        own_mouth = F.grid_sample(mouth_interior(p_src, s),
                                  grid_from_displacement((prior_r + residual).detach(), s), mode="bilinear",
                                  padding_mode="zeros", align_corners=False)  # BK,1,S,S
        if k == 1:  # one source: its weight is 1 everywhere (the softmax over one)
            return warped, logits[:, 1:], valid_w, residual, own_mouth
        weights = torch.softmax(logits[:, :1].reshape(b, k, 1, lh, lh), dim=1)
        vis = (logits[:, 1:].reshape(b, k, 1, lh, lh) * weights).sum(1)  # B,1,lh,lh
        weights_r = F.interpolate(weights.reshape(b * k, 1, lh, lh), size=(r, r), mode="bilinear",
                                  align_corners=False).reshape(b, k, 1, r, r)
        valid_r = None
        if valid_w is not None:  # a source counts only where it shows its photo: the others cover the rest
            v = valid_w.reshape(b, k, 1, r, r)
            seen = weights_r * v
            weights_r = seen / seen.sum(1, keepdim=True).clamp_min(1e-6)
            valid_r = v.amax(1)  # real wherever any source shows its photo
        fused = (warped.reshape(b, k, 3, r, r) * weights_r).sum(1)
        weights_s = F.interpolate(weights.reshape(b * k, 1, lh, lh), size=(s, s), mode="bilinear",
                                  align_corners=False).reshape(b, k, 1, s, s)
        own_mouth = (own_mouth.reshape(b, k, 1, s, s) * weights_s).sum(1)
        return fused, vis, valid_r, residual, own_mouth

    def mask(self, vis: Tensor, points: Tensor, valid: Tensor | None, size: int, own_mouth: Tensor | None = None
             ) -> tuple[Tensor, Tensor]:
        """(m (B,1,size,size): 1 = the warped photo, 0 = generated; the share the network moved to generated
        outside the mouth, a 0-dim tensor). Generated from the start: the driven open mouth and, with
        `tps_fill_own_mouth`, where the photo's own open mouth lands (`own_mouth`). The logit is formed at
        the model's size and upsampled (a smooth ramp at any output size; the mouth polygon's test per output
        pixel would dominate the frame's time)."""
        s = max(self.image_size, vis.shape[-1])
        vis = F.interpolate(vis, size=(s, s), mode="bilinear", align_corners=False) if vis.shape[-1] != s else vis
        lacking = mouth_interior(points, s)
        if own_mouth is not None and self.fill_own_mouth:
            own = own_mouth if own_mouth.shape[-1] == s else F.interpolate(own_mouth, size=(s, s), mode="bilinear",
                                                                           align_corners=False)
            # squeezed shut, the photo's mouth is a sliver a pixel or two thick: grown and strengthened to
            # cover the seam where its teeth would show
            own = (F.max_pool2d(own, 5, stride=1, padding=2) * 2).clamp(0, 1)
            lacking = torch.maximum(lacking, own)
        logit = vis + MASK_BIAS - MOUTH_BIAS * lacking
        added = (1 - torch.sigmoid(vis + MASK_BIAS)).mean()
        if s != size:
            logit = F.interpolate(logit, size=(size, size), mode="bilinear", align_corners=False)
        m = torch.sigmoid(logit)
        if valid is not None:
            m = m * valid.clamp(0, 1)
        return m, added

    def fill(self, y: Tensor, psi: Tensor | None, warped: Tensor, m: Tensor, points: Tensor) -> Tensor:
        """What the generators paint (B,3,R,R): the face at S upsampled to R, the mouth view over it. Rendering
        (eval mode), a batch in which nothing outside the mouth view is to be generated (1 - m under
        FILL_THRESHOLD there: the photo covers it) skips the face generator and shows the photo there; the
        decision is each frame's own, so a frame renders the same alone (live) or in a batch (offline)."""
        s, r = int(y.shape[-1]), int(warped.shape[-1])
        dtype = self.core.out_conv.weight.dtype
        face_psi, mouth_psi = (None, None) if psi is None else \
            psi.split([self.core.num_adain_params, self.mouth.num_adain_params], dim=1)
        box = mouth_box(points)
        view = box_to_view(box, self.mouth_size, warped)
        sample = lambda t: F.grid_sample(t.float(), view, mode="bilinear", padding_mode="border", align_corners=False)
        mouth_in = torch.cat([sample(y), sample(warped), sample(m) * 2 - 1], 1)
        mouth = self.mouth(mouth_in.to(dtype), mouth_psi).float()  # B,3,M,M
        back = view_to_frame(box, r, warped)
        mouth_r = F.grid_sample(mouth, back, mode="bilinear", padding_mode="zeros", align_corners=False)
        alpha = F.grid_sample(self.mouth_window.float().expand(mouth.shape[0], -1, -1, -1), back,
                              mode="bilinear", padding_mode="zeros", align_corners=False)
        need = ((1 - m) * (1 - alpha)).amax(dim=(1, 2, 3)) > FILL_THRESHOLD  # B: per frame, whatever the batch
        if self.training or bool(need.any()):
            face_in = torch.cat([y.float(), self.small(warped, s), self.small(m, s) * 2 - 1], 1)
            face = self.core(face_in.to(dtype), face_psi).float()
            face = face if r == s else F.interpolate(face, size=(r, r), mode="bilinear", align_corners=False)
            if not self.training:
                face = torch.where(need[:, None, None, None], face, warped)
        else:
            face = warped
        return face + alpha * (mouth_r - face)

    def forward_with_aux(self, y: Tensor, psi: Tensor | None, sources: Sources | None = None,
                         points: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        if sources is None or getattr(sources, "points", None) is None or points is None:
            raise ValueError("the TPS generator needs the person's frames with their landmarks (sources) and the "
                             "driver's landmarks (points)")
        warped, vis, valid, residual, own_mouth = self.warp(y, sources, points)
        r = int(warped.shape[-1])
        m, added = self.mask(vis, points.float(), valid, r, own_mouth)
        fill = self.fill(y, psi, warped, m, points.float())
        x_hat = (fill + m * (warped - fill)).clamp(-1, 1)
        dtype = self.core.out_conv.weight.dtype
        return x_hat.to(dtype), {"warped": warped, "mask": m, "flow_tv": total_variation(residual),
                                 "mask_area": added}

    def forward(self, y: Tensor, psi: Tensor | None, sources: Sources | None = None,
                points: Tensor | None = None) -> Tensor:
        return self.forward_with_aux(y, psi, sources, points)[0]

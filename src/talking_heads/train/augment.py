"""Data-efficient discriminator training: DiffAugment and LeCam regularisation (not in the paper; options).

Our meta-learning data is small (the sample model: 66 clips, 44 people, ~6k correlated frames), and a
discriminator that sees it overfits (../shared/design/quality.md section 2). Two published remedies:

- **DiffAugment** (Zhao et al., NeurIPS 2020, mit-han-lab/data-efficient-gans): differentiable augmentations
  applied to *both* real and fake images, in the D step and in G's adversarial terms, so D never sees an
  un-augmented image and G's gradient flows through the augmentation. For a projection discriminator on
  (x, y) one geometric transform is sampled per sample and applied to the frame and to its landmark image
  alike (they must stay aligned); colour changes touch the frame only. In a step, real and fake of the same
  sample get the same transform, so L_FM compares real and fake features under the same transform.
  Policies (`train.diffaugment`, comma-separated): "translation" (shift by up to 1/8 of the side, zero
  padding; the landmark canvas is black = -1, so it is padded with -1), "cutout" (a square of half the side
  set to 0 in the frame and -1 in the landmark image), "color" (brightness, saturation, contrast; frame
  only). W is indexed by video and unaffected.
- **LeCam regularisation** (Tseng et al., CVPR 2021): R = mean(relu(D(real) - a_fake)^2) + mean(relu(a_real -
  D(fake))^2) added to D's loss with weight `train.lecam_weight`, where a_real, a_fake are exponential moving
  averages (decay `train.lecam_decay`) of D's mean outputs. Its state is part of the training state.

Both are off in the `paper` preset. Each sample's transform is drawn from a generator seeded by its episode
(`aug_seed`, from the dataset), so augmentation is deterministic, resumable and identical under DDP.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..landmarks.raster import flip_landmarks, rasterize_tensor

POLICIES = ("translation", "cutout", "color")


def parse_policy(policy: str) -> tuple[str, ...]:
    """"translation,cutout" -> ("translation", "cutout"); "" -> (); unknown names are an error."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    bad = [p for p in names if p not in POLICIES]
    if bad:
        raise ValueError(f"unknown DiffAugment policy {bad}; choose from {', '.join(POLICIES)} (comma-separated)")
    return names


class DiffAugment:
    """`aug(images, y, seeds=None) -> (images', y')`: one random transform per sample, the same for every image
    in `images` (e.g. the real and the fake frame) and, geometrically, for the landmark image y. All (B,3,H,W).

    `seeds` (B,) int64: each sample's transform is drawn from its own generator seeded with its seed, so it
    depends on the episode only, not on the batch it sits in: a DDP run then augments exactly as a single
    process does, and a resumed run as an uninterrupted one (meta-learning passes the episodes' `aug_seed`).
    Without seeds they come from torch's global generator."""

    def __init__(self, policy: str | Sequence[str]):
        self.policy = parse_policy(policy) if isinstance(policy, str) else tuple(policy)

    def __bool__(self) -> bool:
        return bool(self.policy)

    def params(self, b: int, h: int, w: int, seeds: Tensor | None) -> dict[str, Tensor]:
        """Per-sample parameters (CPU tensors, (B,...)), drawn in a fixed order from each sample's generator."""
        if seeds is None:
            seeds = torch.randint(0, 2**62, (b,))
        sx, sy = int(w * 0.125 + 0.5), int(h * 0.125 + 0.5)
        ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
        rows = []
        for seed in seeds.tolist():
            g = torch.Generator().manual_seed(int(seed))
            colour = torch.rand(3, generator=g)
            shift = torch.stack([torch.randint(-sx, sx + 1, (), generator=g), torch.randint(-sy, sy + 1, (), generator=g)])
            corner = torch.stack([torch.randint(0, w + (1 - cw % 2), (), generator=g),
                                  torch.randint(0, h + (1 - ch % 2), (), generator=g)])
            rows.append((colour, shift, corner))
        colour, shift, corner = (torch.stack(r) for r in zip(*rows))
        return {"brightness": colour[:, 0] - 0.5, "saturation": colour[:, 1] * 2, "contrast": colour[:, 2] + 0.5,
                "shift": shift, "corner": corner - torch.tensor([cw // 2, ch // 2]), "cut": torch.tensor([cw, ch])}

    def __call__(self, images: Sequence[Tensor], y: Tensor, seeds: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        images = list(images)
        b, _, h, w = y.shape
        p = {k: v.to(y.device) for k, v in self.params(b, h, w, seeds).items()}
        for name in self.policy:
            if name == "color":  # brightness [-0.5, 0.5) on [-1,1] images, saturation [0, 2), contrast [0.5, 1.5)
                images = [_color(x, *(p[k].view(b, 1, 1, 1).to(x.dtype) for k in ("brightness", "saturation",
                                                                                    "contrast"))) for x in images]
            elif name == "translation":  # up to 1/8 of the side
                images = [_translate(x, p["shift"], 0.0) for x in images]
                y = _translate(y, p["shift"], -1.0)
            else:  # cutout: a square of half the side
                mask = _cutout_mask(y, p["corner"], p["cut"])  # B,1,H,W: 1 keeps, 0 cuts
                images = [x * mask for x in images]  # 0 = mid grey in [-1,1]
                y = y * mask + (mask - 1)  # cut region -> -1 (black canvas)
        return images, y


def _color(x: Tensor, brightness: Tensor, saturation: Tensor, contrast: Tensor) -> Tensor:
    x = x + brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * saturation + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast + mean


def _translate(x: Tensor, shift: Tensor, fill: float) -> Tensor:
    """Shift each sample by (dx, dy) pixels (content moves right / down for positive values), pad with fill."""
    b, c, h, w = x.shape
    ys = torch.arange(h, device=x.device).view(1, h, 1) - shift[:, 1].view(b, 1, 1)  # source rows, B,H,1
    xs = torch.arange(w, device=x.device).view(1, 1, w) - shift[:, 0].view(b, 1, 1)  # source cols, B,1,W
    inside = ((ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)).unsqueeze(1)  # B,1,H,W
    idx = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).view(b, 1, h * w).expand(b, c, h * w)
    out = x.reshape(b, c, h * w).gather(2, idx).view(b, c, h, w)
    return torch.where(inside, out, torch.full_like(out, fill))


def _cutout_mask(y: Tensor, corner: Tensor, cut: Tensor) -> Tensor:
    """(B,1,H,W) float mask, 0 inside the square of side cut = (cw, ch) at `corner` (x0, y0) (B,2); the square
    may reach past the border, as in DiffAugment."""
    b, _, h, w = y.shape
    x0, y0 = corner[:, 0].view(b, 1, 1), corner[:, 1].view(b, 1, 1)
    gy = torch.arange(h, device=y.device).view(1, h, 1)
    gx = torch.arange(w, device=y.device).view(1, 1, w)
    inside = (gy >= y0) & (gy < y0 + cut[1]) & (gx >= x0) & (gx < x0 + cut[0])  # B,H,W
    return (~inside).unsqueeze(1).to(y.dtype)


class LeCam:
    """LeCam regularisation state (see the module docstring): `penalty(real, fake)` -> scalar, then
    `update(real, fake)` with the raw scores of one D step. `state_dict()` / `load_state_dict()` for resume."""

    def __init__(self, decay: float = 0.99):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"lecam_decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.ema_real: float | Tensor = 0.0
        self.ema_fake: float | Tensor = 0.0

    def penalty(self, score_real: Tensor, score_fake: Tensor) -> Tensor:
        return (F.relu(score_real.float() - self.ema_fake).pow(2).mean()
                + F.relu(self.ema_real - score_fake.float()).pow(2).mean())

    def update(self, score_real: Tensor, score_fake: Tensor) -> None:
        """Move the averages towards this step's mean scores (over the global batch under DDP, so every rank
        keeps the same averages as a single process would). The averages stay where the scores are (0-dim
        float64 tensors, the same arithmetic as Python floats): reading them back would make the host wait
        for every D step."""
        means = torch.stack([score_real.detach().float().mean(), score_fake.detach().float().mean()])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(means)
            means = means / torch.distributed.get_world_size()
        d = self.decay
        self.ema_real = d * self.ema_real + (1 - d) * means[0].double()
        self.ema_fake = d * self.ema_fake + (1 - d) * means[1].double()

    def state_dict(self) -> dict[str, float]:
        return {"ema_real": float(self.ema_real), "ema_fake": float(self.ema_fake), "decay": self.decay}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.ema_real, self.ema_fake = float(state["ema_real"]), float(state["ema_fake"])


# --- few-shot fine-tuning: augmented copies of the T frames ----------------------------------------------

def few_shot_copies(x: Tensor, points: Tensor, generator: torch.Generator, *, flip: bool = True,
                    scale: float = 0.05, shift: float = 0.04, thickness: float | None = None,
                    pupils: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Augmented copies of few-shot frames for fine-tuning (not in the paper; `finetune.augment`): per copy a
    random horizontal flip (landmarks mirrored and re-indexed, so point i stays iBUG point i), a scale in
    [1 - scale, 1 + scale] and a shift of up to `shift` of the side, identical on the frame and its
    landmarks; the landmark image is drawn again from the moved points (with the pupils for 70-row points
    and `pupils`). x (B,3,S,S) in [-1,1], points (B,68,2) or (B,70,2) px -> (x', y', points'). Border pixels
    are replicated, as the crops are."""
    b, _, h, w = x.shape
    u = torch.rand(b, 4, generator=generator)
    s = 1 + scale * (2 * u[:, 0] - 1)  # B
    t = shift * (2 * u[:, 1:3] - 1) * torch.tensor([w, h])  # B,2 px
    mirror = (u[:, 3] < 0.5) & flip
    p = points.detach().cpu().double().numpy().copy()
    for i in np.flatnonzero(mirror.numpy()):
        p[i] = flip_landmarks(p[i], w)
    x = torch.where(mirror.view(b, 1, 1, 1).to(x.device), x.flip(-1), x)
    c = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64)
    # output pixel q shows input pixel c + (q - c - t) / s; points move p -> c + s (p - c) + t
    p = (c + s.double().view(b, 1, 1) * (torch.from_numpy(p) - c) + t.double().view(b, 1, 2)).float()
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = 1 / s, 1 / s
    theta[:, 0, 2] = -2 * t[:, 0] / (s * w)
    theta[:, 1, 2] = -2 * t[:, 1] / (s * h)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    y = rasterize_tensor(p.numpy(), w, thickness, pupils).to(x)
    return x, y, p.to(points.device)

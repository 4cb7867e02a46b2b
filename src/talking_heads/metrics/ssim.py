"""SSIM, structural similarity (Wang et al. 2004), the paper's low-level similarity metric (paper.md section 7).

Own implementation (torch, float64), equal to `skimage.metrics.structural_similarity` (tests/test_metrics.py
checks it on real frames) with the same parameters:
- `gaussian=True` (the registry's "ssim"): 11x11 Gaussian window, sigma 1.5, population covariances, i.e.
  skimage's `gaussian_weights=True, sigma=1.5, use_sample_covariance=False` (Wang et al.'s reference
  settings);
- `gaussian=False`: a uniform `win_size` window with sample covariances (skimage's defaults).
K1 = 0.01, K2 = 0.03, data range 255 (uint8 images). The SSIM map is computed where the window lies
entirely inside the image (skimage filters with reflection and then crops the (win-1)/2 border, which is the
same thing), averaged over pixels and then over the three RGB channels (skimage's `channel_axis=-1`).

Per frame:  S = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
C1 = (K1 L)^2, C2 = (K2 L)^2, L the data range; moments are local window averages.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .base import PairedMetric, as_uint8


def _gaussian_window(sigma: float, truncate: float = 3.5):
    """1-D Gaussian taps exactly as scipy.ndimage.gaussian_filter builds them (radius int(truncate*sigma+0.5))."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def ssim(fake, real, *, gaussian: bool = True, sigma: float = 1.5, win_size: int = 7,
         sample_covariance: bool | None = None, k1: float = 0.01, k2: float = 0.03,
         data_range: float = 255.0) -> np.ndarray:
    """Mean SSIM per image pair: (N,) float64. Images: uint8 (N,H,W,3) or [-1,1] tensors (N,3,H,W).

    sample_covariance: None = False with `gaussian` (Wang et al.), True without (skimage's default).
    """
    a = torch.from_numpy(as_uint8(fake)).permute(0, 3, 1, 2).to(torch.float64)  # N,3,H,W
    b = torch.from_numpy(as_uint8(real)).permute(0, 3, 1, 2).to(torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    taps = _gaussian_window(sigma) if gaussian else torch.full((win_size,), 1.0 / win_size, dtype=torch.float64)
    win = taps.numel()  # both windows are separable: a vertical then a horizontal 1-D pass
    if min(a.shape[-2:]) < win:
        raise ValueError(f"ssim: images of {tuple(a.shape[-2:])} px are smaller than the {win} px window")
    if sample_covariance is None:
        sample_covariance = not gaussian
    cov_norm = win * win / (win * win - 1.0) if sample_covariance else 1.0
    c = a.shape[1]
    k_v, k_h = taps.view(1, 1, win, 1).expand(c, 1, win, 1), taps.view(1, 1, 1, win).expand(c, 1, 1, win)

    def filt(t):  # local window means over the valid region, per channel: N,3,H-win+1,W-win+1
        return F.conv2d(F.conv2d(t, k_v, groups=c), k_h, groups=c)

    mu_a, mu_b = filt(a), filt(b)
    var_a = cov_norm * (filt(a * a) - mu_a * mu_a)
    var_b = cov_norm * (filt(b * b) - mu_b * mu_b)
    cov = cov_norm * (filt(a * b) - mu_a * mu_b)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.mean(dim=(2, 3)).mean(dim=1).numpy()  # N


class SSIM(PairedMetric):
    """Registry entry "ssim": Gaussian SSIM (Wang et al. settings), higher is better, 1 for identical images."""

    name = "ssim"
    higher_is_better = True
    description = "SSIM (Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03, RGB mean), own implementation = skimage"

    def _per_frame(self, fake, reference, points):
        return ssim(fake, reference, gaussian=True)

"""Pixel metrics: PSNR and L1 between generated and ground-truth frames (not in the paper's Table 1; given
as familiar reference points next to SSIM).

- PSNR = 10 log10(255^2 / MSE), MSE over all pixels and channels of one uint8 frame pair; +inf for
  identical frames. Higher is better.
- L1 = mean |fake - real| over pixels and channels, on the [0,1] intensity scale (uint8 / 255). Lower is
  better.
"""

from __future__ import annotations

import numpy as np

from .base import PairedMetric, as_uint8


def _diff(fake, real) -> np.ndarray:
    a, b = as_uint8(fake).astype(np.float64), as_uint8(real).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return (a - b).reshape(len(a), -1)  # N,H*W*3


def psnr(fake, real) -> np.ndarray:
    """(N,) PSNR in dB per uint8 frame pair (+inf where identical)."""
    mse = np.mean(_diff(fake, real) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(255.0 ** 2 / mse)


def l1(fake, real) -> np.ndarray:
    """(N,) mean absolute difference per frame pair, intensities in [0,1]."""
    return np.mean(np.abs(_diff(fake, real)), axis=1) / 255.0


class PSNR(PairedMetric):
    name = "psnr"
    higher_is_better = True
    description = "PSNR in dB on uint8 RGB"

    def _per_frame(self, fake, reference, points):
        return psnr(fake, reference)


class L1(PairedMetric):
    name = "l1"
    higher_is_better = False
    description = "mean absolute error, intensities in [0,1]"

    def _per_frame(self, fake, reference, points):
        return l1(fake, reference)

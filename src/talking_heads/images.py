"""Conversions between the two image forms the package uses.

Frames on disk and in metrics are uint8 RGB arrays (H,W,3); the networks see float tensors (3,H,W) in [-1,1]
(black = -1). `to_tensor` and `to_uint8` are the one pair of conversions between them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def to_tensor(image: np.ndarray) -> Tensor:
    """uint8 (H,W,3) RGB -> float32 torch tensor (3,H,W) in [-1, 1] (black = -1)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(127.5).sub_(1.0)


def to_uint8(images: Tensor) -> np.ndarray:
    """(B,3,H,W) float in [-1,1] (values outside are clipped) -> (B,H,W,3) uint8 RGB, on the CPU."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()

"""Conversions between the two image forms the package uses.

Frames on disk and in metrics are uint8 RGB arrays (H,W,3); the networks see float tensors (3,H,W) in [-1,1]
(black = -1). `to_tensor` and `to_uint8` are the one pair of conversions between them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def to_tensor(images: np.ndarray, device: torch.device | str | None = None) -> Tensor:
    """uint8 RGB -> float32 torch tensor in [-1, 1] (black = -1).

    One image (H,W,3) -> (3,H,W), contiguous; a batch (N,H,W,3) -> (N,3,H,W) in channels_last memory order
    (the array's own order: no transposing copy). With `device`, the uint8 data is moved there first and
    converted there (a quarter of the bytes to copy)."""
    if images.ndim == 3:
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(2, 0, 1)))
    elif images.ndim == 4:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    else:
        raise ValueError(f"expected (H,W,3) or (N,H,W,3) images, got shape {images.shape}")
    if device is not None:
        x = x.to(device)
    return x.float().div_(127.5).sub_(1.0)


def to_uint8(images: Tensor) -> np.ndarray:
    """(B,3,H,W) float in [-1,1] (values outside are clipped) -> (B,H,W,3) uint8 RGB, on the CPU."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()

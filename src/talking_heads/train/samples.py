"""Sample grids of a meta-learning run: RUN/samples/step_XXXXXXX.png, one row per episode."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from ..atomic import atomic_path
from ..images import to_uint8


def save_sample_grid(path: str | os.PathLike, y: Tensor, x_real: Tensor, x_fake: Tensor, max_rows: int = 8) -> Path:
    """PNG grid: columns landmarks | ground truth | output, one row per episode. y, x_real, x_fake (B,3,H,W)
    in [-1,1]."""
    cols = [to_uint8(t[:max_rows]) for t in (y, x_real, x_fake)]
    rows = [np.concatenate([c[i] for c in cols], axis=1) for i in range(cols[0].shape[0])]
    grid = np.concatenate(rows, axis=0)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return Path(path)

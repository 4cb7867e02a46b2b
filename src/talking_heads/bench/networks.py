"""The networks alone, per preset, random weights (`talking-heads bench --what params,generator,embedder`).

- params: parameter counts of E, G (P included, and P alone), V (D's conv part), D (V + W + w0 + b) with a
  one-video table, and the number of AdaIN parameters (size of psi).
- generator: ms per frame at batch 1, AdaIN parameters psi = P e computed once beforehand, no_grad, eval.
- embedder: ms for K = 8 frames in one batch, no_grad, eval.
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import Config
from ..models import build_networks, parameter_counts
from .synthetic import random_avatar
from .timing import peak_memory, time_it


def bench_params(cfg: Config) -> dict[str, Any]:
    """`models.parameter_counts` of the preset (a one-video table)."""
    return parameter_counts(cfg)


def bench_generator(cfg: Config, device: torch.device, repeat: int) -> dict[str, Any]:
    """ms per frame of the generator as trained (batch 1, psi fixed, no_grad) and the region's peak memory."""
    g, psi, sources, y = random_avatar(cfg, device)  # psi computed once: an avatar's psi'
    out: dict[str, Any] = {}
    with torch.no_grad(), peak_memory(device, out):
        t = time_it(lambda: g(y, psi, sources), device, repeat=repeat)
    out.update(ms_per_frame=round(t["median_s"] * 1e3, 2), min_ms=round(t["min_s"] * 1e3, 2), runs=t["runs"])
    return out


def bench_embedder(cfg: Config, device: torch.device, repeat: int, k: int = 8) -> dict[str, Any]:
    """ms of the embedder on K frames in one batch (no_grad) and the region's peak memory."""
    torch.manual_seed(0)
    e = build_networks(cfg, num_videos=1).embedder.to(device).eval()
    s = cfg.model.image_size
    x, y = torch.rand(k, 3, s, s, device=device) * 2 - 1, torch.rand(k, 3, s, s, device=device) * 2 - 1
    out: dict[str, Any] = {"k": k}
    with torch.no_grad(), peak_memory(device, out):
        t = time_it(lambda: e(x, y), device, repeat=repeat)
    out.update(ms=round(t["median_s"] * 1e3, 2), min_ms=round(t["min_s"] * 1e3, 2), runs=t["runs"])
    return out

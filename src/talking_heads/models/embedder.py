"""Embedder E(x, y) (paper.md section 3).

E maps a frame x and its landmark image y, concatenated into 6 channels, through residual downsampling
blocks without normalisation (64 -> 128 -> 256 (self-attention at 32 px) -> 512 -> 512 -> 512 at 256 px,
`ModelConfig.embedder_channels` / `embedder_attention_at`) to a 4 x 4 map, then ReLU and global *sum*
pooling to e (B, N). Meta-learning averages E over the K source frames: e_hat = mean_k E(x_k, y_k)
(done by the caller). `model.embedder_activation = "leaky_relu"` (not in the paper) replaces that last ReLU
by a LeakyReLU(0.2), so no unit of e can die at exactly 0 (the collapse of docs/model_card.md).

Glossary: x frame, y landmark image (both (B,3,H,W) in [-1,1]), e embedding (B,N), N = embedding_dim.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from .blocks import ACTIVATIONS, DownStack, sum_pool


def check_embedding_channels(cfg: ModelConfig, name: str) -> None:
    if cfg.embedder_channels[-1] != cfg.embedding_dim:
        raise ValueError(f"{name}: the last of embedder_channels ({cfg.embedder_channels[-1]}) must equal "
                         f"embedding_dim ({cfg.embedding_dim}): the pooled output is the embedding")


class Embedder(nn.Module):
    """E(x, y) -> e (B, N). Pure: tensors in, tensors out."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        check_embedding_channels(cfg, "embedder")
        if cfg.embedder_activation not in ACTIVATIONS:
            raise ValueError(f"model.embedder_activation must be one of {ACTIVATIONS}, got {cfg.embedder_activation!r}")
        self.activation = cfg.embedder_activation
        self.down = DownStack(6, cfg.embedder_channels, cfg.image_size, cfg.embedder_attention_at,
                              norm="none", spectral=cfg.spectral_norm, name="embedder")

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """x, y (B,3,H,W) -> e (B,N)."""
        h = torch.cat([x, y], dim=1)  # B,6,H,W
        return sum_pool(self.down(h)[-1], self.activation)  # B,N (from B,N,4,4 at 256 px)

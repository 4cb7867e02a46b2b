"""Projection discriminator D(x, y, i) = V(x, y)^T (W_i + w0) + b (paper.md section 3).

- V (`ConvPart`): E's layout (6-channel input x concatenated with y, residual downsampling blocks without
  normalisation, self-attention at `embedder_attention_at`) plus `discriminator_extra_blocks` residual
  blocks at the last resolution (512 -> 512 at 4 x 4 for 256 px), then ReLU and global sum pooling -> (B,N).
  Its features for feature matching (L_FM) are the outputs of every residual block (after that block's
  self-attention where there is one).
- W: one row per training video, nn.Embedding(num_videos, N), initialised U(-0.1, 0.1) [LAB];
  w0 (N,) and b (scalar) are shared. The realism score is returned raw: no sigmoid (hinge losses).
- `single_person(e_new)`: D'(x, y) = V(x, y)^T w' + b for fine-tuning (paper section 6), with its own copies
  of V and b and w' = w0 + e_new as a free parameter.

Decisions [REC]: W, w0 and b are plain parameters, not spectrally normalised. W and w0 live in the space of
the embeddings e (L_MCH pulls e_hat_i towards W_i and fine-tuning starts from w' = w0 + e_new); spectral
norm would rescale the whole table by its largest singular value and pin |w0| to 1 (for a 1 x N matrix
sigma = |w0|), breaking both. Every conv of V is spectrally normalised. w0 and b start at zero.

Glossary: x frame, y landmark image (B,3,H,W), video (B,) int64 row of W, N = embedding_dim.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from .blocks import DownStack, ResBlock, sum_pool
from .embedder import check_embedding_channels


class ConvPart(nn.Module):
    """V(x, y) -> (v (B,N), features list of (B,C_j,H_j,W_j), one per residual block)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        check_embedding_channels(cfg, "discriminator")
        spectral = cfg.spectral_norm
        self.down = DownStack(6, cfg.embedder_channels, cfg.image_size, cfg.embedder_attention_at,
                              norm="none", spectral=spectral, name="discriminator")
        c = self.down.out_channels
        self.extra = nn.ModuleList(ResBlock(c, c, norm="none", spectral=spectral)
                                   for _ in range(cfg.discriminator_extra_blocks))

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, list[Tensor]]:
        feats = self.down(torch.cat([x, y], dim=1))  # from B,6,H,W ; last B,N,4,4 at 256 px
        h = feats[-1]
        for block in self.extra:
            h = block(h)  # B,N,4,4
            feats.append(h)
        return sum_pool(h), feats  # B,N


class Discriminator(nn.Module):
    """Meta-learning discriminator: `forward(x, y, video) -> (score (B,), features)`. Pure."""

    def __init__(self, cfg: ModelConfig, num_videos: int):
        super().__init__()
        if num_videos < 1:
            raise ValueError(f"num_videos must be >= 1, got {num_videos}")
        self.V = ConvPart(cfg)
        self.W = nn.Embedding(num_videos, cfg.embedding_dim)
        nn.init.uniform_(self.W.weight, -0.1, 0.1)
        self.w0 = nn.Parameter(torch.zeros(cfg.embedding_dim))
        self.b = nn.Parameter(torch.zeros(()))

    def video_embedding(self, video: Tensor) -> Tensor:
        """W_i: (B,) int64 -> (B,N)."""
        return self.W(video)

    def forward(self, x: Tensor, y: Tensor, video: Tensor) -> tuple[Tensor, list[Tensor]]:
        """x, y (B,3,H,W), video (B,) -> realism score r (B,) (no sigmoid), V's block features."""
        v, feats = self.V(x, y)  # B,N
        w = self.W(video) + self.w0  # B,N
        return (v * w).sum(dim=1) + self.b, feats  # B

    def single_person(self, e_new: Tensor) -> "PersonDiscriminator":
        """D' for fine-tuning one person: own copies of V and b, free w' = w0 + e_new (paper section 6).

        e_new (N,) or (1,N). Nothing is shared with `self` (deep copies; w' is a new leaf parameter).
        """
        e_new = e_new.detach().reshape(-1)
        if e_new.numel() != self.w0.numel():
            raise ValueError(f"e_new must have {self.w0.numel()} elements, got {tuple(e_new.shape)}")
        w_prime = (self.w0.detach() + e_new.to(self.w0)).clone()
        return PersonDiscriminator(copy.deepcopy(self.V), w_prime, self.b.detach().clone())


class PersonDiscriminator(nn.Module):
    """D'(x, y) = V(x, y)^T w' + b: `forward(x, y, video=None) -> (score (B,), features)`; `video` is ignored
    (it exists so the shared training steps can call both discriminators alike)."""

    def __init__(self, V: ConvPart, w_prime: Tensor, b: Tensor):
        super().__init__()
        self.V = V
        self.w_prime = nn.Parameter(w_prime)  # N
        self.b = nn.Parameter(b)  # scalar

    def forward(self, x: Tensor, y: Tensor, video: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        v, feats = self.V(x, y)  # B,N
        return v @ self.w_prime + self.b, feats  # B

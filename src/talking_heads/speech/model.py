"""`AudioToMotion`: log-mel features (B, N_MELS, T) at 100 frames/s -> speech motion (B, T, P, 2) at the same rate.

Features are normalised by the training set's per-band mean and spread (buffers, saved with the weights), and,
with `normalise_window`, by each band's running mean over the last seconds (a voice's timbre and a microphone's
colour count less; loudness within the window still tells speech from pauses). Then a 1x1 convolution, residual
blocks of dilated causal convolutions (kernel 3, a normalisation, GELU, dropout while training), and a 1x1
convolution to the P x 2 motion (`speech.motion`, inter-ocular units; scaled by 0.1 so that the start is near
rest). The convolutions see the sound up to t + L (L frames of look-ahead: the input is padded with L frames of
silence at the end and the first L outputs are dropped) and (sum of dilations x 2) frames before t.
`norm = "group"` (the shipped model) normalises over the channels and the whole window, so every output also
depends on the window's statistics: fine offline (`model_io.predict_motion` runs windows of 60 s). `norm =
"frame"` normalises each frame's channels alone: the network is then strictly causal with look-ahead L, and
L = 0 is a streaming model (each 10 ms of sound gives a frame at once). Pure: no I/O, no data handling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SpeechConfig
from .audio import LOG_FLOOR, N_MELS
from .motion import SPEECH_POINTS

OUTPUT_SCALE = 0.1


class FrameNorm(nn.LayerNorm):
    """LayerNorm over the channels of each frame of (B, C, T): no statistics across time, so causal."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class CausalBlock(nn.Module):
    def __init__(self, channels: int, dilation: int, dropout: float = 0.0, norm: str = "group"):
        super().__init__()
        self.pad = 2 * dilation
        self.conv = nn.Conv1d(channels, channels, 3, dilation=dilation)
        self.norm = FrameNorm(channels) if norm == "frame" else nn.GroupNorm(8, channels)
        self.drop = nn.Dropout(dropout)
        self.mix = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(F.pad(x, (self.pad, 0)))
        return x + self.mix(self.drop(F.gelu(self.norm(h))))


def running_mean(x: torch.Tensor, frames: int) -> torch.Tensor:
    """(B,C,T) the mean of each channel over the last `frames` positions (fewer at the start)."""
    c = torch.cumsum(F.pad(x, (1, 0)), dim=2)  # B,C,T+1
    t = torch.arange(1, x.shape[2] + 1, device=x.device)
    lo = (t - frames).clamp_min(0)
    return (c[:, :, t] - c[:, :, lo]) / (t - lo).to(x.dtype)


class AudioToMotion(nn.Module):
    def __init__(self, cfg: SpeechConfig, lookahead_frames: int):
        super().__init__()
        self.lookahead = int(lookahead_frames)
        self.points = len(SPEECH_POINTS)
        self.register_buffer("mean", torch.zeros(N_MELS, 1))
        self.register_buffer("std", torch.ones(N_MELS, 1))
        self.inp = nn.Conv1d(N_MELS, cfg.channels, 1)
        self.blocks = nn.ModuleList(CausalBlock(cfg.channels, d, cfg.dropout, cfg.norm) for d in cfg.dilations)
        self.out = nn.Conv1d(cfg.channels, self.points * 2, 1)
        nn.init.zeros_(self.out.bias)
        self.receptive_field = 1 + sum(2 * d for d in cfg.dilations)  # frames of the past each output sees
        self.norm_frames = int(round(cfg.normalise_window * 100))  # 0: no running-mean normalisation

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, N_MELS, T) -> motion (B, T, P, 2)."""
        x = (features - self.mean) / self.std
        if self.lookahead:
            silence = (torch.log(torch.tensor(LOG_FLOOR)) - self.mean) / self.std  # N_MELS,1
            x = torch.cat([x, silence.expand(x.shape[0], -1, self.lookahead)], dim=2)
        if self.norm_frames > 1:
            x = x - running_mean(x, self.norm_frames)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h)
        y = self.out(h)[:, :, self.lookahead:] * OUTPUT_SCALE  # B, P*2, T
        return y.transpose(1, 2).reshape(y.shape[0], y.shape[2], self.points, 2)

"""Generator G(y, e; psi, P) (paper.md section 3).

An image-to-image network after Johnson et al. whose resampling layers are BigGAN-style residual blocks:
- encoder: residual downsampling blocks with regular instance norm (learned affine), self-attention at
  `generator_down_attention_at` (256 px: 3 -> 64 -> 128 -> 256 (attention at 32) -> 512, giving 16 x 16);
- bottleneck: `generator_res_blocks` AdaIN residual blocks at the encoder's output resolution;
- decoder: AdaIN residual upsampling blocks `generator_up_channels`, self-attention at
  `generator_up_attention_at` (256 px: 512 -> 512 -> 256 (attention at 64) -> 128 -> 64, the [LAB] layout
  that reproduces the paper's 38M parameters and about 13k AdaIN parameters);
- head: AdaIN -> ReLU -> conv3x3 -> tanh, images in [-1, 1].

The person-specific parameters psi_hat = P e (P = `projection`, one spectrally normalised linear layer
N -> num_adain_params) are the per-channel scales and biases of every AdaIN layer. Routing: the generator
lists its AdaIN-consuming layers in forward order (`adain_layers()`), each reports `num_adain_params`, and
`forward` splits psi with torch.split by those counts; nothing keeps slice offsets by hand. In fine-tuning
(paper section 6) psi' is a free parameter passed to `forward` directly and P is unused. For rendering one
avatar, `fix_adain` fixes psi' into the AdaIN layers (`specialise`, models/specialise.py).

Glossary: y landmark image (B,3,H,W) in [-1,1], e embedding (B,N), psi AdaIN parameters (B,num_adain_params).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from .blocks import AdaIN, DownStack, FixedNorm, ResBlock, SelfAttention, check_resolutions, conv, sn
from .specialise import AvatarGenerator


class Generator(nn.Module):
    """G: `adain_params(e) -> psi`, `forward(y, psi) -> x_hat`. Pure: tensors in, tensors out.

    Implements models/interface.py's TalkingHeadGenerator (`forward` ignores sources; aux is empty).
    `in_channels`: 3 for a landmark image (the paper); more when another generator feeds it extra input
    planes (models/warp.py)."""

    needs_sources = False
    needs_points = False

    def __init__(self, cfg: ModelConfig, in_channels: int = 3):
        super().__init__()
        spectral = cfg.spectral_norm
        if len(cfg.generator_up_channels) != len(cfg.generator_down_channels):
            raise ValueError(f"generator: {len(cfg.generator_down_channels)} down blocks but "
                             f"{len(cfg.generator_up_channels)} up blocks; the output must be image_size")
        self.encoder = DownStack(in_channels, cfg.generator_down_channels, cfg.image_size, cfg.generator_down_attention_at,
                                 norm="instance", spectral=spectral, name="generator encoder")
        c, res = self.encoder.out_channels, self.encoder.out_resolution
        self.bottleneck = nn.ModuleList(ResBlock(c, c, norm="adain", spectral=spectral)
                                        for _ in range(cfg.generator_res_blocks))
        self.decoder = nn.ModuleList()
        produced = []
        for cout in cfg.generator_up_channels:
            res *= 2
            produced.append(res)
            self.decoder.append(ResBlock(c, cout, resample="up", norm="adain", spectral=spectral))
            if res in cfg.generator_up_attention_at:
                self.decoder.append(SelfAttention(cout, spectral))
            c = cout
        check_resolutions("generator decoder", produced, cfg.generator_up_attention_at)
        self.out_norm = AdaIN(c)
        self.out_conv = conv(c, 3, 3, spectral=spectral)
        self.projection = sn(nn.Linear(cfg.embedding_dim, self.num_adain_params), spectral)  # P

    @property
    def num_adain_params(self) -> int:
        """Size of psi (0 for a generator specialised to one person, whose AdaIN layers are fixed)."""
        return sum(m.num_adain_params for m in self.adain_layers())

    def adain_layers(self) -> list[nn.Module]:
        """The AdaIN-consuming layers in forward order (the order psi is laid out in)."""
        layers = [*self.bottleneck, *self.decoder, self.out_norm]
        return [m for m in layers if m.num_adain_params]

    def adain_sizes(self) -> list[int]:
        return [m.num_adain_params for m in self.adain_layers()]

    def adain_params(self, e: Tensor) -> Tensor:
        """psi_hat = P e: (B,N) -> (B,num_adain_params)."""
        return self.projection(e)

    def meta_parameters(self) -> list[nn.Parameter]:
        """What meta-learning trains: every weight, P included."""
        return list(self.parameters())

    def finetune_parameters(self) -> list[nn.Parameter]:
        """What fine-tuning trains besides psi' (paper section 6): every weight but P."""
        projection = {id(p) for p in self.projection.parameters()}
        return [p for p in self.parameters() if id(p) not in projection]

    def fix_adain(self, psi: Tensor) -> None:
        """Fix one person's psi (1, num_adain_params) into the AdaIN layers, in place (each becomes a
        FixedNorm); afterwards `num_adain_params == 0` and `forward` takes psi None."""
        if psi.dim() != 2 or psi.shape[0] != 1 or psi.shape[1] != self.num_adain_params:
            raise ValueError(f"psi must be (1, {self.num_adain_params}), got {tuple(psi.shape)}")
        for layer, chunk in zip(self.adain_layers(), psi.split(self.adain_sizes(), dim=1)):  # psi's layout
            if layer is self.out_norm:  # the head's AdaIN
                self.out_norm = FixedNorm.from_adain(layer, chunk)
            else:  # a ResBlock
                layer.fix_adain(chunk)

    def specialise(self, psi: Tensor, sources=None) -> AvatarGenerator:
        """One avatar's renderer, equal to `self(y, psi)` (psi (1, num_adain_params); models/specialise.py).
        This generator does not use `sources`; the renderer holds them as buffers when given."""
        return AvatarGenerator.from_generator(self, psi, sources)

    def forward_with_aux(self, y: Tensor, psi: Tensor, sources=None, points=None) -> tuple[Tensor, dict[str, Tensor]]:
        return self(y, psi), {}

    def forward(self, y: Tensor, psi: Tensor | None, sources=None, points=None) -> Tensor:
        """y (B,C_in,H,W), psi (B or 1, num_adain_params) -> x_hat (B,3,H,W) in [-1,1]. psi None: a generator
        specialised to one person (no AdaIN parameters left, models/specialise.py)."""
        chunks = iter(self._split_psi(psi))  # same order as adain_layers()
        h = self.encoder(y)[-1]  # B,512,16,16 at 256 px
        for layer in [*self.bottleneck, *self.decoder, self.out_norm]:
            h = layer(h, next(chunks)) if layer.num_adain_params else layer(h)  # ... -> B,64,256,256
        h = torch.relu(h)  # B,64,H,W (after the head's AdaIN, out_norm)
        return torch.tanh(self.out_conv(h))  # B,3,H,W

    def _split_psi(self, psi: Tensor | None) -> tuple[Tensor, ...]:
        n = self.num_adain_params
        if psi is None and n == 0:
            return ()
        if psi is None or psi.dim() != 2 or psi.shape[1] != n:
            raise ValueError(f"psi must be (B, {n}), got {None if psi is None else tuple(psi.shape)}")
        return psi.split(self.adain_sizes(), dim=1)

"""Building blocks shared by E, G and V (paper.md section 3, reference layout).

- `ResBlock`: pre-activation BigGAN-style residual block, down / up / same resolution, with no norm (E, V),
  instance norm with learned affine (G's encoder) or AdaIN (G's bottleneck and decoder).
- `AdaIN`: instance norm whose per-sample scale and bias come from psi = P e (the person-specific part);
  `FixedNorm`: an instance norm with one fixed affine step (an AdaIN layer fixed to one person, or an
  affine instance norm, in an avatar's renderer: models/specialise.py).
- `SelfAttention`: SAGAN self-attention.
- `DownStack`: the residual downsampling stack of E and V (and of G's encoder), with attention inserted at
  the configured resolutions.

Every conv and linear layer is spectrally normalised (`sn`). We use
`torch.nn.utils.parametrizations.spectral_norm`, not the older hook-based `torch.nn.utils.spectral_norm`:
the hook version stores the normalised weight as a non-leaf tensor attribute, so `copy.deepcopy` of a module
that has run forward in train mode fails (fine-tuning deep-copies G and V); the parametrization version
computes the weight on access, deep-copies, saves and loads as plain tensors (state_dict keys
`...parametrizations.weight.original` and the power-iteration buffers `..._u`, `..._v`, safetensors friendly)
and its in-place buffer updates are ordinary module buffers for DDP (broadcast from rank 0 each forward).

AdaIN routing: every module that consumes AdaIN parameters has an int attribute `num_adain_params` (0 for
the others); a consumer is called as `module(x, psi_slice)` and splits its own slice further with
torch.split. The generator never keeps a table of slice offsets.

Glossary: x frame, y landmark image, e embedding, psi AdaIN parameters, C channels, B batch.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

NORMS = ("none", "instance", "adain")


def sn(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Spectral normalisation of `module.weight` (paper section 3: all conv and linear layers)."""
    return spectral_norm(module) if enabled else module


def conv(cin: int, cout: int, kernel: int, *, bias: bool = True, spectral: bool = True) -> nn.Module:
    """A same-padded kxk convolution, spectrally normalised."""
    return sn(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias), spectral)


class AdaIN(nn.Module):
    """Adaptive instance norm: IN(x) * (1 + gamma) + beta, (gamma, beta) = this layer's slice of psi.

    psi slice layout (B, 2C): [gamma (C) | beta (C)]. The scale is parameterised as 1 + gamma [REC, as in
    BigGAN's conditional norms] so that psi = 0 is the identity affine map; psi = P e still holds every
    per-channel scale and bias, as the paper states, only offset by one.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.channels, self.eps = channels, eps
        self.num_adain_params = 2 * channels

    def forward(self, x: Tensor, psi: Tensor) -> Tensor:
        gamma, beta = psi.split(self.channels, dim=1)  # B,C ; B,C
        x = F.instance_norm(x, eps=self.eps)  # B,C,H,W
        return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class FixedNorm(nn.Module):
    """Instance norm with a fixed per-channel affine step, IN(x) * scale + bias: an AdaIN layer with one
    person's (gamma, beta) (`from_adain`: scale 1 + gamma, bias beta) or the encoder's instance norm with its
    learned affine (`from_instance_norm`).

    On a channels_last tensor each sample runs as batch norm with batch statistics, which over one sample are
    its instance statistics (the same numbers): torch's instance_norm copies a channels_last tensor to NCHW and
    back, which is much slower. NCHW tensors and ONNX export use instance_norm."""

    num_adain_params = 0  # consumes no psi: the generator's routing skips it

    def __init__(self, scale: Tensor, bias: Tensor, eps: float):
        super().__init__()
        self.eps = float(eps)
        self.register_buffer("scale", scale.detach().reshape(-1).clone())  # C
        self.register_buffer("bias", bias.detach().reshape(-1).clone())  # C

    @classmethod
    def from_adain(cls, adain: AdaIN, psi_slice: Tensor) -> "FixedNorm":
        gamma, beta = psi_slice.detach().reshape(-1).split(adain.channels)  # C ; C
        return cls(1 + gamma, beta, adain.eps)

    @classmethod
    def from_instance_norm(cls, norm: nn.InstanceNorm2d) -> "FixedNorm":
        if not norm.affine or norm.track_running_stats:
            raise ValueError("only an affine instance norm without running statistics can be fixed")
        return cls(norm.weight, norm.bias, norm.eps)

    def forward(self, x: Tensor) -> Tensor:
        channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        if not channels_last or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return F.instance_norm(x, weight=self.scale, bias=self.bias, eps=self.eps)  # B,C,H,W
        parts = [F.batch_norm(xi, None, None, self.scale, self.bias, True, 0.0, self.eps) for xi in x.split(1)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)  # B,C,H,W


def make_norm(kind: str, channels: int) -> nn.Module | None:
    if kind == "none":
        return None
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "adain":
        return AdaIN(channels)
    raise ValueError(f"unknown norm {kind!r}; choose one of {NORMS}")


def _pool_taps() -> Tensor:
    """(9, 16) matrix mapping a 3x3 kernel to the 4x4 kernel of conv3x3 followed by 2x2 average pooling:
    w4[m] = 1/4 sum_{d in {0,1}^2} w3[m - d]."""
    taps = torch.zeros(3, 3, 4, 4)
    for i in range(3):
        for j in range(3):
            taps[i, j, i:i + 2, j:j + 2] = 0.25
    return taps.view(9, 16)


_POOL_TAPS = _pool_taps()
FUSE_MIN_SIZE = 16  # fuse conv3x3 + avg-pool only from this input size up (below it the 4x4 conv is slower)


def conv3x3_avgpool(x: Tensor, conv3: nn.Conv2d, w4: Tensor | None = None) -> Tensor:
    """conv3x3 (padding 1) followed by 2x2 average pooling: (B,I,H,W) -> (B,O,H/2,W/2).

    From FUSE_MIN_SIZE px up it runs as ONE stride-2 4x4 convolution with w4 = w3 @ taps: exactly the same
    linear map (bias unchanged), 4 instead of 9 multiply-adds per input pixel and no full-resolution
    output. `conv3.weight` is read once, so spectral norm's power iteration runs once as usual.
    """
    if min(x.shape[-2:]) < FUSE_MIN_SIZE:
        return F.avg_pool2d(conv3(x), 2)
    w4 = avgpool_weight(conv3.weight) if w4 is None else w4  # w4: the kernel computed once (FixedConvAvgPool)
    return F.conv2d(x, w4, conv3.bias, stride=2, padding=1)  # B,O,H/2,W/2


def avgpool_weight(w: Tensor) -> Tensor:
    """conv3x3_avgpool's 4x4 kernel (O,I,4,4) of a 3x3 kernel w (O,I,3,3)."""
    return (w.flatten(2) @ _POOL_TAPS.to(w)).view(*w.shape[:2], 4, 4)


def _upsample_taps() -> Tensor:
    """(9, 16) matrix mapping a 3x3 kernel to the 4x4 stride-2 transposed-convolution kernel of nearest x2
    upsampling followed by conv3x3: along each axis the even outputs see w0 x[i-1] + (w1 + w2) x[i], the odd
    ones (w0 + w1) x[i] + w2 x[i+1], i.e. the 4 taps (w2, w1 + w2, w0 + w1, w0)."""
    t = torch.zeros(3, 4)  # 3x3 tap index (one axis) -> 4x4 tap index
    for k, taps in enumerate(((2, 3), (1, 2), (0, 1))):  # w0 -> taps 2, 3; w1 -> 1, 2; w2 -> 0, 1
        t[k, list(taps)] = 1.0
    return torch.einsum("ak,bl->abkl", t, t).reshape(9, 16)


_UPSAMPLE_TAPS = _upsample_taps()


def upsample_conv3x3(x: Tensor, conv3: nn.Conv2d, w4: Tensor | None = None) -> Tensor:
    """Nearest x2 upsampling followed by conv3x3 (padding 1): (B,I,H,W) -> (B,O,2H,2W), run as ONE stride-2
    4x4 transposed convolution of the low-resolution input with w4 = w3 @ taps: exactly the same linear map
    (bias unchanged), 16 instead of 36 multiply-adds per input pixel and no upsampled copy. `conv3.weight` is
    read once, so spectral norm's power iteration runs once as usual."""
    w4 = upsample_weight(conv3.weight) if w4 is None else w4  # w4: the kernel computed once (FixedUpsampleConv)
    return F.conv_transpose2d(x, w4, conv3.bias, stride=2, padding=1)  # B,O,2H,2W


def upsample_weight(w: Tensor) -> Tensor:
    """upsample_conv3x3's transposed-convolution kernel (I,O,4,4) of a 3x3 kernel w (O,I,3,3)."""
    return (w.flatten(2) @ _UPSAMPLE_TAPS.to(w)).view(*w.shape[:2], 4, 4).transpose(0, 1)


class FixedConvAvgPool(nn.Module):
    """conv3x3_avgpool with its 4x4 kernel computed once, for fixed weights (an avatar's renderer:
    models/specialise.py). `resamples`: ResBlock calls it in place of conv3x3 + pooling."""

    resamples = True

    def __init__(self, conv3: nn.Conv2d):
        super().__init__()
        self.conv3 = conv3
        self.register_buffer("weight4", avgpool_weight(conv3.weight.detach()).contiguous())

    def forward(self, x: Tensor) -> Tensor:
        return conv3x3_avgpool(x, self.conv3, self.weight4)  # B,O,H/2,W/2


class FixedUpsampleConv(nn.Module):
    """upsample_conv3x3 with its transposed-convolution kernel computed once, for fixed weights (an avatar's
    renderer: models/specialise.py). `resamples`: ResBlock calls it in place of upsampling + conv3x3."""

    resamples = True

    def __init__(self, conv3: nn.Conv2d):
        super().__init__()
        self.conv3 = conv3
        self.register_buffer("weight4", upsample_weight(conv3.weight.detach()).contiguous())

    def forward(self, x: Tensor) -> Tensor:
        return upsample_conv3x3(x, self.conv3, self.weight4)  # B,O,2H,2W


class ResBlock(nn.Module):
    """Pre-activation residual block [REC, LAB layout].

    main: [norm0] -> ReLU -> [upsample x2 nearest] -> conv3x3 -> [norm1] -> ReLU -> conv3x3 -> [avg-pool /2]
    skip: identity, or [upsample] -> conv1x1 -> [avg-pool] when channels or size change. The 1x1 conv commutes
          with nearest upsampling and with average pooling, so it runs at the lower resolution (same result,
          up to 4x fewer operations); the last conv3x3 + avg-pool of a down block and the upsampling + first
          conv3x3 of an up block run fused (`conv3x3_avgpool`, `upsample_conv3x3`, same result).
    `preactivation=False` (the first block of a network) drops norm0 and the first ReLU: the input is an
    image. In normalised blocks no conv has a bias [LAB]: each output feeds a norm (norm1, or the next
    layer's norm0 / the head's AdaIN), which would remove it.
    """

    def __init__(self, cin: int, cout: int, *, resample: str | None = None, norm: str = "none",
                 preactivation: bool = True, spectral: bool = True):
        super().__init__()
        if resample not in (None, "down", "up"):
            raise ValueError(f"resample must be None, 'down' or 'up', got {resample!r}")
        self.resample = resample
        bias = norm == "none"
        self.norm0 = make_norm(norm, cin) if preactivation else None
        self.conv0 = conv(cin, cout, 3, bias=bias, spectral=spectral)
        self.norm1 = make_norm(norm, cout)
        self.conv1 = conv(cout, cout, 3, bias=bias, spectral=spectral)
        self.skip = conv(cin, cout, 1, bias=bias, spectral=spectral) if (cin != cout or resample) else None
        self.preactivation = preactivation

    @property
    def num_adain_params(self) -> int:
        """Size of this block's psi slice (0 once its AdaIN layers are fixed to one person: models/specialise.py)."""
        return sum(n.num_adain_params for n in self.adain_norms())

    def adain_norms(self) -> list[AdaIN]:
        """This block's AdaIN layers in the order its psi slice is laid out (norm0, norm1)."""
        return [n for n in (self.norm0, self.norm1) if isinstance(n, AdaIN)]

    def fix_adain(self, psi: Tensor) -> None:
        """Replace this block's AdaIN layers by FixedNorm layers holding psi's slices (1, num_adain_params),
        in place (an avatar's renderer: models/specialise.py); afterwards `num_adain_params == 0`."""
        parts = iter(psi.split([n.num_adain_params for n in self.adain_norms()], dim=1))
        if isinstance(self.norm0, AdaIN):
            self.norm0 = FixedNorm.from_adain(self.norm0, next(parts))
        if isinstance(self.norm1, AdaIN):
            self.norm1 = FixedNorm.from_adain(self.norm1, next(parts))

    def _norm(self, norm: nn.Module | None, x: Tensor, psi: Tensor | None) -> Tensor:
        if norm is None:
            return x
        return norm(x, psi) if isinstance(norm, AdaIN) else norm(x)

    def forward(self, x: Tensor, psi: Tensor | None = None) -> Tensor:
        """x (B,Cin,H,W), psi (B, num_adain_params) for AdaIN blocks -> (B,Cout,H',W')."""
        psi0 = psi1 = None
        if self.num_adain_params:
            parts = iter(psi.split([n.num_adain_params for n in self.adain_norms()], dim=1))
            psi0 = next(parts) if isinstance(self.norm0, AdaIN) else None
            psi1 = next(parts)
        h = x
        if self.preactivation:
            h = F.relu(self._norm(self.norm0, h, psi0))
        up = self.resample == "up" and not getattr(self.conv0, "resamples", False)
        h = upsample_conv3x3(h, self.conv0) if up else self.conv0(h)  # B,Cout,H',W'
        h = F.relu(self._norm(self.norm1, h, psi1))
        down = self.resample == "down" and not getattr(self.conv1, "resamples", False)
        h = conv3x3_avgpool(h, self.conv1) if down else self.conv1(h)  # B,Cout,H',W'
        return h + self._shortcut(x)

    def _shortcut(self, x: Tensor) -> Tensor:
        if self.skip is None:
            return x
        if self.resample == "down":
            return self.skip(F.avg_pool2d(x, 2))
        s = self.skip(x)
        return F.interpolate(s, scale_factor=2.0, mode="nearest") if self.resample == "up" else s


class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019): x + gamma * softmax(q^T k) v, gamma initialised to 0.

    q, k: 1x1 convs to C/8 channels, v: 1x1 conv to C channels, all spectrally normalised; one head, no
    1/sqrt(d) scaling (as in SAGAN). On CUDA the fused scaled_dot_product_attention (no HW x HW matrix in
    memory on kernels that support it); on the CPU two plain matrix products around a softmax: no fused CPU
    kernel takes v wider than q, k, and torch's fallback for that case is slower than these three ops. The
    same function either way.
    """

    num_adain_params = 0

    def __init__(self, channels: int, spectral: bool = True):
        super().__init__()
        inner = max(1, channels // 8)
        self.query = conv(channels, inner, 1, spectral=spectral)
        self.key = conv(channels, inner, 1, spectral=spectral)
        self.value = conv(channels, channels, 1, spectral=spectral)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)[:, None]  # B,1,HW,C/8
        k = self.key(x).flatten(2).transpose(1, 2)[:, None]  # B,1,HW,C/8
        v = self.value(x).flatten(2).transpose(1, 2)[:, None]  # B,1,HW,C
        if x.is_cuda:
            o = F.scaled_dot_product_attention(q, k, v, scale=1.0)[:, 0]  # B,HW,C
        else:
            o = torch.bmm(torch.softmax(torch.bmm(q[:, 0], k[:, 0].transpose(1, 2)), -1), v[:, 0])  # B,HW,C
        return x + self.gamma * o.transpose(1, 2).reshape(b, c, h, w)


def check_resolutions(name: str, produced: Sequence[int], attention_at: Sequence[int]) -> None:
    """Attention resolutions must be produced by some block (a misconfiguration is an error, not a no-op)."""
    missing = sorted(set(attention_at) - set(produced))
    if missing:
        raise ValueError(f"{name}: attention at {missing} px, but its blocks produce only {list(produced)} px")


class DownStack(nn.Module):
    """Residual downsampling blocks, each halving H, with self-attention after the blocks producing the
    resolutions in `attention_at` (E, V and G's encoder). The first block has no pre-activation.

    `forward(h) -> list` of every block's output (after its attention, if any): the features V's feature
    matching uses; the last item is the stack's output.
    """

    def __init__(self, cin: int, channels: Sequence[int], image_size: int, attention_at: Sequence[int], *,
                 norm: str = "none", spectral: bool = True, name: str = "down stack"):
        super().__init__()
        if image_size % (2 ** len(channels)):
            raise ValueError(f"{name}: image size {image_size} is not divisible by 2^{len(channels)}")
        resolutions = [image_size // 2 ** (i + 1) for i in range(len(channels))]
        check_resolutions(name, resolutions, attention_at)
        self.blocks = nn.ModuleList()
        self.attention = nn.ModuleDict()
        for i, (cout, res) in enumerate(zip(channels, resolutions)):
            self.blocks.append(ResBlock(cin, cout, resample="down", norm=norm, preactivation=i > 0,
                                        spectral=spectral))
            if res in attention_at:
                self.attention[str(i)] = SelfAttention(cout, spectral)
            cin = cout
        self.out_channels = cin
        self.out_resolution = resolutions[-1]

    def forward(self, h: Tensor) -> list[Tensor]:
        feats = []
        for i, block in enumerate(self.blocks):
            h = block(h)  # B,C_i,H/2^(i+1),W/2^(i+1)
            if str(i) in self.attention:
                h = self.attention[str(i)](h)
            feats.append(h)
        return feats


ACTIVATIONS = ("relu", "leaky_relu")


def sum_pool(h: Tensor, activation: str = "relu") -> Tensor:
    """ReLU (paper section 3; or LeakyReLU 0.2, an option of E), then global sum pooling over space (never max
    or average): (B,C,H,W) -> (B,C)."""
    h = F.relu(h) if activation == "relu" else F.leaky_relu(h, 0.2)
    return h.sum(dim=(2, 3))

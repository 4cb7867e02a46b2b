"""dlib's face-recognition ResNet in PyTorch: the project's one pretrained face network.

It plays VGGFace's role in the content loss (losses.FaceContentLoss) and ArcFace's in the identity metrics
(metrics/identity.py, metrics/csim.py). Trained by D. King on about 3 million faces of 7,500 people (99.38 %
on LFW), public domain; the weights ship in the `face-recognition-models` package as
`dlib_face_recognition_resnet_model_v1.dat` and are read by `models/dlib_format.py` (no dlib needed).
See ../shared/design/identity_network.md.

Architecture (dlib's declaration, innermost first):
    input 150x150 RGB, (pixel - (122.782, 117.001, 104.298)) / 256
    stem   con 32 7x7/2 -> affine -> relu -> max_pool 3x3/2                         # B,32,35,35
    level4 3 x res<32>                                                             # B,32,35,35
    level3 res_down<64>  + 3 x res<64>                                             # B,64,17,17
    level2 res_down<128> + 2 x res<128>                                            # B,128,8,8
    level1 res_down<256> + 2 x res<256>                                            # B,256,4,4
    level0 res_down<256>                                                           # B,256,2,2
    mean over space -> fc 128 (no bias)                                            # B,128
  res<N>      = relu(block<N,1>(x) + x)
  res_down<N> = relu(block<N,2>(x) + avg_pool 2x2/2 (x))
  block<N,s>  = affine(con N 3x3/1 (relu(affine(con N 3x3/s (x)))))
- `affine` is dlib's folded batch norm: a per-channel scale and shift.
- Padding is k // 2 at stride 1 and 0 at stride 2 (convolutions and pools).
- The residual add zero-pads the smaller tensor (missing channels, and missing rows / columns at the
  bottom / right): that is how the shortcuts grow 32 -> 64 -> 128 -> 256 channels without a 1x1 conv, and
  why level1's 3x3 block output meets a 4x4 pooled shortcut.
- The descriptor is not normalised (norm about 1.3-1.5); dlib's same-person rule is distance < 0.6.

The module is pure (tensors in, tensors out). `forward(chips)` takes aligned 150 x 150 face chips as the
project's RGB tensors in [-1, 1] (see landmarks/face_chips.py for the alignment), `features(chips)` also
returns the activations the content loss compares.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import EvalConfig
from ..landmarks.dlib_backend import model_path
from ..landmarks.face_chips import CHIP_SIZE  # input side of the network: dlib's 150 px chip
from .dlib_format import DlibFormatError, Layer, parameter_count, read_network

RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
PARAMETERS = 5_614_592  # of the shipped file (29 convolutions, 29 affine layers, fc 256 -> 128)
SAME_PERSON_DISTANCE = EvalConfig.identity_threshold  # dlib's verification threshold on the descriptor distance
INPUT_MEAN = (122.782, 117.001, 104.298)  # RGB mean subtracted by input_rgb_image_sized
# (channels, res<N> blocks, preceded by a res_down<N>) per level, from the input outwards
LEVELS = ((32, 3, False), (64, 3, True), (128, 2, True), (256, 2, True), (256, 0, True))
FEATURE_NAMES = ("stem", "level4", "level3", "level2", "level1")  # activations `features` returns


def add_padded(a: Tensor, b: Tensor) -> Tensor:
    """dlib's add_prev: the sum of two (B,C,H,W) tensors of possibly different C, H, W, the smaller one
    zero-padded at the end of the channel, row and column axes."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: Tensor) -> Tensor:
        pad = (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1])
        return F.pad(t, pad) if any(pad) else t

    return grow(a) + grow(b)


class Affine(nn.Module):
    """dlib's `affine` layer (batch norm with its statistics folded in): gamma * x + beta per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


def _conv(cin: int, cout: int, kernel: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0)


class FaceResBlock(nn.Module):
    """res<N> (down=False) or res_down<N> (down=True), see the module docstring."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1, self.affine1 = _conv(cin, cout, 3, 2 if down else 1), Affine(cout)
        self.conv2, self.affine2 = _conv(cout, cout, 3, 1), Affine(cout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_padded(h, shortcut))


class FaceIdentityNet(nn.Module):
    """dlib_face_recognition_resnet_model_v1 (see the module docstring). Random weights until loaded."""

    def __init__(self):
        super().__init__()
        self.stem_conv, self.stem_affine = _conv(3, 32, 7, 2), Affine(32)
        levels, cin = [], 32
        for channels, repeats, down in LEVELS:
            blocks = [FaceResBlock(cin, channels, True)] if down else []
            blocks += [FaceResBlock(channels, channels, False) for _ in range(repeats)]
            levels.append(nn.Sequential(*blocks))
            cin = channels
        self.levels = nn.Sequential(*levels)  # level4, level3, level2, level1, level0
        self.fc = nn.Linear(256, 128, bias=False)
        self.register_buffer("mean", torch.tensor(INPUT_MEAN), persistent=False)

    def normalise(self, chips: Tensor) -> Tensor:
        """RGB [-1,1] (B,3,150,150) -> dlib's input scaling (pixel - mean) / 256."""
        return ((chips.float() + 1.0) * 127.5 - self.mean.view(1, 3, 1, 1)) / 256.0

    def features(self, chips: Tensor) -> tuple[list[Tensor], Tensor]:
        """([stem, level4, level3, level2, level1] activations, descriptor (B,128)) of aligned chips."""
        if chips.shape[-2:] != (CHIP_SIZE, CHIP_SIZE) or chips.dim() != 4:
            raise ValueError(f"expected aligned face chips (B,3,{CHIP_SIZE},{CHIP_SIZE}), got {tuple(chips.shape)}")
        h = F.max_pool2d(F.relu(self.stem_affine(self.stem_conv(self.normalise(chips)))), 3, 2)  # B,32,35,35
        feats = [h]
        for level in self.levels:
            h = level(h)  # B,32,35,35 / B,64,17,17 / B,128,8,8 / B,256,4,4 / B,256,2,2
            feats.append(h)
        descriptor = self.fc(h.mean(dim=(2, 3)))  # B,128
        return feats[:len(FEATURE_NAMES)], descriptor

    def forward(self, chips: Tensor) -> Tensor:
        """Aligned chips RGB [-1,1] (B,3,150,150) -> descriptors (B,128), not normalised."""
        return self.features(chips)[1]

    # --- dlib weights ----------------------------------------------------------------------------------
    def dlib_layers(self) -> list[Layer]:
        """This network as dlib declares it, innermost first (the reader's walk through the file)."""
        layers = [Layer("input_rgb_image_sized", kernel=CHIP_SIZE), Layer("con", 32, 7, 2), Layer("affine"),
                  Layer("relu"), Layer("max_pool", 0, 3, 2)]
        for level in self.levels:
            for block in level:
                n = block.conv1.out_channels
                body = [Layer("con", n, 3, 2 if block.down else 1), Layer("affine"), Layer("relu"),
                        Layer("con", n, 3, 1), Layer("affine")]
                if block.down:
                    layers += [Layer("tag1"), *body, Layer("tag2"), Layer("skip1"), Layer("avg_pool", 0, 2, 2),
                               Layer("add_prev2"), Layer("relu")]
                else:
                    layers += [Layer("tag1"), *body, Layer("add_prev1"), Layer("relu")]
        layers += [Layer("avg_pool", 0, 0, 1), Layer("fc", 128), Layer("loss_metric")]
        return layers

    def parameter_layers(self) -> list[nn.Module]:
        """The modules holding parameters, in the file's order (from the input outwards)."""
        out: list[nn.Module] = [self.stem_conv, self.stem_affine]
        for level in self.levels:
            for block in level:
                out += [block.conv1, block.affine1, block.conv2, block.affine2]
        return out + [self.fc]

    @torch.no_grad()
    def load_dlib(self, path: str | os.PathLike) -> dict:
        """Load the weights of a dlib .dat file (see dlib_format); returns the file's metadata (input mean,
        loss margin, distance threshold). Raises DlibFormatError naming the file on any mismatch."""
        weights, meta = read_network(path, self.dlib_layers())
        n = parameter_count(weights)
        if n != PARAMETERS:
            raise DlibFormatError(f"{path}: {n} parameters, expected {PARAMETERS} for "
                                  f"{RECOGNITION_MODEL}")
        if not np.allclose(meta["mean"], INPUT_MEAN, atol=1e-3):
            raise DlibFormatError(f"{path}: input mean {meta['mean'].tolist()}, expected {list(INPUT_MEAN)}")
        for module, w in zip(self.parameter_layers(), weights, strict=True):
            if isinstance(module, Affine):
                module.weight.copy_(torch.from_numpy(w.arrays["gamma"]))
                module.bias.copy_(torch.from_numpy(w.arrays["beta"]))
            else:
                module.weight.copy_(torch.from_numpy(w.arrays["weight"]))
                if getattr(module, "bias", None) is not None:
                    module.bias.copy_(torch.from_numpy(w.arrays["bias"]))
        return meta


def default_weights_path() -> Path:
    """dlib_face_recognition_resnet_model_v1.dat inside the installed face-recognition-models package."""
    return model_path(RECOGNITION_MODEL)


def load_face_identity(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> FaceIdentityNet:
    """The pretrained network, frozen (eval mode, requires_grad False), from `path` or the default file."""
    net = FaceIdentityNet()
    net.load_dlib(default_weights_path() if not path else path)
    net.requires_grad_(False)
    return net.eval().to(device)


_SHARED: dict[tuple[str, str], FaceIdentityNet] = {}


def shared_face_identity(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> FaceIdentityNet:
    """One frozen instance per (weight file, device) for the process: the loss, the metrics and the CLI
    share it instead of each parsing the 22 MB file."""
    key = (str(Path(path).resolve()) if path else "", str(torch.device(device)))
    if key not in _SHARED:
        _SHARED[key] = load_face_identity(path, device)
    return _SHARED[key]

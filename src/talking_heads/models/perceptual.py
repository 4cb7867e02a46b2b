"""Perceptual networks of the content loss L_CNT (paper.md section 4): VGG19 (ImageNet) and VGGFace.

Both are defined here (torchvision is not usable) with torchvision's `features` indexing, built only up to
the deepest layer the loss reads, and return the ReLU outputs at `layers`:
- VGG19 features 1, 6, 11, 20, 29 and VGGFace (a VGG16) features 1, 6, 11, 18, 25: the ReLUs after conv1_1,
  conv2_1, conv3_1, conv4_1, conv5_1.
Both nets are the Caffe versions, which expect BGR, 0-255, mean-subtracted input; `forward` takes the
project's RGB images in [-1, 1] and converts them (`caffe_preprocess`). Max pooling as in the originals.

Weight files, loaded by path (`from_file`; .pth / .pt state_dicts through torch.load(weights_only=True),
or .safetensors):
- VGG19: a torchvision-layout state_dict (`features.{0,2,5,...}.weight/.bias`; `classifier.*` ignored)
  holding the *Caffe* VGG19 weights, e.g. `vgg19-d01eb7cb.pth` (jcjohnson's conversion, BGR 0-255 input).
  torchvision's own `vgg19-dcbb9e9d.pth` has the same keys but was trained on RGB [0,1] normalised input;
  it loads, but the preprocessing here does not match it.
- VGGFace, either
  (a) the common PyTorch conversion of the VGG-Face descriptor, `vgg_face_dag.pth` (S. Albanie's
      MatConvNet -> PyTorch models): keys `conv1_1.weight` ... `conv5_3.bias` (`fc6-8.*` ignored). That
      conversion expects RGB input (its meta mean [129.186, 104.762, 93.594] is RGB), so conv1_1's input
      channels are reversed on load to take the same BGR input as the Caffe model; or
  (b) a torchvision-VGG16-layout state_dict of the Caffe VGG-Face weights (BGR), `features.N.*` or bare
      `N.*` keys (what `VGGFace().state_dict()` writes).
A file that fits none of these raises `PerceptualWeightsError` naming the expected layout.

The networks are frozen (`requires_grad` False, eval mode): the loss computes real features under no_grad
and fake features with grad (see losses.ContentLoss).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from ..errors import InputError

VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class PerceptualWeightsError(InputError):
    """A weight file that does not hold the expected network in a supported key layout."""


def caffe_preprocess(x: Tensor, mean_bgr: Tensor) -> Tensor:
    """RGB in [-1,1] (B,3,H,W) -> BGR in [0,255] minus the per-channel BGR mean (B,3,H,W)."""
    bgr = x.flip(1)  # B,3,H,W as B,G,R
    return (bgr + 1) * 127.5 - mean_bgr.view(1, 3, 1, 1).to(x.dtype)


def vgg_features(cfg: Sequence[int | str], depth: int) -> nn.Sequential:
    """torchvision's `vgg.features` (conv3x3 pad 1, ReLU, max-pool 2) truncated to indices [0, depth]."""
    layers: list[nn.Module] = []
    cin = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=True)]
            cin = int(v)
    return nn.Sequential(*layers[: depth + 1])


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """A state_dict from .safetensors or a torch .pth/.pt (tensors only; a {"state_dict": ...} wrapper is
    unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"perceptual network weights not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, non-tensor content
        raise PerceptualWeightsError(f"{path}: not a PyTorch state_dict readable with weights_only=True "
                                     f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise PerceptualWeightsError(f"{path}: expected a state_dict (a mapping of names to tensors), "
                                     f"got {type(obj).__name__}")
    return dict(obj)


class _CaffeVGG(nn.Module):
    """VGG `features` truncated at the deepest used layer; forward returns the features at `layers`."""

    CFG: tuple = ()
    LAYERS: tuple[int, ...] = ()
    MEAN_BGR: tuple[float, float, float] = (0.0, 0.0, 0.0)
    LAYOUT: str = ""  # human description of the accepted key layouts, for errors

    def __init__(self, layers: Sequence[int] | None = None):
        super().__init__()
        self.layers = tuple(sorted(self.LAYERS if layers is None else layers))
        self.features = vgg_features(self.CFG, max(self.layers))
        bad = [i for i in self.layers if not isinstance(self.features[i], nn.ReLU)]
        if bad:
            raise ValueError(f"{type(self).__name__}: layers {bad} are not ReLU outputs")
        self.register_buffer("mean_bgr", torch.tensor(self.MEAN_BGR), persistent=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        """x RGB (B,3,H,W) in [-1,1] -> [features at each of `layers`]."""
        h = caffe_preprocess(x, self.mean_bgr)
        out = []
        wanted = set(self.layers)
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in wanted:
                out.append(h)
        return out

    # --- weights ----------------------------------------------------------------------------------------
    def _expected(self) -> dict[str, torch.Size]:
        return {k: v.shape for k, v in self.state_dict().items()}

    def convert_state_dict(self, sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Map a supported layout onto this module's `features.N.*` keys (override for more layouts)."""
        out = {}
        for k, v in sd.items():
            m = re.fullmatch(r"(?:module\.)?(?:features\.)?(\d+)\.(weight|bias)", k)
            if m:
                out[f"features.{m.group(1)}.{m.group(2)}"] = v
        return out

    def load_weights(self, path: str | os.PathLike) -> "_CaffeVGG":
        """Load a weight file (see the module docstring); raises PerceptualWeightsError on a mismatch."""
        raw = read_state_dict(path)
        sd = self.convert_state_dict(raw)
        expected = self._expected()
        missing = [k for k in expected if k not in sd]
        wrong = [f"{k} {tuple(sd[k].shape)} != {tuple(s)}" for k, s in expected.items()
                 if k in sd and sd[k].shape != s]
        if missing or wrong:
            got = list(raw)[:6]
            detail = (f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}" if missing
                      else f"wrong shapes {wrong[:3]}")
            raise PerceptualWeightsError(
                f"{path}: not a {type(self).__name__} weight file ({detail}; the file's first keys: {got}). "
                f"Expected {self.LAYOUT}")
        self.load_state_dict({k: sd[k].float() for k in expected}, strict=True)
        return self

    @classmethod
    def from_file(cls, path: str | os.PathLike, layers: Sequence[int] | None = None) -> "_CaffeVGG":
        """A frozen network (eval mode, requires_grad False) with the weights of `path`."""
        net = cls(layers).load_weights(path).eval()
        net.requires_grad_(False)
        return net


class VGG19(_CaffeVGG):
    """Caffe VGG19 (ImageNet) at features 1, 6, 11, 20, 29 (paper: Conv1,6,11,20,29)."""

    CFG = VGG19_CFG
    LAYERS = (1, 6, 11, 20, 29)
    MEAN_BGR = (103.939, 116.779, 123.68)
    LAYOUT = ("a torchvision-layout VGG19 state_dict: keys features.{0,2,5,7,10,...,28}.weight/.bias "
              "(classifier.* ignored), Caffe weights such as vgg19-d01eb7cb.pth; .pth or .safetensors")


# VGG16 features index of each named conv (Albanie's vgg_face_dag names -> torchvision indices)
_VGG16_CONV_NAMES = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
                     "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3")
_VGG16_CONV_INDEX = dict(zip(_VGG16_CONV_NAMES, [i for i, layer in enumerate(vgg_features(VGG16_CFG, 30))
                                                 if isinstance(layer, nn.Conv2d)]))


class VGGFace(_CaffeVGG):
    """VGG-Face descriptor (a VGG16) at features 1, 6, 11, 18, 25 (paper: Conv1,6,11,18,25)."""

    CFG = VGG16_CFG
    LAYERS = (1, 6, 11, 18, 25)
    MEAN_BGR = (93.5940, 104.7624, 129.1863)
    LAYOUT = ("the PyTorch conversion of the VGG-Face descriptor vgg_face_dag.pth (keys conv1_1.weight ... "
              "conv5_1.bias; fc* ignored; RGB-input weights, adapted to BGR on load), or a torchvision-VGG16-"
              "layout state_dict of the Caffe VGG-Face weights (keys features.{0,2,5,...,24}.weight/.bias "
              "or bare {0,2,...}.weight); .pth or .safetensors")

    def convert_state_dict(self, sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
        named = {k: v for k, v in sd.items() if re.fullmatch(r"conv\d_\d\.(weight|bias)", k)}
        if not named:
            return super().convert_state_dict(sd)
        out = {}
        for k, v in named.items():
            name, kind = k.split(".")
            out[f"features.{_VGG16_CONV_INDEX[name]}.{kind}"] = v
        if "features.0.weight" in out:  # vgg_face_dag takes RGB: reverse conv1_1's input channels for BGR
            out["features.0.weight"] = out["features.0.weight"].flip(1)
        return out

"""FID, Fréchet Inception distance between generated and real frames (paper.md section 7, realism; lower is better).

The network is the InceptionV3 variant of TensorFlow's FID code ("2015-12-05" graph), defined here (torchvision
is not usable) with the key names of the standard PyTorch port of its weights, the file
`pt_inception-2015-12-05-6726825d.pth` (pytorch-fid's release asset; also used by torch-fidelity and
clean-fid). Nothing is downloaded: give the file's path (`--fid-weights`, `EvalConfig.fid_weights`); without
it FID is "not available", never 0.

Differences from torchvision's Inception3 that the FID graph needs (and that the weights were trained with):
1008 classes; the average-pooling branches of Mixed_5b-d, 6b-e and 7b exclude the zero padding from the
average (TensorFlow's `count_include_pad=False`); Mixed_7c's pooling branch uses max pooling. BatchNorm eps
1e-3, convolutions without bias.

Pipeline: uint8 RGB -> [0,1] -> bilinear resize to 299 x 299 (align_corners=False) -> [-1,1] -> the 2048-D
pool3 features. FID = |mu_f - mu_r|^2 + Tr(S_f + S_r - 2 (S_f S_r)^(1/2)) with sample means and
covariances of the two sets (computed from the features with an SVD, `fid_from_features`; equal to the
usual scipy `sqrtm` route, `frechet_distance`, which a test checks). With fewer images than 2048 dimensions
the covariances are rank-deficient and FID is strongly biased upwards (the paper used 50 videos x 32 frames
= 1600 per set): compare values computed on the same number of frames only.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.perceptual import PerceptualWeightsError, read_state_dict
from .base import SetMetric

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU."""

    def __init__(self, cin: int, cout: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _pool_branch(x: Tensor, pool: str) -> Tensor:
    """3x3 stride-1 pooling of the 'pool' branches: TF-style average (padding not counted) or max."""
    if pool == "max":
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """Mixed_5b-d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | pool-1x1."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_pool_branch(x, "avg"))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Mixed_6a (grid reduction 35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """Mixed_6b-e: factorised 7x7 convolutions."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_pool_branch(x, "avg"))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """Mixed_7a (grid reduction 17 -> 8)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """Mixed_7b (`pool="avg"`) and Mixed_7c (`pool="max"`, the FID graph's quirk): expanded filter banks."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        bp = self.branch_pool(_pool_branch(x, self.pool))
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionV3(nn.Module):
    """The FID InceptionV3; `forward(x)` takes RGB in [-1,1] at 299 px and returns pool3 features (B,2048).
    `fc` (1008 classes) is part of the weight file and kept so the file loads strictly; FID does not use it."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # B,64,147,147
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # B,64,73,73
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # B,192,71,71
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # B,192,35,35
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)  # ... B,768,17,17 ... B,2048,8,8
        return x.mean(dim=(2, 3))  # B,2048 (pool3)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "FIDInceptionV3":
        """Build and load a weight file in the layout of `pt_inception-2015-12-05-6726825d.pth` (strict, except
        BatchNorm's `num_batches_tracked` counters, which that old file lacks). Eval mode, frozen."""
        net = cls()
        sd = read_state_dict(path)
        try:
            missing, unexpected = net.load_state_dict(sd, strict=False)
        except RuntimeError as err:  # shape mismatch
            raise PerceptualWeightsError(f"{path}: not the FID InceptionV3 ({WEIGHTS_FILE}): "
                                         f"{str(err).splitlines()[-1].strip()[:200]}") from None
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise PerceptualWeightsError(f"{path}: not the FID InceptionV3 ({WEIGHTS_FILE}); missing "
                                         f"{sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}")
        net.eval().requires_grad_(False)
        return net


def preprocess(images: np.ndarray) -> Tensor:
    """uint8 RGB (N,H,W,3) -> (N,3,299,299) in [-1,1], resized bilinearly from [0,1] like pytorch-fid."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return 2.0 * x - 1.0


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)); a small diagonal offset when the product is singular."""
    # lazy: scipy.linalg takes about half a second to import, and the pipeline imports the metrics package
    # (metrics.flicker) without ever computing a Frechet distance
    from scipy import linalg

    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products are expected with fewer images than dimensions
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = np.real(covmean)
    value = float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(0.0, value)  # rounding can give -1e-20 for identical sets


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID of two feature sets (n1,D), (n2,D), exactly `frechet_distance` of their sample statistics, without
    the D x D matrix square root: with centred features A_i and S_i = A_i^T A_i / (n_i - 1), the non-zero
    eigenvalues of S1 S2 are the squared singular values of A1 A2^T / sqrt((n1-1)(n2-1)), so
    Tr((S1 S2)^(1/2)) is the sum of those singular values (an n1 x n2 SVD instead of a 2048^3 sqrtm: seconds
    become milliseconds for a few hundred frames, and no complex round-off)."""
    a = np.asarray(f1, np.float64)
    b = np.asarray(f2, np.float64)
    a_c, b_c = a - a.mean(0), b - b.mean(0)
    n1, n2 = len(a) - 1, len(b) - 1
    diff = a.mean(0) - b.mean(0)
    tr_cross = np.linalg.svd(a_c @ b_c.T, compute_uv=False).sum() / np.sqrt(n1 * n2)
    value = diff.dot(diff) + (a_c ** 2).sum() / n1 + (b_c ** 2).sum() / n2 - 2.0 * tr_cross
    return max(0.0, float(value))


class FID(SetMetric):
    """Registry entry "fid": available only with `EvalConfig.fid_weights` pointing at a loadable file."""

    name = "fid"
    higher_is_better = False
    description = "Frechet Inception distance (TF-FID InceptionV3, pool3 2048-D) between frame sets"
    batch_size = 16

    def __init__(self, cfg=None, device: str = "cpu"):
        super().__init__(cfg, device)
        path = self.cfg.fid_weights
        self.net = None
        if not path:
            self.available, self.reason = False, f"no FID Inception weights given (--fid-weights {WEIGHTS_FILE})"
        elif not Path(path).is_file():
            self.available, self.reason = False, f"FID Inception weights not found: {path}"
        else:
            try:
                self.net = FIDInceptionV3.from_file(path).to(device)
            except (ValueError, OSError) as err:
                self.available, self.reason = False, str(err)

    @torch.no_grad()
    def _features(self, images: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
        out = [self.net(preprocess(images[i:i + self.batch_size]).to(self.device)).double().cpu()
               for i in range(0, len(images), self.batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, FEATURE_DIM))

    def _distance(self, feats_fake: np.ndarray, feats_real: np.ndarray) -> float:
        return fid_from_features(feats_fake, feats_real)

"""Evaluation metrics (paper.md section 7) behind a small registry.

| name            | module              | kind   | better | what                                                     |
|-----------------|---------------------|--------|--------|----------------------------------------------------------|
| ssim            | ssim.py             | paired | higher | SSIM, own implementation = scikit-image's (Gaussian)     |
| psnr            | pixel.py            | paired | higher | PSNR (dB)                                                |
| l1              | pixel.py            | paired | lower  | mean absolute error in [0,1]                             |
| lpips           | lpips.py            | paired | lower  | LPIPS v0.1, alex/vgg from standard weight files (paths)  |
| csim            | csim.py             | paired | higher | cosine of dlib 128-D face descriptors (paper: ArcFace)   |
| identity        | identity.py         | verif. | higher | verified at dlib's 0.6 vs few-shot reference; chance,   |
|                 |                     |        |        | ceiling beside it                                        |
| landmark_error  | landmark_error.py   | paired | lower  | 68-point error / inter-ocular, undetected faces counted  |
| fid             | fid.py              | set    | lower  | FID with the TF-FID InceptionV3 weight file (path)       |
| fid_face        | identity.py         | set    | lower  | Frechet distance of dlib face descriptors (not Inception)|
| sharpness       | sharpness.py        | paired | higher | variance of the face's Laplacian, generated / real       |
| gaze_error      | gaze.py             | paired | lower  | gaze (iris vs eye corners, eye widths) generated vs real;|
|                 |                     |        |        | horizontal / vertical correlation beside it              |

Inputs (see `base.py`): uint8 RGB arrays (N,H,W,3), or the project's float tensors (N,3,H,W) in [-1,1], which
are first converted to uint8 exactly as a saved frame would be. Landmarks are (N,68,2) in those pixels.

`create(name, cfg: EvalConfig, device)` builds one metric; every metric has `available` and `reason`: FID and
LPIPS need weight files (`EvalConfig.fid_weights`, `lpips_weights`, `lpips_backbone`) and are "not available"
without them, never 0. Register another metric with `@register`.
"""

from __future__ import annotations

from typing import Callable

from ..config import EvalConfig
from .base import Metric, MetricValue, PairedMetric, SetMetric, as_uint8
from .csim import CSIM
from .fid import FID
from .gaze import GazeError
from .identity import DescriptorFID, IdentityVerification
from .landmark_error import LandmarkError
from .lpips import LPIPSMetric
from .pixel import L1, PSNR
from .sharpness import Sharpness
from .ssim import SSIM

METRICS: dict[str, Callable[[EvalConfig, str], Metric]] = {}


def register(cls: type[Metric]) -> type[Metric]:
    """Class decorator / call: add a Metric subclass (constructor `(cfg, device)`) under its `name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    METRICS[cls.name] = cls
    return cls


for _cls in (SSIM, PSNR, L1, LPIPSMetric, CSIM, IdentityVerification, LandmarkError, FID, DescriptorFID,
             Sharpness, GazeError):
    register(_cls)


def create(name: str, cfg: EvalConfig | None = None, device: str = "cpu") -> Metric:
    """A metric by registry name (see the table above)."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; available: {sorted(METRICS)}")
    return METRICS[name](cfg or EvalConfig(), device)


def create_all(names, cfg: EvalConfig | None = None, device: str = "cpu") -> dict[str, Metric]:
    """{name: metric} in the given order."""
    return {name: create(name, cfg, device) for name in names}


__all__ = ["METRICS", "Metric", "MetricValue", "PairedMetric", "SetMetric", "as_uint8", "create", "create_all",
           "register", "SSIM", "PSNR", "L1", "LPIPSMetric", "CSIM", "IdentityVerification", "LandmarkError", "FID",
           "DescriptorFID"]

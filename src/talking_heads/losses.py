"""Losses of meta-learning and fine-tuning (paper.md section 4).

Generator and embedder minimise                      L = L_CNT + L_ADV + L_MCH              (eq. 1 of sec. 4)
- L_CNT  content loss: weighted L1 between VGG19 / VGGFace features of real and fake    `ContentLoss`
- L_ADV  = -D(x_fake, y, i) + 10 L_FM                    `adversarial_generator_loss`, `feature_matching_loss`
- L_MCH  = 80 |e_hat_i - W_i|_1 (10 in v2); FT variant only                               `match_loss`
The discriminator minimises the hinge loss
  L_DSC  = max(0, 1 + D(x_fake)) + max(0, 1 - D(x_real))                         `hinge_discriminator_loss`

Conventions (decisions where the paper is silent):
- Every L1 is a *mean* over its elements (and the batch); a sum of several L1 terms is a sum of such means.
  L_CNT's per-layer L1 is `F.l1_loss` (mean over B, C, H, W), summed over the five layers of each net, then
  weighted per net (v1: VGG19 1e-2, VGGFace 2e-3 [P]; v2: 1.5e-1, 2.5e-2 [P2]).
- Weights applied by the caller (train/steps.py): `feature_matching_weight` (10) on L_FM,
  `adversarial_weight` on -D, `match_loss_weight(cfg)` on L_MCH. The functions here are unweighted.
- L_MCH's gradient goes to the embedder only: `match_loss` detaches W_i itself, so no caller can route it
  to W by mistake. W is trained by the discriminator's hinge loss alone, as in [LAB]. (Letting L_MCH also
  pull W_i towards e_hat would let the table collapse onto the embedder's outputs instead of the
  discriminator's needs; the paper does not say, the lab's later code detaches.)
- Offline content loss (no VGG file given; NOT the paper's L_CNT, recorded as content_loss="offline"):
  sum over a 4-level image pyramid (average pooling by 2) of  L1(fake_s, real_s) + L1(grad fake_s,
  grad real_s), with grad = horizontal and vertical finite differences; weight `offline_content_weight`.
  It is zero for identical images and keeps the low-level reconstruction signal a perceptual loss gives.

- Face terms with dlib's face ResNet (`loss.face_network = "dlib"`; NOT in the paper, a stand-in for
  VGGFace, which cannot be had offline; models/face_identity.py). Both frames are cut into dlib's aligned
  150 px face chip with the transform of the *real* frame's landmarks (landmarks/face_chips.py), so the
  comparison is differentiable and at the same place:
    face term      sum_l w_l L1(phi_l(chip_fake), phi_l(chip_real)), phi_l the activations after the stem
                   pool and levels 4, 3, 2, 1 (`face_layer_weights`), weight `face_content_weight`;
    identity term  1 - cos(d(chip_fake), d(chip_real)), d the 128-D descriptor, weight `identity_weight`.
  The network is frozen and in eval mode; real chips' activations are computed under no_grad. The modes
  are named in logs and config.json: "offline+dlibface", "vgg+dlibface", ...

Glossary: x_fake = G(y, psi), x_real target frame, e_hat mean embedding, W_i the video's row of W, points the
real frame's 68 landmarks in its pixels.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import Config, LossConfig
from .landmarks.face_chips import chip_transform, crop_chips
from .models.face_identity import FEATURE_NAMES, load_face_identity
from .models.perceptual import VGG19, VGGFace

log = logging.getLogger(__name__)

# content-loss weight per net, and L_MCH weight, per weight set (paper.md section 4: v1 [P], v2 [P2])
CONTENT_WEIGHTS = {"v1": {"vgg19": 1e-2, "vggface": 2e-3}, "v2": {"vgg19": 1.5e-1, "vggface": 2.5e-2}}
MATCH_WEIGHTS = {"v1": 80.0, "v2": 10.0}
OFFLINE_SCALES = 4


def _weight_set(loss_cfg: LossConfig) -> str:
    if loss_cfg.weights not in CONTENT_WEIGHTS:
        raise ValueError(f"unknown loss weight set {loss_cfg.weights!r}; choose one of {sorted(CONTENT_WEIGHTS)}")
    return loss_cfg.weights


def content_weights(loss_cfg: LossConfig) -> dict[str, float]:
    """{"vgg19": w, "vggface": w} of the configured weight set."""
    return dict(CONTENT_WEIGHTS[_weight_set(loss_cfg)])


def match_loss_weight(loss_cfg: LossConfig, step: int | None = None) -> float:
    """Weight of L_MCH: 80 (v1) or 10 (v2), or `loss.match_weight`; at meta-learning step `step` (1-based)
    with the optional warm-up (0 for `match_warmup_steps`, then a linear ramp over `match_ramp_steps`)."""
    w = MATCH_WEIGHTS[_weight_set(loss_cfg)] if loss_cfg.match_weight is None else float(loss_cfg.match_weight)
    if step is None:
        return w
    warm, ramp = int(loss_cfg.match_warmup_steps), int(loss_cfg.match_ramp_steps)
    if step <= warm:
        return 0.0
    if ramp > 0 and step < warm + ramp:
        return w * (step - warm) / ramp
    return w


# --- adversarial pieces ------------------------------------------------------------------------------

def adversarial_generator_loss(score_fake: Tensor) -> Tensor:
    """-D(x_fake, y, i), averaged over the batch (the first term of L_ADV). score_fake (B,)."""
    return -score_fake.float().mean()


def feature_matching_loss(feats_real: list[Tensor], feats_fake: list[Tensor]) -> Tensor:
    """L_FM = sum over V's residual blocks of mean |f_real - f_fake|; the real features are detached.

    Unweighted: the caller multiplies by cfg.loss.feature_matching_weight (10 [P]).
    """
    if len(feats_real) != len(feats_fake):
        raise ValueError(f"{len(feats_real)} real vs {len(feats_fake)} fake feature maps")
    return sum(F.l1_loss(f.float(), r.detach().float()) for r, f in zip(feats_real, feats_fake))


def match_loss(e_hat: Tensor, w_i: Tensor) -> Tensor:
    """L_MCH = mean |e_hat_i - W_i| (unweighted). Gradient to the embedder only: W_i is detached here."""
    return F.l1_loss(e_hat.float(), w_i.detach().float())


def hinge_discriminator_loss(score_real: Tensor, score_fake: Tensor) -> Tensor:
    """L_DSC = mean(relu(1 + D(x_fake))) + mean(relu(1 - D(x_real))). Scores (B,), raw (no sigmoid)."""
    return F.relu(1 + score_fake.float()).mean() + F.relu(1 - score_real.float()).mean()


# --- content loss ------------------------------------------------------------------------------------

def _gradients(x: Tensor) -> tuple[Tensor, Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]  # B,C,H,W-1 ; B,C,H-1,W


def offline_content_loss(fake: Tensor, real: Tensor, scales: int = OFFLINE_SCALES) -> Tensor:
    """Multi-scale L1 plus L1 on image gradients (see the module docstring); real is detached."""
    fake, real = fake.float(), real.detach().float()
    total = fake.new_zeros(())
    for s in range(scales):
        if s:
            if min(fake.shape[-2:]) < 4:
                break
            fake, real = F.avg_pool2d(fake, 2), F.avg_pool2d(real, 2)  # B,3,H/2^s,W/2^s
        total = total + F.l1_loss(fake, real)
        for gf, gr in zip(_gradients(fake), _gradients(real)):
            total = total + F.l1_loss(gf, gr)
    return total


class FaceContentLoss(nn.Module):
    """The face and identity terms on aligned chips (see the module docstring): `forward(fake, real, points)`
    -> (face term, identity term), both unweighted scalars. fake (B,3,H,W) with grad, real (B,3,H,W), points
    (B,68,2) landmarks of the real frames in their pixels."""

    def __init__(self, layer_weights=(1.0, 1.0, 1.0, 1.0, 1.0), weights_path: str = ""):
        super().__init__()
        if len(layer_weights) != len(FEATURE_NAMES):
            raise ValueError(f"face_layer_weights needs {len(FEATURE_NAMES)} values ({', '.join(FEATURE_NAMES)}), "
                             f"got {len(layer_weights)}")
        self.net = load_face_identity(weights_path or None)
        self.layer_weights = tuple(float(w) for w in layer_weights)

    def train(self, mode: bool = True) -> "FaceContentLoss":
        super().train(mode)
        self.net.eval()
        return self

    def chips(self, fake: Tensor, real: Tensor, points) -> tuple[Tensor, Tensor]:
        """(fake chips, real chips) (B,3,150,150), both cut with the real frames' transforms."""
        if points is None:
            raise ValueError("the dlib face terms of the content loss need the real frames' landmarks (points)")
        tf = chip_transform(points)
        return crop_chips(fake.float(), tf), crop_chips(real.detach().float(), tf)

    def forward(self, fake: Tensor, real: Tensor, points) -> tuple[Tensor, Tensor]:
        chip_fake, chip_real = self.chips(fake, real, points)
        with torch.no_grad():
            feats_real, desc_real = self.net.features(chip_real)
        feats_fake, desc_fake = self.net.features(chip_fake)
        face = sum(w * F.l1_loss(f, r) for w, f, r in zip(self.layer_weights, feats_fake, feats_real))
        identity = (1 - F.cosine_similarity(desc_fake, desc_real, dim=1)).mean()
        return face, identity


class ContentLoss(nn.Module):
    """L_CNT (paper section 4): `forward(fake, real, points=None) -> scalar`; `.terms` holds the last call's
    unweighted parts for the log.

    `.mode`: "vgg" (VGG19 and VGGFace files given: the paper's loss), "vgg19" or "vggface" (only that
    file given: that net's term alone), "offline" (no file: the offline content loss, with a warning), each
    with "+dlibface" when `loss.face_network == "dlib"` adds the face and identity terms (which need
    `points`, the real frames' landmarks). The perceptual nets are frozen; real features are computed under
    no_grad, fake features with grad, each image passes once through each net, only up to its deepest used
    layer.
    """

    def __init__(self, cfg: Config):
        super().__init__()
        loss = cfg.loss
        weights = content_weights(loss)
        self.nets = nn.ModuleDict()
        self.net_weights: dict[str, float] = {}
        for name, cls, path in (("vgg19", VGG19, loss.vgg19_weights), ("vggface", VGGFace, loss.vggface_weights)):
            if path:
                self.nets[name] = cls.from_file(path)
                self.net_weights[name] = weights[name]
        self.offline_weight = loss.offline_content_weight
        base = "vgg" if len(self.nets) == 2 else (next(iter(self.nets)) if self.nets else "offline")
        if loss.face_network not in ("", "dlib"):
            raise ValueError(f"loss.face_network must be \"dlib\" or \"\" (off), got {loss.face_network!r}")
        self.face = FaceContentLoss(loss.face_layer_weights, loss.face_network_weights) if loss.face_network else None
        self.face_weight, self.identity_weight = loss.face_content_weight, loss.identity_weight
        self.mode = base + ("+dlibface" if self.face is not None else "")
        self.terms: dict[str, Tensor] = {}
        if base == "offline":
            log.warning("content loss: no VGG19 / VGGFace weight files given (loss.vgg19_weights, "
                        "loss.vggface_weights); using the OFFLINE content loss (multi-scale L1 + gradient L1)%s, "
                        "not the paper's perceptual L_CNT",
                        " with dlib face-ResNet face and identity terms" if self.face is not None else "")
        elif base != "vgg":
            log.warning("content loss: only the %s file is given; L_CNT uses that network alone", base)

    def train(self, mode: bool = True) -> "ContentLoss":
        """The perceptual nets always stay in eval mode (frozen feature extractors)."""
        super().train(mode)
        for net in self.nets.values():
            net.eval()
        if self.face is not None:
            self.face.train(mode)
        return self

    def forward(self, fake: Tensor, real: Tensor, points=None) -> Tensor:
        """fake (B,3,H,W) with grad, real (B,3,H,W), points (B,68,2) of the real frames (face terms) -> L_CNT."""
        self.terms = {}
        if not self.nets:
            total = self.offline_weight * offline_content_loss(fake, real)
        else:
            total = fake.new_zeros((), dtype=torch.float32)
            for name, net in self.nets.items():
                with torch.no_grad():
                    feats_real = net(real)
                feats_fake = net(fake)
                per_layer = sum(F.l1_loss(f.float(), r.float()) for f, r in zip(feats_fake, feats_real))
                total = total + self.net_weights[name] * per_layer
        if self.face is not None:
            face, identity = self.face(fake, real, points)
            self.terms = {"cnt_face": face.detach(), "cnt_id": identity.detach()}
            total = total + self.face_weight * face + self.identity_weight * identity
        return total

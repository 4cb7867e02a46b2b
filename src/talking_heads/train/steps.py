"""The two adversarial updates, as plain functions shared by meta-learning and fine-tuning.

Paper sections 4-6 (../shared/design/paper.md). Glossary: x_real target frame, x_fake = G(y, psi) its
reconstruction, y landmark image, video row i of W (None for the single-person discriminator D'), e_hat mean
embedding, W_i its row of the per-video table.

generator_step   L = L_CNT + L_ADV (+ L_MCH), L_ADV = -D(x_fake, y, i) + 10 L_FM        (paper eq. in sec. 4)
discriminator_step  L_DSC = max(0, 1 + D(x_fake)) + max(0, 1 - D(x_real))            hinge, sec. 4

The callers run the generator forward (meta-learning: E over the K sources, psi = P e_hat, G; fine-tuning:
G with the free psi'), then call these with its output. Each step is its own backward pass and its own
optimiser step (paper.md section 9: never one summed backward).

Decisions (the paper is silent):
- D is frozen during the generator step by *restricting the backward pass* to the generator optimiser's
  parameters (`loss.backward(inputs=...)`), not by toggling `requires_grad`: D's parameters get no `.grad`
  at all (autograd does not even compute their weight gradients), D is not in that optimiser, and nothing
  flips flags under DDP (whose reducer registers its hooks when it is built). The gradient still flows
  through D into x_fake. D is called *unwrapped* in the generator step (no DDP collective for D there).
- The generator step's D features of the real frame are computed under no_grad (constants for L_FM).
- The discriminator step sees `x_fake.detach()`, and real and fake go through D in one concatenated batch
  (one forward; V has no normalisation layer, so samples do not mix; one DDP forward per backward).
- L_MCH's gradient goes to E only (losses.match_loss detaches W_i, and W is not a generator parameter),
  as in [LAB]; W learns from the hinge loss alone.
- All losses are means over the batch, so a DDP step over ranks equals one step over the global batch.
- bf16 autocast wraps the forwards on CUDA when `amp`, and on CPU when `amp_cpu` (train.amp_cpu, "auto" = on
  CPUs with native bf16, `cpu_amp`; fine-tuning does not pass it); backward and the optimiser step run outside it. The losses are
  computed in fp32 (losses.py casts), the parameters and Adam's state stay fp32.
- Each step runs inside a `torch.profiler.record_function` range named after it (and meta-learning's E/G
  forward inside "meta.eg_forward"), so a profile splits the time by stage (`bench_train_step_parts` in
  train/bench.py); outside a profiler the ranges cost microseconds.
- Adam is built by `adam` (train.adam): "fused" by default (one kernel over all parameters: the same update
  as torch's per-tensor loop up to float rounding, about 4x faster on CPU), "foreach" (bit-identical to the
  loop), "for-loop".
- Optional (not in the paper, train/augment.py): `augment` (DiffAugment) transforms real and fake frames and
  their landmark image with one sampled transform per sample before *every* discriminator call, in both
  steps (the content loss sees the un-augmented frames); `lecam` adds the LeCam penalty to L_DSC.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterable

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from ..config import ConfigError, LossConfig
from .. import losses as L

ADAM_IMPLS = {"fused": {"fused": True, "foreach": None}, "foreach": {"fused": None, "foreach": True},
              "for-loop": {"fused": None, "foreach": False}}  # train.adam -> torch.optim.Adam's switches


def autocast(device: torch.device, enabled: bool = True, cpu: bool = False):
    """bf16 autocast: on CUDA when `enabled` (train.amp), on CPU when `cpu` (train.amp_cpu); else a no-op."""
    if (device.type == "cuda" and enabled) or (device.type == "cpu" and cpu):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cpu_amp(setting: bool | str) -> bool:
    """train.amp_cpu as on / off: true and false as given, "auto" = on where this CPU has native bf16
    (AVX-512 BF16 / AMX; emulated bf16 is many times slower than fp32)."""
    if isinstance(setting, bool):
        return setting
    if setting == "auto":
        from ..inference import cpu_supports_bf16

        return cpu_supports_bf16()
    raise ConfigError(f'train.amp_cpu must be true, false or "auto", got {setting!r}')


def step_precision(train_cfg, device: torch.device | str) -> str:
    """"bf16" or "fp32": the arithmetic of meta-learning's forwards on `device` (train.amp on CUDA,
    train.amp_cpu on CPU, as `autocast` applies them)."""
    device = torch.device(device)
    on = train_cfg.amp if device.type == "cuda" else device.type == "cpu" and cpu_amp(train_cfg.amp_cpu)
    return "bf16" if on else "fp32"


def profiled(name: str):
    """Run the decorated function inside a profiler range `name` (see the module docstring)."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with record_function(name):
                return fn(*args, **kwargs)
        return inner
    return wrap


def adam(params, *, lr: float, betas, impl: str = "fused") -> torch.optim.Adam:
    """torch.optim.Adam in the implementation `impl` (train.adam: "fused", "foreach" or "for-loop")."""
    if impl not in ADAM_IMPLS:
        raise ConfigError(f"train.adam must be one of {', '.join(ADAM_IMPLS)}, got {impl!r}")
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), **ADAM_IMPLS[impl])


def set_adam_impl(optimizer: torch.optim.Optimizer, impl: str) -> None:
    """Switch a (restored) Adam to `impl`: `load_state_dict` brings back the saved switches, the config wins.
    The fused kernel wants each `step` count as a float32 tensor on its parameter's device."""
    if impl not in ADAM_IMPLS:
        raise ConfigError(f"train.adam must be one of {', '.join(ADAM_IMPLS)}, got {impl!r}")
    for group in optimizer.param_groups:
        group.update(ADAM_IMPLS[impl])
        if impl == "fused":
            for p in group["params"]:
                st = optimizer.state.get(p, {})
                if torch.is_tensor(st.get("step")):
                    st["step"] = st["step"].to(device=p.device, dtype=torch.float32)


def optimizer_params(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


@profiled("steps.generator_step")
def generator_step(
    *,
    x_fake: Tensor,
    x_real: Tensor,
    y: Tensor,
    video: Tensor | None,
    discriminator: nn.Module,
    content_loss: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_cfg: LossConfig,
    match: tuple[Tensor, Tensor] | None = None,
    amp: bool = True,
    amp_cpu: bool = False,
    points: Tensor | None = None,
    augment=None,
    match_weight: float | None = None,
    extra: dict[str, tuple[float, Tensor]] | None = None,
) -> dict[str, float]:
    """One update of the generator side: E and G (incl. P) in meta-learning, G and psi' in fine-tuning.

    x_fake (B,3,H,W) must carry the graph of the generator forward; x_real, y (B,3,H,W); video (B,) or None;
    `discriminator` is called as `discriminator(x, y, video) -> (score (B,), features)` and is not updated;
    `match` = (e_hat (B,N), W_i (B,N)) adds L_MCH (meta-learning with cfg.match_loss only); `points` (B,68,2)
    are x_real's landmarks, for the content loss's face terms (`loss.face_network`); `match_weight` overrides
    the L_MCH weight of the config (meta-learning passes the warm-up schedule's value for its step); `extra`
    {name: (weight, term)} adds generator-specific regularisers (the warp generator's flow smoothness).
    Returns the scalar losses (floats) for the log.
    """
    params = optimizer_params(optimizer)
    with autocast(x_fake.device, amp, amp_cpu):
        (d_real, d_fake), d_y = augment([x_real, x_fake], y) if augment else ((x_real, x_fake), y)
        with torch.no_grad():
            _, feats_real = discriminator(d_real, d_y, video)
        score_fake, feats_fake = discriminator(d_fake, d_y, video)
        l_cnt = content_loss(x_fake, x_real, points)
        l_adv = L.adversarial_generator_loss(score_fake)
        l_fm = L.feature_matching_loss(feats_real, feats_fake)
        total = l_cnt + loss_cfg.adversarial_weight * l_adv + loss_cfg.feature_matching_weight * l_fm
        logs = {"g_cnt": l_cnt, "g_adv": l_adv, "g_fm": l_fm,
                **{f"g_{k}": v for k, v in getattr(content_loss, "terms", {}).items()}}
        if match is not None:
            l_mch = L.match_loss(*match)
            w_mch = L.match_loss_weight(loss_cfg) if match_weight is None else match_weight  # 80 (v1) / 10 (v2)
            total = total + w_mch * l_mch
            logs["g_mch"] = l_mch
        for name, (weight, term) in (extra or {}).items():
            total = total + weight * term
            logs[name] = term
    optimizer.zero_grad(set_to_none=True)
    total.backward(inputs=params)
    optimizer.step()
    logs["g_total"] = total
    return {k: float(v.detach()) for k, v in logs.items()}


@profiled("steps.discriminator_step")
def discriminator_step(
    *,
    x_real: Tensor,
    x_fake: Tensor,
    y: Tensor,
    video: Tensor | None,
    discriminator: nn.Module,
    optimizer: torch.optim.Optimizer,
    amp: bool = True,
    amp_cpu: bool = False,
    augment=None,
    lecam=None,
    lecam_weight: float = 0.0,
) -> dict[str, float]:
    """One hinge update of D (V, W, w0, b in meta-learning; V, w', b in fine-tuning) on real vs x_fake.detach().

    `discriminator` may be DDP-wrapped (it is called once per step, on the concatenated batch). `augment`:
    DiffAugment (same transform for a sample's real and fake); `lecam` (augment.LeCam) with `lecam_weight`.
    """
    params = optimizer_params(optimizer)
    b = x_real.shape[0]
    (x_real, x_fake), y = augment([x_real, x_fake.detach()], y) if augment else ((x_real, x_fake), y)
    x = torch.cat([x_real, x_fake.detach()])  # 2B,3,H,W
    yy = torch.cat([y, y])
    vv = None if video is None else torch.cat([video, video])
    with autocast(x.device, amp, amp_cpu):
        score, _ = discriminator(x, yy, vv)  # 2B
        score_real, score_fake = score[:b], score[b:]
        loss = L.hinge_discriminator_loss(score_real, score_fake)
        logs = {}
        if lecam is not None and lecam_weight > 0:
            penalty = lecam.penalty(score_real, score_fake)
            loss = loss + lecam_weight * penalty
            logs["d_lecam"] = float(penalty.detach())
    optimizer.zero_grad(set_to_none=True)
    loss.backward(inputs=params)
    optimizer.step()
    if lecam is not None and lecam_weight > 0:
        lecam.update(score_real, score_fake)
    return {"d_loss": float(loss.detach()), "d_real": float(score_real.detach().float().mean()),
            "d_fake": float(score_fake.detach().float().mean()), **logs}


def set_requires_grad(modules: Iterable[nn.Module], flag: bool) -> None:
    """For frozen parts that never train in a stage (E and P in fine-tuning, the perceptual networks)."""
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(flag)

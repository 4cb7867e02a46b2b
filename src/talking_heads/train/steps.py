"""The two adversarial updates, bound once per stage (`GanStep`) and shared by meta-learning and fine-tuning.

Paper sections 4-6 (../shared/design/paper.md). Glossary: x_real target frame, x_fake = G(y, psi) its
reconstruction, y landmark image, video row i of W (None for the single-person discriminator D'), e_hat mean
embedding, W_i its row of the per-video table.

generator_step   L = L_CNT + L_ADV (+ L_MCH), L_ADV = -D(x_fake, y, i) + 10 L_FM        (paper eq. in sec. 4)
discriminator_step  L_DSC = max(0, 1 + D(x_fake)) + max(0, 1 - D(x_real))            hinge, sec. 4

A `GanStep` holds what both updates need for a whole run (meta-learning, `meta_state.MetaState`) or one
fine-tuning (`finetune.PersonGan`): the generator side and D, their optimisers, the content loss, the loss
weights, the precision and the options; its updates take only the data. The generator forward is the
stage's own (`render`: E over the K sources, psi = P e_hat, G in meta-learning; G with the free psi' in
fine-tuning). Each update is its own backward pass and its own optimiser step (paper.md section 9: never one
summed backward).

The losses come back as 0-dim tensors: turning them into floats makes the host wait for the device, so the
callers do that only when they log (`to_floats`, one transfer for many steps).

Decisions (the paper is silent):
- D is frozen during the generator step by *restricting the backward pass* to the generator optimiser's
  parameters (`loss.backward(inputs=...)`), not by toggling `requires_grad`: D's parameters get no `.grad`
  at all (autograd does not even compute their weight gradients), D is not in that optimiser, and nothing
  flips flags under DDP (whose reducer registers its hooks when it is built). The gradient still flows
  through D into x_fake. D is called *unwrapped* in the generator step (`critic`: no DDP collective there).
- The generator step's D features of the real frame are computed under no_grad (constants for L_FM).
- The discriminator step sees `x_fake.detach()`, and real and fake go through D in one concatenated batch
  (one forward; V has no normalisation layer, so samples do not mix; one DDP forward per backward).
- L_MCH's gradient goes to E only (losses.match_loss detaches W_i, and W is not a generator parameter),
  as in [LAB]; W learns from the hinge loss alone.
- All losses are means over the batch, so a DDP step over ranks equals one step over the global batch.
- bf16 autocast wraps the forwards on CUDA when `amp`, and on CPU when `amp_cpu` (train.amp_cpu, "auto" = on
  CPUs with native bf16, `cpu_amp`; fine-tuning keeps fp32 on CPU); backward and the optimiser step run
  outside it. The losses are computed in fp32 (losses.py casts), the parameters and Adam's state stay fp32.
- The generator forward runs inside a `torch.profiler.record_function` range (`RENDER_RANGE`, e.g.
  "meta.eg_forward") and each update inside one named after it ("steps.generator_step",
  "steps.discriminator_step"), so a profile splits the time by stage (the train-step benchmark reads these
  names); outside a profiler the ranges cost microseconds.
- Adam is built by `adam` (train.adam): "fused" by default (one kernel over all parameters: the same update
  as torch's per-tensor loop up to float rounding), "foreach" (bit-identical to the loop), "for-loop".
- Optional (not in the paper, train/augment.py): `augment` (DiffAugment) transforms real and fake frames and
  their landmark image with one sampled transform per sample before *every* discriminator call, in both
  steps (the content loss sees the un-augmented frames); `lecam` adds the LeCam penalty to L_DSC.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from .. import losses as L, machine
from ..config import ConfigError, LossConfig
from .augment import DiffAugment, LeCam

ADAM_IMPLS = {"fused": {"fused": True, "foreach": None}, "foreach": {"fused": None, "foreach": True},
              "for-loop": {"fused": None, "foreach": False}}  # train.adam -> torch.optim.Adam's switches
# the generators' regularisers: aux key -> (log name, loss weight setting)
REGULARISERS = {"flow_tv": ("g_warp_tv", "warp_smoothness_weight"), "mask_area": ("g_mask_area", "tps_mask_weight")}
Logs = dict[str, "Tensor | float"]  # scalar logs of a step: 0-dim tensors (losses) and numbers (settings)


# --- precision, optimisers, modes -------------------------------------------------------------------

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
        return machine.cpu_supports_bf16()
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


def set_requires_grad(modules: Iterable[nn.Module], flag: bool) -> None:
    """For frozen parts that never train in a stage (E and P in fine-tuning, the perceptual networks)."""
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(flag)


@contextlib.contextmanager
def eval_mode(*modules: nn.Module):
    """Run the block with `modules` in eval mode (spectral norm runs no power iteration, so their buffers stay
    as they are), then give each its own training flag back."""
    flags = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, flag in zip(modules, flags):
            m.train(flag)


def to_floats(rows: Sequence[Mapping[str, Tensor | float]]) -> list[dict[str, float]]:
    """Scalar logs of one or more steps as Python floats, the tensors (on one device) in a single transfer.
    Exact: every loss is fp32 or bf16, which float64 holds as they are."""
    tensors = [v for row in rows for v in row.values() if torch.is_tensor(v)]
    values = iter(torch.stack([v.detach().reshape(()).double() for v in tensors]).tolist() if tensors else [])
    return [{k: next(values) if torch.is_tensor(v) else float(v) for k, v in row.items()} for row in rows]


# --- the two updates --------------------------------------------------------------------------------

@dataclass(eq=False, kw_only=True)
class GanStep:
    """The generator and discriminator updates of one stage, bound to its networks, optimisers and settings.

    A batch is a dict in the episode layout (docs/interfaces.md): x_tgt, y_tgt (B,3,H,W) the frames to
    reconstruct and their landmark images; optional p_tgt (B,68,2) x_tgt's landmarks (the content loss's face
    terms), video (B,) int64 (the meta discriminator's W rows), aug_seed (B,) int64 (DiffAugment's per-episode
    transforms), and what `render` reads (meta-learning: x_src, y_src (B,K,3,H,W)). Subclasses give `render`.
    """

    generator: nn.Module  # the generator side as the G step calls it (DDP-wrapped in a world > 1)
    discriminator: nn.Module  # D as the D step calls it (DDP-wrapped in a world > 1)
    critic: nn.Module  # D as the G step calls it: unwrapped, `discriminator(x, y, video) -> (score (B,), feats)`
    opt_g: torch.optim.Optimizer  # the generator side's parameters
    opt_d: torch.optim.Optimizer  # D's parameters
    content_loss: L.ContentLoss  # frozen, eval mode
    loss: LossConfig  # the loss weights
    d_steps: int = 2  # D updates per G update in `update`
    amp: bool = True  # bf16 autocast on CUDA (train.amp)
    amp_cpu: bool = False  # bf16 autocast on CPU (train.amp_cpu as on / off)
    match: bool = False  # add L_MCH (meta-learning with loss.match_loss): `render` gives e_hat, batch["video"]
    augment: DiffAugment | None = None  # DiffAugment before every D call, or None
    lecam: LeCam | None = None  # LeCam state, or None
    lecam_weight: float = 0.0

    RENDER_RANGE = "render"  # the profiler range of the generator forward

    def render(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
        """The generator forward on `batch`: (x_fake (B,3,H,W) with its graph, e_hat (B,N) or None, the
        generator's aux dict). Runs under the step's autocast."""
        raise NotImplementedError

    def update(self, batch: Mapping[str, Tensor], step: int | None = None,
               d_steps: int | None = None) -> tuple[Logs, Tensor]:
        """One generator update, then `d_steps` (default: the bound `d_steps`) discriminator updates on the same
        batch and the same x_fake. Returns (the G update's logs with the last D update's, x_fake detached)."""
        logs, x_fake = self.generator_step(batch, step)
        with_fake = {**batch, "x_fake": x_fake}
        d_logs: Logs = {}
        for call in range(self.d_steps if d_steps is None else d_steps):
            d_logs = self.discriminator_step(with_fake, call)
        return {**logs, **d_logs}, x_fake

    def generator_step(self, batch: Mapping[str, Tensor], step: int | None = None) -> tuple[Logs, Tensor]:
        """One update of the generator side (E and G incl. P in meta-learning, G and psi' in fine-tuning); D is
        called, not updated. `step` (1-based) sets the L_MCH warm-up (None: the full weight). Returns the
        losses (0-dim tensors; with e_hat, its mean |e_hat| and fraction of exact zeros; with L_MCH, its
        weight) and x_fake (B,3,H,W) detached."""
        x_real = batch["x_tgt"]
        with autocast(x_real.device, self.amp, self.amp_cpu), record_function(self.RENDER_RANGE):
            x_fake, e_hat, aux = self.render(batch)
        extra = {log: (getattr(self.loss, weight), aux[key]) for key, (log, weight) in REGULARISERS.items() if key in aux}
        match = (e_hat, self.critic.video_embedding(batch["video"]).detach()) if self.match else None
        w_mch = L.match_loss_weight(self.loss, step)
        logs = self._generator_update(batch, x_fake, match, w_mch, extra)
        if e_hat is not None:
            e = e_hat.detach()
            logs["e_hat_abs"] = e.abs().mean()  # 0 = the embedder collapsed (all final ReLUs dead)
            logs["e_hat_zero"] = (e == 0).float().mean()  # fraction of exactly-zero entries
        if self.match:
            logs["mch_weight"] = float(w_mch)
        return logs, x_fake.detach()

    @profiled("steps.generator_step")
    def _generator_update(self, batch: Mapping[str, Tensor], x_fake: Tensor, match: tuple[Tensor, Tensor] | None,
                          w_mch: float, extra: dict[str, tuple[float, Tensor]]) -> Logs:
        """L_CNT + L_ADV (+ w_mch L_MCH with `match` = (e_hat, W_i)) + the generator's `extra` {name: (weight,
        term)} regularisers (the warp generator's flow smoothness); one backward and Adam step."""
        x_real, y, video = batch["x_tgt"], batch["y_tgt"], batch.get("video")
        augment = self._augment(batch, 0)
        with autocast(x_fake.device, self.amp, self.amp_cpu):
            (d_real, d_fake), d_y = augment([x_real, x_fake], y) if augment else ((x_real, x_fake), y)
            with torch.no_grad():
                _, feats_real = self.critic(d_real, d_y, video)
            score_fake, feats_fake = self.critic(d_fake, d_y, video)
            l_cnt = self.content_loss(x_fake, x_real, batch.get("p_tgt"))
            l_adv = L.adversarial_generator_loss(score_fake)
            l_fm = L.feature_matching_loss(feats_real, feats_fake)
            total = l_cnt + self.loss.adversarial_weight * l_adv + self.loss.feature_matching_weight * l_fm
            logs = {"g_cnt": l_cnt, "g_adv": l_adv, "g_fm": l_fm,
                    **{f"g_{k}": v for k, v in self.content_loss.terms.items()}}
            if match is not None:
                l_mch = L.match_loss(*match)
                total = total + w_mch * l_mch
                logs["g_mch"] = l_mch
            for name, (weight, term) in extra.items():
                total = total + weight * term
                logs[name] = term
        self.opt_g.zero_grad(set_to_none=True)
        total.backward(inputs=optimizer_params(self.opt_g))
        self.opt_g.step()
        logs["g_total"] = total
        return {k: v.detach() for k, v in logs.items()}

    @profiled("steps.discriminator_step")
    def discriminator_step(self, batch: Mapping[str, Tensor], call: int = 0) -> Logs:
        """One hinge update of D (V, W, w0, b in meta-learning; V, w', b in fine-tuning) on x_tgt vs
        batch["x_fake"] (B,3,H,W, the G step's output; detached here). `call`: this D update's number within
        the step (each sees its own DiffAugment transform). Returns the hinge loss and the mean realism
        scores (0-dim tensors; with LeCam, its penalty)."""
        x_real, y, video = batch["x_tgt"], batch["y_tgt"], batch.get("video")
        x_fake = batch["x_fake"].detach()
        b = x_real.shape[0]
        augment = self._augment(batch, 1 + call)
        (x_real, x_fake), y = augment([x_real, x_fake], y) if augment else ((x_real, x_fake), y)
        x = torch.cat([x_real, x_fake.detach()])  # 2B,3,H,W
        yy = torch.cat([y, y])
        vv = None if video is None else torch.cat([video, video])
        lecam = self.lecam if self.lecam_weight > 0 else None
        with autocast(x.device, self.amp, self.amp_cpu):
            score, _ = self.discriminator(x, yy, vv)  # 2B
            score_real, score_fake = score[:b], score[b:]
            loss = L.hinge_discriminator_loss(score_real, score_fake)
            logs: Logs = {}
            if lecam is not None:
                penalty = lecam.penalty(score_real, score_fake)
                loss = loss + self.lecam_weight * penalty
                logs["d_lecam"] = penalty.detach()
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward(inputs=optimizer_params(self.opt_d))
        self.opt_d.step()
        if lecam is not None:
            lecam.update(score_real, score_fake)
        return {"d_loss": loss.detach(), "d_real": score_real.detach().float().mean(),
                "d_fake": score_fake.detach().float().mean(), **logs}

    def _augment(self, batch: Mapping[str, Tensor], call: int):
        """The DiffAugment of one discriminator call of a step (0: the G step's, 1 + i: the i-th D step's):
        each episode's transform from its `aug_seed` and the call's number; without seeds, torch's global
        generator draws them; None when augmentation is off."""
        if not self.augment:
            return None
        seeds = batch.get("aug_seed")
        if seeds is None:
            return self.augment
        seeds = seeds.detach().cpu().long() * 16 + call
        return lambda images, y: self.augment(images, y, seeds)

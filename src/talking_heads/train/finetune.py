"""Few-shot fine-tuning, FT (paper.md section 6), as a library function the avatar pipeline calls.

Given T frames x (T,3,H,W) of a new person with landmark images y (T,3,H,W) and a meta-learned model:
- e_new = mean_t E(x_t, y_t)                       E frozen, used only here (eval mode, no_grad)
- psi' = P e_new                                   the initialisation of a free nn.Parameter (1, n_adain)
- G'(y; psi, psi') = G(y, psi')                    all generic G weights psi train; P is not used
- D'(x, y) = V(x, y)^T w' + b, w' = w0 + e_new     `Discriminator.single_person(e_new)`: own V, b, w'
- losses as in meta-learning minus L_MCH (L_CNT + L_ADV for G', hinge for D'), same Adam learning rates,
  `cfg.finetune.d_steps_per_g_step` (2) D' updates per G' update, each reusing that G' step's batch and
  x_fake.detach() (as in meta-learning); `cfg.finetune.epochs` (40) passes over the T frames in shuffled
  batches of min(T, cfg.finetune.batch_size). No learning-rate schedule [P].
The updates are a `steps.GanStep` (`PersonGan`, built once per fine-tuning), the same code meta-learning uses.

Options beyond the paper (`FinetuneConfig`; the defaults are the paper's recipe): a step budget
(`steps`) instead of epochs, batches of augmented copies of the T frames (`augment`: flip with re-indexed
landmarks, +-5 % scale, +-4 % shift, identical on x and y), a learning rate of its own for psi' (`lr_psi`),
and an exponential moving average of G' and psi' as the result (`ema`). With `loss.face_network = "dlib"`
the content loss also holds an identity term against the T frames themselves.

The caller's networks are never modified: G and D' are copies; E and P are only read (in eval mode, so
not even the spectral-norm power iteration touches their buffers).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..config import Config
from ..losses import ContentLoss
from ..models.sources import Sources, as_sources
from ..models.tps_prior import normalise_points
from . import steps
from .augment import few_shot_copies

READ_EVERY = 20  # steps between readouts of the losses for the history and the progress bar (each waits)


@dataclass
class FinetuneResult:
    """What fine-tuning produces: render a frame with `generator(y, psi.expand(B, -1))`."""

    generator: nn.Module  # fine-tuned copy of G (its P is the meta-learned one, unused and unchanged)
    psi: Tensor  # (1, num_adain_params) fine-tuned AdaIN parameters psi'
    discriminator: nn.Module  # fine-tuned D' (PersonDiscriminator: V, w', b)
    e_new: Tensor  # (1, N) mean embedding of the T frames (the initialisation of psi' and w')
    history: list[dict[str, float]] = field(default_factory=list)  # one record per G' step


@torch.no_grad()
def embed_frames(embedder: nn.Module, x: Tensor, y: Tensor, chunk: int = 8) -> Tensor:
    """e_new (1,N) = mean over the T frames of E(x, y), computed in eval mode in chunks (E untouched)."""
    with steps.eval_mode(embedder):
        e = torch.cat([embedder(x[i:i + chunk], y[i:i + chunk]) for i in range(0, x.shape[0], chunk)])  # T,N
    return e.mean(0, keepdim=True)  # 1,N


@torch.no_grad()
def initial_psi(generator: nn.Module, e_new: Tensor) -> Tensor:
    """psi' initialisation P e_new (1, num_adain_params), in eval mode (P's buffers untouched)."""
    with steps.eval_mode(generator):
        return generator.adain_params(e_new).detach().clone()


class PersonGenerator(nn.Module):
    """G' = G with its own free AdaIN parameters psi' (P is bypassed). A generator that `needs_sources` (the
    warp generator) is given the person's T frames and landmark images, `sources` (T,3,H,W) each."""

    def __init__(self, generator: nn.Module, psi: Tensor, sources: Sources | tuple[Tensor, Tensor] | None = None):
        super().__init__()
        self.generator = generator
        self.psi = nn.Parameter(psi.detach().clone())  # 1,num_adain_params
        self.sources = as_sources(sources) if generator.needs_sources else None
        self.needs_points = bool(getattr(generator, "needs_points", False))
        if self.needs_points and (self.sources is None or self.sources.points is None):
            raise ValueError("this generator needs the T frames' landmarks (points) to fine-tune")

    def forward_with_aux(self, y: Tensor, points: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """y (B,3,H,W); points (B,68,2) y's landmarks in crop px (for a generator that `needs_points`)."""
        psi = self.psi.expand(y.shape[0], -1)
        if not self.needs_points:
            return self.generator.forward_with_aux(y, psi, self.sources)  # B,3,H,W
        if points is None:
            raise ValueError("this generator needs the landmarks of the frames it renders (p_tgt)")
        return self.generator.forward_with_aux(y, psi, self.sources, normalise_points(points.to(y.device), y.shape[-1]))

    def forward(self, y: Tensor, points: Tensor | None = None) -> Tensor:
        return self.forward_with_aux(y, points)[0]


@dataclass(eq=False, kw_only=True)
class PersonGan(steps.GanStep):
    """The GAN step of one fine-tuning: G' (`PersonGenerator`) against D'. A batch holds x_tgt, y_tgt
    (B,3,H,W) drawn from the T frames and, for the face terms, p_tgt (B,68,2); no video (D' has one row)."""

    RENDER_RANGE = "finetune.g_forward"

    def render(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, None, dict[str, Tensor]]:
        x_fake, aux = self.generator.forward_with_aux(batch["y_tgt"], batch.get("p_tgt"))  # B,3,H,W
        return x_fake, None, aux


def finetune(networks, x: Tensor, y: Tensor, cfg: Config, *, content_loss: nn.Module | None = None,
             epochs: int | None = None, seed: int = 0, progress: bool = True,
             points: Tensor | None = None, photo: tuple[Tensor, Tensor] | None = None) -> FinetuneResult:
    """Fine-tune a personalised G' and D' on T frames (paper section 6). See the module docstring.

    networks: models.Networks of a meta-learned model (on the device to use); x, y: (T,3,H,W) in [-1,1] on
    that device. `epochs` overrides cfg.finetune.epochs (and the step budget). `seed` fixes the batch order and
    the augmentations. `points` (T,68,2): the frames' landmarks, needed by the content loss's face terms
    (`loss.face_network`) and by `finetune.augment`.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"x and y must both be (T,3,H,W); got {tuple(x.shape)} and {tuple(y.shape)}")
    if cfg.finetune.augment and points is None:
        raise ValueError("finetune.augment needs the frames' landmarks (points)")
    gan, e_new = build_person_gan(networks, x, y, cfg, content_loss, points, photo)
    ema = _Ema(gan.generator, cfg.finetune.ema) if cfg.finetune.ema > 0 else None
    batches = _batches(x, y, points, cfg, epochs, seed)
    history: list[dict[str, float]] = []
    pending: list[tuple[int, steps.Logs]] = []  # (epoch, losses as tensors) of the steps not read back yet
    bar = tqdm(total=len(batches), unit="step", desc="fine-tuning", disable=not progress, dynamic_ncols=True)
    for i, (epoch, make) in enumerate(batches, 1):
        xb, yb, pb = make()
        pending.append((epoch, finetune_step(gan, {"x_tgt": xb, "y_tgt": yb, **({} if pb is None else {"p_tgt": pb})})))
        if ema is not None:
            ema.update(gan.generator)
        bar.update(1)
        if len(pending) == READ_EVERY or i == len(batches):
            history += [{"epoch": e, **logs} for (e, _), logs in zip(pending, steps.to_floats([r for _, r in pending]))]
            pending = []
            bar.set_postfix(g=f"{history[-1]['g_total']:.3f}", d=f"{history[-1].get('d_loss', float('nan')):.3f}",
                            refresh=False)
    bar.close()
    if ema is not None:
        ema.copy_to(gan.generator)
    return FinetuneResult(generator=gan.generator.generator, psi=gan.generator.psi.detach(),
                          discriminator=gan.discriminator, e_new=e_new, history=history)


def build_person_gan(networks, x: Tensor, y: Tensor, cfg: Config, content_loss: nn.Module | None = None,
                     points: Tensor | None = None, photo: tuple[Tensor, Tensor] | None = None
                     ) -> tuple[PersonGan, Tensor]:
    """(the GAN step of fine-tuning on the T frames x, y (T,3,H,W), e_new (1,N)): G' a copy of G with psi' =
    P e_new, D' = the meta D's single-person form with w' = w0 + e_new, their optimisers, the content loss
    (frozen; built from `cfg` when not given). E and P are only read, in eval mode."""
    ft = cfg.finetune
    if content_loss is None:
        content_loss = ContentLoss(cfg).to(x.device)
    content_loss.eval()
    steps.set_requires_grad([content_loss], False)
    e_new = embed_frames(networks.embedder, x, y, chunk=max(1, ft.batch_size))  # 1,N
    p_src = None if points is None else normalise_points(points.to(x.device), x.shape[-1])
    x_src, valid = (x.detach(), None) if photo is None else photo  # the TPS renderer's sources as rendered
    g_person = PersonGenerator(copy.deepcopy(networks.generator), initial_psi(networks.generator, e_new),
                               Sources(x_src, y.detach(), p_src, valid)).train()
    d_person = networks.discriminator.single_person(e_new.detach()).to(x.device).train()
    opt_g, opt_d = _optimizers(g_person, d_person, cfg)
    gan = PersonGan(generator=g_person, discriminator=d_person, critic=d_person, opt_g=opt_g, opt_d=opt_d,
                    content_loss=content_loss, loss=cfg.loss, d_steps=ft.d_steps_per_g_step, amp=cfg.train.amp)
    return gan, e_new


def finetune_step(gan: PersonGan, batch: Mapping[str, Tensor]) -> steps.Logs:
    """One G' update and `finetune.d_steps_per_g_step` D' updates on a batch of the T frames (B,3,H,W); the
    losses as 0-dim tensors."""
    return gan.update(batch)[0]


def describe_recipe(cfg: Config, epochs: int | None = None) -> str:
    """One line naming the FT recipe `finetune` runs with these settings (for reports and model cards)."""
    ft = cfg.finetune
    if ft.steps > 0 and epochs is None:
        text = f"{ft.steps} steps of {max(1, ft.batch_size)} frames"
    else:
        text = f"{ft.epochs if epochs is None else epochs} epochs, batch min(T, {ft.batch_size})"
    extras = [name for name, on in (("augmented copies", ft.augment),) if on]
    if ft.lr_psi is not None:
        extras.append(f"psi' lr {ft.lr_psi:g}")
    if ft.ema > 0:
        extras.append(f"EMA {ft.ema:g}")
    if cfg.loss.face_network and cfg.loss.identity_weight > 0:
        extras.append(f"identity term {cfg.loss.identity_weight:g}")
    return text + (f" ({', '.join(extras)})" if extras else "")


def _optimizers(g_person: PersonGenerator, d_person: nn.Module, cfg: Config):
    """Adam for G' (generic G weights + psi', P excluded; psi' at `finetune.lr_psi` when set) and for D'."""
    ft = cfg.finetune
    generic = g_person.generator.finetune_parameters()
    groups = [{"params": generic, "lr": ft.lr_generator},
              {"params": [g_person.psi], "lr": ft.lr_generator if ft.lr_psi is None else ft.lr_psi}]
    opt_g = torch.optim.Adam(groups, lr=ft.lr_generator, betas=tuple(cfg.train.betas))
    opt_d = torch.optim.Adam(d_person.parameters(), lr=ft.lr_discriminator, betas=tuple(cfg.train.betas))
    return opt_g, opt_d


def _batches(x: Tensor, y: Tensor, points: Tensor | None, cfg: Config, epochs: int | None, seed: int):
    """[(epoch, make_batch)] of the whole run. The paper's recipe (no step budget, or `epochs` given):
    `epochs` shuffled passes over the T frames in batches of min(T, batch_size). With `finetune.steps`: that
    many batches of `batch_size` frames drawn from the T frames (with repetition when T is smaller: at T = 1
    a batch is copies of the one photo). With `finetune.augment` every drawn frame is an augmented copy."""
    ft = cfg.finetune
    t = x.shape[0]
    order_rng = torch.Generator().manual_seed(seed)
    aug_rng = torch.Generator().manual_seed(seed + 1)
    plan: list[tuple[int, Tensor]] = []
    if ft.steps > 0 and epochs is None:
        n = max(1, ft.batch_size)
        plan += [(i * n // t, torch.randint(t, (n,), generator=order_rng)) for i in range(ft.steps)]
    else:
        bs = min(t, ft.batch_size)
        for epoch in range(ft.epochs if epochs is None else epochs):
            order = torch.randperm(t, generator=order_rng)
            plan += [(epoch, order[i:i + bs]) for i in range(0, t, bs)]

    def maker(idx: Tensor):
        def make():
            dev_idx = idx.to(x.device)
            pb = None if points is None else points[idx]
            if not ft.augment:
                return x[dev_idx], y[dev_idx], pb
            return few_shot_copies(x[dev_idx], pb, aug_rng, thickness=cfg.data.line_thickness,
                                   pupils=cfg.data.pupils)
        return make

    return [(epoch, maker(idx)) for epoch, idx in plan]


class _Ema:
    """Exponential moving average of G' (generic weights and psi')."""

    def __init__(self, module: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"finetune.ema must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for k, v in module.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, module: nn.Module) -> None:
        module.load_state_dict(self.shadow)

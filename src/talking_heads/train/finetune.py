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
The updates are `steps.generator_step` / `steps.discriminator_step`, the same functions meta-learning uses.

The caller's networks are never modified: G and D' are copies; E and P are only read (in eval mode, so
not even the spectral-norm power iteration touches their buffers).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..config import Config
from . import steps

log = logging.getLogger(__name__)


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
    was_training = embedder.training
    embedder.eval()
    try:
        e = torch.cat([embedder(x[i:i + chunk], y[i:i + chunk]) for i in range(0, x.shape[0], chunk)])  # T,N
    finally:
        embedder.train(was_training)
    return e.mean(0, keepdim=True)  # 1,N


@torch.no_grad()
def initial_psi(generator: nn.Module, e_new: Tensor) -> Tensor:
    """psi' initialisation P e_new (1, num_adain_params), in eval mode (P's buffers untouched)."""
    was_training = generator.training
    generator.eval()
    try:
        return generator.adain_params(e_new).detach().clone()
    finally:
        generator.train(was_training)


class PersonGenerator(nn.Module):
    """G' = G with its own free AdaIN parameters psi' (P is bypassed)."""

    def __init__(self, generator: nn.Module, psi: Tensor):
        super().__init__()
        self.generator = generator
        self.psi = nn.Parameter(psi.detach().clone())  # 1,num_adain_params

    def forward(self, y: Tensor) -> Tensor:
        return self.generator(y, self.psi.expand(y.shape[0], -1))  # B,3,H,W


def finetune(networks, x: Tensor, y: Tensor, cfg: Config, *, content_loss: nn.Module | None = None,
             epochs: int | None = None, seed: int = 0, progress: bool = True,
             points: Tensor | None = None) -> FinetuneResult:
    """Fine-tune a personalised G' and D' on T frames (paper section 6). See the module docstring.

    networks: models.Networks of a meta-learned model (on the device to use); x, y: (T,3,H,W) in [-1,1] on
    that device. `epochs` overrides cfg.finetune.epochs. `seed` fixes the batch order. `points` (T,68,2):
    the frames' landmarks, needed by the content loss's face terms (`loss.face_network`).
    """
    from tqdm import tqdm

    ft = cfg.finetune
    epochs = ft.epochs if epochs is None else epochs
    device = x.device
    amp = cfg.train.amp
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"x and y must both be (T,3,H,W); got {tuple(x.shape)} and {tuple(y.shape)}")
    if content_loss is None:
        from ..losses import ContentLoss

        content_loss = ContentLoss(cfg).to(device)
    content_loss.eval()
    steps.set_requires_grad([content_loss], False)

    e_new = embed_frames(networks.embedder, x, y, chunk=max(1, ft.batch_size))  # 1,N
    g_person = PersonGenerator(copy.deepcopy(networks.generator), initial_psi(networks.generator, e_new)).train()
    d_person = networks.discriminator.single_person(e_new.detach()).to(device).train()

    projection = {id(p) for p in g_person.generator.projection.parameters()}
    g_params = [p for p in g_person.parameters() if id(p) not in projection]  # G's generic weights + psi'
    opt_g = torch.optim.Adam(g_params, lr=ft.lr_generator, betas=tuple(cfg.train.betas))
    opt_d = torch.optim.Adam(d_person.parameters(), lr=ft.lr_discriminator, betas=tuple(cfg.train.betas))

    t = x.shape[0]
    bs = min(t, ft.batch_size)
    per_epoch = -(-t // bs)
    order_rng = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    bar = tqdm(total=epochs * per_epoch, unit="step", desc="fine-tuning", disable=not progress, dynamic_ncols=True)
    for epoch in range(epochs):
        order = torch.randperm(t, generator=order_rng).to(device)
        for i in range(0, t, bs):
            idx = order[i:i + bs]
            logs = finetune_step(g_person, d_person, opt_g, opt_d, content_loss, x[idx], y[idx], cfg, amp,
                                 None if points is None else points[idx.cpu()])
            history.append({"epoch": epoch, **logs})
            bar.update(1)
            bar.set_postfix(g=f"{logs['g_total']:.3f}", d=f"{logs.get('d_loss', float('nan')):.3f}", refresh=False)
    bar.close()
    return FinetuneResult(generator=g_person.generator, psi=g_person.psi.detach(), discriminator=d_person,
                          e_new=e_new, history=history)


def finetune_step(g_person: PersonGenerator, d_person: nn.Module, opt_g, opt_d, content_loss: nn.Module,
                  x: Tensor, y: Tensor, cfg: Config, amp: bool, points: Tensor | None = None) -> dict[str, float]:
    """One G' update and `d_steps_per_g_step` D' updates on a batch of the T frames (B,3,H,W)."""
    with steps.autocast(x.device, amp):
        x_fake = g_person(y)  # B,3,H,W
    logs = steps.generator_step(x_fake=x_fake, x_real=x, y=y, video=None, discriminator=d_person,
                                content_loss=content_loss, optimizer=opt_g, loss_cfg=cfg.loss, match=None, amp=amp,
                                points=points)
    x_fake = x_fake.detach()
    d_logs: dict[str, float] = {}
    for _ in range(cfg.finetune.d_steps_per_g_step):
        d_logs = steps.discriminator_step(x_real=x, x_fake=x_fake, y=y, video=None, discriminator=d_person,
                                          optimizer=opt_d, amp=amp)
    logs.update(d_logs)
    return logs

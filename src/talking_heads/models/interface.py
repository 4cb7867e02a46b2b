"""The interface every generator of `models.GENERATORS` implements (`TalkingHeadGenerator`).

Training steps, checkpoints, fine-tuning, the pipeline and the avatar renderer use a generator only through
these members, so a new generator is one module plus one line in `models.GENERATORS`. Implementations are
`nn.Module`s (they are saved, moved and wrapped like any module); the protocol names what they add:

- `needs_sources`: True when `forward` needs the person's frames and landmark images (the warp generator);
- `num_adain_params`, `projection` (P), `adain_params(e)`: psi = P e, the person-specific AdaIN parameters;
- `forward(y, psi, sources=None) -> x_hat` and `forward_with_aux(...) -> (x_hat, aux)`: aux holds the
  generator's extra outputs for losses and logs (the warp generator's flow smoothness; {} for the others);
- `meta_parameters()`: what meta-learning trains (every weight of G, P included);
- `finetune_parameters()`: what fine-tuning trains besides psi' (every weight but P, which psi' replaces);
- `fix_adain(psi)`: fix one person's psi (1, num_adain_params) into the AdaIN layers, in place (afterwards
  `num_adain_params == 0` and `forward` takes psi None);
- `specialise(psi, sources=None) -> AvatarGenerator`: one avatar's renderer (models/specialise.py).

The parameter lists are in a fixed order (the optimisers' state follows it).

Glossary: y landmark image (B,3,H,W), e embedding (B,N), psi AdaIN parameters (B,num_adain_params),
sources (x_src, y_src) frames and landmark images of the person, (B,K,3,H,W) or (T,3,H,W) shared by the batch.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from .specialise import AvatarGenerator

Sources = tuple[Tensor, Tensor]  # (x_src, y_src)


@runtime_checkable
class TalkingHeadGenerator(Protocol):
    """G(y, psi[, sources]) -> x_hat; see the module docstring for each member."""

    needs_sources: bool
    num_adain_params: int
    projection: nn.Module

    def adain_params(self, e: Tensor) -> Tensor:
        """psi_hat = P e: (B,N) -> (B,num_adain_params)."""
        ...

    def __call__(self, y: Tensor, psi: Tensor | None, sources: Sources | None = None) -> Tensor:
        ...

    def forward(self, y: Tensor, psi: Tensor | None, sources: Sources | None = None) -> Tensor:
        """y (B,3,H,W), psi (B or 1, num_adain_params) -> x_hat (B,3,H,W) in [-1,1]."""
        ...

    def forward_with_aux(self, y: Tensor, psi: Tensor | None, sources: Sources | None = None
                         ) -> tuple[Tensor, dict[str, Tensor]]:
        ...

    def meta_parameters(self) -> list[nn.Parameter]:
        ...

    def finetune_parameters(self) -> list[nn.Parameter]:
        ...

    def fix_adain(self, psi: Tensor) -> None:
        ...

    def specialise(self, psi: Tensor, sources: Sources | None = None) -> AvatarGenerator:
        ...

"""The interface every generator of `models.GENERATORS` implements (`TalkingHeadGenerator`).

Training steps, checkpoints, fine-tuning, the pipeline and the avatar renderer use a generator only through
these members, so a new generator is one module plus one line in `models.GENERATORS`. Implementations are
`nn.Module`s (they are saved, moved and wrapped like any module); the protocol names what they add:

- `needs_sources`: True when `forward` needs the person's frames and landmark images (the warp generators);
- `needs_points`: True when `forward` also needs landmarks: the sources' (`Sources.points`) and the driver's
  (`points`), both normalised (models/tps_prior.normalise_points) (the TPS renderer; absent = False);
- `num_adain_params`, `projection` (P), `adain_params(e)`: psi = P e, the person-specific AdaIN parameters;
- `forward(y, psi, sources=None, points=None) -> x_hat` and `forward_with_aux(...) -> (x_hat, aux)`: aux holds
  the generator's extra outputs for losses and logs (the warp generators' flow smoothness, the TPS
  renderer's mask area; {} for the paper's); x_hat is at the sources' resolution R (= S but for the TPS
  renderer, whose sources may be larger);
- `meta_parameters()`: what meta-learning trains (every weight of G, P included);
- `finetune_parameters()`: what fine-tuning trains besides psi' (every weight but P, which psi' replaces);
- `fix_adain(psi)`: fix one person's psi (1, num_adain_params) into the AdaIN layers, in place (afterwards
  `num_adain_params == 0` and `forward` takes psi None);
- `specialise(psi, sources=None) -> AvatarGenerator`: one avatar's renderer (models/specialise.py).

The parameter lists are in a fixed order (the optimisers' state follows it).

Glossary: y landmark image (B,3,H,W), e embedding (B,N), psi AdaIN parameters (B,num_adain_params),
sources (x_src, y_src) frames and landmark images of the person, (B,K,3,H,W) or (T,3,H,W) shared by the batch,
or a `Sources` (models/sources.py) that adds their landmarks and validity; points (B,68,2) the driver's landmarks.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from .sources import Sources
from .specialise import AvatarGenerator

SourcesArg = Sources | tuple[Tensor, Tensor]  # models/sources.py, or (x_src, y_src) for the warp generator


@runtime_checkable
class TalkingHeadGenerator(Protocol):
    """G(y, psi[, sources]) -> x_hat; see the module docstring for each member."""

    needs_sources: bool
    needs_points: bool
    num_adain_params: int
    projection: nn.Module

    def adain_params(self, e: Tensor) -> Tensor:
        """psi_hat = P e: (B,N) -> (B,num_adain_params)."""
        ...

    def __call__(self, y: Tensor, psi: Tensor | None, sources: SourcesArg | None = None,
                 points: Tensor | None = None) -> Tensor:
        ...

    def forward(self, y: Tensor, psi: Tensor | None, sources: SourcesArg | None = None,
                points: Tensor | None = None) -> Tensor:
        """y (B,3,S,S), psi (B or 1, num_adain_params) -> x_hat (B,3,R,R) in [-1,1]."""
        ...

    def forward_with_aux(self, y: Tensor, psi: Tensor | None, sources: SourcesArg | None = None,
                         points: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        ...

    def meta_parameters(self) -> list[nn.Parameter]:
        ...

    def finetune_parameters(self) -> list[nn.Parameter]:
        ...

    def fix_adain(self, psi: Tensor) -> None:
        ...

    def specialise(self, psi: Tensor, sources: SourcesArg | None = None) -> AvatarGenerator:
        ...

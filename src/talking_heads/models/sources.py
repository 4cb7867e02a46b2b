"""What a generator that warps the person's own frames is given besides the driver (`Sources`).

`Sources(x, y, points=None, valid=None)`: the person's frames x and their landmark images y, and for the TPS
renderer their landmarks (normalised, models/tps_prior.py) and where each frame is real (1) or lies past
the photo's edge (0). Each is batched (B,K,...) in meta-learning or shared by the batch (T,...) for an
avatar. A plain 2-tuple (x, y) is accepted wherever a generator reads only x and y (the warp generator).

Glossary: x (…,3,R,R) in [-1,1] (R >= the model's size S for the TPS renderer, else S), y (…,3,S,S),
points (…,68,2), valid (…,1,R,R) in [0,1], x_small (…,3,S,S).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class Sources(NamedTuple):
    x: Tensor
    y: Tensor
    points: Tensor | None = None
    valid: Tensor | None = None
    x_small: Tensor | None = None  # x at the model's size, when R > S (computed once for an avatar)

    def tensors(self) -> list[tuple[str, Tensor]]:
        """The tensors present, by name (for buffers and fingerprints)."""
        return [(name, t) for name, t in zip(NAMES, self) if t is not None]


NAMES = ("x_src", "y_src", "p_src", "valid_src", "x_small_src")  # Sources' fields as buffers


def as_sources(sources) -> Sources | None:
    """A Sources from a Sources, an (x, y) tuple or None."""
    if sources is None or isinstance(sources, Sources):
        return sources
    return Sources(*sources)

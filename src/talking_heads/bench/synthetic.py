"""Synthetic inputs for benchmarks and tests: timing does not depend on content.

- `SyntheticEpisodes`: random episodes with the episode dict layout of docs/interfaces.md.
- `random_avatar`: a generator with random weights and an avatar's worth of render inputs for it.
- `random_vgg_files`: a Config whose content loss reads VGG19 / VGGFace files with random weights (the
  pretrained files cannot be had offline; the cost is the same, the loss values are meaningless).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import replace
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..config import Config
from ..landmarks.motions import neutral_face
from ..models import build_networks, perceptual


class SyntheticEpisodes(torch.utils.data.Dataset):
    """Random episodes with the EpisodeDataset item layout (x_src, y_src, x_tgt, y_tgt, video).

    Deterministic per index (its own generator seeded by seed and index; indices past the end, as
    `dist.EpisodeSampler` yields for later epochs, are fresh episodes of video (index mod length) mod
    num_videos). For benchmarks and tests.
    """

    def __init__(self, cfg: Config, num_episodes: int = 4, num_videos: int = 2, seed: int = 0,
                 k_shot: int | None = None):
        self.k = cfg.train.k_shot if k_shot is None else k_shot
        self.size = cfg.model.image_size
        self.n, self.num_videos, self.seed = num_episodes, num_videos, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + i)
        k, s = self.k, self.size
        rand = lambda *shape: torch.rand(*shape, generator=g) * 2 - 1  # noqa: E731
        return {"x_src": rand(k, 3, s, s), "y_src": rand(k, 3, s, s), "x_tgt": rand(3, s, s),
                "y_tgt": rand(3, s, s), "p_tgt": neutral_landmarks(s),
                "aug_seed": torch.tensor(self.seed * 100_003 + i, dtype=torch.int64),
                "video": torch.tensor((i % self.n) % self.num_videos, dtype=torch.int64)}


def neutral_landmarks(size: int) -> Tensor:
    """(68,2) float32: the built-in motions' neutral face placed in a `size` px crop (a plausible target shape
    for losses that align faces)."""
    return torch.from_numpy(neutral_face(size).astype("float32"))


def collate(items: list[dict[str, Tensor]], device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Episode dicts stacked into a batch (each key gains a leading B dimension), on `device`."""
    return {k: torch.stack([it[k] for it in items]).to(device) for k in items[0]}


class RandomAvatar(NamedTuple):
    """A generator (eval) and what rendering one frame of an avatar needs: psi (1,P), the source frames and
    landmark images ((T,3,S,S) each) for a generator that `needs_sources` (else None), one landmark image y
    (1,3,S,S) in [-1,1]."""
    generator: nn.Module
    psi: Tensor
    sources: tuple[Tensor, Tensor] | None
    y: Tensor


def random_avatar(cfg: Config, device: torch.device) -> RandomAvatar:
    """A generator with random weights (seed 0) and an avatar's worth of render inputs for it: psi = P E(x, y)
    of one random frame, and for a generator that needs them inference.video_frames random source frames."""
    torch.manual_seed(0)
    nets = build_networks(cfg, num_videos=1)
    e, g = nets.embedder.to(device).eval(), nets.generator.to(device).eval()
    s = cfg.model.image_size
    x, y = torch.rand(1, 3, s, s, device=device) * 2 - 1, torch.rand(1, 3, s, s, device=device) * 2 - 1
    with torch.no_grad():
        psi = g.adain_params(e(x, y))
    t = cfg.inference.video_frames
    sources = (torch.rand(t, 3, s, s, device=device) * 2 - 1, torch.rand(t, 3, s, s, device=device) * 2 - 1) \
        if g.needs_sources else None
    return RandomAvatar(g, psi, sources, y)


@contextlib.contextmanager
def random_vgg_files(cfg: Config):
    """A Config whose loss points at VGG19 / VGGFace files with random weights (same cost as real ones); the
    files exist until the context exits."""
    with tempfile.TemporaryDirectory(prefix="th-bench-vgg-") as tmp:
        torch.manual_seed(0)
        paths = {}
        for name, cls in (("vgg19", perceptual.VGG19), ("vggface", perceptual.VGGFace)):
            paths[name] = os.path.join(tmp, f"{name}_random.pth")
            torch.save(cls().state_dict(), paths[name])
        loss = replace(cfg.loss, vgg19_weights=paths["vgg19"], vggface_weights=paths["vggface"])
        yield replace(cfg, loss=loss)

"""The identity probe of meta-learning (`train.probe_frames` + `train.probe_every`; not in the paper): does
e_hat tell the training identities apart on frames it never trained on?"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from .steps import eval_mode


@torch.no_grad()
def identity_probe(embedder: nn.Module, dataset, device: torch.device) -> float | None:
    """Nearest-centroid accuracy of e_hat over identities on frames never used in episodes: per identity a
    centroid of e_hat over K episode frames of each of its videos, per video a query e_hat over its held-back
    probe frames; the fraction of queries whose nearest centroid (Euclidean) is their own identity. Chance is
    1 / number of identities. None when the dataset holds no probe frames. E runs in eval mode (its state is
    untouched)."""
    probe = getattr(dataset, "probe_indices", None)  # the synthetic episodes of tests and benchmarks have none
    if probe is None:
        return None
    centroids: dict[str, list[Tensor]] = {}
    queries: list[tuple[str, Tensor]] = []
    with eval_mode(embedder):
        for v in range(dataset.num_videos):
            held = probe(v)
            if not len(held):
                continue
            ident = dataset.identities[v]
            seen = dataset.clip_frames(v, dataset.train_indices(v)[:dataset.k])
            centroids.setdefault(ident, []).append(embedder(seen["x"].to(device), seen["y"].to(device)).mean(0))
            q = dataset.clip_frames(v, held)
            queries.append((ident, embedder(q["x"].to(device), q["y"].to(device)).mean(0)))
    if len(centroids) < 2 or not queries:
        return None
    names = sorted(centroids)
    c = torch.stack([torch.stack(centroids[n]).mean(0) for n in names])  # I,N
    hits = [names[int(torch.cdist(q[None], c).argmin())] == ident for ident, q in queries]
    return float(np.mean(hits))

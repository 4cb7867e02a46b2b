"""The landmark codec's shape basis: PCA of face shapes and of their frame-to-frame motion, fitted on the
training split of ../shared/data and shipped in the package (`assets/telepresence/basis_v1.npz`, about 150 kB).

Fitting (what produced the shipped file; docs/telepresence.md):

    python -m talking_heads.telepresence.basis --data ../shared/data --out src/talking_heads/assets/telepresence/basis_v1.npz

tracks every training-split video (`data.faces.track_video`: detect once, then track), expresses each clip's
landmarks in its 256 px VoxCeleb-style crop (`data.crop.clip_crop`), and computes
- the mean shape and the principal axes of shapes (key frames are coded as coefficients on them),
- the principal axes of frame-to-frame changes (delta frames), with their standard deviations,
- per motion coefficient, the gain alpha of the exponential-smoother predictor that minimises the
  prediction error on the training clips, once for raw tracks (predictor 1) and once for tracks smoothed by
  the One Euro filter (predictor 2, what the sender uses by default).
Standard deviations are stored as integers (px / 256) because they initialise the entropy models, which
must start identically at both ends.

Version 2 of the packet format predicts each motion coefficient with a damped-trend (Holt) predictor whose
parameters (alpha, beta, phi) are chosen per coefficient from `TREND_GRID` by a closed-loop simulation of
the codec itself (its quantiser at `FIT_STEP`, dead zone and entropy model) on the training clips, minimising
distortion + lambda x bits with the slope lambda = 2 ln 2 q^2 / 12 of a uniform quantiser (`fit_trend`);
`residual_std` is the spread of the prediction errors it leaves (initial entropy-model states). These arrays
are added to the file without touching the transform (its arrays stay byte-identical, so streams coded with
them still decode):

    python -m talking_heads.telepresence.basis --data ../shared/data --predictors-only
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import logging
import os
import time
from importlib import resources
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..data.crop import clip_crop
from ..data.faces import track_video
from ..landmarks.filters import OneEuroFilter, smooth_sequence
from .entropy import CLASS_THRESHOLDS_Q8, MAX_SYMBOL, STATE_SHIFT_V2, TABLES, initial_states
from .packet import DIM
from .prediction import Basis

log = logging.getLogger(__name__)

TRANSFORM_ID = 1  # the id key frames carry for this basis
BASIS_FILE = "basis_v1.npz"
ALPHA_GRID = np.round(np.linspace(0.05, 1.0, 20), 4)  # gains tried per coefficient
REFERENCE_SIZE = 256  # crop size (px) the basis is fitted at
# v2 predictors: alpha x (beta, phi); beta = 0 is the v1 smoother, (1, 1) with alpha 1 the 2-frame extrapolation
TREND_ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0)
TREND_SHAPES = ((0.0, 0.0), (0.25, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 0.25), (1.0, 0.5), (1.0, 0.75), (1.0, 1.0),
                (0.3, 0.8))
TREND_GRID = np.array([(a, b, f) for a in TREND_ALPHAS for b, f in TREND_SHAPES])
FIT_STEP, FIT_DEADZONE = 0.75, 0.15  # the codec's settings the predictors are fitted at (px at 256)


def default_path() -> Path:
    return Path(str(resources.files("talking_heads").joinpath("assets", "telepresence", BASIS_FILE)))


@functools.lru_cache(maxsize=4)
def load_basis(path: str | os.PathLike | None = None) -> Basis:
    """The shipped basis (or the one at `path`). Raises FileNotFoundError when absent."""
    path = Path(path) if path is not None else default_path()
    with np.load(path, allow_pickle=False) as z:
        holt, spread = {}, {}
        if "holt_raw" in z:
            holt = {1: z["holt_raw"].astype(np.float64), 2: z["holt_smooth"].astype(np.float64)}
            spread = {1: z["residual_std_raw"].astype(np.int64), 2: z["residual_std_smooth"].astype(np.int64)}
        return Basis(int(z["transform_id"]), z["shape_mean"].astype(np.float64), z["shape_vectors"].astype(np.float64),
                     z["shape_std"].astype(np.int64), z["motion_vectors"].astype(np.float64),
                     z["motion_std"].astype(np.int64), {1: z["alpha_raw"].astype(np.float64),
                                                        2: z["alpha_smooth"].astype(np.float64)},
                     int(z["reference_size"]), holt, spread)


def known_bases() -> dict[int, Basis]:
    """Every transform this installation can decode, by id (the identity is added by the decoder)."""
    try:
        basis = load_basis()
    except FileNotFoundError:
        return {}
    return {basis.transform_id: basis}


# --- fitting -----------------------------------------------------------------------------------------

def training_tracks(data_dir: Path, size: int = REFERENCE_SIZE) -> tuple[list[np.ndarray], list[float], list[str]]:
    """Per training-split video of `manifest.csv`: landmarks (F,136) in its `size` px crop, runs of frames
    with a face only (a lost frame splits the clip), with their fps and names."""
    with open(data_dir / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train" and r["kind"] == "video"]
    clips, rates, names = [], [], []
    for row in rows:
        track = track_video(data_dir / row["path"], max_frames=0)
        if track.found.sum() < 2:
            continue
        tf = clip_crop(track.points[track.found], track.frame_size, size).transform
        pts = tf.to_crop(track.points).reshape(len(track), DIM).astype(np.float64)
        for run in _runs(track.found):
            if len(run) > 2:
                clips.append(pts[run])
                rates.append(track.fps)
                names.append(row["path"])
        log.info("%s: %d frames", row["path"], len(track))
    return clips, rates, names


def _runs(found: np.ndarray) -> list[np.ndarray]:
    idx = np.flatnonzero(found)
    return np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1) if idx.size else []


def _pca(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w, v = np.linalg.eigh(np.cov(samples.T))
    order = np.argsort(w)[::-1]
    return v[:, order], np.sqrt(np.maximum(w[order], 1e-8))


def fit_alphas(clips: list[np.ndarray], vectors: np.ndarray) -> np.ndarray:
    """Per coefficient, the gain of ALPHA_GRID whose smoother p <- p + alpha (c - p) predicts c best (MSE)."""
    sq = np.zeros((len(ALPHA_GRID), DIM))
    for x in clips:
        c = x @ vectors  # F,136
        p = np.broadcast_to(c[0], (len(ALPHA_GRID), DIM)).copy()
        a = ALPHA_GRID[:, None]
        for ct in c[1:]:
            err = ct - p
            sq += err * err
            p += a * err
    return ALPHA_GRID[np.argmin(sq, axis=0)]


def simulate_trend(clips: list[np.ndarray], vectors: np.ndarray, grid: np.ndarray, step: float = FIT_STEP,
                   deadzone: float = FIT_DEADZONE, reference: int = REFERENCE_SIZE
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The v2 delta coding of every clip (F,136 points at the reference size) for every predictor of `grid`
    (G,3) at once, coefficient by coefficient, closed loop: (bits (G,136) summed over frames under the codec's
    entropy model with its adaptive classes, squared error (G,136), squared prediction error (G,136), frames).
    Bits are ideal code lengths (-log2 p); the arithmetic coder is within a byte per packet of them."""
    cost = np.array([[np.log2(total / f) for f in freq] for freq, total in TABLES])  # (16, 22)
    thresholds = np.array(CLASS_THRESHOLDS_Q8)
    a, b, f = (grid[:, i, None] for i in range(3))
    g = len(grid)
    bits, sq, perr, frames = np.zeros((g, DIM)), np.zeros((g, DIM)), np.zeros((g, DIM)), 0
    q64 = int(round(step * 64))
    spread = np.sqrt(np.mean(np.concatenate([np.diff(x @ vectors, axis=0) for x in clips]) ** 2, axis=0))
    init = np.array(initial_states(np.maximum(1, np.round(spread * 256)).astype(np.int64), reference, q64, reference))
    for x in clips:
        c = x @ vectors
        state = np.broadcast_to(init, (g, DIM)).copy()
        level, trend = np.broadcast_to(c[0], (g, DIM)).copy(), np.zeros((g, DIM))
        for ct in c[1:]:
            p = level + f * trend
            r = (ct - p) / step
            k = np.sign(r) * np.floor(np.maximum(np.abs(r) + 0.5 - deadzone, 0))
            m = np.abs(k).astype(np.int64)
            cls = np.searchsorted(thresholds, state, side="right")
            esc = m > MAX_SYMBOL
            bits += cost[cls, np.minimum(m, MAX_SYMBOL + 1)] + (m > 0)
            if esc.any():
                bits += np.where(esc, 2 * np.floor(np.log2(np.maximum(1, m - MAX_SYMBOL))) + 1, 0)
            c_hat = p + k * step
            sq += (ct - c_hat) ** 2
            perr += (ct - p) ** 2
            new_level = p + a * (c_hat - p)
            trend = b * (new_level - level) + (1 - b) * f * trend
            level = new_level
            state = state + (((np.minimum(m, 64) << 8) - state) >> STATE_SHIFT_V2)
            frames += 1
    return bits, sq, perr, frames


def fit_trend(clips: list[np.ndarray], vectors: np.ndarray, step: float = FIT_STEP,
              deadzone: float = FIT_DEADZONE) -> tuple[np.ndarray, np.ndarray]:
    """Per coefficient, the (alpha, beta, phi) of TREND_GRID that minimises squared error + lambda x bits of
    the closed-loop codec (lambda = 2 ln 2 step^2 / 12, the rate-distortion slope of a uniform quantiser),
    and the RMS prediction error it leaves in px/256 (int, >= 1). Returns ((136,3), (136,))."""
    bits, sq, perr, frames = simulate_trend(clips, vectors, TREND_GRID, step, deadzone)
    lam = 2 * np.log(2) * step ** 2 / 12
    best = np.argmin(sq + lam * bits, axis=0)
    cols = np.arange(DIM)
    spread = np.maximum(1, np.round(np.sqrt(perr[best, cols] / frames) * 256)).astype(np.int32)
    return TREND_GRID[best].astype(np.float32), spread


class BasisFilter:
    """The sender's smoothing (version 2): a One Euro filter on the motion coefficients c = Vm^T x rather
    than on the 136 coordinates, with its own cut-off per coefficient: the first `head` coefficients (head
    pose, jaw, mouth: most of the motion) with the point filter's settings, the others (small shape changes,
    mostly the tracker's jitter) at a lower cut-off and speed gain. In coefficient space the speed that opens
    the filter is that of a motion, not of every coordinate it drags along, so the big motions lag less and
    the jitter is smoothed more than by the same filter on the points.
    Points (68,2) in, points out, crop px at `size` (the basis is scaled: its axes are unit vectors at any size).
    """

    def __init__(self, vectors: np.ndarray, *, min_cutoff: float = 1.0, beta: float = 0.05, head: int = 20,
                 tail_min_cutoff: float = 0.5, tail_beta: float = 0.01, size: int = REFERENCE_SIZE):
        cut, gain = np.full(DIM, float(min_cutoff)), np.full(DIM, float(beta))
        cut[head:], gain[head:] = tail_min_cutoff, tail_beta
        self.vectors = np.asarray(vectors, np.float64)
        self.scale = size / REFERENCE_SIZE  # beta is in 1/px at the reference size
        self.filter = OneEuroFilter(cut, gain / self.scale)

    def reset(self) -> None:
        self.filter.reset()

    def __call__(self, points: np.ndarray, dt: float) -> np.ndarray:
        c = self.vectors.T @ np.asarray(points, np.float64).reshape(DIM)
        return (self.vectors @ self.filter(c, dt)).reshape(-1, 2)

    def sequence(self, x: np.ndarray, fps: float) -> np.ndarray:
        """A whole run of frames (F,136) without gaps."""
        self.reset()
        return np.stack([self(p, 1.0 / fps).reshape(DIM) for p in x]) if len(x) else x


def fit_predictors(clips: list[np.ndarray], rates: list[float], vectors: np.ndarray) -> dict[str, np.ndarray]:
    """The v2 predictor arrays for raw (1) and smoothed (2: `BasisFilter` with its defaults, what the
    sender does) tracks."""
    smoother = BasisFilter(vectors)
    smoothed = [smoother.sequence(x, fps) for x, fps in zip(clips, rates)]
    holt_raw, std_raw = fit_trend(clips, vectors)
    holt_smooth, std_smooth = fit_trend(smoothed, vectors)
    return {"holt_raw": holt_raw, "residual_std_raw": std_raw, "holt_smooth": holt_smooth,
            "residual_std_smooth": std_smooth}


def fit_basis(clips: list[np.ndarray], rates: list[float]) -> dict[str, np.ndarray]:
    shapes = np.concatenate(clips)
    mean = shapes.mean(0)
    shape_vectors, shape_std = _pca(shapes - mean)
    motion_vectors, motion_std = _pca(np.concatenate([np.diff(x, axis=0) for x in clips]))
    smoothed = [smooth_sequence(x.reshape(len(x), -1, 2), fps).reshape(len(x), DIM).astype(np.float64)
                for x, fps in zip(clips, rates)]
    return {"transform_id": np.int64(TRANSFORM_ID), "reference_size": np.int64(REFERENCE_SIZE),
            "shape_mean": mean.astype(np.float32), "shape_vectors": shape_vectors.astype(np.float32),
            "shape_std": np.maximum(1, np.round(shape_std * 256)).astype(np.int32),
            "motion_vectors": motion_vectors.astype(np.float32),
            "motion_std": np.maximum(1, np.round(motion_std * 256)).astype(np.int32),
            "alpha_raw": fit_alphas(clips, motion_vectors).astype(np.float32),
            "alpha_smooth": fit_alphas(smoothed, motion_vectors).astype(np.float32),
            **fit_predictors(clips, rates, motion_vectors.astype(np.float32).astype(np.float64))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Fit the telepresence codec's shape basis on the training split.")
    p.add_argument("--data", default="../shared/data", help="folder with manifest.csv (default ../shared/data)")
    p.add_argument("--out", default=str(default_path()), help="npz to write (default: the shipped file)")
    p.add_argument("--predictors-only", action="store_true",
                   help="refit only the version-2 predictors of the file at --out, keeping its transform as it is")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.time()
    clips, rates, names = training_tracks(Path(args.data))
    meta = {"clips": len(set(names)), "runs": len(clips), "frames": int(sum(len(c) for c in clips)),
            "split": "train", "date": time.strftime("%Y-%m-%d")}
    if args.predictors_only:
        with np.load(args.out, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        arrays.update(fit_predictors(clips, rates, arrays["motion_vectors"].astype(np.float64)))
        old = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
        meta = {**old, "predictors_v2": {**meta, "step": FIT_STEP, "deadzone": FIT_DEADZONE,
                                         "seconds": round(time.time() - t0, 1)}}
    else:
        arrays = fit_basis(clips, rates)
        meta["seconds"] = round(time.time() - t0, 1)
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.chmod(tmp, 0o644)  # a package file: readable by everyone
    print(f"basis: {args.out} ({meta})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

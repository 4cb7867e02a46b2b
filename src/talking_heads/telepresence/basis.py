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
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from .codec import DIM, Basis

log = logging.getLogger(__name__)

TRANSFORM_ID = 1  # the id key frames carry for this basis
BASIS_FILE = "basis_v1.npz"
ALPHA_GRID = np.round(np.linspace(0.05, 1.0, 20), 4)  # gains tried per coefficient
REFERENCE_SIZE = 256  # crop size (px) the basis is fitted at


def default_path() -> Path:
    from importlib import resources

    return Path(str(resources.files("talking_heads").joinpath("assets", "telepresence", BASIS_FILE)))


@functools.lru_cache(maxsize=4)
def load_basis(path: str | os.PathLike | None = None) -> Basis:
    """The shipped basis (or the one at `path`). Raises FileNotFoundError when absent."""
    path = Path(path) if path is not None else default_path()
    with np.load(path, allow_pickle=False) as z:
        return Basis(int(z["transform_id"]), z["shape_mean"].astype(np.float64), z["shape_vectors"].astype(np.float64),
                     z["shape_std"].astype(np.int64), z["motion_vectors"].astype(np.float64),
                     z["motion_std"].astype(np.int64), {1: z["alpha_raw"].astype(np.float64),
                                                        2: z["alpha_smooth"].astype(np.float64)},
                     int(z["reference_size"]))


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
    from ..data.crop import clip_crop
    from ..data.faces import track_video

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


def fit_basis(clips: list[np.ndarray], rates: list[float]) -> dict[str, np.ndarray]:
    from ..landmarks.filters import smooth_sequence

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
            "alpha_smooth": fit_alphas(smoothed, motion_vectors).astype(np.float32)}


def main(argv: list[str] | None = None) -> int:
    from ..atomic import atomic_path

    p = argparse.ArgumentParser(description="Fit the telepresence codec's shape basis on the training split.")
    p.add_argument("--data", default="../shared/data", help="folder with manifest.csv (default ../shared/data)")
    p.add_argument("--out", default=str(default_path()), help="npz to write (default: the shipped file)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.time()
    clips, rates, names = training_tracks(Path(args.data))
    arrays = fit_basis(clips, rates)
    meta = {"clips": len(set(names)), "runs": len(clips), "frames": int(sum(len(c) for c in clips)),
            "split": "train", "seconds": round(time.time() - t0, 1), "date": time.strftime("%Y-%m-%d")}
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.chmod(tmp, 0o644)  # a package file: readable by everyone
    print(f"basis: {args.out} ({meta})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""Meta-learning episodes over a preprocessed folder (paper.md sections 1 and 2).

Item i is video i (clip ids sorted, so `video` is a stable row of the discriminator's table W): K source
frames (x_src, y_src) and one target frame (x_tgt, y_tgt) of that clip. The target is drawn first, then the
K sources without replacement from the *other* frames; when a clip has fewer than K+1 frames the sources
are drawn with replacement from the frames other than the target (never the target itself: the mistake
listed in paper.md section 9). Images and landmark images are float32 (3,H,W) in [-1, 1] (docs/interfaces.md);
landmark images are rasterised here from the stored landmarks (cheap), never re-detected.

Randomness: every draw of item i comes from a generator seeded by (seed, epoch, i), so an item is the same
whatever the worker, process or rank that loads it. The epoch comes from `set_epoch(e)` (the way
DistributedSampler-based loops advance it) plus `index // len(self)`: a sampler that never calls
`set_epoch` can still give fresh episodes each epoch by yielding `epoch * len(dataset) + i` (any index is
taken modulo the number of videos).

Flip (`flip=True`): with probability 1/2 the whole episode (all K+1 frames) is mirrored, and its landmarks
with `flip_landmarks` (x -> W-1-x and the iBUG-68 left/right re-indexing), so a flipped episode is a
consistent, mirrored person.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
import torch

from ..config import Config
from ..images import to_tensor
from ..landmarks.iris import clip_gaze, iris_points, uses_gaze
from ..landmarks.raster import flip_landmarks, rasterize
from .layout import CLIPS_DIR, FRAME_NAME, FRAMES_DIR, IRIS_FILE, SETTINGS_FILE, DatasetError, usable_clips


def identity_split(identities: Iterable[str], test_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Identity-disjoint (train, test) split, stable per identity (a hash of seed and name, not the list order)."""
    train, test = [], []
    for ident in sorted(set(identities)):
        h = int(hashlib.sha1(f"{seed}:{ident}".encode()).hexdigest()[:12], 16) / float(16 ** 12)
        (test if h < test_fraction else train).append(ident)
    return train, test


class EpisodeDataset(torch.utils.data.Dataset):
    """K-shot episodes from `talking-heads preprocess` output (module docstring).

    root: the preprocessed folder. k: source frames per episode. image_size: H = W of the returned tensors
    (None = stored size). identities / exclude_identities / clip_ids: optional filters (identity-disjoint
    splits). probe_frames: frames held back at the end of every clip (`train_indices`). The training loop's
    form: `EpisodeDataset.from_config(root, cfg)`.
    """

    def __init__(self, root: str | os.PathLike, k: int = 8, image_size: int | None = None, flip: bool = False,
                 seed: int = 0, identities: Iterable[str] | None = None,
                 exclude_identities: Iterable[str] | None = None, clip_ids: Iterable[str] | None = None,
                 line_thickness: float | None = None, probe_frames: int | None = None, border_dropout: float = 0.0,
                 gaze: bool = False, pupils: bool = False):
        if int(k) < 1:
            raise DatasetError(f"k must be >= 1, got {k}")
        self.root = Path(root)
        self.k, self.flip, self.seed = int(k), bool(flip), int(seed)
        self.line_thickness = line_thickness
        records = usable_clips(self.root)
        if identities is not None:
            keep = set(identities)
            records = [r for r in records if r["identity"] in keep]
        if exclude_identities is not None:
            drop = set(exclude_identities)
            records = [r for r in records if r["identity"] not in drop]
        if clip_ids is not None:
            ids = set(clip_ids)
            records = [r for r in records if r["clip_id"] in ids]
        records.sort(key=lambda r: r["clip_id"])
        if not records:
            raise DatasetError(f"{root}: no usable clips (status ok, at least 2 frames) after filtering")
        for r in records:
            self._check_clip(r)
        self.clip_ids = [r["clip_id"] for r in records]
        self.identities = [r["identity"] for r in records]
        self.n_frames = [int(r["n_frames"]) for r in records]
        self.stored_size = self._stored_size()
        self.image_size = int(image_size or self.stored_size)
        self.epoch = 0
        self.probe_frames = max(0, int(probe_frames or 0))
        self.border_dropout = float(border_dropout)
        # gaze (data.pupils, model.tps_iris): points gain the two iris centres (70 rows, `iris.clip_gaze`) from
        # each clip's iris.npy, and landmark images draw the pupils
        self.gaze = bool(gaze)
        self.pupils = bool(pupils) and self.gaze

    @classmethod
    def from_config(cls, root: str | os.PathLike, cfg: Config, **filters) -> "EpisodeDataset":
        """Episodes as meta-learning draws them: k, image size, flip, seed, line thickness and held-back
        probe frames from `cfg` (train.k_shot, model.image_size, train.flip, train.seed, data.line_thickness,
        train.probe_frames); `filters`: identities / exclude_identities / clip_ids."""
        return cls(root, k=cfg.train.k_shot, image_size=cfg.model.image_size, flip=cfg.train.flip,
                   seed=cfg.train.seed, line_thickness=cfg.data.line_thickness, probe_frames=cfg.train.probe_frames,
                   border_dropout=cfg.train.border_dropout, gaze=uses_gaze(cfg),
                   pupils=cfg.data.pupils, **filters)

    def _check_clip(self, record: dict) -> None:
        """DatasetError unless the clip's landmarks.npy is (n_frames,68,2) of finite numbers and its frames
        exist (garbage must not train silently)."""
        clip = self.root / CLIPS_DIR / record["clip_id"]
        file = clip / "landmarks.npy"
        fix = f"re-run preprocessing for it (delete {clip} and run `talking-heads preprocess` again)"
        try:
            points = np.load(file, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise DatasetError(f"{file}: not a readable landmark file ({err}); {fix}") from None
        n = int(record["n_frames"])
        if points.shape != (n, 68, 2) or not np.issubdtype(points.dtype, np.floating):
            raise DatasetError(f"{file}: landmarks are {points.dtype} {points.shape}, the manifest says ({n},68,2); {fix}")
        bad = np.where(~np.isfinite(points).all(axis=(1, 2)))[0]
        if len(bad):
            raise DatasetError(f"{file}: NaN or infinite landmarks in {len(bad)} of {n} frames (first: {bad[0]}); {fix}")
        if not (clip / FRAMES_DIR / FRAME_NAME.format(n - 1)).is_file():
            raise DatasetError(f"{clip}: frames/ lacks {FRAME_NAME.format(n - 1)} of its {n} frames; {fix}")

    def train_indices(self, video: int) -> np.ndarray:
        """Stored-frame indices episodes draw from: all but the last `probe_frames` (clips with fewer than
        probe_frames + 2 frames keep all theirs and hold none back)."""
        f = self.n_frames[video]
        p = self.probe_frames if f >= self.probe_frames + 2 else 0
        return np.arange(f - p)

    def probe_indices(self, video: int) -> np.ndarray:
        """The held-back frames of a clip (never a target or a source), for the identity probe."""
        f = self.n_frames[video]
        return np.arange(len(self.train_indices(video)), f)

    def _stored_size(self) -> int:
        settings = self.root / SETTINGS_FILE
        if settings.is_file():
            return int(json.loads(settings.read_text())["size"])
        meta = json.loads((self.root / CLIPS_DIR / self.clip_ids[0] / "meta.json").read_text())
        return int(meta["size"])

    @property
    def num_videos(self) -> int:
        return len(self.clip_ids)

    def __len__(self) -> int:
        return len(self.clip_ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def sample(self, index: int) -> tuple[int, int, np.ndarray, bool]:
        """(video, target frame, source frames (K,), flip) of item `index` (deterministic)."""
        n = len(self.clip_ids)
        video, epoch = int(index) % n, self.epoch + int(index) // n
        rng = np.random.default_rng([self.seed, epoch, video])
        f = len(self.train_indices(video))  # the usable frames are 0 .. f-1
        target = int(rng.integers(f))
        others = np.delete(np.arange(f), target)
        sources = rng.choice(others, size=self.k, replace=len(others) < self.k)
        flip = bool(self.flip and rng.random() < 0.5)
        return video, target, sources.astype(np.int64), flip

    def aug_seed(self, index: int) -> int:
        """A seed for the episode's DiffAugment transforms (train/augment.py), a function of the episode alone."""
        n = len(self.clip_ids)
        video, epoch = int(index) % n, self.epoch + int(index) // n
        return int(np.random.default_rng([self.seed, epoch, video, 1]).integers(2**62))

    def _frame(self, clip_dir: Path, i: int, points: np.ndarray, flip: bool
               ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """(x, y, landmarks (68,2) or with gaze (70,2) in image_size px) of stored frame i."""
        img, p = self._image(clip_dir, i, points, flip)
        return to_tensor(img), to_tensor(rasterize(p, self.image_size, self.line_thickness, self.pupils)), p

    def _image(self, clip_dir: Path, i: int, points: np.ndarray, flip: bool) -> tuple[np.ndarray, np.ndarray]:
        """Stored frame i resized to image_size (uint8 RGB) and its landmarks (68,2) in those pixels."""
        path = clip_dir / FRAMES_DIR / FRAME_NAME.format(i)
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"cannot read {path}")
        img = bgr[:, :, ::-1]
        p = points[i].astype(np.float64)
        size = self.image_size
        if img.shape[0] != size or img.shape[1] != size:
            s = size / img.shape[1]
            interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
            img = cv2.resize(img, (size, size), interpolation=interp)
            p = (p + 0.5) * s - 0.5
        if flip:
            img = img[:, ::-1]
            p = flip_landmarks(p, size)
        return np.ascontiguousarray(img), p

    def _points(self, clip_dir: Path) -> np.ndarray:
        """A clip's stored landmarks: (F,68,2), or (F,70,2) with the iris centres when `gaze`."""
        points = np.load(clip_dir / "landmarks.npy")
        if not self.gaze:
            return points
        iris_file = clip_dir / IRIS_FILE
        iris = np.load(iris_file) if iris_file.is_file() else None
        if iris is not None and iris.shape != (len(points), 2, 4):
            raise DatasetError(f"{iris_file}: iris points are {iris.shape}, expected ({len(points)},2,4); re-run "
                               f"preprocessing for it (delete {clip_dir} and run `talking-heads preprocess` again)")
        return clip_gaze(points, iris)

    def clip_frames(self, video: int, indices: Iterable[int]) -> dict[str, torch.Tensor | np.ndarray]:
        """Frames `indices` of clip `video` outside any episode (evaluation, avatars from preprocessed clips):
        x, y (N,3,H,W) float32 in [-1,1] and points (N,68,2) float64 landmarks in image_size pixels (with `gaze`
        (N,70,2)), and, where the clip stores iris points, iris (N,2,2) the centres seen (NaN: not seen). No flip."""
        clip_dir = self.root / CLIPS_DIR / self.clip_ids[video]
        stored = self._points(clip_dir)
        iris_file = clip_dir / IRIS_FILE
        iris = np.load(iris_file) if iris_file.is_file() else None
        xs, ys, ps, cs = [], [], [], []
        for i in indices:
            img, p = self._image(clip_dir, int(i), stored, False)
            xs.append(to_tensor(img))
            ys.append(to_tensor(rasterize(p, self.image_size, self.line_thickness, self.pupils)))
            ps.append(p)
            if iris is not None:  # crop px of the stored size -> image_size px, as `_image` maps the points
                s = self.image_size / self.stored_size
                cs.append((iris_points(iris[int(i)]) + 0.5) * s - 0.5)
        out = {"x": torch.stack(xs), "y": torch.stack(ys), "points": np.stack(ps)}
        if iris is not None:
            out["iris"] = np.stack(cs)
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        video, target, sources, flip = self.sample(index)
        clip_dir = self.root / CLIPS_DIR / self.clip_ids[video]
        points = self._points(clip_dir)
        xs, ys, ps = zip(*(self._frame(clip_dir, int(i), points, flip) for i in sources))
        img, p_tgt = self._image(clip_dir, target, points, flip)
        x_tgt, y_tgt = to_tensor(img), to_tensor(rasterize(p_tgt, self.image_size, self.line_thickness, self.pupils))
        item = {"x_src": torch.stack(xs), "y_src": torch.stack(ys), "x_tgt": x_tgt, "y_tgt": y_tgt,
                "p_src": torch.from_numpy(np.stack(ps).astype(np.float32)),
                "p_tgt": torch.from_numpy(p_tgt.astype(np.float32)), "video": torch.tensor(video, dtype=torch.int64),
                "aug_seed": torch.tensor(self.aug_seed(index), dtype=torch.int64)}
        if self.border_dropout > 0:
            item["x_src"], item["valid_src"] = self.drop_borders(item["x_src"], index)
        return item

    def drop_borders(self, x_src: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Border dropout (train.border_dropout): each source, with that probability, loses a band of 8-30 % of
        its side along one random edge, blacked out and marked invalid ((K,1,H,W) 1 = real, 0 = past the
        photo's edge), as a crop that runs past a photo is given to the TPS renderer; the target keeps its
        pixels, so the generator learns to fill what the photo lacks. Its own generator (seed, epoch, video,
        2): the episode is the same whatever the dropout."""
        n = len(self.clip_ids)
        video, epoch = int(index) % n, self.epoch + int(index) // n
        rng = np.random.default_rng([self.seed, epoch, video, 2])
        k, _, h, w = x_src.shape
        valid = torch.ones(k, 1, h, w)
        for i in range(k):
            if rng.random() >= self.border_dropout:
                continue
            band = int(round(rng.uniform(0.08, 0.3) * h))
            edge = int(rng.integers(4))
            region = [(slice(None), slice(0, band)), (slice(None), slice(w - band, w)),
                      (slice(0, band), slice(None)), (slice(h - band, h), slice(None))][edge]
            valid[i, :, region[0], region[1]] = 0
        return x_src * valid - (1 - valid), valid

"""Self-reenactment evaluation, the paper's protocol (paper.md section 7), on preprocessed test clips.

Per test video (a clip of `talking-heads preprocess` output, identities unseen in training):
- Frames: `holdout` (32) hold-out frames evenly spaced over the clip, and few-shot sets of T frames (1, 8,
  32) drawn at random (seeded by `EvalConfig.seed` and the clip id) from the *other* frames. The sets are
  nested (the T=1 frame is in the T=8 set, which is in the T=32 set) and never overlap the hold-out frames
  (`split_frames` asserts it). When a clip is too short for max(T) + holdout frames, the hold-out set shrinks
  to what is left (the report lists the count per video); a clip with nothing left is skipped with a reason.
- Avatars, through the inference pipeline (`TalkingHeadPipeline.create_avatar_from_tensors`):
  FF  e_new = mean_T E(x, y), psi' = P e_new (feed-forward, no training);
  FT  fine-tuning (paper section 6) for `epochs` (default `finetune.epochs`, the paper's 40).
- Every hold-out frame is generated from its own landmarks (`pipeline.render`) and compared with itself.
- Baseline on the same frames: nearest-shot retrieval returns, for each hold-out frame, the few-shot frame
  whose landmarks are closest after removing translation and scale (`nearest_shot`): a real image with
  roughly the right pose and expression, which a generator must beat to be worth having.
- Timing: few-shot learning seconds (avatar creation, FF and FT) per video and T, and inference
  milliseconds per frame (rendering, `EvalConfig.render_batch` frames per call; 1 = the paper's per-frame
  figure), with CUDA synchronisation on GPUs.

`Evaluation(pipe, data_dir, cfg, device).run()` does all of it (cross-identity puppeteering too when
`EvalConfig.cross`, see `cross.py`) and returns an `EvaluationResult` for `report.write_report`.
Metrics come from the `talking_heads.metrics` registry; FID is computed per (T, method) over all videos'
hold-out frames against the same real frames, paired metrics per frame and then averaged over all frames.

Glossary: x frame, y landmark image, points (N,68,2) landmarks in model-resolution pixels, T few-shot set
size, H hold-out count, method "ff" | "ft" | "nearest".
"""

from __future__ import annotations

import datetime
import logging
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..config import Config
from ..data.episodes import EpisodeDataset
from ..errors import InputError
from ..landmarks.iris import complete_gaze, uses_gaze
from ..landmarks.raster import rasterize_tensor
from ..machine import describe
from ..metrics import MetricValue, PairedMetric, SetMetric, as_uint8, create_all
from ..train.finetune import describe_recipe
from .cross import CrossEvaluation

log = logging.getLogger(__name__)

VARIANTS = ("ff", "ft")
BASELINE = "nearest"
METHOD_LABELS = {"ff": "Ours-FF", "ft": "Ours-FT", BASELINE: "Nearest shot"}


class NotEnoughFrames(InputError):
    """A clip too short for the few-shot sets plus at least one hold-out frame."""


# --- frame selection ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class FrameSplit:
    """Stored-frame indices of one clip: hold-out frames and nested few-shot sets (never overlapping)."""

    holdout: np.ndarray  # (H,) sorted
    draw: np.ndarray  # (max T,) few-shot frames in draw order; the T-shot set is draw[:T]

    def shots(self, t: int) -> np.ndarray:
        return self.draw[:t]


def split_frames(n_frames: int, shots: Sequence[int], holdout: int, seed: int, key: str) -> FrameSplit:
    """Hold-out frames evenly spaced over the clip, few-shot frames a seeded draw from the others (docstring)."""
    t_max = max(shots)
    h = min(int(holdout), n_frames - t_max)
    if min(shots) < 1 or holdout < 1:
        raise ValueError(f"few-shot sizes and hold-out count must be >= 1 (got {list(shots)}, {holdout})")
    if h < 1:
        raise NotEnoughFrames(f"{n_frames} frames: too few for T={t_max} few-shot frames plus hold-out frames")
    hold = np.round(np.linspace(0, n_frames - 1, h)).astype(np.int64)  # distinct because h <= n_frames
    rest = np.setdiff1d(np.arange(n_frames), hold)
    rng = np.random.default_rng([int(seed), zlib.crc32(key.encode())])
    draw = rng.permutation(rest)[:t_max]
    if np.intersect1d(hold, draw).size or len(np.unique(hold)) != h:
        raise AssertionError("few-shot and hold-out frames overlap")  # cannot happen; guards the protocol
    return FrameSplit(holdout=hold, draw=draw)


# --- nearest-shot baseline -----------------------------------------------------------------------------

def select_videos(identities: Sequence[str], per_identity: int = 0, videos: int = 0) -> list[int]:
    """Indices of the evaluated clips (in clip-id order): at most `per_identity` per identity (0 = no limit),
    then the first `videos` of those (0 = all)."""
    chosen, seen = [], {}
    for v, identity in enumerate(identities):
        seen[identity] = seen.get(identity, 0) + 1
        if per_identity <= 0 or seen[identity] <= per_identity:
            chosen.append(v)
    return chosen if videos <= 0 else chosen[:videos]


def normalise_landmarks(points: np.ndarray) -> np.ndarray:
    """(...,68,2) points with the centroid at 0 and unit RMS distance to it (translation and scale removed)."""
    p = np.asarray(points, np.float64)
    centred = p - p.mean(-2, keepdims=True)
    rms = np.sqrt((centred ** 2).sum(-1).mean(-1))[..., None, None]
    return centred / np.maximum(rms, 1e-9)


def nearest_shot(shot_points: np.ndarray, target_points: np.ndarray) -> np.ndarray:
    """(H,) index of the few-shot frame (of T, points (T,68,2)) nearest to each target (H,68,2), by the mean
    squared distance of normalised landmarks."""
    a = normalise_landmarks(shot_points)[None]  # 1,T,68,2
    b = normalise_landmarks(target_points)[:, None]  # H,1,68,2
    return ((a - b) ** 2).sum(-1).mean(-1).argmin(1)


# --- scores ---------------------------------------------------------------------------------------------

class Scores:
    """Accumulates metric values over videos: paired metrics per frame, set metrics as features."""

    def __init__(self, metrics: dict[str, Any]):
        self.metrics = metrics
        self.frame_values: dict[tuple[int, str], dict[str, list[np.ndarray]]] = {}
        self.fake_features: dict[tuple[int, str], dict[str, list[np.ndarray]]] = {}
        self.real_features: dict[str, list[np.ndarray]] = {n: [] for n, m in metrics.items()
                                                           if isinstance(m, SetMetric) and m.available}
        self.per_video: list[dict[str, Any]] = []
        self.keys: set[tuple[int, str]] = set()  # every (T, method) scored

    def add_real(self, real: np.ndarray, points: np.ndarray, *, video: str = "", identity: str = "",
                 shots: dict | None = None, sizes: Sequence[int] = ()) -> dict[str, Any]:
        """One video's real hold-out frames: their set-metric features are stored (the reference set of FID);
        verification metrics get the video's few-shot frames `shots` ({"x", "points"} in draw order) too;
        returns {paired metric: reference} to compare every method's frames with (computed once per video)."""
        refs = {}
        for name, metric in self.metrics.items():
            if not metric.available:
                continue
            if isinstance(metric, SetMetric):
                self.real_features[name].append(metric.features(real, points))
            elif isinstance(metric, PairedMetric):
                refs[name] = metric.reference(real, points)
            elif shots is not None:  # verification: references from the few-shot frames
                metric.add_video(video, identity, shots["x"], shots["points"], real, points, sizes)
        return refs

    def add(self, video: str, identity: str, t: int, method: str, fake: np.ndarray, refs: dict[str, Any],
            points: np.ndarray) -> None:
        """Score one method's hold-out frames of one video (uint8 (H,h,w,3), driving points (H,68,2))."""
        key = (t, method)
        self.keys.add(key)
        for name, metric in self.metrics.items():
            if not metric.available:
                continue
            if isinstance(metric, SetMetric):
                self.fake_features.setdefault(key, {}).setdefault(name, []).append(metric.features(fake, points))
                continue
            if not isinstance(metric, PairedMetric):  # verification
                values = metric.add_fake(video, t, method, fake, points)
                self.per_video.append({"video": video, "identity": identity, "T": t, "method": method,
                                       **metric.summarize_video(values).to_dict(), "values": [_num(v) for v in values]})
                continue
            values = metric.compare(fake, refs[name], points)
            self.frame_values.setdefault(key, {}).setdefault(name, []).append(values)
            summary = metric.summarize(values)
            self.per_video.append({"video": video, "identity": identity, "T": t, "method": method,
                                   **summary.to_dict(), "values": [_num(v) for v in values]})

    def table(self) -> dict[tuple[int, str], dict[str, MetricValue]]:
        """{(T, method): {metric: value over all videos}} for every (T, method) scored."""
        out: dict[tuple[int, str], dict[str, MetricValue]] = {}
        keys = sorted(self.keys, key=lambda k: (k[0], _method_order(k[1])))
        for key in keys:
            row: dict[str, MetricValue] = {}
            for name, metric in self.metrics.items():
                if not metric.available:
                    row[name] = metric.unavailable()
                elif isinstance(metric, PairedMetric):
                    row[name] = metric.summarize(np.concatenate(self.frame_values.get(key, {}).get(name, [[]])))
                elif not isinstance(metric, SetMetric):  # verification
                    row[name] = metric.value(*key)
                else:
                    fake = self.fake_features.get(key, {}).get(name, [])
                    real = self.real_features.get(name, [])
                    row[name] = metric.distance(np.concatenate(fake), np.concatenate(real)) if fake else \
                        MetricValue(name, None, reason="no frames", higher_is_better=metric.higher_is_better)
            out[key] = row
        return out


def _num(v: float) -> float | str:
    """JSON-safe number (inf/nan as strings)."""
    v = float(v)
    return v if np.isfinite(v) else str(v)


def _method_order(method: str) -> int:
    order = [*VARIANTS, BASELINE]
    return order.index(method) if method in order else len(order)


# --- result ---------------------------------------------------------------------------------------------

@dataclass
class EvaluationResult:
    """Everything `report.write_report` needs (plain data)."""

    settings: dict[str, Any]  # what was used (model, data, videos, shots, hold-out, epochs, device, ...)
    table: dict[tuple[int, str], dict[str, MetricValue]]  # (T, method) -> metric -> value over all videos
    per_video: list[dict[str, Any]]  # one record per (video, T, method, paired metric), with per-frame values
    timings: list[dict[str, Any]]  # one record per (video, T, variant): learn_s, render_ms_per_frame, frames
    grids: dict[int, list[dict[str, np.ndarray]]]  # T -> rows of images {"source", "gt", "ff", "ft", "nearest"}
    cross: list[dict[str, Any]] = field(default_factory=list)  # cross-identity records (cross.py)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"video", "reason"}
    metric_info: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> available, reason, text


def portable_path(path: str | os.PathLike) -> str:
    """A path as a report should record it: relative to the working directory (the project, when run from its
    root) when it lies inside it, else as given. Never this machine's absolute path of a project file."""
    p = Path(path)
    try:
        return p.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def default_device() -> str:
    """"cuda" when a GPU is visible, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def machine_description(device: str) -> dict[str, Any]:
    """CPU model, cores, torch threads, GPU name, torch version, host OS (for the timing table)."""
    info = describe(device)
    return {"cpu": info["cpu"], "cpu_cores": info["cpu_count"], "torch_threads": info["torch_threads"],
            "torch": info["torch"], "os": info["os"], "device": device, **({"gpu": info["gpu"]} if "gpu" in info else {})}


def timed(fn: Callable[[], Any], device: str) -> tuple[Any, float]:
    """(fn(), seconds), synchronising CUDA before and after so GPU work is counted."""
    sync = torch.cuda.synchronize if str(device).startswith("cuda") and torch.cuda.is_available() else None
    if sync:
        sync()
    t0 = time.perf_counter()
    out = fn()
    if sync:
        sync()
    return out, time.perf_counter() - t0


# --- the evaluation -------------------------------------------------------------------------------------

def open_test_set(data_dir: str | os.PathLike, cfg: Config):
    """The preprocessed test clips, read at the model's resolution (an `EpisodeDataset` used as a clip reader)."""
    return EpisodeDataset(data_dir, k=1, image_size=cfg.model.image_size, line_thickness=cfg.data.line_thickness)


class Evaluation:
    """Self-reenactment (and optionally cross-identity) evaluation of one model on one test folder."""

    def __init__(self, pipe, data_dir: str | os.PathLike, cfg: Config, *, device: str = "cpu",
                 progress: bool = True, run_info: dict[str, Any] | None = None):
        self.pipe, self.cfg, self.ecfg, self.device = pipe, cfg, cfg.eval, str(device)
        self.data_dir = Path(data_dir)
        self.progress = progress
        self.run_info = dict(run_info or {})
        bad = [v for v in self.ecfg.variants if v not in VARIANTS]
        if bad or not self.ecfg.variants:
            raise ValueError(f"variants must be a non-empty subset of {list(VARIANTS)}, got {list(self.ecfg.variants)}")
        self.shots = sorted(set(int(t) for t in self.ecfg.shots))
        self.epochs = None if self.ecfg.epochs is None else int(self.ecfg.epochs)  # None: the model's FT recipe
        self.test = open_test_set(self.data_dir, cfg)
        self.metrics = create_all(self.ecfg.metrics, self.ecfg, self.device)
        self.scores = Scores(self.metrics)
        self.timings: list[dict[str, Any]] = []
        self.grids: dict[int, list[dict[str, np.ndarray]]] = {t: [] for t in self.shots}
        self.skipped: list[dict[str, str]] = []
        self.holdout_counts: dict[str, int] = {}
        self.frames_used: dict[str, dict[str, Any]] = {}  # clip -> stored-frame indices of hold-out and shots
        self.cross = None
        if self.ecfg.cross:
            self.cross = CrossEvaluation(self.pipe, self.test, self.metrics, cfg, device=self.device)

    def videos(self) -> list[int]:
        return select_videos(self.test.identities, self.ecfg.per_identity, self.ecfg.videos)

    def run(self) -> EvaluationResult:
        videos = self.videos()
        started = time.time()
        drivers = self.cross.pick_drivers(videos) if self.cross else {}
        units = len(self.shots) * (len(self.ecfg.variants) + (1 if self.cross else 0))
        bar = tqdm(total=len(videos) * units, desc="evaluate", unit="step", disable=not self.progress,
                   dynamic_ncols=True)
        rows_per_video = max(1, -(-self.ecfg.grid_rows // max(1, len(videos))))
        for v in videos:
            clip = self.test.clip_ids[v]
            try:
                split = split_frames(self.test.n_frames[v], self.shots, self.ecfg.holdout, self.ecfg.seed, clip)
            except NotEnoughFrames as err:
                self.skipped.append({"video": clip, "reason": str(err)})
                bar.update(units)
                continue
            self.holdout_counts[clip] = len(split.holdout)
            self.frames_used[clip] = {"holdout": split.holdout.tolist(),
                                      "shots": {t: split.shots(t).tolist() for t in self.shots}}
            avatars = self.evaluate_video(v, split, bar, rows_per_video)
            for t in self.shots if self.cross else ():
                if v in drivers:
                    bar.set_description(f"cross {clip[:20]} T={t}")
                    self.cross.evaluate(v, drivers[v], split, avatars[t], t)
                bar.update(1)
        bar.close()
        return self.result(time.time() - started)

    def evaluate_video(self, v: int, split: FrameSplit, bar, rows_per_video: int) -> dict[int, dict[str, Any]]:
        """All T and methods on one video; returns {T: {variant: avatar}} when cross-identity runs (else {})."""
        clip, identity = self.test.clip_ids[v], self.test.identities[v]
        hold = self.test.clip_frames(v, split.holdout)
        shots = self.test.clip_frames(v, split.draw)  # the largest few-shot set, in draw order
        real = as_uint8(hold["x"])
        refs = self.scores.add_real(real, hold["points"], video=clip, identity=identity, shots=shots, sizes=self.shots)
        avatars: dict[int, dict[str, Any]] = {}
        for t in self.shots:
            outputs = {BASELINE: as_uint8(shots["x"][:t])[nearest_shot(shots["points"][:t], hold["points"])]}
            for variant in self.ecfg.variants:
                bar.set_description(f"{clip[:24]} T={t} {variant}")
                avatar, outputs[variant] = self.generate(clip, t, variant, shots, hold)
                if self.cross:
                    avatars.setdefault(t, {})[variant] = avatar
                bar.update(1)
            for method, fake in outputs.items():
                self.scores.add(clip, identity, t, method, fake, refs, hold["points"])
            self.add_grid_rows(t, as_uint8(shots["x"][0]), real, outputs, rows_per_video)
        return avatars

    def generate(self, clip: str, t: int, variant: str, shots: dict, hold: dict) -> tuple[Any, np.ndarray]:
        """Create one avatar from the first t few-shot frames and render every hold-out frame; records timings."""
        finetune = variant == "ft"
        shots_y, hold_y, hold_points = self.gaze_inputs(shots, t), self.gaze_inputs(hold), hold["points"]
        if uses_gaze(self.cfg):  # the hold-out frames' own gaze drives the avatar's
            hold_points = complete_gaze(hold["points"], hold.get("iris"))
        x, y = shots["x"][:t].to(self.device), shots_y.to(self.device)
        iris = shots["iris"][:t] if "iris" in shots else None
        avatar, learn_s = timed(lambda: self.pipe.create_avatar_from_tensors(
            x, y, landmarks=shots["points"][:t], iris=iris, finetune=finetune,
            epochs=self.epochs if finetune else None, progress=False), self.device)
        frames, render_s = timed(lambda: self.pipe.render(avatar, hold_y.to(self.device), points=hold_points,
                                                          batch_size=self.ecfg.render_batch), self.device)
        n = len(hold["y"])
        self.timings.append({"video": clip, "T": t, "variant": variant, "learn_s": learn_s,
                             "render_ms_per_frame": 1000.0 * render_s / n, "frames": n,
                             "render_batch": self.ecfg.render_batch})
        return avatar, as_uint8(frames)

    def gaze_inputs(self, frames: dict, t: int | None = None) -> torch.Tensor:
        """The landmark images of `frames` (the first t) as the model draws them: with the pupils for a model
        trained with them (data.pupils; the clip's iris points, `iris.complete_gaze`), else as read."""
        y = frames["y"] if t is None else frames["y"][:t]
        if not self.cfg.data.pupils:
            return y
        n = len(y)
        points = complete_gaze(frames["points"][:n], None if "iris" not in frames else frames["iris"][:n])
        return rasterize_tensor(points, self.cfg.model.image_size, self.cfg.data.line_thickness, True)

    def add_grid_rows(self, t: int, source: np.ndarray, real: np.ndarray, outputs: dict[str, np.ndarray],
                      rows: int) -> None:
        """Keep `rows` evenly spaced hold-out frames of this video for the T grid (up to grid_rows in all)."""
        for i in np.unique(np.linspace(0, len(real) - 1, rows).round().astype(int)):
            if len(self.grids[t]) >= self.ecfg.grid_rows:
                return
            self.grids[t].append({"source": source[0], "gt": real[i], **{m: f[i] for m, f in outputs.items()}})

    def settings(self, elapsed_s: float) -> dict[str, Any]:
        """What was used, for the report header and the JSON lines."""
        meta = getattr(self.pipe, "meta", {}) or {}
        used = [self.test.clip_ids[v] for v in self.videos() if self.test.clip_ids[v] not in {s["video"] for s in self.skipped}]
        return {
            **self.run_info,
            "data_dir": portable_path(self.data_dir),
            "videos": used,
            "identities": {c: self.test.identities[self.test.clip_ids.index(c)] for c in used},
            "videos_available": len(self.test.clip_ids),
            "shots": self.shots,
            "holdout_requested": self.ecfg.holdout,
            "holdout_per_video": dict(self.holdout_counts),
            "frames": dict(self.frames_used),
            "variants": list(self.ecfg.variants),
            "ft_epochs": self.epochs if self.epochs is not None or self.cfg.finetune.steps > 0 else self.cfg.finetune.epochs,
            "ft_recipe": describe_recipe(self.cfg, self.epochs),
            "ft_batch_size": self.cfg.finetune.batch_size,
            "seed": self.ecfg.seed,
            "image_size": self.cfg.model.image_size,
            "preset": self.cfg.preset,
            "generator": self.cfg.model.generator,
            "model_stage": meta.get("stage"),
            "model_step": meta.get("step"),
            "model_num_videos": meta.get("num_videos"),
            "training_content_loss": meta.get("content_loss"),
            "ft_content_loss": _content_loss_mode(self.pipe) if "ft" in self.ecfg.variants else "not used (no FT)",
            "render_batch": self.ecfg.render_batch,
            "cross": bool(self.ecfg.cross),
            "cross_frames": self.ecfg.cross_frames if self.ecfg.cross else None,
            "device": self.device,
            "machine": machine_description(self.device),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "elapsed_s": round(elapsed_s, 1),
        }

    def result(self, elapsed_s: float) -> EvaluationResult:
        info = {name: {"available": m.available, "reason": m.reason, "description": m.description,
                       "higher_is_better": m.higher_is_better, "kind": m.kind} for name, m in self.metrics.items()}
        return EvaluationResult(settings=self.settings(elapsed_s), table=self.scores.table(),
                                per_video=self.scores.per_video, timings=self.timings, grids=self.grids,
                                cross=self.cross.records if self.cross else [], skipped=self.skipped,
                                metric_info=info)


def _content_loss_mode(pipe) -> str:
    """The content loss FT uses ("vgg", "vgg19", "vggface" or "offline"), as the pipeline built it."""
    loss = pipe.content_loss() if callable(getattr(pipe, "content_loss", None)) else None
    return str(getattr(loss, "mode", "unknown"))

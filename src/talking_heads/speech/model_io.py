"""The speech model on disk: a folder with `config.json` (format, `SpeechConfig`, look-ahead, the loudness
baseline's shape, how it was trained) and `audio2motion.safetensors` (fp32, about 2 MB). The shipped one is
`assets/speech_model/` (`default_model_path`). `advance_frames`: how many feature frames the motion is moved
earlier: the network's lateness measured on the held-out people when it was exported (`train.timing_advance`).
Loading checks everything before use (`CheckpointError`: one line naming the file): a folder that is not a speech
model, JSON that does not parse, settings of the wrong type or range, weights that do not fit or are not finite."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_dir, umask
from ..config import ConfigError, SpeechConfig, check_section
from ..safetensors_io import CheckpointError, load_module, save_part
from .audio import HOP, frame_count, log_mel
from .model import AudioToMotion
from .motion import SPEECH_POINTS

FORMAT = "talking-heads speech model"
VERSION = 1
WEIGHTS = "audio2motion"


def default_model_path() -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / "speech_model"


@dataclass
class SpeechModel:
    network: AudioToMotion
    cfg: SpeechConfig
    baseline_shape: np.ndarray  # (P,2) the loudness baseline's motion shape (evaluation)
    training: dict
    path: Path
    advance: int = 0  # feature frames the motion is moved earlier: the timing measured on held-out people


def export_model(model: AudioToMotion, cfg: SpeechConfig, out: str | Path, *, baseline=None,
                 training: dict | None = None, advance: int = 0) -> Path:
    """Write the model folder atomically (module docstring)."""
    shape = baseline.shape if baseline is not None else np.zeros((len(SPEECH_POINTS), 2), np.float32)
    meta = {"format": FORMAT, "version": VERSION, "speech": dataclasses.asdict(cfg),
            "lookahead_frames": model.lookahead, "advance_frames": int(advance),
            "baseline_shape": np.round(shape, 6).tolist(), "training": training or {}}
    with atomic_dir(out) as tmp:
        save_part(tmp / f"{WEIGHTS}.safetensors", model)
        (tmp / "config.json").write_text(json.dumps(meta, indent=1))
        for f in tmp.iterdir():  # readable like any file the user makes (safetensors writes 0600)
            f.chmod(0o666 & ~umask())
    return Path(out)


def load_speech_model(path: str | os.PathLike | None = None) -> SpeechModel:
    """The speech model in `path` (None: the shipped one), checked (module docstring)."""
    folder = Path(path) if path is not None else default_model_path()
    conf = folder / "config.json"
    if not folder.is_dir() or not conf.is_file():
        raise CheckpointError(f"{folder}: not a speech model folder (no config.json); give the folder written by "
                              "talking-heads speech train (its model/ folder)")
    try:
        meta = json.loads(conf.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{conf}: not readable JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{conf}: not a speech model's config (format is not {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{conf}: speech model version {meta.get('version')!r}; this release reads {VERSION}")
    try:
        cfg = SpeechConfig(**check_section("speech", dict(meta.get("speech") or {})))
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"{conf}: {err}") from None
    lookahead = meta.get("lookahead_frames")
    advance = meta.get("advance_frames", 0)
    shape = np.asarray(meta.get("baseline_shape", []), np.float64)
    if not isinstance(lookahead, int) or not 0 <= lookahead <= 100 or not isinstance(advance, int) \
            or not -50 <= advance <= 50 or shape.shape != (len(SPEECH_POINTS), 2) \
            or not np.isfinite(shape).all():
        raise CheckpointError(f"{conf}: damaged (look-ahead or baseline shape out of range)")
    network = AudioToMotion(cfg, lookahead)
    load_module(folder, WEIGHTS, network)
    network.eval()
    training = meta.get("training") if isinstance(meta.get("training"), dict) else {}
    return SpeechModel(network, cfg, shape.astype(np.float32), training, folder, advance)


@torch.no_grad()
def predict_motion(model: SpeechModel, samples: np.ndarray, chunk_seconds: float = 60.0) -> np.ndarray:
    """(T,P,2) motion at the feature rate for samples (N,) at 16 kHz; long sound in chunks with overlap (bounded
    memory: an hour of sound is 360,000 frames)."""
    net = model.network
    n_frames = frame_count(len(samples))
    chunk = int(chunk_seconds * 100)
    context = net.receptive_field + net.lookahead + 4  # frames either side that a chunk's edge needs
    out = np.zeros((n_frames, net.points, 2), np.float32)
    for start in range(0, n_frames, chunk):
        lo, hi = max(0, start - context), min(n_frames, start + chunk + context)
        feats = log_mel(samples[lo * HOP:hi * HOP])
        motion = net(feats[None])[0].numpy()  # frames lo..
        take = min(chunk, n_frames - start)
        out[start:start + take] = motion[start - lo:start - lo + take]
    return advanced(out, model.advance)


def advanced(motion: np.ndarray, frames: int) -> np.ndarray:
    """motion (T,...) moved `frames` earlier (later when negative), the ends held."""
    if frames == 0 or len(motion) == 0:
        return motion
    idx = np.clip(np.arange(len(motion)) + frames, 0, len(motion) - 1)
    return motion[idx]

"""`talking-heads speech evaluate`: the speech model on people it never heard (the test split), beside two baselines.

For every test-split video with sound (at least `min_seconds` of it) that tests speech (its sound is audible, not a
silent track, and the person talks: the tracked inner-lip opening varies by at least `MIN_MOUTH_MOTION`; chosen
without looking at any prediction), the speaker's landmarks are tracked (dlib, cached in OUT/tracks/) and turned into their mouth motion (`speech.motion`: head pose removed, relative to their
most neutral frame, inter-ocular units). Three predictions of that motion from the sound alone, at the video's
frames:
- **ours**: `AudioToMotion` with the silence gate, exactly what `animate --audio` uses (`speech.drive`);
- **(a) loudness**: a fixed mouth shape times the loudness envelope, the shape fitted on the training clips
  (`train.LoudnessBaseline`, saved with the model);
- **(b) no motion**: the neutral face throughout.
Measured over the frames whose face is trusted: LMD (mean distance of the 20 mouth points, inter-ocular units),
the correlation of the inner-lip opening with the speaker's, and the audio-video offset: the shift of the
prediction within +-`MAX_LAG_S` that maximises that correlation (positive: the prediction comes late).

Writes OUT/report.json, OUT/report.md (per clip, the mean over clips and over people, the targets of issue 31),
OUT/openings.png (opening curves: speaker, ours, loudness) and contact sheets OUT/sheet_<clip>.jpg (the speaker |
the speaker's landmarks with our mouth in green over theirs in red | an avatar of `pictures.AVATAR_PHOTO` speaking the
clip's sound, rendered by the shipped TPS renderer, FF).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, write_text
from ..errors import InputError
from ..landmarks.masks import neutral_frame
from ..landmarks.plausibility import trusted
from .audio import at_times, load_audio
from .baseline import LoudnessBaseline
from .data import audible, best_lag
from .drive import motion_for_frames
from .model_io import load_speech_model
from .motion import motion_opening, mouth_distance, speech_motion
from .pictures import contact_sheets, opening_plot

log = logging.getLogger(__name__)

MAX_LAG_S = 0.4
MIN_MOUTH_MOTION = 0.01  # inter-ocular units: a test clip's inner-lip opening must vary this much (someone talks)
METHODS = ("ours", "loudness", "still")
TARGETS = {"lmd_ratio": 0.7, "correlation": 0.6, "offset_ms": 40.0}


@dataclass
class ClipResult:
    clip: str
    identity: str
    seconds: float
    frames: int
    fps: float
    lmd: dict[str, float] = field(default_factory=dict)
    correlation: dict[str, float] = field(default_factory=dict)
    offset_ms: dict[str, float] = field(default_factory=dict)
    amplitude: dict[str, float] = field(default_factory=dict)  # spread of the predicted opening / the speaker's


@dataclass
class SpeechReport:
    clips: list[ClipResult]
    model: str
    out: Path
    left_out: dict[str, str] = field(default_factory=dict)  # test clips with sound that test no speech, and why

    def mean(self, what: str, method: str, by_person: bool = False) -> float:
        rows = [(c.identity, getattr(c, what).get(method, np.nan)) for c in self.clips]
        if by_person:
            people = {}
            for who, v in rows:
                people.setdefault(who, []).append(v)
            values = [float(np.nanmean(v)) if np.isfinite(v).any() else np.nan for v in people.values()]
        else:
            values = [v for _, v in rows]
        values = [v for v in values if np.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")

    def offset_summary(self, method: str = "ours") -> tuple[float, float]:
        """(median offset, mean absolute offset) in ms over clips."""
        v = np.array([c.offset_ms.get(method, np.nan) for c in self.clips], np.float64)
        v = v[np.isfinite(v)]
        return (float(np.median(v)), float(np.abs(v).mean())) if v.size else (float("nan"), float("nan"))

    def targets(self) -> dict[str, tuple[float, bool]]:
        ratio = self.mean("lmd", "ours") / self.mean("lmd", "loudness")
        corr = self.mean("correlation", "ours")
        median, _ = self.offset_summary()
        return {"LMD ours / LMD loudness <= 0.7": (ratio, ratio <= TARGETS["lmd_ratio"]),
                "opening correlation >= 0.6": (corr, corr >= TARGETS["correlation"]),
                "offset within +-40 ms (median over clips)": (median, abs(median) <= TARGETS["offset_ms"])}

    def summary(self) -> str:
        t = self.targets()
        parts = [f"{k}: {v:.3f} ({'met' if ok else 'missed'})" for k, (v, ok) in t.items()]
        return f"speech evaluation of {len(self.clips)} test clips: " + "; ".join(parts) + f"; report {self.out}/report.md"

    def markdown(self) -> str:
        lines = [f"# Speech model evaluation ({len(self.clips)} test-split clips, people the model never heard)", "",
                 f"Model: `{self.model}`. LMD: mean distance of the 20 mouth points to the speaker's, head pose "
                 "removed, in inter-ocular distances (lower is better). r: correlation of the inner-lip opening with "
                 "the speaker's. Offset: the shift (ms) that maximises r (positive: the prediction is late).", "",
                 "Amplitude: the spread of the predicted opening over the speaker's (1 = as much movement).", "",
                 "| clip | s | LMD ours | LMD (a) loudness | LMD (b) still | r ours | r (a) | offset ours | offset (a) "
                 "| amplitude ours |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for c in self.clips:
            lines.append(f"| {c.clip} | {c.seconds:.1f} | {c.lmd['ours']:.3f} | {c.lmd['loudness']:.3f} | "
                         f"{c.lmd['still']:.3f} | {c.correlation['ours']:.2f} | {c.correlation['loudness']:.2f} | "
                         f"{c.offset_ms['ours']:+.0f} | {c.offset_ms['loudness']:+.0f} | {c.amplitude['ours']:.2f} |")
        for label, person in (("mean over clips", False), ("mean over people", True)):
            lines.append(f"| **{label}** | | **{self.mean('lmd', 'ours', person):.3f}** | "
                         f"{self.mean('lmd', 'loudness', person):.3f} | {self.mean('lmd', 'still', person):.3f} | "
                         f"**{self.mean('correlation', 'ours', person):.2f}** | "
                         f"{self.mean('correlation', 'loudness', person):.2f} | | | "
                         f"{self.mean('amplitude', 'ours', person):.2f} |")
        median, mean_abs = self.offset_summary()
        if self.left_out:
            lines += ["", "Test clips with a sound track left out (they test no speech): "
                      + "; ".join(f"{k}: {v}" for k, v in self.left_out.items()) + "."]
        lines += ["", f"Offset of ours: median {median:+.0f} ms, mean absolute {mean_abs:.0f} ms over clips.", "",
                  "| target | value | |", "|---|---|---|"]
        lines += [f"| {k} | {v:.3f} | {'met' if ok else '**missed**'} |" for k, (v, ok) in self.targets().items()]
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        return json.dumps({"model": self.model, "clips": [c.__dict__ for c in self.clips], "left_out": self.left_out,
                           "targets": {k: [v, ok] for k, (v, ok) in self.targets().items()}}, indent=1)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 3 or a.std() < 1e-9 or b.std() < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def best_offset(pred: np.ndarray, real: np.ndarray, ok: np.ndarray, fps: float) -> float:
    """The lag (ms) within +-MAX_LAG_S maximising the correlation of pred shifted earlier by the lag with real:
    positive when the prediction comes late; NaN when no lag can be measured."""
    r, lag = best_lag(pred, real, ok, int(MAX_LAG_S * fps), min_frames=3)
    return 1000.0 * lag / fps if r > -1 else float("nan")


def test_clips(data_dir: Path, min_seconds: float) -> list[dict]:
    with open(data_dir / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f)
                if r["split"] == "test" and r["kind"] == "video" and r["audio"] not in ("", "none")]
    return [r for r in rows if float(r["duration_s"] or 0) >= min_seconds]


def _track(path: Path, cache: Path):
    """The clip's landmark track (frame px), cached as .npz."""
    from ..data.faces import track_video

    if cache.exists():
        z = np.load(cache)
        return z["points"], z["confidence"], z["found"], z["indices"], float(z["fps"]), tuple(z["frame_size"])
    t = track_video(path, max_frames=0)
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, points=t.points, confidence=t.confidence, found=t.found, indices=t.frame_indices,
                     fps=t.fps, frame_size=np.array(t.frame_size))
    return t.points, t.confidence, t.found, t.frame_indices, float(t.fps), tuple(t.frame_size)


def evaluate_clip(model, path: Path, identity: str, cache: Path):
    """(ClipResult, arrays for the pictures) of one test clip, or (None, why it is not a test of speech)."""
    points, conf, found, indices, fps, frame_size = _track(path, cache)
    ok = found & trusted(points, conf)
    if ok.sum() < 10:
        return None, "fewer than 10 trusted face frames"
    pts = np.where(ok[:, None, None], points, np.nan)
    ref = pts[neutral_frame(pts)]
    real = speech_motion(np.where(ok[:, None, None], points, ref), ref)  # F,P,2
    audio = load_audio(path)
    if not audible(audio.samples):
        return None, "silent sound track"
    if motion_opening(real)[ok].std() < MIN_MOUTH_MOTION:
        return None, f"the person does not talk (inner-lip opening varies by {motion_opening(real)[ok].std():.3f})"
    ours = motion_for_frames(model, audio, fps)
    n_frames = int(indices[-1]) + 1
    ours = np.concatenate([ours, np.repeat(ours[-1:], max(0, n_frames - len(ours)), 0)])[indices]
    loud = at_times(LoudnessBaseline(model.baseline_shape)(audio.samples), np.asarray(indices) / fps)
    preds = {"ours": ours, "loudness": loud, "still": np.zeros_like(real)}
    real_open = motion_opening(real)
    result = ClipResult(path.name, identity, round(float(ok.sum()) / fps, 2), int(ok.sum()), fps)
    for name, pred in preds.items():
        result.lmd[name] = float(mouth_distance(pred[ok], real[ok]).mean())
        result.correlation[name] = correlation(motion_opening(pred)[ok], real_open[ok])
        result.offset_ms[name] = best_offset(motion_opening(pred), real_open, ok, fps) if name != "still" else float("nan")
        result.amplitude[name] = float(motion_opening(pred)[ok].std() / max(real_open[ok].std(), 1e-9))
    arrays = {"points": points, "ok": ok, "ref": ref, "ours": ours, "real": real, "loud": loud, "fps": fps,
              "indices": indices, "frame_size": frame_size}
    return result, arrays


def _shown_path(path: Path) -> str:
    """The model's folder as a report shows it: the shipped one by name, others relative to the working folder
    when inside it (no machine's absolute paths in committed reports)."""
    from .model_io import default_model_path

    path = Path(path).resolve()
    if path == default_model_path().resolve():
        return "src/talking_heads/assets/speech_model (the shipped model)"
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name


def evaluate(data_dir: Path, out: Path, *, model_path=None, min_seconds: float = 2.0, sheets: int = 4,
             clips: int = 0, progress: bool = True) -> SpeechReport:
    from tqdm import tqdm

    model = load_speech_model(model_path)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tracks").mkdir(exist_ok=True)
    rows = test_clips(data_dir, min_seconds)
    rows = rows[:clips] if clips else rows
    if not rows:
        raise InputError(f"{data_dir}: no test-split video with at least {min_seconds} s of sound in manifest.csv")
    results, pictures, left_out = [], {}, {}
    for row in tqdm(rows, desc="speech evaluation", unit="clip", disable=not progress):
        path = data_dir / row["path"]
        result, detail = evaluate_clip(model, path, row["identity"], out / "tracks" / f"{path.stem}.npz")
        if result is None:
            log.info("%s: left out (%s)", path.name, detail)
            left_out[path.name] = detail
            continue
        results.append(result)
        pictures[path.name] = (path, detail)
    if not results:
        raise InputError(f"{data_dir}: none of the test clips with sound is a test of speech ({left_out})")
    report = SpeechReport(results, _shown_path(model.path), out, left_out)
    write_text(out / "report.md", report.markdown())
    write_text(out / "report.json", report.to_json())
    opening_plot(pictures, out / "openings.png")
    contact_sheets(pictures, out, data_dir, limit=sheets, speech_model=model_path, progress=progress)
    return report

"""Training the speech model (`talking-heads speech train`): sound windows -> mouth motion, an explicit loop.

Data: `speech.data.SpeechClip`s of a `preprocess`ed train split. `SpeechConfig.val_identities` people are held out
(chosen by a seeded shuffle of every person's name, before any clip is left out; their clips that pass the default
sync rule form the validation set) to watch the validation loss and the mouth-opening correlation; the test split is
never read here.

Clips whose sound does not match their mouth are left out first (`data.usable_for_training`: silent tracks, music,
dubbed voices). Each step draws `batch_size` windows of `window` seconds (clips weighted by their tracked length)
and augments the sound and the motion together: a tempo change within +-`speed` (both resampled), a gain within
+-`gain_db`, white noise at a random SNR on half the windows, a telephone band (300-3400 Hz) on a share of them,
and a random smooth spectral tilt of up to +-`eq_db` (other microphones and rooms). Loss, over the
frames whose motion is known: L1 of the points (mouth and chin weighted), of their frame-to-frame change, and of
the inner-lip opening.

A run folder holds `checkpoint.pt` (model, optimiser, step, seconds; written atomically every `CHECKPOINT_EVERY`
steps and when the time limit ends the sitting: run the same command again to resume) and `log.jsonl`; the model
is exported to `<run>/model/` (config.json + audio2motion.safetensors, `speech.model_io`) at every checkpoint where
the held-out people's mouth-opening correlation is the best so far (early stopping: 17 minutes of speech over-fit
within a few thousand steps), so a killed sitting still leaves a usable model. The loudness baseline of the evaluation (`LoudnessBaseline`) is fitted
on the same training clips and saved with the model.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..config import SpeechConfig
from .audio import FEATURE_RATE, HOP, RATE, at_times, log_mel
from .baseline import LoudnessBaseline
from .data import SpeechClip, best_lag, usable_for_training
from .model import AudioToMotion
from .motion import MOUTH_IN_MOTION, _INNER_PAIRS, SPEECH_POINTS

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 250
VAL_MIN_SYNC = 0.15  # the rule that picks the held-out clips (fixed, so that runs with other min_sync compare)


def split_identities(clips: list[SpeechClip], n_val: int, seed: int) -> tuple[list[SpeechClip], list[SpeechClip]]:
    """(train, validation): the clips of `n_val` people (a seeded shuffle of the names) held out."""
    people = sorted({c.identity for c in clips})
    random.Random(seed).shuffle(people)
    held = set(people[:n_val]) if len(people) > n_val else set()
    return [c for c in clips if c.identity not in held], [c for c in clips if c.identity in held]


def feature_stats(clips: list[SpeechClip]) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and spread (N_MELS,1) of the clips' log-mel features."""
    feats = torch.cat([log_mel(c.samples) for c in clips], dim=1)
    return feats.mean(1, keepdim=True).numpy(), feats.std(1, keepdim=True).clamp_min(1e-3).numpy()


def _resample(x: np.ndarray, n: int) -> np.ndarray:
    """x (L, ...) linearly resampled to n rows along axis 0 (`audio.at_times` at n evenly spaced positions)."""
    return at_times(x, np.linspace(0, len(x) - 1, n) / FEATURE_RATE)


class WindowSampler:
    """Augmented training windows (module docstring) from the training clips."""

    def __init__(self, clips: list[SpeechClip], cfg: SpeechConfig, seed: int):
        self.clips, self.cfg = clips, cfg
        self.frames = int(round(cfg.window * FEATURE_RATE))
        weights = np.array([max(c.valid.sum(), 1) for c in clips], np.float64)
        self.p = weights / weights.sum()
        self.rng = np.random.default_rng(seed)

    def window(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg, rng, w = self.cfg, self.rng, self.frames
        for _ in range(20):  # a window with enough known frames
            clip = self.clips[rng.choice(len(self.clips), p=self.p)]
            tempo = 1.0 + rng.uniform(-cfg.speed, cfg.speed)
            span = int(round(w * tempo))
            t_max = len(clip.valid) - span - 1
            if t_max <= 0:
                continue
            t0 = int(rng.integers(0, t_max))
            valid = clip.valid[t0:t0 + span]
            if valid.mean() > 0.5:
                break
        sound = clip.samples[t0 * HOP:(t0 + span) * HOP]
        sound = np.pad(sound, (0, span * HOP - len(sound)))
        sound = _resample(sound, w * HOP).astype(np.float32)
        motion = _resample(clip.motion[t0:t0 + span], w).astype(np.float32)
        valid = _resample(valid.astype(np.float32), w) > 0.999
        return self.augment(sound), motion, valid

    def augment(self, sound: np.ndarray) -> np.ndarray:
        cfg, rng = self.cfg, self.rng
        if rng.random() < cfg.narrowband:
            spec = np.fft.rfft(sound)
            freqs = np.fft.rfftfreq(len(sound), 1.0 / RATE)
            spec[(freqs < 300) | (freqs > 3400)] = 0
            sound = np.fft.irfft(spec, len(sound)).astype(np.float32)
        sound = sound * 10 ** (rng.uniform(-cfg.gain_db, cfg.gain_db) / 20)
        if rng.random() < 0.5:
            rms = math.sqrt(float(np.mean(sound ** 2)) + 1e-10)
            snr = rng.uniform(*cfg.noise_snr)
            sound = sound + rng.normal(0, rms / 10 ** (snr / 20), len(sound)).astype(np.float32)
        return np.clip(sound, -1, 1).astype(np.float32)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sounds, motions, valids = zip(*(self.window() for _ in range(self.cfg.batch_size)))
        feats = log_mel(torch.from_numpy(np.stack(sounds)))[:, :, :self.frames]
        if self.cfg.eq_db > 0:  # a random smooth spectral tilt per window: microphones and rooms differ
            bands = torch.linspace(-1, 1, feats.shape[1])
            a, b = (torch.from_numpy(self.rng.uniform(-1, 1, (2, len(sounds)))).float()
                    * self.cfg.eq_db * math.log(10) / 10)
            feats = feats + (a[:, None] * bands + b[:, None] * (bands ** 2 - 1 / 3))[:, :, None]
        return feats, torch.from_numpy(np.stack(motions)), torch.from_numpy(np.stack(valids))


def point_weights(cfg: SpeechConfig) -> torch.Tensor:
    w = torch.full((len(SPEECH_POINTS),), float(cfg.chin_weight))
    w[torch.as_tensor(MOUTH_IN_MOTION)] = float(cfg.mouth_weight)
    return w


def opening(motion: torch.Tensor) -> torch.Tensor:
    """(..., T) inner-lip opening change of a motion (..., T, P, 2) (`motion.motion_opening`)."""
    return torch.stack([motion[..., lo, 1] - motion[..., up, 1] for up, lo in _INNER_PAIRS]).mean(0)


def speech_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, cfg: SpeechConfig
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss (module docstring) over the frames marked valid (B,T)."""
    m = valid.float()
    n = m.sum().clamp_min(1.0)
    weights = point_weights(cfg).to(pred)
    pos = ((pred - target).abs().sum(-1) * weights).mean(-1)  # B,T
    l_pos = (pos * m).sum() / n
    mv = m[:, 1:] * m[:, :-1]
    vel = ((pred[:, 1:] - pred[:, :-1]) - (target[:, 1:] - target[:, :-1])).abs().sum(-1)
    l_vel = ((vel * weights).mean(-1) * mv).sum() / mv.sum().clamp_min(1.0)
    l_open = ((opening(pred) - opening(target)).abs() * m).sum() / n
    total = l_pos + cfg.velocity_weight * l_vel + cfg.opening_weight * l_open
    return total, {"points": float(l_pos.detach()), "velocity": float(l_vel.detach()), "opening": float(l_open.detach())}


def validation(model: AudioToMotion, clips: list[SpeechClip], cfg: SpeechConfig) -> tuple[float, float]:
    """(mean loss, mean inner-lip opening correlation) over whole held-out clips (no augmentation)."""
    if not clips:
        return float("nan"), float("nan")
    model.eval()
    losses, corrs = [], []
    with torch.no_grad():
        for c in clips:
            pred = model(log_mel(c.samples)[None])
            loss, _ = speech_loss(pred, torch.from_numpy(c.motion)[None], torch.from_numpy(c.valid)[None], cfg)
            losses.append(float(loss))
            a, b = opening(pred[0]).numpy()[c.valid], opening(torch.from_numpy(c.motion)).numpy()[c.valid]
            if a.std() > 1e-9 and b.std() > 1e-9:
                corrs.append(float(np.corrcoef(a, b)[0, 1]))
    model.train()
    return float(np.mean(losses)), float(np.mean(corrs)) if corrs else float("nan")


def timing_advance(model: AudioToMotion, clips: list[SpeechClip]) -> int:
    """Feature frames by which the network's mouth opening comes late on `clips` (the median over clips of the lag
    that best lines it up with the tracked opening, within +-0.2 s): what the exported model moves it earlier by.
    0 without clips."""
    from .motion import motion_opening

    lags = []
    model.eval()
    with torch.no_grad():
        for c in clips:
            pred = opening(model(log_mel(c.samples)[None])[0]).numpy()
            r, lag = best_lag(pred, motion_opening(c.motion), c.valid, int(0.2 * FEATURE_RATE))
            if r > -1:
                lags.append(lag)
    model.train()
    return int(np.median(lags)) if lags else 0


def lookahead_frames(cfg: SpeechConfig) -> int:
    return int(round(cfg.lookahead * FEATURE_RATE))


class SpeechTraining:
    """One run folder's training: the data split, the network, the optimiser and its schedule, restored from
    `checkpoint.pt` when there is one (module docstring). `run()` is the loop; `train()` the one call."""

    def __init__(self, clips: list[SpeechClip], run_dir: str | Path, cfg: SpeechConfig, data_note: str = ""):
        self.run_dir, self.cfg = Path(run_dir), cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        train_all, val_all = split_identities(clips, cfg.val_identities, cfg.seed)
        self.train_clips, left_out = usable_for_training(train_all, cfg.min_sync)
        self.val_clips, _ = usable_for_training(val_all, VAL_MIN_SYNC)  # the same held-out set whatever min_sync is
        for name, why in left_out.items():
            log.info("%s: left out (%s)", name, why)
        if not self.train_clips:
            raise ValueError("no training clips with sound and tracked faces")
        self.model = AudioToMotion(cfg, lookahead_frames(cfg))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.ckpt_path = self.run_dir / "checkpoint.pt"
        self.step, self.seconds, self.best_r = 0, 0.0, float("nan")
        if self.ckpt_path.exists():
            state = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.step, self.seconds = int(state["step"]), float(state["seconds"])
            self.best_r = float(state.get("best_r", float("nan")))
            log.info("resumed at step %d (%.0f s trained)", self.step, self.seconds)
        else:
            mean, std = feature_stats(self.train_clips)
            self.model.mean.copy_(torch.from_numpy(mean))
            self.model.std.copy_(torch.from_numpy(std))
        self.baseline = LoudnessBaseline.fit(self.train_clips)
        self.sampler = WindowSampler(self.train_clips, cfg, cfg.seed + self.step)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(cfg.steps, 1)))))
        for _ in range(self.step):
            self.schedule.step()
        self.meta = {"train_clips": len(self.train_clips), "val_clips": len(self.val_clips),
                     "train_seconds_of_speech": round(sum(c.seconds for c in self.train_clips), 1),
                     "people": len({c.identity for c in self.train_clips}), "data": data_note, "left_out": left_out}

    def one_step(self) -> tuple[torch.Tensor, dict[str, float]]:
        feats, target, valid = self.sampler.batch()
        loss, parts = speech_loss(self.model(feats), target, valid, self.cfg)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.schedule.step()
        self.step += 1
        return loss.detach(), parts

    def save(self, val_r: float) -> None:
        """The checkpoint; the exported model when the held-out people's opening correlation is the best so far
        (early stopping on people the network does not train on; without held-out people: the latest)."""
        from .model_io import export_model

        improved = not np.isfinite(val_r) or not np.isfinite(self.best_r) or val_r > self.best_r
        if improved:
            self.best_r = val_r
        with atomic_path(self.ckpt_path) as tmp:
            torch.save({"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "step": self.step,
                        "seconds": self.seconds, "best_r": self.best_r}, tmp)
        if improved:
            export_model(self.model, self.cfg, self.run_dir / "model", baseline=self.baseline,
                         advance=timing_advance(self.model, self.val_clips),
                         training={**self.meta, "steps": self.step, "cpu_seconds": round(self.seconds, 1),
                                   "finished": self.step == self.cfg.steps,
                                   "val_opening_r": None if not np.isfinite(val_r) else round(val_r, 4)})

    def run(self, time_limit: float | None = None, progress: bool = True) -> Path:
        from tqdm import tqdm

        start = time.monotonic()
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="speech model", unit="step", disable=not progress)
        with open(self.run_dir / "log.jsonl", "a") as logf:
            while self.step < self.cfg.steps:
                t0 = time.monotonic()
                loss, parts = self.one_step()
                self.seconds += time.monotonic() - t0
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
                out_of_time = time_limit is not None and time.monotonic() - start > time_limit
                if self.step == 1 or self.step % CHECKPOINT_EVERY == 0 or self.step == self.cfg.steps or out_of_time:
                    val, val_r = validation(self.model, self.val_clips, self.cfg)
                    logf.write(json.dumps({"step": self.step, "loss": loss.item(), **parts, "val": val, "val_r": val_r,
                                           "lr": self.schedule.get_last_lr()[0],
                                           "seconds": round(self.seconds, 1)}) + "\n")
                    logf.flush()
                    self.save(val_r)
                    log.info("step %d loss %.4f val %.4f val_r %.3f", self.step, loss.item(), val, val_r)
                if out_of_time:
                    log.info("time limit reached at step %d: checkpoint written; run again to resume", self.step)
                    break
        bar.close()
        return self.run_dir / "model"


def train(clips: list[SpeechClip], run_dir: str | Path, cfg: SpeechConfig, *, time_limit: float | None = None,
          progress: bool = True, data_note: str = "") -> Path:
    """Train (or resume) in `run_dir`; returns the exported model folder (module docstring)."""
    return SpeechTraining(clips, run_dir, cfg, data_note).run(time_limit, progress)

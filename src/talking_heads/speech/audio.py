"""Sound in: any file with an audio stream read as 16 kHz mono float, and the features the speech model uses.

`load_audio` reads wav, mp3, m4a/aac, flac, ogg/opus or the first audio stream of a video with PyAV (FFmpeg),
downmixed and resampled to `RATE`; the sound is placed on the timeline of the file's video stream when there is
one (a track that starts late gets leading silence), so that landmarks of frame i at i / fps line up with it.
Bad input is an `AudioError` (an `InputError`: one line, exit code 2 at the command line): a missing, empty
or unreadable file, no audio stream, undecodable sound, or more than the `audio_seconds` limit (checked from the
container's duration before decoding, and again while decoding for files that do not state it).

Features: log-mel energies, `N_MELS` bands from 60 to 7600 Hz, a 25 ms Hann window every `HOP` samples
(10 ms: `FEATURE_RATE` frames/s), frame t centred on t * 10 ms; natural log with a floor (digital silence is
-11.5, not -inf). `loudness_db`: the RMS level of the same frames in dBFS (the silence gate and the loudness
baseline of the evaluation).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .. import limits
from ..errors import InputError
from ..paths import input_file

RATE = 16_000  # Hz, the speech model's sample rate
HOP = 160  # samples: 10 ms
WINDOW = 400  # samples: 25 ms
N_FFT = 512
N_MELS = 40
FMIN, FMAX = 60.0, 7600.0
FEATURE_RATE = RATE / HOP  # 100 frames/s
LOG_FLOOR = 1e-5  # energy floor of the log-mel features
SILENCE_DB = -55.0  # dBFS: frames quieter than this count as silence (the mouth rests)


class AudioError(InputError):
    """Sound that cannot be used; the message says why and what to give instead."""


@dataclass
class Audio:
    """Mono float32 samples in [-1, 1] at `rate`, from `source` (a path, or "espeak-ng" for --say)."""

    samples: np.ndarray
    rate: int
    source: str

    @property
    def seconds(self) -> float:
        return len(self.samples) / float(self.rate)


def load_audio(path: str | os.PathLike, rate: int = RATE, *, what: str = "audio") -> Audio:
    """The first audio stream of `path` as mono float32 at `rate` (module docstring)."""
    import av

    path = input_file(path, what)
    if path.stat().st_size == 0:
        raise AudioError(f"{what} {path}: the file is empty (0 bytes); give a recording (wav, mp3, m4a) or a video "
                         "with sound")
    limit = limits.get("audio_seconds")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError) as err:
        raise AudioError(f"{what} {path}: not a readable audio or video file ({_reason(err)}); give wav, mp3, m4a, "
                         "flac, ogg or a video with a sound track") from None
    with container:
        if not container.streams.audio:
            kind = "a video without a sound track" if container.streams.video else "no audio stream"
            raise AudioError(f"{what} {path}: {kind}; give a recording of speech, or a video that has its sound")
        stream = container.streams.audio[0]
        if container.duration is not None:
            limits.check("audio_seconds", round(container.duration / 1e6, 1), f"{what} {path}: seconds of sound")
        start = _start_on_video_timeline(container, stream)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        pieces, count = [], 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
                    count += out.samples
                if count > (limit + 1) * rate:
                    limits.check("audio_seconds", round(count / rate, 1), f"{what} {path}: seconds of sound")
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().reshape(-1))
        except av.FFmpegError as err:
            if not pieces:
                raise AudioError(f"{what} {path}: the sound cannot be decoded ({_reason(err)}); damaged file?") from None
    samples = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
    if samples.size < rate // 10:
        raise AudioError(f"{what} {path}: less than 0.1 s of sound; give a recording of at least a word")
    if not np.isfinite(samples).all():
        raise AudioError(f"{what} {path}: the sound decodes to non-finite samples; damaged file?")
    lead = int(round(start * rate))
    if lead > 0:
        samples = np.concatenate([np.zeros(lead, np.float32), samples])
    elif lead < 0:
        samples = samples[-lead:]
    return Audio(np.clip(samples, -1.0, 1.0), rate, str(path))


def _start_on_video_timeline(container, stream) -> float:
    """Seconds from the video stream's first frame to the audio stream's first sample (0 without video, or
    when a start time is missing)."""
    def start(s) -> float | None:
        return None if s.start_time is None or s.time_base is None else float(s.start_time * s.time_base)

    a = start(stream)
    v = start(container.streams.video[0]) if container.streams.video else None
    if a is None or v is None or not math.isfinite(a - v) or abs(a - v) > 10.0:
        return 0.0
    return a - v


def _reason(err: Exception) -> str:
    text = str(err).split(":")[-1].strip() if str(err) else type(err).__name__
    return text or type(err).__name__


def check_audio_path(path: str | os.PathLike, what: str = "--audio") -> Path:
    """The audio argument before any slow work: an existing, non-empty regular file."""
    p = input_file(path, what)
    if p.stat().st_size == 0:
        raise AudioError(f"{what} {p}: the file is empty (0 bytes); give a recording (wav, mp3, m4a) or a video "
                         "with sound")
    return p


# --- features -------------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def mel_matrix(rate: int = RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = FMIN,
               fmax: float = FMAX) -> np.ndarray:
    """(n_mels, n_fft//2+1) triangular HTK-mel filters, each of unit area (Slaney-style normalisation)."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(min(fmax, rate / 2)), n_mels + 2))
    bins = np.linspace(0.0, rate / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = np.maximum(0.0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)))
    return (tri * (2.0 / (hi - lo))).astype(np.float32)


def frame_count(n_samples: int) -> int:
    """Feature frames for `n_samples` samples: one per HOP, centred (frame t at t * HOP)."""
    return n_samples // HOP + 1


def log_mel(samples):
    """Log-mel features of float samples (N,) or (B,N) (numpy or torch) -> torch (n_mels, T) or (B, n_mels, T),
    T = `frame_count(N)` (module docstring)."""
    import torch

    x = torch.as_tensor(np.asarray(samples, np.float32) if not torch.is_tensor(samples) else samples,
                        dtype=torch.float32)
    single = x.dim() == 1
    if single:
        x = x[None]
    window = torch.hann_window(WINDOW, periodic=True, dtype=torch.float32)
    spec = torch.stft(x, N_FFT, hop_length=HOP, win_length=WINDOW, window=window, center=True, pad_mode="constant",
                      return_complex=True)
    power = spec.real ** 2 + spec.imag ** 2  # B, F, T
    mel = torch.einsum("mf,bft->bmt", torch.from_numpy(mel_matrix()), power)
    out = torch.log(mel.clamp_min(LOG_FLOOR))
    return out[0] if single else out


def loudness_db(samples: np.ndarray) -> np.ndarray:
    """(T,) RMS level in dBFS of the feature frames of samples (N,) (25 ms around t * 10 ms; -120 for zeros)."""
    x = np.asarray(samples, np.float64)
    t = frame_count(len(x))
    padded = np.pad(x, (WINDOW // 2, WINDOW // 2 + HOP))
    c = np.concatenate([[0.0], np.cumsum(padded ** 2)])
    starts = np.arange(t) * HOP
    energy = (c[starts + WINDOW] - c[starts]) / WINDOW
    return (10.0 * np.log10(np.maximum(energy, 1e-12))).astype(np.float32)


def at_times(values: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Per-feature-frame values (T, ...) linearly interpolated at `times` seconds (clamped to the ends)."""
    v = np.asarray(values, np.float32)
    pos = np.clip(np.asarray(times, np.float64) * FEATURE_RATE, 0, len(v) - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, len(v) - 1)
    w = (pos - i0).reshape((-1,) + (1,) * (v.ndim - 1))
    return (v[i0] * (1 - w) + v[i1] * w).astype(np.float32)

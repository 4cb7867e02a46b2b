"""Speech as a driver: `speech_driver(audio, model, head)` -> a `DriverSequence` for the puppeteering stage.

What moves what (the choice this release makes): the **mouth and chin** come from the sound (`AudioToMotion`, 0.2 s
of look-ahead); the **head, blinks and brows** come from a head sequence: the built-in `idle` motion by default
(small slow turns and nods, blinks every few seconds), or a driver video / landmark file (`animate --audio A
--driver V`: V's head and eyes, the mouth from A). The motion is placed on the head's landmarks relative to the
head's most neutral frame (`speech.motion.place_motion`); adaptation to the avatar's face is then the same as for
any driver. A head sequence shorter than the sound plays back and forth; a longer one is cut.

Silence rests the mouth: feature frames quieter than `audio.SILENCE_DB` (with a 6 dB ramp above it, smoothed over
50 ms) scale the motion to zero, so a pause, a file of digital silence or a muted stretch keeps the lips closed
whatever the network makes of it.

`say(text)` speaks a sentence with espeak-ng when the system has it (`--say`); it is never required.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..driver import DriverSequence
from ..landmarks.masks import neutral_frame
from .audio import SILENCE_DB, Audio, AudioError, at_times, load_audio, loudness_db
from .model_io import SpeechModel, predict_motion
from .motion import place_motion

MAX_SAY_CHARS = 2000


def silence_gate(samples: np.ndarray) -> np.ndarray:
    """(T,) in [0,1] per feature frame: 0 in silence, 1 in sound (module docstring)."""
    g = np.clip((loudness_db(samples) - SILENCE_DB) / 6.0, 0.0, 1.0)
    return np.convolve(np.pad(g, 2, mode="edge"), np.ones(5) / 5, mode="valid").astype(np.float32)


def motion_for_frames(model: SpeechModel, audio: Audio, fps: float) -> np.ndarray:
    """(F,P,2) the speech motion at video frames i / fps covering the whole sound (F = ceil(seconds * fps))."""
    motion = predict_motion(model, audio.samples) * silence_gate(audio.samples)[:, None, None]
    frames = max(1, int(np.ceil(audio.seconds * fps - 1e-6)))
    return at_times(motion, np.arange(frames) / fps)


def _back_and_forth(n_have: int, n_want: int) -> np.ndarray:
    """Indices 0..n_have-1 played forwards, backwards, forwards... for n_want frames."""
    if n_have <= 1:
        return np.zeros(n_want, int)
    period = 2 * (n_have - 1)
    k = np.arange(n_want) % period
    return np.where(k < n_have, k, period - k)


def speech_driver(audio: Audio, model: SpeechModel, head: DriverSequence) -> DriverSequence:
    """The head's sequence with its mouth and chin driven by `audio` (module docstring), as long as the sound,
    carrying the sound (written with the video)."""
    motion = motion_for_frames(model, audio, head.fps)
    idx = _back_and_forth(len(head), len(motion))
    points = head.driver_points[idx]
    reference = points[neutral_frame(points)]
    spoken = place_motion(points, reference, motion)
    warnings = list(head.warnings)
    if len(head) < len(motion) and head.kind != "motion":
        warnings.append(f"the head driver has {len(head) / head.fps:.1f} s and the sound {audio.seconds:.1f} s: "
                        "the head's motion plays back and forth")
    return dataclasses.replace(head, points=spoken, driver_points=spoken.copy(), kind="speech",
                               source=f"{audio.source} (head: {head.source})", audio=Path(audio.source),
                               transform=None, followed=False, warnings=warnings,
                               lost_frames=0 if head.kind == "motion" else head.lost_frames,
                               iris=None if head.iris is None else head.iris[idx])


def say(text: str, folder: str | Path) -> Path:
    """A wav of `text` spoken by espeak-ng, written in `folder`; AudioError when espeak-ng is missing or fails."""
    text = (text or "").strip()
    if not text:
        raise AudioError("--say: give the text to speak")
    if len(text) > MAX_SAY_CHARS:
        raise AudioError(f"--say: {len(text)} characters; at most {MAX_SAY_CHARS} (use --audio with a recording for "
                         "longer speech)")
    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    if exe is None:
        raise AudioError("--say needs espeak-ng, which this system does not have (apt-get install espeak-ng); or "
                         "give a recording with --audio")
    out = Path(tempfile.mkdtemp(prefix="say-", dir=folder)) / "say.wav"
    try:
        subprocess.run([exe, "-w", str(out), "--", text], check=True, capture_output=True, timeout=120)
    except (subprocess.SubprocessError, OSError) as err:
        raise AudioError(f"--say: espeak-ng failed ({err})") from None
    return out


__all__ = ["speech_driver", "say", "silence_gate", "motion_for_frames", "load_audio"]

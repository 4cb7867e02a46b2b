"""Pictures of the speech evaluation (`speech/evaluate.py`): opening curves and contact sheets, labelled synthetic."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .. import media, provenance
from ..atomic import atomic_path
from ..data.crop import CropTransform, clip_crop
from ..data.video import even_indices, read_frames
from ..landmarks.masks import neutral_frame
from .motion import MOUTH, motion_opening, place_motion

AVATAR_PHOTO = "photos/debian_skimage_astronaut.png"
AVATAR_MODEL = "tps"  # the shipped renderer that keeps the person (FF, no fine-tuning)
TILE = 192
COLUMNS = 8


def opening_plot(pictures: dict, path: Path, clips: int = 6) -> Path:
    """Inner-lip opening over time for the first `clips` clips: the speaker, ours and the loudness baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(pictures)[:clips]
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 1.8 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        a = pictures[name][1]
        t = np.asarray(a["indices"]) / a["fps"]
        real = np.where(a["ok"], motion_opening(a["real"]), np.nan)
        ax.plot(t, real, color="black", lw=1.4, label="speaker (tracked)")
        ax.plot(t, motion_opening(a["ours"]), color="tab:green", lw=1.1, label="ours (from the sound)")
        ax.plot(t, motion_opening(a["loud"]), color="tab:orange", lw=0.9, ls="--", label="(a) loudness")
        ax.set_title(name, fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
        ax.set_ylabel("opening", fontsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("seconds", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, metadata={"Comment": "synthetic: talking-heads speech evaluation"})
    plt.close(fig)
    return path


def _dots(image: np.ndarray, points: np.ndarray, colour: tuple[int, int, int]) -> None:
    for x, y in points:
        cv2.circle(image, (int(round(x)), int(round(y))), 2, colour, -1, lineType=cv2.LINE_AA)


def contact_sheets(pictures: dict, out: Path, data_dir: Path, *, limit: int, speech_model=None,
                   progress: bool = True) -> list[Path]:
    """OUT/sheet_<clip>.jpg for the first `limit` clips (`speech.evaluate` docstring)."""
    from ..pipeline import TalkingHeadPipeline

    if limit <= 0 or not pictures:
        return []
    pipe = TalkingHeadPipeline.from_pretrained(AVATAR_MODEL)
    avatar = pipe.create_avatar([data_dir / AVATAR_PHOTO], progress=False)
    written = []
    for name in list(pictures)[:limit]:
        path, a = pictures[name]
        ok = a["ok"]
        rows = np.flatnonzero(ok)[even_indices(int(ok.sum()), COLUMNS)]
        frames_at = np.asarray(a["indices"])[rows]
        tf = clip_crop(a["points"][ok], a["frame_size"], TILE).transform
        ours_pts = place_motion(np.where(ok[:, None, None], a["points"], a["ref"]), a["ref"], a["ours"])
        crops = {i: tf.crop(f) for i, f in read_frames(path, sorted(set(int(i) for i in frames_at)))}
        speaker, marked = [], []
        for r, i in zip(rows, frames_at):
            crop = crops[int(i)]
            speaker.append(crop)
            m = crop.copy()
            _dots(m, tf.to_crop(a["points"][r][MOUTH]), (230, 40, 40))
            _dots(m, tf.to_crop(ours_pts[r][MOUTH]), (40, 230, 40))
            marked.append(m)
        seq = pipe.speech_driver(path, speech_model=speech_model)
        live = pipe.live(avatar, reference=seq.driver_points[neutral_frame(seq.driver_points)], fps=seq.fps,
                         crop=CropTransform(0, 0, seq.size, pipe.image_size, seq.size, seq.size))
        picks = [min(len(seq) - 1, int(round(i / a["fps"] * seq.fps))) for i in frames_at]
        rendered = live.render_batch([live.landmarks(seq.driver_points[j]).copy() for j in picks])
        sheet = media.contact_sheet([speaker, marked, rendered], TILE)
        target = out / f"sheet_{Path(name).stem}.jpg"
        with atomic_path(target) as tmp:
            tmp.write_bytes(provenance.labelled_jpeg(sheet, quality=85))
        written.append(target)
    return written

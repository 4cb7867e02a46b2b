"""Gaze transfer measured (issue 28): avatars of test-split photos driven by test-split clips, with the model's
irises shifted by the driver's gaze (`model.tps_iris`, and the pupils drawn where the model was trained with
them) and without (the baseline: the same model, or --baseline MODEL, whose photo's pupils stay where they
were), plus the `look` motion. The gaze of every rendered frame is measured with the iris locator and compared with the
driver's (`talking_heads.metrics.gaze`).

    .venv/bin/python scripts/gaze_eval.py src/talking_heads/assets/tps_model docs/gaze/eval --frames 64

Writes results.json and an eye-region contact sheet (driver | baseline | gaze) per pair.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np

from talking_heads.data.video import read_frames
from talking_heads.metrics.gaze import frame_gaze, gaze_agreement
from talking_heads.pipeline import TalkingHeadPipeline

PHOTOS = ("lia_vox_taylor.png", "gfpgan_Justin_Timberlake_crop.png", "lia_ted_subject2.png")
DRIVERS = ("xportrait_driving_video.mp4", "magicportrait_driving.mp4", "headgan_driving.mp4", "xnemo_driving_video.mp4")


def eye_strip(frame: np.ndarray, points: np.ndarray, size: int) -> np.ndarray:
    """The eye region of `frame` (enlarged to 384 x 132), around the eyes of `points` (68 or 70 rows, crop px
    at `size`)."""
    e = np.asarray(points[36:48], np.float64) * frame.shape[0] / size
    lo, hi = e.min(0), e.max(0)
    w = hi[0] - lo[0]
    cx, cy = (lo + hi) / 2
    x0, x1 = int(max(0, cx - 0.75 * w)), int(min(frame.shape[1], cx + 0.75 * w))
    y0, y1 = int(max(0, cy - 0.26 * w)), int(min(frame.shape[0], cy + 0.26 * w))
    return cv2.resize(frame[y0:y1, x0:x1], (384, 132), interpolation=cv2.INTER_CUBIC)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--baseline", default=None, help="model rendered without gaze (default: MODEL itself)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipes = {}
    for name, path, on in (("baseline", args.baseline or args.model, False), ("gaze", args.model, True)):
        base = TalkingHeadPipeline.from_pretrained(path)
        cfg = dataclasses.replace(base.cfg, model=dataclasses.replace(base.cfg.model, tps_iris=on),
                                  data=dataclasses.replace(base.cfg.data, pupils=on and base.cfg.data.pupils),
                                  inference=dataclasses.replace(base.cfg.inference, output_size=args.size))
        pipes[name] = TalkingHeadPipeline(cfg, base.networks, meta=base.meta)
    results, strips = [], []
    for photo in PHOTOS:
        avatars = {name: pipe.create_avatar(str(Path(args.data) / "photos" / photo)) for name, pipe in pipes.items()}
        for driver in DRIVERS + ("look",):
            path = driver if driver == "look" else str(Path(args.data) / "videos" / "test" / driver)
            seq = pipes["gaze"].load_driver(path, duration=4.0)
            seq = seq.head(args.frames)
            row = {"photo": photo, "driver": driver}
            rendered = {}
            for name, pipe in pipes.items():
                target = out / f"{Path(photo).stem}_{Path(driver).stem}_{name}.mp4"
                pipe.animate(avatars[name], seq, target, contact_sheet=False, progress=False)
                rendered[name] = [f for _, f in read_frames(target)]
                target.unlink()
            if driver == "look":
                from talking_heads.landmarks.iris import relative_gaze
                drv = np.stack([relative_gaze(p, c) for p, c in zip(seq.driver_points, seq.iris)])
            else:
                drv = frame_gaze(f for _, f in read_frames(path, list(range(len(seq)))))
            for name, frames in rendered.items():
                row[name] = gaze_agreement(frame_gaze(frames), drv)
            results.append(row)
            print(json.dumps(row))
            picks = np.linspace(0, len(seq) - 1, 4).round().astype(int)
            drv_frames = [p for _, p in zip(range(len(seq)), seq.panels(args.size))]
            face = avatars["gaze"].face  # the avatar's eyes stay about where its photo's are
            strips.append(np.concatenate([np.concatenate(
                [eye_strip(drv_frames[i], seq.driver_points[i], seq.size),
                 eye_strip(rendered["baseline"][i], face, seq.size),
                 eye_strip(rendered["gaze"][i], face, seq.size)], 0) for i in picks], 1))
    summary = {}
    for name in pipes:
        rows = [r[name] for r in results if r[name]["frames"]]
        summary[name] = {k: float(np.nanmean([r[k] for r in rows])) for k in ("error", "error_centred", "corr_x",
                                                                              "corr_y")}
        moving = [r[name] for r in results if r[name]["frames"] and r["gaze"]["driver_std_x"] >= 0.03]
        summary[name]["corr_x_where_driver_looks_around"] = float(np.nanmean([r["corr_x"] for r in moving])) \
            if moving else float("nan")
    (out / "results.json").write_text(json.dumps({"summary": summary, "pairs": results}, indent=1))
    cv2.imwrite(str(out / "eyes_sheet.jpg"), cv2.cvtColor(np.concatenate(strips, 0), cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

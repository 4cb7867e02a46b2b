"""Self-reenactment of test-split people, to look at and to compare two versions of the code: for each clip, an
FF avatar from its first frame (T = 1), driven by the landmarks of frames spread over the same clip, each frame
in its own head crop. Writes, into OUT:
- sheet.png: one row per person: source | for the frames with the mouth most closed, most open and the largest
  head turn: real crop, rendered (at the output size a user sees);
- metrics.json: per person and overall, SSIM and PSNR against the real frame, and, from the 68 points dlib finds
  again on the rendered frame, the landmark error (mean point distance / inter-ocular distance after removing
  position and scale) and the correlation of mouth opening with the real frames' (none of these is optimised
  by FF: no training runs here);
- frames.npz: every rendered frame, to compare two trees bit for bit.

    python scripts/selfreenact_check.py OUT [--clips 4] [--frames 16] [--model tps] [--size 512]
    PYTHONPATH=../before/src python scripts/selfreenact_check.py OUT_BEFORE     # the same on an older tree
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from talking_heads import media, metrics
from talking_heads.data.video import even_indices, probe, read_frames
from talking_heads.demo import default_data_dir
from talking_heads.landmarks.iris import place_gaze, with_iris
from talking_heads.metrics.gaze import frame_gaze, gaze_agreement
from talking_heads.pipeline import TalkingHeadPipeline

MOUTH = (62, 66)  # inner lips, upper and lower middle
EYES = (36, 45)  # outer eye corners


def test_clips(n: int) -> list[Path]:
    """The first clip of each of `n` test-split people (manifest order)."""
    data = default_data_dir()  # $TALKING_HEADS_DATA or ../shared/data
    if data is None:
        raise SystemExit("no footage: put the shared data beside the checkout or set TALKING_HEADS_DATA")
    seen, out = set(), []
    with open(data / "manifest.csv") as f:
        for row in csv.DictReader(f):
            if row["split"] == "test" and row["kind"] == "video" and row["identity"] not in seen:
                seen.add(row["identity"])
                out.append(data / row["path"])
    return out[:n]


def normalised(points: np.ndarray) -> np.ndarray:
    """(68,2) without position and scale: centred, divided by the inter-ocular distance."""
    p = points - points.mean(0)
    return p / np.linalg.norm(points[EYES[0]] - points[EYES[1]])


def mouth_opening(points: np.ndarray) -> float:
    return float(normalised(points)[MOUTH[1], 1] - normalised(points)[MOUTH[0], 1])


def yaw(points: np.ndarray) -> float:
    """Nose tip's horizontal offset from the eye corners' midpoint, in inter-ocular distances."""
    n = normalised(points)
    return float(abs(n[30, 0] - (n[EYES[0], 0] + n[EYES[1], 0]) / 2))


def person(pipe, clip: Path, frames: int, ssim, psnr) -> dict:
    n = probe(clip).num_frames
    images = dict(read_frames(clip, even_indices(n, frames + 1)))
    order = sorted(images)
    avatar = pipe.create_avatar(images[order[0]], progress=False)
    real, fake, real_pts, fake_pts = [], [], [], []
    for i in order[1:]:
        crop = pipe.detect_and_crop(images[i])[0]
        points = crop.landmarks
        if crop.iris is not None:  # the frame's own gaze (models that render gaze; an unseen iris: the photo's)
            seen = np.isfinite(crop.iris).all(1, keepdims=True)
            points = with_iris(points, np.where(seen, crop.iris, place_gaze(points, avatar.rest_gaze)))
        out = pipe.render_frames(avatar, points[None].astype(np.float32))[0]
        real.append(media.resize(crop.image, out.shape[0]))
        fake.append(out)
        real_pts.append(crop.landmarks)
        found = pipe.detect_and_crop(out)[0]
        fake_pts.append(found.landmarks)
    real, fake = np.stack(real), np.stack(fake)
    m_real = np.array([mouth_opening(p) for p in real_pts])
    m_fake = np.array([mouth_opening(p) for p in fake_pts])
    lm = [float(np.linalg.norm(normalised(a) - normalised(b), axis=1).mean()) for a, b in zip(real_pts, fake_pts)]
    picks = {"mouth closed": int(np.argmin(m_real)), "mouth open": int(np.argmax(m_real)),
             "head turn": int(np.argmax([yaw(p) for p in real_pts]))}
    gaze = gaze_agreement(frame_gaze(fake), frame_gaze(real))  # not optimised by anything either
    return {"clip": clip.name, "ssim": float(np.nanmean(ssim.per_frame(fake, real))),
            "gaze_error": gaze["error"], "gaze_corr_x": gaze["corr_x"],
            "psnr": float(np.nanmean(psnr.per_frame(fake, real))), "landmark_error": float(np.mean(lm)),
            "mouth_corr": float(np.corrcoef(m_real, m_fake)[0, 1]),
            "row": [avatar.thumbnail] + [im for k in picks.values() for im in (real[k], fake[k])],
            "picks": picks, "fake": fake}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--model", default=None, help="model directory or shipped name (default: the sample model)")
    ap.add_argument("--size", type=int, default=None, help="frame size in px (default: the model's automatic one)")
    args = ap.parse_args(argv)
    pipe = TalkingHeadPipeline.from_pretrained(args.model)
    if args.size:
        pipe.cfg.inference.output_size = args.size
    ssim, psnr = metrics.create("ssim", pipe.cfg.eval), metrics.create("psnr", pipe.cfg.eval)
    rows = [person(pipe, clip, args.frames, ssim, psnr) for clip in test_clips(args.clips)]
    args.out.mkdir(parents=True, exist_ok=True)
    tile = rows[0]["fake"].shape[1]
    media.write_png(args.out / "sheet.png", media.contact_sheet([r.pop("row") for r in rows], tile))
    np.savez_compressed(args.out / "frames.npz", **{r["clip"]: r.pop("fake") for r in rows})
    keys = ("ssim", "psnr", "landmark_error", "mouth_corr", "gaze_error", "gaze_corr_x")
    summary = {"people": rows, "mean": {k: float(np.nanmean([r[k] for r in rows])) for k in keys}}
    (args.out / "metrics.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["mean"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

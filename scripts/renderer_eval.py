"""Renderers side by side on test-split people, at the output size a user sees (issue: the TPS renderer).

For each model given (default: the shipped sample model and, with --tps, a TPS-renderer model), on the first
clip of each of N test-split people:

- self-reenactment, T = 1 and 8 (--shots): an FF avatar from the clip's first frame (T = 1) or from 8 frames
  spread over it, driven by the landmarks of other frames spread over the same clip (each in its own head crop), compared with the real crop at the same size: SSIM, PSNR,
  sharpness (variance of the Laplacian of the face, rendered / real: metrics/sharpness.py), landmark error
  (the 68 points dlib finds again on the rendered frame against the driving ones, mean distance over the
  inter-ocular distance after removing position and scale), mouth-opening correlation with the real frames;
- cross-identity: person i's avatar (FF, one photo) driven by person i+1's clip with landmark adaptation (the
  reference: the driver's most neutral frame, as `animate` picks it): dlib distance of the rendered frames to
  the photo and the share under 0.6 (verified), the driver's leakage (distance to the driver's own face),
  mouth-opening correlation with the driver and the amplitude ratio (standard deviation of the rendered
  opening over the driver's, both in inter-ocular distances), landmark error against the adapted landmarks;
- contact sheets at the output size: per person, the driver frame with the mouth most open | each model's
  result | each model's mouth enlarged.

Nothing here is optimised by FF (no training runs); the identity of the TPS renderer is partly by
construction (its pixels are the photo's). Writes OUT/metrics.json, OUT/table.md, OUT/cross_sheet.png,
OUT/self_sheet.png.

    python scripts/renderer_eval.py OUT --tps runs/tps_s1/model [--people 8] [--frames 16] [--size 512]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from talking_heads import media, metrics
from talking_heads.data.video import even_indices, probe, read_frames
from talking_heads.identity import _one_face
from talking_heads.landmarks.adaptation import adapt_landmarks
from talking_heads.landmarks.masks import neutral_frame
from talking_heads.metrics.csim import FaceDescriptor
from talking_heads.pipeline import TalkingHeadPipeline, sample_model_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from selfreenact_check import mouth_opening as opening, normalised, test_clips  # noqa: E402 (the same people and measures)

SAME_PERSON = 0.6
SELF_KEYS = ("ssim", "psnr", "sharpness", "landmark_error", "mouth_corr", "identity", "detected")
CROSS_KEYS = ("identity", "verified", "driver_distance", "mouth_corr", "mouth_amplitude", "landmark_error", "detected")


def landmark_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(normalised(a) - normalised(b), axis=1).mean())


class Faces:
    """dlib on rendered frames: landmarks (in the frame's px) and descriptors; None where no single face."""

    def __init__(self):
        self.net = FaceDescriptor()

    def find(self, image: np.ndarray):
        try:
            points, _ = _one_face("frame", image)
        except Exception:  # noqa: BLE001 - a frame without one clear face counts as a failure, not a crash
            return None
        return points, self.net.describe(image, points)


def clip_frames(clip: Path, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(shots, driving frames): 2n frames spread over the clip, alternately; never the same frame in both."""
    count = probe(clip).num_frames
    images = [img for _, img in read_frames(clip, even_indices(count, 2 * n))]
    return images[0::2], images[1::2]


def pick_shots(shots: list[np.ndarray], t: int) -> list[np.ndarray]:
    """T shots spread over the clip's; the first is always the clip's first frame (the T = 1 photo)."""
    return [shots[i] for i in even_indices(len(shots), t)]


def mouth_zoom(image: np.ndarray, points: np.ndarray | None, size: int) -> np.ndarray:
    """The mouth region (points in the image's px) enlarged to size x size."""
    if points is None:
        return np.zeros((size, size, 3), np.uint8)
    m = points[48:68]
    c, half = m.mean(0), max(8.0, float(np.ptp(m, axis=0).max()) * 0.9)
    x0, y0 = (c - half).astype(int)
    x1, y1 = (c + half).astype(int)
    h, w = image.shape[:2]
    crop = image[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
    return media.resize(crop, size) if crop.size else np.zeros((size, size, 3), np.uint8)


def self_reenact(pipe, shots, frames, faces, ssim, psnr, sharp) -> dict:
    avatar = pipe.create_avatar(shots if len(shots) > 1 else shots[0], progress=False)
    real, fake, real_pts, fake_pts, ids = [], [], [], [], []
    photo = faces.find(shots[0])
    for frame in frames:
        crop = pipe.detect_and_crop(frame)[0]
        out = pipe.render_frames(avatar, crop.landmarks[None].astype(np.float32))[0]
        real.append(crop.transform.resized(out.shape[0]).crop(frame))
        fake.append(out)
        real_pts.append(crop.landmarks * (out.shape[0] / pipe.image_size))
        found = faces.find(out)
        fake_pts.append(None if found is None else found[0])
        ids.append(None if found is None or photo is None else float(np.linalg.norm(found[1] - photo[1])))
    real, fake = np.stack(real), np.stack(fake)
    ok = [i for i, p in enumerate(fake_pts) if p is not None]
    m_real = np.array([opening(real_pts[i]) for i in ok])
    m_fake = np.array([opening(fake_pts[i]) for i in ok])
    pts = np.stack(real_pts)
    return {"ssim": float(np.nanmean(ssim.per_frame(fake, real))), "psnr": float(np.nanmean(psnr.per_frame(fake, real))),
            "sharpness": float(np.nanmean(sharp.per_frame(fake, real, pts))),
            "landmark_error": float(np.mean([landmark_error(real_pts[i], fake_pts[i]) for i in ok])) if ok else None,
            "mouth_corr": float(np.corrcoef(m_real, m_fake)[0, 1]) if len(ok) > 2 else None,
            "identity": float(np.mean([d for d in ids if d is not None])) if any(d is not None for d in ids) else None,
            "detected": len(ok) / len(fake), "size": int(fake.shape[1]),
            "_pick": (real[int(np.argmax([opening(p) for p in real_pts]))], fake[int(np.argmax([opening(p) for p in real_pts]))])}


def cross(pipe, photo_frame, driver_frames, faces) -> dict:
    avatar = pipe.create_avatar(photo_frame, progress=False)
    photo, driver_id = faces.find(photo_frame), None
    crops = [pipe.detect_and_crop(f)[0] for f in driver_frames]
    drv = np.stack([c.landmarks for c in crops]).astype(np.float32)
    ref = neutral_frame(drv)
    adapted = adapt_landmarks(drv, avatar.face, ref)
    descs = [faces.find(f) for f in driver_frames]
    driver_desc = np.mean([d[1] for d in descs if d is not None], axis=0)
    out = [pipe.render_frames(avatar, p[None])[0] for p in adapted]
    scale = out[0].shape[0] / pipe.image_size
    found = [faces.find(o) for o in out]
    ok = [i for i, f in enumerate(found) if f is not None]
    dist = [float(np.linalg.norm(found[i][1] - photo[1])) for i in ok]
    leak = [float(np.linalg.norm(found[i][1] - driver_desc)) for i in ok]
    m_drv = np.array([opening(drv[i]) for i in ok])
    m_out = np.array([opening(found[i][0]) for i in ok])
    best = int(np.argmax([opening(p) for p in drv]))
    return {"identity": float(np.mean(dist)) if dist else None,
            "verified": float(np.mean([d < SAME_PERSON for d in dist])) if dist else 0.0,
            "driver_distance": float(np.mean(leak)) if leak else None,
            "mouth_corr": float(np.corrcoef(m_drv, m_out)[0, 1]) if len(ok) > 2 else None,
            "mouth_amplitude": float(np.std(m_out) / max(np.std(m_drv), 1e-9)) if len(ok) > 2 else None,
            "landmark_error": float(np.mean([landmark_error(adapted[i] * scale, found[i][0]) for i in ok])) if ok else None,
            "detected": len(ok) / len(out),
            "_pick": (crops[best].transform.resized(out[best].shape[0]).crop(driver_frames[best]), out[best],
                      found[best][0] if found[best] is not None else None)}


def mean(rows: list[dict], key: str):
    vals = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return float(np.mean(vals)) if vals else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--tps", type=Path, default=None, help="a TPS-renderer model directory to compare")
    ap.add_argument("--people", type=int, default=8)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 8], help="few-shot sizes T of self-reenactment")
    args = ap.parse_args(argv)
    models = {"v2 (warp, shipped)": sample_model_dir()}
    if args.tps:
        models["tps"] = args.tps
    clips = test_clips(args.people)
    frames = {c: clip_frames(c, args.frames) for c in clips}
    faces = Faces()
    report: dict = {"people": [c.name for c in clips], "size": args.size, "frames": args.frames, "models": {}}
    self_tiles, cross_tiles = [], []
    for name, path in models.items():
        pipe = TalkingHeadPipeline.from_pretrained(path)
        pipe.cfg.inference.output_size = args.size
        ssim, psnr = metrics.create("ssim", pipe.cfg.eval), metrics.create("psnr", pipe.cfg.eval)
        sharp = metrics.create("sharpness", pipe.cfg.eval)
        entry = {"generator": pipe.cfg.model.generator, "self": {}, "self_mean": {}}
        for t in args.shots:
            selfs = [self_reenact(pipe, pick_shots(frames[c][0], t), frames[c][1], faces, ssim, psnr, sharp)
                     for c in clips]
            if t == args.shots[0]:
                self_tiles.append([r["_pick"] for r in selfs])
            for r in selfs:
                r.pop("_pick")
            entry["self"][t] = selfs
            entry["self_mean"][t] = {k: mean(selfs, k) for k in SELF_KEYS}
        crosses = [cross(pipe, frames[c][0][0], frames[clips[(i + 1) % len(clips)]][1], faces)
                   for i, c in enumerate(clips)]
        cross_tiles.append([r.pop("_pick") for r in crosses])
        entry.update(cross=crosses, cross_mean={k: mean(crosses, k) for k in CROSS_KEYS})
        report["models"][name] = entry
        print(name, json.dumps(entry["self_mean"]), json.dumps(entry["cross_mean"]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    tile = args.size
    rows = []
    for p in range(len(clips)):  # driver | each model | each model's mouth
        driver = cross_tiles[0][p][0]
        row = [driver] + [m[p][1] for m in cross_tiles] + [mouth_zoom(m[p][1], m[p][2], tile) for m in cross_tiles]
        rows.append(row)
    media.write_png(args.out / "cross_sheet.png", media.contact_sheet(rows, tile // 2))
    rows = [[self_tiles[0][p][0]] + [m[p][1] for m in self_tiles] for p in range(len(clips))]
    media.write_png(args.out / "self_sheet.png", media.contact_sheet(rows, tile // 2))
    (args.out / "metrics.json").write_text(json.dumps(report, indent=1))
    (args.out / "table.md").write_text(table(report))
    print((args.out / "table.md").read_text())
    return 0


def table(report: dict) -> str:
    f = lambda v, d=3: "n/a" if v is None else f"{v:.{d}f}"
    lines = [f"Test split, {len(report['people'])} people ({', '.join(report['people'])}), {report['frames']} driving "
             f"frames each, {report['size']} px, FF avatars.", "",
             "Self-reenactment (the avatar from T frames of the clip, driven by other frames of it):", "",
             "| model | generator | T | SSIM | PSNR | sharpness | landmark err | mouth r | identity (dlib distance to "
             "the first shot) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, m in report["models"].items():
        for t, s in m["self_mean"].items():
            lines.append(f"| {name} | {m['generator']} | {t} | {f(s['ssim'])} | {f(s['psnr'], 1)} | "
                         f"{f(s['sharpness'], 2)} | {f(s['landmark_error'])} | {f(s['mouth_corr'], 2)} | "
                         f"{f(s['identity'], 2)} |")
    lines += ["", "Cross-identity (person i's first frame as the photo, T = 1, driven by person i+1's clip, landmark "
              "adaptation on):", "", "| model | generator | identity (verified) | driver distance | mouth r | "
              "amplitude | landmark err |", "|---|---|---|---|---|---|---|"]
    for name, m in report["models"].items():
        c = m["cross_mean"]
        lines.append(f"| {name} | {m['generator']} | {f(c['identity'], 2)} ({100 * (c['verified'] or 0):.0f} %) | "
                     f"{f(c['driver_distance'], 2)} | {f(c['mouth_corr'], 2)} | {f(c['mouth_amplitude'], 2)} | "
                     f"{f(c['landmark_error'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())

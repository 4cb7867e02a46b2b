"""What issue 30's live-stage changes do to the picture: test-split people driven through `LiveStage` with
adaptation (as `animate`, the receiver and the Live tab drive them), before and after `follow_yaw`.

For each clip: an FF avatar of its first frame (sample model), driven by the clip's own frames' landmarks
(in frame pixels, as a camera gives them), with a reference frame *turned away* (the clip's most turned frame
of its first half: the case the issue saw) and, as a control, the clip's own first frame. Rendered frames are
compared with the real crops: SSIM and PSNR, landmark error and mouth-opening correlation from dlib's points
found again on the rendered frames (nothing here is optimised by any training), and the head turn (|yaw| of the
rendered face minus the real one's, degrees). Writes OUT/sheet.png (one row per person and reference: real |
before | after, for the frames with the mouth most closed, most open and the largest turn) and OUT/metrics.json.

    python scripts/live_adaptation_check.py OUT [--clips 4] [--frames 16]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np

import talking_heads.live as live_module
from talking_heads import media, metrics
from talking_heads.data.video import even_indices, probe, read_frames
from talking_heads.landmarks.yaw import clamp_yaw, estimate_yaw
from talking_heads.pipeline import TalkingHeadPipeline

_spec = importlib.util.spec_from_file_location("sr", Path(__file__).with_name("selfreenact_check.py"))
sr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sr)
CLIPS = ("pcavs_Audio_Source_00373.mp4", "styletalk_feifeili_clip2_short.mp4", "magicportrait_driving.mp4",
         "latentsync_demo2_video.mp4", "edtalk_mouth_source.mp4")


def before(points, face, driver, limit):  # the stage before issue 30: only the renderer's own limit
    return clamp_yaw(points, face, limit)


def drive(pipe, avatar, frames_px, size, reference, variant):
    live_module.follow_yaw = variant
    stage = pipe.live(avatar, reference=reference)
    return [stage.step(p, frame_size=size) for p in frames_px]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--frames", type=int, default=16)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = sr.default_data_dir()
    pipe = TalkingHeadPipeline.from_pretrained()
    ssim, psnr = metrics.create("ssim", pipe.cfg.eval), metrics.create("psnr", pipe.cfg.eval)
    after = live_module.follow_yaw
    rows, results = [], []
    for name in CLIPS:
        clip = data / "videos" / "test" / name
        n = probe(clip).num_frames
        images = dict(read_frames(clip, even_indices(n, args.frames + 1)))
        order = sorted(images)
        avatar = pipe.create_avatar(images[order[0]], progress=False)
        crops = [pipe.detect_and_crop(images[i])[0] for i in order[1:]]
        px = [c.transform.to_frame(c.landmarks) for c in crops]
        size = (images[order[0]].shape[1], images[order[0]].shape[0])
        yaws = estimate_yaw(np.stack(px))
        turned = int(np.argmax(np.abs(yaws[: len(px) // 2])))
        for ref_name, ref in (("first frame", pipe.detect_and_crop(images[order[0]])[0]), ("turned frame", None)):
            reference = ref.transform.to_frame(ref.landmarks) if ref is not None else px[turned]
            out = {}
            for label, variant in (("before", before), ("after", after)):
                fake = np.stack(drive(pipe, avatar, px, size, reference, variant))
                real = np.stack([media.resize(c.image, fake.shape[1]) for c in crops])
                found = [pipe.detect_and_crop(f)[0].landmarks for f in fake]
                m_real = np.array([sr.mouth_opening(c.landmarks) for c in crops])
                m_fake = np.array([sr.mouth_opening(p) for p in found])
                out[label] = {
                    "ssim": float(np.nanmean(ssim.per_frame(fake, real))),
                    "psnr": float(np.nanmean(psnr.per_frame(fake, real))),
                    "landmark_error": float(np.mean([np.linalg.norm(sr.normalised(c.landmarks) - sr.normalised(p),
                                                                    axis=1).mean() for c, p in zip(crops, found)])),
                    "mouth_corr": float(np.corrcoef(m_real, m_fake)[0, 1]),
                    "turn_excess_deg": float(np.max(np.abs(estimate_yaw(np.stack(found)))
                                                    - np.abs(estimate_yaw(np.stack([c.landmarks for c in crops]))))),
                    "fake": fake}
            picks = [int(np.argmin(m_real)), int(np.argmax(m_real)), int(np.argmax(np.abs(yaws)))]
            rows.append([avatar.thumbnail] + [im for k in picks for im in (real[k], out["before"]["fake"][k],
                                                                            out["after"]["fake"][k])])
            results.append({"clip": name, "reference": ref_name,
                            **{f"{lab}_{k}": round(v, 4) for lab in out for k, v in out[lab].items() if k != "fake"}})
            print(json.dumps(results[-1]), flush=True)
    live_module.follow_yaw = after
    tile = 256  # the size a user sees (the sample model renders 256 px)
    media.write_png(args.out / "sheet.png", media.contact_sheet(rows, tile))
    (args.out / "metrics.json").write_text(json.dumps(results, indent=1))
    for ref_name in ("first frame", "turned frame"):
        sel = [r for r in results if r["reference"] == ref_name]
        print(ref_name, {k: round(float(np.mean([r[k] for r in sel])), 4) for k in sel[0] if k not in ("clip", "reference")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Speech-driven frames against the real ones (docs/speech.md, "Against the real frames"): for test-split speakers,
a TPS avatar made from the clip itself (FF, one frame) is driven (a) by the clip's own tracked landmarks and (b) by
the clip's head with the mouth from its sound (`pipe.speech_driver(clip, head=clip)`); SSIM and PSNR of the
rendered frames against the real crops (whole crop and the mouth box), the landmark distance of the rendered mouth,
and a contact sheet (real | (a) | (b), mouth open and closed). Nothing here is what training optimises.

    .venv/bin/python scripts/speech_picture_check.py [--data ../shared/data] [--out docs/speech/frames_sheet.jpg]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from talking_heads import media, provenance
from talking_heads.atomic import atomic_path
from talking_heads.data.crop import CropTransform
from talking_heads.data.video import even_indices
from talking_heads.landmarks.adaptation import mouth_opening
from talking_heads.landmarks.masks import neutral_frame
from talking_heads.metrics.pixel import psnr
from talking_heads.metrics.ssim import ssim
from talking_heads.pipeline import TalkingHeadPipeline

CLIPS = ("pcavs_Audio_Source_00015.mp4", "headgan_driving.mp4", "styletalk_feifeili_clip1.mp4")
FRAMES = 12


def render(pipe, avatar, seq, picks):
    live = pipe.live(avatar, reference=seq.driver_points[neutral_frame(seq.driver_points)], fps=seq.fps,
                     crop=CropTransform(0, 0, seq.size, pipe.image_size, seq.size, seq.size))
    return np.stack(live.render_batch([live.landmarks(seq.driver_points[i]).copy() for i in picks])), live


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="docs/speech/frames_sheet.jpg")
    args = p.parse_args()
    pipe = TalkingHeadPipeline.from_pretrained("tps")
    rows, lines = [], []
    for name in CLIPS:
        path = Path(args.data) / "videos/test" / name
        seq = pipe.load_driver(str(path))
        spoken = pipe.speech_driver(path, head=seq)
        avatar = pipe.create_avatar([path], frames=1, progress=False)
        picks = even_indices(min(len(seq), len(spoken)), FRAMES)
        panels = list(seq.panels(pipe.frame_size(avatar)))
        real = np.stack([media.resize(panels[i], *(2 * [pipe.frame_size(avatar)])) for i in picks])
        a, _ = render(pipe, avatar, seq, picks)
        b, _ = render(pipe, avatar, spoken, picks)
        s = real.shape[1]
        box = (slice(int(0.55 * s), int(0.85 * s)), slice(int(0.3 * s), int(0.7 * s)))  # the mouth's region
        row = {}
        for label, fake in (("own landmarks", a), ("speech mouth", b)):
            row[label] = (float(np.mean(ssim(fake, real))), float(np.mean(psnr(fake, real))),
                          float(np.mean(ssim(fake[:, box[0], box[1]], real[:, box[0], box[1]]))))
        r_open = np.corrcoef(mouth_opening(seq.driver_points[picks]), mouth_opening(spoken.driver_points[picks]))[0, 1]
        lines.append(f"| {name} | " + " | ".join(f"{v[0]:.3f} / {v[1]:.2f} / {v[2]:.3f}" for v in row.values())
                     + f" | {r_open:.2f} |")
        order = np.argsort(mouth_opening(seq.driver_points[picks]))[[0, 1, -2, -1]]  # closed ... open
        rows += [list(real[order]) + list(a[order]) + list(b[order])]
    print("| clip | own landmarks: SSIM / PSNR / mouth SSIM | speech mouth: SSIM / PSNR / mouth SSIM "
          "| opening r (12 frames) |\n|---|---|---|---|")
    print("\n".join(lines))
    sheet = media.contact_sheet(rows, 160)
    with atomic_path(args.out) as tmp:
        tmp.write_bytes(provenance.labelled_jpeg(sheet, quality=85))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

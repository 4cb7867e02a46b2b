"""Measurements of the telepresence path (docs/benchmarks.md, "Telepresence"):

    python -m talking_heads.telepresence.bench --data ../shared/data --out reports/telepresence

1. Codec, on every test-split clip: the sender's own landmarks (tracked, cropped, One Euro smoothed or not, as
   `sender.LandmarkStream` does) through the codec at several steps, with and without the shape basis:
   bits per frame (all packet bytes, headers and key frames included), kbit/s at 25 fps and at the clip's
   rate, mean reconstruction error (px at the 256 px crop).
2. H.264 of the same 256 px head crops (PyAV libx264, CRF 23 and 35, yuv420p, the clip's rate): bitstream
   kbit/s, and the ratio to the landmark codec.
3. Rendering from decoded landmarks vs from the uncompressed ones (`pipeline.LiveStage`, the model given):
   the landmark error of the rendered frames (`metrics.landmark_error`) against the uncompressed path's
   driving landmarks, both paths, and their relative difference.
4. The sender's tracking + coding speed (frames/s, one process, unpaced).
Writes `telepresence_bench.json` and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from .codec import PREDICT_PREVIOUS, Basis, CropBox, LandmarkDecoder, LandmarkEncoder
from .settings import TelepresenceConfig

STEPS = (0.25, 0.5, 0.75, 1.0, 1.5)


def split_clips(data: Path) -> list[tuple[str, float]]:
    with open(data / "manifest.csv", newline="") as f:
        return [(r["path"], float(r["fps"])) for r in csv.DictReader(f) if r["split"] == "test" and r["kind"] == "video"]


def sender_track(path: Path, smooth: bool) -> dict:
    """What the sender would code for a clip: per frame crop points (or None), the boxes, the crops, timing."""
    from ..data.video import read_frames
    from .sender import FileSource, LandmarkStream

    src = FileSource(path, realtime=False)
    stream = LandmarkStream(src.fps, TelepresenceConfig(smooth=smooth))
    points, boxes, crops, t0 = [], [], [], time.perf_counter()
    for i, frame in read_frames(path):
        p = stream.landmarks(frame, i / src.fps)
        points.append(p)
        boxes.append(stream.box)
        crops.append(stream.crop.transform.crop(frame) if stream.crop.transform is not None else None)
    seconds = time.perf_counter() - t0
    return {"points": points, "boxes": boxes, "crops": crops, "fps": src.fps, "track_fps": len(points) / seconds}


def code(points, boxes, fps: float, basis: Basis, predictor: int, step: float) -> tuple[float, float, list]:
    """(bits per frame, mean error px over frames with a face, decoded points)."""
    enc = LandmarkEncoder(basis, fps=fps, step=step, predictor=predictor)
    dec = LandmarkDecoder(basis)
    bits, errors, decoded = 0, [], []
    for i, (p, box) in enumerate(zip(points, boxes)):
        packet = enc.encode(p, int(round(1000 * i / fps)), box or CropBox(0, 0, 256, 256))
        bits += 8 * len(packet)
        frame = dec.decode(packet)
        decoded.append(frame.points)
        if p is not None:
            errors.append(float(np.linalg.norm(frame.points - p, axis=1).mean()))
    return bits / len(points), float(np.mean(errors)) if errors else float("nan"), decoded


def h264_kbps(crops: list, fps: float, crf: int) -> float:
    import av

    from ..media import frame_rate

    frames = [c for c in crops if c is not None]
    import io

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=frame_rate(fps))
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.options = {"crf": str(crf)}
        size = 0
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                size += packet.size
                container.mux(packet)
        for packet in stream.encode():
            size += packet.size
            container.mux(packet)
    return size * 8 / (len(frames) / fps) / 1000


def render_comparison(pipe, avatar, track: dict, decoded: list, max_frames: int) -> tuple[float, float, int]:
    """Landmark error of frames rendered from the uncompressed and from the decoded points, against the
    uncompressed path's driving landmarks; (LE uncompressed, LE decoded, frames compared)."""
    from ..data.crop import CropTransform
    from ..metrics.landmark_error import landmark_errors

    def frame_px(p, box):
        return None if p is None else CropTransform(box.x0, box.y0, box.side, box.size, 0, 0).to_frame(p)

    live_u = pipe.live(avatar, fps=track["fps"])
    live_d = pipe.live(avatar, fps=track["fps"])
    imgs_u, imgs_d, targets = [], [], []
    for p, q, box in list(zip(track["points"], decoded, track["boxes"]))[:max_frames]:
        if p is None:
            continue
        imgs_u.append(live_u.step(frame_px(p, box)))
        targets.append(live_u.points * (pipe.output_size / pipe.image_size))
        imgs_d.append(live_d.step(frame_px(q, box)))
    le_u = landmark_errors(np.stack(imgs_u), np.stack(targets))
    le_d = landmark_errors(np.stack(imgs_d), np.stack(targets))
    both = np.isfinite(le_u) & np.isfinite(le_d)
    return float(le_u[both].mean()), float(le_d[both].mean()), int(both.sum())


def main(argv: list[str] | None = None) -> int:
    from ..machine import describe
    from .basis import load_basis

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="reports/telepresence")
    p.add_argument("--avatar", default=None, help="avatar directory for the rendering comparison (else none)")
    p.add_argument("--model", default=None, help="model directory of the avatar (default: the shipped one)")
    p.add_argument("--render-clips", type=int, default=4, help="clips in the rendering comparison")
    p.add_argument("--render-frames", type=int, default=60, help="frames per clip in the rendering comparison")
    args = p.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    basis = load_basis()
    rows, renders = [], []
    pipe = avatar = None
    if args.avatar:
        from ..pipeline import Avatar, TalkingHeadPipeline

        pipe = TalkingHeadPipeline.from_pretrained(args.model)
        avatar = Avatar.load(args.avatar, pipe)
    for n, (rel, _) in enumerate(split_clips(data)):
        for smooth in (True, False):
            track = sender_track(data / rel, smooth)
            row = {"clip": Path(rel).name, "smooth": smooth, "frames": len(track["points"]), "fps": track["fps"],
                   "no_face": sum(x is None for x in track["points"]), "track_fps": track["track_fps"]}
            for step in STEPS:
                for name, b, pred in (("basis", basis, 2 if smooth else 1), ("points", Basis.identity(),
                                                                             PREDICT_PREVIOUS)):
                    bits, err, decoded = code(track["points"], track["boxes"], track["fps"], b, pred, step)
                    row[f"{name}_{step}"] = {"bits_per_frame": bits, "kbps25": bits * 25 / 1000,
                                             "kbps": bits * track["fps"] / 1000, "error_px": err}
                    if (smooth and name == "basis" and step in (0.5, 1.5) and pipe is not None
                            and n < args.render_clips):
                        le_u, le_d, k = render_comparison(pipe, avatar, track, decoded, args.render_frames)
                        renders.append({"clip": row["clip"], "step": step, "le_uncompressed": le_u,
                                        "le_decoded": le_d, "relative": le_d / le_u - 1, "frames": k})
                        print(renders[-1], flush=True)
            if smooth:
                for crf in (23, 35):
                    row[f"h264_crf{crf}_kbps"] = h264_kbps(track["crops"], track["fps"], crf)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}), flush=True)
    result = {"machine": describe(), "rows": rows, "renders": renders, "command": "python -m "
              "talking_heads.telepresence.bench " + " ".join(argv or [])}
    (out / "telepresence_bench.json").write_text(json.dumps(result, indent=2, default=str))
    print(tables(result))
    return 0


def tables(result: dict) -> str:
    rows = result["rows"]
    lines = ["| clip | fps | frames | " + " | ".join(f"q={s}" for s in STEPS) + " | H.264 CRF 23 | CRF 35 |",
             "|---|---|---|" + "---|" * (len(STEPS) + 2)]
    for r in rows:
        if not r["smooth"]:
            continue
        cells = [f"{r[f'basis_{s}']['kbps25']:.2f} / {r[f'basis_{s}']['error_px']:.2f}" for s in STEPS]
        lines.append(f"| {r['clip'][:32]} | {r['fps']:g} | {r['frames']} | " + " | ".join(cells)
                     + f" | {r['h264_crf23_kbps']:.0f} | {r['h264_crf35_kbps']:.0f} |")
    lines.append("")
    for smooth in (True, False):
        for name in ("basis", "points"):
            sel = [r for r in rows if r["smooth"] == smooth]
            n = sum(r["frames"] for r in sel)
            cells = []
            for s in STEPS:
                bits = sum(r[f"{name}_{s}"]["bits_per_frame"] * r["frames"] for r in sel) / n
                err = sum(r[f"{name}_{s}"]["error_px"] * r["frames"] for r in sel) / n
                cells.append(f"{bits * 25 / 1000:.2f} / {err:.3f}")
            lines.append(f"| {'smoothed' if smooth else 'raw'} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""Measurements of the telepresence path:

    python -m talking_heads.telepresence.bench --data ../shared/data --out reports/telepresence

1. Codec, on every test-split clip: the sender's own landmarks (tracked, cropped and smoothed as
   `sender.LandmarkStream` does: on the basis's motion coefficients (the default), on the points (v1's
   default), or not at all) through the codec at several steps: packet format v2 (damped-trend predictors,
   1-byte delta header) and v1 on the shape basis, and point by point: bits per frame (all packet bytes,
   headers and key frames included), kbit/s at 25 fps and at the clip's rate, mean reconstruction error (px
   at the 256 px crop, against what the codec was given).
2. H.264 of the same 256 px head crops (PyAV libx264, CRF 23 and 35, yuv420p, the clip's rate): bitstream
   kbit/s, and the ratio to the landmark codec.
3. Rendering from decoded landmarks vs from the uncompressed ones (`live.LiveStage`, the model given):
   the landmark error of the rendered frames (`metrics.landmark_error`) against the uncompressed path's
   driving landmarks, both paths, and their relative difference; the uncompressed path is v1's (points One
   Euro filtered, no codec), so a changed sender filter is judged as well as the codec.
4. The sender's tracking + coding speed (frames/s, one process, unpaced).
Writes `telepresence_bench.json` and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from pathlib import Path

import av
import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..avatar import Avatar
from ..data.crop import CropTransform
from ..data.video import read_frames
from ..machine import describe
from ..media import frame_rate
from ..metrics.landmark_error import landmark_errors
from ..pipeline import TalkingHeadPipeline
from .basis import load_basis
from .codec import PREDICT_PREVIOUS, Basis, CropBox, LandmarkDecoder, LandmarkEncoder
from .sender import FileSource, LandmarkStream
from .settings import TelepresenceConfig

STEPS = (0.5, 0.625, 0.65625, 0.703125, 0.75, 1.0, 1.5)  # 0.65625 = 42/64, the default (45/64 before)
INPUTS = {"basis": dict(smooth=True, smooth_space="basis"), "points": dict(smooth=True, smooth_space="points"),
          "raw": dict(smooth=False)}  # the sender's smoothing: on the motion coefficients (default), points, none


def split_clips(data: Path) -> list[tuple[str, float]]:
    with open(data / "manifest.csv", newline="") as f:
        return [(r["path"], float(r["fps"])) for r in csv.DictReader(f) if r["split"] == "test" and r["kind"] == "video"]


def sender_track(path: Path, smooth: bool = True, smooth_space: str = "basis") -> dict:
    """What the sender would code for a clip: per frame crop points (or None), the boxes, the crops, timing."""
    src = FileSource(path, realtime=False)
    stream = LandmarkStream(src.fps, TelepresenceConfig(smooth=smooth, smooth_space=smooth_space))
    points, boxes, crops, t0 = [], [], [], time.perf_counter()
    for i, frame in read_frames(path):
        p = stream.landmarks(frame, i / src.fps)
        points.append(p)
        boxes.append(stream.box)
        crops.append(stream.crop.transform.crop(frame) if stream.crop.transform is not None else None)
    seconds = time.perf_counter() - t0
    return {"points": points, "boxes": boxes, "crops": crops, "fps": src.fps, "track_fps": len(points) / seconds}


def zero_lag_reference(track: dict, sigma: float = 1.5) -> list:
    """The raw track smoothed without delay (a centred Gaussian of `sigma` frames along time, within each run of
    frames with a face in one crop box): what a filter that removed the jitter without lagging would give."""
    out, run = [None] * len(track["points"]), []

    def flush():
        if run:
            smooth = gaussian_filter1d(np.stack([track["points"][i] for i in run]).astype(np.float64), sigma,
                                       axis=0, mode="nearest")
            for j, i in enumerate(run):
                out[i] = smooth[j]
        run.clear()

    for i, (p, box) in enumerate(zip(track["points"], track["boxes"])):
        if p is None or (run and box != track["boxes"][run[-1]]):
            flush()
        if p is not None:
            run.append(i)
    flush()
    return out


def distance(a: list, b: list) -> float:
    """Mean point distance (px) over frames where both have points."""
    d = [np.linalg.norm(np.asarray(p) - q, axis=1).mean() for p, q in zip(a, b) if p is not None and q is not None]
    return float(np.mean(d)) if d else float("nan")


def code(points, boxes, fps: float, basis: Basis, predictor: int, step: float, *, version: int = 2,
         key_interval: int = TelepresenceConfig.key_interval) -> tuple[float, float, list]:
    """(bits per frame, mean error px over frames with a face, decoded points)."""
    enc = LandmarkEncoder(basis, fps=fps, step=step, predictor=predictor, version=version,
                          key_interval=key_interval)
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
    frames = [c for c in crops if c is not None]
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
    le = render_paths(pipe, avatar, track, {"decoded": decoded}, max_frames)
    return le["uncompressed"], le["decoded"], le["frames"]


def render_paths(pipe, avatar, track: dict, others: dict[str, list], max_frames: int) -> dict:
    """Frames rendered from track["points"] (the uncompressed path) and from each list of `others` (points
    per frame in the same crops), their landmark errors against the uncompressed path's driving landmarks:
    {"uncompressed": LE, name: LE, ..., "frames": frames where every path's error is defined}."""
    def frame_px(p, box):
        return None if p is None else CropTransform(box.x0, box.y0, box.side, box.size, 0, 0).to_frame(p)

    live_u = pipe.live(avatar, fps=track["fps"])
    lives = {name: pipe.live(avatar, fps=track["fps"]) for name in others}
    imgs = {name: [] for name in ["uncompressed", *others]}
    targets = []
    for i, (p, box) in enumerate(list(zip(track["points"], track["boxes"]))[:max_frames]):
        if p is None or any(pts[i] is None for pts in others.values()):
            continue
        imgs["uncompressed"].append(live_u.step(frame_px(p, box)))
        targets.append(live_u.points * (pipe.frame_size(avatar) / pipe.image_size))
        for name, pts in others.items():
            imgs[name].append(lives[name].step(frame_px(pts[i], box)))
    le = {name: landmark_errors(np.stack(v), np.stack(targets)) for name, v in imgs.items()}
    ok = np.logical_and.reduce([np.isfinite(v) for v in le.values()])
    return {**{name: float(v[ok].mean()) for name, v in le.items()}, "frames": int(ok.sum())}


def measure_clip(path: Path, basis: Basis) -> tuple[list[dict], dict, list]:
    """Items 1, 2 and 4 for one clip: one row per sender input (`INPUTS`, each printed as it is done), the
    tracks by input, and the decoded points of the default stream (basis filter, v2, the default step)."""
    tracks = {name: sender_track(path, **kw) for name, kw in INPUTS.items()}
    reference = zero_lag_reference(tracks["raw"])
    rows, default_decoded = [], None
    for name, track in tracks.items():
        row = {"clip": path.name, "input": name, "frames": len(track["points"]), "fps": track["fps"],
               "no_face": sum(x is None for x in track["points"]), "track_fps": track["track_fps"],
               "to_zero_lag_px": distance(track["points"], reference),
               "to_points_filter_px": distance(track["points"], tracks["points"]["points"])}
        cells, decoded = coding_cells(track, basis, name)
        row.update(cells)
        if name == "basis":
            default_decoded = decoded
            for crf in (23, 35):
                row[f"h264_crf{crf}_kbps"] = h264_kbps(track["crops"], track["fps"], crf)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not isinstance(v, (dict, list))}), flush=True)
    return rows, tracks, default_decoded


def coding_cells(track: dict, basis: Basis, name: str) -> tuple[dict, list | None]:
    """{"<coding>_<step>": bits per frame, kbit/s at 25 fps and at the clip's rate, error px} of one input's
    track for every coding and step, and the decoded points at the default step (v2)."""
    pred = 1 if name == "raw" else 2
    codings = {"v2": (basis, pred, 2), "v1": (basis, pred, 1), "plain": (Basis.identity(), PREDICT_PREVIOUS, 2)}
    if name != "basis":
        codings.pop("plain")
    cells, default_decoded = {}, None
    for coding, (b, pr, version) in codings.items():
        for step in STEPS:
            key = TelepresenceConfig.key_interval if version == 2 else 50  # v1 at its old defaults
            bits, err, decoded = code(track["points"], track["boxes"], track["fps"], b, pr, step,
                                      version=version, key_interval=key)
            cells[f"{coding}_{step}"] = {"bits_per_frame": bits, "kbps25": bits * 25 / 1000,
                                         "kbps": bits * track["fps"] / 1000, "error_px": err}
            if coding == "v2" and step == TelepresenceConfig.step:
                default_decoded = decoded
    return cells, default_decoded


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="reports/telepresence")
    p.add_argument("--avatar", default=None, help="avatar directory for the rendering comparison (else none)")
    p.add_argument("--model", default=None, help="model directory of the avatar (default: the shipped one)")
    p.add_argument("--render-clips", type=int, default=4, help="clips in the rendering comparison")
    p.add_argument("--render-frames", type=int, default=60, help="frames per clip in the rendering comparison")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    basis = load_basis()
    rows, renders = [], []
    pipe = avatar = None
    if args.avatar:
        pipe = TalkingHeadPipeline.from_pretrained(args.model)
        avatar = Avatar.load(args.avatar, pipe)
    for n, (rel, _) in enumerate(split_clips(data)):
        clip_rows, tracks, decoded = measure_clip(data / rel, basis)
        rows += clip_rows
        if pipe is not None and n < args.render_clips:
            le = render_paths(pipe, avatar, tracks["points"], {"basis_uncompressed": tracks["basis"]["points"],
                                                               "basis_decoded": decoded}, args.render_frames)
            renders.append({"clip": Path(rel).name, "step": TelepresenceConfig.step, **le})
            print(renders[-1], flush=True)
    result = {"machine": describe(), "rows": rows, "renders": renders, "command": "python -m "
              "talking_heads.telepresence.bench " + " ".join(argv or [])}
    (out / "telepresence_bench.json").write_text(json.dumps(result, indent=2, default=str))
    print(tables(result))
    return 0


def tables(result: dict) -> str:
    """The results as Markdown tables: smoothing, bitrate / error per step and coding, H.264 per clip, and the
    rendering comparison."""
    rows, d = result["rows"], TelepresenceConfig.step
    lines = ["| input (sender's smoothing) | px to the zero-lag reference | px to the points filter |",
             "|---|---|---|"]
    for name in INPUTS:
        sel = [r for r in rows if r["input"] == name]
        n = sum(r["frames"] for r in sel)
        lines.append(f"| {name} | {sum(r['to_zero_lag_px'] * r['frames'] for r in sel) / n:.3f} | "
                     f"{sum(r['to_points_filter_px'] * r['frames'] for r in sel) / n:.3f} |")
    lines += ["", "| input (sender's smoothing) | coding | " + " | ".join(f"q = {s:g}" for s in STEPS) + " |",
              "|---|---|" + "---|" * len(STEPS)]
    for name in INPUTS:
        sel = [r for r in rows if r["input"] == name]
        n = sum(r["frames"] for r in sel)
        for coding in ("v2", "v1", "plain"):
            if f"{coding}_{STEPS[0]}" not in sel[0]:
                continue
            cells = []
            for s in STEPS:
                bits = sum(r[f"{coding}_{s}"]["bits_per_frame"] * r["frames"] for r in sel) / n
                err = sum(r[f"{coding}_{s}"]["error_px"] * r["frames"] for r in sel) / n
                cells.append(f"{bits * 25 / 1000:.2f} / {err:.3f}")
            lines.append(f"| {name} | {coding} | " + " | ".join(cells) + " |")
    lines += ["", "| clip | fps | frames | landmarks kbit/s | error px | H.264 CRF 23 | ratio | CRF 35 | ratio |",
              "|---|---|---|---|---|---|---|---|---|"]
    sel = [r for r in rows if r["input"] == "basis"]
    for r in sel:
        v = r[f"v2_{d}"]
        lines.append(f"| {r['clip'].rsplit('.', 1)[0]} | {r['fps']:g} | {r['frames']} | {v['kbps']:.2f} | "
                     f"{v['error_px']:.3f} | {r['h264_crf23_kbps']:.0f} | {r['h264_crf23_kbps'] / v['kbps']:.0f}x | "
                     f"{r['h264_crf35_kbps']:.0f} | {r['h264_crf35_kbps'] / v['kbps']:.0f}x |")
    seconds = sum(r["frames"] / r["fps"] for r in sel)
    kb = sum(r[f"v2_{d}"]["kbps"] * r["frames"] / r["fps"] for r in sel) / seconds
    h23 = sum(r["h264_crf23_kbps"] * r["frames"] / r["fps"] for r in sel) / seconds
    h35 = sum(r["h264_crf35_kbps"] * r["frames"] / r["fps"] for r in sel) / seconds
    err = sum(r[f"v2_{d}"]["error_px"] * r["frames"] for r in sel) / sum(r["frames"] for r in sel)
    lines.append(f"| all (weighted by duration) | | {sum(r['frames'] for r in sel)} | {kb:.2f} | {err:.3f} | {h23:.0f} | "
                 f"{h23 / kb:.0f}x | {h35:.0f} | {h35 / kb:.0f}x |")
    if result["renders"]:
        lines += ["", "| clip | frames | v1 path (points filter, uncompressed) | basis filter, uncompressed | "
                  "relative | basis filter, decoded v2 | relative |", "|---|---|---|---|---|---|---|"]
        tot = {k: 0.0 for k in ("uncompressed", "basis_uncompressed", "basis_decoded")}
        frames = 0
        for r in result["renders"]:
            u = r["uncompressed"]
            lines.append(f"| {r['clip'].rsplit('.', 1)[0]} | {r['frames']} | {u:.5f} | {r['basis_uncompressed']:.5f} | "
                         f"{100 * (r['basis_uncompressed'] / u - 1):+.1f} % | {r['basis_decoded']:.5f} | "
                         f"{100 * (r['basis_decoded'] / u - 1):+.1f} % |")
            for k in tot:
                tot[k] += r[k] * r["frames"]
            frames += r["frames"]
        u = tot["uncompressed"] / frames
        b, dd = tot["basis_uncompressed"] / frames, tot["basis_decoded"] / frames
        lines.append(f"| all | {frames} | {u:.5f} | {b:.5f} | {100 * (b / u - 1):+.1f} % | {dd:.5f} | "
                     f"{100 * (dd / u - 1):+.1f} % |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""Rendering speed (`talking-heads bench --what render,export,animate`).

- render: ms per frame at batch 1 of the generator as trained (`sn`: spectral norm evaluated and psi routed
  every frame, no_grad) and of the avatar-specialised renderer (`inference.TorchRenderer`) in fp32 and, where
  the device has native bf16, bf16; with onnxruntime installed, also onnxruntime on its ONNX export (CPU) in
  fp32 and in int8. Random weights (`synthetic.random_avatar`), timed in interleaved rounds.
- export: seconds to export the specialised generator to ONNX, its size, and its largest difference from
  PyTorch fp32.
- animate: the shipped sample model end to end (`pipeline.animate`) and its live stage one frame at a time.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import machine
from ..config import Config
from ..inference import (OnnxRenderer, TorchRenderer, export_onnx, quantize_int8,
                         resolve_precision)
from ..landmarks.iris import uses_gaze
from ..landmarks.motions import motion_landmarks, neutral_face
from ..landmarks.raster import rasterize_tensor
from ..pipeline import TalkingHeadPipeline
from .synthetic import random_avatar
from .timing import interleaved


def bench_render(cfg: Config, device: torch.device, repeat: int) -> dict[str, Any]:
    """ms per frame of each renderer (module docstring) as `{name}_ms`; `default` names what
    `inference.precision = auto` picks here. The int8 model is calibrated on the benchmark's own landmark
    image: speed only (random weights say nothing of int8's quality, which tests/test_inference.py checks on
    real frames)."""
    g, psi, sources, y = random_avatar(cfg, device)
    out: dict[str, Any] = {"default": resolve_precision("auto", device), "generator": cfg.model.generator}

    def sn():
        with torch.no_grad():
            return g(y, psi, sources)

    fns: dict[str, Callable[[], Any]] = {"sn": sn}
    for precision in ["fp32"] + (["bf16"] if device.type == "cuda" or machine.cpu_supports_bf16() else []):
        fns[precision] = functools.partial(TorchRenderer(g.specialise(psi, sources), device, precision), y)
    with contextlib.suppress(ModuleNotFoundError):  # onnx / onnxruntime are optional
        data = export_onnx(g.specialise(psi, sources).cpu(), cfg.model.image_size, {"generator": cfg.model.generator})
        fns["onnxruntime"] = functools.partial(OnnxRenderer(data), y.cpu())
        fns["int8"] = functools.partial(OnnxRenderer(quantize_int8(data, y.cpu())), y.cpu())
    for k, t in interleaved(fns, device, repeat=repeat).items():
        out[f"{k}_ms"] = round(t * 1e3, 2)
    return out


def bench_export(cfg: Config, device: torch.device, repeat: int) -> dict[str, Any]:
    """Seconds to export the specialised generator to ONNX, its size, and the largest difference of
    onnxruntime's frame from PyTorch fp32's (random weights and input; onnxruntime's speed: `bench_render`)."""
    g, psi, sources, y = random_avatar(cfg, torch.device("cpu"))
    t0 = time.perf_counter()
    data = export_onnx(g.specialise(psi, sources), cfg.model.image_size, {"generator": cfg.model.generator})
    out: dict[str, Any] = {"export_s": round(time.perf_counter() - t0, 2), "mib": round(len(data) / 2**20, 1)}
    ref = TorchRenderer(g.specialise(psi, sources), "cpu", "fp32")(y)
    out["max_abs_diff_vs_fp32"] = float(f"{(OnnxRenderer(data)(y) - ref).abs().max().item():.2e}")
    return out


def bench_animate(device: torch.device, seconds: float = 8.0, model_dir: str | None = None,
                  size: int | None = None) -> dict[str, Any]:
    """A model (default: the shipped sample model) end to end: `pipeline.animate` of the built-in `talk` motion
    (landmarks known: adapt -> rasterise -> render -> resize -> H.264 encode, watermark and labels), frames per
    second; and the live stage one frame at a time (`LiveStage.step`: adapt, rasterise, render, resize), ms
    per frame. The avatar is FF from a synthetic frame whose landmarks are the motions' neutral face; for the
    TPS renderer, which renders the photo itself at the output size, FF from the demo's astronaut photo.
    size: the output size (--size; default: the model's automatic one)."""
    pipe = TalkingHeadPipeline.from_pretrained(model_dir, device=device)
    if size is not None:
        pipe.cfg.inference.output_size = int(size)
    s = pipe.image_size
    if pipe.needs_points:
        from ..demo import portrait

        avatar = pipe.create_avatar(portrait())
    else:
        face = neutral_face(s, pipe.cfg.data).astype("float32")
        y = rasterize_tensor(face[None], s, pipe.cfg.data.line_thickness)
        avatar = pipe.create_avatar_from_tensors(y.clone(), y, landmarks=face[None])
    out: dict[str, Any] = {"image_size": s, "output_size": pipe.frame_size(avatar), "generator": pipe.cfg.model.generator,
                           "precision": pipe.renderer(avatar).precision}
    with tempfile.TemporaryDirectory(prefix="th-bench-animate-") as tmp:
        pipe.animate(avatar, "talk", Path(tmp) / "warm.mp4", duration=1.0, progress=False, contact_sheet=False)
        t0 = time.perf_counter()
        result = pipe.animate(avatar, "talk", Path(tmp) / "talk.mp4", duration=seconds, progress=False,
                              contact_sheet=False)
        wall = time.perf_counter() - t0
    out.update(frames=result.frames, animate_s=round(wall, 2), animate_fps=round(result.frames / wall, 1))
    points = motion_landmarks("talk", seconds, pipe.cfg.inference.motion_fps, s, pipe.cfg.data)
    live = pipe.live(avatar, reference=points[0], crop=None)
    lat = []
    for p in points:
        t0 = time.perf_counter()
        live.step(p, frame_size=(s, s))
        lat.append((time.perf_counter() - t0) * 1e3)
    lat = sorted(lat[5:])  # after warm-up
    out.update(live_ms_median=round(lat[len(lat) // 2], 1), live_ms_p95=round(lat[int(len(lat) * 0.95)], 1))
    if uses_gaze(pipe.cfg):
        out["gaze"] = bench_gaze(pipe, avatar)
    return out


def bench_gaze(pipe: TalkingHeadPipeline, avatar, seconds: float = 4.0) -> dict[str, Any]:
    """A model that renders gaze, driven by the built-in `look` motion: the gaze measured on its frames by the
    iris locator against the motion's (`metrics.gaze.gaze_agreement`: error in eye widths, which includes the
    avatar photo's own offset, and correlation), and the iris locator's time per face."""
    from ..data.video import read_frames
    from ..landmarks.iris import relative_gaze
    from ..metrics.gaze import frame_gaze, gaze_agreement

    seq = pipe.load_driver("look", duration=seconds)
    with tempfile.TemporaryDirectory(prefix="th-bench-gaze-") as tmp:
        pipe.animate(avatar, seq, Path(tmp) / "look.mp4", progress=False, contact_sheet=False)
        frames = [f for _, f in read_frames(Path(tmp) / "look.mp4")]
    t0 = time.perf_counter()
    rendered = frame_gaze(frames)
    per_face = (time.perf_counter() - t0) * 1e3 / max(1, len(frames))
    driven = np.stack([relative_gaze(p, c) for p, c in zip(seq.driver_points, seq.iris)])
    agree = gaze_agreement(rendered, driven)
    return {"look_error": round(agree["error"], 3), "look_corr_x": round(agree["corr_x"], 2),
            "look_corr_y": round(agree["corr_y"], 2), "frames_seen": agree["frames"],
            "detect_and_locate_ms_per_frame": round(per_face, 1)}

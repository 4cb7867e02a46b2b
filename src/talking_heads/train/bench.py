"""Speed and memory of the networks and of one meta-learning step (`talking-heads bench`; issue 2 item 7).

Measured per preset:
- params: parameter counts of E, G (P included, and P alone), V (D's conv part), D (V + W + w0 + b)
  with a one-video table, and the number of AdaIN parameters (size of psi).
- generator: ms per frame at batch 1, AdaIN parameters psi = P e computed once beforehand, no_grad, eval.
- embedder: ms for K = 8 frames in one batch, no_grad, eval.
- train-step: seconds per meta-learning step (batch 1, K = 8: one E/G update + d_steps_per_g_step D
  updates, exactly `meta.meta_step`), once with the offline content loss and once with VGG19 + VGGFace
  present. The pretrained VGG files cannot be had offline, so the VGG variant uses the project's VGG19 /
  VGGFace with *random* weights written to a temporary file in the standard layout: the cost is the same,
  the loss values are meaningless.
- train-step, by part (`bench_train_step_parts`, issue 16): the preset's own step (its content loss) profiled
  with torch.profiler, each op's self time attributed to E, G, D (in the G step / in the D steps), the
  content loss, the face terms, DiffAugment, the two optimisers or "other" (`attribute_parts`: the step
  functions' profiler ranges, forward hooks on the networks, and autograd's sequence numbers for the ops of
  the backward passes); and the speed-ups (`bench_train_step_speedups`): the step as it ran before issue 16
  (per-tensor Adam loop, fp32) next to fused Adam, bf16 autocast (train.amp_cpu) and channels_last networks,
  timed in interleaved rounds with a rotating order.
- peak memory of each measured region: CUDA max_memory_allocated, or on CPU the growth of the process's
  peak resident set (VmHWM, reset through /proc/self/clear_refs before each region; without that file the
  lifetime peak from getrusage, which can only over-state the region's own use).

Inputs are synthetic (`SyntheticEpisodes`: random frames and landmark images with the episode dict layout of
docs/interfaces.md); timing does not depend on content.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..config import Config, preset
from . import steps

WHAT = ("params", "generator", "embedder", "train-step", "render", "export", "animate")
SECTION = "Networks and training step"
RENDER_SECTION = "Real-time rendering (issue 16)"
TRAIN_SECTION = "Training step: profile and speed-ups (issue 16)"
TRAIN_INTRO = ("Reproduce: `OMP_NUM_THREADS=1 talking-heads bench --preset sample --what train-step --write "
               "docs/benchmarks.md` (add `--preset paper`, or `--device cuda` on a GPU; `--what "
               "render,export,train-step` measures the rendering too).")


class SyntheticEpisodes(torch.utils.data.Dataset):
    """Random episodes with the EpisodeDataset item layout (x_src, y_src, x_tgt, y_tgt, video).

    Deterministic per index (its own generator seeded by seed and index; indices past the end, as
    `dist.EpisodeSampler` yields for later epochs, are fresh episodes of video (index mod length) mod
    num_videos). For benchmarks and tests.
    """

    def __init__(self, cfg: Config, num_episodes: int = 4, num_videos: int = 2, seed: int = 0,
                 k_shot: int | None = None):
        self.k = cfg.train.k_shot if k_shot is None else k_shot
        self.size = cfg.model.image_size
        self.n, self.num_videos, self.seed = num_episodes, num_videos, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + i)
        k, s = self.k, self.size
        rand = lambda *shape: torch.rand(*shape, generator=g) * 2 - 1  # noqa: E731
        return {"x_src": rand(k, 3, s, s), "y_src": rand(k, 3, s, s), "x_tgt": rand(3, s, s),
                "y_tgt": rand(3, s, s), "p_tgt": neutral_landmarks(s),
                "aug_seed": torch.tensor(self.seed * 100_003 + i, dtype=torch.int64),
                "video": torch.tensor((i % self.n) % self.num_videos, dtype=torch.int64)}


def neutral_landmarks(size: int) -> Tensor:
    """(68,2) float32: the built-in motions' neutral face placed in a `size` px crop (a plausible target shape
    for losses that align faces)."""
    from ..landmarks.motions import neutral_face

    return torch.from_numpy(neutral_face(size).astype("float32"))


def collate(items: list[dict[str, Tensor]], device: torch.device | str = "cpu") -> dict[str, Tensor]:
    return {k: torch.stack([it[k] for it in items]).to(device) for k in items[0]}


# --- measuring --------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_peak_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _rss_now_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return _rss_peak_kib()


@contextlib.contextmanager
def peak_memory(device: torch.device, out: dict[str, Any]):
    """Record the region's peak memory (MiB) into out["peak_mib"] (see the module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield
        torch.cuda.synchronize(device)
        out["peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        out["peak_above_start_mib"] = round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 1)
        out["memory_kind"] = "cuda max_memory_allocated"
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        exact = True
    except OSError:
        exact = False
    base = _rss_now_kib()
    yield
    out["peak_above_start_mib"] = round((_rss_peak_kib() - base) / 1024, 1)
    out["peak_mib"] = round(_rss_peak_kib() / 1024, 1)
    out["memory_kind"] = "cpu peak RSS (VmHWM)" + ("" if exact else ", lifetime peak")


def time_it(fn: Callable[[], Any], device: torch.device, *, warmup: int = 1, repeat: int = 3,
            max_seconds: float = 60.0) -> dict[str, float]:
    """Median and min wall time of fn() in seconds, after `warmup` calls; stops early past max_seconds."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > max_seconds:
            break
    times.sort()
    return {"median_s": times[len(times) // 2], "min_s": times[0], "runs": len(times)}


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def bench_params(cfg: Config) -> dict[str, Any]:
    from ..models import parameter_counts

    return parameter_counts(cfg)


def bench_generator(cfg: Config, device: torch.device, repeat: int) -> dict[str, Any]:
    from ..models import build_networks

    torch.manual_seed(0)
    nets = build_networks(cfg, num_videos=1)
    e, g = nets.embedder.to(device).eval(), nets.generator.to(device).eval()
    s = cfg.model.image_size
    x, y = torch.rand(1, 3, s, s, device=device) * 2 - 1, torch.rand(1, 3, s, s, device=device) * 2 - 1
    out: dict[str, Any] = {}
    with torch.no_grad():
        psi = g.adain_params(e(x, y))  # computed once: an avatar's psi'
        with peak_memory(device, out):
            t = time_it(lambda: g(y, psi), device, repeat=repeat)
    out.update(ms_per_frame=round(t["median_s"] * 1e3, 2), min_ms=round(t["min_s"] * 1e3, 2), runs=t["runs"])
    return out


def bench_embedder(cfg: Config, device: torch.device, repeat: int, k: int = 8) -> dict[str, Any]:
    from ..models import build_networks

    torch.manual_seed(0)
    e = build_networks(cfg, num_videos=1).embedder.to(device).eval()
    s = cfg.model.image_size
    x, y = torch.rand(k, 3, s, s, device=device) * 2 - 1, torch.rand(k, 3, s, s, device=device) * 2 - 1
    out: dict[str, Any] = {"k": k}
    with torch.no_grad(), peak_memory(device, out):
        t = time_it(lambda: e(x, y), device, repeat=repeat)
    out.update(ms=round(t["median_s"] * 1e3, 2), min_ms=round(t["min_s"] * 1e3, 2), runs=t["runs"])
    return out


def _random_avatar(cfg: Config, device: torch.device):
    """A generator with random weights (seed 0) and an avatar's worth of render inputs for it: psi = P E(x, y)
    of one random frame, and for the warp generator inference.video_frames random source frames."""
    from ..models import build_networks

    torch.manual_seed(0)
    nets = build_networks(cfg, num_videos=1)
    e, g = nets.embedder.to(device).eval(), nets.generator.to(device).eval()
    s = cfg.model.image_size
    x, y = torch.rand(1, 3, s, s, device=device) * 2 - 1, torch.rand(1, 3, s, s, device=device) * 2 - 1
    with torch.no_grad():
        psi = g.adain_params(e(x, y))
    t = cfg.inference.video_frames
    sources = (torch.rand(t, 3, s, s, device=device) * 2 - 1, torch.rand(t, 3, s, s, device=device) * 2 - 1) \
        if g.needs_sources else None
    return g, psi, sources, y


def interleaved(fns: dict[str, Callable[[], Any]], device: torch.device, *, warmup: int = 2, repeat: int = 5,
                rotate: bool = False) -> dict[str, float]:
    """Median seconds of each fn, timed in interleaved rounds (one call of each per round), so that other load
    on the machine weighs on all of them alike; after `warmup` calls of each. `rotate`: round r starts with the
    r-th fn (no fn always runs first, right after another one's memory was freed)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeat):
        order = names[r % len(names):] + names[:r % len(names)] if rotate else names
        for k in order:
            fn = fns[k]
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def bench_render(cfg: Config, device: torch.device, repeat: int) -> dict[str, Any]:
    """ms per frame at batch 1 of the generator as it was rendered before issue 16 (spectral norm evaluated
    every frame, psi routed every frame, no_grad: `sn`) and of the avatar-specialised renderer
    (`inference.TorchRenderer`) in fp32 and, where the device has native bf16, bf16; with onnxruntime
    installed, also onnxruntime on its ONNX export (CPU) in fp32 and in int8 (calibrated on the benchmark's own
    landmark image: speed only, random weights say nothing of int8's quality, which tests/test_inference.py
    checks on real frames). Interleaved rounds (`interleaved`). `default` names what
    `inference.precision = auto` picks here."""
    from ..inference import (OnnxRenderer, TorchRenderer, cpu_supports_bf16, export_onnx, quantize_int8,
                             resolve_precision)
    from ..models.specialise import specialise

    g, psi, sources, y = _random_avatar(cfg, device)
    out: dict[str, Any] = {"default": resolve_precision("auto", device), "generator": cfg.model.generator}

    def sn():
        with torch.no_grad():
            return g(y, psi, sources)

    fns: dict[str, Callable[[], Any]] = {"sn": sn}
    for precision in ["fp32"] + (["bf16"] if device.type == "cuda" or cpu_supports_bf16() else []):
        fns[precision] = functools.partial(TorchRenderer(specialise(g, psi, sources), device, precision), y)
    with contextlib.suppress(ModuleNotFoundError):
        data = export_onnx(specialise(g, psi, sources).cpu(), cfg.model.image_size, {"generator": cfg.model.generator})
        fns["onnxruntime"] = functools.partial(OnnxRenderer(data), y.cpu())
        fns["int8"] = functools.partial(OnnxRenderer(quantize_int8(data, y.cpu())), y.cpu())
    for k, t in interleaved(fns, device, repeat=repeat).items():
        out[f"{k}_ms"] = round(t * 1e3, 2)
    return out


def bench_export(cfg: Config, device: torch.device, repeat: int) -> dict[str, Any]:
    """Seconds to export the specialised generator to ONNX, its size, and the largest difference of
    onnxruntime's frame from PyTorch fp32's (random weights and input; onnxruntime's speed: `render`)."""
    from ..inference import OnnxRenderer, TorchRenderer, export_onnx
    from ..models.specialise import specialise

    g, psi, sources, y = _random_avatar(cfg, torch.device("cpu"))
    t0 = time.perf_counter()
    data = export_onnx(specialise(g, psi, sources), cfg.model.image_size, {"generator": cfg.model.generator})
    out: dict[str, Any] = {"export_s": round(time.perf_counter() - t0, 2), "mib": round(len(data) / 2**20, 1)}
    ref = TorchRenderer(specialise(g, psi, sources), "cpu", "fp32")(y)
    out["max_abs_diff_vs_fp32"] = float(f"{(OnnxRenderer(data)(y) - ref).abs().max().item():.2e}")
    return out


def bench_animate(device: torch.device, seconds: float = 8.0) -> dict[str, Any]:
    """The shipped sample model end to end: `pipeline.animate` of the built-in `talk` motion (landmarks known:
    adapt -> rasterise -> render -> resize -> H.264 encode, watermark and labels), frames per second; and the
    live stage one frame at a time (`LiveStage.step`: adapt, rasterise, render, resize), ms per frame. The
    avatar is FF from a synthetic frame whose landmarks are the motions' neutral face."""
    from ..landmarks.motions import motion_landmarks, neutral_face
    from ..landmarks.raster import rasterize_tensor
    from ..pipeline import TalkingHeadPipeline

    pipe = TalkingHeadPipeline.from_pretrained(device=device)
    s = pipe.image_size
    face = neutral_face(s, pipe.cfg.data).astype("float32")
    y = rasterize_tensor(face[None], s, pipe.cfg.data.line_thickness)
    avatar = pipe.create_avatar_from_tensors(y.clone(), y, landmarks=face[None])
    out: dict[str, Any] = {"image_size": s, "output_size": pipe.output_size,
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
    return out


@contextlib.contextmanager
def random_vgg_files(cfg: Config):
    """A Config whose loss points at VGG19 / VGGFace files with random weights (same cost as real ones)."""
    from ..models import perceptual

    with tempfile.TemporaryDirectory(prefix="th-bench-vgg-") as tmp:
        torch.manual_seed(0)
        paths = {}
        for name, cls in (("vgg19", perceptual.VGG19), ("vggface", perceptual.VGGFace)):
            paths[name] = os.path.join(tmp, f"{name}_random.pth")
            torch.save(cls().state_dict(), paths[name])
        loss = replace(cfg.loss, vgg19_weights=paths["vgg19"], vggface_weights=paths["vggface"])
        yield replace(cfg, loss=loss)


def bench_train_step(cfg: Config, device: torch.device, repeat: int, content: str, k: int = 8) -> dict[str, Any]:
    """Seconds per meta-learning step at batch 1, K = k, with the offline or the (random-weight) VGG loss, or
    the offline loss plus the dlib face terms ("offline+dlibface", the real pretrained weights)."""
    from .. import dist
    from ..models import build_networks
    from .meta import build_meta_state, meta_step

    cfg = replace(cfg, train=replace(cfg.train, k_shot=k, batch_size=1))
    cfg = replace(cfg, loss=replace(cfg.loss, face_network="dlib" if content == "offline+dlibface" else ""))
    ctx = random_vgg_files(cfg) if content == "vgg" else contextlib.nullcontext(cfg)
    out: dict[str, Any] = {"k": k, "batch": 1, "content_loss": content}
    with ctx as run_cfg:
        torch.manual_seed(0)
        nets = build_networks(run_cfg, num_videos=2)
        state = build_meta_state(run_cfg, nets, dist.DistInfo(device=device))
        if state.content_loss.mode != content:
            raise RuntimeError(f"expected the {content} content loss, got {state.content_loss.mode}")
        batch = collate([SyntheticEpisodes(run_cfg, num_episodes=1, k_shot=k)[0]], device)
        with peak_memory(device, out):
            t = time_it(lambda: meta_step(state, batch, run_cfg), device, repeat=repeat, max_seconds=120)
    out.update(s_per_step=round(t["median_s"], 3), min_s=round(t["min_s"], 3), runs=t["runs"],
               d_steps_per_g_step=cfg.train.d_steps_per_g_step, precision=steps.step_precision(cfg.train, device))
    return out


# --- the training step by network, and its speed-ups (issue 16) -------------------------------------

EG_FORWARD, G_STEP, D_STEP = "meta.eg_forward", "steps.generator_step", "steps.discriminator_step"  # ranges
PARTS = ("E", "G", "D in the G step", "D in the D steps", "content loss", "face terms (dlib)", "augmentation",
         "optimiser E, G", "optimiser D", "other")
# variants of the step timed side by side: name -> --set overrides on the preset, "channels_last" for networks
# converted to that layout (measured only: training keeps NCHW, see docs/benchmarks.md). "before" is the step
# as it ran before issue 16 (torch's per-tensor Adam loop, fp32); bf16 is CPU autocast (train.amp_cpu=true; the
# default "auto" picks it on CPUs with native bf16)
STEP_VARIANTS = {"before": ("train.adam=for-loop", "train.amp_cpu=false"),
                 "fused Adam": ("train.adam=fused", "train.amp_cpu=false"),
                 "fused Adam + channels_last": ("train.adam=fused", "train.amp_cpu=false", "channels_last"),
                 "fused Adam + bf16": ("train.adam=fused", "train.amp_cpu=true"),
                 "fused Adam + bf16 + channels_last": ("train.adam=fused", "train.amp_cpu=true", "channels_last")}


class _RangedAugment:
    """A DiffAugment whose calls run inside a profiler range "augment"."""

    def __init__(self, augment):
        self.augment = augment

    def __bool__(self) -> bool:
        return bool(self.augment)

    def __call__(self, *args, **kwargs):
        with torch.profiler.record_function("augment"):
            return self.augment(*args, **kwargs)


@contextlib.contextmanager
def network_ranges(state):
    """Profiler ranges named after the networks around their forwards ("E", "D", "content", "face": forward
    hooks, removed on exit; G is what the E/G forward runs outside E) and around DiffAugment ("augment")."""
    handles = []

    def add(module, name: str) -> None:
        stack: list = []

        def enter(m, args):
            stack.append(torch.profiler.record_function(name).__enter__())

        def leave(m, args, out):
            stack.pop().__exit__(None, None, None)

        handles.extend([module.register_forward_pre_hook(enter), module.register_forward_hook(leave, always_call=True)])

    add(state.networks.embedder, "E")
    add(state.networks.discriminator, "D")
    add(state.content_loss, "content")
    if getattr(state.content_loss, "face", None) is not None:
        add(state.content_loss.face, "face")
    augment = state.augment
    if augment is not None:
        state.augment = _RangedAugment(augment)
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        state.augment = augment


def _part(phase: str | None, net: str | None) -> str:
    """The PARTS name of an op inside the ranges `phase` (a step) and `net` (a network or optimiser)."""
    if net is not None and net.startswith("Optimizer."):
        return "optimiser D" if phase == D_STEP else "optimiser E, G"
    if phase == EG_FORWARD:
        return "E" if net == "E" else "G"
    return {"D": "D in the D steps" if phase == D_STEP else "D in the G step", "face": "face terms (dlib)",
            "content": "content loss", "augment": "augmentation"}.get(net, "other")


def attribute_parts(events, device_time: bool = False) -> dict[str, float]:
    """Microseconds of each of PARTS in a profile of meta-learning steps taken inside `network_ranges`.

    Each op's self time goes to the innermost step range and network range around it; the ops of a backward
    pass go where their forward op ran (autograd's sequence numbers link them), so "D in the G step" is D's
    forward in the generator step plus the backward through it. `device_time`: the ops' self CUDA time
    instead of their CPU time."""
    nets = {"E", "D", "content", "face", "augment"}

    def ranges(e) -> tuple[str | None, str | None]:
        phase = net = None
        while e is not None and (phase is None or net is None):
            if net is None and (e.name in nets or e.name.startswith("Optimizer.")):
                net = e.name
            if phase is None and e.name in (EG_FORWARD, G_STEP, D_STEP):
                phase = e.name
            e = e.cpu_parent
        return phase, net

    def engine_node(e):
        while e is not None:
            if e.name.startswith("autograd::engine::evaluate_function"):
                return e
            e = e.cpu_parent
        return None

    from torch.autograd import DeviceType

    forward: dict[tuple[int, int], tuple[str | None, str | None]] = {}
    placed = []
    for e in events:
        if e.device_type != DeviceType.CPU:  # kernels are counted in the self device time of the op launching them
            continue
        node = engine_node(e)
        if node is None and e.sequence_nr >= 0:
            forward.setdefault((e.thread, e.sequence_nr), ranges(e))
        placed.append((e, node))
    out = dict.fromkeys(PARTS, 0.0)
    for e, node in placed:
        where = forward.get((node.fwd_thread, node.sequence_nr)) if node is not None else None
        if where is None:
            where = (ranges(e)[0], None) if node is not None else ranges(e)
        out[_part(*where)] += e.self_device_time_total if device_time else e.self_cpu_time_total
    return out


def _step_state(cfg: Config, device: torch.device, k: int):
    """(state, batch, cfg) of a meta-learning step at batch 1, K = k, random weights (seed 0), synthetic episode."""
    from .. import dist
    from ..models import build_networks
    from .meta import build_meta_state

    cfg = replace(cfg, train=replace(cfg.train, k_shot=k, batch_size=1))
    torch.manual_seed(0)
    state = build_meta_state(cfg, build_networks(cfg, num_videos=2), dist.DistInfo(device=device))
    return state, collate([SyntheticEpisodes(cfg, num_episodes=1, k_shot=k)[0]], device), cfg


def bench_train_step_parts(cfg: Config, device: torch.device, repeat: int, k: int = 8) -> dict[str, Any]:
    """Where a meta-learning step of the preset as configured (its own content loss) spends its time: the
    median step time unprofiled, and each part's share of a torch.profiler profile of `repeat` steps
    (`attribute_parts`), shown as ms of that median."""
    from torch.profiler import ProfilerActivity, profile

    from .meta import meta_step

    state, batch, cfg = _step_state(cfg, device, k)
    t = time_it(lambda: meta_step(state, batch, cfg), device, warmup=2, repeat=repeat, max_seconds=120)
    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with network_ranges(state), profile(activities=acts) as prof:
        for _ in range(max(1, repeat)):
            meta_step(state, batch, cfg)
        _sync(device)
    us = attribute_parts(prof.events(), device_time=cuda)
    total = sum(us.values()) or 1.0
    return {"k": k, "batch": 1, "content_loss": state.content_loss.mode, "adam": cfg.train.adam,
            "amp_cpu": cfg.train.amp_cpu, "precision": steps.step_precision(cfg.train, device),
            "step_ms": round(t["median_s"] * 1e3, 1),
            "time": "CUDA kernel time" if cuda else "CPU time",
            "parts": {p: {"share": round(v / total, 4), "ms": round(v / total * t["median_s"] * 1e3, 1)}
                      for p, v in us.items()}}


def bench_train_step_speedups(cfg: Config, device: torch.device, repeat: int, k: int = 8,
                              variants: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """Seconds per meta-learning step (batch 1, K = k, the preset's own losses) of each of STEP_VARIANTS, timed
    in interleaved rounds with a rotating order (`interleaved`), and each one's speed-up over "before"."""
    from ..config import apply_overrides
    from .meta import meta_step

    variants = STEP_VARIANTS if variants is None else variants
    if device.type != "cpu":
        variants = {n: v for n, v in variants.items() if "train.amp_cpu=true" not in v}
    fns = {}
    for name, overrides in variants.items():
        sets = [o for o in overrides if o != "channels_last"]
        state, batch, run_cfg = _step_state(apply_overrides(cfg, sets), device, k)
        if "channels_last" in overrides:
            for m in (state.networks.embedder, state.networks.generator, state.networks.discriminator,
                      state.content_loss):
                m.to(memory_format=torch.channels_last)
        fns[name] = functools.partial(meta_step, state, batch, run_cfg)
    times = interleaved(fns, device, warmup=2, repeat=repeat, rotate=True)
    base = times.get("before")
    return {"k": k, "batch": 1, "variants": {n: ", ".join(v) for n, v in variants.items()},
            "ms": {n: round(t * 1e3, 1) for n, t in times.items()},
            "speedup": {n: round(base / t, 3) for n, t in times.items()} if base else {}}


def machine() -> dict[str, Any]:
    from ..machine import describe

    return describe()


def run_bench(presets: list[str], what: list[str], device: str = "cpu", repeat: int = 3,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    # oneDNN keeps 1,024 compiled kernels by default: the step variants timed side by side (fp32, bf16,
    # channels_last) need more, and evicting them costs a recompile per call. Read at its first use.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16384")
    dev = torch.device(device)
    unknown = set(what) - set(WHAT)
    if unknown:
        raise ValueError(f"unknown --what item(s) {sorted(unknown)}; choose from {', '.join(WHAT)}")
    results: dict[str, Any] = {"machine": machine(), "device": str(dev), "presets": {}}
    for name in presets:
        cfg = preset(name)
        r: dict[str, Any] = {"image_size": cfg.model.image_size}
        if "params" in what:
            r["params"] = bench_params(cfg)
            log(f"[{name}] params {r['params']}")
        if "generator" in what:
            r["generator"] = bench_generator(cfg, dev, repeat)
            log(f"[{name}] generator {r['generator']}")
        if "embedder" in what:
            r["embedder"] = bench_embedder(cfg, dev, repeat)
            log(f"[{name}] embedder {r['embedder']}")
        if "render" in what:
            r["render"] = bench_render(cfg, dev, repeat)
            log(f"[{name}] render {r['render']}")
        if "export" in what:
            r["export"] = bench_export(cfg, dev, repeat)
            log(f"[{name}] export {r['export']}")
        if "train-step" in what:
            step_repeat = repeat if cfg.model.image_size < 256 or dev.type == "cuda" else 1
            for content in ("offline", "vgg"):
                r[f"train_step_{content}"] = bench_train_step(cfg, dev, step_repeat, content)
                log(f"[{name}] train step ({content}) {r[f'train_step_{content}']}")
            r["train_step_parts"] = bench_train_step_parts(cfg, dev, max(step_repeat, 2))
            log(f"[{name}] train step by part {r['train_step_parts']}")
            r["train_step_speedups"] = bench_train_step_speedups(cfg, dev, repeat)
            log(f"[{name}] train step speed-ups {r['train_step_speedups']}")
        results["presets"][name] = r
    if "animate" in what:
        results["animate"] = bench_animate(dev)
        log(f"animate (shipped sample model) {results['animate']}")
    return results


# --- report -----------------------------------------------------------------------------------------

def _fmt_params(n: int | None) -> str:
    return "-" if n is None else (f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k")


def device_heading(results: dict[str, Any]) -> str:
    """The "### device: machine" heading of one machine's block (`write_section` replaces only that machine's)."""
    m, dev = results["machine"], results["device"]
    where = m.get("gpu", "") if dev.startswith("cuda") else f"{m['cpu']}, {m['cpu_count']} cores"
    return f"### {dev}: {where}"


def markdown(results: dict[str, Any]) -> str:
    """The body of the "Networks and training step" section for one device."""
    m = results["machine"]
    dev = results["device"]
    lines = [device_heading(results), "",
             f"{m['date']}, torch {m['torch']}, {m['torch_threads']} threads, RAM {m['ram_gib']} GiB. "
             "Generator: batch 1, psi computed once, no_grad. Embedder: K = 8 frames in one batch. Train step: "
             "batch 1, K = 8, one E/G update + 2 D updates; `vgg` = VGG19 + VGGFace present with random "
             "weights (pretrained files are not available offline; same cost). Peak memory of the step: "
             "the process's peak RSS on CPU (max allocated on CUDA) during the measured steps, and in "
             "brackets its growth over the start of the measurement (networks, VGG and optimiser states "
             "already built).", "",
             "| preset | px | E | G (P) | V | D | psi | G ms/frame | E ms (K=8) | step s (offline) | "
             "step s (vgg) | step peak MiB (vgg): process (growth) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["presets"].items():
        p = r.get("params", {})
        g, e = r.get("generator", {}), r.get("embedder", {})
        so, sv = r.get("train_step_offline", {}), r.get("train_step_vgg", {})
        lines.append(
            f"| {name} | {r['image_size']} | {_fmt_params(p.get('embedder'))} | {_fmt_params(p.get('generator'))} "
            f"({_fmt_params(p.get('projection'))}) | {_fmt_params(p.get('discriminator_V'))} | "
            f"{_fmt_params(p.get('discriminator'))} | {p.get('adain_params', '-')} | {g.get('ms_per_frame', '-')} | "
            f"{e.get('ms', '-')} | {so.get('s_per_step', '-')} | {sv.get('s_per_step', '-')} | "
            f"{sv.get('peak_mib', '-')} ({sv.get('peak_above_start_mib', '-')}) |")
    if dev.startswith("cuda"):
        lines += ["", "On CUDA the train step runs under bf16 autocast (train.amp, the default); generator and "
                  "embedder timings are fp32. At batch 1 these small kernels are bound by launch overhead."]
    else:
        precs = sorted({s["precision"] for r in results["presets"].values()
                        for s in (r.get("train_step_offline"), r.get("train_step_vgg")) if s and "precision" in s})
        if precs:
            lines += ["", f"The train step ran in {' / '.join(precs)} (train.amp_cpu = \"auto\": bf16 autocast where the "
                      "CPU has native bf16, AVX-512 BF16 / AMX; `--set train.amp_cpu=false` for fp32)."]
        lines += ["", "Reference (issue 2): two earlier public implementations on this 2-core CPU at 256 px with the "
                  "paper's widths: generator 710-790 ms/frame, embedder 2,200-2,400 ms for 8 frames, one "
                  "meta-training step (batch 1, K = 8, VGG19 + VGGFace) 12.7-15 s, 4.7-8.3 GiB peak memory."]
    return "\n".join(lines) + "\n"


GENERATED_END = "<!-- end of the text a benchmark command generates (--write); notes below it are kept -->"


def with_notes(generated: str, old: str = "") -> str:
    """A generated block of docs/benchmarks.md, ended by `GENERATED_END`, followed by the hand-written notes that
    followed the marker in the `old` block it replaces (none when `old` has no marker)."""
    notes = old.split(GENERATED_END, 1)[1].strip("\n") if GENERATED_END in old else ""
    return generated.rstrip("\n") + "\n\n" + GENERATED_END + ("\n\n" + notes if notes else "")


def write_section(path: str | os.PathLike, body: str, device_heading: str, section: str = SECTION,
                  intro: str = "Reproduce: `talking-heads bench --preset tiny --preset sample --preset paper --write "
                               "docs/benchmarks.md` (add `--device cuda` on a GPU).") -> None:
    """Insert or replace this device's block inside the "## `section`" section of `path` (created with
    `intro` when missing), in place. The block written ends with `GENERATED_END`; what follows that marker in
    the old block (hand-written notes on the measurement) is kept, a block without the marker is replaced
    whole. Other sections (other engineers' benchmarks) and other devices' blocks are kept."""
    from ..atomic import write_text

    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    head = f"## {section}"
    if head not in text:
        text = text.rstrip("\n") + f"\n\n{head}\n\n{intro}\n"
    start = text.index(head)
    nxt = text.find("\n## ", start + len(head))
    end = len(text) if nxt < 0 else nxt + 1
    blocks = text[start:end].split("\n### ")
    intro, rest = blocks[0], [b.rstrip("\n") for b in blocks[1:]]
    body = body.removeprefix("### ")
    ours = [i for i, b in enumerate(rest) if b.startswith(device_heading.removeprefix("### "))]
    if ours:
        rest[ours[0]] = with_notes(body, rest[ours[0]])
        rest = [b for i, b in enumerate(rest) if i not in ours[1:]]
    else:
        rest.append(with_notes(body))
    new_section = intro.rstrip("\n") + "\n" + "".join("\n### " + b + "\n" for b in rest)
    if nxt >= 0:
        new_section += "\n"
    write_text(path, text[:start] + new_section + text[end:])


def render_markdown(results: dict[str, Any]) -> str:
    """The body of the "Real-time rendering" section for one device (render / export / animate results)."""
    m = results["machine"]
    lines = [device_heading(results), "",
             f"{m['date']}, torch {m['torch']}, {m['torch_threads']} threads. Generator ms per frame at batch 1, "
             "random weights, psi fixed: `sn` = the generator as rendered before (spectral norm's W / sigma and "
             "psi's routing every frame, no_grad); `fp32` / `bf16` = the avatar-specialised renderer "
             "(inference.py: folded weights, fixed AdaIN, inference_mode; bf16 with channels_last); `onnxruntime` "
             "= its ONNX export (fp32), with its largest difference from fp32 PyTorch; `int8` = that export quantised "
             "(onnxruntime, static int8; speed only here). Timed in interleaved rounds "
             "(one call of each per round, medians), so other load on the machine weighs on all alike.", "",
             "| preset | px | generator | sn ms | fp32 ms | bf16 ms | onnxruntime ms | int8 ms | ONNX max diff | "
             "export s | ONNX MiB | default | speed-up of the default over sn |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["presets"].items():
        rr, ex = r.get("render"), r.get("export", {})
        if rr is None and not ex:
            continue
        rr = rr or {}
        default = rr.get("default")
        best = rr.get(f"{default}_ms")
        gain = f"{rr['sn_ms'] / best:.2f}x" if best and rr.get("sn_ms") else "-"
        lines.append(f"| {name} | {r['image_size']} | {rr.get('generator', '-')} | {rr.get('sn_ms', '-')} | "
                     f"{rr.get('fp32_ms', '-')} | {rr.get('bf16_ms', '-')} | {rr.get('onnxruntime_ms', '-')} | "
                     f"{rr.get('int8_ms', '-')} | "
                     f"{ex.get('max_abs_diff_vs_fp32', '-')} | {ex.get('export_s', '-')} | {ex.get('mib', '-')} | "
                     f"{default or '-'} | {gain} |")
    a = results.get("animate")
    if a:
        lines += ["", f"Shipped sample model ({a['image_size']} px, frames resized to {a['output_size']} px, "
                  f"precision {a['precision']}): `animate` of the `talk` motion (landmarks known: adapt, rasterise, "
                  f"render, resize, H.264 encode with labels) **{a['animate_fps']} frames/s** ({a['frames']} frames "
                  f"in {a['animate_s']} s); live stage one frame at a time (`LiveStage.step`) **{a['live_ms_median']} "
                  f"ms** per frame median, {a['live_ms_p95']} ms p95. Targets: >= 25 frames/s, < 40 ms."]
    return "\n".join(lines) + "\n"


def train_step_markdown(results: dict[str, Any]) -> str:
    """The body of the "Training step" section for one device (`bench_train_step_parts` / `_speedups`)."""
    m = results["machine"]
    rows = {n: r for n, r in results["presets"].items() if "train_step_parts" in r or "train_step_speedups" in r}
    lines = [device_heading(results), "",
             f"{m['date']}, torch {m['torch']}, {m['torch_threads']} threads. One meta-learning step (batch 1, "
             "K = 8, one E/G update + 2 D updates) of each preset with its own losses, random weights, a "
             "synthetic episode.", "",
             "Where the time goes (torch.profiler; each op's self time goes to the network it ran in, a "
             "backward op to the network of its forward op; ms = its share of the profile x the median "
             "unprofiled step, default settings):", ""]
    head = ["preset", "content loss, precision", "step ms", *PARTS]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        pr = r.get("train_step_parts")
        if not pr:
            continue
        cells = [f"{pr['parts'][p]['ms']} ({pr['parts'][p]['share'] * 100:.0f} %)" for p in PARTS]
        content = pr["content_loss"] + (f", {pr['precision']}" if "precision" in pr else "")
        lines.append(f"| {name} | {content} | {pr['step_ms']} | " + " | ".join(cells) + " |")
    names = list(dict.fromkeys(v for r in rows.values() for v in r.get("train_step_speedups", {}).get("ms", {})))
    if names:
        lines += ["", "Speed-ups: ms per step of each variant, timed in interleaved rounds with a rotating order "
                  "(medians; other load weighs on all alike), and in brackets the speed-up over `before` (the "
                  "step before issue 16: torch's per-tensor Adam loop, fp32). Settings: " + "; ".join(
                      f"`{n}` = {v}" for n, v in next(r["train_step_speedups"]["variants"] for r in rows.values()
                                                       if "train_step_speedups" in r).items()) + ".", "",
                  "| preset | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for name, r in rows.items():
            sp = r.get("train_step_speedups")
            if not sp:
                continue
            cells = [f"{sp['ms'][n]} ({sp['speedup'].get(n, 0):.2f}x)" if n in sp["ms"] else "-" for n in names]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(results: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(results, indent=2)
    parts = []
    if any(k in r for r in results["presets"].values() for k in ("params", "generator", "embedder",
                                                                  "train_step_offline", "train_step_vgg")):
        parts.append(markdown(results))
    if results.get("animate") or any("render" in r or "export" in r for r in results["presets"].values()):
        parts.append(render_markdown(results))
    if any("train_step_parts" in r or "train_step_speedups" in r for r in results["presets"].values()):
        parts.append(train_step_markdown(results))
    return "\n".join(parts)

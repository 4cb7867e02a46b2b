"""The meta-learning step (`talking-heads bench --what train-step`): batch 1, K = 8, random weights, a synthetic
episode; one E/G update + d_steps_per_g_step D updates, exactly `meta.meta_step`.

- `bench_train_step`: seconds per step with the offline content loss, with VGG19 + VGGFace present (random
  weights in the standard file layout: `synthetic.random_vgg_files`), or offline plus the dlib face terms.
- `bench_train_step_parts`: the preset's own step profiled with torch.profiler, each op's self time attributed
  to E, G, D (in the G step / in the D steps), the content loss, the face terms, DiffAugment, the two
  optimisers or "other" (`attribute_parts`: the step functions' profiler ranges, forward hooks on the networks
  (`network_ranges`), and autograd's sequence numbers for the ops of the backward passes).
- `bench_train_step_speedups`: the step with the unfused baseline settings (per-tensor Adam loop, fp32) next to
  fused Adam, bf16 autocast (train.amp_cpu) and channels_last networks, timed in interleaved rounds with a
  rotating order.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import replace
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from .. import dist
from ..config import Config, apply_overrides
from ..models import build_networks
from ..train import steps
from ..train.meta import build_meta_state, meta_step
from .synthetic import SyntheticEpisodes, collate, random_vgg_files
from .timing import interleaved, peak_memory, sync, time_it

EG_FORWARD, G_STEP, D_STEP = "meta.eg_forward", "steps.generator_step", "steps.discriminator_step"  # ranges
PARTS = ("E", "G", "D in the G step", "D in the D steps", "content loss", "face terms (dlib)", "augmentation",
         "optimiser E, G", "optimiser D", "other")
# variants of the step timed side by side: name -> --set overrides on the preset, "channels_last" for networks
# converted to that layout (measured only: training keeps NCHW). "before" is the unfused baseline (torch's
# per-tensor Adam loop, fp32); bf16 is CPU autocast (train.amp_cpu=true; the default "auto" picks it on CPUs
# with native bf16)
STEP_VARIANTS = {"before": ("train.adam=for-loop", "train.amp_cpu=false"),
                 "fused Adam": ("train.adam=fused", "train.amp_cpu=false"),
                 "fused Adam + channels_last": ("train.adam=fused", "train.amp_cpu=false", "channels_last"),
                 "fused Adam + bf16": ("train.adam=fused", "train.amp_cpu=true"),
                 "fused Adam + bf16 + channels_last": ("train.adam=fused", "train.amp_cpu=true", "channels_last")}


def step_state(cfg: Config, device: torch.device | str, k: int = 8, content: str | None = None) -> tuple:
    """(state, batch, cfg) of a meta-learning step at batch 1, K = k: `meta.build_meta_state` on networks with
    random weights (seed 0) and one synthetic episode on `device`. content: None keeps the config's content
    loss; "vgg" points it at random-weight VGG files (read while the loss is built, removed after); any other
    value is only checked against the loss built."""
    cfg = replace(cfg, train=replace(cfg.train, k_shot=k, batch_size=1))
    ctx = random_vgg_files(cfg) if content == "vgg" else contextlib.nullcontext(cfg)
    with ctx as run_cfg:
        torch.manual_seed(0)
        networks = build_networks(run_cfg, num_videos=2)
        state = build_meta_state(run_cfg, networks, dist.DistInfo(device=torch.device(device)))
    if content is not None and state.content_loss.mode != content:
        raise RuntimeError(f"expected the {content} content loss, got {state.content_loss.mode}")
    return state, collate([SyntheticEpisodes(run_cfg, num_episodes=1, k_shot=k)[0]], device), run_cfg


def bench_train_step(cfg: Config, device: torch.device, repeat: int, content: str, k: int = 8) -> dict[str, Any]:
    """Seconds per meta-learning step at batch 1, K = k, with the offline or the (random-weight) VGG loss, or
    the offline loss plus the dlib face terms ("offline+dlibface", the real pretrained weights)."""
    cfg = replace(cfg, loss=replace(cfg.loss, face_network="dlib" if content == "offline+dlibface" else ""))
    out: dict[str, Any] = {"k": k, "batch": 1, "content_loss": content}
    state, batch, run_cfg = step_state(cfg, device, k, content)
    with peak_memory(device, out):
        t = time_it(lambda: meta_step(state, batch, run_cfg), device, repeat=repeat, max_seconds=120)
    out.update(s_per_step=round(t["median_s"], 3), min_s=round(t["min_s"], 3), runs=t["runs"],
               d_steps_per_g_step=cfg.train.d_steps_per_g_step, precision=steps.step_precision(cfg.train, device))
    return out


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


_NETS = {"E", "D", "content", "face", "augment"}


def _ranges(e) -> tuple[str | None, str | None]:
    """(the innermost step range, the innermost network range) around the profiler event `e`."""
    phase = net = None
    while e is not None and (phase is None or net is None):
        if net is None and (e.name in _NETS or e.name.startswith("Optimizer.")):
            net = e.name
        if phase is None and e.name in (EG_FORWARD, G_STEP, D_STEP):
            phase = e.name
        e = e.cpu_parent
    return phase, net


def _engine_node(e):
    """The autograd engine's node around a backward op (None for a forward op)."""
    while e is not None:
        if e.name.startswith("autograd::engine::evaluate_function"):
            return e
        e = e.cpu_parent
    return None


def attribute_parts(events, device_time: bool = False) -> dict[str, float]:
    """Microseconds of each of PARTS in a profile of meta-learning steps taken inside `network_ranges`.

    Each op's self time goes to the innermost step range and network range around it; the ops of a backward
    pass go where their forward op ran (autograd's sequence numbers link them), so "D in the G step" is D's
    forward in the generator step plus the backward through it. `device_time`: the ops' self CUDA time
    instead of their CPU time."""
    forward: dict[tuple[int, int], tuple[str | None, str | None]] = {}
    placed = []
    for e in events:
        if e.device_type != DeviceType.CPU:  # kernels are counted in the self device time of the op launching them
            continue
        node = _engine_node(e)
        if node is None and e.sequence_nr >= 0:
            forward.setdefault((e.thread, e.sequence_nr), _ranges(e))
        placed.append((e, node))
    out = dict.fromkeys(PARTS, 0.0)
    for e, node in placed:
        where = forward.get((node.fwd_thread, node.sequence_nr)) if node is not None else None
        if where is None:
            where = (_ranges(e)[0], None) if node is not None else _ranges(e)
        out[_part(*where)] += e.self_device_time_total if device_time else e.self_cpu_time_total
    return out


def bench_train_step_parts(cfg: Config, device: torch.device, repeat: int, k: int = 8) -> dict[str, Any]:
    """Where a meta-learning step of the preset as configured (its own content loss) spends its time: the
    median step time unprofiled, and each part's share of a torch.profiler profile of `repeat` steps
    (`attribute_parts`), shown as ms of that median."""
    state, batch, cfg = step_state(cfg, device, k)
    t = time_it(lambda: meta_step(state, batch, cfg), device, warmup=2, repeat=repeat, max_seconds=120)
    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with network_ranges(state), profile(activities=acts) as prof:
        for _ in range(max(1, repeat)):
            meta_step(state, batch, cfg)
        sync(device)
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
    in interleaved rounds with a rotating order (`timing.interleaved`), and each one's speed-up over "before"."""
    variants = STEP_VARIANTS if variants is None else variants
    if device.type != "cpu":
        variants = {n: v for n, v in variants.items() if "train.amp_cpu=true" not in v}
    fns = {}
    for name, overrides in variants.items():
        sets = [o for o in overrides if o != "channels_last"]
        state, batch, run_cfg = step_state(apply_overrides(cfg, sets), device, k)
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

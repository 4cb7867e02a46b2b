"""`talking-heads bench`: what to measure, per preset, and the report (Markdown or JSON)."""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import torch

from ..config import Config, preset
from ..errors import InputError
from ..machine import describe
from .markdown import markdown, render_markdown, train_step_markdown
from .networks import bench_embedder, bench_generator, bench_params
from .render import bench_animate, bench_export, bench_render
from .train_step import bench_train_step, bench_train_step_parts, bench_train_step_speedups

WHAT = ("params", "generator", "embedder", "train-step", "render", "export", "animate")


def machine() -> dict[str, Any]:
    """The machine a measurement ran on (`machine.describe`)."""
    return describe()


def run_bench(presets: list[str], what: list[str], device: str = "cpu", repeat: int = 3,
              log: Callable[[str], None] = print, model_dir: str | None = None,
              size: int | None = None) -> dict[str, Any]:
    """{"machine", "device", "presets": {name: results}, "animate"?}: the `what` items (WHAT) of each preset on
    `device`, `repeat` timed runs per measurement; animate on `model_dir` (default: the shipped model) at
    `size`. InputError for an unknown item or preset."""
    # oneDNN keeps 1,024 compiled kernels by default: the step variants timed side by side (fp32, bf16,
    # channels_last) need more, and evicting them costs a recompile per call. Read at its first use.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16384")
    dev = torch.device(device)
    unknown = set(what) - set(WHAT)
    if unknown:
        raise InputError(f"unknown --what item(s) {sorted(unknown)}; choose from {', '.join(WHAT)}")
    results: dict[str, Any] = {"machine": machine(), "device": str(dev), "presets": {}}
    for name in presets:
        results["presets"][name] = bench_preset(name, preset(name), what, dev, repeat, log)
    if "animate" in what:
        results["animate"] = bench_animate(dev, model_dir=model_dir, size=size)
        log(f"animate ({model_dir or 'shipped sample model'}) {results['animate']}")
    return results


def bench_preset(name: str, cfg: Config, what: list[str], dev: torch.device, repeat: int,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """The per-preset `what` items (all but animate) of `run_bench`."""
    r: dict[str, Any] = {"image_size": cfg.model.image_size}
    if "params" in what:
        r["params"] = bench_params(cfg)
        log(f"[{name}] params {r['params']}")
    for item, fn in (("generator", bench_generator), ("embedder", bench_embedder), ("render", bench_render),
                     ("export", bench_export)):
        if item in what:
            r[item] = fn(cfg, dev, repeat)
            log(f"[{name}] {item} {r[item]}")
    if "train-step" in what:
        step_repeat = repeat if cfg.model.image_size < 256 or dev.type == "cuda" else 1
        for content in ("offline", "vgg"):
            r[f"train_step_{content}"] = bench_train_step(cfg, dev, step_repeat, content)
            log(f"[{name}] train step ({content}) {r[f'train_step_{content}']}")
        r["train_step_parts"] = bench_train_step_parts(cfg, dev, max(step_repeat, 2))
        log(f"[{name}] train step by part {r['train_step_parts']}")
        r["train_step_speedups"] = bench_train_step_speedups(cfg, dev, repeat)
        log(f"[{name}] train step speed-ups {r['train_step_speedups']}")
    return r


def report(results: dict[str, Any], as_json: bool) -> str:
    """JSON, or the Markdown of each section the results fill."""
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

"""`talking-heads bench` (speed and memory). Parsing only: the work is `talking_heads.bench`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import limits
from ..paths import input_path
from .common import resolve_device


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="parameter counts, inference and training-step speed, peak memory",
                       description="Benchmark the networks and one meta-learning step on synthetic inputs.")
    b.add_argument("--preset", action="append", default=None, help="preset to measure (repeatable; default tiny)")
    b.add_argument("--what", default="params,generator,embedder,train-step",
                   help="comma-separated subset of params,generator,embedder,train-step,render,export,animate "
                        "(train-step: seconds per meta-learning step, where they go by network (torch.profiler) "
                        "and the speed-ups of fused Adam, bf16 and channels_last; render: the avatar renderer in "
                        "each precision; export: ONNX and onnxruntime; animate: the shipped sample model end to "
                        "end and live)")
    b.add_argument("--device", default="cpu", help="cpu or cuda")
    b.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (median reported)")
    b.add_argument("--model", default=None, metavar="DIR", help="animate: this model directory (default: the shipped "
                   "sample model)")
    b.add_argument("--size", type=int, default=None, metavar="PX", help="animate: the output size (default: the "
                   "model's automatic one)")
    b.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    b.add_argument("--write", default=None, metavar="MD",
                   help="also write the results into the 'Networks and training step' section of this file")
    b.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from .. import bench  # torch and the networks: kept out of `talking-heads --help` (cli/__init__.py)

    presets = args.preset or ["tiny"]
    what = [w.strip() for w in args.what.split(",") if w.strip()]
    device = resolve_device(args.device)
    size = limits.check_frame_size(args.size, "--size")
    from ..pipeline import SHIPPED_MODELS

    model = args.model
    if model and not (model in SHIPPED_MODELS and not Path(model).exists()):
        model = str(input_path(model, "--model"))
    results = bench.run_bench(presets, what, device=device, repeat=args.repeat,
                              log=lambda s: print(s, file=sys.stderr, flush=True), model_dir=model, size=size)
    print(bench.report(results, args.json))
    if args.write:
        bench.write_sections(args.write, results, what)
        print(f"wrote {args.write}", file=sys.stderr)
    return 0

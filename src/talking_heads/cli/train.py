"""`talking-heads train` (meta-learning) and `talking-heads bench` (speed and memory). Parsing only."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="meta-learn E, G, D on preprocessed videos (resumes when --out holds a run)",
        description="Meta-learning (paper section 5). Single process: world size 1. Several GPUs or nodes: "
                    "launch the same command with torchrun (see the README).")
    p.add_argument("--preset", default=None, help="tiny | sample | paper (required for a new run)")
    p.add_argument("--data", required=True, help="preprocessed data folder (talking-heads preprocess)")
    p.add_argument("--out", required=True, help="run directory: log.jsonl, samples/, model/, training_state.pt")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override one config field (repeatable), e.g. --set train.batch_size=4")
    p.add_argument("--steps", type=int, default=None, help="total E/G updates (same as --set train.steps=N)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="checkpoint and stop after this much wall time (run again to resume)")
    p.add_argument("--init-from", default=None, metavar="MODEL_DIR",
                   help="a new run starts from this model's E, G, D (same preset and data) instead of random "
                        "weights, e.g. to go on training the shipped sample model")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)

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
    b.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    b.add_argument("--write", default=None, metavar="MD",
                   help="also write the results into the 'Networks and training step' section of this file")
    b.set_defaults(func=run_bench)


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..checkpoint import CheckpointError
    from ..config import Config, apply_overrides, preset
    from . import UserError
    from ..train import meta

    from .. import limits
    from ..paths import output_dir

    overrides = list(args.overrides)
    if args.steps is not None:
        if args.steps < 1:
            raise UserError(f"--steps {args.steps}: give at least 1 step")
        overrides.append(f"train.steps={args.steps}")
    if args.time_limit is not None:
        limits.finite_positive(args.time_limit, "--time-limit")
    output_dir(args.out, "--out", inputs=[args.data], inside_input_ok=True)  # the dataset reads its clips only
    resuming = meta.has_checkpoint(args.out)
    if not resuming and args.preset is None:
        raise UserError(f"{args.out} holds no run to resume: give --preset (tiny, sample or paper)")
    check_data(args.data)
    if args.init_from is not None:
        if resuming:
            raise UserError(f"--init-from applies to a new run, and {args.out} holds one to resume: drop it")
        from ..checkpoint import read_config

        read_config(args.init_from)  # a missing or broken model fails here, before anything is built
    try:
        cfg = preset(args.preset) if args.preset else None
        checked = apply_overrides(cfg or Config(), overrides)  # a bad --set fails here, before anything is built
    except ValueError as err:
        raise UserError(str(err)) from None
    _check_buildable(checked)
    if args.preset or args.steps is not None or any(o.startswith("train.steps=") for o in overrides):
        if checked.train.steps < 1:
            raise UserError(f"train.steps={checked.train.steps}: give at least 1 step")
        limits.check("steps", checked.train.steps, "--steps (train.steps)")
    try:
        model_dir = meta.train(args.out, cfg=cfg, overrides=overrides, data_dir=args.data, device=args.device,
                               progress=not args.no_progress, time_limit=args.time_limit,
                               init_from=args.init_from)
    except (meta.RunDirError, CheckpointError) as err:
        raise UserError(str(err)) from None
    finally:
        from .. import dist

        dist.cleanup()
    print(f"model: {model_dir}")
    return 0


def _check_buildable(cfg) -> None:
    """The networks the settings describe can be built (on the meta device: no memory, no time), so that
    inconsistent --set values (e.g. an embedding_dim that is not E's last width) are one line, exit 2."""
    import torch

    from ..models import build_networks
    from . import UserError

    try:
        with torch.device("meta"):
            build_networks(cfg, 1)
    except (ValueError, TypeError, ZeroDivisionError, IndexError, KeyError) as err:
        raise UserError(f"these settings do not describe networks that can be built: {err}") from None


def check_data(data: str) -> None:
    """--data must be a folder written by `talking-heads preprocess` holding usable clips."""
    from pathlib import Path

    from ..data import read_manifest
    from . import UserError

    path = Path(data)
    if not path.exists():
        raise UserError(f"--data {data}: no such folder")
    if not path.is_dir():
        raise UserError(f"--data {data}: not a folder (give the output folder of `talking-heads preprocess`)")
    if not (path / "preprocess.json").is_file() and not (path / "clips").is_dir():
        raise UserError(f"--data {data}: not a preprocessed folder (no preprocess.json or clips/); run "
                        f"`talking-heads preprocess VIDEOS {data}` first")
    if not any(r.get("status") == "ok" for r in read_manifest(path)):
        raise UserError(f"--data {data}: holds no preprocessed clip (every clip failed or was skipped, or the "
                        "folder is empty); see its manifest and failed/ folder")


def run_bench(args: argparse.Namespace) -> int:
    import sys

    from . import UserError
    from ..train import bench

    presets = args.preset or ["tiny"]
    what = [w.strip() for w in args.what.split(",") if w.strip()]
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device available")
    try:
        results = bench.run_bench(presets, what, device=args.device, repeat=args.repeat,
                                  log=lambda s: print(s, file=sys.stderr, flush=True))
    except ValueError as err:
        raise UserError(str(err)) from None
    print(bench.report(results, args.json))
    if args.write:
        heading = bench.device_heading(results)  # only this machine's block is replaced
        rendering = ("render", "export", "animate")
        if set(what) - set(rendering):
            bench.write_section(args.write, bench.markdown(results), heading)
        if set(what) & set(rendering):
            bench.write_section(args.write, bench.render_markdown(results), heading, section=bench.RENDER_SECTION,
                                intro="Reproduce: `talking-heads bench --preset sample --preset paper --what "
                                      "render,export,animate --write docs/benchmarks.md` (one thread: "
                                      "`OMP_NUM_THREADS=1`; add `--device cuda` on a GPU).")
        if "train-step" in what:
            bench.write_section(args.write, bench.train_step_markdown(results), heading, section=bench.TRAIN_SECTION,
                                intro=bench.TRAIN_INTRO)
        print(f"wrote {args.write}", file=sys.stderr)
    return 0

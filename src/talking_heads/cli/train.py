"""`talking-heads train` (meta-learning). Parsing only: the work is `talking_heads.train.meta.train`. Modules
that load torch or PyAV are imported inside the functions that use them, so that `talking-heads --help`
stays fast."""

from __future__ import annotations

import argparse

from .. import limits
from ..config import Config, apply_overrides, preset
from ..paths import output_dir
from . import UserError


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


def run_train(args: argparse.Namespace) -> int:
    from .. import dist
    from ..checkpoint import read_config
    from ..train import meta

    limits.check_steps(args.steps, "--steps")  # the flags first, then the folders
    overrides = list(args.overrides) + ([f"train.steps={args.steps}"] if args.steps is not None else [])
    limits.finite_positive(args.time_limit, "--time-limit")
    output_dir(args.out, "--out", inputs=[args.data], inside_input_ok=True)  # the dataset reads its clips only
    resuming = meta.has_checkpoint(args.out)
    if not resuming and args.preset is None:
        raise UserError(f"{args.out} holds no run to resume: give --preset (tiny, sample or paper)")
    check_data(args.data)
    if args.init_from is not None:
        if resuming:
            raise UserError(f"--init-from applies to a new run, and {args.out} holds one to resume: drop it")
        read_config(args.init_from)  # a missing or broken model fails here, before anything is built
    cfg = preset(args.preset) if args.preset else None
    _check_buildable(apply_overrides(cfg or Config(), overrides))  # a bad --set fails here, before anything is built
    try:
        model_dir = meta.train(args.out, cfg=cfg, overrides=overrides, data_dir=args.data, device=args.device,
                               progress=not args.no_progress, time_limit=args.time_limit,
                               init_from=args.init_from)
    finally:
        dist.cleanup()
    print(f"model: {model_dir}")
    return 0


def _check_buildable(cfg) -> None:
    """The networks the settings describe can be built (on the meta device: no memory, no time), so that
    inconsistent --set values (e.g. an embedding_dim that is not E's last width) are one line, exit 2."""
    import torch

    from ..models import build_networks

    try:
        with torch.device("meta"):
            build_networks(cfg, 1)
    except (ValueError, TypeError, ZeroDivisionError, IndexError, KeyError) as err:
        raise UserError(f"these settings do not describe networks that can be built: {err}") from None


def check_data(data: str) -> None:
    """--data must be a folder written by `talking-heads preprocess` holding usable clips (the dataset's own
    check, `data.layout.usable_clips`, run before anything is built)."""
    from ..data.layout import usable_clips

    usable_clips(data, "--data")

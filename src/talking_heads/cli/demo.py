"""`talking-heads demo`: the main job on built-in defaults (`make demo`). Parsing only: the work is
`talking_heads.demo.run_demo`, imported when the command runs (torch, PyAV), so that `talking-heads --help` stays
fast."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import limits
from ..paths import output_dir
from . import UserError
from .common import model_args, pipeline_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="animate a sample portrait with the shipped model (the README's first command)",
                       description="Makes an avatar of scikit-image's astronaut portrait with the shipped sample "
                                   "model, drives it with a built-in motion, and, when ../shared/data is present, "
                                   "puppeteers a painting with a test-split video. Writes mp4 videos, PNG contact "
                                   "sheets and the avatar directory into --out, all labelled synthetic.")
    p.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    model_args(p)
    p.add_argument("--data", default=None, metavar="DIR",
                   help="real footage folder (default $TALKING_HEADS_DATA or ../shared/data when present)")
    p.add_argument("--ff", action="store_true", help="feed-forward avatars only (no fine-tuning; instant)")
    p.add_argument("--epochs", type=int, default=None, metavar="N", help="FT epochs (default finetune.epochs = 40)")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="length of the built-in motion (default inference.motion_seconds)")
    p.add_argument("--driver-seconds", type=float, default=None, metavar="SECONDS",
                   help="use only the first SECONDS of the puppeteering driver (default: all of it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import missing_footage, run_demo

    # every option is checked before the first minute of work (fine-tuning comes first)
    if args.epochs is not None and args.ff:
        raise UserError("--epochs applies to fine-tuning; drop --ff")
    limits.check_epochs(args.epochs, "--epochs")
    limits.check_seconds(args.duration, "--duration")
    limits.check_seconds(args.driver_seconds, "--driver-seconds")
    if args.data is not None:
        if not Path(args.data).is_dir():
            raise UserError(f"--data {args.data}: no such folder")
        if missing := missing_footage(Path(args.data)):
            raise UserError(f"--data {args.data}: lacks {missing}, which the demo puppeteers (give the real "
                            "footage folder, ../shared/data, or omit --data)")
    output_dir(args.out, "--out", inputs=[args.data])
    pipe = pipeline_from_args(args)
    result = run_demo(args.out, pipe=pipe, data_dir=args.data, finetune=not args.ff, epochs=args.epochs,
                      duration=args.duration, driver_seconds=args.driver_seconds, progress=not args.no_progress)
    parts = ", ".join(f"{name} {sec:.0f} s" for name, sec in result.seconds.items())
    print(f"demo written to {Path(args.out).resolve()} in {sum(result.seconds.values()):.0f} s ({parts}):")
    for what, path in result.outputs:
        print(f"  {path}  ({what})")
    if result.background_change is not None:
        print(f"  the painting's background outside the person changes {result.background_change:.2f}/255 per "
              "frame on average (paste-back through the head mask)")
    for msg in result.skipped:
        print(f"  skipped: {msg}")
    print("every output carries a synthetic marker and watermark: check with `talking-heads verify FILE`")
    return 0

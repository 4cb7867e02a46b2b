"""`talking-heads export-model`: the release copy of a trained model (fp16 weights). Parsing only: the work is
`talking_heads.release.export_model`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-model", help="copy a trained model directory for shipping (fp16 weights)",
                       description="Writes the meta-learned model directory MODEL_DIR (RUN_DIR/model of "
                                   "`talking-heads train`) to OUT_DIR in the same self-describing format with its "
                                   "weights stored as float16 (loaded back into fp32 networks). This is how the "
                                   "shipped sample model (src/talking_heads/assets/sample_model) is made. OUT_DIR "
                                   "is written atomically; an existing model directory there is replaced.")
    p.add_argument("src", metavar="MODEL_DIR", help="model directory written by `talking-heads train` (RUN_DIR/model)")
    p.add_argument("dst", metavar="OUT_DIR", help="destination model directory")
    p.add_argument("--dtype", default="float16", help="weight dtype: float16 (default), bfloat16 or float32")
    p.add_argument("--set", action="append", default=[], metavar="inference.FIELD=VALUE", dest="overrides",
                   help="a rendering setting the released copy carries (repeatable), e.g. inference.max_yaw=15")
    p.set_defaults(func=run_export_model)


def run_export_model(args: argparse.Namespace) -> int:
    from ..release import export_model  # torch: kept out of `talking-heads --help` (cli/__init__.py)

    out = export_model(args.src, args.dst, args.dtype, names={"dst": "OUT_DIR", "dtype": "--dtype"},
                       overrides=args.overrides)
    total = sum(f.stat().st_size for f in out.iterdir())
    print(f"{out}: {total / 2**20:.1f} MiB")
    return 0

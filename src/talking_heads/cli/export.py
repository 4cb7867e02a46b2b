"""`talking-heads export`: an avatar's specialised generator as ONNX. Parsing only: the work is
`talking_heads.inference.export_avatar`. Modules that load torch are imported when the command runs, so that
`talking-heads --help` stays fast; onnx is an optional dependency."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..paths import output_file
from . import UserError
from .common import model_args, pipeline_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write an avatar's generator as an ONNX model (landmark image in, frame out)",
                       description="Writes the avatar-specialised generator (spectral norm, psi' and, for the warp "
                                   "generator, the source frames folded in; fp32, or int8 with --precision int8, "
                                   "calibrated on the avatar; opset 17) as ONNX: input "
                                   "'landmarks' (B,3,S,S) in [-1,1], output 'frame' (B,3,S,S) in [-1,1]. Run it with "
                                   "onnxruntime: `talking-heads animate --avatar DIR --backend onnxruntime --onnx "
                                   "FILE`, or any ONNX runtime. Frames rendered with it are synthetic media: label "
                                   "what you publish (talking-heads animate does).")
    p.add_argument("avatar", metavar="AVATAR_DIR", help="an avatar directory (talking-heads avatar create)")
    p.add_argument("-o", "--out", required=True, metavar="FILE.onnx", help="ONNX file to write")
    model_args(p)
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from ..avatar import Avatar
    from ..inference import export_avatar

    output_file(args.out, "-o", suffixes=[".onnx"], inputs=[args.avatar])
    try:
        import onnx  # noqa: F401
    except ModuleNotFoundError:
        raise UserError("export needs the onnx package: pip install onnx onnxruntime") from None
    pipe = pipeline_from_args(args)
    avatar = Avatar.load(args.avatar, pipe)
    precision = "int8" if args.precision == "int8" else "fp32"  # the file is fp32 unless asked for int8
    meta = export_avatar(pipe, avatar, args.out, precision)
    size = Path(args.out).stat().st_size
    print(f"onnx: {args.out} ({size / 2**20:.1f} MiB, {precision}; {meta['image_size']} px, {meta['generator']} generator, "
          f"avatar {meta['avatar_fingerprint']}); run it with --backend onnxruntime --onnx {args.out}")
    return 0

"""`talking-heads identity compare`: are these the same person? Parsing only: the work is
`talking_heads.identity` (dlib's face ResNet, our PyTorch port), imported when the command runs (torch), so that
`talking-heads --help` stays fast."""

from __future__ import annotations

import argparse
import json
import math

from . import UserError
from .common import resolve_device

EPILOG = ("Distances are Euclidean distances of dlib's 128-D face descriptors; dlib counts two faces as one person "
          "below 0.6 (99.38 % on LFW). Exit status: 0 when every file was described, 2 when a file cannot be "
          "read or has no face or several faces.")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("identity", help="face identity: are these photos or videos the same person?",
                       description="Face identity with dlib's face-recognition ResNet (shipped in "
                                   "face-recognition-models), run in PyTorch.")
    actions = p.add_subparsers(dest="identity_command", metavar="ACTION", required=True)
    c = actions.add_parser("compare", help="pairwise distances and same-person verdicts", epilog=EPILOG,
                           description="Describes the one face of each photo (or the mean over T frames of each "
                                       "video) and prints every pair's distance and verdict.")
    c.add_argument("files", nargs="+", metavar="FILE", help="photos, videos or folders of frames (at least 2)")
    c.add_argument("--frames", type=int, default=8, metavar="T", help="frames spread over each video (default 8)")
    c.add_argument("--threshold", type=float, default=None, metavar="D",
                   help="same-person distance (default dlib's 0.6)")
    c.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    c.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    c.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    from ..identity import SAME_PERSON_DISTANCE, compare, describe
    from ..metrics.csim import FaceDescriptor

    if len(args.files) < 2:
        raise UserError("give at least two files to compare")
    if args.frames < 1 or args.frames > 1000:
        raise UserError(f"--frames {args.frames}: expected 1 to 1000 frames per video")
    threshold = SAME_PERSON_DISTANCE if args.threshold is None else args.threshold
    if not (math.isfinite(threshold) and 0 < threshold < 10):
        raise UserError(f"--threshold {args.threshold}: expected a distance between 0 and 10 (dlib uses 0.6)")
    net = FaceDescriptor(device=resolve_device(args.device))
    people = [describe(f, frames=args.frames, descriptor=net) for f in args.files]
    pairs = compare(people, threshold)
    if args.json:
        print(json.dumps({"threshold": threshold,
                          "files": [{"file": p.source, "faces": p.frames, "face_px": round(p.face_px, 1)}
                                    for p in people],
                          "pairs": [c.to_dict() for c in pairs]}, indent=2))
        return 0
    width = max(len(p.source) for p in people)
    for c in pairs:
        verdict = "same person" if c.same else "different people"
        print(f"{c.a:<{width}}  {c.b:<{width}}  distance {c.distance:.3f}  {verdict}")
    print(f"(same person below {threshold:g}; "
          f"{sum(c.same for c in pairs)} of {len(pairs)} pair(s) match)")
    return 0

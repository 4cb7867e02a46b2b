"""`talking-heads preprocess INPUT OUT`: head crops + landmarks for meta-learning. Parsing only (the job:
talking_heads/data/preprocess.py; the output layout: talking_heads/data/layout.py). The job's module (PyAV,
OpenCV) is imported when the command runs, so that `talking-heads --help` stays fast."""

from __future__ import annotations

import argparse

from ..config import Config, ModelConfig, apply_overrides
from ..paths import input_path, output_dir
from . import UserError
from .common import flag_names


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preprocess", help="detect landmarks once, crop heads, write per-clip folders + manifest (resumable)",
        description="Turn videos (mp4/mov/avi/webm/..., any size and fps), folders of frames or a VoxCeleb2 "
                    "tree id/video/clip.mp4 into VoxCeleb-style head crops with 68-point landmarks "
                    "(paper.md section 2). Re-running skips finished clips. Exit code 1 when any clip of "
                    "this shard failed or was skipped (reasons in the manifest and OUT/failed/).")
    p.add_argument("input", metavar="INPUT", help="video file, folder of frames, or folder tree of videos")
    p.add_argument("out", metavar="OUT", help="output folder (layout: talking_heads/data/layout.py)")
    p.add_argument("--size", type=int, default=ModelConfig.image_size,
                   help=f"crop resolution in px (default {ModelConfig.image_size}, the paper model's)")
    p.add_argument("--max-frames", type=int, default=None,
                   help="keep at most N evenly spaced frames per clip (default: data.max_frames, 0 = all)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--shard-index", type=int, default=0, help="this job's shard (0-based), e.g. $SLURM_ARRAY_TASK_ID")
    p.add_argument("--num-shards", type=int, default=1, help="number of shards the corpus is split into")
    p.add_argument("--manifest", default=None, metavar="CSV",
                   help="CSV with columns path,identity (paths relative to the CSV or to INPUT)")
    p.add_argument("--retry-failed", action="store_true", help="retry clips that failed before (default: skip "
                                                                 "them while their file is unchanged)")
    p.add_argument("--merge-manifests", action="store_true",
                   help="only write OUT/manifest.jsonl, listing the clip folders (e.g. after a job array)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="data.FIELD=VALUE",
                   help="override a data setting, e.g. --set data.crop_scale=2.0 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import preprocess as pp

    if args.merge_manifests:
        path = pp.merge_manifests(args.out, rebuild=True)
        print(f"manifest: {path}")
        return 0
    input_path(args.input, "INPUT")
    # OUT inside INPUT is skipped by the walk; OUT == INPUT or INPUT inside OUT would read its own crops
    output_dir(args.out, "OUT", inputs=[args.input], inside_input_ok=True)
    job = dict(size=args.size, max_frames=args.max_frames, workers=args.workers, shard_index=args.shard_index,
               num_shards=args.num_shards, manifest=args.manifest)
    pp.check_job(**job, names=flag_names(job))
    bad = [o for o in args.overrides if not o.startswith("data.")]
    if bad:
        raise UserError(f"only data.* settings apply to preprocessing, got {bad}")
    cfg = apply_overrides(Config(), args.overrides).data
    report = pp.preprocess(args.input, args.out, data_cfg=cfg, retry_failed=args.retry_failed,
                           progress=not args.no_progress, **job)
    print(pp.summary(report))
    for rec in report.records:
        if rec["status"] != "ok":
            print(f"  {rec['status']}: {rec['source']}: {rec['reason']}")
    return 0 if report.all_ok else 1

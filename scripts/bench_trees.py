"""Two source trees of talking-heads timed against each other, interleaved: did a change make rendering or
training slower? Each round runs one worker process per tree (before, after, then after, before: the order
alternates), each worker importing the package from its tree's src/ and measuring, on the shipped sample model
and the sample preset:
- animate: `pipeline.animate` of the built-in talk motion end to end (frames per second) and the live stage one
  frame at a time (median ms), as `talking-heads bench --what animate`;
- the meta-learning step: seconds per step of the sample preset at batch 1, K = 8, with the content loss the
  sample model trains with (offline + dlib face terms), as `talking-heads bench --what train-step`.

    git worktree add ../before HEAD~1
    OMP_NUM_THREADS=1 python scripts/bench_trees.py --before ../before --after . --rounds 3 [--json out.json]

Prints a Markdown table of medians over rounds with after/before ratios."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import json, sys
import torch
from talking_heads.config import preset
try:
    from talking_heads.bench import bench_animate, bench_train_step
except ImportError:  # trees from before the bench package
    from talking_heads.train.bench import bench_animate, bench_train_step
dev = torch.device("cpu")
anim = bench_animate(dev, seconds=float(sys.argv[1]))
step = bench_train_step(preset("sample"), dev, int(sys.argv[2]), "offline+dlibface")
print("RESULT " + json.dumps({"animate_fps": anim["animate_fps"], "live_ms": anim["live_ms_median"],
                              "step_s": step["s_per_step"], "precision": step["precision"]}))
"""

METRICS = (("animate_fps", "animate, frames/s (higher is better)"), ("live_ms", "live stage, ms per frame (median)"),
           ("step_s", "sample meta-learning step, s (offline + dlib face terms)"))


def run_worker(tree: Path, seconds: float, repeat: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    out = subprocess.run([sys.executable, "-c", WORKER, str(seconds), str(repeat)], env=env, cwd=tree,
                         capture_output=True, text=True, check=False)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if out.returncode or line is None:
        raise SystemExit(f"worker in {tree} failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(line[len("RESULT "):])


def table(runs: dict[str, list[dict]]) -> str:
    rows = ["| measurement | before | after | after / before |", "|---|---|---|---|"]
    for key, label in METRICS:
        b = statistics.median(r[key] for r in runs["before"])
        a = statistics.median(r[key] for r in runs["after"])
        rows.append(f"| {label} | {b:g} | {a:g} | {a / b:.3f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="source tree before the change (has src/)")
    ap.add_argument("--after", type=Path, required=True, help="source tree after the change")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds of the animated motion")
    ap.add_argument("--step-repeat", type=int, default=5, help="timed meta-learning steps per worker")
    ap.add_argument("--json", type=Path, default=None, help="also write every round's figures here")
    args = ap.parse_args(argv)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    for name, tree in trees.items():
        if not (tree / "src" / "talking_heads").is_dir():
            ap.error(f"--{name} {tree} holds no src/talking_heads")
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for r in range(args.rounds):
        order = ("before", "after") if r % 2 == 0 else ("after", "before")
        for name in order:
            runs[name].append(run_worker(trees[name], args.seconds, args.step_repeat))
            print(f"round {r + 1} {name}: {runs[name][-1]}", file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loss curves of two short meta-learning runs side by side: fp32 and bf16 autocast on CPU (`train.amp_cpu`).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_train_precision.py --data runs/data_train_128_all \
        --out runs/issue16 --steps 450 --time-limit 360 --png docs/images/train_bf16_vs_fp32.png

Trains `--preset` (default sample) twice into OUT/curves_fp32 and OUT/curves_bf16 with the project's own
`talking-heads train` (same seed, data and settings; `--set train.amp_cpu=false` / `=true`; a run already
there resumes or is kept), then draws each logged loss of both runs against the step and prints, per loss, the
mean over the last `--window` logged steps both runs reached, and the median seconds per step.

Two run folders trained elsewhere, e.g. an A/B continuing one checkpoint (copy a run folder twice, resume one
copy with `--set train.amp_cpu=false` and the other with `=true` to the same step):

    .venv/bin/python scripts/bench_train_precision.py --fp32-run runs/ab_fp32 --bf16-run runs/ab_bf16 \
        --from-step 8608 --smooth 20 --window 50 --png docs/images/train_bf16_vs_fp32_ab.png
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from talking_heads.train.curves import read_log  # noqa: E402

RUNS = {"fp32": ["--set", "train.amp_cpu=false"], "bf16": ["--set", "train.amp_cpu=true"]}
PANELS = (("g_cnt", "content loss L_CNT (offline x10 + face terms)"), ("g_cnt_face", "face term (dlib)"),
          ("g_cnt_id", "identity term (dlib)"), ("g_fm", "feature matching L_FM"), ("g_adv", "-D(x_fake)"),
          ("d_loss", "discriminator hinge loss"), ("d_real", "D(x_real)"), ("d_fake", "D(x_fake)"))


def train(run: Path, extra: list[str], args) -> None:
    cmd = [str(ROOT / ".venv/bin/talking-heads"), "train", "--preset", args.preset, "--data", args.data, "--out",
           str(run), "--steps", str(args.steps), "--time-limit", str(args.time_limit), "--no-progress",
           "--set", "train.num_workers=0", *extra]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="preprocessed training data (talking-heads preprocess), to train the two runs")
    p.add_argument("--out", help="folder for the two runs")
    p.add_argument("--preset", default="sample")
    p.add_argument("--steps", type=int, default=450)
    p.add_argument("--time-limit", type=float, default=360.0, help="seconds per run")
    p.add_argument("--window", type=int, default=10, help="logged steps averaged at the end")
    p.add_argument("--png", default="docs/images/train_bf16_vs_fp32.png")
    p.add_argument("--no-train", action="store_true", help="only plot the runs already in --out")
    p.add_argument("--fp32-run", help="plot this run folder as fp32 (with --bf16-run; trains nothing)")
    p.add_argument("--bf16-run", help="plot this run folder as bf16 (with --fp32-run)")
    p.add_argument("--from-step", type=int, default=0, help="only log lines after this step (e.g. the A/B's start)")
    p.add_argument("--smooth", type=int, default=1, help="running mean over this many logged steps in the plot")
    args = p.parse_args(argv)
    if bool(args.fp32_run) != bool(args.bf16_run):
        p.error("give both --fp32-run and --bf16-run")
    if not args.fp32_run and not args.out:
        p.error("give --out (and --data), or --fp32-run and --bf16-run")
    logs = {}
    for name, extra in RUNS.items():
        given = args.fp32_run if name == "fp32" else args.bf16_run
        run = Path(given) if given else Path(args.out) / f"curves_{name}"
        if not given and not args.no_train:
            train(run, extra, args)
        logs[name] = [r for r in read_log(run / "log.jsonl") if r["step"] > args.from_step]
    last = min(max(r["step"] for r in rows) for rows in logs.values())

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, t) for k, t in PANELS if all(k in rows[0] for rows in logs.values())]
    cols = 4
    fig, axes = plt.subplots((len(panels) + cols - 1) // cols, cols, figsize=(4.2 * cols, 3.2 * 2),
                             constrained_layout=True, squeeze=False)
    print(f"| loss | fp32 | bf16 | (mean over the last {args.window} logged steps <= {last}) |\n|---|---|---|---|")
    for ax, (key, title) in zip(axes.flat, panels):
        for name, rows in logs.items():
            pts = np.array([(r["step"], r[key]) for r in rows if key in r and r["step"] <= last])
            n = max(1, min(args.smooth, len(pts)))
            ys = np.convolve(pts[:, 1], np.ones(n) / n, mode="valid")
            ax.plot(pts[n - 1:, 0], ys, label=name, lw=1.2)
        means = [np.mean([r[key] for r in rows if key in r and r["step"] <= last][-args.window:])
                 for rows in logs.values()]
        print(f"| {key} | {means[0]:.4f} | {means[1]:.4f} | |")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{args.preset} preset, fp32 vs bf16 autocast on CPU (train.amp_cpu), same seed and data"
                 + (f", running mean of {args.smooth} logged steps" if args.smooth > 1 else ""), fontsize=10)
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=110)
    for name, rows in logs.items():
        sec = np.median([r["sec_per_step"] for r in rows])
        print(f"{name}: to step {max(r['step'] for r in rows)}, median {sec:.3f} s per step (logged, data loading "
              "included)")
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

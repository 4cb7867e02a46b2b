"""Loss curves of a meta-learning run: RUN_DIR/log.jsonl -> a PNG plot (written at every checkpoint).

    python -m talking_heads.train.curves RUN_DIR [-o PNG]

Panels: generator terms (L_CNT, -D as L_ADV's first term, L_FM, L_MCH, total), discriminator hinge loss, the
realism scores D(x_real), D(x_fake), and the embedder's mean |e_hat| (a collapse shows as 0). Raw values are drawn
thin, a moving average over `smooth` log lines thick.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from ..atomic import atomic_path

CURVES_FILE = "loss_curves.png"
PANELS = (
    ("generator side (E, G)", ("g_total", "g_cnt", "g_adv", "g_fm", "g_mch")),
    ("discriminator hinge loss", ("d_loss",)),
    ("realism score r", ("d_real", "d_fake")),
    ("embedder output mean |e_hat| (0 = collapsed)", ("e_hat_abs",)),
)


def read_log(path: str | os.PathLike) -> list[dict]:
    """The JSON lines of a run's log (a line cut by a kill is skipped)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _moving_average(v: np.ndarray, n: int) -> np.ndarray:
    if len(v) < n or n < 2:
        return v
    kernel = np.ones(n) / n
    head = np.array([v[: i + 1].mean() for i in range(n - 1)])
    return np.concatenate([head, np.convolve(v, kernel, mode="valid")])


def plot_losses(log_path: str | os.PathLike, out: str | os.PathLike, smooth: int = 20) -> Path | None:
    """Write the loss-curve PNG for `log_path`; None when the log has no rows yet."""
    import matplotlib  # lazy: a heavy import, and the Agg backend must be chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    if not rows:
        return None
    steps = np.array([r["step"] for r in rows])
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 3.6), constrained_layout=True)
    for ax, (title, keys) in zip(axes, PANELS):
        for key in keys:
            v = np.array([r.get(key, np.nan) for r in rows], dtype=float)
            if not np.isfinite(v).any():
                continue
            line, = ax.plot(steps, v, lw=0.5, alpha=0.35)
            ax.plot(steps, _moving_average(np.nan_to_num(v), smooth), lw=1.6, color=line.get_color(), label=key)
        ax.set_title(title)
        ax.set_xlabel("step (E/G updates)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, alpha=0.6)
    fig.suptitle(f"meta-learning: {Path(log_path).parent.name}", fontsize=10)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="plot a meta-learning run's losses (RUN_DIR/log.jsonl)")
    p.add_argument("run_dir")
    p.add_argument("-o", "--out", default=None, help=f"PNG to write (default RUN_DIR/{CURVES_FILE})")
    p.add_argument("--smooth", type=int, default=20, help="moving-average window in log lines (default 20)")
    args = p.parse_args(argv)
    log_path = Path(args.run_dir) / "log.jsonl"
    if not log_path.is_file():
        print(f"{log_path}: no such file (is {args.run_dir} a training run?)", file=sys.stderr)
        return 2
    out = plot_losses(log_path, args.out or Path(args.run_dir) / CURVES_FILE, args.smooth)
    print(out if out else f"{log_path} has no rows yet")
    return 0


if __name__ == "__main__":
    sys.exit(main())

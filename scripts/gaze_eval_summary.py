"""Gaze figures of `talking-heads evaluate` runs (values.jsonl): self-reenactment gaze error (frames where both the
generated and the real frame show an iris) and its horizontal / vertical correlation over each video, and the
cross-identity gaze error against the driver's frames, adaptation on and off; SSIM, PSNR and landmark error
beside them, so that a gaze change is seen with what it costs.

    .venv/bin/python scripts/gaze_eval_summary.py runs/eval_gaze_off runs/eval_gaze_on
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def _mean(values) -> float | None:
    v = [x for x in values if isinstance(x, (int, float)) and np.isfinite(x)]
    return float(np.mean(v)) if v else None


def summary(folder: Path) -> dict:
    rows = [json.loads(line) for line in (folder / "values.jsonl").read_text().splitlines() if line.strip()]
    out: dict = {"run": str(folder)}
    for method in ("ff", "nearest"):
        video = [r for r in rows if r.get("record") == "video" and r.get("method") == method]
        for name in ("ssim", "psnr", "landmark_error", "gaze_error"):
            out[f"self_{method}_{name}"] = _mean(r["value"] for r in video if r["metric"] == name)
        for axis in ("corr_x", "corr_y"):
            out[f"self_{method}_gaze_{axis}"] = _mean(r.get(axis) for r in video if r["metric"] == "gaze_error")
    for adapt in (False, True):
        cross = [r for r in rows if r.get("record") == "cross" and r.get("adapt") == adapt]
        key = "adapt" if adapt else "paper"
        for name in ("gaze_error", "landmark_error"):
            out[f"cross_{key}_{name}"] = _mean(r["values"][name]["value"] for r in cross if name in r["values"])
        out[f"cross_{key}_gaze_corr_x"] = _mean(r["values"]["gaze_error"].get("corr_x") for r in cross
                                                if "gaze_error" in r["values"])
    return out


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(json.dumps(summary(Path(arg))))

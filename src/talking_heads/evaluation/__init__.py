"""Evaluation of a meta-learned model the way the paper measured itself (paper.md section 7).

- `protocol.py`  self-reenactment: few-shot / hold-out splits, FF and FT avatars, nearest-shot baseline,
                 metrics from `talking_heads.metrics`, timings (`Evaluation`, `split_frames`, `nearest_shot`)
- `cross.py`     cross-identity puppeteering, landmark adaptation on and off (`CrossEvaluation`)
- `report.py`    report.md (Table 1 and timing table beside the paper's numbers), values.jsonl, image grids
- `userstudy.py` the USER metric: an HTML kit of triplets (two real, one generated) and its scoring

`evaluate(model_dir, data_dir, out, ...)` runs the whole thing through the inference pipeline and writes the
report; `talking-heads evaluate` calls it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

from ..config import apply_overrides
from ..pipeline import TalkingHeadPipeline
from .protocol import (BASELINE, METHOD_LABELS, VARIANTS, Evaluation, EvaluationResult, FrameSplit, NotEnoughFrames,
                       default_device, nearest_shot, normalise_landmarks, portable_path, select_videos, split_frames)
from .report import write_report


def with_eval_settings(cfg, **settings: Any):
    """The Config with `eval` fields replaced (lists become tuples, as the dataclass declares them)."""
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, **fixed))


def evaluate(model_dir: str | os.PathLike, data_dir: str | os.PathLike, out: str | os.PathLike, *,
             device: str | None = None, progress: bool = True, command: str | None = None,
             recipe: Sequence[str] = (), **settings: Any) -> tuple[EvaluationResult, dict[str, Path]]:
    """Evaluate `model_dir` on the preprocessed test clips in `data_dir`, write the report into `out`.

    `settings` override `EvalConfig` fields (shots, holdout, variants, videos, epochs, cross, fid_weights, ...);
    the rest come from the model's config (`cfg.eval`, defaults = the paper's protocol). `recipe` holds
    `finetune.FIELD=VALUE` / `loss.FIELD=VALUE` overrides of the model's config for fine-tuning FT avatars
    (e.g. a step budget, augmentation, the identity term), recorded in the report.
    """
    device = device or default_device()
    pipe = TalkingHeadPipeline.from_pretrained(model_dir, device=device)
    if recipe:
        pipe.set_config(apply_overrides(pipe.cfg, list(recipe)))
    cfg = with_eval_settings(pipe.cfg, **settings)
    run_info = {"model_dir": portable_path(model_dir), "command": command, "ft_recipe_overrides": list(recipe)}
    result = Evaluation(pipe, data_dir, cfg, device=device, progress=progress, run_info=run_info).run()
    return result, write_report(result, out)


__all__ = ["BASELINE", "METHOD_LABELS", "VARIANTS", "Evaluation", "EvaluationResult", "FrameSplit", "NotEnoughFrames",
           "default_device", "evaluate", "nearest_shot", "normalise_landmarks", "select_videos", "split_frames", "with_eval_settings"]

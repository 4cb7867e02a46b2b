"""Evaluation reports: a Markdown report laid out like the paper's Table 1 and timing table, JSON lines of every
value, and image grids (paper.md section 7).

Files written into the report folder (each atomically):
    report.md       what was used; Table 1 (FID, SSIM, CSIM, USER) with the paper's VoxCeleb2 numbers beside
                    ours, labelled as a different dataset and model size; further metrics (PSNR, L1, LPIPS,
                    landmark error); cross-identity puppeteering; timing table with the paper's P40 timings;
                    the grids; the paper's whole Table 1 quoted; notes
    values.jsonl    one JSON object per line, `record` says which: "run" (settings), "metric_info", "table"
                    (one per (T, method, metric)), "video" (per video, with per-frame values), "timing",
                    "cross", "skipped", "paper_table1", "paper_timing". Non-finite numbers are strings
                    ("inf", "nan"); unavailable metrics have value null and available false.
    grids/grid_T{T}.png   rows of hold-out frames: source (first few-shot frame) | ground truth | FF | FT |
                    nearest shot (the methods that were run), labelled with the provenance marker
The paper's numbers below are copied from ../shared/design/paper.md section 7.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from .. import media
from ..atomic import atomic_path
from ..metrics import MetricValue
from .protocol import BASELINE, METHOD_LABELS, VARIANTS, EvaluationResult

# paper Table 1: (dataset, method, T) -> (FID, SSIM, CSIM, USER)
PAPER_TABLE1: dict[tuple[str, str, int], tuple[float, float, float, float]] = {
    ("VoxCeleb1", "X2Face", 1): (45.8, 0.68, 0.16, 0.82),
    ("VoxCeleb1", "Pix2pixHD", 1): (42.7, 0.56, 0.09, 0.82),
    ("VoxCeleb1", "Ours", 1): (43.0, 0.67, 0.15, 0.62),
    ("VoxCeleb1", "X2Face", 8): (51.5, 0.73, 0.17, 0.83),
    ("VoxCeleb1", "Pix2pixHD", 8): (35.1, 0.64, 0.12, 0.79),
    ("VoxCeleb1", "Ours", 8): (38.0, 0.71, 0.17, 0.62),
    ("VoxCeleb1", "X2Face", 32): (56.5, 0.75, 0.18, 0.85),
    ("VoxCeleb1", "Pix2pixHD", 32): (24.0, 0.70, 0.16, 0.71),
    ("VoxCeleb1", "Ours", 32): (29.5, 0.74, 0.19, 0.61),
    ("VoxCeleb2", "Ours-FF", 1): (46.1, 0.61, 0.42, 0.43),
    ("VoxCeleb2", "Ours-FT", 1): (48.5, 0.64, 0.35, 0.46),
    ("VoxCeleb2", "Ours-FF", 8): (42.2, 0.64, 0.47, 0.40),
    ("VoxCeleb2", "Ours-FT", 8): (42.2, 0.68, 0.42, 0.39),
    ("VoxCeleb2", "Ours-FF", 32): (40.4, 0.65, 0.48, 0.38),
    ("VoxCeleb2", "Ours-FT", 32): (30.6, 0.72, 0.45, 0.33),
}
PAPER_TIMING_FT_S = {1: 43.8, 8: 85.5, 32: 258.0}  # few-shot learning, one NVIDIA P40
PAPER_TIMING_FF_S = {1: 0.061, 8: 0.138, 32: 0.221}
PAPER_INFERENCE_MS = 139.0  # per frame on a P40 (13 ms on an RTX 2080 Ti)
GENERATOR_NAMES = {"adain": "'adain' (the paper's)", "warp": "'warp' (warp-then-refine)",
                   "tps": "'tps' (the photo warped by its landmarks, generated fill)"}
PAPER_SETUP = ("paper: 256 px model (E 15M, G 38M, V 20M parameters) meta-learned on VoxCeleb2 (VoxCeleb1 rows: "
               "trained on VoxCeleb1), 50 test videos, 32 hold-out frames each, CSIM with ArcFace, timings on "
               "one NVIDIA P40")

TABLE1_METRICS = ("fid", "ssim", "csim")
MORE_METRICS = ("psnr", "l1", "lpips", "landmark_error", "gaze_error", "fid_face")
ARROWS = {True: "↑", False: "↓"}
GRID_MIN_TILE = 128


# --- helpers --------------------------------------------------------------------------------------------

def json_safe(obj: Any) -> Any:
    """Recursively replace non-finite floats by strings and numpy scalars/arrays by Python values."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _cell(value: MetricValue | None, digits: int = 3) -> str:
    return "—" if value is None else value.format(digits)


def _paper(t: int, method: str) -> tuple[float, ...] | None:
    return PAPER_TABLE1.get(("VoxCeleb2", METHOD_LABELS.get(method, ""), t))


def _ft_recipe(s: dict) -> str:
    """The FT recipe line of a run's settings (older reports recorded only epochs and batch size)."""
    return s.get("ft_recipe") or f"{s['ft_epochs']} epochs, batch min(T, {s['ft_batch_size']})"


def _md_table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _digits(metric: str) -> int:
    return {"fid": 1, "psnr": 2}.get(metric, 3)


def _header(metric: str, info: dict[str, dict[str, Any]]) -> str:
    better = info.get(metric, {}).get("higher_is_better", True)
    names = {"fid": "FID", "ssim": "SSIM", "csim": "CSIM", "psnr": "PSNR (dB)", "l1": "L1", "lpips": "LPIPS",
             "landmark_error": "Landmark error", "fid_face": "FID on face descriptors", "identity": "Identity rate",
             "sharpness": "Sharpness (vs real)", "gaze_error": "Gaze error"}
    return f"{names.get(metric, metric)} {ARROWS[bool(better)]}"


# --- sections -------------------------------------------------------------------------------------------

def settings_section(s: dict[str, Any], info: dict[str, dict[str, Any]]) -> list[str]:
    holdouts = sorted(set(s["holdout_per_video"].values()))
    if len(holdouts) == 1:
        used = f"{holdouts[0]} per video"
    else:  # short clips got fewer
        used = ", ".join(f"{v}: {n}" for v, n in s["holdout_per_video"].items()) or "none"
    hold = f"{s['holdout_requested']} requested; used {used}"
    machine = s["machine"]
    metrics = "; ".join(f"{n}: " + ("available" if i["available"] else f"**not available** ({i['reason']})")
                        for n, i in info.items())
    rows = [
        ["model", f"`{s.get('model_dir', '?')}` (preset {s['preset']}, {s['image_size']} px, generator "
                  f"{GENERATOR_NAMES.get(s.get('generator'), s.get('generator', '?'))}, meta-learning step "
                  f"{s.get('model_step')}, {s.get('model_num_videos')} training videos)"],
        ["training content loss", str(s.get("training_content_loss"))],
        ["test data", f"`{s['data_dir']}`: {len(s['videos'])} of {s['videos_available']} clips"],
        ["videos", ", ".join(f"{v} ({s['identities'][v]})" for v in s["videos"]) or "none"],
        ["few-shot sizes T", ", ".join(str(t) for t in s["shots"])],
        ["hold-out frames", hold + " (stored-frame indices of every set: values.jsonl, record \"run\", key "
                                   "\"frames\")"],
        ["variants", ", ".join(METHOD_LABELS[v] for v in s["variants"]) + f" + {METHOD_LABELS[BASELINE]} baseline"],
        ["FT", f"{_ft_recipe(s)}, content loss {s['ft_content_loss']}"
         + (" (paper: 40 epochs)" if s["ft_epochs"] != 40 else "")],
        ["seed", str(s["seed"])],
        ["metrics", metrics],
        ["device", f"{s['device']}: {machine.get('gpu') or machine['cpu']} ({machine['cpu_cores']} cores, "
                   f"{machine['torch_threads']} torch threads), torch {machine['torch']}"],
        ["date (UTC)", s["date"]],
        ["run time", f"{s['elapsed_s']} s"],
    ]
    if s.get("command"):
        rows.append(["command", f"`{s['command']}`"])
    return ["## What was used", "", *_md_table(["setting", "value"], rows), ""]


def table1_section(result: EvaluationResult) -> list[str]:
    s, info = result.settings, result.metric_info
    ours = f"ours: {len(s['videos'])} clips of `{Path(s['data_dir']).name}`, {s['image_size']} px `{s['preset']}` model"
    lines = ["## Table 1: self-reenactment", "",
             f"Laid out like the paper's Table 1. **Different dataset and model size**: {ours}; {PAPER_SETUP}. "
             "The paper's VoxCeleb2 numbers are quoted beside ours for orientation only; they are not comparable "
             "(and our CSIM uses dlib's face descriptor, not ArcFace: see the notes).", ""]
    header = ["Method (T)", *[_header(m, info) for m in TABLE1_METRICS], "USER ↓",
              "paper VoxCeleb2 FID", "SSIM", "CSIM", "USER"]
    rows = []
    for (t, method), values in result.table.items():
        paper = _paper(t, method)
        rows.append([f"{METHOD_LABELS.get(method, method)} ({t})",
                     *[_cell(values.get(m), _digits(m)) for m in TABLE1_METRICS], "—",
                     *([f"{v:g}" for v in paper] if paper else ["—"] * 4)])
    return [*lines, *_md_table(header, rows), "",
            "USER (fraction of user-study triplets where the fake was spotted; 1/3 is chance) is measured "
            "with `talking-heads userstudy make` / `score`, not here. A cell \"v (k/n)\" was computed on k of n "
            "frames (no face found on the others).", ""]


def identity_section(result: EvaluationResult) -> list[str]:
    """Is it the person? The verification rate at dlib's 0.6 beside its chance level and ceiling, per T."""
    info = result.metric_info.get("identity")
    if info is None:
        return []
    lines = ["## Identity: is it the person?", ""]
    if not info["available"]:
        return [*lines, f"Not available: {info['reason']}.", ""]
    rows, by_t = [], {}
    for (t, method), values in result.table.items():
        v = values.get("identity")
        if v is None:
            continue
        by_t.setdefault(t, v)
        rows.append([f"{METHOD_LABELS.get(method, method)} ({t})", _rate(v.value), f"{v.n - v.failed}/{v.n}",
                     _cell(values.get("csim"))])
    for t, v in by_t.items():
        rows.append([f"*real hold-out frames, same person (ceiling) ({t})*", _rate(v.extra.get("ceiling")), "", ""])
        rows.append([f"*real frames of other people (chance) ({t})*", _rate(v.extra.get("chance")),
                     f"{v.extra.get('chance_frames', 0)} frames, {v.extra.get('chance_pairs', 0)} video pairs", ""])
    threshold = next(iter(by_t.values())).extra.get("threshold", 0.6) if by_t else 0.6
    return [*lines,
            f"Fraction of frames whose dlib face descriptor is within **{threshold:g}** (dlib's same-person "
            "distance) of the person's reference, the mean descriptor of the T few-shot frames. The ceiling is "
            "that rate for the person's own real hold-out frames, the chance level the rate for real frames of "
            "*other* test people against the same reference: identity is kept when a method's rate is near the "
            "ceiling and far above chance. Frames whose face could not be described count as not verified.", "",
            *_md_table(["Method (T)", "Identity rate ↑", "frames described", "CSIM ↑"], rows), ""]


def _rate(v) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * v:.1f} %"


def more_metrics_section(result: EvaluationResult) -> list[str]:
    info = result.metric_info
    metrics = [m for m in MORE_METRICS if m in info]
    if not metrics:
        return []
    rows = [[f"{METHOD_LABELS.get(method, method)} ({t})", *[_cell(values.get(m), _digits(m)) for m in metrics]]
            for (t, method), values in result.table.items()]
    return ["## Further metrics (not in the paper's table)", "",
            *_md_table(["Method (T)", *[_header(m, info) for m in metrics]], rows), "",
            "Landmark error: mean distance of the 68 points detected on the generated frame to the points it was "
            "driven with, over the inter-ocular distance; \"v (k/n)\": a face was detected on k of n frames. "
            "Gaze error (docs/gaze.md): the distance, in eye widths, between the gaze (iris centre relative to the "
            "eye corners) measured on the generated and on the real frame; \"v (k/n)\": both showed an iris on k "
            "of n frames.", ""]


def cross_section(result: EvaluationResult) -> list[str]:
    if not result.settings.get("cross"):
        return []
    if not result.cross:
        return ["## Cross-identity puppeteering", "",
                "No pairs: fewer than two identities among the evaluated videos.", ""]
    names = ("csim_source", "csim_driver", "verified_source", "verified_driver", "landmark_error")
    header = ["source → driver", "variant (T)", "adaptation", "CSIM to source ↑", "CSIM to driver ↓",
              "verified as source ↑", "verified as driver ↓", "landmark error ↓"]
    if all("gaze_error" in r["values"] for r in result.cross):  # the driver's gaze against the rendered one
        names, header = names + ("gaze_error",), header + ["gaze error ↓"]
    rows = [[f"{r['source_identity']} → {r['driver_identity']}", f"{METHOD_LABELS[r['variant']]} ({r['T']})",
             "on" if r["adapt"] else "off (paper)", *[_cross_cell(r["values"][n]) for n in names]]
            for r in result.cross]
    means = []
    for t in sorted({r["T"] for r in result.cross}):
        for variant in VARIANTS:
            for adapt in (False, True):
                group = [r for r in result.cross if r["variant"] == variant and r["adapt"] == adapt and r["T"] == t]
                if group:
                    means.append([f"**mean over {len(group)} pairs**", f"{METHOD_LABELS[variant]} ({t})",
                                  "on" if adapt else "off (paper)", *[_mean_cell(group, n) for n in names]])
    return ["## Cross-identity puppeteering", "",
            f"Avatars (every T) driven by {result.settings.get('cross_frames')} frames of another person's "
            "clip. Identity kept: CSIM to the source person's real hold-out frames, and the fraction of frames "
            "verified as the source person at dlib's 0.6 (reference: the avatar's few-shot frames); leakage: "
            "the same to the driver person; motion followed: landmark error against the landmarks that drove "
            "the frame (adapted ones when adaptation is on); gaze error (when measured): the rendered gaze against "
            "the driver's, in eye widths, each with its own median removed (what transfers is the change from "
            "each person's neutral gaze).", "", *_md_table(header, means + rows), ""]


def _cross_cell(d: dict[str, Any]) -> str:
    if not d.get("available", True):
        return "not available"
    v, failed, n = d.get("value"), d.get("failed", 0), d.get("n", 0)
    if v is None or isinstance(v, str):
        return f"no face (0/{n})" if n and failed == n else "n/a"
    return f"{v:.3f}" + (f" ({n - failed}/{n})" if failed else "")


def _mean_cell(group: list[dict[str, Any]], name: str) -> str:
    """Mean over the pairs' values; frames without a detected face are counted, as in single cells."""
    cells = [r["values"][name] for r in group]
    if not any(c.get("available", True) for c in cells):
        return "not available"
    vals = [c["value"] for c in cells if isinstance(c.get("value"), float)]
    n, failed = sum(c.get("n", 0) for c in cells), sum(c.get("failed", 0) for c in cells)
    if not vals:
        return f"no face (0/{n})" if n and failed == n else "n/a"
    return f"{np.mean(vals):.3f}" + (f" ({n - failed}/{n})" if failed else "")


def timing_rows(result: EvaluationResult) -> list[dict[str, Any]]:
    """Per T: mean few-shot learning seconds of FF and FT over videos, mean inference ms per frame."""
    out = []
    for t in result.settings["shots"]:
        row: dict[str, Any] = {"T": t}
        for variant in VARIANTS:
            recs = [r for r in result.timings if r["T"] == t and r["variant"] == variant]
            row[f"{variant}_learn_s"] = float(np.mean([r["learn_s"] for r in recs])) if recs else None
            row[f"{variant}_videos"] = len(recs)
        out.append(row)
    return out


def inference_ms(result: EvaluationResult) -> float | None:
    frames = sum(r["frames"] for r in result.timings)
    if not frames:
        return None
    return sum(r["render_ms_per_frame"] * r["frames"] for r in result.timings) / frames


def timing_section(result: EvaluationResult) -> list[str]:
    s = result.settings
    machine = s["machine"]
    where = f"{machine.get('gpu') or machine['cpu']} ({s['device']}, {machine['torch_threads']} torch threads)"

    def fmt(v, digits=3):
        return "—" if v is None else f"{v:.{digits}f}"

    rows = [[str(r["T"]), fmt(r["ff_learn_s"]), fmt(r["ft_learn_s"], 1), fmt(PAPER_TIMING_FF_S.get(r["T"])),
             fmt(PAPER_TIMING_FT_S.get(r["T"]), 1)] for r in timing_rows(result)]
    ms = inference_ms(result)
    return ["## Timing", "",
            f"Few-shot learning (avatar creation: FF = embedding + projection, FT = that + fine-tuning, "
            f"{_ft_recipe(s)}), mean seconds per video on {where}, {s['date']}. Paper: one NVIDIA P40, "
            "256 px model, 40 epochs.", "",
            *_md_table(["T", "FF (s)", "FT (s)", "paper FF (s)", "paper FT (s)"], rows), "",
            f"Inference: **{fmt(ms, 1)} ms per frame** (generator only, {s['render_batch']} frame(s) per call, "
            f"{s['image_size']} px) on {where}; paper: {PAPER_INFERENCE_MS:g} ms per frame on a P40 (13 ms on an "
            "RTX 2080 Ti) at 256 px.", ""]


def grids_section(paths: dict[int, Path], out: Path, methods: list[str]) -> list[str]:
    if not paths:
        return []
    cols = " | ".join(["source (first few-shot frame)", "ground truth", *[METHOD_LABELS[m] for m in methods]])
    lines = ["## Image grids", "", f"Columns: {cols}. Rows: hold-out frames.", ""]
    for t, p in paths.items():
        lines += [f"T = {t}:", "", f"![T={t}]({p.relative_to(out).as_posix()})", ""]
    return lines


def paper_table_section() -> list[str]:
    rows = [[f"{d} {m} ({t})", *[f"{v:g}" for v in vals]] for (d, m, t), vals in PAPER_TABLE1.items()]
    return ["## The paper's Table 1 (quoted)", "",
            "VoxCeleb1 rows: models trained on VoxCeleb1 (X2Face and Pix2pixHD are the paper's baselines); "
            "VoxCeleb2 rows: the paper's main model, FF and FT. 256 px, ArcFace CSIM.", "",
            *_md_table(["Method (T)", "FID ↓", "SSIM ↑", "CSIM ↑", "USER ↓"], rows), ""]


def notes_section(result: EvaluationResult) -> list[str]:
    s = result.settings
    n_frames = sum(s["holdout_per_video"].values())
    notes = [
        "CSIM: cosine similarity of dlib's 128-D face-recognition descriptors (`face-recognition-models`), "
        "both frames aligned with the landmarks the frame was driven with. The paper used ArcFace. dlib's "
        "descriptors of *different* people already have cosine similarities of about 0.75-0.9, so our CSIM "
        "lives in a compressed high range: compare rows with each other, never with the paper's CSIM.",
        f"FID is computed per (T, method) on {n_frames} generated vs {n_frames} real hold-out frames; with "
        "fewer frames than the Inception features' 2048 dimensions it is strongly biased upwards (the paper "
        "had 1600 per set). Compare FID values computed on the same frames only.",
        "FID on face descriptors: the Frechet distance between the 128-D dlib descriptors of real and generated "
        "hold-out frames (all videos of a T and method together); a face-identity distribution distance, not "
        "the Inception FID of the paper.",
        "Nearest shot: for each hold-out frame, the few-shot frame whose landmarks (translation and scale "
        "removed) are closest; a real frame, so its realism (FID) is high by construction.",
        "Hold-out frames are evenly spaced over each clip; few-shot frames are a seeded random draw from the "
        "other frames, nested across T; the two never overlap.",
    ]
    if result.skipped:
        notes.append("Skipped videos: " + "; ".join(f"{r['video']}: {r['reason']}" for r in result.skipped))
    return ["## Notes", "", *[f"- {n}" for n in notes], ""]


# --- writing --------------------------------------------------------------------------------------------

def write_grids(result: EvaluationResult, out: Path) -> dict[int, Path]:
    """One PNG per T: rows of [source, ground truth, methods...] with a header band naming the columns."""
    methods = [m for m in (*VARIANTS, BASELINE) if m in result.settings["variants"] or m == BASELINE]
    paths = {}
    for t, rows in result.grids.items():
        if not rows:
            continue
        tile = max(GRID_MIN_TILE, rows[0]["gt"].shape[0])
        images = [[r["source"], r["gt"], *[r[m] for m in methods]] for r in rows]
        sheet = media.contact_sheet(images, tile)
        labels = ["source", "ground truth", *[METHOD_LABELS[m] for m in methods]]
        sheet = np.concatenate([_label_band(labels, tile, sheet.shape[1]), sheet], axis=0)
        paths[t] = media.write_png(out / "grids" / f"grid_T{t}.png", sheet)
    return paths


def _label_band(labels: list[str], tile: int, width: int, gap: int = 4) -> np.ndarray:
    band = np.full((28, width, 3), 24, np.uint8)
    scale = 0.4 if tile < 200 else 0.55
    for j, text in enumerate(labels):
        cv2.putText(band, text, (gap + j * (tile + gap) + 4, 19), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (235, 235, 235), 1, cv2.LINE_AA)
    return band


def jsonl_records(result: EvaluationResult) -> Iterable[dict[str, Any]]:
    yield {"record": "run", **result.settings}
    for name, info in result.metric_info.items():
        yield {"record": "metric_info", "metric": name, **info}
    for (t, method), values in result.table.items():
        for value in values.values():
            yield {"record": "table", "T": t, "method": method, "label": METHOD_LABELS.get(method, method),
                   **value.to_dict()}
    for rec in result.per_video:
        yield {"record": "video", **rec}
    for rec in result.timings:
        yield {"record": "timing", **rec}
    for row in timing_rows(result):
        yield {"record": "timing_summary", **row, "inference_ms_per_frame": inference_ms(result)}
    for rec in result.cross:
        yield {"record": "cross", **rec}
    for rec in result.skipped:
        yield {"record": "skipped", **rec}
    for (d, m, t), (fid, ssim, csim, user) in PAPER_TABLE1.items():
        yield {"record": "paper_table1", "dataset": d, "method": m, "T": t, "fid": fid, "ssim": ssim,
               "csim": csim, "user": user}
    for t in PAPER_TIMING_FT_S:
        yield {"record": "paper_timing", "T": t, "ff_learn_s": PAPER_TIMING_FF_S[t], "ft_learn_s": PAPER_TIMING_FT_S[t],
               "inference_ms_per_frame": PAPER_INFERENCE_MS, "gpu": "NVIDIA P40"}


def write_report(result: EvaluationResult, out: str | os.PathLike) -> dict[str, Path]:
    """Write report.md, values.jsonl and grids/ into `out`; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grids = write_grids(result, out)
    methods = [m for m in VARIANTS if m in result.settings["variants"]] + [BASELINE]
    s = result.settings
    lines = ["# Evaluation report", "",
             f"Self-reenactment with the paper's protocol (section 7) on {len(s['videos'])} test videos, "
             f"T = {', '.join(map(str, s['shots']))}, {s['holdout_requested']} hold-out frames per video requested.",
             "", *settings_section(s, result.metric_info), *table1_section(result), *identity_section(result),
             *more_metrics_section(result),
             *cross_section(result), *timing_section(result), *grids_section(grids, out, methods),
             *paper_table_section(), *notes_section(result)]
    _write_utf8(out / "report.md", "\n".join(lines))
    text = "".join(json.dumps(json_safe(r), allow_nan=False, ensure_ascii=False) + "\n" for r in jsonl_records(result))
    _write_utf8(out / "values.jsonl", text)
    return {"report": out / "report.md", "values": out / "values.jsonl", **{f"grid_T{t}": p for t, p in grids.items()}}


def _write_utf8(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")

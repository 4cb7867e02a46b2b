"""A/B runs of the training options (the training issue's evidence): one sample-preset meta-learning run per
arm, same data, same seed, equal CPU budgets, each judged with `talking-heads evaluate` on the test split.

    .venv/bin/python scripts/ablations.py train ARM [ARM ...]   # resumable: run again to continue
    .venv/bin/python scripts/ablations.py evaluate ARM [ARM ...]
    .venv/bin/python scripts/ablations.py table                  # docs/training_ablations.md from the reports
    .venv/bin/python scripts/ablations.py all                    # every arm: train, evaluate, table

Arms are cumulative (each adds one option to the previous one), so each A/B pair isolates one option:
  v1        the sample preset as v1 was trained (L_MCH 80 towards a random U(-0.1, 0.1) W, offline content loss)
  live      + W initialised from the initial embedder, L_MCH weight 1 with a warm-up (0 for 200 steps, then
              a 300-step ramp)
  diffaug   + DiffAugment (translation, cutout, colour) on every discriminator call
  face      + the dlib face and identity terms of the content loss (face 1, identity 10)
Budget: equal CPU time. Arms v1, live and diffaug cost the same per step (DiffAugment is negligible), so they
get BASE_STEPS steps; the face terms make a step about FACE_COST times dearer (measured with
scripts/bench_face_identity.py on this machine), so that arm gets BASE_STEPS / FACE_COST steps.
Common to all arms: E/G learning rate 2e-4 (v1's setting after its first 2,000 steps), 8 probe frames held
back per clip (identity probe every 250 steps), checkpoints every 200 steps.

Evaluation (reduced to fit a CPU): one clip per test identity, T = 1 and 8, 8 hold-out frames, FF avatars
(the embedder is what the options change; FT is the fine-tuning issue's), cross-identity on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# paths relative to the project root, where every command runs (reports then record no machine's paths)
TH = ".venv/bin/talking-heads"
DATA_TRAIN = Path("runs/data_train_128")
DATA_TEST = Path("runs/data_test_128")
OUT = Path("runs/ablation")
BASE_STEPS = 1200
FACE_COST = 1.16  # measured on an idle CPU: 0.505 vs 0.437 s per step (docs/benchmarks.md)
COMMON = ["train.lr_generator=2e-4", "train.probe_frames=8", "train.probe_every=250", "train.checkpoint_every=200",
          "train.num_workers=1"]
LIVE = ["train.init_w_from_data=true", "loss.match_weight=1.0", "loss.match_warmup_steps=200",
        "loss.match_ramp_steps=300"]
DIFFAUG = ["train.diffaugment=translation,cutout,color"]
FACE = ["loss.face_network=dlib", "loss.face_content_weight=1.0", "loss.identity_weight=10.0"]
ARMS = {
    "v1": ([], BASE_STEPS),
    "live": (LIVE, BASE_STEPS),
    "diffaug": (LIVE + DIFFAUG, BASE_STEPS),
    "face": (LIVE + DIFFAUG + FACE, int(BASE_STEPS / FACE_COST)),
}
EVAL = ["--shots", "1", "8", "--holdout", "8", "--per-identity", "1", "--variants", "ff", "--cross", "--threads", "2",
        "--no-progress"]


def train(arm: str) -> None:
    options, steps = ARMS[arm]
    cmd = [TH, "train", "--preset", "sample", "--data", str(DATA_TRAIN), "--out", str(OUT / arm), "--steps", str(steps),
           "--no-progress", *[a for o in COMMON + options for a in ("--set", o)]]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def evaluate(arm: str) -> None:
    cmd = [TH, "evaluate", "--model", str(OUT / arm / "model"), "--data", str(DATA_TEST), "--out",
           str(OUT / arm / "eval"), *EVAL]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def _table_values(arm: str) -> dict:
    """{(T, method): {metric: value}} and cross means from an arm's values.jsonl, plus training facts."""
    out: dict = {"table": {}, "cross": {}, "train": {}}
    path = ROOT / OUT / arm / "eval" / "values.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r["record"] == "table":
                out["table"].setdefault((r["T"], r["method"]), {})[r["metric"]] = r
            elif r["record"] == "cross" and r["variant"] == "ff" and r["adapt"]:
                for k, v in r["values"].items():
                    if isinstance(v.get("value"), (int, float)):
                        out["cross"].setdefault(k, []).append(v["value"])
    log = ROOT / OUT / arm / "log.jsonl"
    if log.is_file():
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        if rows:
            last = rows[-1]
            probes = [r for r in rows if "id_probe_acc" in r]
            out["train"] = {"steps": last["step"], "sec_per_step": sum(r["sec_per_step"] for r in rows) / len(rows),
                            "e_hat_abs": last.get("e_hat_abs"), "e_hat_zero": last.get("e_hat_zero"),
                            "probe": probes[-1]["id_probe_acc"] if probes else None,
                            "probe_chance": probes[-1]["id_probe_chance"] if probes else None,
                            "g_cnt": last.get("g_cnt")}
    return out


def _fmt(v, pct=False, digits=3):
    if v is None:
        return "—"
    return f"{100 * v:.1f} %" if pct else f"{v:.{digits}f}"


def table() -> Path:
    lines = ["## Results", "",
             "Written by `.venv/bin/python scripts/ablations.py table` (see its docstring for the arms, budgets and "
             "the evaluation settings). Each arm adds one option to the previous one; sample preset, 128 px, "
             "trained from scratch on the train split (66 clips, 44 people), same seed; judged on the test split "
             "(10 clips, one per test identity, people never seen in training). Arms without an evaluation yet "
             "show dashes.", "",
             "| arm | steps | s/step | mean abs(e_hat) | zero e_hat | id probe (chance) | FF T=1 identity | FF T=8 identity "
             "| chance | ceiling | FF T=8 CSIM | FF T=8 SSIM | FF T=8 landmark err. | FF T=8 FID faces | cross: verified as source |",
             "|" + "---|" * 15]
    for arm in ARMS:
        v = _table_values(arm)
        t, tab = v["train"], v["table"]
        i1, i8 = tab.get((1, "ff"), {}).get("identity", {}), tab.get((8, "ff"), {}).get("identity", {})
        row8 = tab.get((8, "ff"), {})
        cross = v["cross"].get("verified_source")
        lines.append("| " + " | ".join([
            arm, str(t.get("steps", "—")), _fmt(t.get("sec_per_step"), digits=2), _fmt(t.get("e_hat_abs"), digits=2),
            _fmt(t.get("e_hat_zero"), pct=True),
            f"{_fmt(t.get('probe'), pct=True)} ({_fmt(t.get('probe_chance'), pct=True)})",
            _fmt(i1.get("value"), pct=True), _fmt(i8.get("value"), pct=True), _fmt(i8.get("chance"), pct=True),
            _fmt(i8.get("ceiling"), pct=True), _fmt(row8.get("csim", {}).get("value")),
            _fmt(row8.get("ssim", {}).get("value")), _fmt(row8.get("landmark_error", {}).get("value")),
            _fmt(row8.get("fid_face", {}).get("value")),
            _fmt(sum(cross) / len(cross), pct=True) if cross else "—"]) + " |")
    lines += ["", "Sample grids of each arm: `runs/ablation/ARM/samples/` and `runs/ablation/ARM/eval/grids/` (kept "
              "on the training machine); the ones committed are under `docs/ablations/`.", ""]
    path = ROOT / "docs" / "training_ablations.md"
    text = path.read_text() if path.exists() else "# Training ablations (the training issue's A/B runs)\n\n"
    head = text.split("## Results")[0].rstrip("\n")  # the hand-written design and findings are kept
    path.write_text(head + "\n\n" + "\n".join(lines))
    print("\n".join(lines))
    return path


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("train", "evaluate", "table", "all"):
        print(__doc__)
        return 2
    arms = argv[1:] or list(ARMS)
    unknown = [a for a in arms if a not in ARMS]
    if unknown and argv[0] != "table":
        print(f"unknown arm(s) {unknown}; arms: {', '.join(ARMS)}", file=sys.stderr)
        return 2
    if argv[0] in ("train", "all"):
        for arm in arms:
            train(arm)
            if argv[0] == "all":
                evaluate(arm)
    if argv[0] == "evaluate":
        for arm in arms:
            evaluate(arm)
    if argv[0] in ("table", "all"):
        table()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""A/B runs of the training options (the training issue's evidence): one sample-preset meta-learning run per
arm, same data, same seed, equal CPU budgets, each judged with `talking-heads evaluate` on the test split.

    .venv/bin/python scripts/ablations.py train ARM [ARM ...]   # resumable: run again to continue
    .venv/bin/python scripts/ablations.py evaluate ARM [ARM ...]
    .venv/bin/python scripts/ablations.py table                  # docs/training_ablations.md from the reports
    .venv/bin/python scripts/ablations.py all                    # every arm: train, evaluate, table
    .venv/bin/python scripts/ablations.py finetune ARM [RECIPE ...]  # FT recipes on one arm's model

Arms are cumulative (each adds one option to the previous one), so each A/B pair isolates one option:
  v1        the sample preset as v1 was trained (L_MCH 80 towards a random U(-0.1, 0.1) W, offline content loss)
  live      + W initialised from the initial embedder, L_MCH weight 1 with a warm-up (0 for 200 steps, then
              a 300-step ramp)
  diffaug   + DiffAugment (translation, cutout, colour) on every discriminator call
  face      + the dlib face and identity terms of the content loss (face 1, identity 10)
  warp      + the warp-then-refine generator (model.generator=warp: sources warped by a flow network, then refined)
Budget: equal CPU time. Arms v1, live and diffaug cost the same per step (DiffAugment is negligible), so they
get BASE_STEPS steps; the face terms make a step about FACE_COST times dearer (measured with
scripts/bench_face_identity.py on this machine), so that arm gets BASE_STEPS / FACE_COST steps; a warp step costs WARP_COST face steps.
Common to all arms: E/G learning rate 2e-4 (v1's setting after its first 2,000 steps), 8 probe frames held
back per clip (identity probe every 250 steps), checkpoints every 200 steps.

Fine-tuning recipes (the training issue's item 4), cumulative like the arms, each evaluated on one trained
arm's model with FT from ONE photo (T = 1) of every test identity, then the same avatar driven by other
people (cross-identity): identity rate, SSIM, landmark error, and the seconds fine-tuning took:
  paper     the paper's recipe: 40 epochs over the T frames (at T = 1: 40 steps of 1 frame), offline content loss
  face      + the dlib face and identity terms (against the photo) in FT's content loss
  budget    + a step budget of 40 steps of 8 augmented copies of the photo (flip, scale, shift)
  psi       + psi' at 10x the generator's learning rate (5e-4)
  ema       + an EMA (0.9) of G' and psi' as the result
Results land in runs/ablation/ARM/ft_RECIPE/ and in the table's fine-tuning section.

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
DOCS = ROOT / "docs" / "ablations"  # committed evidence of every arm (keep)
BASE_STEPS = 1200
FACE_COST = 1.16  # measured on an idle CPU: 0.505 vs 0.437 s per step (docs/benchmarks.md)
WARP_COST = 1.2  # a warp-generator step / a face-arm step: 0.625 / 0.54 and 0.68 / 0.564 s in one interleaved run
#                  (bench.bench_train_step, 1 thread, the CPU shared with other work; median 1.2)
COMMON = ["train.lr_generator=2e-4", "train.probe_frames=8", "train.probe_every=250", "train.checkpoint_every=200",
          "train.num_workers=1"]
LIVE = ["train.init_w_from_data=true", "loss.match_weight=1.0", "loss.match_warmup_steps=200",
        "loss.match_ramp_steps=300"]
DIFFAUG = ["train.diffaugment=translation,cutout,color"]
FACE = ["loss.face_network=dlib", "loss.face_content_weight=1.0", "loss.identity_weight=10.0"]
WARP = ["model.generator=warp"]
# the sample preset as v1 was trained (the preset's defaults now hold the winners, so the baseline is spelled out)
V1 = ["train.init_w_from_data=false", "loss.match_weight=null", "loss.match_warmup_steps=0", "loss.match_ramp_steps=0",
      "train.diffaugment=", "loss.face_network=", "loss.identity_weight=1.0", "model.generator=adain"]
ARMS = {
    "v1": (V1, BASE_STEPS),
    "live": (V1 + LIVE, BASE_STEPS),
    "diffaug": (V1 + LIVE + DIFFAUG, BASE_STEPS),
    "face": (V1 + LIVE + DIFFAUG + FACE, int(BASE_STEPS / FACE_COST)),
    "warp": (V1 + LIVE + DIFFAUG + FACE + WARP, int(BASE_STEPS / (FACE_COST * WARP_COST))),
}
FT_BASE = ["loss.face_network=", "loss.identity_weight=0", "loss.face_content_weight=0"]
FT_FACE = ["loss.face_network=dlib", "loss.face_content_weight=1.0", "loss.identity_weight=10.0"]
FT_BUDGET = ["finetune.steps=40", "finetune.batch_size=8", "finetune.augment=true"]
FT_RECIPES = {
    "paper": FT_BASE,
    "face": FT_FACE,
    "budget": FT_FACE + FT_BUDGET,
    "psi": FT_FACE + FT_BUDGET + ["finetune.lr_psi=5e-4"],
    "ema": FT_FACE + FT_BUDGET + ["finetune.lr_psi=5e-4", "finetune.ema=0.9"],
}
FT_EVAL = ["--shots", "1", "--holdout", "8", "--per-identity", "1", "--variants", "ft", "--cross", "--threads", "1",
           "--metrics", "ssim", "psnr", "csim", "identity", "landmark_error", "--no-progress"]
EVAL = ["--shots", "1", "8", "--holdout", "8", "--per-identity", "1", "--variants", "ff", "--cross", "--threads", "1",
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
    keep(arm)


def finetune(arm: str, recipe: str) -> None:
    cmd = [TH, "evaluate", "--model", str(OUT / arm / "model"), "--data", str(DATA_TEST), "--out",
           str(OUT / arm / f"ft_{recipe}"), *FT_EVAL, *[a for o in FT_RECIPES[recipe] for a in ("--set", o)]]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    keep(arm, f"ft_{recipe}")


def _ft_values(arm: str, recipe: str) -> dict | None:
    """FT T=1 table values, cross-identity means (adaptation on) and mean FT seconds of one recipe's report."""
    path = _evidence(arm, f"ft_{recipe}", "values.jsonl")
    if not path.is_file():
        return None
    out: dict = {"table": {}, "cross": {}, "learn_s": []}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r["record"] == "table" and r["method"] == "ft":
            out["table"][r["metric"]] = r
        elif r["record"] == "cross" and r["variant"] == "ft" and r["adapt"]:
            for k, v in r["values"].items():
                if isinstance(v.get("value"), (int, float)):
                    out["cross"].setdefault(k, []).append(v["value"])
        elif r["record"] == "timing" and r["variant"] == "ft":
            out["learn_s"].append(r["learn_s"])
        elif r["record"] == "run":
            out["recipe"] = r.get("ft_recipe")
    return out


def _ft_table(arm: str) -> list[str]:
    rows = [(recipe, _ft_values(arm, recipe)) for recipe in FT_RECIPES]
    rows = [(r, v) for r, v in rows if v]
    if not rows:
        return []

    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    lines = ["", f"### Fine-tuning from one photo (FT, T = 1) on the `{arm}` arm's model", "",
             "Written by `.venv/bin/python scripts/ablations.py table` from `scripts/ablations.py finetune " + arm
             + " RECIPE` runs (recipes in the script's docstring): one photo per test identity, its FT avatar "
               "rendered on 8 hold-out frames of its own clip and driven by other people's clips (cross, with "
               "adaptation).", "",
             "| recipe | what ran | FT seconds (mean) | identity, own poses | chance | SSIM | landmark err. | CSIM "
             "| cross: verified as source | cross: verified as driver |", "|" + "---|" * 10]
    for recipe, v in rows:
        tab, cross = v["table"], v["cross"]
        ident = tab.get("identity", {})
        lines.append("| " + " | ".join([
            recipe, v.get("recipe") or "—", _fmt(mean(v["learn_s"]), digits=1), _fmt(ident.get("value"), pct=True),
            _fmt(ident.get("chance"), pct=True), _fmt(tab.get("ssim", {}).get("value")),
            _fmt(tab.get("landmark_error", {}).get("value")), _fmt(tab.get("csim", {}).get("value")),
            _fmt(mean(cross.get("verified_source", [])), pct=True),
            _fmt(mean(cross.get("verified_driver", [])), pct=True)]) + " |")
    return lines


def keep(arm: str, sub: str = "eval") -> None:
    """Copy an arm's evidence (log.jsonl, report.md, values.jsonl, grids) into docs/ablations/ARM/, which is
    committed: run folders live on one machine, the table must survive them."""
    import shutil

    dest = DOCS / arm
    for src, name in ((OUT / arm / "log.jsonl", "log.jsonl"), (OUT / arm / sub / "report.md", f"{sub}_report.md"),
                      (OUT / arm / sub / "values.jsonl", f"{sub}_values.jsonl")):
        if (ROOT / src).is_file():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / src, dest / name)
    for grid in sorted((ROOT / OUT / arm / sub / "grids").glob("grid_T*.png")):
        shutil.copyfile(grid, dest / f"{sub}_{grid.name}")


def _evidence(arm: str, sub: str, name: str) -> Path:
    """The run folder's file, else the committed copy under docs/ablations/ARM/."""
    path = ROOT / OUT / arm / sub / name
    return path if path.is_file() else DOCS / arm / (name if sub == "" else f"{sub}_{name}")


def _table_values(arm: str) -> dict:
    """{(T, method): {metric: value}} and cross means from an arm's values.jsonl, plus training facts."""
    out: dict = {"table": {}, "cross": {}, "train": {}}
    path = _evidence(arm, "eval", "values.jsonl")
    if path.is_file():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r["record"] == "table":
                out["table"].setdefault((r["T"], r["method"]), {})[r["metric"]] = r
            elif r["record"] == "cross" and r["variant"] == "ff" and r["adapt"]:
                for k, v in r["values"].items():
                    if isinstance(v.get("value"), (int, float)):
                        out["cross"].setdefault(k, []).append(v["value"])
    log = _evidence(arm, "", "log.jsonl")
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
    path = ROOT / "docs" / "training_ablations.md"
    text = path.read_text() if path.exists() else "# Training ablations (the training issue's A/B runs)\n\n"
    previous = {line.split("|")[1].strip(): line for line in text.split("## Results")[-1].splitlines()
                if line.startswith("| ") and line.count("|") == 16}
    for arm in ARMS:
        v = _table_values(arm)
        if not v["train"] and not v["table"] and arm in previous:
            lines.append(previous[arm])  # measured on an earlier machine whose run folder is gone (see the text)
            continue
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
    for arm in ARMS:
        lines += _ft_table(arm)
    lines += ["", "Sample grids of each arm: `runs/ablation/ARM/samples/` and `runs/ablation/ARM/eval/grids/` (kept "
              "on the training machine); the ones committed are under `docs/ablations/`.", ""]
    head = text.split("## Results")[0].rstrip("\n")  # the hand-written design and findings are kept
    path.write_text(head + "\n\n" + "\n".join(lines))
    print("\n".join(lines))
    return path


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("train", "evaluate", "table", "all", "finetune"):
        print(__doc__)
        return 2
    if argv[0] == "finetune":
        if len(argv) < 2 or argv[1] not in ARMS or any(r not in FT_RECIPES for r in argv[2:]):
            print(f"usage: finetune ARM [RECIPE ...]; arms: {', '.join(ARMS)}; recipes: {', '.join(FT_RECIPES)}",
                  file=sys.stderr)
            return 2
        for recipe in argv[2:] or list(FT_RECIPES):
            finetune(argv[1], recipe)
        table()
        return 0
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

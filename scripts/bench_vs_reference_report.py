"""The figures, targets, tables and docs section of scripts/bench_vs_reference.py (imported by it; not a
script): measured timings in table units, ratios ours / theirs against the targets, the Markdown section and its
writer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from talking_heads.atomic import write_text
from talking_heads.bench import with_notes

SECTION = "Against the earlier implementations (scripts/bench_vs_reference.py)"
IMPLS = ("vincent", "shrubb")
LABELS = {"ours": "ours", "vincent": "vincent-thevenin", "shrubb": "shrubb (FSTH)"}
# the design notes' speed.md: one core, 1 thread, paper preset 256 px, CPU-time medians over 3 rounds of 3 warm-up
# + 10 timed calls; training peak RSS
RECORDED = {
    "vincent": {"generator_ms": 1559.0, "embedder_ms": 4103.0, "step_s": 26.9, "peak_gib": 4.6},
    "shrubb": {"generator_ms": 1373.0, "embedder_ms": 4237.0, "step_s": 24.6, "peak_gib": 8.1},
    "ours": {"generator_ms": 1418.0, "embedder_ms": 2709.0, "step_s": 19.3, "peak_gib": 3.9},
}
TARGETS = {"generator": 1 / 3, "step": 1 / 2, "peak": 1.0}  # ours / theirs at most
STEP_INCLUDES = {
    "ours": "`meta.meta_step` as the training loop runs it: E on the K frames, G, content loss with VGG19 + "
            "VGGFace (random weights, loaded from files in the standard layout as in training), L_ADV with "
            "feature matching, L_MCH, E/G Adam update, then `d_steps_per_g_step` = 2 D updates (hinge loss on "
            "the fake and the real frame each)",
    "vincent": "their `train.py` loop body: E on the K frames, G, D(fake) and D(real, no_grad), `LossG` (their "
               "`LossCnt`: torchvision VGG19 and their `Cropped_VGG19` as VGGFace, random weights; `LossAdv` "
               "with feature matching; `LossMatch`), E/G Adam update, then 2 D updates (D(fake) + D(real), hinge "
               "losses) and the per-video W_i file save (to a temporary folder); `load_W_i` before the step",
    "shrubb": "their `runners/holycow.py` `run_epoch` body with their `TrainingModule`: E on the K frames, G, D's "
              "three passes (fake for G, fake detached for D, real), the FSTH criterions adversarial, featmat, "
              "perceptual (VGG19, Caffe layout), idt_embed (VGG16 VGGFace) and dis_embed (random VGG weights), E/G "
              "Adam update, 1 D update, the running averages of E and G (0.999) and the per-loss float() logging",
}



def collect(render: dict[str, Any], steps: dict[str, Any], paths: dict[str, str | None]) -> dict[str, Any]:
    """Figures per implementation in table units (ms, s, GiB), measured or recorded, and the sources."""
    fig: dict[str, dict[str, Any]] = {"ours": {"source": "measured"}}
    gen, emb = render.get("generator", {}), render.get("embedder", {})
    ours = fig["ours"]
    if "ours_default" in gen:
        ours["generator_ms"] = round(gen["ours_default"]["cpu_s"] * 1e3, 1)
        ours["generator_wall_ms"] = round(gen["ours_default"]["wall_s"] * 1e3, 1)
        fp32 = gen.get("ours_fp32", gen["ours_default"])
        ours["generator_fp32_ms"] = round(fp32["cpu_s"] * 1e3, 1)
        ours["generator_fp32_wall_ms"] = round(fp32["wall_s"] * 1e3, 1)
    if "ours" in emb:
        ours["embedder_ms"] = round(emb["ours"]["cpu_s"] * 1e3, 1)
        ours["embedder_wall_ms"] = round(emb["ours"]["wall_s"] * 1e3, 1)
    if "ours" in steps:
        st = steps["ours"]
        ours.update(step_s=round(st["cpu_s"], 2), step_wall_s=round(st["wall_s"], 2),
                    peak_gib=round(st["maxrss_mib"] / 1024, 2),
                    step_peak_gib=None if st["step_peak_mib"] is None else round(st["step_peak_mib"] / 1024, 2))
    for name, st in steps.items():
        if name.startswith("ours ["):
            fig[name] = {"source": "measured", "step_s": round(st["cpu_s"], 2), "step_wall_s": round(st["wall_s"], 2),
                         "peak_gib": round(st["maxrss_mib"] / 1024, 2),
                         "step_peak_gib": None if st["step_peak_mib"] is None else round(st["step_peak_mib"] / 1024, 2)}
    for impl in IMPLS:
        if not paths.get(impl):
            fig[impl] = {"source": "recorded (speed.md)", **RECORDED[impl]}
            continue
        f: dict[str, Any] = {"source": "measured"}
        if impl in gen:
            f.update(generator_ms=round(gen[impl]["cpu_s"] * 1e3, 1), generator_wall_ms=round(gen[impl]["wall_s"] * 1e3, 1))
        if impl in emb:
            f.update(embedder_ms=round(emb[impl]["cpu_s"] * 1e3, 1), embedder_wall_ms=round(emb[impl]["wall_s"] * 1e3, 1))
        if impl in steps:
            st = steps[impl]
            f.update(step_s=round(st["cpu_s"], 2), step_wall_s=round(st["wall_s"], 2),
                     peak_gib=round(st["maxrss_mib"] / 1024, 2),
                     step_peak_gib=None if st["step_peak_mib"] is None else round(st["step_peak_mib"] / 1024, 2))
        fig[impl] = f
    return fig


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs <= 0:
        return None
    return ours / theirs


ROWS = [  # (key, label, target key or None)
    ("generator_ms", "generator, ms per frame, default precision ({prec})", "generator"),
    ("generator_fp32_ms", "generator, ms per frame, fp32", None),
    ("embedder_ms", "embedder, ms for K = {k}", None),
    ("step_s", "meta-learning step, s, default precision ({step_prec})", "step"),
    ("peak_gib", "training peak RSS, GiB: process lifetime (steps alone)", "peak"),
]


def targets(fig: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per target: ratios ours / each of theirs and whether each is within the target."""
    out = {}
    for key, _, tkey in ROWS:
        if tkey is None:
            continue
        r = {impl: ratio(fig["ours"].get(key), fig[impl].get(key)) for impl in IMPLS if impl in fig}
        out[tkey] = {"limit": TARGETS[tkey], "ratios": r,
                     "met": {impl: (v is not None and v <= TARGETS[tkey] + 1e-12) for impl, v in r.items()}}
    return out


def _fmt(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:.0f}"


def _fmt_ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def markdown_table(fig: dict[str, dict[str, Any]], precision: str = "bf16", k: int = 8,
                   step_prec: str = "fp32") -> str:
    impls = [i for i in IMPLS if i in fig]
    tg = targets(fig)
    head = ["measurement (CPU time)", "ours (measured)"] + [f"{LABELS[i]}, {fig[i]['source']}" for i in impls] \
        + [f"ours / {LABELS[i].split(' ')[0]}" for i in impls] + ["target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, tkey in ROWS:
        ours = fig["ours"].get(key)
        cells = [label.format(prec=precision, k=k, step_prec=step_prec)]
        if key == "peak_gib":
            sp = fig["ours"].get("step_peak_gib")
            cells.append(f"{_fmt(ours, 2)}" + (f" ({_fmt(sp, 2)})" if sp is not None else ""))
            for i in impls:
                sp = fig[i].get("step_peak_gib")
                cells.append(f"{_fmt(fig[i].get(key), 2)}" + (f" ({_fmt(sp, 2)})" if sp is not None else ""))
        else:
            digits = 2 if key == "step_s" else 1
            cells += [_fmt(ours, digits)] + [_fmt(fig[i].get(key), digits) for i in impls]
        cells += [_fmt_ratio(ratio(ours, fig[i].get(key))) for i in impls]
        if tkey:
            t = tg[tkey]
            limit = {"generator": "<= 1/3", "step": "<= 1/2", "peak": "<= 1"}[tkey]
            met = [f"{LABELS[i].split(' ')[0]} {'yes' if t['met'][i] else 'no'}" for i in impls
                   if t["ratios"][i] is not None]
            cells += [limit, ", ".join(met) or "-"]
        else:
            cells += ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    for name, f in fig.items():  # ours with extra step settings (--also-step)
        if not name.startswith("ours ["):
            continue
        for key, label, tkey in ROWS[3:]:
            v = f.get(key)
            sp = f.get("step_peak_gib") if key == "peak_gib" else None
            cells = [f"{label.split(',')[0]} of {name}, {label.split(', ')[1]}",
                     _fmt(v, 2) + (f" ({_fmt(sp, 2)})" if sp is not None else "")] + ["" for _ in impls]
            cells += [_fmt_ratio(ratio(v, fig[i].get(key))) for i in impls]
            t = TARGETS[tkey]
            met = [f"{LABELS[i].split(' ')[0]} {'yes' if (r := ratio(v, fig[i].get(key))) is not None and r <= t else 'no'}"
                   for i in impls if ratio(v, fig[i].get(key)) is not None]
            cells += [{"step": "<= 1/2", "peak": "<= 1"}[tkey], ", ".join(met) or "-"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def wall_table(fig: dict[str, dict[str, Any]]) -> str:
    impls = [i for i in IMPLS if i in fig and fig[i]["source"] == "measured"]
    rows = [("generator_wall_ms", "generator ms, default precision"), ("generator_fp32_wall_ms", "generator ms, fp32"),
            ("embedder_wall_ms", "embedder ms, K frames"), ("step_wall_s", "meta-learning step s, default precision")]
    head = ["wall time (same rounds)", "ours"] + [LABELS[i] for i in impls] + [f"ours / {LABELS[i].split(' ')[0]}" for i in impls]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label in rows:
        if fig["ours"].get(key) is None:
            continue
        ours = fig["ours"][key]
        lines.append("| " + " | ".join([label, _fmt(ours, 2 if key == "step_wall_s" else 1)]
                                       + [_fmt(fig[i].get(key), 2 if key == "step_wall_s" else 1) for i in impls]
                                       + [_fmt_ratio(ratio(ours, fig[i].get(key))) for i in impls]) + " |")
    return "\n".join(lines) + "\n"


def section(results: dict[str, Any]) -> str:
    """The whole "## SECTION" Markdown section for `results` (run())."""
    m, fig = results["machine"], results["figures"]
    prec = results.get("render", {}).get("info", {}).get("default_precision", "bf16")
    measured = [LABELS[i] for i in IMPLS if fig.get(i, {}).get("source") == "measured"]
    recorded = [LABELS[i] for i in IMPLS if fig.get(i, {}).get("source", "").startswith("recorded")]
    lines = [f"## {SECTION}", "",
             f"Measured {m['date']} on {m['cpu']}, {m['cpu_count']} cores, RAM {m['ram_gib']} GiB, torch {m['torch']}, "
             f"Python {m['python']}, {results['threads']} thread(s); preset `{results['preset']}` "
             f"({results.get('image_size', 256)} px), batch 1, K = {results['k']}. "
             f"Load average at the start {results['load_start']}, at the end {results['load_end']}"
             + (f"; other processes used {results['other_load_cores']} of the {m['cpu_count']} cores on average "
                f"during the {results['wall_s']:.0f} s run" if results.get("other_load_cores") is not None else "")
             + ("; the machine was shared, so wall times are inflated and the CPU-time ratios of the interleaved "
                "rounds are the figures to trust" if (results.get("other_load_cores") or 0) >= 0.25 else "") + "."
             + (f" {results['note']}" if results.get("note") else ""), "",
             f"Command: `{results['command']}`", ""]
    if measured:
        lines.append("Their networks rebuilt from their source (" + "; ".join(
            f"{LABELS[i]}: {results['sources'][i]}" for i in IMPLS if fig.get(i, {}).get("source") == "measured")
            + f"), random weights, the paper's widths; torchvision for their VGGs: {results.get('torchvision') or '-'}.")
    if recorded:
        lines.append(f"{', '.join(recorded)}: no source given, so the figures recorded in speed.md (one core, 1 "
                     "thread, CPU-time medians) stand in.")
    # runs recorded before train.amp_cpu had "auto" timed the step in fp32 by default
    lines += ["", markdown_table(fig, prec, results["k"], results.get("step_precision", "fp32"))]
    if any(f.get("source") == "measured" for i, f in fig.items() if i in IMPLS):
        lines += ["Wall times of the same rounds:", "", wall_table(fig)]
    rec = RECORDED["ours"]
    lines += [
        "Protocol: CPU time of the process (time spent waiting for a core while other jobs run does not count; "
        "sharing the cores' caches and memory bandwidth with them still slows all implementations alike), medians "
        f"of {results['rounds']} interleaved rounds (one call of each implementation per round, rotating order) "
        f"after {results['warmup']} warm-up calls each for the generator and the embedder, "
        f"{results['step_rounds']} rounds after {results['step_warmup']} warm-up step(s) each for the step "
        f"({results.get('step_mode', '-')} workers). Generator: psi / AdaIN parameters computed once; ours is the "
        f"avatar-specialised renderer (`inference.TorchRenderer`) at the default precision `auto` = {prec} here "
        "(and fp32); theirs as their inference scripts render a frame (vincent: `Generator(256, finetuning=True)` "
        "after `finetuning_init`; shrubb: FSTH `Generator` after `enable_finetuning`), eval, no_grad. Embedder: K "
        "frames in one batch, eval, no_grad (ours fp32). Peak RSS: each step worker's own process, lifetime peak "
        "(getrusage), in brackets the peak over the warm-up and timed steps alone (VmHWM reset once everything "
        "was built); the recorded figures are training peak RSS.", "",
        "What one meta-learning step includes:", ""]
    lines += [f"- {LABELS[k]}: {v}." for k, v in STEP_INCLUDES.items()]
    lines += ["", "Changes to their code needed on a CPU-only machine, nothing else: vincent's D gets a single-device "
              "W_i split (`torch.cuda.current_device()` = 0, `gpu_num` = 1) and `Padding(256)` instead of its "
              "hard-coded `Padding(224)` (so that D sees 256 px like G and E instead of padding 256 to 288 px); no "
              "DataParallel (a pass-through without GPUs). Their VGG weight files (and vincent's VGGFace model "
              "file) are replaced by random weights of the same layout; vincent's loss does not freeze its VGGs, so "
              "its backward also computes their weight gradients, as their training does.",
              "", f"For comparison, speed.md recorded ours at {rec['generator_ms']:.0f} ms (generator, fp32, before "
              f"the specialised renderer), {rec['embedder_ms']:.0f} ms (embedder), {rec['step_s']} s (step), "
              f"{rec['peak_gib']} GiB then."]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_section(path: str | os.PathLike, text: str) -> None:
    """Replace the "## SECTION" section of `path` with `text`, or append it at the end; other sections kept, and
    the hand-written notes after the old section's end-of-generated-text marker (`bench.with_notes`)."""
    path = Path(path)
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    head = f"## {SECTION}"
    if head in doc:
        start = doc.index(head)
        nxt = doc.find("\n## ", start + len(head))
        rest = "" if nxt < 0 else "\n" + doc[nxt + 1:]
        old = doc[start:] if nxt < 0 else doc[start:nxt]
        doc = doc[:start] + with_notes(text, old) + "\n" + rest
    else:
        doc = doc.rstrip("\n") + "\n\n" + with_notes(text) + "\n"
    write_text(path, doc)

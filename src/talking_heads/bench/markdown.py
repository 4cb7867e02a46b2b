"""The Markdown of `talking-heads bench` and the writers of docs/benchmarks.md's generated blocks.

docs/benchmarks.md has one "## SECTION" per benchmark and, inside it, one "### device: machine" block per
machine (`device_heading`). A writer replaces only its own machine's block of its own section; each block it
writes ends with `GENERATED_END`, and the hand-written notes after that marker survive the next run
(`with_notes`, also used by scripts/bench_vs_reference.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..atomic import write_text
from .train_step import PARTS

# the sections' headings in docs/benchmarks.md (a writer finds its own section by its heading: rename both)
SECTION = "Networks and training step"
RENDER_SECTION = "Real-time rendering"
TRAIN_SECTION = "Training step: profile and speed-ups"
INTRO = ("Reproduce: `talking-heads bench --preset tiny --preset sample --preset paper --write "
         "docs/benchmarks.md` (add `--device cuda` on a GPU).")
RENDER_INTRO = ("Reproduce: `talking-heads bench --preset sample --preset paper --what render,export,animate "
                "--write docs/benchmarks.md` (one thread: `OMP_NUM_THREADS=1`; add `--device cuda` on a GPU).")
TRAIN_INTRO = ("Reproduce: `OMP_NUM_THREADS=1 talking-heads bench --preset sample --what train-step --write "
               "docs/benchmarks.md` (add `--preset paper`, or `--device cuda` on a GPU; `--what "
               "render,export,train-step` measures the rendering too).")
RENDERING = ("render", "export", "animate")  # the --what items of RENDER_SECTION
GENERATED_END = "<!-- end of the text a benchmark command generates (--write); notes below it are kept -->"


def _fmt_params(n: int | None) -> str:
    return "-" if n is None else (f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k")


def device_heading(results: dict[str, Any]) -> str:
    """The "### device: machine" heading of one machine's block (`write_section` replaces only that machine's)."""
    m, dev = results["machine"], results["device"]
    where = m.get("gpu", "") if dev.startswith("cuda") else f"{m['cpu']}, {m['cpu_count']} cores"
    return f"### {dev}: {where}"


def markdown(results: dict[str, Any]) -> str:
    """The body of the "Networks and training step" section for one device."""
    m = results["machine"]
    dev = results["device"]
    lines = [device_heading(results), "",
             f"{m['date']}, torch {m['torch']}, {m['torch_threads']} threads, RAM {m['ram_gib']} GiB. "
             "Generator: batch 1, psi computed once, no_grad. Embedder: K = 8 frames in one batch. Train step: "
             "batch 1, K = 8, one E/G update + 2 D updates; `vgg` = VGG19 + VGGFace present with random "
             "weights (pretrained files are not available offline; same cost). Peak memory of the step: "
             "the process's peak RSS on CPU (max allocated on CUDA) during the measured steps, and in "
             "brackets its growth over the start of the measurement (networks, VGG and optimiser states "
             "already built).", "",
             "| preset | px | E | G (P) | V | D | psi | G ms/frame | E ms (K=8) | step s (offline) | "
             "step s (vgg) | step peak MiB (vgg): process (growth) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["presets"].items():
        p = r.get("params", {})
        g, e = r.get("generator", {}), r.get("embedder", {})
        so, sv = r.get("train_step_offline", {}), r.get("train_step_vgg", {})
        lines.append(
            f"| {name} | {r['image_size']} | {_fmt_params(p.get('embedder'))} | {_fmt_params(p.get('generator'))} "
            f"({_fmt_params(p.get('projection'))}) | {_fmt_params(p.get('discriminator_V'))} | "
            f"{_fmt_params(p.get('discriminator'))} | {p.get('adain_params', '-')} | {g.get('ms_per_frame', '-')} | "
            f"{e.get('ms', '-')} | {so.get('s_per_step', '-')} | {sv.get('s_per_step', '-')} | "
            f"{sv.get('peak_mib', '-')} ({sv.get('peak_above_start_mib', '-')}) |")
    if dev.startswith("cuda"):
        lines += ["", "On CUDA the train step runs under bf16 autocast (train.amp, the default); generator and "
                  "embedder timings are fp32. At batch 1 these small kernels are bound by launch overhead."]
    else:
        precs = sorted({s["precision"] for r in results["presets"].values()
                        for s in (r.get("train_step_offline"), r.get("train_step_vgg")) if s and "precision" in s})
        if precs:
            lines += ["", f"The train step ran in {' / '.join(precs)} (train.amp_cpu = \"auto\": bf16 autocast where the "
                      "CPU has native bf16, AVX-512 BF16 / AMX; `--set train.amp_cpu=false` for fp32)."]
        lines += ["", "Reference: two earlier public implementations on this 2-core CPU at 256 px with the "
                  "paper's widths: generator 710-790 ms/frame, embedder 2,200-2,400 ms for 8 frames, one "
                  "meta-training step (batch 1, K = 8, VGG19 + VGGFace) 12.7-15 s, 4.7-8.3 GiB peak memory."]
    return "\n".join(lines) + "\n"


def with_notes(generated: str, old: str = "") -> str:
    """A generated block of docs/benchmarks.md, ended by `GENERATED_END`, followed by the hand-written notes that
    followed the marker in the `old` block it replaces (none when `old` has no marker)."""
    notes = old.split(GENERATED_END, 1)[1].strip("\n") if GENERATED_END in old else ""
    return generated.rstrip("\n") + "\n\n" + GENERATED_END + ("\n\n" + notes if notes else "")


def write_section(path: str | os.PathLike, body: str, device_heading: str, section: str = SECTION,
                  intro: str = INTRO) -> None:
    """Insert or replace this device's block inside the "## `section`" section of `path` (created with
    `intro` when missing), in place. The block written ends with `GENERATED_END`; what follows that marker in
    the old block (hand-written notes on the measurement) is kept, a block without the marker is replaced
    whole. Other sections (other engineers' benchmarks) and other devices' blocks are kept."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    head = f"## {section}"
    if head not in text:
        text = text.rstrip("\n") + f"\n\n{head}\n\n{intro}\n"
    start = text.index(head)
    nxt = text.find("\n## ", start + len(head))
    end = len(text) if nxt < 0 else nxt + 1
    blocks = text[start:end].split("\n### ")
    intro, rest = blocks[0], [b.rstrip("\n") for b in blocks[1:]]
    body = body.removeprefix("### ")
    ours = [i for i, b in enumerate(rest) if b.startswith(device_heading.removeprefix("### "))]
    if ours:
        rest[ours[0]] = with_notes(body, rest[ours[0]])
        rest = [b for i, b in enumerate(rest) if i not in ours[1:]]
    else:
        rest.append(with_notes(body))
    new_section = intro.rstrip("\n") + "\n" + "".join("\n### " + b + "\n" for b in rest)
    if nxt >= 0:
        new_section += "\n"
    write_text(path, text[:start] + new_section + text[end:])


def render_markdown(results: dict[str, Any]) -> str:
    """The body of the "Real-time rendering" section for one device (render / export / animate results)."""
    m = results["machine"]
    lines = [device_heading(results), "",
             f"{m['date']}, torch {m['torch']}, {m['torch_threads']} threads. Generator ms per frame at batch 1, "
             "random weights, psi fixed: `sn` = the generator as rendered before (spectral norm's W / sigma and "
             "psi's routing every frame, no_grad); `fp32` / `bf16` = the avatar-specialised renderer "
             "(inference.py: folded weights, fixed AdaIN, inference_mode; bf16 with channels_last); `onnxruntime` "
             "= its ONNX export (fp32), with its largest difference from fp32 PyTorch; `int8` = that export quantised "
             "(onnxruntime, static int8; speed only here). Timed in interleaved rounds "
             "(one call of each per round, medians), so other load on the machine weighs on all alike.", "",
             "| preset | px | generator | sn ms | fp32 ms | bf16 ms | onnxruntime ms | int8 ms | ONNX max diff | "
             "export s | ONNX MiB | default | speed-up of the default over sn |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["presets"].items():
        rr, ex = r.get("render"), r.get("export", {})
        if rr is None and not ex:
            continue
        rr = rr or {}
        default = rr.get("default")
        best = rr.get(f"{default}_ms")
        gain = f"{rr['sn_ms'] / best:.2f}x" if best and rr.get("sn_ms") else "-"
        lines.append(f"| {name} | {r['image_size']} | {rr.get('generator', '-')} | {rr.get('sn_ms', '-')} | "
                     f"{rr.get('fp32_ms', '-')} | {rr.get('bf16_ms', '-')} | {rr.get('onnxruntime_ms', '-')} | "
                     f"{rr.get('int8_ms', '-')} | "
                     f"{ex.get('max_abs_diff_vs_fp32', '-')} | {ex.get('export_s', '-')} | {ex.get('mib', '-')} | "
                     f"{default or '-'} | {gain} |")
    a = results.get("animate")
    if a:
        what = ("Shipped sample model" if a.get("generator", "warp") != "tps" else "TPS-renderer model (FF avatar of "
                "the astronaut photo)")
        lines += ["", f"{what} ({a['image_size']} px model, {a.get('generator', 'warp')} generator, frames of "
                  f"{a['output_size']} px, precision {a['precision']}): `animate` of the `talk` motion (landmarks known: adapt, rasterise, "
                  f"render, resize, H.264 encode with labels) **{a['animate_fps']} frames/s** ({a['frames']} frames "
                  f"in {a['animate_s']} s); live stage one frame at a time (`LiveStage.step`) **{a['live_ms_median']} "
                  f"ms** per frame median, {a['live_ms_p95']} ms p95. Targets: >= 25 frames/s, < 40 ms."]
        g = a.get("gaze")
        if g:
            lines += ["", f"Gaze (`--motion look`, measured on the rendered frames, docs/gaze.md): horizontal r "
                      f"**{g['look_corr_x']}**, vertical r {g['look_corr_y']}, error {g['look_error']} eye widths "
                      f"(the photo's own gaze offset included) on {g['frames_seen']} frames with both irises seen; "
                      f"face detection + iris locator {g['detect_and_locate_ms_per_frame']} ms per frame."]
    return "\n".join(lines) + "\n"


def train_step_markdown(results: dict[str, Any]) -> str:
    """The body of the "Training step" section for one device (`bench_train_step_parts` / `_speedups`)."""
    m = results["machine"]
    rows = {n: r for n, r in results["presets"].items() if "train_step_parts" in r or "train_step_speedups" in r}
    lines = [device_heading(results), "",
             f"{m['date']}, torch {m['torch']}, {m['torch_threads']} threads. One meta-learning step (batch 1, "
             "K = 8, one E/G update + 2 D updates) of each preset with its own losses, random weights, a "
             "synthetic episode.", "",
             "Where the time goes (torch.profiler; each op's self time goes to the network it ran in, a "
             "backward op to the network of its forward op; ms = its share of the profile x the median "
             "unprofiled step, default settings):", ""]
    head = ["preset", "content loss, precision", "step ms", *PARTS]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        pr = r.get("train_step_parts")
        if not pr:
            continue
        cells = [f"{pr['parts'][p]['ms']} ({pr['parts'][p]['share'] * 100:.0f} %)" for p in PARTS]
        content = pr["content_loss"] + (f", {pr['precision']}" if "precision" in pr else "")
        lines.append(f"| {name} | {content} | {pr['step_ms']} | " + " | ".join(cells) + " |")
    names = list(dict.fromkeys(v for r in rows.values() for v in r.get("train_step_speedups", {}).get("ms", {})))
    if names:
        lines += ["", "Speed-ups: ms per step of each variant, timed in interleaved rounds with a rotating order "
                  "(medians; other load weighs on all alike), and in brackets the speed-up over `before` (the "
                  "step as it was first written: torch's per-tensor Adam loop, fp32). Settings: " + "; ".join(
                      f"`{n}` = {v}" for n, v in next(r["train_step_speedups"]["variants"] for r in rows.values()
                                                       if "train_step_speedups" in r).items()) + ".", "",
                  "| preset | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for name, r in rows.items():
            sp = r.get("train_step_speedups")
            if not sp:
                continue
            cells = [f"{sp['ms'][n]} ({sp['speedup'].get(n, 0):.2f}x)" if n in sp["ms"] else "-" for n in names]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_sections(path: str | os.PathLike, results: dict[str, Any], what: list[str]) -> None:
    """Write this machine's block of each section that the measured `what` items fill (`write_section`)."""
    heading = device_heading(results)  # only this machine's block is replaced
    if set(what) - set(RENDERING):
        write_section(path, markdown(results), heading)
    if set(what) & set(RENDERING):
        write_section(path, render_markdown(results), heading, section=RENDER_SECTION, intro=RENDER_INTRO)
    if "train-step" in what:
        write_section(path, train_step_markdown(results), heading, section=TRAIN_SECTION, intro=TRAIN_INTRO)

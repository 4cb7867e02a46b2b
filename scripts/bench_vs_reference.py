#!/usr/bin/env python
"""Our paper-preset networks against the two earlier public implementations.

    OMP_NUM_THREADS=1 python scripts/bench_vs_reference.py --vincent PATH --shrubb PATH --write docs/benchmarks.md

PATHs are work trees of their source (e.g. `git archive HEAD | tar -x -C /tmp/ref_vincent`) of
vincent-thevenin/Realistic-Neural-Talking-Head-Models and shrubb/latent-pose-reenactment. Their networks are
rebuilt from their own code (imported from PATH by bench_vs_reference_theirs.py; random weights, the paper's
widths: 64 -> 512 channels, embedding 512, 256 px). Without a PATH that implementation's figures recorded in the design
notes (speed.md: one core, 1 thread, CPU-time medians) stand in, labelled "recorded (speed.md)".

Protocol, the same for all (batch 1, 256 px, K = 8, `--threads` threads, default 1):
- generator: ms per frame with the avatar's AdaIN parameters computed once, as each one's inference renders a
  frame: ours = `inference.TorchRenderer` of the generator's `specialise` at the default precision (`auto`:
  bf16 on CPUs with native bf16) and in fp32; vincent = `Generator(256, finetuning=True)` after `finetuning_init()` (psi
  fixed), eval, no_grad; shrubb = FSTH `Generator` after `enable_finetuning()` (AdaIN weights fixed), eval,
  no_grad.
- embedder: ms for K = 8 frames in one batch, eval, no_grad.
- generator and embedder are timed in one process in interleaved rounds (one call of each implementation per
  round, the order rotating), after `--warmup` calls of each; medians.
- meta-learning step: one E/G update + the D update(s) each implementation does per step (`STEP_INCLUDES`),
  each in its own worker subprocess (`--worker`), so that one's memory does not count for another; the workers
  are driven in interleaved rounds too (round r: one step of each, rotating order) when memory allows all
  of them at once, else one after another (`--step-mode`). Peak memory: the worker's lifetime peak RSS
  (getrusage ru_maxrss) and, in brackets, the peak RSS over the warm-up and timed steps alone (VmHWM reset after
  building everything).
- times: CPU time of the process (time.process_time, which load on other cores does not inflate; the recorded
  figures are CPU times too) and wall time, both from the same rounds.

Targets: generator at the default precision <= 1/3 of theirs, step <= 1/2 of theirs, peak memory
<= theirs. Output: a Markdown table (or `--json`); `--write FILE` replaces this script's own section of FILE
("## " + SECTION) or appends it at the end (bench_vs_reference_report.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from talking_heads.bench import interleaved_times, memory_mib, random_avatar, reset_peak_rss, step_state
from talking_heads.config import apply_overrides, preset
from talking_heads.inference import TorchRenderer, resolve_precision
from talking_heads.machine import describe
from talking_heads.models import build_networks
from talking_heads.train import steps as train_steps
from talking_heads.train.meta import meta_step

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its two helper modules, also when loaded by path
from bench_vs_reference_report import (IMPLS, LABELS, RECORDED, SECTION, STEP_INCLUDES, TARGETS,  # noqa: E402
                                       collect, markdown_table, ratio, section, targets, wall_table, write_section)
from bench_vs_reference_theirs import (ensure_torchvision, shrubb_render_fns, shrubb_step,  # noqa: E402
                                       torchvision_shim, vincent_render_fns, vincent_step)

ROOT = Path(__file__).resolve().parents[1]
WHAT = ("generator", "embedder", "step")
# peak RSS (GiB) a step worker is expected to need (measured plus a margin): decides --step-mode auto
EXPECTED_STEP_GIB = {"ours": 3.0, "vincent": 4.5, "shrubb": 5.5}  # measured 2.5 / 3.9 / 4.6 (paper preset)
__all__ = ["IMPLS", "LABELS", "RECORDED", "SECTION", "STEP_INCLUDES", "TARGETS", "collect", "markdown_table",
           "ratio", "section", "targets", "torchvision_shim", "wall_table", "write_section"]  # the helpers' names


# --- timing and memory -------------------------------------------------------------------------------

def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def cpu_and_wall_medians(fns: dict[str, Callable[[], Any]], *, warmup: int, rounds: int) -> dict[str, dict[str, float]]:
    """CPU and wall seconds (medians) of each fn, timed in interleaved rounds (`bench.interleaved_times`): round r
    calls every fn once, starting with the r-th (rotating), after `warmup` calls of each."""
    times = interleaved_times(fns, warmup=warmup, repeat=rounds, rotate=True)
    return {k: {"cpu_s": _median(t["cpu"]), "wall_s": _median(t["wall"]), "runs": rounds, "cpu_all": t["cpu"],
                "wall_all": t["wall"]} for k, t in times.items()}


def machine_busy_s() -> float | None:
    """CPU seconds all processes of the machine have used since boot (/proc/stat: user, nice, system, irq,
    softirq, steal), None without /proc."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return (sum(fields[:3]) + sum(fields[5:8])) / os.sysconf("SC_CLK_TCK")
    return None


def own_cpu_s() -> float:
    """CPU seconds of this process and of its children that have been waited for (the step workers)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def mem_available_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return None


# what the docs show for a path outside the project given to these options (a machine's absolute paths stay out)
PATH_OPTIONS = {"--vincent": "REF/vincent", "--shrubb": "REF/shrubb", "--write": None, "--from-json": None}


def shown_path(path: str | os.PathLike, placeholder: str | None = None) -> str:
    """`path` as committed docs show it: relative to the project when inside it, else `placeholder` (default: the
    file name)."""
    p = Path(path).resolve()
    if p.is_relative_to(ROOT):
        return str(p.relative_to(ROOT))
    return placeholder or p.name


def shown_command(args: list[str]) -> str:
    """This script's command line with the PATH_OPTIONS' values as `shown_path` gives them."""
    out, i = [], 0
    while i < len(args):
        opt, eq, value = args[i].partition("=")
        if opt in PATH_OPTIONS and (eq or i + 1 < len(args)):
            if not eq:
                i, value = i + 1, args[i + 1]
            out.append(f"{opt} {shown_path(value, PATH_OPTIONS[opt])}")
        else:
            out.append(args[i])
        i += 1
    return "python scripts/bench_vs_reference.py " + " ".join(out)


def source_revision(root: str | os.PathLike) -> str | None:
    """The git commit of a work tree that is a checkout (an exported tree has none)."""
    with contextlib.suppress(Exception):
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if out.returncode == 0 and Path(root, ".git").exists():
            return out.stdout.strip()
    return None


# --- generator and embedder (one process, interleaved) --------------------------------------------------

def ours_render_fns(preset_name: str, k: int) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    """ours' generator (default precision and fp32, the avatar-specialised renderer of `bench --what render`)
    and embedder (K frames)."""
    cpu = torch.device("cpu")
    cfg = preset(preset_name)
    g, psi, sources, y = random_avatar(cfg, cpu)
    default = resolve_precision("auto", cpu)
    fns: dict[str, Callable[[], Any]] = {}
    info = {"default_precision": default, "image_size": cfg.model.image_size, "generator": cfg.model.generator}
    renderers = {"ours_default": TorchRenderer(g.specialise(psi, sources), cpu, "auto")}
    if default != "fp32":
        renderers["ours_fp32"] = TorchRenderer(g.specialise(psi, sources), cpu, "fp32")
    for name, r in renderers.items():
        fns[f"generator/{name}"] = (lambda r=r: r(y))
    torch.manual_seed(0)
    e = build_networks(cfg, num_videos=1).embedder.eval()
    s = cfg.model.image_size
    xk, yk = torch.rand(k, 3, s, s) * 2 - 1, torch.rand(k, 3, s, s) * 2 - 1

    def embed():
        with torch.no_grad():
            return e(xk, yk)

    fns["embedder/ours"] = embed
    return fns, info


def measure_render(what: list[str], paths: dict[str, str | None], *, preset_name: str, k: int, warmup: int,
                   rounds: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """{"generator": {name: timing}, "embedder": {name: timing}, "info": ...}, all in this process."""
    fns, info = ours_render_fns(preset_name, k)
    size = info["image_size"]
    if paths.get("vincent"):
        fns.update(vincent_render_fns(paths["vincent"], size, k))
    if paths.get("shrubb"):
        fns.update(shrubb_render_fns(paths["shrubb"], size, k))
    out: dict[str, Any] = {"info": info}
    for part in ("generator", "embedder"):
        if part not in what:
            continue
        sel = {name.split("/", 1)[1]: fn for name, fn in fns.items() if name.startswith(part + "/")}
        log(f"[{part}] {len(sel)} implementations, {warmup} warm-up calls each, {rounds} interleaved rounds")
        out[part] = cpu_and_wall_medians(sel, warmup=warmup, rounds=rounds)
        log(f"[{part}] " + ", ".join(f"{n} {t['cpu_s'] * 1e3:.1f} ms cpu / {t['wall_s'] * 1e3:.1f} ms wall"
                                     for n, t in out[part].items()))
    return out


# --- meta-learning step (one worker subprocess per implementation) -------------------------------------

def ours_step(preset_name: str, k: int, content: str = "vgg", overrides: list[str] = ()) -> Callable[[], Any]:
    """One `meta.meta_step` of our preset (batch 1, K = k) with the VGG19 + VGGFace content loss (random weights
    from temporary files, as `bench --what train-step` does) or the offline one (`bench.step_state`)."""
    state, batch, run_cfg = step_state(apply_overrides(preset(preset_name), list(overrides)), "cpu", k, content)
    return lambda: meta_step(state, batch, run_cfg)


def build_step(impl: str, *, path: str | None, preset_name: str, k: int, content: str,
               overrides: list[str]) -> Callable[[], Any]:
    if impl == "ours":
        return ours_step(preset_name, k, content, overrides)
    size = preset(preset_name).model.image_size
    return {"vincent": vincent_step, "shrubb": shrubb_step}[impl](path, size, k)


def worker_main(opts: argparse.Namespace) -> int:
    """A step worker: builds one implementation's step, then answers commands on stdin with one JSON line on
    stdout each: `step` (runs one, {"cpu_s", "wall_s"}), `reset` (resets the peak RSS), `mem` (memory_mib),
    `quit`. Everything else that is printed (theirs print progress bars) goes to stderr."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    torch.set_num_threads(opts.threads)

    def send(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    t0 = time.perf_counter()
    try:
        fn = build_step(opts.worker, path=opts.path, preset_name=opts.preset, k=opts.k, content=opts.content,
                        overrides=opts.set or [])
    except BaseException:  # noqa: BLE001  (reported to the driver, which shows it)
        send({"error": traceback.format_exc()})
        return 1
    send({"ready": True, "build_s": round(time.perf_counter() - t0, 2), **memory_mib(),
          "torchvision": sys.modules["torchvision"].__version__ if "torchvision" in sys.modules else None})
    for line in sys.stdin:
        cmd = line.strip()
        try:
            if cmd == "step":
                w0, c0 = time.perf_counter(), time.process_time()
                fn()
                send({"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0})
            elif cmd == "reset":
                send({"exact": reset_peak_rss()})
            elif cmd == "mem":
                send(memory_mib())
            elif cmd == "quit":
                break
            else:
                send({"error": f"unknown command {cmd!r}"})
        except BaseException:  # noqa: BLE001
            send({"error": traceback.format_exc()})
            return 1
    return 0


class StepWorker:
    """The driver's handle on one worker subprocess."""

    def __init__(self, name: str, impl: str, argv: list[str], log_dir: str):
        self.name, self.impl = name, impl
        self.log_path = Path(log_dir) / f"{name.replace(' ', '_').replace('/', '_')}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=str(ROOT))
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"step worker {self.name} exited ({self.proc.returncode}):\n{self._tail()}")
        msg = json.loads(line)
        if "error" in msg:
            raise RuntimeError(f"step worker {self.name} failed:\n{msg['error']}\n{self._tail()}")
        return msg

    def _tail(self) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])

    def ask(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=60)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def step_precision(preset_name: str) -> str:
    """Our meta-learning step's arithmetic on this CPU at the preset's default train.amp_cpu: "bf16" or "fp32"."""
    return train_steps.step_precision(preset(preset_name).train, "cpu")


def step_specs(paths: dict[str, str | None], opts: argparse.Namespace) -> list[tuple[str, str, list[str]]]:
    """(name, impl, worker argv) of each step worker: ours, ours with each --also-step, theirs with a path."""
    common = ["--threads", str(opts.threads), "--preset", opts.preset, "--k", str(opts.k)]
    specs = [("ours", "ours", ["--worker", "ours", "--content", opts.content, *common])]
    also = list(opts.also_step or [])
    if step_precision(opts.preset) != "fp32" and not any("train.amp_cpu=false" in a for a in also):
        also.insert(0, "train.amp_cpu=false")  # the default is bf16 here: fp32 is reported too
    for extra in also:
        sets = [s for s in extra.split(",") if s]
        specs.append((f"ours [{' '.join(sets)}]", "ours",
                      ["--worker", "ours", "--content", opts.content, *common, *sum((["--set", s] for s in sets), [])]))
    for impl in IMPLS:
        if paths.get(impl):
            specs.append((impl, impl, ["--worker", impl, "--path", str(Path(paths[impl]).resolve()), *common]))
    return specs


def measure_steps(specs: list[tuple[str, str, list[str]]], *, warmup: int, rounds: int, mode: str = "auto",
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """{name: {cpu_s, wall_s, runs, build_s, maxrss_mib, step_peak_mib, ...}, "_mode": ...}."""
    if mode == "auto":
        need = sum(EXPECTED_STEP_GIB.get(impl, 5.0) for _, impl, _ in specs) + 3.0
        avail = mem_available_gib()
        mode = "interleaved" if avail is None or avail >= need else "sequential"
        log(f"[step] memory available {avail if avail is None else round(avail, 1)} GiB, all workers at once need "
            f"~{need:.1f}: {mode}")
    out: dict[str, Any] = {"_mode": mode}
    with tempfile.TemporaryDirectory(prefix="th-bench-vs-ref-") as logs:
        groups = [specs] if mode == "interleaved" else [[s] for s in specs]
        for group in groups:
            workers: list[StepWorker] = []
            try:
                for name, impl, argv in group:
                    log(f"[step] building {name} in its own process")
                    workers.append(StepWorker(name, impl, argv, logs))
                    log(f"[step] {name} built in {workers[-1].ready['build_s']} s, RSS {workers[-1].ready['rss_mib']} MiB")
                exact = {w.name: w.ask("reset")["exact"] for w in workers}
                for w in workers:
                    for _ in range(warmup):
                        w.ask("step")
                cpu: dict[str, list[float]] = {w.name: [] for w in workers}
                wall: dict[str, list[float]] = {w.name: [] for w in workers}
                for r in range(rounds):
                    for w in workers[r % len(workers):] + workers[:r % len(workers)]:
                        t = w.ask("step")
                        cpu[w.name].append(t["cpu_s"])
                        wall[w.name].append(t["wall_s"])
                    log(f"[step] round {r + 1}/{rounds}: " + ", ".join(
                        f"{w.name} {cpu[w.name][-1]:.2f} s cpu / {wall[w.name][-1]:.2f} s wall" for w in workers))
                for w in workers:
                    mem = w.ask("mem")
                    out[w.name] = {"impl": w.impl, "cpu_s": _median(cpu[w.name]), "wall_s": _median(wall[w.name]),
                                   "runs": rounds, "cpu_all": cpu[w.name], "wall_all": wall[w.name],
                                   "build_s": w.ready["build_s"], "rss_built_mib": w.ready["rss_mib"],
                                   "maxrss_mib": mem["maxrss_mib"],
                                   "step_peak_mib": mem["hwm_mib"] if exact[w.name] else None,
                                   "torchvision": w.ready.get("torchvision")}
            finally:
                for w in workers:
                    w.close()
    return out


# --- driver ----------------------------------------------------------------------------------------------

def run(opts: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    torch.set_num_threads(opts.threads)
    what = [w for w in opts.what.split(",") if w]
    bad = set(what) - set(WHAT)
    if bad:
        raise SystemExit(f"unknown --what item(s) {sorted(bad)}; choose from {', '.join(WHAT)}")
    paths = {"vincent": opts.vincent, "shrubb": opts.shrubb}
    results: dict[str, Any] = {
        "machine": describe("cpu"), "command": opts.command, "threads": opts.threads, "preset": opts.preset,
        "image_size": preset(opts.preset).model.image_size, "k": opts.k, "rounds": opts.rounds,
        "warmup": opts.warmup, "step_rounds": opts.step_rounds or opts.rounds, "step_warmup": opts.step_warmup,
        "load_start": [round(v, 2) for v in os.getloadavg()], "note": opts.note,
        "step_precision": step_precision(opts.preset),
        "sources": {i: (f"`{shown_path(paths[i], f'REF/{i}')}`" + (f" at {rev[:12]}" if (rev := source_revision(paths[i])) else ""))
                    if paths[i] else None for i in IMPLS}}
    busy0, own0, wall0 = machine_busy_s(), own_cpu_s(), time.perf_counter()
    if opts.vincent or opts.shrubb:
        results["torchvision"] = ensure_torchvision()
    render: dict[str, Any] = {}
    if "generator" in what or "embedder" in what:
        render = measure_render(what, paths, preset_name=opts.preset, k=opts.k, warmup=opts.warmup,
                                rounds=opts.rounds, log=log)
    steps: dict[str, Any] = {}
    if "step" in what:
        steps = measure_steps(step_specs(paths, opts), warmup=opts.step_warmup, rounds=results["step_rounds"],
                              mode=opts.step_mode, log=log)
        results["step_mode"] = steps.pop("_mode")
    results["load_end"] = [round(v, 2) for v in os.getloadavg()]
    busy1, wall = machine_busy_s(), time.perf_counter() - wall0
    if busy0 is not None and busy1 is not None and wall > 0:  # what other jobs used meanwhile, in cores
        results["other_load_cores"] = round(max(0.0, (busy1 - busy0) - (own_cpu_s() - own0)) / wall, 2)
    results["wall_s"] = round(wall, 1)
    results.update(render=render, steps=steps, figures=collect(render, steps, paths))
    results["targets"] = targets(results["figures"])
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vincent", metavar="PATH", help="work tree of vincent-thevenin/Realistic-Neural-Talking-Head-Models")
    p.add_argument("--shrubb", metavar="PATH", help="work tree of shrubb/latent-pose-reenactment")
    p.add_argument("--what", default="generator,embedder,step", help="comma-separated: generator, embedder, step")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up calls of each generator / embedder (default 2)")
    p.add_argument("--step-rounds", type=int, default=None, help="rounds for the step (default: --rounds)")
    p.add_argument("--step-warmup", type=int, default=1, help="warm-up steps of each worker (default 1)")
    p.add_argument("--step-mode", choices=("auto", "interleaved", "sequential"), default="auto",
                   help="step workers all alive and interleaved, or one after another (auto: by free memory)")
    p.add_argument("--also-step", action="append", metavar="OVERRIDES",
                   help="also time our step with these comma-separated --set overrides, e.g. train.amp_cpu=true")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the recorded figures)")
    p.add_argument("--preset", default="paper", help="our preset (default paper; tiny for tests)")
    p.add_argument("--k", type=int, default=8, help="K frames for the embedder and the step (default 8)")
    p.add_argument("--content", choices=("vgg", "offline"), default="vgg",
                   help="our step's content loss: VGG19 + VGGFace (random weights, as theirs; default) or offline")
    p.add_argument("--note", default="", help="a sentence added to the section (e.g. about other load)")
    p.add_argument("--write", metavar="FILE", help="replace / append this script's section of FILE (docs/benchmarks.md)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of Markdown")
    p.add_argument("--from-json", metavar="FILE",
                   help="measure nothing: the section from the results of an earlier run saved with --json (its "
                        "command is kept; --note, when given, replaces its note)")
    # worker mode (internal)
    p.add_argument("--worker", choices=("ours", *IMPLS), help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--set", action="append", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    args = sys.argv[1:] if argv is None else argv
    env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    opts.command = env + shown_command(args)
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.worker:
        return worker_main(opts)
    if opts.from_json:
        results = json.loads(Path(opts.from_json).read_text())
        # a run recorded before `shown_command` / `shown_path` existed may hold this machine's absolute paths
        env, _, args = results["command"].partition("python scripts/bench_vs_reference.py ")
        results["command"] = env + shown_command(shlex.split(args))
        results["sources"] = {i: v and re.sub(r"`([^`]+)`", lambda m: f"`{shown_path(m[1], f'REF/{i}')}`", v, count=1)
                              for i, v in results["sources"].items()}
        if opts.note:
            results["note"] = opts.note
    else:
        results = run(opts, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps(results, indent=2) if opts.json else section(results))
    if opts.write:
        write_section(opts.write, section(results))
        print(f"wrote the section to {opts.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
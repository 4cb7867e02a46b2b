"""Speed and memory benchmarks (`talking-heads bench`, scripts/bench_*.py) and the synthetic inputs that tests
and benchmarks share.

- timing.py: `time_it`, the interleaved runner (`interleaved`, `interleaved_times`), `peak_memory` and the
  /proc/self/status readers.
- synthetic.py: `SyntheticEpisodes`, `neutral_landmarks`, `collate`, `random_avatar`, `random_vgg_files`.
- networks.py: parameter counts, generator and embedder speed (random weights).
- render.py: the avatar renderers in each precision, the ONNX export, the shipped model end to end and live.
- train_step.py: one meta-learning step: its time, where it goes (torch.profiler), its speed-ups.
- markdown.py: the Markdown tables and the writers of docs/benchmarks.md's generated blocks.
- run.py: `run_bench` (what `talking-heads bench` measures) and `report`.

Peak memory is CUDA max_memory_allocated, or on CPU the growth of the process's peak resident set
(`timing.peak_memory`). Inputs are synthetic: timing does not depend on content.
"""

from .markdown import (GENERATED_END, RENDER_SECTION, SECTION, TRAIN_INTRO, TRAIN_SECTION, device_heading,
                       markdown, render_markdown, train_step_markdown, with_notes, write_section, write_sections)
from .networks import bench_embedder, bench_generator, bench_params
from .render import bench_animate, bench_export, bench_render
from .run import WHAT, bench_preset, machine, report, run_bench
from .synthetic import RandomAvatar, SyntheticEpisodes, collate, neutral_landmarks, random_avatar, random_vgg_files
from .timing import (interleaved, interleaved_times, memory_mib, peak_memory, reset_peak_rss, status_kib, sync,
                     time_it)
from .train_step import (PARTS, STEP_VARIANTS, attribute_parts, bench_train_step, bench_train_step_parts,
                         bench_train_step_speedups, network_ranges, step_state)

__all__ = [
    "GENERATED_END", "PARTS", "RENDER_SECTION", "SECTION", "STEP_VARIANTS", "TRAIN_INTRO", "TRAIN_SECTION", "WHAT",
    "RandomAvatar", "SyntheticEpisodes", "attribute_parts", "bench_animate", "bench_embedder", "bench_export",
    "bench_generator", "bench_params", "bench_preset", "bench_render", "bench_train_step", "bench_train_step_parts",
    "bench_train_step_speedups", "collate", "device_heading", "interleaved", "interleaved_times", "machine",
    "markdown", "memory_mib", "network_ranges", "neutral_landmarks", "peak_memory", "random_avatar",
    "random_vgg_files", "render_markdown", "report", "reset_peak_rss", "run_bench", "status_kib", "step_state",
    "sync", "time_it", "train_step_markdown", "with_notes", "write_section", "write_sections",
]

"""Export a meta-learned model directory for shipping: fp16 weights, same self-describing format.

    python scripts/export_model.py RUN_DIR/model src/talking_heads/assets/sample_model

Weights are stored as float16 (loaded back into float32 networks by `checkpoint.load_module`); config.json keeps
the run's config and meta block, plus `dtype` and `exported_from`. Written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from talking_heads import checkpoint


def export(src: str | Path, dst: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    cfg, meta, networks = checkpoint.load_model_dir(src)
    parts = {}
    for name in checkpoint.NETWORK_NAMES:
        state = getattr(networks, name).state_dict()  # load_model_dir returns plain modules
        parts[name] = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    meta = {k: v for k, v in meta.items() if k not in ("format", "format_version", "stage", "created", "files",
                                                       "torch", "talking_heads")}
    meta.update(dtype=str(dtype).removeprefix("torch."), exported_from=str(Path(src)))
    return checkpoint.save_dir(dst, cfg, parts, stage="meta", meta=meta)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", help="model directory written by `talking-heads train` (RUN_DIR/model)")
    p.add_argument("dst", help="destination model directory")
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    args = p.parse_args(argv)
    out = export(args.src, args.dst, getattr(torch, args.dtype))
    total = sum(f.stat().st_size for f in out.iterdir())
    print(f"{out}: {total / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

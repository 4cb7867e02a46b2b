"""Speed of the face-identity network (dlib's face ResNet, our PyTorch port) and of the face terms in training.

    .venv/bin/python scripts/bench_face_identity.py [--device cuda] [--repeat 5] [--write docs/benchmarks.md]

Measures, on real photos from ../shared/data/photos (content does not change the cost, but real faces give
real chip transforms):
- port forward (descriptor of aligned 150 px chips), batch 1 and 8, no_grad;
- port forward + backward to the input image, 128 px frames -> differentiable chips -> descriptor and
  features (what the content loss does for fake frames), batch 1 and 8;
- dlib's own compute_face_descriptor on the same chips (CPU, one by one and as a batch), for comparison;
- one meta-learning step of the sample preset with the offline content loss and with the dlib face terms
  ("offline+dlibface"), batch 1, K = 8.
Writes (with --write) the "## Face-identity network" section of the benchmarks file, per device.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"
SECTION = "Face-identity network (dlib face ResNet, PyTorch port)"
NAMES = ("lp_source_s9.jpg", "avatarify_obama.jpg", "lia_vox_macron.png", "debian_skimage_astronaut.png",
         "avatarify_einstein.jpg", "lia_vox_taylor.png", "sadtalker_happy.png", "lp_source_s10.jpg")


def frames(size: int = 128):
    from talking_heads.data.faces import prepare_photo

    crops = [prepare_photo(PHOTOS / n, size) for n in NAMES]
    x = torch.stack([torch.from_numpy(c.image.copy()).permute(2, 0, 1).float() / 127.5 - 1 for c in crops])
    return x, np.stack([c.landmarks for c in crops]).astype(np.float64), [c.image for c in crops]


def run(device: str, repeat: int) -> dict:
    from talking_heads.config import preset
    from talking_heads.landmarks.face_chips import chip_transform, crop_chips
    from talking_heads.models.face_identity import default_weights_path, load_face_identity
    from talking_heads.bench import bench_train_step, machine, time_it

    dev = torch.device(device)
    net = load_face_identity(device=dev)
    x, pts, images = frames()
    tf = chip_transform(pts)
    chips = crop_chips(x, tf).to(dev)
    out: dict = {"machine": machine(), "device": str(dev), "date": datetime.date.today().isoformat(), "rows": []}

    def add(what: str, batch: int, seconds: float):
        out["rows"].append({"what": what, "batch": batch, "ms": 1000 * seconds, "ms_per_face": 1000 * seconds / batch})
        print(f"{what:<58} batch {batch}: {1000 * seconds:8.1f} ms ({1000 * seconds / batch:.1f} ms/face)",
              flush=True)

    for b in (1, 8):
        with torch.no_grad():
            t = time_it(lambda: net(chips[:b]), dev, warmup=2, repeat=repeat)
        add("port: descriptor of aligned chips (forward, no_grad)", b, t["median_s"])
    for b in (1, 8):
        xb = x[:b].to(dev).requires_grad_(True)

        def fwd_bwd():
            xb.grad = None
            feats, desc = net.features(crop_chips(xb, tf[:b]))
            (desc.sum() + sum(f.mean() for f in feats)).backward()

        t = time_it(fwd_bwd, dev, warmup=2, repeat=repeat)
        add("port: 128 px frame -> chip -> features + descriptor, fwd + bwd", b, t["median_s"])
    try:
        import dlib

        ref = dlib.face_recognition_model_v1(str(default_weights_path()))
        np_chips = [np.ascontiguousarray(((c.permute(1, 2, 0).cpu().numpy() + 1) * 127.5).round().astype(np.uint8))
                    for c in chips]
        t = time_it(lambda: ref.compute_face_descriptor(np_chips[0]), torch.device("cpu"), warmup=2, repeat=repeat)
        add("dlib: compute_face_descriptor(chip) (its own CPU code)", 1, t["median_s"])
        t = time_it(lambda: ref.compute_face_descriptor(np_chips), torch.device("cpu"), warmup=1, repeat=repeat)
        add("dlib: compute_face_descriptor([8 chips])", 8, t["median_s"])
    except ImportError:
        print("dlib not installed: no reference timing", file=sys.stderr)
    cfg = preset("sample")
    for content in ("offline", "offline+dlibface"):
        r = bench_train_step(cfg, dev, repeat, content)
        out.setdefault("train_step", {})[content] = r
        print(f"sample preset meta step ({content}): {r['s_per_step']:.3f} s", flush=True)
    return out


def markdown(r: dict) -> str:
    m = r["machine"]
    where = m.get("gpu") if r["device"].startswith("cuda") else f"{m['cpu']}, {m['cpu_count']} cores"
    lines = [f"### {r['device']}: {where}", "",
             f"{r['date']}, torch {m['torch']}, {m['torch_threads']} torch threads. "
             "Reproduce: `.venv/bin/python scripts/bench_face_identity.py --write docs/benchmarks.md`"
             + (" --device cuda" if r["device"].startswith("cuda") else "") + ".", "",
             "| what | batch | ms | ms per face |", "|---|---|---|---|"]
    lines += [f"| {row['what']} | {row['batch']} | {row['ms']:.1f} | {row['ms_per_face']:.1f} |" for row in r["rows"]]
    steps = r.get("train_step", {})
    if steps:
        off, face = steps.get("offline"), steps.get("offline+dlibface")
        lines += ["", "| sample preset meta-learning step (batch 1, K = 8) | s per step | peak memory |", "|---|---|---|"]
        for name, s in steps.items():
            mem = s.get("peak_mib")
            lines.append(f"| content loss `{name}` | {s['s_per_step']:.3f} | "
                         f"{'-' if mem is None else f'{mem:.0f} MiB'} |")
        if off and face:
            lines += ["", f"The face terms cost {face['s_per_step'] / off['s_per_step']:.2f}x the offline-loss step "
                          "(one chip crop of the fake and the real target, one forward of each, one backward)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--write", type=Path, default=None, metavar="BENCHMARKS.md")
    args = p.parse_args(argv)
    if not PHOTOS.is_dir():
        print(f"error: {PHOTOS} not found (the project's sample photos)", file=sys.stderr)
        return 2
    r = run(args.device, args.repeat)
    body = markdown(r)
    print(body)
    if args.write:
        from talking_heads.bench import write_section

        write_section(args.write, body, f"### {r['device']}:", SECTION,
                      "dlib's face-recognition ResNet read from `face-recognition-models` into PyTorch "
                      "(`models/face_identity.py`): the CSIM / identity metrics and the face terms of the content loss.")
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

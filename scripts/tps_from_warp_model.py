"""Start a TPS-renderer model (model.generator = "tps") from a trained warp-generator model.

    python scripts/tps_from_warp_model.py WARP_MODEL_DIR DATA_DIR OUT_MODEL_DIR [--set section.field=value ...]

The TPS renderer's fill generator takes the same 7 input planes as the warp generator's refining generator
(landmark image, warped photo, a 1-plane mask), so it starts as that generator; E, V, w0 and b are copied; P's
face rows are the warp model's P (its mouth rows start small, so the face's psi is unchanged and the mouth
generator starts near plain instance norm); the flow network's body is the warp model's (its new output layer
is zero: the residual flow starts at the TPS prior); W is re-initialised from the data (DATA_DIR may hold
another number of clips than the warp model was trained on). The result is a stage "meta" model directory at
step 0 that `talking-heads train --init-from OUT_MODEL_DIR` meta-learns further.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from talking_heads import config as C
from talking_heads.checkpoint import load_model_dir, save_model_dir
from talking_heads.data.episodes import EpisodeDataset
from talking_heads.models import build_networks
from talking_heads.train.meta import init_w_from_embedder

MOUTH_ROWS_SCALE = 0.01  # the mouth rows of P start this small against the face rows
MAX_YAW = 15.0  # inference.max_yaw of the TPS model: a 2-D warp turns a head cleanly to about 15 degrees (scripts/tps_yaw_sweep.py)


def transplant(warp_nets, tps_nets) -> None:
    """Copy what the two models share (module docstring) into `tps_nets`, in place."""
    tps_nets.embedder.load_state_dict(warp_nets.embedder.state_dict())
    src_d, dst_d = warp_nets.discriminator.state_dict(), tps_nets.discriminator.state_dict()
    dst_d.update({k: v for k, v in src_d.items() if not k.startswith("W.")})
    tps_nets.discriminator.load_state_dict(dst_d)
    g_src, g_dst = warp_nets.generator, tps_nets.generator
    core = {k: v for k, v in g_src.core.state_dict().items() if not k.startswith("projection.")}
    g_dst.core.load_state_dict(core)
    flow = {k: v for k, v in g_src.flow.state_dict().items() if not k.startswith("head.")}
    g_dst.flow.load_state_dict(flow, strict=False)
    proj_src = g_src.core.projection.state_dict()
    proj_dst = g_dst.projection.state_dict()
    n = g_dst.core.num_adain_params
    for key, value in proj_src.items():
        target = proj_dst[key]
        if target.shape == value.shape:  # spectral norm's v (input side)
            proj_dst[key] = value.clone()
            continue
        # the fresh initialisation scaled down; spectral norm's u gets zeros there, so sigma = u^T W v is the
        # warp model's own
        mouth = torch.zeros_like(target[n:]) if key.endswith("_u") else target[n:] * MOUTH_ROWS_SCALE
        proj_dst[key] = torch.cat([value, mouth])
    g_dst.projection.load_state_dict(proj_dst)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("warp_model")
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    cfg_w, _, warp_nets = load_model_dir(args.warp_model)
    if cfg_w.model.generator != "warp":
        raise SystemExit(f"{args.warp_model}: a warp-generator model is needed, this one is {cfg_w.model.generator!r}")
    cfg = dataclasses.replace(cfg_w, model=dataclasses.replace(cfg_w.model, generator="tps"),
                              inference=dataclasses.replace(cfg_w.inference, max_yaw=MAX_YAW, output_size=0))
    cfg = C.apply_overrides(cfg, args.overrides)
    dataset = EpisodeDataset.from_config(args.data, cfg)
    torch.manual_seed(cfg.train.seed)
    tps_nets = build_networks(cfg, dataset.num_videos)
    transplant(warp_nets, tps_nets)
    init_w_from_embedder(tps_nets, dataset, torch.device("cpu"))
    save_model_dir(args.out, cfg, tps_nets, num_videos=dataset.num_videos, content_loss="offline+dlibface", step=0,
                   extra_meta={"started_from": str(args.warp_model)})
    print(f"{args.out}: TPS model from {args.warp_model}, {dataset.num_videos} videos")


if __name__ == "__main__":
    main()

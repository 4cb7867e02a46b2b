"""torchrun helpers and DDP equality: 2 CPU processes (gloo) = 1 process on the same global batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from talking_heads import checkpoint, dist
from talking_heads.config import apply_overrides, preset


def test_single_process_is_world_size_one(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = dist.init("cpu")
    assert (info.rank, info.world_size, info.is_main, info.distributed) == (0, 1, True, False)
    assert info.device == torch.device("cpu")
    m = torch.nn.Linear(2, 2)
    assert dist.wrap_ddp(m, info) is m and dist.unwrap(m) is m
    assert dist.all_reduce_mean({"a": 1.5}, info.device) == {"a": 1.5}
    assert dist.all_gather_object(3) == [3]
    dist.barrier()
    dist.cleanup()


def test_unwrap_strips_compile_wrapper():
    m = torch.nn.Linear(2, 2)
    assert dist.unwrap(torch.compile(m)) is m


def test_sampler_global_batches_do_not_depend_on_world_size():
    single = dist.EpisodeSampler(7, batch_size=4, seed=5)
    it = iter(single)
    one = [[next(it) for _ in range(4)] for _ in range(5)]  # 5 global batches (crosses an epoch)
    its = [iter(dist.EpisodeSampler(7, batch_size=2, seed=5, rank=r, world_size=2)) for r in range(2)]
    two = [sorted(sum(([next(i) for _ in range(2)] for i in its), [])) for _ in range(5)]
    assert [sorted(b) for b in one] == two
    assert sorted(one[0] + one[1][:3]) == list(range(7))  # epoch 0 is a permutation (padded to 8)
    assert all(7 <= i < 14 for i in one[2] + one[3])  # epoch 1 is offset by the dataset length


def test_sampler_resumes_mid_epoch():
    a = dist.EpisodeSampler(5, batch_size=2, seed=1)
    it = iter(a)
    stream = [next(it) for _ in range(12)]
    b = dist.EpisodeSampler(5, batch_size=2, seed=1)
    b.load_state(a.state_after(4))  # 4 steps of 2 episodes consumed; epochs of 3 steps
    assert b.state() == {"epoch": 1, "position": 2}
    it = iter(b)
    assert [next(it) for _ in range(4)] == stream[8:12]


# --- DDP equality -------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


OPTIONS = ["train.diffaugment=translation,cutout,color", "train.lecam_weight=0.3",
           "model.embedder_activation=leaky_relu", "loss.match_weight=1.0", "model.generator=warp"]


def _one_step(batch_size: int, info: dist.DistInfo, options: bool = False) -> dict[str, torch.Tensor]:
    """Build tiny networks (seed 0), take this rank's share of global batch 0, run one meta step.

    Returns parameters and buffers after the step ("p:" keys) and the gradients of that step ("g:" keys:
    E and G from the G update, D from the D update). One D update per G update here (the 2:1 ratio is
    tested in test_train), so that every compared gradient comes from identical parameters.

    In float64: the tiny generator's gradient at initialisation is ill-conditioned, so in float32 merely
    changing the number of CPU threads of a single process moves it by ~0.5% (relative norm), as much as
    DDP vs single process does; in float64 both differences are ~1e-15 and the comparison can be tight.
    """
    from talking_heads.models import build_networks
    from talking_heads.train import meta
    from talking_heads.bench import SyntheticEpisodes, collate

    cfg = apply_overrides(preset("tiny"), [f"train.batch_size={batch_size}", "train.d_steps_per_g_step=1",
                                           *(OPTIONS if options else [])])
    torch.manual_seed(0)
    nets = build_networks(cfg, num_videos=2)
    for name in checkpoint.NETWORK_NAMES:
        getattr(nets, name).double()
    state = meta.build_meta_state(cfg, nets, info)
    ds = SyntheticEpisodes(cfg, num_episodes=2, num_videos=2, seed=4)
    it = iter(dist.EpisodeSampler(len(ds), batch_size, cfg.train.seed, info.rank, info.world_size))
    batch = {k: v.double() if v.is_floating_point() else v
             for k, v in collate([ds[next(it)] for _ in range(batch_size)]).items()}
    logs, _ = meta.meta_step(state, batch, cfg)
    out = {}
    for name in checkpoint.NETWORK_NAMES:
        net = getattr(nets, name)
        out.update({f"p:{name}.{k}": v.detach().clone() for k, v in net.state_dict().items()})
        out.update({f"g:{name}.{k}": p.grad.detach().clone() for k, p in net.named_parameters()})
    return out


def _worker(rank: int, world: int, port: int, path: str, options: bool = False) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = dist.init("cpu")
    try:
        assert info.world_size == world and dist.world_size() == world
        result = _one_step(1, info, options)
        gathered = dist.all_gather_object({k: v for k, v in result.items()})
        if rank == 0:
            for other in gathered[1:]:  # every rank holds the same parameters after the step
                for k, v in other.items():
                    assert torch.equal(v, result[k]), k
            torch.save(result, path)
    finally:
        dist.cleanup()


@pytest.mark.slow
@pytest.mark.parametrize("options", [False, True], ids=["paper", "diffaugment+lecam+leaky+warp"])
def test_ddp_two_processes_equal_single_process(tmp_path, monkeypatch, options):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    path = str(tmp_path / "ddp.pt")
    mp.spawn(_worker, args=(2, _free_port(), path, options), nprocs=2, join=True)
    ddp = torch.load(path, weights_only=True)
    single = _one_step(2, dist.DistInfo(), options)
    assert ddp.keys() == single.keys()
    # DDP's averaged gradients = the global batch's (tolerance relative to each network's largest gradient)
    scale = {n: max(float(v.abs().max()) for k, v in single.items() if k.startswith(f"g:{n}."))
             for n in checkpoint.NETWORK_NAMES}
    for k in (k for k in single if k.startswith("g:")):
        atol = 1e-10 * scale[k[2:].split(".")[0]]
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-8, atol=atol, msg=k)
    # parameters: equal wherever the gradient is above float noise. (Adam's first step is lr * g / |g|, so a
    # gradient that is zero in exact arithmetic -- e.g. a conv bias right before instance norm -- moves by
    # +-lr according to the sign of its rounding noise, which differs between the two summation orders.)
    skipped = total = 0
    for k in (k for k in single if k.startswith("p:")):
        grad = single.get("g:" + k[2:])
        mask = torch.ones_like(single[k], dtype=torch.bool) if grad is None else \
            (grad == 0) | (grad.abs() > 1e-8 * scale[k[2:].split(".")[0]])
        skipped, total = skipped + int((~mask).sum()), total + mask.numel()
        if single[k].is_floating_point():
            torch.testing.assert_close(ddp[k][mask], single[k][mask], rtol=0, atol=1e-12, msg=k)
        else:
            assert torch.equal(ddp[k], single[k]), k
    assert skipped < 0.01 * total, (skipped, total)  # only the few rounding-noise gradients

"""The training step's speed-ups (issue 16 item 3) and their benchmark (`talking-heads bench --what train-step`).

- Adam: the fused kernel (train.adam = "fused", the default) and the foreach one against torch's per-tensor loop
  ("for-loop", the step as it ran before): after one meta-learning step in fp32, foreach gives the very same
  parameters and fused the same within 1e-7 (a step moves a parameter by up to about lr = 2e-4; fused Adam
  evaluates the same update in another order, so the last bits differ).
- bf16 autocast on CPU (train.amp_cpu, opt-in): the step runs in bf16, stays finite, keeps fp32 parameters and
  lands near the fp32 step; fine-tuning's autocast call (no CPU flag) stays fp32.
- The profile breakdown and the interleaved speed-up table of the bench, and its section in a Markdown file.
No timing is asserted.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from talking_heads import bench, dist
from talking_heads.bench import SyntheticEpisodes, collate
from talking_heads.config import ConfigError, apply_overrides, preset
from talking_heads.models import build_networks
from talking_heads.train import meta, steps

# the sample preset's training options on the tiny networks: warp generator, dlib face terms, DiffAugment
SAMPLE_LIKE = ("model.generator=warp", "loss.face_network=dlib", "loss.face_content_weight=1.0",
               "loss.identity_weight=10.0", "train.diffaugment=translation,cutout,color", "loss.match_weight=1.0")
FUSED_ATOL = 1e-7


def one_step(*overrides: str, steps_: int = 1):
    """Parameters of E, G, D after `steps_` meta-learning steps (seed 0, the same two synthetic episodes),
    and the last step's logs (as floats) and x_fake."""
    cfg = apply_overrides(preset("tiny"), list(overrides))
    torch.manual_seed(0)
    nets = build_networks(cfg, 3)
    state = meta.build_meta_state(cfg, nets, dist.DistInfo())
    ds = SyntheticEpisodes(cfg, num_episodes=2, num_videos=3, seed=1)
    batch = collate([ds[0], ds[1]])
    for s in range(1, steps_ + 1):
        logs, x_fake = meta.meta_step(state, batch, cfg, s)
    params = {f"{n}.{k}": v.detach().clone() for n in ("embedder", "generator", "discriminator")
              for k, v in getattr(nets, n).named_parameters()}
    return params, steps.to_floats([logs])[0], x_fake


@pytest.mark.parametrize("options", [(), SAMPLE_LIKE], ids=["tiny", "sample-options"])
def test_fused_and_foreach_adam_give_the_for_loop_step(options):
    before, _, _ = one_step("train.adam=for-loop", *options)
    foreach, _, _ = one_step("train.adam=foreach", *options)
    fused, _, _ = one_step(*options)  # the default
    assert preset("tiny").train.adam == preset("sample").train.adam == "fused"
    start, _, _ = one_step("train.adam=for-loop", "train.lr_generator=0", "train.lr_discriminator=0", *options)
    assert any(not torch.equal(before[k], start[k]) for k in before)  # the step moved the parameters
    for k in before:
        assert torch.equal(foreach[k], before[k]), k
        torch.testing.assert_close(fused[k], before[k], rtol=0, atol=FUSED_ATOL, msg=k)


def test_adam_implementation_follows_the_config_on_restore():
    """load_state_dict brings back the saved switches; set_adam_impl makes the config win (meta._restore),
    and a for-loop state continues under the fused kernel as it would under the loop."""
    torch.manual_seed(0)
    w = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    loop = steps.adam(w, lr=1e-2, betas=(0.0, 0.999), impl="for-loop")
    for p in w:
        p.grad = torch.ones_like(p)
    loop.step()
    saved = copy.deepcopy(loop.state_dict())  # a checkpoint's copy (state_dict shares the tensors)
    clone = [torch.nn.Parameter(p.detach().clone()) for p in w]
    fused = steps.adam(clone, lr=1e-2, betas=(0.0, 0.999), impl="fused")
    fused.load_state_dict(saved)
    assert not fused.param_groups[0]["fused"]  # the saved switch came back
    steps.set_adam_impl(fused, "fused")
    assert fused.param_groups[0]["fused"] and not fused.param_groups[0]["foreach"]
    for p, q in zip(w, clone):
        p.grad = q.grad = torch.full_like(p, 0.5)
    loop.step()
    fused.step()
    for p, q in zip(w, clone):
        torch.testing.assert_close(q, p, rtol=0, atol=FUSED_ATOL)
    with pytest.raises(ConfigError, match="train.adam"):
        steps.adam(w, lr=1e-3, betas=(0.0, 0.999), impl="lion")


@pytest.mark.parametrize("options", [(), SAMPLE_LIKE], ids=["tiny", "sample-options"])
def test_bf16_autocast_on_cpu_runs_and_stays_finite(options):
    """One step in bf16 next to fp32: the losses (computed before any update) agree within 2 % (bf16 keeps 8
    bits of mantissa; the identity term within bf16's spacing near 1), and the updates point the same way for >= 90 % of the parameters' elements (measured
    94-97 %; Adam's first update is +-lr whatever the gradient's size, so its sign is what can differ)."""
    start, _, _ = one_step("train.lr_generator=0", "train.lr_discriminator=0", *options)
    fp32, logs32, fake32 = one_step(*options)
    bf16, logs16, fake16 = one_step("train.amp_cpu=true", *options)
    assert fake32.dtype == torch.float32 and fake16.dtype == torch.bfloat16  # autocast really ran
    assert all(math.isfinite(v) for v in logs16.values())
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in bf16.values())
    for k, v in logs32.items():
        # the identity term is 1 - cos with cos near 1, where bf16's spacing is 2^-8 = 0.0039: its absolute error
        # is bounded by that, not by 2 % of the small difference (0.0024 measured on an AVX2 CPU)
        assert logs16[k] == pytest.approx(v, rel=0.02, abs=2**-8 if k == "g_cnt_id" else 1e-3), k
    agree = moved = 0
    for k in fp32:
        d32, d16 = fp32[k] - start[k], bf16[k] - start[k]
        agree += int(((d32.sign() == d16.sign()) & (d32 != 0)).sum())
        moved += int((d32 != 0).sum())
    assert moved > 0 and agree / moved >= 0.9
    _, logs, _ = one_step("train.amp_cpu=true", *options, steps_=3)  # and it goes on finite
    assert all(math.isfinite(v) for v in logs.values())


def test_amp_cpu_takes_true_false_or_auto():
    """train.amp_cpu: true / false as given, "auto" = on exactly where the CPU has native bf16; anything else is
    a ConfigError naming the field, from --set and from a config.json alike."""
    from talking_heads.config import Config
    from talking_heads.machine import cpu_supports_bf16

    for raw, value, on in (("true", True, True), ("false", False, False), ("auto", "auto", cpu_supports_bf16())):
        cfg = apply_overrides(preset("tiny"), [f"train.amp_cpu={raw}"])
        assert cfg.train.amp_cpu == value and steps.cpu_amp(cfg.train.amp_cpu) is on
        assert Config.from_dict(json.loads(cfg.to_json())).train.amp_cpu == value  # survives config.json
    with pytest.raises(ConfigError, match="train.amp_cpu"):
        steps.cpu_amp(apply_overrides(preset("tiny"), ["train.amp_cpu=sometimes"]).train.amp_cpu)
    with pytest.raises(ConfigError, match="train.amp_cpu must be true or false or a string"):
        apply_overrides(preset("tiny"), ["train.amp_cpu=1"])


def test_step_precision_names_what_autocast_runs():
    from talking_heads.machine import cpu_supports_bf16

    native = "bf16" if cpu_supports_bf16() else "fp32"
    for sets, cpu, cuda in ((["train.amp_cpu=false"], "fp32", "bf16"), (["train.amp_cpu=true"], "bf16", "bf16"),
                            (["train.amp_cpu=auto"], native, "bf16"), (["train.amp=false"], native, "fp32")):
        train = apply_overrides(preset("sample"), sets).train
        assert steps.step_precision(train, "cpu") == cpu and steps.step_precision(train, "cuda") == cuda, sets
        with steps.autocast(torch.device("cpu"), train.amp, steps.cpu_amp(train.amp_cpu)):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[cpu])
    assert preset("sample").train.amp_cpu == preset("paper").train.amp_cpu == "auto"
    assert preset("tiny").train.amp_cpu is False


def test_train_rejects_a_bad_amp_cpu_before_building_anything(tmp_path):
    with pytest.raises(ConfigError, match='train.amp_cpu must be true, false or "auto"'):
        meta.train(tmp_path / "run", cfg=preset("tiny"), overrides=["train.amp_cpu=fast"], data_dir=tmp_path)
    assert not (tmp_path / "run").exists()


def test_cpu_autocast_needs_its_own_flag():
    cpu = torch.device("cpu")
    x = torch.randn(2, 4)
    with steps.autocast(cpu, True):  # train.amp only: CUDA (fine-tuning passes just this)
        assert (x @ x.T).dtype == torch.float32
    with steps.autocast(cpu, False, cpu=True):
        assert (x @ x.T).dtype == torch.bfloat16


def test_profile_breakdown_covers_the_networks():
    r = bench.bench_train_step_parts(apply_overrides(preset("tiny"), list(SAMPLE_LIKE)), torch.device("cpu"),
                                     repeat=1, k=2)
    parts = r["parts"]
    assert list(parts) == list(bench.PARTS) and r["content_loss"] == "offline+dlibface"
    assert r["precision"] == "fp32"  # the tiny preset's train.amp_cpu=false
    assert abs(sum(p["share"] for p in parts.values()) - 1) < 1e-3
    for name in ("E", "G", "D in the G step", "D in the D steps", "face terms (dlib)", "augmentation",
                 "optimiser E, G", "optimiser D"):
        assert parts[name]["share"] > 0, name
    assert parts["other"]["share"] < 0.5


def test_bench_train_step_cli_writes_its_section(tmp_path, capsys):
    from talking_heads.cli import main

    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\n## Real-time rendering (issue 16)\n\nkeep me\n")
    assert main(["bench", "--preset", "tiny", "--what", "train-step", "--json", "--repeat", "1",
                 "--write", str(md)]) == 0
    r = json.loads(capsys.readouterr().out)["presets"]["tiny"]
    sp = r["train_step_speedups"]
    assert set(sp["ms"]) == set(bench.STEP_VARIANTS) and sp["speedup"]["before"] == 1.0
    assert all(v > 0 for v in sp["ms"].values()) and r["train_step_parts"]["step_ms"] > 0
    text = md.read_text()
    assert "keep me" in text and f"## {bench.TRAIN_SECTION}" in text and "| tiny | offline, fp32 |" in text
    assert "fused Adam + bf16" in text
    main(["bench", "--preset", "tiny", "--what", "train-step", "--repeat", "1", "--write", str(md)])
    assert md.read_text().count(f"## {bench.TRAIN_SECTION}") == 1


def test_write_section_replaces_its_own_machine_in_place_and_keeps_notes(tmp_path):
    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\n## S\n\nintro\n\n### cpu: A, 2 cores\n\nold A table\n\n### cpu: B, 2 cores\n\n"
                  "B table\n\nB notes\n\n## Later\n\nlater text\n")
    bench.write_section(md, "### cpu: A, 2 cores\n\nnew A table\n", "### cpu: A, 2 cores", section="S")
    text = md.read_text()
    # a block without the end marker (written by hand or before it existed) is replaced whole, where it was
    assert "old A table" not in text and text.index("new A table") < text.index("### cpu: B")
    assert "B notes" in text and text.rstrip().endswith("later text") and text.count("### cpu: A") == 1
    # notes written after the marker survive the next run; another machine's block is appended once
    md.write_text(text.replace(bench.GENERATED_END, bench.GENERATED_END + "\n\nA notes by hand"))
    bench.write_section(md, "### cpu: A, 2 cores\n\nnewer A table\n", "### cpu: A, 2 cores", section="S")
    bench.write_section(md, "### cpu: C, 2 cores\n\nC table\n", "### cpu: C, 2 cores", section="S")
    text = md.read_text()
    assert "new A table" not in text and "newer A table" in text and "A notes by hand" in text
    assert text.index("newer A table") < text.index(bench.GENERATED_END) < text.index("A notes by hand") \
        < text.index("### cpu: B") < text.index("### cpu: C") < text.index("## Later")
    assert text.count(bench.GENERATED_END) == 2

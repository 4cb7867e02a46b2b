"""Meta-learning: the two step functions, the loop, resume, the train and bench commands (tiny preset)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from talking_heads import checkpoint
from talking_heads.config import apply_overrides, preset
from talking_heads.train import meta, steps
from talking_heads.bench import SyntheticEpisodes, collate


def tiny(*overrides: str):
    return apply_overrides(preset("tiny"), list(overrides))


def make_state(cfg, num_videos: int = 3, seed: int = 0):
    from talking_heads import dist
    from talking_heads.models import build_networks

    torch.manual_seed(seed)
    nets = build_networks(cfg, num_videos)
    return meta.build_meta_state(cfg, nets, dist.DistInfo())


def batch_of(cfg, n: int = 2, num_videos: int = 3, seed: int = 1):
    ds = SyntheticEpisodes(cfg, num_episodes=n, num_videos=num_videos, seed=seed)
    return collate([ds[i] for i in range(n)])


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def grads(module: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {k: p.grad for k, p in module.named_parameters()}


def zero_all(state) -> None:
    for m in (state.networks.embedder, state.networks.generator, state.networks.discriminator):
        m.zero_grad(set_to_none=True)


def run_generator_step(state, batch, cfg):
    """The E/G update of a meta-learning step, exactly as the loop runs it: `meta.meta_step` with no D update."""
    from dataclasses import replace

    return meta.meta_step(state, batch, replace(cfg, train=replace(cfg.train, d_steps_per_g_step=0)))


# --- step functions -------------------------------------------------------------------------------

def test_generator_step_updates_e_and_g_only():
    cfg = tiny()
    state, batch = make_state(cfg), batch_of(cfg)
    zero_all(state)
    d_before = snapshot(state.networks.discriminator)
    logs, _ = run_generator_step(state, batch, cfg)
    assert {"g_cnt", "g_adv", "g_fm", "g_mch", "g_total"} <= set(logs)
    for net in (state.networks.embedder, state.networks.generator):
        g = grads(net)
        missing = [k for k, v in g.items() if v is None]
        assert not missing, f"no gradient for {missing}"
        assert all(torch.isfinite(v).all() for v in g.values())
        assert sum(float(v.abs().sum()) for v in g.values()) > 0
    assert all(p.grad is not None for p in state.networks.generator.projection.parameters()), "P must learn"
    d_grads = grads(state.networks.discriminator)
    assert all(v is None for v in d_grads.values()), [k for k, v in d_grads.items() if v is not None]
    for k, v in snapshot(state.networks.discriminator).items():
        assert torch.equal(v, d_before[k]), f"D parameter {k} changed in the G step"


def test_discriminator_step_updates_d_only():
    cfg = tiny()
    state, batch = make_state(cfg), batch_of(cfg)
    with torch.no_grad():
        x_fake, _ = state.eg(batch["x_src"], batch["y_src"], batch["y_tgt"])
    zero_all(state)
    eg_before = snapshot(state.eg)
    logs = state.discriminator_step({**batch, "x_fake": x_fake})
    assert set(logs) == {"d_loss", "d_real", "d_fake"}
    d = state.networks.discriminator
    missing = [k for k, v in grads(d).items() if v is None]
    assert not missing, f"no gradient for {missing}"
    for name in ("W", "w0", "b"):  # (b's hinge gradient is exactly 0 while every margin is active)
        part = getattr(d, name)
        tensors = list(part.parameters()) if isinstance(part, torch.nn.Module) else [part]
        assert all(t.grad is not None for t in tensors), name
    assert float(d.W.weight.grad.abs().sum()) > 0 and float(d.w0.grad.abs().sum()) > 0
    assert float(sum(p.grad.abs().sum() for p in d.V.parameters())) > 0
    for net in (state.networks.embedder, state.networks.generator):
        assert all(v is None for v in grads(net).values())
    assert all(torch.equal(v, eg_before[k]) for k, v in snapshot(state.eg).items())


def test_match_loss_only_when_enabled_and_reaches_e_only():
    cfg = tiny("loss.match_loss=false")
    state, batch = make_state(cfg), batch_of(cfg)
    logs, _ = run_generator_step(state, batch, cfg)
    assert "g_mch" not in logs
    cfg = tiny()
    state = make_state(cfg)
    w_before = state.networks.discriminator.W.weight.detach().clone()
    zero_all(state)
    logs, _ = run_generator_step(state, batch, cfg)
    assert logs["g_mch"] > 0
    assert state.networks.discriminator.W.weight.grad is None
    assert torch.equal(state.networks.discriminator.W.weight, w_before)


def test_meta_step_changes_parameters_without_nan():
    cfg = tiny()
    state, batch = make_state(cfg), batch_of(cfg)
    before = {name: snapshot(getattr(state.networks, name)) for name in checkpoint.NETWORK_NAMES}
    logs, x_fake = meta.meta_step(state, batch, cfg)
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values()), logs
    assert x_fake.shape == batch["x_tgt"].shape and torch.isfinite(x_fake).all()
    for name in checkpoint.NETWORK_NAMES:
        after = snapshot(getattr(state.networks, name))
        assert all(torch.isfinite(v).all() for v in after.values())
        changed = [k for k in after if not torch.equal(after[k], before[name][k])]
        assert changed, f"{name} did not change"
    p_before = before["generator"]
    assert any(not torch.equal(p, p_before[f"projection.{k}"])
               for k, p in state.networks.generator.projection.named_parameters())


def test_meta_step_is_deterministic():
    cfg = tiny()
    results = []
    for _ in range(2):
        state, batch = make_state(cfg, seed=3), batch_of(cfg)
        for _ in range(2):
            meta.meta_step(state, batch, cfg)
        results.append({n: snapshot(getattr(state.networks, n)) for n in checkpoint.NETWORK_NAMES})
    for n in checkpoint.NETWORK_NAMES:
        for k, v in results[0][n].items():
            assert torch.equal(v, results[1][n][k]), f"{n}.{k}"


def test_synthetic_episodes_have_the_real_datasets_item_layout(tmp_path):
    """Benchmarks and these tests stand in SyntheticEpisodes for EpisodeDataset: same keys, shapes, dtypes.
    (That a target is never a source is a property of the real dataset: tests/test_episodes.py.)"""
    cfg = tiny()
    item = SyntheticEpisodes(cfg)[0]
    real_keys = {"x_src", "y_src", "x_tgt", "y_tgt", "p_tgt", "video", "aug_seed"}  # EpisodeDataset.__getitem__
    assert set(item) == real_keys
    assert item["x_src"].shape == item["y_src"].shape == (cfg.train.k_shot, 3, 32, 32)
    assert item["x_tgt"].shape == item["y_tgt"].shape == (3, 32, 32) and item["p_tgt"].shape == (68, 2)
    assert item["video"].dtype == item["aug_seed"].dtype == torch.int64 and item["video"].ndim == 0


# --- the loop ---------------------------------------------------------------------------------------

def _train(run_dir, *overrides, num_episodes=5):
    cfg = tiny("train.checkpoint_every=2", "train.sample_every=2", "train.batch_size=2")
    ds = SyntheticEpisodes(cfg, num_episodes=num_episodes, num_videos=3)
    return meta.train(run_dir, cfg=cfg, overrides=list(overrides), dataset=ds, progress=False)


def test_two_d_updates_per_g_update(tmp_path, monkeypatch):
    calls = {"g": 0, "d": 0}
    real_g, real_d = steps.GanStep.generator_step, steps.GanStep.discriminator_step

    def count_g(self, *args, **kw):
        calls["g"] += 1
        return real_g(self, *args, **kw)

    def count_d(self, *args, **kw):
        calls["d"] += 1
        return real_d(self, *args, **kw)

    monkeypatch.setattr(steps.GanStep, "generator_step", count_g)
    monkeypatch.setattr(steps.GanStep, "discriminator_step", count_d)
    _train(tmp_path / "run", "train.steps=3")
    assert calls == {"g": 3, "d": 6}


def _params(model_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for name in checkpoint.NETWORK_NAMES:
        out.update({f"{name}.{k}": v for k, v in load_file(str(model_dir / f"{name}.safetensors")).items()})
    return out


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, monkeypatch):
    full = _train(tmp_path / "full", "train.steps=4")

    # kill the second run inside its step 3 (after the step-2 checkpoint), then resume it
    real_g, calls = steps.GanStep.generator_step, {"n": 0}

    def dies_at_step_3(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_g(self, *args, **kw)

    monkeypatch.setattr(steps.GanStep, "generator_step", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "killed", "train.steps=4")
    monkeypatch.setattr(steps.GanStep, "generator_step", real_g)
    ts = checkpoint.load_training_state(tmp_path / "killed" / "training_state.pt")
    assert ts["step"] == 2
    # resume: the config comes from the run (no cfg given)
    ds = SyntheticEpisodes(preset("tiny"), num_episodes=5, num_videos=3)
    resumed = meta.train(tmp_path / "killed", dataset=ds, progress=False)

    a, b = _params(full), _params(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    # the optimiser states and sampler position agree too
    ta = torch.load(tmp_path / "full" / "training_state.pt", weights_only=True)
    tb = torch.load(tmp_path / "killed" / "training_state.pt", weights_only=True)
    assert ta["step"] == tb["step"] == 4 and ta["sampler"] == tb["sampler"]
    sa, sb = ta["optimizers"]["generator"]["state"], tb["optimizers"]["generator"]["state"]
    for i in sa:
        torch.testing.assert_close(sb[i]["exp_avg_sq"], sa[i]["exp_avg_sq"], rtol=0, atol=1e-9)
    steps_logged = [json.loads(line)["step"] for line in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    assert steps_logged == [1, 2, 3, 4]


def test_a_non_finite_loss_stops_the_run_before_its_next_checkpoint(tmp_path, monkeypatch):
    """The losses cross to the host only for log lines and checkpoints: a NaN at a step that writes neither
    stops the run at the next of them, naming its step, and no checkpoint holds the weights it updated."""
    real_g, calls = steps.GanStep.generator_step, {"n": 0}

    def nan_at_step_3(self, *args, **kw):
        logs, x_fake = real_g(self, *args, **kw)
        calls["n"] += 1
        if calls["n"] == 3:
            logs["g_cnt"] = logs["g_cnt"] * float("nan")
        return logs, x_fake

    monkeypatch.setattr(steps.GanStep, "generator_step", nan_at_step_3)
    run = tmp_path / "run"
    with pytest.raises(FloatingPointError, match="non-finite loss at step 3"):
        _train(run, "train.steps=6", "train.log_every=5")  # checkpoints at steps 2, 4, 6; a log line at 5
    assert calls["n"] == 4 and checkpoint.read_config(run / "model")[1]["step"] == 2


def test_resume_with_more_steps_and_weights_only_state(tmp_path):
    run = tmp_path / "run"
    _train(run, "train.steps=2")
    cfg, meta_block = checkpoint.read_config(run / "model")
    assert meta_block["step"] == 2 and meta_block["stage"] == "meta" and meta_block["content_loss"] in ("vgg", "offline")
    assert cfg.train.steps == 2
    state = torch.load(run / "training_state.pt", weights_only=True)
    assert set(state) >= {"step", "optimizers", "rng", "sampler"}
    assert {"python", "numpy", "torch"} <= set(state["rng"][0])
    ds = SyntheticEpisodes(preset("tiny"), num_episodes=5, num_videos=3)
    meta.train(run, overrides=["train.steps=3"], dataset=ds, progress=False)
    cfg, meta_block = checkpoint.read_config(run / "model")
    assert meta_block["step"] == 3 and cfg.train.steps == 3 and cfg.train.batch_size == 2  # run's own config


def test_learning_rate_set_on_resume_is_used(tmp_path):
    """Optimiser state restores the saved lr; a --set on resume must still win (the config is the source)."""
    run = tmp_path / "run"
    _train(run, "train.steps=1")
    ds = SyntheticEpisodes(preset("tiny"), num_episodes=5, num_videos=3)
    seen = {}
    real_step = meta.meta_step

    def spy(state, batch, cfg, step=None):
        seen["g"] = {g["lr"] for g in state.opt_g.param_groups}
        seen["d"] = {g["lr"] for g in state.opt_d.param_groups}
        return real_step(state, batch, cfg, step)

    mp = pytest.MonkeyPatch()
    mp.setattr(meta, "meta_step", spy)
    try:
        meta.train(run, overrides=["train.steps=2", "train.lr_generator=3e-4"], dataset=ds, progress=False)
    finally:
        mp.undo()
    assert seen == {"g": {3e-4}, "d": {preset("tiny").train.lr_discriminator}}
    cfg, _ = checkpoint.read_config(run / "model")
    assert cfg.train.lr_generator == 3e-4


def test_a_new_run_can_start_from_a_model_directory(real_clip, tmp_path, capsys):
    """--init-from: a new run on real footage starts from another run's E, G, D (with the learning rates at 0
    its one step changes nothing, so its model equals the one it started from); another preset, another
    number of videos, or a run that resumes are refused with one line."""
    from talking_heads.cli import main

    base = ["train", "--preset", "tiny", "--data", str(real_clip), "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "a"), "--steps", "2"]) == 0
    assert main(base + ["--out", str(tmp_path / "b"), "--steps", "1", "--init-from", str(tmp_path / "a" / "model"),
                        "--set", "train.lr_generator=0", "--set", "train.lr_discriminator=0"]) == 0
    _, _, a = checkpoint.load_model_dir(tmp_path / "a" / "model")
    _, meta_b, b = checkpoint.load_model_dir(tmp_path / "b" / "model")
    assert meta_b["step"] == 1
    for name in checkpoint.NETWORK_NAMES:  # the parameters (spectral norm's power-iteration buffers move on)
        pb = dict(getattr(b, name).named_parameters())
        for k, va in getattr(a, name).named_parameters():
            assert torch.equal(va, pb[k]), (name, k)
    # without --init-from the same run starts elsewhere (so the equality above is not by chance)
    assert main(base + ["--out", str(tmp_path / "r"), "--steps", "1", "--set", "train.seed=5"]) == 0
    _, _, r = checkpoint.load_model_dir(tmp_path / "r" / "model")
    assert not torch.equal(next(r.generator.parameters()), next(a.generator.parameters()))
    assert main(base + ["--out", str(tmp_path / "c"), "--steps", "1", "--set", "model.embedding_dim=40",
                        "--init-from", str(tmp_path / "a" / "model")]) == 2  # not even buildable
    assert "do not describe networks that can be built" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "c"), "--steps", "1", "--set", "model.spectral_norm=false",
                        "--init-from", str(tmp_path / "a" / "model")]) == 2
    assert "model settings differ" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert main(base + ["--out", str(tmp_path / "b"), "--steps", "2", "--init-from",
                        str(tmp_path / "a" / "model")]) == 2
    assert "holds one to resume" in capsys.readouterr().err


def test_refuses_foreign_directory(tmp_path):
    (tmp_path / "x.txt").write_text("not a run")
    with pytest.raises(meta.RunDirError):
        _train(tmp_path, "train.steps=1")


# --- commands -------------------------------------------------------------------------------------

def test_train_cli_end_to_end(tmp_path, monkeypatch, capsys):
    """`talking-heads train` on tiny with synthetic episodes (the real-data version is test_overfit_*)."""
    from talking_heads.cli import main

    monkeypatch.setattr(meta, "make_dataset", lambda cfg, data_dir: SyntheticEpisodes(cfg, 3, 2))
    monkeypatch.setattr("talking_heads.cli.train.check_data", lambda data: None)  # synthetic episodes, no folder
    run = tmp_path / "run"
    base = ["train", "--data", str(tmp_path), "--out", str(run), "--no-progress"]
    assert main(base + ["--preset", "tiny", "--steps", "3", "--set", "train.sample_every=2"]) == 0
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3] and all("g_total" in r and "d_loss" in r for r in lines)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_0000002.png", "step_0000003.png"]
    from PIL import Image

    grid = Image.open(run / "samples" / "step_0000003.png")
    assert grid.size == (3 * 32, 1 * 32)  # landmarks | ground truth | output ; one row per episode
    curves = Image.open(run / "loss_curves.png")  # redrawn at the last checkpoint from log.jsonl
    assert curves.format == "PNG" and curves.size[0] > 600
    cfg, m, nets = checkpoint.load_model_dir(run / "model")
    assert cfg.preset == "tiny" and m["step"] == 3 and m["num_videos"] == 2
    torch.load(run / "training_state.pt", weights_only=True)
    # running it again resumes; with more steps it continues
    assert main(base + ["--steps", "4"]) == 0
    assert checkpoint.read_config(run / "model")[1]["step"] == 4
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "new")]) == 2  # no preset
    assert "give --preset" in capsys.readouterr().err


def test_bench_cli_and_markdown_section(tmp_path, capsys):
    from talking_heads.cli import main

    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\n## Data pipeline\n\nkeep me\n")
    assert main(["bench", "--preset", "tiny", "--what", "params,generator,embedder", "--json", "--repeat", "1",
                 "--write", str(md)]) == 0
    out = json.loads(capsys.readouterr().out)
    r = out["presets"]["tiny"]
    assert r["params"]["generator"] > r["params"]["projection"] > 0
    assert r["generator"]["ms_per_frame"] > 0 and r["embedder"]["k"] == 8
    text = md.read_text()
    assert "## Data pipeline\n\nkeep me" in text and "## Networks and training step" in text
    assert text.count("### cpu:") == 1
    main(["bench", "--preset", "tiny", "--what", "params", "--repeat", "1", "--write", str(md)])
    text = md.read_text()
    assert text.count("### cpu:") == 1 and "keep me" in text


def test_bench_train_step_offline():
    from talking_heads import bench

    r = bench.bench_train_step(preset("tiny"), torch.device("cpu"), repeat=1, content="offline")
    assert r["s_per_step"] > 0 and r["k"] == 8 and r["content_loss"] == "offline" and r["precision"] == "fp32"


# --- real footage (../shared/data) ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_clip(shared_data, tmp_path_factory):
    """One real training clip preprocessed at the tiny preset's 32 px (12 frames)."""
    from talking_heads.data.preprocess import preprocess

    out = tmp_path_factory.mktemp("pp32")
    report = preprocess(shared_data / "videos" / "train" / "dpe_s.mp4", out, size=32, max_frames=12, progress=False)
    assert [r["status"] for r in report.records] == ["ok"]
    return out


def test_train_cli_on_real_clip(real_clip, tmp_path):
    from talking_heads.cli import main

    run = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--data", str(real_clip), "--out", str(run), "--steps", "2",
                 "--set", "train.sample_every=2", "--no-progress"]) == 0
    assert len((run / "log.jsonl").read_text().splitlines()) == 2
    assert (run / "samples" / "step_0000002.png").is_file() and (run / "training_state.pt").is_file()
    cfg, m, _ = checkpoint.load_model_dir(run / "model")
    assert m["num_videos"] == 1 and m["step"] == 2


def _reconstruction_error(nets, dataset, n: int = 6) -> float:
    """Mean L1 between G(y_tgt, P mean E(sources)) and x_tgt over fixed episodes (eval mode, no_grad)."""
    eg = meta.EmbedderGenerator(nets.embedder, nets.generator).eval()
    batch = collate([dataset[i] for i in range(n)])
    with torch.no_grad():
        x_fake, _ = eg(batch["x_src"], batch["y_src"], batch["y_tgt"])
    return float((x_fake - batch["x_tgt"]).abs().mean())


@pytest.mark.slow
def test_tiny_model_overfits_one_real_clip(real_clip, tmp_path):
    from talking_heads.data import EpisodeDataset
    from talking_heads.models import build_networks

    cfg = tiny("train.steps=60", "train.log_every=20", "train.sample_every=1000", "train.checkpoint_every=1000",
               "train.lr_generator=1e-3", "train.lr_discriminator=1e-3", "train.flip=false")
    eval_set = EpisodeDataset.from_config(real_clip, cfg)
    eval_set.set_epoch(10_000)  # episodes the run never draws in its first epochs
    torch.manual_seed(cfg.train.seed)
    start = _reconstruction_error(build_networks(cfg, 1), eval_set)
    model = meta.train(tmp_path / "run", cfg=cfg, data_dir=real_clip, progress=False)
    _, _, nets = checkpoint.load_model_dir(model)
    end = _reconstruction_error(nets, eval_set)
    assert end < 0.5 * start, (start, end)


def test_loss_curves_script_reads_a_log_with_a_cut_line(tmp_path):
    from talking_heads.train import curves

    rows = [{"step": i, "g_total": 10 - i * 0.1, "g_cnt": 2.0, "d_loss": 1.5, "d_real": 0.2, "d_fake": -0.3}
            for i in range(1, 40)]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 40, "g_to')
    assert len(curves.read_log(tmp_path / "log.jsonl")) == 39
    assert curves.main([str(tmp_path)]) == 0 and (tmp_path / curves.CURVES_FILE).stat().st_size > 10_000
    assert curves.main([str(tmp_path / "nothing")]) == 2


def test_embedder_collapse_is_logged_and_warned(tmp_path, caplog):
    """mean |e_hat| goes into log.jsonl; an embedder whose output is exactly 0 gets a warning naming the cause."""
    cfg = tiny("train.log_every=1")
    ds = SyntheticEpisodes(cfg, num_episodes=4, num_videos=2)
    meta.train(tmp_path / "alive", cfg=cfg, overrides=["train.steps=1"], dataset=ds, progress=False)
    row = json.loads((tmp_path / "alive" / "log.jsonl").read_text().splitlines()[0])
    assert row["e_hat_abs"] > 0

    from talking_heads.models import Embedder

    mp = pytest.MonkeyPatch()
    mp.setattr(Embedder, "forward", lambda self, x, y: torch.zeros(x.shape[0], cfg.model.embedding_dim) * x.sum())
    try:
        with caplog.at_level("WARNING", logger="talking_heads.train.meta"):
            meta.train(tmp_path / "dead", cfg=cfg, overrides=["train.steps=2"], dataset=ds, progress=False)
    finally:
        mp.undo()
    rows = [json.loads(r) for r in (tmp_path / "dead" / "log.jsonl").read_text().splitlines()]
    assert [r["e_hat_abs"] for r in rows] == [0.0, 0.0]
    assert sum("embedder's output is exactly 0" in r.getMessage() for r in caplog.records) == 1


def test_train_with_the_dlib_face_terms_on_a_real_clip(real_clip, tmp_path):
    """loss.face_network=dlib: the episodes carry the target's landmarks, the face and identity terms are
    logged, and the model directory names the content loss offline+dlibface."""
    from talking_heads.cli import main

    run = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--data", str(real_clip), "--out", str(run), "--steps", "2",
                 "--set", "loss.face_network=dlib", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert all(r["g_cnt_face"] > 0 and 0 <= r["g_cnt_id"] <= 2 for r in rows)
    cfg, m, _ = checkpoint.load_model_dir(run / "model")
    assert m["content_loss"] == "offline+dlibface" and cfg.loss.face_network == "dlib"

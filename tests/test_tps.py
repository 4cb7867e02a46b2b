"""The TPS renderer (models/tps.py, models/tps_prior.py; model.generator = "tps"): the landmark warp prior on
real landmarks, the generator's start from the prior, gradients, and its use through the pipeline on real
photos (identity kept, no edge-replication streaks, paste-back, clear refusals)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from talking_heads.config import apply_overrides, preset
from talking_heads.models import Sources, TpsGenerator, build_networks
from talking_heads.models import tps_prior as P


def tps_cfg(*overrides):
    return apply_overrides(preset("tiny"), ["model.generator=tps", "model.tps_mouth_size=16",
                                            "model.tps_mouth_channels=[8,16]", "model.tps_grid_size=16", *overrides])


@pytest.fixture(scope="module")
def real_points(shared_data):
    """Landmarks (3,68,2) of three frames of one test-split clip in one 256 px crop (the talking person)."""
    from talking_heads.config import DataConfig, InferenceConfig
    from talking_heads.driver import load_driver

    seq = load_driver(shared_data / "videos" / "test" / "edtalk_mouth_source.mp4", size=256, duration=2.0,
                      data_cfg=DataConfig(), inference_cfg=InferenceConfig())
    pts = seq.driver_points
    opening = np.linalg.norm(pts[:, 66] - pts[:, 62], axis=-1)
    return np.stack([pts[int(np.argmin(opening))], pts[int(np.argmax(opening))], pts[len(pts) // 2]])


def _grid_at(grid: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """The grid (B,H,W,2) read at normalised points (B,N,2) -> (B,N,2)."""
    return F.grid_sample(grid.permute(0, 3, 1, 2), points[:, None], mode="bilinear",
                         align_corners=False)[:, :, 0].permute(0, 2, 1)


def test_prior_moves_the_landmarks_where_driven_and_leaves_the_border_still(real_points):
    pts = P.normalise_points(torch.tensor(real_points, dtype=torch.float32), 256)
    src, drv = pts[:1], pts[1:2]  # mouth closed -> mouth open (a real talking frame)
    assert ((drv - src).norm(dim=-1) * 256).max() > 4  # the driver really moves the face (> 4 px at 512)
    grid = P.grid_from_displacement(P.prior_displacement(drv, src, 64), 512)
    err_px = (_grid_at(grid, drv) - src).norm(dim=-1) * 256  # px at 512
    assert err_px.max() < 1.0, err_px.max()
    ident = P.identity_grid(1, 512, 512, grid)[0]
    for edge in (grid[0, 0] - ident[0], grid[0, -1] - ident[-1], grid[0, :, 0] - ident[:, 0],
                 grid[0, :, -1] - ident[:, -1]):
        assert edge.abs().max() == 0  # the crop's border stays exactly where it is


def test_prior_is_the_identity_when_the_driver_is_the_source(real_points):
    src = P.normalise_points(torch.tensor(real_points[:1], dtype=torch.float32), 256)
    assert P.prior_displacement(src, src, 64).abs().max() < 1e-5


def test_mouth_interior_is_empty_for_a_closed_mouth_and_inside_the_lips_when_open(real_points):
    pts = P.normalise_points(torch.tensor(real_points[:2], dtype=torch.float32), 256)
    m = P.mouth_interior(pts, 256)
    assert m[0].sum() < m[1].sum() / 4  # closed mouth: (almost) nothing to generate
    centre = P.pixel_points(pts[1, list(P.INNER_LIP)].mean(0), 256).round().long()
    assert m[1, 0, centre[1], centre[0]] > 0.9  # the open mouth's middle is generated
    assert m[1, 0, :20].max() == 0  # far from the mouth: never


def _real_batch(real_points, size=32, out=64):
    pts = P.normalise_points(torch.tensor(real_points, dtype=torch.float32), 256)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 3, out, out, generator=g) * 2 - 1
    y = torch.rand(1, 2, 3, size, size, generator=g) * 2 - 1
    return Sources(x, y, pts[None, :2]), pts[2:3], y[:, 0]


def test_starts_from_the_prior_and_renders_at_the_sources_resolution(real_points):
    torch.manual_seed(0)
    g = TpsGenerator(tps_cfg().model).eval()
    sources, _, y = _real_batch(real_points)
    one = Sources(sources.x[:, :1], sources.y[:, :1], sources.points[:, :1])
    psi = g.adain_params(torch.randn(1, tps_cfg().model.embedding_dim))
    with torch.no_grad():
        x_hat, aux = g.forward_with_aux(y, psi, one, one.points[:, 0])  # driver = the source itself
    assert x_hat.shape == (1, 3, 64, 64)  # the sources' resolution, not the model's 32 px
    assert torch.allclose(aux["warped"], one.x[:, 0], atol=1e-5)  # identity warp: zero residual flow
    assert aux["flow_tv"] == 0
    closed = P.mouth_interior(one.points[:, 0], 64)
    assert (aux["mask"] > 0.99)[closed < 0.01].float().mean() > 0.99  # everywhere but the mouth: the photo


def test_residual_flow_and_mask_get_gradients(real_points):
    torch.manual_seed(0)
    cfg = tps_cfg()
    g = TpsGenerator(cfg.model)
    sources, points, y = _real_batch(real_points)
    psi = g.adain_params(torch.randn(1, cfg.model.embedding_dim))
    x_hat, aux = g.forward_with_aux(y, psi, sources, points)
    (x_hat.mean() + aux["mask_area"] + aux["flow_tv"]).backward()
    head = g.flow.head.weight.grad
    assert head[:2].abs().sum() > 0 and head[3:].abs().sum() > 0  # residual flow and mask logit
    grad = lambda m: sum(float(p.grad.abs().sum()) for p in m.parameters() if p.grad is not None)
    assert grad(g.mouth.out_conv) > 0  # the mouth view is painted and trained
    assert grad(g.core.out_conv) > 0


@pytest.mark.parametrize("gaze", [False, True])
def test_meta_learning_and_fine_tuning_steps_run_with_the_tps_renderer(real_points, gaze):
    """Also with gaze: 70-row points (iris centres; model.tps_iris shifts the eyes) and pupils drawn."""
    from talking_heads.landmarks.iris import complete_gaze
    from talking_heads.losses import ContentLoss
    from talking_heads.train import finetune as ft
    from talking_heads.train import meta

    cfg = tps_cfg(*(["model.tps_iris=true", "data.pupils=true"] if gaze else []))
    torch.manual_seed(0)
    nets = build_networks(cfg, 2)
    state = meta.build_meta_state(cfg, nets, meta.dist.DistInfo())
    pts = torch.tensor(complete_gaze(real_points, None) if gaze else real_points, dtype=torch.float32) * (32 / 256)
    g = torch.Generator().manual_seed(1)
    batch = {"x_src": torch.rand(1, 2, 3, 32, 32, generator=g) * 2 - 1, "y_src": torch.rand(1, 2, 3, 32, 32, generator=g),
             "x_tgt": torch.rand(1, 3, 32, 32, generator=g) * 2 - 1, "y_tgt": torch.rand(1, 3, 32, 32, generator=g),
             "p_src": pts[None, :2], "p_tgt": pts[2:3], "video": torch.tensor([0])}
    before = nets.generator.flow.head.weight.detach().clone()
    logs, _ = meta.meta_step(state, batch, cfg, 1)
    assert "g_mask_area" in logs and "g_warp_tv" in logs
    assert not torch.equal(before, nets.generator.flow.head.weight)  # the residual flow / mask learn
    x = batch["x_src"][0]
    result = ft.finetune(nets, x, batch["y_src"][0], cfg, content_loss=ContentLoss(cfg), epochs=1, progress=False,
                         points=pts[:2])
    assert torch.isfinite(result.psi).all()


def test_onnx_export_is_refused_with_a_clear_message(real_points):
    from talking_heads.inference import OnnxModelError, build_renderer

    torch.manual_seed(0)
    g = TpsGenerator(tps_cfg().model).eval()
    sources, _, _ = _real_batch(real_points)
    psi = g.adain_params(torch.randn(1, tps_cfg().model.embedding_dim))
    one = Sources(sources.x[0], sources.y[0], sources.points[0])
    with pytest.raises(OnnxModelError, match="torch backend"):
        build_renderer(g, psi, one, device="cpu", precision="fp32", backend="onnxruntime")


@pytest.fixture(scope="module")
def tps_sample_pipeline():
    """The shipped TPS preview model (`--model tps`), rendering at 256 px to keep the tests quick."""
    from talking_heads.pipeline import TalkingHeadPipeline

    pipe = TalkingHeadPipeline.from_pretrained("tps")
    assert pipe.cfg.model.generator == "tps" and pipe.cfg.inference.max_yaw == 15
    pipe.cfg.inference.output_size = 256
    return pipe


def test_transplant_starts_a_tps_model_from_a_warp_model():
    """scripts/tps_from_warp_model.py: E, V, the refining generator and the flow body carried over; P's face
    rows the warp model's (the same psi for the face), its mouth rows small; the residual flow starts at 0."""
    from conftest import load_script

    torch.manual_seed(0)
    warp = build_networks(apply_overrides(preset("tiny"), ["model.generator=warp"]), 3)
    torch.manual_seed(1)
    tps = build_networks(tps_cfg(), 3)
    load_script("tps_from_warp_model").transplant(warp, tps)
    for name in ("embedder",):
        for (k, a), b in zip(getattr(warp, name).state_dict().items(), getattr(tps, name).state_dict().values()):
            assert torch.equal(a, b), k
    core = {k: v for k, v in warp.generator.core.state_dict().items() if not k.startswith("projection.")}
    assert all(torch.equal(v, tps.generator.core.state_dict()[k]) for k, v in core.items())
    e = torch.randn(2, tps_cfg().model.embedding_dim)
    for g in (warp.generator, tps.generator):
        g.eval()
    with torch.no_grad():
        psi_w, psi_t = warp.generator.adain_params(e), tps.generator.adain_params(e)
    n = warp.generator.num_adain_params
    torch.testing.assert_close(psi_t[:, :n], psi_w, rtol=1e-4, atol=1e-5)  # the face's psi is the warp model's
    assert psi_t[:, n:].abs().max() < 0.1 * psi_w.abs().max()
    assert tps.generator.flow.head.weight.abs().max() == 0


def _test_frame(shared_data, name="lp_source_s18.mp4", index=0):
    from talking_heads.data.video import read_frames

    return next(iter(read_frames(shared_data / "videos" / "test" / name, [index])))[1]


def test_ff_avatar_from_one_test_split_photo_keeps_the_person(tps_sample_pipeline, shared_data, tmp_path):
    from talking_heads.models.face_identity import SAME_PERSON_DISTANCE
    from talking_heads.identity import describe

    pipe = tps_sample_pipeline
    photo = _test_frame(shared_data)
    avatar = pipe.create_avatar(photo)
    assert avatar.source_images.shape[1] == 256
    out = tmp_path / "ff.mp4"
    pipe.animate(avatar, shared_data / "videos" / "test" / "edtalk_mouth_source.mp4", out, duration=1.0,
                 progress=False, contact_sheet=False)
    import cv2

    photo_path = tmp_path / "photo.png"
    cv2.imwrite(str(photo_path), photo[:, :, ::-1])
    me, rendered = describe(photo_path, frames=1), describe(out, frames=6)
    distance = float(np.linalg.norm(rendered.descriptor - me.descriptor))
    assert distance < SAME_PERSON_DISTANCE, distance  # the person, from one photo, no fine-tuning


def _cut_past_edge(photo: np.ndarray) -> np.ndarray:
    """The photo cut so that the left quarter of its head crop lies past the image's left edge."""
    from talking_heads.data.faces import prepare_photo

    x0, _, x1, _ = prepare_photo(photo, 128).transform.box
    return np.ascontiguousarray(photo[:, max(0, (x0 + x1) // 2 - (x1 - x0) // 4):])


def test_crop_past_the_photo_edge_is_generated_not_replicated(tps_sample_pipeline, shared_data):
    pipe = tps_sample_pipeline
    avatar = pipe.create_avatar(_cut_past_edge(_test_frame(shared_data)))
    valid = avatar.source_valid[0]
    assert (valid == 0).any() and (valid == 255).any()
    assert (avatar.source_images[0][valid == 0] == 0).all()  # nothing replicated into the crop
    sources = avatar.source_tensors("cpu", pipe.cfg.data.line_thickness)
    g = pipe.generator
    psi = avatar.psi
    with torch.no_grad():
        _, aux = g.forward_with_aux(sources.y[:1], psi, sources, sources.points[:1])
    m = aux["mask"][0, 0].numpy()
    assert m[valid == 0].max() < 0.05  # the photo is never shown past its edge: the generator fills it
    any_streak = avatar.source_images[0][valid == 0].std()
    assert any_streak == 0


def test_paste_back_leaves_the_photo_outside_the_mask(tps_sample_pipeline, shared_data):
    pipe = tps_sample_pipeline
    photo = _test_frame(shared_data)
    avatar = pipe.create_avatar(photo)
    frame, tf = pipe.paste_target(avatar)
    crop = pipe.render_frames(avatar, avatar.landmarks[:1])[0]
    mask = pipe.paste_mask(avatar, avatar.landmarks[0])
    assert mask[0].max() == 0 and mask[:, 0].max() == 0 and mask[-1].max() == 0  # zero at the crop's border
    pasted = pipe.paste_back(crop, (frame, tf), mask)
    x0, y0, x1, y1 = tf.box
    outside = np.ones(frame.shape[:2], bool)
    outside[max(0, y0):y1, max(0, x0):x1] = False
    assert np.array_equal(pasted[outside], frame[outside])
    import cv2

    big = cv2.resize(mask, (tf.side, tf.side), interpolation=cv2.INTER_LINEAR)
    sl = (slice(max(0, y0) - y0, min(frame.shape[0], y1) - y0), slice(max(0, x0) - x0, min(frame.shape[1], x1) - x0))
    zero = big[sl] == 0
    assert np.array_equal(pasted[max(0, y0):y1, max(0, x0):x1][zero], frame[max(0, y0):y1, max(0, x0):x1][zero])


def test_avatar_round_trip_and_damaged_source_valid_refused(tps_sample_pipeline, shared_data, tmp_path):
    from talking_heads.avatar import Avatar
    from safetensors.torch import save_file

    from talking_heads.safetensors_io import CheckpointError, load_tensors

    pipe = tps_sample_pipeline
    avatar = pipe.create_avatar(_test_frame(shared_data))
    path = avatar.save(tmp_path / "a")
    again = Avatar.load(path, pipe)
    assert np.array_equal(again.source_valid, avatar.source_valid)
    assert np.array_equal(again.source_images, avatar.source_images)
    tensors = load_tensors(path, "avatar", "cpu")
    tensors["source_valid"] = tensors["source_valid"][:, :10]
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "avatar.safetensors"))
    with pytest.raises(CheckpointError, match="source_valid"):
        Avatar.load(path, pipe)


def test_rendering_skips_the_face_generator_only_when_the_photo_covers_the_frame(real_points):
    torch.manual_seed(0)
    g = TpsGenerator(tps_cfg().model).eval()
    calls = []
    g.core.register_forward_hook(lambda *_: calls.append(1))
    sources, _, y = _real_batch(real_points)
    one = Sources(sources.x[:, :1], sources.y[:, :1], sources.points[:, :1])
    psi = g.adain_params(torch.randn(1, tps_cfg().model.embedding_dim))
    with torch.no_grad():
        skipped = g(y, psi, one, one.points[:, 0])  # the photo covers every pixel outside the mouth
        assert calls == []
        valid = torch.ones(1, 1, 1, 64, 64)
        valid[..., :10] = 0  # the crop runs past the photo's left edge: that part is generated
        g(y, psi, one._replace(valid=valid), one.points[:, 0])
        assert calls == [1]
        g.train()
        forced = g(y, psi, one, one.points[:, 0])  # training always runs it (it must learn)
        assert calls == [1, 1]
    assert (forced - skipped).abs().max() < 0.05  # where it was skipped, it would have changed little


def test_size_option_on_the_cli(shared_data, tiny_model_dir, tmp_path, capsys):
    """--size sets the side of the frames: a TPS avatar keeps its photo at that size and renders there; other
    models' output is resized to it; a size out of range is one line and exit code 2, before any work."""
    import av

    from talking_heads.checkpoint import save_model_dir
    from talking_heads.cli import main

    cfg = tps_cfg()
    torch.manual_seed(0)
    tps_dir = tmp_path / "tps_model"
    save_model_dir(tps_dir, cfg, build_networks(cfg, 3), num_videos=3, content_loss="offline", step=0)
    photo = shared_data / "photos" / "avatarify_jobs.jpg"

    def frame_side(video):
        with av.open(str(video)) as c:
            return c.streams.video[0].width

    assert main(["avatar", "create", str(photo), "-o", str(tmp_path / "a"), "--model", str(tps_dir), "--size", "96",
                 "--no-progress"]) == 0
    from talking_heads.avatar import Avatar
    from talking_heads.pipeline import TalkingHeadPipeline

    avatar = Avatar.load(tmp_path / "a", TalkingHeadPipeline.from_pretrained(tps_dir))
    assert avatar.source_images.shape[1:3] == (96, 96) and avatar.source_valid.shape[1:] == (96, 96)
    for model, size, avatar_dir in ((tps_dir, None, tmp_path / "a"), (tiny_model_dir, "80", None)):
        out = tmp_path / f"{size}.mp4"
        argv = ["animate", "--motion", "talk", "--duration", "0.2", "-o", str(out), "--model", str(model),
                "--no-progress", "--no-contact-sheet"]
        argv += ["--avatar", str(avatar_dir)] if avatar_dir else ["--source", str(photo)]
        argv += ["--size", size] if size else []
        assert main(argv) == 0
        assert frame_side(out) == (96 if size is None else 80)  # the TPS avatar's own size; else --size
    capsys.readouterr()
    assert main(["animate", "--source", str(photo), "--motion", "talk", "-o", str(tmp_path / "bad.mp4"),
                 "--model", str(tiny_model_dir), "--size", "5"]) == 2
    err = capsys.readouterr().err
    assert "--size 5: give a frame size from 64 to 2048" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.mp4").exists()


def test_prior_is_exact_under_a_training_steps_bf16_autocast(real_points):
    pts = P.normalise_points(torch.tensor(real_points, dtype=torch.float32), 256)
    ref = P.prior_displacement(pts[1:3], pts[:2], 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = P.prior_displacement(pts[1:3], pts[:2], 64)
        mouth = P.mouth_interior(pts, 64)
    assert got.dtype == torch.float32 and mouth.dtype == torch.float32
    assert torch.equal(got, ref)


def test_a_source_past_its_photos_edge_does_not_darken_another_that_covers_it(real_points):
    torch.manual_seed(0)
    g = TpsGenerator(tps_cfg().model).eval()
    sources, _, y = _real_batch(real_points)
    x = torch.full_like(sources.x, 0.8)
    p = sources.points[:, :1].expand(1, 2, 68, 2)
    valid = torch.ones(1, 2, 1, 64, 64)
    valid[:, 1, :, :, :32] = 0  # the second source's left half lies past its photo
    both = Sources(x * valid - (1 - valid), sources.y, p, valid)
    with torch.no_grad():
        warped, _, seen, _, _ = g.warp(y, both, p[:, 0])
    assert torch.allclose(warped, torch.full_like(warped, 0.8), atol=1e-4)  # the first covers it: no black
    assert seen.min() > 0.99


def test_render_refuses_missing_or_misshapen_points(tps_sample_pipeline, shared_data):
    from talking_heads.renderer import PipelineError

    pipe = tps_sample_pipeline
    avatar = pipe.create_avatar(_test_frame(shared_data))
    y = torch.zeros(2, 3, pipe.image_size, pipe.image_size)
    two = np.repeat(avatar.landmarks[:1], 2, 0)
    for bad, message in ((None, "needs the landmarks"), (two[:1], r"must be \(2,68,2\)"),
                         (np.full_like(two, np.nan), "NaN")):
        with pytest.raises(PipelineError, match=message):
            pipe.render(avatar, y, points=bad)
    assert pipe.render(avatar, y, points=torch.as_tensor(two)).shape[0] == 2


def test_border_dropout_is_refused_for_generators_that_cannot_use_it(tmp_path):
    from talking_heads.bench import SyntheticEpisodes
    from talking_heads.train import meta

    cfg = apply_overrides(preset("tiny"), ["train.border_dropout=0.3", "train.steps=1"])
    with pytest.raises(meta.RunDirError, match="TPS renderer"):
        meta.train(tmp_path / "run", cfg=cfg, dataset=SyntheticEpisodes(cfg, num_episodes=2, num_videos=2),
                   progress=False)
    assert not (tmp_path / "run").exists()


def test_ft_avatar_is_fine_tuned_on_the_sources_it_renders_with(shared_data, tmp_path, monkeypatch):
    """FT of a TPS avatar whose crop runs past the photo: G' gets the black, invalid-marked sources that
    rendering uses (not the edge-replicated crop), and the FT avatar renders."""
    from talking_heads.checkpoint import save_model_dir
    from talking_heads.pipeline import TalkingHeadPipeline
    from talking_heads.train import finetune as ft

    cfg = tps_cfg()
    torch.manual_seed(0)
    save_model_dir(tmp_path / "m", cfg, build_networks(cfg, 3), num_videos=3, content_loss="offline", step=0)
    pipe = TalkingHeadPipeline.from_pretrained(tmp_path / "m")
    seen = {}
    real = ft.PersonGenerator.__init__

    def spy(self, generator, psi, sources=None):
        seen["sources"] = sources
        real(self, generator, psi, sources)

    monkeypatch.setattr(ft.PersonGenerator, "__init__", spy)
    avatar = pipe.create_avatar(_cut_past_edge(_test_frame(shared_data)), finetune=True, epochs=1, progress=False)
    src = seen["sources"]
    assert src.valid is not None and (src.valid == 0).any()
    assert (src.x[(src.valid == 0).expand_as(src.x)] == -1).all()  # black past the edge, as rendered
    frames = pipe.render_frames(avatar, avatar.landmarks[:1])
    assert avatar.kind == "ft" and frames[0].shape[0] == avatar.render_size


def test_the_photos_open_mouth_is_generated_when_the_driver_closes_it(real_points):
    """A photo with an open mouth driven closed: where its teeth would be squeezed into the lip line is
    generated from the start (tps_fill_own_mouth); off, it is the warped photo."""
    pts = P.normalise_points(torch.tensor(real_points, dtype=torch.float32), 256)
    opened, closed = pts[1:2], pts[:1]
    g = torch.Generator().manual_seed(0)
    sources = Sources(torch.rand(1, 1, 3, 64, 64, generator=g) * 2 - 1, torch.rand(1, 1, 3, 32, 32, generator=g),
                      opened[None])
    y = torch.rand(1, 3, 32, 32, generator=g)
    masks = {}
    for on in (True, False):
        torch.manual_seed(0)
        gen = TpsGenerator(tps_cfg(f"model.tps_fill_own_mouth={str(on).lower()}").model).eval()
        psi = gen.adain_params(torch.randn(1, tps_cfg().model.embedding_dim))
        with torch.no_grad():
            masks[on] = gen.forward_with_aux(y, psi, sources, closed)[1]["mask"]
    assert masks[False].min() > 0.9  # the driven mouth is closed: nothing to generate without the option
    assert masks[True].min() < 0.1  # with it, the photo's open mouth (now squeezed) is generated
    assert (masks[True] < 0.5).float().mean() < 0.05  # and only there


def test_web_page_offers_ff_first_for_a_tps_model(tmp_path):
    """On a TPS model the page's default avatar kind is FF and says it keeps the person (the sample model's page
    keeps FT first: its FF avatars are someone else)."""
    from talking_heads.checkpoint import save_model_dir
    from talking_heads.pipeline import TalkingHeadPipeline
    from talking_heads.web.app import Page
    from talking_heads.web.settings import WebSettings

    cfg = tps_cfg()
    torch.manual_seed(0)
    save_model_dir(tmp_path / "m", cfg, build_networks(cfg, 3), num_videos=3, content_loss="offline", step=0)
    settings = WebSettings(avatars_dir=str(tmp_path / "avatars"), work_dir=str(tmp_path / "work"))
    for model, kind in ((tmp_path / "m", "ff"), (None, "ft")):
        page = Page(TalkingHeadPipeline.from_pretrained(model), settings, tmp_path / "work")
        page.build().close()
        assert page.mode.value == kind
        labels = dict((v, k) for k, v in page.mode.choices)
        assert ("keeps your photo's person" in labels["ff"]) == (kind == "ff")
        assert page.epochs.visible == (kind == "ft")


def test_cli_refuses_onnx_for_the_tps_renderer_before_any_work(shared_data, tmp_path, capsys):
    from talking_heads.cli import main

    photo = shared_data / "photos" / "avatarify_jobs.jpg"
    out = tmp_path / "out.mp4"
    assert main(["animate", "--model", "tps", "--source", str(photo), "--motion", "talk", "-o", str(out),
                 "--backend", "onnxruntime"]) == 2
    err = capsys.readouterr().err
    assert "cannot be exported to ONNX" in err and "--backend torch" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert main(["avatar", "create", str(photo), "-o", str(tmp_path / "a"), "--model", "tps", "--size", "128",
                 "--no-progress"]) == 0
    assert main(["export", str(tmp_path / "a"), "-o", str(tmp_path / "a.onnx"), "--model", "tps"]) == 2
    assert "cannot be exported to ONNX" in capsys.readouterr().err and not (tmp_path / "a.onnx").exists()

"""dlib's face-recognition ResNet in PyTorch: the .dat reader, equivalence with dlib (dlib-bin is the reference),
differentiable face chips, the identity metrics, the face terms of the content loss, `identity compare`.

The weights are the real file shipped by face-recognition-models (a declared dependency); tests that need it
or dlib skip with a reason when absent. Real photos come from ../shared/data/photos.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import shared_data_dir

from talking_heads.landmarks.face_chips import chip_transform, crop_chips, pyramid_levels
from talking_heads.models.dlib_format import DlibFormatError
from talking_heads.models.face_identity import PARAMETERS, FaceIdentityNet, add_padded

PHOTOS = (shared_data_dir() or Path(__file__).resolve().parents[2] / "shared" / "data") / "photos"  # or $TALKING_HEADS_DATA
needs_photos = pytest.mark.skipif(not PHOTOS.is_dir(), reason="../shared/data/photos is not present")


def _weights() -> Path:
    from talking_heads.models.face_identity import default_weights_path

    try:
        return default_weights_path()
    except RuntimeError as err:
        pytest.skip(f"face-recognition-models is not installed: {err}")


@pytest.fixture(scope="module")
def net():
    from talking_heads.models.face_identity import load_face_identity

    return load_face_identity(_weights())


@pytest.fixture(scope="module")
def dlib_net():
    dlib = pytest.importorskip("dlib")
    return dlib.face_recognition_model_v1(str(_weights()))


@pytest.fixture(scope="module")
def photos():
    """{name: (RGB uint8, integer 68 landmarks)} of every photo with a detected face."""
    if not PHOTOS.is_dir():
        pytest.skip("../shared/data/photos is not present")
    from talking_heads.data.video import read_image
    from talking_heads.metrics.faces import find_landmarks

    out = {}
    for path in sorted(PHOTOS.iterdir()):
        img = read_image(path)
        pts = find_landmarks(img, 256)
        if pts is not None:
            out[path.name] = (img, np.round(pts))
    assert len(out) >= 40
    return out


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def _dlib_shape(points):
    import dlib

    return dlib.full_object_detection(dlib.rectangle(0, 0, 1, 1), [dlib.point(int(x), int(y)) for x, y in points])


# --- reader ----------------------------------------------------------------------------------------------

def test_reader_consumes_the_whole_file_and_counts_the_parameters():
    from talking_heads.models.dlib_format import parameter_count, read_network

    net = FaceIdentityNet()
    weights, meta = read_network(_weights(), net.dlib_layers())  # raises unless the file ends exactly there
    assert parameter_count(weights) == PARAMETERS == 5_614_592
    assert sum(p.numel() for p in net.parameters()) == PARAMETERS
    assert len([w for w in weights if w.layer.kind == "con"]) == 29
    assert len([w for w in weights if w.layer.kind == "affine"]) == 29
    np.testing.assert_allclose(meta["mean"], [122.782, 117.001, 104.298], atol=1e-3)
    assert meta["distance_threshold"] == pytest.approx(0.6, abs=1e-6)
    from talking_heads.config import EvalConfig
    from talking_heads.models.face_identity import SAME_PERSON_DISTANCE

    # the file's own threshold is the one every verdict uses (metrics, identity compare, avatar warnings)
    assert EvalConfig().identity_threshold == SAME_PERSON_DISTANCE == pytest.approx(meta["distance_threshold"])
    loaded = FaceIdentityNet()
    loaded.load_dlib(_weights())
    assert not torch.equal(loaded.stem_conv.weight, net.stem_conv.weight)  # the file's weights replaced the init


@pytest.mark.parametrize("damage", ["truncated", "trailing", "flipped", "empty", "other_model"])
def test_reader_rejects_damaged_files_naming_the_file(tmp_path, damage):
    data = _weights().read_bytes()
    bad = tmp_path / f"{damage}.dat"
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
        expect = "truncated"
    elif damage == "trailing":
        bad.write_bytes(data + b"\x00\x01")
        expect = "2 bytes left"
    elif damage == "flipped":  # the first layer version integer (control byte 0x01, value 1) becomes 3
        assert data[:2] == b"\x01\x01"
        bad.write_bytes(b"\x01\x03" + data[2:])
        expect = "expected version"
    elif damage == "empty":
        bad.write_bytes(b"")
        expect = "truncated"
    else:  # a real dlib file of another kind: the 68-point shape predictor
        from talking_heads.landmarks.dlib_backend import model_path

        bad.write_bytes(model_path("shape_predictor_5_face_landmarks.dat").read_bytes())
        expect = "not a valid dlib network file"
    with pytest.raises(DlibFormatError) as err:
        FaceIdentityNet().load_dlib(bad)
    assert str(bad) in str(err.value) and expect in str(err.value)


def test_reader_refuses_a_missing_path(tmp_path):
    with pytest.raises(DlibFormatError, match="not found"):
        FaceIdentityNet().load_dlib(tmp_path / "nothing.dat")


def test_add_padded_zero_pads_channels_rows_and_columns():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 4, 4, 4), 2.0)
    s = add_padded(a, b)
    assert s.shape == (1, 4, 4, 4)
    assert torch.all(s[:, :2, :3, :3] == 3) and torch.all(s[:, 2:] == 2) and torch.all(s[:, :, 3] == 2)


def test_shapes_through_the_network(net):
    feats, desc = net.features(torch.zeros(2, 3, 150, 150))
    assert [tuple(f.shape[1:]) for f in feats] == [(32, 35, 35), (32, 35, 35), (64, 17, 17), (128, 8, 8),
                                                   (256, 4, 4)]
    assert desc.shape == (2, 128)
    with pytest.raises(ValueError, match="150"):
        net(torch.zeros(1, 3, 128, 128))


# --- equivalence with dlib -------------------------------------------------------------------------------

def test_descriptor_equals_dlib_on_random_and_real_chips(net, dlib_net, photos):
    rng = np.random.default_rng(0)
    chips = list(rng.integers(0, 256, (4, 150, 150, 3), dtype=np.uint8))
    import dlib

    for name in list(photos)[::6]:
        img, pts = photos[name]
        chips.append(dlib.get_face_chip(img, _dlib_shape(pts), size=150, padding=0.25))
    ours = net(torch.cat([_tensor(c) for c in chips])).detach().numpy()
    ref = np.stack([np.asarray(dlib_net.compute_face_descriptor(c)) for c in chips])
    assert np.abs(ours - ref).max() <= 1e-4


def test_full_path_matches_dlib_on_every_photo(net, dlib_net, photos):
    """landmarks -> chip -> descriptor vs dlib's compute_face_descriptor(image, shape): distance <= 0.02 on
    every photo (large photos exercise the image pyramid), and every same/different verdict at 0.6 agrees."""
    ours, ref = {}, {}
    for name, (img, pts) in photos.items():
        chip = crop_chips(_tensor(img), chip_transform(pts), dlib_rounding=True)
        ours[name] = net(chip)[0].detach().double().numpy()
        ref[name] = np.asarray(dlib_net.compute_face_descriptor(img, _dlib_shape(pts)))
    dist = {n: float(np.linalg.norm(ours[n] - ref[n])) for n in photos}
    assert max(dist.values()) <= 0.02, sorted(dist.items(), key=lambda kv: -kv[1])[:3]
    levels = {int(pyramid_levels(chip_transform(photos[n][1]))[0]) for n in photos}
    assert {0, 1} <= levels  # both the direct and the pyramid path were checked
    disagree = [(a, b) for a, b in itertools.combinations(photos, 2)
                if (np.linalg.norm(ours[a] - ours[b]) < 0.6) != (np.linalg.norm(ref[a] - ref[b]) < 0.6)]
    assert not disagree
    # the photos hold both verdicts (e.g. three copies of the Mona Lisa, many different people)
    same = sum(np.linalg.norm(ref[a] - ref[b]) < 0.6 for a, b in itertools.combinations(photos, 2))
    assert same >= 3


def test_chip_crop_reproduces_dlibs_chip_pixels(photos):
    import dlib

    for name in ("lp_source_s9.jpg", "debian_skimage_astronaut.png", "lp_source_s2.jpg"):
        img, pts = photos[name]
        theirs = dlib.get_face_chip(img, _dlib_shape(pts), size=150, padding=0.25).astype(np.float64)
        ours = crop_chips(_tensor(img), chip_transform(pts), dlib_rounding=True)[0]
        ours = ((ours.permute(1, 2, 0).numpy() + 1) * 127.5)
        assert np.abs(ours - theirs).mean() < 0.3, name


def test_gradients_reach_the_input_image(net, photos):
    img, pts = photos["lp_source_s9.jpg"]
    x = _tensor(img).requires_grad_(True)
    for rounding in (False, True):
        x.grad = None
        net(crop_chips(x, chip_transform(pts), dlib_rounding=rounding)).pow(2).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()
    assert all(p.grad is None for p in net.parameters())  # frozen


def test_chip_transform_rejects_bad_landmarks():
    with pytest.raises(ValueError, match="68-point"):
        chip_transform(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        chip_transform(np.full((68, 2), np.nan))


# --- metrics ---------------------------------------------------------------------------------------------

def _crop(photos, name, size=128):
    from talking_heads.data.faces import prepare_photo

    crop = prepare_photo(PHOTOS / name, size)
    return crop.image, crop.landmarks.astype(np.float64)


@needs_photos
def test_csim_with_the_port_matches_the_dlib_path(dlib_net, photos):
    """The CSIM metric's descriptors equal dlib's on the same 128 px frames within the equivalence tolerance."""
    import dlib

    from talking_heads.metrics.csim import FaceDescriptor

    fd = FaceDescriptor()
    imgs, pts = zip(*(_crop(photos, n) for n in ("lp_source_s9.jpg", "avatarify_obama.jpg", "lia_vox_macron.png")))
    pts = np.round(np.stack(pts))  # dlib's shapes hold integer points: give both the same ones
    ours = fd.describe_all(np.stack(imgs), pts)
    for i, (img, p) in enumerate(zip(imgs, pts)):
        ref = np.asarray(dlib_net.compute_face_descriptor(img, _dlib_shape(p)))
        assert np.linalg.norm(ours[i] - ref) < 0.02


@needs_photos
def test_identity_rate_identical_photos_one_different_people_rejected(photos):
    from talking_heads.config import EvalConfig
    from talking_heads.metrics.identity import IdentityVerification

    mona, mona_pts = _crop(photos, "lp_source_s9.jpg")
    obama, obama_pts = _crop(photos, "avatarify_obama.jpg")
    m = IdentityVerification(EvalConfig())
    stack = lambda *a: np.stack(a)  # noqa: E731
    m.add_video("mona", "mona_lisa", stack(mona), stack(mona_pts), stack(mona, mona), stack(mona_pts, mona_pts), [1])
    m.add_video("obama", "obama", stack(obama), stack(obama_pts), stack(obama), stack(obama_pts), [1])
    same = m.add_fake("mona", 1, "copy", stack(mona, mona), stack(mona_pts, mona_pts))
    other = m.add_fake("obama", 1, "other", stack(mona), stack(obama_pts))  # Mona Lisa where Obama should be
    assert same.tolist() == [1.0, 1.0] and other.tolist() == [0.0]
    assert m.value(1, "copy").value == 1.0 and m.value(1, "other").value == 0.0
    d = m.net.describe_all(stack(mona, mona), stack(mona_pts, mona_pts))
    assert np.linalg.norm(d[0] - d[1]) == 0.0
    cal = m.calibration(1)
    assert cal["ceiling"].value == 1.0 and cal["chance"].value == 0.0 and cal["chance"].n == 3


@needs_photos
def test_chance_level_uses_other_people_only(photos):
    """Two videos of the same identity never count towards the chance level (a same-person match would
    inflate it); videos of different identities do."""
    from talking_heads.config import EvalConfig
    from talking_heads.metrics.identity import IdentityVerification

    a, pa = _crop(photos, "lp_source_s9.jpg")
    b, pb = _crop(photos, "avatarify_mona.jpg")  # the same person (the Mona Lisa), another photo
    c, pc = _crop(photos, "avatarify_obama.jpg")
    m = IdentityVerification(EvalConfig())
    for vid, ident, img, p in (("v1", "mona", a, pa), ("v2", "mona", b, pb), ("v3", "obama", c, pc)):
        m.add_video(vid, ident, img[None], p[None], img[None], p[None], [1])
    cal = m.calibration(1)
    assert cal["chance"].extra["pairs"] == 4  # v1-v3, v2-v3, v3-v1, v3-v2; not v1-v2
    assert cal["chance"].value == 0.0  # although v1 and v2 match each other
    m.videos["v2"].identity = "someone_else"  # label them as different people: the match now counts
    assert m.calibration(1)["chance"].value > 0


@needs_photos
def test_descriptor_fid_is_zero_for_identical_sets_and_grows_for_other_people(photos):
    from talking_heads.metrics.identity import DescriptorFID

    names = ["lp_source_s9.jpg", "avatarify_mona.jpg", "lia_vox_mona_lisa.png", "musetalk_monalisa.png"]
    others = ["avatarify_obama.jpg", "lia_vox_macron.png", "avatarify_einstein.jpg", "lia_vox_taylor.png"]
    mona = [_crop(photos, n) for n in names]
    other = [_crop(photos, n) for n in others]
    fid = DescriptorFID()
    f_mona = fid.features(np.stack([m[0] for m in mona]), np.stack([m[1] for m in mona]))
    f_other = fid.features(np.stack([o[0] for o in other]), np.stack([o[1] for o in other]))
    assert fid.distance(f_mona, f_mona).value == pytest.approx(0.0, abs=1e-9)
    assert fid.distance(f_other, f_mona).value > 0.5


# --- content loss ----------------------------------------------------------------------------------------

def _face_loss_cfg(**extra):
    from talking_heads.config import apply_overrides, preset

    extra.setdefault("identity_weight", 1.0)  # the tolerances below are for unit weight (the preset's is 10)
    return apply_overrides(preset("sample"), ["loss.face_network=dlib", *[f"loss.{k}={v}" for k, v in extra.items()]])


@needs_photos
def test_face_content_loss_blur_costs_more_than_the_frame_itself(photos):
    from talking_heads.losses import ContentLoss

    img, pts = _crop(photos, "lp_source_s9.jpg")
    x = _tensor(img)
    loss = ContentLoss(_face_loss_cfg())
    assert loss.mode == "offline+dlibface"
    g = torch.exp(-torch.arange(-4, 5).float() ** 2 / 8)
    g = (g[:, None] * g[None]) / g.sum() ** 2
    blurred = F.conv2d(F.pad(x, (4, 4, 4, 4), mode="replicate"), g.expand(3, 1, 9, 9), groups=3)
    p = torch.from_numpy(pts)[None]
    assert float(loss(x, x, p)) == pytest.approx(0.0, abs=1e-6)
    assert loss.terms["cnt_face"] == 0 and loss.terms["cnt_id"] == pytest.approx(0.0, abs=1e-6)
    face_only = ContentLoss(_face_loss_cfg(offline_content_weight=0, identity_weight=0))
    assert float(face_only(blurred, x, p)) > 0.3  # the face term alone sees the blur


@needs_photos
def test_face_content_loss_is_differentiable_and_its_network_never_learns(photos):
    from talking_heads.losses import ContentLoss

    img, pts = _crop(photos, "lp_source_s9.jpg")
    real = _tensor(img)
    fake = torch.nn.Parameter(real.flip(-1).clone())
    loss = ContentLoss(_face_loss_cfg()).train()
    assert not loss.face.net.training
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    opt = torch.optim.Adam([fake], lr=1e-2)
    values = []
    for _ in range(3):
        opt.zero_grad()
        value = loss(fake, real, torch.from_numpy(pts)[None])
        value.backward()
        opt.step()
        values.append(float(value.detach()))
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert values[-1] < values[0]  # gradient descent on the image lowers it
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())
    assert all(torch.equal(before[k], v) for k, v in loss.state_dict().items())
    with pytest.raises(ValueError, match="landmarks"):
        loss(fake, real)


def test_face_loss_setting_is_validated():
    from talking_heads.config import apply_overrides, preset
    from talking_heads.losses import ContentLoss

    with pytest.raises(ValueError, match="face_network"):
        ContentLoss(apply_overrides(preset("tiny"), ["loss.face_network=vggface2"]))
    with pytest.raises(ValueError, match="face_layer_weights"):
        ContentLoss(apply_overrides(preset("tiny"), ["loss.face_network=dlib", "loss.face_layer_weights=[1, 2]"]))
    assert ContentLoss(preset("paper")).mode == "offline"  # the paper preset does not use it


# --- identity compare ------------------------------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "talking_heads", "identity", "compare", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@needs_photos
def test_identity_compare_command(tmp_path):
    same = _cli(PHOTOS / "lp_source_s9.jpg", PHOTOS / "avatarify_mona.jpg", PHOTOS / "avatarify_obama.jpg",
                "--json")
    assert same.returncode == 0, same.stderr
    out = json.loads(same.stdout)
    verdicts = {(Path(p["a"]).name, Path(p["b"]).name): p for p in out["pairs"]}
    assert verdicts[("lp_source_s9.jpg", "avatarify_mona.jpg")]["same_person"] is True
    assert verdicts[("lp_source_s9.jpg", "avatarify_obama.jpg")]["same_person"] is False
    assert verdicts[("lp_source_s9.jpg", "avatarify_obama.jpg")]["distance"] > 0.6
    table = _cli(PHOTOS / "lp_source_s9.jpg", PHOTOS / "lia_vox_mona_lisa.png")
    assert table.returncode == 0 and "same person" in table.stdout


@needs_photos
def test_identity_compare_bad_inputs_exit_2_with_one_line(tmp_path):
    from PIL import Image

    from talking_heads.data.video import read_image

    gradient = np.tile(np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None], (200, 1, 3))
    Image.fromarray(gradient).save(tmp_path / "no_face.png")
    a, b = read_image(PHOTOS / "lp_source_s9.jpg"), read_image(PHOTOS / "avatarify_obama.jpg")
    h = min(a.shape[0], b.shape[0])
    two = np.concatenate([np.asarray(Image.fromarray(a).resize((a.shape[1] * h // a.shape[0], h))),
                          np.asarray(Image.fromarray(b).resize((b.shape[1] * h // b.shape[0], h)))], axis=1)
    Image.fromarray(two).save(tmp_path / "two_people.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = PHOTOS / "lp_source_s9.jpg"
    for bad, words in (("no_face.png", "no face"), ("two_people.png", "2 faces"), ("broken.jpg", "cannot be read"),
                       ("missing.png", "no such file")):
        r = _cli(good, tmp_path / bad)
        assert r.returncode == 2, (bad, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and bad in lines[0] and "Traceback" not in r.stderr
    one = _cli(good)
    assert one.returncode == 2 and "at least two" in one.stderr


@needs_photos
def test_avatar_of_two_different_people_warns():
    from talking_heads.pipeline import TalkingHeadPipeline

    pipe = TalkingHeadPipeline.from_pretrained()
    mixed = pipe.create_avatar([PHOTOS / "lp_source_s9.jpg", PHOTOS / "avatarify_obama.jpg"], progress=False)
    assert any("avatarify_obama.jpg does not look like the same person" in w for w in mixed.warnings)
    same = pipe.create_avatar([PHOTOS / "lp_source_s9.jpg", PHOTOS / "avatarify_mona.jpg",
                               PHOTOS / "lia_vox_mona_lisa.png"], progress=False)
    assert not any("same person" in w for w in same.warnings)

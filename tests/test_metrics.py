"""Metrics (talking_heads.metrics): known answers on hand-made and real inputs, and the weight loaders."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from talking_heads import metrics as M
from talking_heads.config import EvalConfig

VIDEO_A = "videos/test/pcavs_Audio_Source_00015.mp4"  # chris_christie, 224 px
VIDEO_B = "videos/test/pcavs_Audio_Source_00373.mp4"  # amy_adams, 224 px


@pytest.fixture(scope="module")
def frames(shared_data):
    """Real frames: {name: uint8 (224,224,3)} from two people's test videos."""
    from talking_heads.data import read_frames

    out = {}
    for tag, rel in (("a", VIDEO_A), ("b", VIDEO_B)):
        for i, f in read_frames(shared_data / rel, [0, 40, 100]):
            out[f"{tag}{i}"] = f
    return out


def _small(image, size):
    import cv2

    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def test_registry_lists_every_metric_and_rejects_unknown():
    assert set(M.METRICS) == {"ssim", "psnr", "l1", "lpips", "csim", "identity", "landmark_error", "fid", "fid_face",
                              "sharpness", "gaze_error"}
    assert set(EvalConfig().metrics) == set(M.METRICS)
    with pytest.raises(ValueError, match="unknown metric"):
        M.create("arcface")


def test_ssim_equals_scikit_image_on_real_frames(frames):
    from skimage.metrics import structural_similarity

    from talking_heads.metrics.ssim import ssim

    for size in (32, 224):
        a, b = _small(frames["a0"], size), _small(frames["a40"], size)
        want = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=255, channel_axis=-1)
        assert ssim(a[None], b[None])[0] == pytest.approx(want, abs=1e-9)
        want_default = structural_similarity(a, b, data_range=255, channel_axis=-1)  # uniform 7x7, sample cov.
        assert ssim(a[None], b[None], gaussian=False)[0] == pytest.approx(want_default, abs=1e-9)
    assert M.create("ssim").per_frame(frames["a0"], frames["b0"])[0] < 0.6


def test_identical_images_give_the_ideal_values_for_uint8_and_tensors(frames):
    x = np.stack([frames["a0"], frames["b40"]])
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # the project's [-1,1] tensors
    np.testing.assert_allclose(M.create("ssim").per_frame(x, x), 1.0, atol=1e-12)
    np.testing.assert_allclose(M.create("ssim").per_frame(t, x), 1.0, atol=1e-12)  # tensors convert exactly
    assert np.isinf(M.create("psnr").per_frame(x, x)).all()
    np.testing.assert_array_equal(M.create("l1").per_frame(t, x), 0.0)
    value = M.create("psnr")(x[:1], x[1:])
    assert value.available and 0 < value.value < 30 and value.n == 1


def test_csim_is_one_for_identical_and_separates_people(shared_data, frames):
    from talking_heads.data import read_image
    from talking_heads.metrics.csim import cosine

    csim = M.create("csim")
    assert csim.available
    both = np.stack([frames["a0"], frames["b0"]])
    np.testing.assert_allclose(csim.per_frame(both, both), 1.0, atol=1e-6)
    photos = {n: read_image(shared_data / "photos" / f"{n}.png") for n in
              ("sadtalker_happy", "sadtalker_sad", "lia_vox_taylor", "lia_vox_macron")}
    d = {n: csim.net.describe(im) for n, im in {**photos, "christie": frames["a0"], "adams": frames["b0"]}.items()}
    d["christie_later"] = csim.net.describe(frames["a100"])
    d["adams_later"] = csim.net.describe(frames["b100"])
    same = [("sadtalker_happy", "sadtalker_sad"), ("christie", "christie_later"), ("adams", "adams_later")]
    people = ["sadtalker_happy", "lia_vox_taylor", "lia_vox_macron", "christie", "adams"]
    different = list(itertools.combinations(people, 2))
    same_sims = [float(cosine(d[p], d[q])) for p, q in same]
    diff_sims = [float(cosine(d[p], d[q])) for p, q in different]
    assert min(same_sims) > 0.93, same_sims
    assert min(same_sims) - max(diff_sims) > 0.03, (same_sims, diff_sims)  # clearly lower for different people
    assert np.mean(same_sims) - np.mean(diff_sims) > 0.1


def test_landmark_error_zero_on_own_points_and_counts_undetected(frames):
    from talking_heads.metrics.faces import find_landmarks

    lmk = M.create("landmark_error")
    img = _small(frames["a0"], 128)
    own = find_landmarks(img)
    assert own is not None
    blank = np.full_like(img, 128)  # no face at all
    values = lmk.per_frame(np.stack([img, blank]), np.stack([img, img]), np.stack([own, own]))
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(values[1])
    summary = lmk.summarize(values)
    assert summary.failed == 1 and summary.n == 2 and summary.extra == {"detected": 1, "undetected": 1}
    assert summary.value == pytest.approx(0.0, abs=1e-6)
    assert "(1/2)" in summary.format()
    only_blank = lmk.summarize(values[1:])
    assert only_blank.value is None and only_blank.format() == "no face (0/1)"
    shifted = lmk.per_frame(img[None], img[None], own[None] + 0.1 * np.linalg.norm(own[36] - own[45]))
    assert shifted[0] == pytest.approx(0.1 * np.sqrt(2), rel=1e-3)  # error is in inter-ocular units


def test_sharpness_is_one_for_the_real_frame_and_falls_with_blur(frames):
    """Real frames at the sample model's 128 px: the metric is 1 for the frame itself and falls steadily with
    a Gaussian blur of growing width (what a blurry generator does), measured on the face box only."""
    import cv2

    from talking_heads.metrics.faces import find_landmarks
    from talking_heads.metrics.sharpness import face_box, laplacian_variance

    img = _small(frames["a0"], 128)
    pts = find_landmarks(img)
    assert pts is not None
    metric = M.create("sharpness")
    blurred = [cv2.GaussianBlur(img, (0, 0), sigma) for sigma in (0.6, 1.2, 2.4)]
    values = metric.per_frame(np.stack([img, *blurred]), np.stack([img] * 4), np.stack([pts] * 4))
    assert values[0] == pytest.approx(1.0)
    assert 1.0 > values[1] > values[2] > values[3] and values[3] < 0.1
    # the face box: the landmarks' bounding box grown by 10 %, inside the image; a flat face box fails (NaN)
    x0, y0, x1, y1 = face_box(pts, 128, 128)
    assert 0 <= x0 < pts[:, 0].min() and pts[:, 0].max() < x1 <= 128 and 0 <= y0 < pts[:, 1].min()
    flat = img.copy()
    flat[y0:y1, x0:x1] = 100
    assert laplacian_variance(flat[None], pts[None])[0] == 0.0
    assert np.isnan(metric.per_frame(img[None], flat[None], pts[None])[0])
    # only the face counts: blurring everything outside the box leaves the value at 1
    outside = cv2.GaussianBlur(img, (0, 0), 3.0)
    outside[y0:y1, x0:x1] = img[y0:y1, x0:x1]
    assert metric.per_frame(outside[None], img[None], pts[None])[0] == pytest.approx(1.0)


def test_fid_and_lpips_are_not_available_without_weights(tmp_path):
    for name, field, flag in (("fid", "fid_weights", "--fid-weights"), ("lpips", "lpips_weights", "--lpips-weights")):
        metric = M.create(name)
        assert not metric.available and flag in metric.reason
        value = metric.unavailable()
        assert value.value is None and value.format() == "not available" and value.to_dict()["available"] is False
        missing = M.create(name, EvalConfig(**{field: str(tmp_path / "nope.pth")}))
        assert not missing.available and "not found" in missing.reason
    fid = M.create("fid")
    assert fid(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8, 3), np.uint8)).format() == "not available"


def test_fid_inception_loads_a_state_dict_of_its_layout(tmp_path, frames):
    from talking_heads.metrics.fid import FIDInceptionV3, fid_from_features, frechet_distance
    from talking_heads.models.perceptual import PerceptualWeightsError

    torch.manual_seed(0)
    net = FIDInceptionV3()
    for m in net.modules():  # non-trivial BatchNorm statistics, as in the real file
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}  # like the real file
    assert "Mixed_7c.branch_pool.conv.weight" in sd and sd["fc.weight"].shape == (1008, 2048)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(sd, path)
    fid = M.create("fid", EvalConfig(fid_weights=str(path)))
    assert fid.available, fid.reason
    for k, v in fid.net.state_dict().items():
        if k in sd:
            torch.testing.assert_close(v, sd[k])
    images = np.stack([_small(frames["a0"], 64), _small(frames["b0"], 64), _small(frames["a40"], 64)])
    feats = fid.features(images)
    assert feats.shape == (3, 2048) and np.isfinite(feats).all()
    with torch.no_grad():
        from talking_heads.metrics.fid import preprocess

        torch.testing.assert_close(net.eval()(preprocess(images)).double(), torch.from_numpy(feats))
    assert fid.distance(feats, feats).value == pytest.approx(0.0, abs=1e-6)
    assert fid.distance(feats[:1], feats[1:]).value is None  # one image is not a set
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, wrong)
    bad = M.create("fid", EvalConfig(fid_weights=str(wrong)))
    assert not bad.available and "FID InceptionV3" in bad.reason
    with pytest.raises(PerceptualWeightsError):
        FIDInceptionV3.from_file(wrong)
    rng = np.random.default_rng(0)  # the SVD route equals the usual sqrtm formula
    a, b = rng.normal(size=(12, 16)), rng.normal(size=(9, 16)) * 1.5 + 0.3
    want = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert fid_from_features(a, b) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("net_name", ["alex", "vgg"])
def test_lpips_loads_standard_file_layouts(tmp_path, frames, net_name):
    from talking_heads.metrics.lpips import LPIPS

    torch.manual_seed(0)
    net = LPIPS(net_name)
    for lin in net.lins:  # the real linear weights are non-negative
        lin.model[1].weight.data.abs_()
    sd = net.state_dict()
    lin_file = {f"lin{k}.model.1.weight": sd[f"lins.{k}.model.1.weight"] for k in range(5)}  # lpips' names
    backbone = {k: v for k, v in sd.items() if k.startswith("features.")}  # torchvision's names
    backbone["classifier.1.weight"] = torch.zeros(2, 2)  # ignored
    torch.save(lin_file, tmp_path / f"{net_name}.pth")
    torch.save(backbone, tmp_path / "backbone.pth")
    cfg = EvalConfig(lpips_weights=str(tmp_path / f"{net_name}.pth"), lpips_backbone=str(tmp_path / "backbone.pth"))
    metric = M.create("lpips", cfg)
    assert metric.available, metric.reason
    assert metric.net.net_name == net_name
    x = np.stack([_small(frames["a0"], 64), _small(frames["b0"], 64)])
    y = np.stack([_small(frames["a40"], 64), _small(frames["a0"], 64)])
    got = metric.per_frame(x, y)
    with torch.no_grad():
        t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
        want = net.eval()(t(x), t(y)).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert (got > 0).all() and got[1] > got[0]  # another person is further than another frame
    np.testing.assert_allclose(metric.per_frame(x, x), 0.0, atol=1e-7)
    own = tmp_path / "own.pth"  # our own state_dict holds both parts: no backbone file needed
    torch.save(sd, own)
    assert M.create("lpips", EvalConfig(lpips_weights=str(own))).available
    lin_only = M.create("lpips", EvalConfig(lpips_weights=str(tmp_path / f"{net_name}.pth")))
    assert not lin_only.available and "--lpips-backbone" in lin_only.reason

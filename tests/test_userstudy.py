"""User-study kit (talking_heads.evaluation.userstudy): triplet planning, the HTML page, scoring."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import pytest

from talking_heads.evaluation import split_frames
from talking_heads.evaluation.userstudy import (CHANCE, AnswersError, plan_triplets, score, score_files,
                                                wilson_interval)

KEY = {
    "study_id": "abc123",
    "warnings": [],
    "triplets": [
        {"id": "t000", "fake": "f0", "images": {"f0": {}, "r0": {}, "s0": {}}},
        {"id": "t001", "fake": "f1", "images": {"f1": {}, "r1": {}, "s1": {}}},
        {"id": "t002", "fake": "f2", "images": {"f2": {}, "r2": {}, "s2": {}}},
    ],
}


def _answers(participant, picks, study="abc123"):
    return {"study_id": study, "participant": participant,
            "answers": [{"triplet": t, "chosen": c, "shown": [], "ms": 900} for t, c in picks]}


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(2, 5)
    assert lo == pytest.approx(0.1176, abs=1e-4) and hi == pytest.approx(0.7693, abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_scoring_a_hand_made_answer_file(tmp_path, capsys):
    alice = _answers("alice", [("t000", "f0"), ("t001", "r1"), ("t002", "f2")])  # 2 of 3 right
    bob = _answers("bob", [("t000", "r0"), ("t000", "s0"), ("t001", "s1"), ("t002", "r2"), ("t999", "x")])
    result = score(KEY, [alice, bob])
    assert (result.correct, result.total) == (2, 6)  # bob's repeated t000 counts once, t999 is ignored
    assert result.accuracy == pytest.approx(1 / 3)
    assert result.participants["alice"] == {"correct": 2, "answers": 3, "accuracy": pytest.approx(2 / 3)}
    assert result.participants["bob"]["correct"] == 0
    assert result.ci95 == pytest.approx(wilson_interval(2, 6))
    assert any("answered twice" in w for w in result.warnings) and any("t999" in w for w in result.warnings)
    assert result.to_dict()["chance"] == CHANCE and "lower is better" in result.text()
    with pytest.raises(AnswersError, match="study"):
        score(KEY, [_answers("eve", [("t000", "f0")], study="other")])

    (tmp_path / "key.json").write_text(json.dumps(KEY))  # the CLI finds key.json beside the answers
    (tmp_path / "alice.json").write_text(json.dumps(alice))
    assert score_files([tmp_path / "alice.json"]).accuracy == pytest.approx(2 / 3)
    from talking_heads.cli import main

    assert main(["userstudy", "score", str(tmp_path / "alice.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["correct"] == 2 and out["answers"] == 3 and out["lower_is_better"] is True
    assert main(["userstudy", "score", str(tmp_path / "alice.json"), "--key", str(tmp_path / "none.json")]) == 2


def test_triplets_use_different_clips_and_never_a_few_shot_frame():
    identities = ["ann", "ann", "ann", "bob", "bob", "cy"]
    clip_ids = [f"clip{i}" for i in range(6)]
    n_frames = [30, 25, 40, 30, 30, 30]
    plans = plan_triplets(identities, n_frames, count=12, shots=4, holdout=8, seed=3, clip_ids=clip_ids)
    assert {p.identity for p in plans} == {"ann", "bob", "cy"}
    for p in plans:
        split = split_frames(n_frames[p.fake_video], [4], 8, 3, clip_ids[p.fake_video])
        assert p.target in split.holdout and p.target not in split.shots(4)
        real_clips = [v for v, _ in p.reals]
        assert all(identities[v] == p.identity for v in real_clips)
        assert (p.fake_video, p.target) not in p.reals and len(set(p.reals)) == 2
        if p.identity == "ann":  # three clips: both reals come from the other two
            assert len(set(real_clips)) == 2 and p.fake_video not in real_clips and not p.same_clip
        elif p.identity == "bob":  # two clips: the reals still come from different clips
            assert len(set(real_clips)) == 2 and not p.same_clip
        else:
            assert p.same_clip


def test_make_study_writes_a_self_contained_page_without_the_answers(shared_data, tiny_model_dir, tmp_path):
    from talking_heads.data.preprocess import preprocess
    from talking_heads.evaluation.userstudy import make_study

    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "clip.mp4").symlink_to(shared_data / "videos" / "test" / "pcavs_Audio_Source_00373.mp4")
    preprocess(tmp_path / "v", tmp_path / "data", size=32, max_frames=12, progress=False)
    study, paths = make_study(tiny_model_dir, tmp_path / "data", tmp_path / "study", triplets=3, shots=2,
                              variant="ff", display_size=64, device="cpu", progress=False)
    html = paths["html"].read_text(encoding="utf-8")
    key = json.loads(paths["key"].read_text())
    assert html.count("data:image/png;base64,") == 9 and "http" not in html.replace("http-equiv", "")
    assert "generated\"" not in html and "\"fake\"" not in html and "real\"" not in html  # no answer in the page
    assert key["study_id"] == study.study_id and len(key["triplets"]) == 3 and key["warnings"]  # single clip
    for t in key["triplets"]:
        kinds = sorted(v["kind"] for v in t["images"].values())
        assert kinds == ["generated", "real", "real"] and t["images"][t["fake"]]["kind"] == "generated"

    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed: the page's script was not executed")
    answers = _run_page(node, html, tmp_path)  # click the first image of every screen, download
    assert answers["study_id"] == study.study_id and len(answers["answers"]) == 3
    assert {a["triplet"] for a in answers["answers"]} == {t["id"] for t in key["triplets"]}
    (paths["key"].parent / "answers.json").write_text(json.dumps(answers))
    result = score_files([paths["key"].parent / "answers.json"])
    assert result.total == 3 and 0 <= result.correct <= 3


HARNESS = r"""
const fs = require('fs');
const html = fs.readFileSync(process.argv[2], 'utf8');
const script = html.split('<script>')[1].split('</script>')[0];
const els = {};
function el(tag) { return { tag, hidden: false, textContent: '', value: '', children: [], onclick: null,
  set innerHTML(v) { this.children = []; }, appendChild(c) { this.children.push(c); }, click() {}, remove() {} }; }
global.document = { getElementById: id => (els[id] = els[id] || el(id)), createElement: t => el(t), body: el('body') };
global.navigator = { userAgent: 'test' }; global.performance = { now: () => 0 };
global.Blob = function () {}; global.URL = { createObjectURL: () => 'blob:' };
eval(script);
document.getElementById('name').value = 'tester';
els.start.onclick();
for (let i = 0; i < 1000 && !els.task.hidden; i++) els.row.children[0].onclick();
els.download.onclick();
process.stdout.write(els.answers.value);
"""


def _run_page(node: str, html: str, tmp_path) -> dict:
    (tmp_path / "page.html").write_text(html, encoding="utf-8")
    (tmp_path / "harness.js").write_text(HARNESS)
    out = subprocess.run([node, str(tmp_path / "harness.js"), str(tmp_path / "page.html")], capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(out.stdout)

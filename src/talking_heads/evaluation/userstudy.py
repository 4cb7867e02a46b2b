"""The paper's USER metric (paper.md section 7): a user-study kit and its scoring.

Paper: triplets of three images of the same person from three different videos, two real and one generated;
people pick the fake; the score is the fraction picked correctly (lower is better, 1/3 is chance).

`make_study` writes into a study folder:
    study.html   self-contained page (inline base64 PNGs, no network): a participant enters a name (optional),
                 sees every triplet once, in a random order, its three images in a random order, clicks the one
                 they think is generated, and finally downloads their answers as JSON (also shown for copying)
    key.json     which image of each triplet is generated (kept out of the page, so the answer cannot be read
                 from its source), plus what was used (model, T, variant, clips and frames)
Triplets: the generated frame re-enacts a hold-out frame of clip A of a person (an avatar from A's T few-shot
frames, `protocol.split_frames`); the two real frames come from two *other* clips of that person when it has
them, else from A's other clip and A itself, else (a person with one clip) from A at frames other than the
target (flagged `same_clip` in the key and reported). All three images have the model's resolution, upscaled
identically to the display size, and none carries metadata (it would give the answer away); the generated
one carries the invisible provenance watermark when it is at least 256 px (`provenance.py`), which people
cannot see.

`score(key, answers)`: accuracy = correct picks / answers over all participants (each participant's last
answer per triplet counts), with a Wilson 95 % interval; per-participant accuracies too. Picks of one
participant are not independent, so the interval is optimistic when few people answer many triplets.

Answers file (what the page downloads):
    {"study_id": ..., "participant": "...", "started": ISO time, "finished": ISO time, "user_agent": ...,
     "answers": [{"triplet": "t003", "chosen": "<image id>", "shown": [ids in display order], "ms": 1234}, ...]}
"""

from __future__ import annotations

import base64
import datetime
import io
import json
import math
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image
from tqdm import tqdm

from .. import media, provenance
from ..atomic import atomic_path
from ..config import Config
from ..errors import InputError
from ..metrics import as_uint8
from ..pipeline import TalkingHeadPipeline
from .protocol import NotEnoughFrames, default_device, open_test_set, split_frames

CHANCE = 1.0 / 3.0
Z95 = 1.959963984540054
HTML_FILE, KEY_FILE = "study.html", "key.json"


# --- planning -------------------------------------------------------------------------------------------

@dataclass
class TripletPlan:
    """One triplet: the generated frame re-enacts frame `target` of video `fake_video`; reals are (video, frame)."""

    identity: str
    fake_video: int
    target: int
    reals: list[tuple[int, int]]
    same_clip: bool  # both real frames come from one clip (a person with a single clip)


def plan_triplets(identities: list[str], n_frames: list[int], count: int, shots: int, holdout: int,
                  seed: int, clip_ids: list[str]) -> list[TripletPlan]:
    """`count` triplets spread round-robin over the people (and over each person's clips), see the docstring."""
    rng = np.random.default_rng(seed)
    people: dict[str, list[int]] = {}
    for v, ident in enumerate(identities):
        people.setdefault(ident, []).append(v)
    usable = {p: [v for v in vs if n_frames[v] > shots] for p, vs in people.items()}
    usable = {p: vs for p, vs in usable.items() if vs}
    if not usable:
        raise NotEnoughFrames(f"no clip has more than T={shots} frames")
    order = sorted(usable, key=lambda p: (-len(people[p]), p))
    plans = []
    for k in range(count):
        person = order[k % len(order)]
        clips = usable[person]
        fake = clips[(k // len(order)) % len(clips)]
        split = split_frames(n_frames[fake], [shots], holdout, seed, clip_ids[fake])
        target = int(rng.choice(split.holdout))
        others = [v for v in people[person] if v != fake]
        if len(others) >= 2:
            real_videos = [int(v) for v in rng.choice(others, 2, replace=False)]
        elif others:
            real_videos = [others[0], fake]
        else:
            real_videos = [fake, fake]
        reals, taken = [], {(fake, target)}
        for v in real_videos:
            choices = [f for f in range(n_frames[v]) if (v, f) not in taken]
            frame = int(rng.choice(choices))
            taken.add((v, frame))
            reals.append((v, frame))
        plans.append(TripletPlan(person, fake, target, reals, same_clip=real_videos[0] == real_videos[1]))
    return plans


# --- making the kit -------------------------------------------------------------------------------------

def png_data_uri(image: np.ndarray) -> str:
    """A metadata-free PNG of an RGB uint8 image as a data: URI."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass
class Study:
    """A generated study: the page's data (no answers in it) and the key."""

    study_id: str
    triplets: list[dict[str, Any]]  # [{"id", "images": [{"id", "src"}]}] (page order is shuffled in the browser)
    key: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


class StudyBuilder:
    """Renders the triplets of a plan with the inference pipeline (one avatar per source clip)."""

    def __init__(self, pipe, data_dir: str | os.PathLike, cfg: Config, *, shots: int, variant: str,
                 epochs: int | None, display_size: int, device: str = "cpu", progress: bool = True):
        if variant not in ("ff", "ft"):
            raise ValueError(f"variant must be ff or ft, got {variant!r}")
        self.pipe, self.cfg, self.device = pipe, cfg, device
        self.test = open_test_set(data_dir, cfg)
        self.shots, self.variant, self.epochs = int(shots), variant, epochs
        self.display_size, self.progress = int(display_size), progress
        self.avatars: dict[int, Any] = {}

    def avatar(self, video: int, holdout: int, seed: int):
        """The avatar of a clip from its T few-shot frames (the split `plan_triplets` used: same seed)."""
        if video not in self.avatars:
            clip = self.test.clip_ids[video]
            split = split_frames(self.test.n_frames[video], [self.shots], holdout, seed, clip)
            shots = self.test.clip_frames(video, split.shots(self.shots))
            self.avatars[video] = self.pipe.create_avatar_from_tensors(
                shots["x"].to(self.device), shots["y"].to(self.device), landmarks=shots["points"],
                finetune=self.variant == "ft", epochs=self.epochs if self.variant == "ft" else None, progress=False)
        return self.avatars[video]

    def display(self, image: np.ndarray, generated: bool) -> np.ndarray:
        out = media.resize(image, self.display_size, self.display_size)
        return provenance.embed_watermark(out) if generated and provenance.can_watermark(out) else out

    def build(self, count: int, holdout: int, seed: int) -> Study:
        t = self.test
        plans = plan_triplets(t.identities, t.n_frames, count, self.shots, holdout, seed, t.clip_ids)
        study_id = secrets.token_hex(6)
        rng = np.random.default_rng(seed + 1)
        triplets, keyed = [], []
        for k, plan in enumerate(tqdm(plans, desc="triplets", unit="triplet", disable=not self.progress)):
            avatar = self.avatar(plan.fake_video, holdout, seed)
            target = t.clip_frames(plan.fake_video, [plan.target])
            fake = as_uint8(self.pipe.render(avatar, target["y"].to(self.device), batch_size=1,
                                             points=target["points"]))[0]
            images = [(self.display(fake, True), "generated", plan.fake_video, plan.target)]
            for v, f in plan.reals:
                images.append((self.display(as_uint8(t.clip_frames(v, [f])["x"])[0], False), "real", v, f))
            ids = [secrets.token_hex(4) for _ in images]
            order = rng.permutation(len(images))  # stored order carries no information
            triplets.append({"id": f"t{k:03d}", "images": [{"id": ids[i], "src": png_data_uri(images[i][0])}
                                                            for i in order]})
            keyed.append({"id": f"t{k:03d}", "identity": plan.identity, "fake": ids[0], "same_clip": plan.same_clip,
                          "images": {ids[i]: {"kind": kind, "clip": t.clip_ids[v], "frame": f}
                                     for i, (_, kind, v, f) in enumerate(images)}})
        warnings = []
        single = sorted({p.identity for p in plans if p.same_clip})
        if single:
            warnings.append(f"{len(single)} people have a single clip, so both real frames of their triplets come "
                            f"from the generated frame's clip (the paper used three videos): {', '.join(single)}")
        key = {"study_id": study_id, "created": _now(), "model_dir": str(getattr(self.pipe, "model_dir", "")),
               "data_dir": str(t.root), "T": self.shots, "variant": self.variant,
               "ft_epochs": (self.cfg.finetune.epochs if self.epochs is None else self.epochs)
               if self.variant == "ft" else None, "image_size": self.cfg.model.image_size,
               "display_size": self.display_size, "seed": seed, "chance": CHANCE, "warnings": warnings,
               "triplets": keyed}
        return Study(study_id, triplets, key, warnings)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_study(study: Study, out: str | os.PathLike) -> dict[str, Path]:
    """study.html and key.json into the folder `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    page = {"study_id": study.study_id, "triplets": study.triplets}
    html = HTML_TEMPLATE.replace("__STUDY_JSON__", json.dumps(page).replace("</", "<\\/"))
    paths = {"html": out / HTML_FILE, "key": out / KEY_FILE}
    with atomic_path(paths["html"]) as tmp:
        tmp.write_text(html, encoding="utf-8")
    with atomic_path(paths["key"]) as tmp:
        tmp.write_text(json.dumps(study.key, indent=1) + "\n", encoding="utf-8")
    return paths


def make_study(model_dir: str | os.PathLike, data_dir: str | os.PathLike, out: str | os.PathLike, *,
               triplets: int = 20, shots: int = 8, variant: str = "ft", epochs: int | None = None,
               display_size: int = 256, seed: int = 0, device: str | None = None,
               progress: bool = True) -> tuple[Study, dict[str, Path]]:
    """Build a study with the inference pipeline and write it (module docstring)."""
    device = device or default_device()
    pipe = TalkingHeadPipeline.from_pretrained(model_dir, device=device)
    builder = StudyBuilder(pipe, data_dir, pipe.cfg, shots=shots, variant=variant, epochs=epochs,
                           display_size=display_size, device=device, progress=progress)
    study = builder.build(triplets, pipe.cfg.eval.holdout, seed)
    return study, write_study(study, out)


# --- scoring --------------------------------------------------------------------------------------------

def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n (NaNs for n = 0)."""
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class StudyScore:
    correct: int
    total: int
    accuracy: float
    ci95: tuple[float, float]
    participants: dict[str, dict[str, Any]]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"metric": "USER", "accuracy": self.accuracy, "correct": self.correct, "answers": self.total,
                "ci95_wilson": list(self.ci95), "chance": CHANCE, "lower_is_better": True,
                "participants": self.participants, "warnings": self.warnings}

    def text(self) -> str:
        lo, hi = self.ci95
        lines = [f"USER (fake spotted): {self.accuracy:.3f} = {self.correct}/{self.total} answers, "
                 f"95% CI [{lo:.3f}, {hi:.3f}] (Wilson); chance 1/3 = {CHANCE:.3f}; lower is better",
                 f"participants: {len(self.participants)}"]
        lines += [f"  {name}: {p['correct']}/{p['answers']} = {p['accuracy']:.3f}" for name, p in
                  self.participants.items()]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


class AnswersError(InputError):
    """An answers or key file that does not fit the study."""


def score(key: dict[str, Any], answer_sets: Iterable[dict[str, Any]]) -> StudyScore:
    """Accuracy of fake picks over all answer files of one study (module docstring)."""
    fakes = {t["id"]: t["fake"] for t in key.get("triplets", [])}
    warnings = list(key.get("warnings", []))
    participants: dict[str, dict[str, Any]] = {}
    for i, answers in enumerate(answer_sets):
        if answers.get("study_id") != key.get("study_id"):
            raise AnswersError(f"answers {i + 1} belong to study {answers.get('study_id')!r}, the key to "
                               f"{key.get('study_id')!r}")
        name = str(answers.get("participant") or f"participant {i + 1}")
        while name in participants:
            name += "'"
        last: dict[str, str] = {}
        for a in answers.get("answers", []):
            if a.get("triplet") not in fakes:
                warnings.append(f"{name}: unknown triplet {a.get('triplet')!r} ignored")
                continue
            if a["triplet"] in last:
                warnings.append(f"{name}: triplet {a['triplet']} answered twice; the last answer counts")
            last[a["triplet"]] = a.get("chosen")
        correct = sum(fakes[t] == chosen for t, chosen in last.items())
        participants[name] = {"correct": int(correct), "answers": len(last),
                              "accuracy": correct / len(last) if last else math.nan}
    total = sum(p["answers"] for p in participants.values())
    correct = sum(p["correct"] for p in participants.values())
    if not total:
        raise AnswersError("no answers to score")
    return StudyScore(correct, total, correct / total, wilson_interval(correct, total), participants, warnings)


def load_json(path: str | os.PathLike) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise AnswersError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict):
        raise AnswersError(f"{path}: expected a JSON object")
    return data


def score_files(answer_paths: list[str | os.PathLike], key_path: str | os.PathLike | None = None) -> StudyScore:
    """Score answer files; the key defaults to key.json beside the first answers file."""
    if not answer_paths:
        raise AnswersError("give at least one answers file")
    key_path = Path(key_path) if key_path else Path(answer_paths[0]).parent / KEY_FILE
    if not key_path.is_file():
        raise AnswersError(f"{key_path}: no study key (give --key STUDY_DIR/{KEY_FILE})")
    return score(load_json(key_path), [load_json(p) for p in answer_paths])


HTML_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Which face is generated?</title>
<style>
 body { font-family: system-ui, sans-serif; background: #181818; color: #eee; margin: 2em auto; max-width: 960px; }
 .row { display: flex; gap: 16px; justify-content: center; margin: 1.5em 0; }
 .row button { padding: 0; border: 4px solid transparent; background: none; cursor: pointer; }
 .row button:hover { border-color: #6af; }
 .row img { display: block; width: 256px; height: 256px; image-rendering: auto; }
 #progress { color: #aaa; }
 textarea { width: 100%; height: 8em; }
 .big { font-size: 1.1em; padding: .4em 1em; }
</style>
</head>
<body>
<h1>Which face is generated?</h1>
<div id="intro">
 <p>Each screen shows three pictures of the same person. Two are frames of real videos; <b>one was generated
 by a computer model</b> (it shows synthetic, AI-generated content). Click the one you think is generated.
 Take your time, there is no time limit. At the end, download your answers and send the file back.</p>
 <p><label>Your name or an id (optional): <input id="name"></label></p>
 <p><button class="big" id="start">Start</button></p>
</div>
<div id="task" hidden>
 <p id="progress"></p>
 <div class="row" id="row"></div>
</div>
<div id="done" hidden>
 <p>Thank you! Please download your answers and send the file to the person running the study.</p>
 <p><button class="big" id="download">Download answers</button></p>
 <p>If downloading does not work, copy this text instead:</p>
 <textarea id="answers" readonly></textarea>
</div>
<script>
const STUDY = __STUDY_JSON__;
function shuffle(a) {  // Fisher-Yates, per participant
  for (let i = a.length - 1; i > 0; i--) { const j = Math.floor(Math.random() * (i + 1)); [a[i], a[j]] = [a[j], a[i]]; }
  return a;
}
const result = { study_id: STUDY.study_id, participant: "", started: null, finished: null,
                 user_agent: navigator.userAgent, answers: [] };
const order = shuffle(STUDY.triplets.slice());
let index = 0, shownAt = 0;
function show() {
  if (index >= order.length) { finish(); return; }
  const t = order[index];
  document.getElementById("progress").textContent = (index + 1) + " / " + order.length;
  const row = document.getElementById("row");
  row.innerHTML = "";
  const images = shuffle(t.images.slice());
  const shown = images.map(im => im.id);
  for (const im of images) {
    const b = document.createElement("button");
    const img = document.createElement("img");
    img.src = im.src; img.alt = "candidate";
    b.appendChild(img);
    b.onclick = () => {
      result.answers.push({ triplet: t.id, chosen: im.id, shown: shown, ms: Math.round(performance.now() - shownAt) });
      index += 1; show();
    };
    row.appendChild(b);
  }
  shownAt = performance.now();
}
function finish() {
  result.finished = new Date().toISOString();
  document.getElementById("task").hidden = true;
  document.getElementById("done").hidden = false;
  document.getElementById("answers").value = JSON.stringify(result);
}
document.getElementById("start").onclick = () => {
  result.participant = document.getElementById("name").value.trim();
  result.started = new Date().toISOString();
  document.getElementById("intro").hidden = true;
  document.getElementById("task").hidden = false;
  show();
};
document.getElementById("download").onclick = () => {
  const blob = new Blob([JSON.stringify(result, null, 1)], { type: "application/json" });
  const a = document.createElement("a");
  const who = (result.participant || "anonymous").replace(/[^A-Za-z0-9_-]/g, "_");
  a.href = URL.createObjectURL(blob);
  a.download = "answers-" + STUDY.study_id + "-" + who + ".json";
  document.body.appendChild(a); a.click(); a.remove();
};
</script>
</body>
</html>
"""

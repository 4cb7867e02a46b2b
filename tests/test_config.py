"""Config checking: every preset and the shipped model pass; a setting out of its range is refused where the
config is checked (`--set`, config.json), with one line naming the setting and its valid range."""

from __future__ import annotations

import dataclasses
import json
import shutil
import typing
from pathlib import Path

import numpy as np
import pytest

from talking_heads import limits
from talking_heads.config import (LIMITED, PRESETS, RANGES, Config, ConfigError, _SECTIONS, apply_overrides,
                                  check_section, preset)
from talking_heads.errors import InputError

SAMPLE_MODEL = Path(__file__).resolve().parents[1] / "src" / "talking_heads" / "assets" / "sample_model"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_within_its_ranges(name):
    cfg = preset(name)
    assert Config.from_dict(json.loads(cfg.to_json())) == cfg


def test_the_shipped_model_config_is_within_its_ranges():
    d = json.loads((SAMPLE_MODEL / "config.json").read_text())
    d.pop("meta", None)  # what checkpoint.read_config takes off before Config.from_dict
    Config.from_dict(d)


def test_every_range_names_a_numeric_or_listed_setting():
    for key in RANGES:
        section, field = key.split(".")
        hints = typing.get_type_hints(_SECTIONS[section])
        assert field in hints, key


@pytest.mark.parametrize("override, words", [
    ("data.crop_scale=0", "data.crop_scale=0 is out of range: give a value from 1 to 5"),
    ("data.crop_scale=1e308", "data.crop_scale=1e+308 is out of range: give a value from 1 to 5"),
    ("data.crop_scale=-1", "data.crop_scale=-1 is out of range"),
    ("data.crop_scale=NaN", "data.crop_scale must be a finite number"),
    ("data.crop_scale=nan", "data.crop_scale must be a number"),
    ("data.crop_scale=Infinity", "data.crop_scale must be a finite number"),
    ("data.max_frames=-1", "data.max_frames=-1 is out of range"),
    ("data.redetect_every=0", "data.redetect_every=0 is out of range"),
    ("inference.batch_size=0", "inference.batch_size=0 is out of range: give a value from 1 to 4096"),
    ("inference.motion_seconds=0", "inference.motion_seconds must be > 0"),
    ("inference.motion_seconds=1e9", "--limit duration="),
    ("inference.video_frames=0", "give at least 1 frame"),
    ("finetune.epochs=-1", "give 0 or more epochs"),
    ("finetune.epochs=1000000", "--limit epochs="),
    ("finetune.steps=10000000", "--limit finetune_steps="),
    ("finetune.lr_generator=-1", "finetune.lr_generator=-1 is out of range: give a value from 0 to 1"),
    ("finetune.batch_size=100000", "finetune.batch_size=100000 is out of range"),
    ("finetune.ema=1", "finetune.ema=1 is out of range"),
    ("train.steps=0", "give at least 1 step"),
    ("train.steps=20000000", "--limit steps="),
    ("train.batch_size=0", "train.batch_size=0 is out of range"),
    ("train.k_shot=0", "train.k_shot=0 is out of range"),
    ("train.lr_discriminator=2", "train.lr_discriminator=2 is out of range"),
    ("train.betas=[0.0, 1.0]", "train.betas[1]=1 is out of range"),
    ("train.log_every=0", "train.log_every=0 is out of range"),
    ("eval.shots=[1, 0]", "eval.shots[1] 0: must be >= 1"),
    ("eval.holdout=0", "eval.holdout=0 is out of range"),
    ("eval.variants=[\"ff\", \"gan\"]", "eval.variants[1]='gan' is not one of ff, ft"),
    ("loss.identity_weight=-1", "loss.identity_weight=-1 is out of range"),
])
def test_out_of_range_settings_are_one_line_naming_the_setting(override, words):
    with pytest.raises(InputError) as err:
        apply_overrides(preset("tiny"), [override])
    assert words in str(err.value) and "\n" not in str(err.value)


def test_ranges_apply_to_config_json_too_and_limits_can_be_raised():
    d = preset("tiny").to_dict()
    d["data"]["crop_scale"] = 0
    with pytest.raises(ConfigError, match="data.crop_scale=0 is out of range"):
        Config.from_dict(d)
    with limits.overrides(["steps=20000000"]):
        assert apply_overrides(preset("tiny"), ["train.steps=20000000"]).train.steps == 20_000_000


def test_the_edges_of_a_range_are_accepted():
    cfg = apply_overrides(preset("tiny"), ["data.crop_scale=1", "data.crop_scale=5", "train.lr_generator=0",
                                           "finetune.epochs=0", "eval.videos=0"])
    assert cfg.data.crop_scale == 5.0 and cfg.train.lr_generator == 0.0 and cfg.finetune.epochs == 0


def test_check_section_checks_single_settings():
    assert check_section("eval", {"shots": [1, 2], "holdout": 3}) == {"shots": (1, 2), "holdout": 3}
    with pytest.raises(InputError, match="eval.holdout=0 is out of range"):
        check_section("eval", {"holdout": 0})
    with pytest.raises(ConfigError, match="unknown"):
        check_section("eval", {"nonsense": 1})
    assert dataclasses.is_dataclass(_SECTIONS["eval"])


def test_every_limited_setting_is_a_setting_with_a_range():
    for key in LIMITED:
        section, field = key.split(".")
        assert field in typing.get_type_hints(_SECTIONS[section]) and key in RANGES, key


def test_a_saved_config_past_a_limit_loads_while_setting_that_value_needs_the_limit(tiny_model_dir, tmp_path):
    """A model trained with --limit steps=2e7 (or fine-tuned with --limit epochs=...) animates, evaluates and
    resumes without the flag: the limits hold values a user sets (--set, flags), not a config read back."""
    from talking_heads.checkpoint import load_model_dir, read_config

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    d = json.loads((model / "config.json").read_text())
    d["train"]["steps"], d["finetune"]["epochs"] = 20_000_000, 50_000
    (model / "config.json").write_text(json.dumps(d))
    cfg, _ = read_config(model)
    assert cfg.train.steps == 20_000_000 and cfg.finetune.epochs == 50_000
    assert load_model_dir(model)[0].train.steps == 20_000_000
    assert apply_overrides(cfg, ["train.seed=1"]).train.steps == 20_000_000  # a resumed run with another --set
    with pytest.raises(limits.LimitError, match="--limit steps="):
        apply_overrides(cfg, ["train.steps=20000000"])  # the same value typed by the user
    with pytest.raises(limits.LimitError, match="--limit epochs="):
        apply_overrides(preset("tiny"), ["finetune.epochs=50000"])
    with limits.overrides(["steps=2e7"]):
        assert apply_overrides(cfg, ["train.steps=20000000"]).train.steps == 20_000_000
    d["train"]["steps"] = 0  # the plain ranges still hold on load
    (model / "config.json").write_text(json.dumps(d))
    with pytest.raises(InputError, match="train.steps=0 is out of range: give 1 or more"):
        read_config(model)


def test_check_section_names_a_flag_as_typed():
    with pytest.raises(InputError, match=r"^--holdout 0 is out of range: give a value from 1 to 100000$"):
        check_section("eval", {"holdout": 0}, names={"holdout": "--holdout"})
    with pytest.raises(InputError, match=r"^--shots 0: must be >= 1"):
        check_section("eval", {"shots": [1, 0]}, names={"shots": "--shots"})
    with pytest.raises(InputError, match=r"^--epochs -1: must be >= 0"):
        check_section("eval", {"epochs": -1}, names={"epochs": "--epochs"})


@pytest.mark.parametrize("value, expected", [(12, 12), (2.0, 2), ("12", 12), (" 7 ", 7), (np.int64(3), 3),
                                             (np.float32(4.0), 4)])
def test_whole_number_accepts_integers_and_their_text(value, expected):
    assert limits.whole_number(value, "epochs") == expected


@pytest.mark.parametrize("value", [2.7, -0.5, "2.5", "two", float("nan"), float("inf"), None, [1], np.float64(1.5)])
def test_whole_number_refuses_what_is_not_a_whole_number(value):
    with pytest.raises(InputError, match="epochs must be a whole number"):
        limits.whole_number(value, "epochs")
    if value is not None:  # None is "the model's default" to check_epochs
        with pytest.raises(InputError, match="must be a whole number"):
            limits.check_epochs(value, "epochs")

"""Specification tests for TrainConfig: YAML round trip, strict keys and types, choices, overrides."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from conftest import one_line
from toucan_speakemb import SpeakEmbError
from toucan_speakemb.training.config import TrainConfig, apply_overrides


def write_yaml(tmp_path, text: str):
    p = tmp_path / "hparams.yaml"
    p.write_text(text, encoding="utf-8")
    return p


# ---- round trip and defaults ----------------------------------------------------------------------------

def test_defaults_round_trip_through_yaml(tmp_path):
    cfg = TrainConfig()
    p = write_yaml(tmp_path, cfg.to_yaml())
    assert TrainConfig.from_yaml(p) == cfg
    assert TrainConfig.from_dict(yaml.safe_load(cfg.to_yaml())) == cfg


def test_a_non_default_config_round_trips_through_yaml(tmp_path):
    cfg = TrainConfig.from_dict({
        "seed": 7,
        "data": {"level": "balanced", "path": "x.safetensors", "min_utterances": 3},
        "diffusion": {"timesteps": 200, "schedule": "sigmoid", "prediction": "eps", "loss": "l1",
                      "variance": "large", "beta_start": 2e-5, "beta_end": 0.02},
        "model": {"kind": "fc3", "hidden": 64},
        "normalization": {"standardize": False, "min_std": 1e-3},
        "train": {"steps": 10, "lr": 3e-4, "threads": 1, "lr_schedule": "constant"},
        "sample": {"sampler": "ancestral", "steps": 20, "eta": 0.5},
    })
    again = TrainConfig.from_yaml(write_yaml(tmp_path, cfg.to_yaml()))
    assert again == cfg
    assert again.diffusion.beta_start == 2e-5 and again.train.threads == 1


def test_yaml_holds_every_key_of_every_section():
    d = yaml.safe_load(TrainConfig().to_yaml())
    for f in dataclasses.fields(TrainConfig):
        assert f.name in d
        value = getattr(TrainConfig(), f.name)
        if dataclasses.is_dataclass(value):
            assert set(d[f.name]) == {g.name for g in dataclasses.fields(value)}


def test_a_partial_yaml_keeps_the_defaults_of_the_other_keys(tmp_path):
    cfg = TrainConfig.from_yaml(write_yaml(tmp_path, "train:\n  steps: 12\nmodel:\n  hidden: 8\n"))
    assert cfg.train.steps == 12 and cfg.model.hidden == 8
    default = TrainConfig()
    assert cfg.train.lr == default.train.lr and cfg.model.blocks == default.model.blocks
    assert cfg.diffusion == default.diffusion


def test_an_empty_yaml_is_the_default_config(tmp_path):
    assert TrainConfig.from_yaml(write_yaml(tmp_path, "")) == TrainConfig()


def test_defaults_are_the_documented_recipe():
    cfg = TrainConfig()
    assert cfg.diffusion.schedule == "cosine" and cfg.diffusion.prediction == "v"
    assert cfg.model.kind == "resmlp" and cfg.data.level == "speaker"
    assert cfg.sample.sampler == "ddim" and cfg.sample.steps <= cfg.diffusion.timesteps


# ---- strictness -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("d,key", [
    ({"sed": 1}, "sed"),
    ({"model": {"hiden": 32}}, "model.hiden"),
    ({"train": {"step": 5}}, "train.step"),
    ({"diffusion": {"schedule": "cosine", "timestep": 10}}, "diffusion.timestep"),
])
def test_unknown_key_is_refused_naming_it(d, key):
    with pytest.raises(SpeakEmbError) as ei:
        TrainConfig.from_dict(d)
    msg = one_line(ei)
    assert f"'{key}'" in msg and "unknown" in msg


def test_unknown_key_in_a_yaml_file_names_the_file(tmp_path):
    p = write_yaml(tmp_path, "model:\n  hiden: 32\n")
    with pytest.raises(SpeakEmbError) as ei:
        TrainConfig.from_yaml(p)
    msg = one_line(ei)
    assert "model.hiden" in msg and str(p) in msg


@pytest.mark.parametrize("d,key", [
    ({"train": {"steps": "many"}}, "train.steps"),
    ({"train": {"steps": 2.5}}, "train.steps"),
    ({"train": {"lr": "fast"}}, "train.lr"),
    ({"train": {"lr": True}}, "train.lr"),
    ({"model": {"hidden": True}}, "model.hidden"),
    ({"normalization": {"standardize": "sure"}}, "normalization.standardize"),
    ({"normalization": {"standardize": 1}}, "normalization.standardize"),
    ({"data": {"level": 3}}, "data.level"),
    ({"seed": [1, 2]}, "seed"),
])
def test_wrong_type_is_refused_naming_the_key(d, key):
    with pytest.raises(SpeakEmbError) as ei:
        TrainConfig.from_dict(d)
    assert key in one_line(ei)


@pytest.mark.parametrize("d,wanted", [
    ({"train": {"steps": "many"}}, "must be an integer; got 'many'"),
    ({"train": {"lr": "fast"}}, "must be a number; got 'fast'"),
    ({"data": {"path": 5}}, "must be a string; got 5"),
    ({"normalization": {"standardize": 1}}, "must be a boolean (true / false); got 1"),
    ({"model": {"age_bands": "young"}}, "model.age_bands[0] must be a number; got 'young'"),
])
def test_a_wrong_type_is_named_in_words(d, wanted):
    with pytest.raises(SpeakEmbError) as ei:
        TrainConfig.from_dict(d)
    assert wanted in one_line(ei)


@pytest.mark.parametrize("d,key", [
    ({"train": {"threads": "many"}}, "train.threads"),
    ({"train": {"threads": 1.5}}, "train.threads"),
    ({"data": {"path": 5}}, "data.path"),
])
def test_wrong_type_of_an_optional_key_is_refused_naming_the_key(d, key):
    """Optional keys (default None) still have a type: threads is an int, the data path a string."""
    with pytest.raises(SpeakEmbError) as ei:
        TrainConfig.from_dict(d)
    assert key in one_line(ei)


@pytest.mark.parametrize("d,key", [
    ({"train": {"steps": None}}, "train.steps"),
    ({"seed": None}, "seed"),
    ({"train": {"lr": None}}, "train.lr"),
])
def test_null_for_a_required_key_is_refused_naming_the_key(d, key):
    with pytest.raises(SpeakEmbError) as ei:
        TrainConfig.from_dict(d)
    assert key in one_line(ei)


def test_a_section_that_is_not_a_mapping_is_refused():
    with pytest.raises(SpeakEmbError) as ei:
        TrainConfig.from_dict({"model": 5})
    assert "model" in one_line(ei) and "mapping" in one_line(ei)


def test_a_yaml_file_that_is_not_a_mapping_or_not_yaml_is_refused(tmp_path):
    with pytest.raises(SpeakEmbError) as ei:
        TrainConfig.from_yaml(write_yaml(tmp_path, "- a\n- b\n"))
    assert "mapping" in one_line(ei)
    with pytest.raises(SpeakEmbError) as ei:
        TrainConfig.from_yaml(write_yaml(tmp_path, "model: {hidden: [1, 2\n"))
    assert "not valid YAML" in one_line(ei)


def test_a_missing_yaml_file_is_a_clear_error(tmp_path):
    with pytest.raises(SpeakEmbError) as ei:
        TrainConfig.from_yaml(tmp_path / "nope.yaml")
    assert "not found" in one_line(ei)


@pytest.mark.parametrize("d,key", [
    ({"data": {"level": "voice"}}, "data.level"),
    ({"diffusion": {"schedule": "exp"}}, "diffusion.schedule"),
    ({"diffusion": {"prediction": "x0"}}, "diffusion.prediction"),
    ({"diffusion": {"loss": "huber"}}, "diffusion.loss"),
    ({"diffusion": {"variance": "medium"}}, "diffusion.variance"),
    ({"model": {"kind": "transformer"}}, "model.kind"),
    ({"train": {"lr_schedule": "step"}}, "train.lr_schedule"),
    ({"sample": {"sampler": "euler"}}, "sample.sampler"),
    ({"normalization": {"polar": "on"}}, "normalization.polar"),
    ({"normalization": {"clip": "yes"}}, "normalization.clip"),
    ({"model": {"subspace": "pca"}}, "model.subspace"),
    ({"model": {"subspace_rest": "pooled"}}, "model.subspace_rest"),
    ({"sample": {"slider_method": "sideways"}}, "sample.slider_method"),
    ({"train": {"select": "median"}}, "train.select"),
    ({"normalization": {"clip": True}}, "normalization.clip"),  # YAML's reading of clip: yes
    ({"normalization": {"polar": False}}, "normalization.polar"),  # ... and of polar: off
    ({"sample": {"slider_method": True}}, "sample.slider_method"),
])
def test_bad_choice_is_refused_naming_the_key_and_the_allowed_values(d, key):
    with pytest.raises(SpeakEmbError) as ei:
        TrainConfig.from_dict(d)
    msg = one_line(ei)
    assert key in msg and "must be one of" in msg


@pytest.mark.parametrize("d,key", [
    ({"train": {"steps": 0}}, "train.steps"),
    ({"train": {"batch_size": -1}}, "train.batch_size"),
    ({"train": {"lr": 0.0}}, "train.lr"),
    ({"diffusion": {"timesteps": 0}}, "diffusion.timesteps"),
    ({"model": {"hidden": 0}}, "model.hidden"),
    ({"train": {"ema_decay": 1.0}}, "train.ema_decay"),
    ({"train": {"overfit_tolerance": -0.1}}, "train.overfit_tolerance"),
    ({"diffusion": {"beta_start": 0.02, "beta_end": 0.01}}, "diffusion.beta_start"),
    ({"diffusion": {"timesteps": 10}, "sample": {"steps": 20}}, "sample.steps"),
    ({"train": {"validation_share": 1.0}}, "train.validation_share"),
    ({"train": {"validate_every": 0}}, "train.validate_every"),
    ({"train": {"patience": -1}}, "train.patience"),
    ({"model": {"subspace_dims": 0}}, "model.subspace_dims"),
    ({"model": {"hidden_per_64_dims": -128}}, "model.hidden_per_64_dims"),
    ({"sample": {"slider_inversion_steps": 0}}, "sample.slider_inversion_steps"),
    ({"normalization": {"radial": True, "polar": "always"}}, "normalization.polar"),
    ({"sample": {"autoguidance": -0.5}}, "sample.autoguidance"),
    ({"sample": {"rest_temperature": 0}}, "sample.rest_temperature"),
    ({"sample": {"variance_correction": -0.1}}, "sample.variance_correction"),
    ({"sample": {"variance_correction": 1.5}}, "sample.variance_correction"),
])
def test_out_of_range_value_is_refused_naming_the_key(d, key):
    with pytest.raises(SpeakEmbError) as ei:
        TrainConfig.from_dict(d)
    assert key in one_line(ei)


@pytest.mark.parametrize("d,key", [
    ({"sample": {"batch_size": 0}}, "sample.batch_size"),  # would make the sampler loop with step 0
    ({"model": {"dropout": 1.5}}, "model.dropout"),        # torch refuses it when the model is built
    ({"train": {"threads": -1}}, "train.threads"),          # torch refuses it when training starts
])
def test_values_that_would_crash_later_are_refused_up_front_naming_the_key(d, key):
    with pytest.raises(SpeakEmbError) as ei:
        TrainConfig.from_dict(d)
    assert key in one_line(ei)


@pytest.mark.parametrize("directions,width", [
    (None, 256),  # the network sees every dimension: model.hidden
    (32, 128), (34, 128), (64, 128),  # the demo's 540 speakers: 34 directions
    (65, 256), (112, 256),            # 1800 speakers: 112 directions
    (400, 256),                       # never wider than model.hidden
])
def test_the_network_is_128_units_wide_per_64_directions_it_sees_at_most_model_hidden(directions, width):
    assert TrainConfig().model.width(directions) == width
    assert TrainConfig().model.options(directions)["hidden"] == width


def test_hidden_per_64_dims_0_keeps_model_hidden_whatever_the_subspace():
    cfg = TrainConfig.from_dict({"model": {"hidden": 96, "hidden_per_64_dims": 0}})
    assert cfg.model.width(20) == cfg.model.width(None) == 96


def test_a_file_written_before_the_width_scaled_reads_as_it_was_trained():
    # every key is stored with a run; one missing from it was added later and takes the value that rebuilds
    # what the file holds (here: the width was model.hidden), while a new config takes the default
    old = TrainConfig().to_dict()
    del old["model"]["hidden_per_64_dims"]
    assert TrainConfig.of_file(old).model.hidden_per_64_dims == 0
    assert TrainConfig.from_dict(old).model.hidden_per_64_dims == 128
    assert "hidden_per_64_dims" not in old["model"]  # the caller's dict is left as it was
    assert TrainConfig.of_file(TrainConfig().to_dict()).model.hidden_per_64_dims == 128


def test_exponent_strings_are_read_as_floats(tmp_path):
    # YAML 1.1 reads 1e-3 (no dot) as a string
    p = write_yaml(tmp_path, "train:\n  lr: 1e-3\ndiffusion:\n  beta_start: 1e-5\n  beta_end: 2e-2\n")
    assert yaml.safe_load(p.read_text())["train"]["lr"] == "1e-3"
    cfg = TrainConfig.from_yaml(p)
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.diffusion.beta_start == 1e-5 and cfg.diffusion.beta_end == 0.02


def test_integer_valued_floats_are_accepted_for_int_keys_and_ints_for_float_keys():
    cfg = TrainConfig.from_dict({"train": {"steps": 100.0, "lr": 1}})
    assert cfg.train.steps == 100 and isinstance(cfg.train.steps, int)
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


# ---- overrides ------------------------------------------------------------------------------------------

def test_overrides_parse_numbers_strings_and_bools():
    d = apply_overrides({}, ["train.steps=2000", "train.lr=1e-3", "train.warmup_steps=0", "data.level=utterance",
                             "normalization.standardize=false", "seed=3", "sample.eta=0.5"])
    assert d == {"train": {"steps": 2000, "lr": "1e-3", "warmup_steps": 0}, "data": {"level": "utterance"},
                 "normalization": {"standardize": False}, "seed": 3, "sample": {"eta": 0.5}}
    cfg = TrainConfig.from_dict(d)
    assert cfg.train.steps == 2000 and cfg.train.lr == 1e-3 and cfg.data.level == "utterance"
    assert cfg.normalization.standardize is False and cfg.seed == 3 and cfg.sample.eta == 0.5


def test_overrides_win_over_the_yaml_and_leave_its_other_keys(tmp_path):
    p = write_yaml(tmp_path, "train:\n  steps: 12\n  batch_size: 4\n")
    cfg = TrainConfig.from_yaml(p, ["train.steps=34", "model.hidden=16"])
    assert cfg.train.steps == 34 and cfg.train.batch_size == 4 and cfg.model.hidden == 16


def test_overrides_do_not_modify_the_input_dict():
    d = {"train": {"steps": 5}}
    apply_overrides(d, ["train.steps=6"])
    assert d == {"train": {"steps": 5}}


def test_an_override_value_may_contain_an_equals_sign():
    assert apply_overrides({}, ["data.path=a=b.npz"]) == {"data": {"path": "a=b.npz"}}


@pytest.mark.parametrize("item", ["train.steps", "=5", ".=5"])
def test_malformed_override_is_refused(item):
    with pytest.raises(SpeakEmbError) as ei:
        apply_overrides({}, [item])
    assert "bad override" in one_line(ei) and item in one_line(ei)


def test_override_through_a_value_that_is_not_a_section_is_refused():
    with pytest.raises(SpeakEmbError) as ei:
        apply_overrides({"seed": 3}, ["seed.x=1"])
    assert "'seed' is not a section" in one_line(ei)


def test_override_of_an_unknown_key_is_refused_naming_it():
    with pytest.raises(SpeakEmbError) as ei:
        TrainConfig.from_dict(apply_overrides({}, ["model.hiden=3"]))
    assert "model.hiden" in one_line(ei)


def test_override_with_an_empty_value_is_refused_naming_the_key():
    with pytest.raises(SpeakEmbError) as ei:
        TrainConfig.from_dict(apply_overrides({}, ["train.steps="]))
    assert "train.steps" in one_line(ei)

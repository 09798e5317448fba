"""Specification tests for Generator (loading, reproducible sampling by seed) and VoiceBank (the file of voices)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from conftest import one_line
from toucan_speakemb import EmbeddingSet, SpeakEmbError, get_profile
from toucan_speakemb.training.config import TrainConfig
from toucan_speakemb.core.fileio import save_tensors
from toucan_speakemb.generate.generator import Generator, voice_seeds
from toucan_speakemb.training.trainer import train
from toucan_speakemb.voices.bank import VoiceBank, voice_id

DIM = 5


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (15, DIM)) * np.arange(1, DIM + 1)
    x = np.repeat(centres, 2, axis=0) + 0.2 * rng.normal(size=(30, DIM))
    es = EmbeddingSet(x.astype(np.float32), [f"s{i // 2}" for i in range(30)], get_profile("custom-gen", DIM))
    cfg = TrainConfig.from_dict({
        "seed": 1,
        "model": {"hidden": 32, "blocks": 1, "time_dim": 16},
        "diffusion": {"timesteps": 40},
        "train": {"steps": 25, "batch_size": 16, "threads": 1, "log_every": 5, "checkpoint_every": 25,
                  "warmup_steps": 2},
        "sample": {"steps": 8, "batch_size": 64},
    })
    out = tmp_path_factory.mktemp("gen") / "run"
    train(es, out, cfg, progress=False)
    return out


@pytest.fixture(scope="module")
def gen(run_dir):
    return Generator.load(run_dir)


# ---- loading --------------------------------------------------------------------------------------------

def test_generator_loads_from_the_run_folder_or_the_file_with_the_same_fingerprint(run_dir, gen):
    g2 = Generator.load(run_dir / "generator.safetensors")
    assert g2.fingerprint == gen.fingerprint
    assert len(gen.fingerprint) == 16 and all(c in "0123456789abcdef" for c in gen.fingerprint)
    assert gen.profile == get_profile("custom-gen", DIM) and gen.dim == DIM


def test_generators_with_different_weights_have_different_fingerprints(run_dir, tmp_path):
    from safetensors.numpy import load_file
    from toucan_speakemb.core.fileio import load_tensors

    arrays, meta = load_tensors(run_dir / "generator.safetensors")
    key = next(k for k in arrays if k.startswith("model."))
    arrays = dict(load_file(str(run_dir / "generator.safetensors")))
    arrays[key] = arrays[key] + np.float32(1e-3)
    other = save_tensors(tmp_path / "generator.safetensors", arrays, meta)
    assert Generator.load(other).fingerprint != Generator.load(run_dir).fingerprint


def test_a_generator_written_before_the_width_scaled_with_the_subspace_loads_at_its_trained_width(tmp_path):
    # a 200-wide network on 6 of 24 principal directions: the width rule would make it 128 wide today; the
    # file, written without the rule's key, is rebuilt as it was trained and samples the same voices
    from toucan_speakemb.core.fileio import load_tensors

    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 24)) * np.linspace(0.5, 3, 24)
    es = EmbeddingSet(x.astype(np.float32), [f"s{i // 2}" for i in range(60)], get_profile("custom-wide", 24))
    cfg = TrainConfig.from_dict({
        "seed": 1, "model": {"hidden": 200, "hidden_per_64_dims": 0, "blocks": 1, "time_dim": 16,
                             "subspace": "fixed", "subspace_dims": 6},
        "diffusion": {"timesteps": 40}, "normalization": {"transform": "standard"},
        "train": {"steps": 5, "batch_size": 16, "threads": 1, "warmup_steps": 1, "validation_share": 0.0},
        "sample": {"steps": 4}})
    train(es, tmp_path / "run", cfg, progress=False)
    trained = Generator.load(tmp_path / "run")
    arrays, meta = load_tensors(tmp_path / "run" / "generator.safetensors")
    del meta["config"]["model"]["hidden_per_64_dims"]
    old = Generator.load(save_tensors(tmp_path / "old.safetensors", arrays, meta))
    assert old.cfg.model.width(6) == 200 and TrainConfig().model.width(6) == 128
    np.testing.assert_array_equal(old.sample(4, seed=3), trained.sample(4, seed=3))


def test_run_folder_without_a_generator_is_a_clear_error(tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(SpeakEmbError) as ei:
        Generator.load(tmp_path / "run")
    msg = one_line(ei)
    assert "generator.safetensors" in msg and "resume" in msg


def test_missing_generator_file_is_a_clear_error(tmp_path):
    with pytest.raises(SpeakEmbError) as ei:
        Generator.load(tmp_path / "nope.safetensors")
    assert "not found" in one_line(ei)


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_damaged_generator_file_is_a_clear_error(run_dir, tmp_path, cut):
    damaged = tmp_path / "generator.safetensors"
    raw = (run_dir / "generator.safetensors").read_bytes()
    damaged.write_bytes(raw[: int(len(raw) * cut)])
    with pytest.raises(SpeakEmbError) as ei:
        Generator.load(damaged)
    assert "damaged" in one_line(ei)


def test_a_checkpoint_or_an_embedding_set_is_refused_as_a_generator(run_dir, tmp_path):
    ckpt = sorted((run_dir / "checkpoints").glob("*.safetensors"))[-1]
    with pytest.raises(SpeakEmbError) as ei:
        Generator.load(ckpt)
    assert "checkpoint" in one_line(ei) and "not a generator" in one_line(ei)
    with pytest.raises(SpeakEmbError) as ei:
        Generator.load(run_dir / "train_speakers.safetensors")
    assert "embedding-set" in one_line(ei)


def test_a_generator_missing_its_weights_is_a_clear_error(run_dir, tmp_path):
    from toucan_speakemb.core.fileio import load_tensors

    arrays, meta = load_tensors(run_dir / "generator.safetensors")
    arrays = {k: v for k, v in arrays.items() if not (k.startswith("model.") and ".out." in k)}
    assert len(arrays) < len(load_tensors(run_dir / "generator.safetensors")[0])
    p = save_tensors(tmp_path / "generator.safetensors", arrays, meta)
    with pytest.raises(SpeakEmbError) as ei:
        Generator.load(p)
    assert "damaged or incomplete" in one_line(ei)


def test_a_generator_of_a_future_format_is_refused(run_dir, tmp_path):
    from toucan_speakemb.core.fileio import load_tensors

    arrays, meta = load_tensors(run_dir / "generator.safetensors")
    meta["format_version"] = 7
    p = save_tensors(tmp_path / "generator.safetensors", arrays, meta)
    with pytest.raises(SpeakEmbError) as ei:
        Generator.load(p)
    assert "7" in one_line(ei)


# ---- sampling -------------------------------------------------------------------------------------------

def test_same_seed_gives_identical_voices(gen):
    a = gen.sample(6, seed=11)
    b = gen.sample(6, seed=11)
    assert a.shape == (6, DIM) and a.dtype == np.float32
    assert np.array_equal(a, b)


def test_different_seeds_give_different_voices(gen):
    a = gen.sample(6, seed=11)
    b = gen.sample(6, seed=12)
    assert not np.any(np.all(np.isclose(a[:, None, :], b[None, :, :], atol=1e-6), axis=-1))


def test_voices_of_one_bank_differ_from_each_other(gen):
    x = gen.sample(20, seed=0)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1) + np.eye(20)
    assert d.min() > 1e-4


def test_ancestral_sampling_is_reproducible_by_seed(gen):
    a = gen.sample(4, seed=3, sampler="ancestral")
    assert np.array_equal(a, gen.sample(4, seed=3, sampler="ancestral"))
    assert not np.allclose(a, gen.sample(4, seed=4, sampler="ancestral"))


def test_a_voice_remade_alone_from_its_seed_equals_the_same_voice_in_a_batch_bit_for_bit(gen):
    # 300 voices cross a computation block (BLOCK_ROWS): a voice is the same vector wherever it is computed
    seeds = voice_seeds(5, 300)
    batch = gen.sample_seeds(seeds, sampler="ddim")
    for i in (0, 5, 11, 255, 256, 299):
        np.testing.assert_array_equal(gen.sample_seeds([seeds[i]], sampler="ddim")[0], batch[i])
    np.testing.assert_array_equal(gen.sample(10, seed=5), gen.sample(300, seed=5)[:10])
    np.testing.assert_array_equal(gen.sample_seeds(seeds[250:262]), batch[250:262])


def test_ddim_voices_do_not_depend_on_the_sampling_batch_size(gen):
    seeds = voice_seeds(6, 10)
    np.testing.assert_array_equal(gen.sample_seeds(seeds, batch_size=3), gen.sample_seeds(seeds, batch_size=64))


@pytest.fixture(scope="module")
def subspace_gen(tmp_path_factory):
    # a network that sees 6 of 64 principal directions: the sampler then runs in the Gaussian's eigenbasis
    from toucan_speakemb.core.synthetic import builtin_set

    cfg = TrainConfig.from_dict({
        "seed": 2, "model": {"hidden": 32, "blocks": 1, "time_dim": 16, "subspace": "fixed", "subspace_dims": 6},
        "diffusion": {"timesteps": 40},
        "train": {"steps": 20, "batch_size": 32, "threads": 1, "log_every": 10, "checkpoint_every": 20,
                  "warmup_steps": 2, "validation_share": 0},
        "sample": {"steps": 8, "batch_size": 64}})
    out = tmp_path_factory.mktemp("subspace") / "run"
    train(builtin_set("builtin:synthetic-small"), out, cfg, progress=False)
    g = Generator.load(out)
    # no validation speakers, so no temperature was chosen and one temperature is stored; these tests sample as a
    # run that chose its temperature with the recipe's ratio does
    assert g.rest_temperature == 1.0
    g.meta["temperature"]["rest_temperature"] = 0.7
    return g


def test_voices_sampled_in_the_eigenbasis_do_not_depend_on_their_batch_bit_for_bit(subspace_gen):
    from toucan_speakemb.diffusion.denoisers import gaussian_part

    assert gaussian_part(subspace_gen.model).eigen_subspace() == 6
    assert subspace_gen.rest_temperature == 0.7  # the recipe's: the noise outside the subspace tempered apart
    seeds = voice_seeds(9, 300)
    batch = subspace_gen.sample_seeds(seeds)
    for i in (0, 5, 37, 255, 256, 299):
        np.testing.assert_array_equal(subspace_gen.sample_seeds([seeds[i]])[0], batch[i])
    np.testing.assert_array_equal(subspace_gen.sample_seeds(seeds[::-1])[::-1], batch)
    edited = subspace_gen.sample_seeds(seeds[:12], sliders={"pc1": 1.5})  # decoded again from moved noise
    np.testing.assert_array_equal(subspace_gen.sample_seeds(seeds[7:8], sliders={"pc1": 1.5})[0], edited[7])
    assert not np.allclose(edited, batch[:12])


def test_the_rest_temperature_stored_with_the_generator_is_the_one_it_samples_with(subspace_gen):
    seeds = voice_seeds(3, 20)
    voices = subspace_gen.sample_seeds(seeds)
    latents, steps = subspace_gen.known_latents(seeds)  # sliders start from the same x_T as sampling
    np.testing.assert_array_equal(subspace_gen.standardizer.inverse(subspace_gen.decode(latents, steps)), voices)
    record = subspace_gen.meta["temperature"]
    try:
        record["rest_temperature"] = 1.0
        plain = subspace_gen.sample_seeds(seeds)
        del record["rest_temperature"]  # a generator made before the ratio existed: one temperature
        np.testing.assert_array_equal(subspace_gen.sample_seeds(seeds), plain)
    finally:
        record["rest_temperature"] = 0.7
    assert not np.allclose(plain, voices)
    np.testing.assert_array_equal(subspace_gen.sample_seeds(seeds), voices)


def test_the_direction_factors_stored_with_the_generator_are_the_ones_it_samples_with(subspace_gen):
    seeds = voice_seeds(4, 20)
    plain = subspace_gen.sample_seeds(seeds)
    record = subspace_gen.meta["temperature"]
    assert record.get("direction_scales") is None and subspace_gen.direction_scales is None
    try:
        record["direction_scales"] = [1.4, 1.0, 1.0, 1.0, 1.0, 0.7]
        shaped = subspace_gen.sample_seeds(seeds)
        latents, steps = subspace_gen.known_latents(seeds)  # sliders start from the same x_T as sampling
        np.testing.assert_array_equal(subspace_gen.standardizer.inverse(subspace_gen.decode(latents, steps)), shaped)
        np.testing.assert_array_equal(subspace_gen.sample_seeds(seeds[5:6])[0], shaped[5])  # alone as in a batch
        record["direction_scales"] = [1.0] * 6
        np.testing.assert_allclose(subspace_gen.sample_seeds(seeds), plain, atol=1e-5)  # factors 1: as without
    finally:
        record.pop("direction_scales")
    assert not np.allclose(shaped, plain)
    np.testing.assert_array_equal(subspace_gen.sample_seeds(seeds), plain)


@pytest.mark.parametrize("scales", [[1.1] * 5, [1.1] * 5 + [0.0], [1.1] * 5 + [float("nan")], [1.1] * 5 + [1e300],
                                    [1.1] * 5 + ["1.1"], [1.1] * 5 + [True], [None] * 6, "1.1", 1.1, {"a": 1}])
def test_a_generator_file_with_damaged_direction_factors_is_refused(subspace_gen, tmp_path, scales):
    from toucan_speakemb.core.fileio import load_tensors

    arrays, meta = load_tensors(subspace_gen.path)
    meta["temperature"]["direction_scales"] = scales
    save_tensors(tmp_path / "g.safetensors", arrays, meta)
    with pytest.raises(SpeakEmbError, match="damaged: its direction factors must be a list of 6 numbers") as ei:
        Generator.load(tmp_path / "g.safetensors")
    assert "\n" not in str(ei.value)
    meta["temperature"]["direction_scales"] = [1.1] * 6  # the same file with sound factors loads
    save_tensors(tmp_path / "g.safetensors", arrays, meta)
    assert Generator.load(tmp_path / "g.safetensors").direction_scales == [1.1] * 6


@pytest.mark.parametrize("record", [1.2, "x", [1.0]])
def test_a_generator_file_whose_temperature_record_is_not_a_mapping_is_refused(subspace_gen, tmp_path, record):
    from toucan_speakemb.core.fileio import load_tensors

    arrays, meta = load_tensors(subspace_gen.path)
    meta["temperature"] = record
    save_tensors(tmp_path / "g.safetensors", arrays, meta)
    with pytest.raises(SpeakEmbError, match="damaged: its temperature record is not a mapping"):
        Generator.load(tmp_path / "g.safetensors")


def test_edited_voices_do_not_depend_on_their_batch_bit_for_bit(gen):
    seeds = voice_seeds(8, 12)
    for kw in (dict(sliders={"pc1": 1.5}), dict(sliders={"pc1": -1.0}, slider_method="renoise")):
        batch = gen.sample_seeds(seeds, **kw)
        np.testing.assert_array_equal(gen.sample_seeds(seeds[7:8], **kw)[0], batch[7])
        np.testing.assert_array_equal(gen.sample_seeds(seeds[::-1], **kw)[::-1], batch)


def test_voice_seeds_are_distinct_non_negative_63_bit_and_reproducible():
    s = voice_seeds(0, 1000)
    assert s.dtype == np.int64 and len(set(s.tolist())) == 1000
    assert np.all(s >= 0) and np.all(s < 2**63)
    assert np.array_equal(s, voice_seeds(0, 1000))
    assert not set(s.tolist()) & set(voice_seeds(1, 1000).tolist())


def test_autoguidance_of_the_config_is_what_the_generator_samples_with(run_dir, tmp_path):
    # the fixture's run keeps the Gaussian fit (step 0): this one, without model selection, its trained weights
    cfg = TrainConfig.from_yaml(run_dir / "config.yaml", ["train.validation_share=0", "sample.autoguidance=1"])
    train(EmbeddingSet.load(run_dir / "train_speakers.safetensors"), tmp_path / "run", cfg, progress=False)
    g = Generator.load(tmp_path / "run")
    assert g.cfg.sample.autoguidance == 1.0
    plain = g.sample(20, 3)
    g.cfg.sample.autoguidance = 1.5
    guided = g.sample(20, 3)
    assert np.abs(guided - plain).max() > 1e-4
    latents, steps = g.known_latents(voice_seeds(3, 20))
    np.testing.assert_allclose(g.standardizer.inverse(g.decode(latents, steps)), guided, rtol=1e-5, atol=1e-5)
    g.cfg.sample.autoguidance = 1.0
    np.testing.assert_array_equal(g.sample(20, 3), plain)


def test_sample_of_zero_voices_is_refused(gen):
    with pytest.raises(SpeakEmbError) as ei:
        gen.sample(0)
    assert "at least 1" in one_line(ei)


@pytest.mark.parametrize("kw,word", [(dict(sampler="euler"), "euler"), (dict(sampler="ddim", steps=41), "41")])
def test_bad_sampler_or_step_count_is_refused(gen, kw, word):
    with pytest.raises(SpeakEmbError) as ei:
        gen.sample(2, **kw)
    assert word in one_line(ei)


def test_samples_are_in_the_data_space_not_the_standardised_one(gen, run_dir):
    """The inverse transform is applied: the voices are spread like the training speakers' dimensions."""
    x = gen.sample(200, seed=0)
    speakers = EmbeddingSet.load(run_dir / "train_speakers.safetensors").embeddings
    ratio = x.std(0) / speakers.std(0)
    assert np.all(ratio > 0.2) and np.all(ratio < 5)
    assert speakers.std(0)[-1] > 2 * speakers.std(0)[0]  # data dims have unequal scales
    assert x.std(0)[-1] > x.std(0)[0]


# ---- voice banks ----------------------------------------------------------------------------------------

def test_voice_bank_holds_the_generators_voices_for_its_seed(gen):
    bank = VoiceBank.from_generator(gen, 7, seed=9)
    assert len(bank) == 7
    np.testing.assert_array_equal(bank.embeddings, gen.sample(7, seed=9))
    np.testing.assert_array_equal(bank.seeds, voice_seeds(9, 7))


def test_voice_ids_are_unique_and_are_the_fingerprint_and_the_voice_seed(gen):
    bank = VoiceBank.from_generator(gen, 50, seed=2)
    assert len(set(bank.ids)) == 50
    for vid, s in zip(bank.ids, bank.seeds):
        assert vid == f"{gen.fingerprint[:8]}-{int(s)}" == voice_id(gen.fingerprint, s)


def test_a_voice_is_remade_from_its_id_alone(gen):
    bank = VoiceBank.from_generator(gen, 5, seed=4)
    vid = bank.ids[3]
    fp, seed = vid.split("-")
    assert gen.fingerprint.startswith(fp)
    np.testing.assert_array_equal(gen.sample_seeds([int(seed)])[0], bank.embeddings[3])


def test_bank_profile_equals_the_generators(gen):
    bank = VoiceBank.from_generator(gen, 3, seed=0)
    assert bank.profile == gen.profile


def test_voice_bank_round_trips_through_its_file(gen, tmp_path):
    bank = VoiceBank.from_generator(gen, 6, seed=1)
    back = VoiceBank.load(bank.save(tmp_path / "voices.safetensors"))
    np.testing.assert_array_equal(back.embeddings, bank.embeddings)
    np.testing.assert_array_equal(back.seeds, bank.seeds)
    assert back.seeds.dtype == np.int64
    assert back.ids == bank.ids
    assert back.profile == bank.profile
    assert back.provenance == bank.provenance


def test_voice_bank_provenance_names_the_generator_and_the_sampling(gen):
    bank = VoiceBank.from_generator(gen, 2, seed=8, sampler="ddim", steps=5)
    p = bank.provenance
    assert p["generator"]["fingerprint"] == gen.fingerprint
    assert p["bank_seed"] == 8 and p["sampler"] == "ddim" and p["steps"] == 5
    assert p["created"] and p["toucan_speakemb_version"]


def test_voice_bank_provenance_records_the_steps_actually_taken_by_the_ancestral_sampler(gen):
    """Ancestral sampling always runs all T steps, whatever --steps says; the bank must not claim otherwise."""
    bank = VoiceBank.from_generator(gen, 2, seed=8, sampler="ancestral", steps=5)
    assert bank.provenance["steps"] == gen.diffusion.num_timesteps


def test_npy_export_is_the_bare_float32_array(gen, tmp_path):
    bank = VoiceBank.from_generator(gen, 4, seed=0)
    p = bank.save_npy(tmp_path / "v.npy")
    arr = np.load(p, allow_pickle=False)
    assert arr.dtype == np.float32 and arr.shape == (4, DIM)
    np.testing.assert_array_equal(arr, bank.embeddings)


def test_voice_bank_validation(gen):
    prof = gen.profile
    with pytest.raises(SpeakEmbError) as ei:
        VoiceBank(np.zeros((2, DIM + 1)), [1, 2], ["a", "b"], prof)
    assert "custom-gen" in one_line(ei)
    with pytest.raises(SpeakEmbError) as ei:
        VoiceBank(np.zeros((2, DIM)), [1, 2], ["a", "a"], prof)
    assert "not unique" in one_line(ei)
    with pytest.raises(SpeakEmbError) as ei:
        VoiceBank(np.zeros((2, DIM)), [1], ["a", "b"], prof)
    assert "seeds" in one_line(ei)
    with pytest.raises(SpeakEmbError) as ei:
        VoiceBank(np.full((2, DIM), np.nan), [1, 2], ["a", "b"], prof)
    assert "NaN" in one_line(ei)


def test_an_embedding_set_or_damaged_file_is_refused_as_a_voice_bank(run_dir, tmp_path):
    with pytest.raises(SpeakEmbError) as ei:
        VoiceBank.load(run_dir / "train_speakers.safetensors")
    assert "not a voice bank" in one_line(ei)
    p = tmp_path / "bank.safetensors"
    shutil.copy(run_dir / "generator.safetensors", p)
    raw = p.read_bytes()
    p.write_bytes(raw[:100])
    with pytest.raises(SpeakEmbError) as ei:
        VoiceBank.load(p)
    assert "damaged" in one_line(ei)


def test_zero_steps_or_batch_size_are_refused_not_replaced_by_defaults(gen):
    with pytest.raises(SpeakEmbError):
        gen.sample(2, steps=0)
    with pytest.raises(SpeakEmbError):
        gen.sample(2, batch_size=0)


def test_bank_provenance_records_the_steps_the_sampler_really_ran(gen):
    ddim = VoiceBank.from_generator(gen, 2, seed=0, sampler="ddim", steps=4)
    anc = VoiceBank.from_generator(gen, 2, seed=0, sampler="ancestral", steps=4)
    assert ddim.provenance["steps"] == 4
    assert anc.provenance["steps"] == gen.diffusion.num_timesteps


@pytest.mark.parametrize("kw", [dict(sampler="ancestral"), dict(sampler="ddim", steps=8, eta=1.0)])
@pytest.mark.parametrize("which", ["gen", "subspace_gen"])  # the full-width network and one that sees 6 directions
def test_a_stochastically_sampled_voice_does_not_depend_on_its_batch(which, kw, request):
    g = request.getfixturevalue(which)
    seeds = voice_seeds(4, 40)
    together = g.sample_seeds(seeds, **kw)
    alone = g.sample_seeds(seeds[17:18], **kw)
    other_batch = g.sample_seeds(seeds[::-1], batch_size=7, **kw)
    np.testing.assert_array_equal(alone[0], together[17])
    np.testing.assert_array_equal(other_batch[::-1], together)


def test_a_negative_or_huge_seed_is_a_clear_error(gen):
    for bad in (-1, 2**63):
        with pytest.raises(SpeakEmbError) as ei:
            gen.sample(2, seed=bad)
        assert "seed" in one_line(ei)


def test_a_bank_of_10_is_the_first_10_voices_of_a_bank_of_1000_bit_for_bit(gen):
    small, large = VoiceBank.from_generator(gen, 10, seed=3), VoiceBank.from_generator(gen, 1000, seed=3)
    np.testing.assert_array_equal(small.embeddings, large.embeddings[:10])
    assert small.ids == large.ids[:10]

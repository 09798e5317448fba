"""Specification tests for attribute control: conditions, classifier-free guidance, sliders, their CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import assert_one_error_line as cli_error, one_line
from toucan_speakemb import EmbeddingSet, SpeakEmbError, get_profile
from toucan_speakemb.cli.main import main
from toucan_speakemb.training.conditions import ConditionSpec, age_band_names, age_to_band, draw_null_mask
from toucan_speakemb.training.config import TrainConfig
from toucan_speakemb.diffusion.denoisers import GaussianResidual, ResidualMLPDenoiser
from toucan_speakemb.generate.generator import Generator, GuidedDenoiser, voice_seeds
from toucan_speakemb.generate.sliders import SliderSpace, latent_move, parse_sliders, rotate_towards
from toucan_speakemb.core.synthetic import SyntheticPopulation
from toucan_speakemb.training.trainer import build_diffusion, train
from toucan_speakemb.voices.bank import VoiceBank

DIM = 6
SHIFT = 3.0  # the two genders differ by this much along dimension 0 (in units of the within-group spread)
TINY = {"seed": 2, "model": {"hidden": 48, "blocks": 2, "time_dim": 16, "dropout": 0.0},
        "diffusion": {"timesteps": 100},
        "train": {"steps": 300, "batch_size": 64, "threads": 1, "log_every": 50, "checkpoint_every": 300,
                  "warmup_steps": 20, "lr": 3e-3, "p_uncond": 0.2},
        "sample": {"steps": 8, "batch_size": 512}}
# unconditional runs here only need their files and directions: a few steps
SHORT = {**TINY, "train": {**TINY["train"], "steps": 40, "checkpoint_every": 40}}


def labelled_set(n_speakers=60, per=2, seed=0) -> EmbeddingSet:
    """Speakers whose gender moves dimension 0 by ±SHIFT/2; ages 20..60; every fourth speaker's gender unknown;
    a 'pitch' label column (up / down, a third unknown) tied to dimension 1; dimensions 2 and 3 nearly equal."""
    rng = np.random.default_rng(seed)
    gender = np.where(np.arange(n_speakers) % 2 == 0, "f", "m")
    pitch = np.where(rng.random(n_speakers) < 0.5, "up", "down")
    x = rng.normal(0, 1, (n_speakers, DIM))
    x[:, 0] += np.where(gender == "f", SHIFT / 2, -SHIFT / 2)
    x[:, 1] += np.where(pitch == "up", 1.5, -1.5)
    x[:, 3] = x[:, 2] + 0.05 * rng.normal(size=n_speakers)  # a direction of almost no variance
    gender = np.where(np.arange(n_speakers) % 4 == 3, "", gender)
    pitch = np.where(np.arange(n_speakers) % 3 == 0, "", pitch)
    age = rng.uniform(20, 60, n_speakers)
    utt = np.repeat(x, per, axis=0) + 0.1 * rng.normal(size=(n_speakers * per, DIM))
    rep = lambda a: np.repeat(np.asarray(a), per).tolist()  # noqa: E731
    return EmbeddingSet(utt.astype(np.float32), rep([f"s{i}" for i in range(n_speakers)]),
                        get_profile("custom-attr", DIM), gender=rep(gender), age=np.repeat(age, per),
                        labels={"pitch": rep(pitch)})


@pytest.fixture(scope="module")
def data():
    return labelled_set()


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory, data):
    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict({**TINY, "model": {**TINY["model"], "conditions": ["gender", "age", "pitch"]}})
    out = tmp_path_factory.mktemp("attr") / "cond"
    train(data, out, cfg, progress=False)
    return out


@pytest.fixture(scope="module")
def gen(cond_run):
    return Generator.load(cond_run)


@pytest.fixture(scope="module")
def uncond_run(tmp_path_factory, data):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("attr") / "uncond"
    train(data, out, TrainConfig.from_dict(SHORT), progress=False)
    return out


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# ---- the conditioning math ------------------------------------------------------------------------------

def random_conditional_net(gaussian: bool, subspace=None):
    torch.manual_seed(0)
    net = ResidualMLPDenoiser(subspace or DIM, 50, hidden=16, blocks=1, time_dim=8, conditions={"gender": 2, "age": 3})
    for p in net.parameters():  # the zero-initialised output and modulation would make every output 0
        torch.nn.init.normal_(p, std=0.3)
    if not gaussian:
        return net.eval()
    abar = build_diffusion(TrainConfig.from_dict({"diffusion": {"timesteps": 50}})).alphas_cumprod
    model = GaussianResidual(net, DIM, abar, "v", subspace=subspace, conditions={"gender": 2, "age": 3})
    x = torch.randn(40, DIM) * 2
    model.fit_gaussian(x)
    # the Gaussian's mean moves per condition value: the guided prediction is exact only if that is linear in w
    model.fit_condition_offsets(x + torch.randn(40, 1) * torch.arange(DIM), torch.randint(0, 5, (40, 2)) % torch.tensor([4, 5]))
    assert model.offset0.abs().sum() > 0 and model.offset1.abs().sum() > 0
    return model.eval()


@pytest.mark.parametrize("gaussian,subspace", [(False, None), (True, None), (True, 3)])
def test_guidance_is_uncond_plus_w_times_the_difference_and_0_or_1_give_the_two_models(gaussian, subspace):
    model = random_conditional_net(gaussian, subspace)
    x, t = torch.randn(7, DIM), torch.full((7,), 30)
    codes = torch.tensor([2, 1])
    with torch.no_grad():
        uncond = model(x, t)
        cond = model(x, t, codes.expand(7, -1))
        assert not torch.allclose(uncond, cond, atol=1e-3)  # the condition changes the prediction
        for w in (0.0, 1.0, 2.5):
            guided = GuidedDenoiser(model, codes, w)(x, t)
            torch.testing.assert_close(guided, uncond + w * (cond - uncond), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(GuidedDenoiser(model, codes, 0.0)(x, t), uncond, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(GuidedDenoiser(model, codes, 1.0)(x, t), cond, atol=1e-5, rtol=1e-5)


def test_the_null_token_is_what_a_conditional_net_uses_without_conditions():
    net = random_conditional_net(False)
    x, t = torch.randn(5, DIM), torch.full((5,), 10)
    with torch.no_grad():
        torch.testing.assert_close(net(x, t), net(x, t, torch.zeros(5, 2, dtype=torch.long)))


def test_null_token_dropout_rates():
    p, n, k = 0.2, 40000, 2
    mask = draw_null_mask(n, k, p, torch.Generator().manual_seed(0))
    all_null = mask.all(1).mean()
    # a whole row with probability p; each attribute alone with probability p besides
    assert abs(all_null - (p + (1 - p) * p * p)) < 0.01
    assert np.all(np.abs(mask.mean(0) - (1 - (1 - p) ** 2)) < 0.01)
    assert abs(np.mean(mask[:, 0] & ~mask[:, 1]) - (1 - p) * p * (1 - p)) < 0.01


def test_guidance_0_samples_the_unconditional_model_and_guidance_moves_samples_to_the_condition(gen):
    unc = gen.sample(300, 0)
    np.testing.assert_allclose(gen.sample(300, 0, conditions={"gender": "f"}, guidance=0.0), unc, atol=1e-5)
    f1 = gen.sample(300, 0, conditions={"gender": "f"}, guidance=1.0)
    m1 = gen.sample(300, 0, conditions={"gender": "m"}, guidance=1.0)
    f3 = gen.sample(300, 0, conditions={"gender": "f"}, guidance=3.0)
    m3 = gen.sample(300, 0, conditions={"gender": "m"}, guidance=3.0)
    # the groups' means are +-SHIFT/2 on dimension 0: conditional samples must land on their side, and
    # stronger guidance pushes more of them there (this tiny model learns the condition only partly)
    assert f1[:, 0].mean() > 0.5 and m1[:, 0].mean() < -0.5
    assert (f3[:, 0] > 0).mean() > max(0.8, (f1[:, 0] > 0).mean()) - 1e-9
    assert (m3[:, 0] < 0).mean() > max(0.75, (m1[:, 0] < 0).mean())


def test_ancestral_sampling_is_guided_too(gen):
    unc = gen.sample(50, 0, sampler="ancestral")
    np.testing.assert_allclose(gen.sample(50, 0, sampler="ancestral", conditions={"gender": "f"}, guidance=0.0),
                               unc, atol=1e-4)
    f = gen.sample(50, 0, sampler="ancestral", conditions={"gender": "f"}, guidance=2.0)
    assert f[:, 0].mean() > unc[:, 0].mean() + 1.0


def test_a_label_column_and_age_bands_are_conditions_too(gen):
    up = gen.sample(300, 1, conditions={"pitch": "up"}, guidance=2.0)
    down = gen.sample(300, 1, conditions={"pitch": "down"}, guidance=2.0)
    assert up[:, 1].mean() - down[:, 1].mean() > 1.5
    # an age in years is its band
    np.testing.assert_array_equal(gen.sample(3, 0, conditions={"age": 27}), gen.sample(3, 0, conditions={"age": "25-34"}))


# ---- what is recorded and refused -----------------------------------------------------------------------

def test_the_generator_file_records_the_trained_attributes_and_values(gen, cond_run, data):
    assert gen.conditions.attributes == ["gender", "age", "pitch"]
    assert gen.conditions.values["gender"] == ["f", "m"]
    assert gen.conditions.values["pitch"] == ["down", "up"]
    present = {age_to_band(a, [25, 35, 50, 65]) for a in data.age}
    # the bands present in the data, in order of age
    assert gen.conditions.values["age"] == [b for b in age_band_names([25, 35, 50, 65]) if b in present]
    # speakers of unknown gender (every fourth) are not counted as a value
    assert sum(gen.conditions.counts["gender"]) == 45
    assert gen.describe()["conditions"]["gender"] == ["f", "m"]
    again = Generator.load(cond_run / "generator.safetensors")
    assert again.fingerprint == gen.fingerprint
    np.testing.assert_array_equal(again.sample(4, 5, conditions={"gender": "m"}),
                                  gen.sample(4, 5, conditions={"gender": "m"}))


def test_unconditional_generators_are_unchanged_by_attributes_in_the_data(uncond_run, tmp_path, data):
    g = Generator.load(uncond_run)
    assert not g.conditions and "conditions" not in g.meta
    bare = EmbeddingSet(data.embeddings, data.speaker_ids, data.profile)
    train(bare, tmp_path / "bare", TrainConfig.from_dict(SHORT), progress=False)
    assert Generator.load(tmp_path / "bare").fingerprint == g.fingerprint


def test_untrained_values_and_attributes_are_refused_naming_what_was_trained(gen, uncond_run):
    with pytest.raises(SpeakEmbError) as ei:
        gen.sample(2, conditions={"gender": "x"})
    assert "gender 'x'" in one_line(ei) and "f, m" in one_line(ei)
    with pytest.raises(SpeakEmbError) as ei:
        gen.sample(2, conditions={"accent": "Scottish"})
    assert "accent" in one_line(ei) and "gender, age, pitch" in one_line(ei)
    with pytest.raises(SpeakEmbError) as ei:
        gen.sample(2, conditions={"age": 70})
    assert "65plus" in one_line(ei)
    with pytest.raises(SpeakEmbError) as ei:
        Generator.load(uncond_run).sample(2, conditions={"gender": "f"})
    assert "without conditions" in one_line(ei)


def test_training_on_an_attribute_the_data_lacks_is_refused_naming_what_it_has(tmp_path, data):
    cfg = TrainConfig.from_dict({**TINY, "model": {**TINY["model"], "conditions": ["accent"]}})
    with pytest.raises(SpeakEmbError) as ei:
        train(data, tmp_path / "r", cfg, progress=False)
    msg = one_line(ei)
    assert "accent" in msg and "gender" in msg and "pitch" in msg
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("d,words", [
    ({"model": {"conditions": ["gender"], "kind": "fc3"}}, ["resmlp"]),
    ({"model": {"conditions": ["gender", "gender"]}}, ["twice"]),
    ({"train": {"p_uncond": 0.0}}, ["p_uncond"]),
    ({"model": {"age_bands": [30, 20]}}, ["age_bands"]),
    ({"sample": {"guidance": -1}}, ["guidance"]),
])
def test_bad_condition_settings_are_refused(d, words):
    with pytest.raises(SpeakEmbError) as ei:
        TrainConfig.from_dict(d)
    assert all(w in one_line(ei) for w in words)


def test_conditions_may_be_given_as_a_comma_separated_override():
    from toucan_speakemb.training.config import apply_overrides

    cfg = TrainConfig.from_dict(apply_overrides({}, ["model.conditions=gender,age", "model.age_bands=[20,40]"]))
    assert cfg.model.conditions == ["gender", "age"] and cfg.model.age_bands == [20.0, 40.0]


def test_age_bands():
    assert age_band_names([25, 35, 50, 65]) == ["under25", "25-34", "35-49", "50-64", "65plus"]
    assert [age_to_band(a, [25, 35]) for a in (18, 25, 34.9, 35, 80)] == ["under25", "25-34", "25-34", "35plus", "35plus"]
    assert age_to_band(float("nan"), [25]) == ""


def test_unknown_values_get_their_own_code_not_the_null_token(data):
    spec = ConditionSpec.fit(data, ["gender"], [25])
    codes = spec.encode_rows(data)[:, 0]
    assert set(codes[np.array(data.gender) == ""]) == {3}
    assert set(codes[np.array(data.gender) == "f"]) == {1} and set(codes[np.array(data.gender) == "m"]) == {2}


# ---- voice banks and the CLI ----------------------------------------------------------------------------

def test_conditional_banks_have_their_own_ids_and_record_the_request(gen):
    plain = VoiceBank.from_generator(gen, 3, 0)
    f = VoiceBank.from_generator(gen, 3, 0, conditions={"gender": "female", "age": 30}, guidance=1.5)
    assert f.provenance["conditions"] == {"gender": "f", "age": "25-34"} and f.provenance["guidance"] == 1.5
    assert not set(plain.ids) & set(f.ids) and all(i.startswith(p + "-") for i, p in zip(f.ids, plain.ids))
    assert VoiceBank.from_generator(gen, 3, 0, conditions={"gender": "f", "age": "25-34"}, guidance=1.5).ids == f.ids
    np.testing.assert_array_equal(f.embeddings, gen.sample(3, 0, conditions={"gender": "f", "age": 30}, guidance=1.5))


def test_cli_samples_conditionally(cond_run, tmp_path):
    r = invoke("sample", "--generator", cond_run, "-n", 50, "--gender", "m", "--condition", "pitch=up",
               "--guidance", 2, "--out", tmp_path / "m.safetensors")
    assert r.exit_code == 0, (r.output, r.exception)
    bank = VoiceBank.load(tmp_path / "m.safetensors")
    assert bank.provenance["conditions"] == {"gender": "m", "pitch": "up"}
    assert bank.embeddings[:, 0].mean() < -0.5 and bank.embeddings[:, 1].mean() > 0.5


def test_cli_refuses_untrained_values_and_attributes_in_one_line(cond_run, uncond_run, tmp_path):
    out = tmp_path / "v.safetensors"
    msg = cli_error(invoke("sample", "--generator", cond_run, "--gender", "x", "--out", out))
    assert "gender 'x'" in msg and "f, m" in msg
    msg = cli_error(invoke("sample", "--generator", cond_run, "--accent", "Irish", "--out", out))
    assert "accent" in msg and "gender, age, pitch" in msg
    msg = cli_error(invoke("sample", "--generator", uncond_run, "--age", "30", "--out", out))
    assert "age" in msg and "without conditions" in msg
    msg = cli_error(invoke("sample", "--generator", cond_run, "--condition", "pitch", "--out", out))
    assert "NAME=VALUE" in msg
    assert not out.exists()


# ---- sliders ---------------------------------------------------------------------------------------------

def test_rotation_towards_a_direction_keeps_length_and_turns_by_the_angle():
    rng = np.random.default_rng(0)
    c, u = rng.normal(size=(5, DIM)), np.eye(DIM)[2]
    for deg in (10, 45):
        r = rotate_towards(c, u, np.deg2rad(deg))
        np.testing.assert_allclose(np.linalg.norm(r, axis=1), np.linalg.norm(c, axis=1))
        cos = np.sum(r * c, 1) / np.linalg.norm(r, axis=1) / np.linalg.norm(c, axis=1)
        np.testing.assert_allclose(cos, np.cos(np.deg2rad(deg)), atol=1e-9)
        turned = (c @ u) / np.linalg.norm(c, axis=1) < 0.9  # not already (almost) along u
        assert np.all((r @ u)[turned] > (c @ u)[turned])


@pytest.mark.parametrize("name,values", [("pc1", [-2, -1, 0, 1, 2]), ("eig1", [-30, -15, 0, 15, 30]),
                                         ("gender:f", [-1, -0.5, 0, 0.5, 1]), ("pitch", [-1, 0, 1])])
def test_sliders_move_their_score_monotonically_and_deterministically(gen, name, values):
    from toucan_speakemb.generate.generator import voice_seeds

    seeds = voice_seeds(3, 200)
    x = gen.sample_seeds(seeds)
    space = gen.slider_space()
    scores = [space.score(gen.standardizer.forward(gen.edit(x, seeds, {name: v})), name).mean() for v in values]
    assert np.all(np.diff(scores) > 0), scores
    np.testing.assert_array_equal(gen.edit(x, seeds, {name: values[-1]}), gen.edit(x, seeds, {name: values[-1]}))


def test_renoise_sliders_come_back_towards_the_data_from_off_the_manifold(gen):
    """Renoise method: a move of one SD along the direction of (almost) no variance (dimensions 2 and 3 differ) is mostly undone
    by re-noise/denoise; along the largest it is mostly kept: the edit stays on the data manifold, not on a
    straight line off it."""
    from toucan_speakemb.generate.generator import voice_seeds

    seeds = voice_seeds(4, 200)
    x = gen.sample_seeds(seeds)
    space = gen.slider_space()
    last = f"pc{DIM}"
    assert space.eigvals[-1] < 0.05 * space.eigvals[0]
    moved = {n: space.score(space.move(gen.standardizer.forward(x), {n: 1}), n).mean()
             - space.score(gen.standardizer.forward(x), n).mean() for n in ("pc1", last)}
    base = {n: space.score(gen.standardizer.forward(gen.edit(x, seeds, {n: 0}, method="renoise")), n).mean()
            for n in ("pc1", last)}
    kept = {n: space.score(gen.standardizer.forward(gen.edit(x, seeds, {n: 1}, method="renoise")), n).mean()
            - base[n] for n in ("pc1", last)}
    assert moved["pc1"] > 0.8 and moved[last] > 0.8  # both moves start the same size
    assert kept["pc1"] > 0.7 and kept[last] < 0.3 * kept["pc1"]


def test_sliders_work_on_unconditional_generators_from_the_run_folders_speakers(uncond_run):
    g = Generator.load(uncond_run)
    space = g.slider_space()
    assert "gender" in space.groups and "pitch" in space.groups
    np.testing.assert_allclose(space.attribute_direction("gender:f"), -space.attribute_direction("gender:m"))
    x = g.sample(100, 0, sliders={"gender:f": 1.0})
    y = g.sample(100, 0, sliders={"gender:f": -1.0})
    assert x[:, 0].mean() - y[:, 0].mean() > 1.0


def test_bad_sliders_are_refused_before_sampling(gen, cond_run, tmp_path):
    assert parse_sliders(["pc1=2", "gender:f=-0.5"]) == {"pc1": 2.0, "gender:f": -0.5}
    for bad, words in [("pc1", "NAME=VALUE"), ("pc1=much", "not a number")]:
        with pytest.raises(SpeakEmbError) as ei:
            parse_sliders([bad])
        assert words in one_line(ei)
    for bad, words in [({"pc99": 1}, "1..6"), ({"gender:x": 1}, "f, m"), ({"loudness": 1}, "gender, age, pitch"),
                       ({"age": 1}, "name one")]:
        with pytest.raises(SpeakEmbError) as ei:
            gen.sample(2, sliders=bad)
        assert words in one_line(ei), one_line(ei)
    msg = cli_error(invoke("sample", "--generator", cond_run, "--slider", "pc0=1", "--out", tmp_path / "v.safetensors"))
    assert "pc0" in msg


def test_cli_sliders_write_a_bank_with_the_edit_recorded(cond_run, gen, tmp_path):
    sliders = {"pc1": 1.5, "gender:m": 0.5}
    r = invoke("sample", "--generator", cond_run, "-n", 20, "--seed", 4, "--slider", "pc1=1.5", "--slider",
               "gender:m=0.5", "--out", tmp_path / "latent.safetensors")
    assert r.exit_code == 0, (r.output, r.exception)
    bank = VoiceBank.load(tmp_path / "latent.safetensors")
    assert bank.provenance["sliders"] == sliders and bank.provenance["slider_method"] == "latent"
    assert "slider_strength" not in bank.provenance
    np.testing.assert_allclose(bank.embeddings, gen.sample(20, 4, sliders=sliders), atol=1e-6)

    r = invoke("sample", "--generator", cond_run, "-n", 20, "--seed", 4, "--slider", "pc1=1.5", "--slider",
               "gender:m=0.5", "--slider-method", "renoise", "--slider-strength", 0.4, "--out", tmp_path / "s.safetensors")
    assert r.exit_code == 0, (r.output, r.exception)
    renoised = VoiceBank.load(tmp_path / "s.safetensors")
    assert renoised.provenance["slider_method"] == "renoise" and renoised.provenance["slider_strength"] == 0.4
    np.testing.assert_allclose(renoised.embeddings, gen.sample(20, 4, sliders=sliders, slider_method="renoise",
                                                               slider_strength=0.4), atol=1e-6)
    assert renoised.ids != bank.ids  # a different edit is a different variant of the voices
    assert not np.allclose(renoised.embeddings, bank.embeddings, atol=1e-3)


def test_a_slider_strength_without_the_renoise_method_is_refused_before_anything_is_written(cond_run, gen, tmp_path):
    msg = cli_error(invoke("sample", "--generator", cond_run, "-n", 5, "--slider", "pc1=1", "--slider-strength", 0.4,
                           "--out", tmp_path / "s.safetensors"))
    assert "renoise" in msg and not (tmp_path / "s.safetensors").exists()
    with pytest.raises(SpeakEmbError) as ei:
        gen.sample(5, sliders={"pc1": 1}, slider_method="sideways")
    assert "sideways" in one_line(ei)


def test_slider_settings_are_checked_before_any_sampling(gen, monkeypatch):
    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before the settings were checked")

    for loop in ("ddim_sample_loop", "p_sample_loop"):
        monkeypatch.setattr(gen.diffusion, loop, no_sampling)
    for kwargs in ({"slider_strength": 0.4}, {"slider_method": "sideways"}):
        with pytest.raises(SpeakEmbError):
            gen.sample(5, sliders={"pc1": 1.0}, **kwargs)
        with pytest.raises(SpeakEmbError):
            VoiceBank.from_generator(gen, 5, 0, sliders={"pc1": 1.0}, **kwargs)


def test_editing_voices_of_another_dimension_is_one_line(gen):
    with pytest.raises(SpeakEmbError) as ei:
        gen.edit(np.zeros((3, DIM + 1), np.float32), [1, 2, 3], {"pc1": 1.0})
    assert f"{DIM}-dim" in one_line(ei) and "(3, 7)" in one_line(ei)


def test_known_noise_needs_its_steps_and_steps_must_exist(gen):
    seeds = voice_seeds(2, 5)
    x = gen.sample_seeds(seeds)
    with pytest.raises(SpeakEmbError) as ei:
        gen.edit(x, seeds, {"pc1": 1.0}, latents=gen.initial_noise(seeds))
    assert "steps" in one_line(ei)
    with pytest.raises(SpeakEmbError) as ei:
        gen.edit(x, seeds, {"pc1": 1.0}, steps=10**6)
    assert "1..100" in one_line(ei)


def test_latent_sliders_refuse_voices_the_inversion_cannot_reproduce(tmp_path, data):
    """ε-prediction on the cosine schedule: at t = T-1, ᾱ ≈ 2e-9, and the first decoding step divides every error
    of the inversion by √ᾱ. Ancestral voices would come back as noise; they are refused in one line naming the
    way out, which works, as do the DDIM voices whose noise is known."""
    cfg = TrainConfig.from_dict({**SHORT, "diffusion": {"timesteps": 1000, "schedule": "cosine", "prediction": "eps"},
                                 "model": {"kind": "fc3", "hidden": 32, "gaussian_residual": False},
                                 "sample": {"sampler": "ancestral", "steps": 20, "batch_size": 512}})
    g = Generator.load(train(data, tmp_path / "eps", cfg, progress=False))
    with pytest.raises(SpeakEmbError) as ei:
        g.sample(20, 0, sliders={"pc1": 1.0})
    assert "renoise" in one_line(ei)
    x = g.sample(20, 0)
    renoised = g.sample(20, 0, sliders={"pc1": 1.0}, slider_method="renoise")
    assert np.isfinite(renoised).all() and np.abs(renoised - x).mean() < 2 * x.std(0).mean()
    np.testing.assert_allclose(g.sample(20, 0, sampler="ddim", sliders={"pc1": 0.0}), g.sample(20, 0, sampler="ddim"),
                               atol=1e-5)


def test_latent_sliders_of_a_model_without_a_gaussian_part_stay_the_size_of_the_move(tmp_path):
    """Fewer speakers than dimensions: the speakers do not vary along most directions, and whitening by their
    covariance alone would blow a rotation's small move along those up into a huge move of the noise."""
    rng = np.random.default_rng(0)
    dim, n = 24, 12
    x = rng.normal(size=(n, dim))
    es = EmbeddingSet((np.repeat(x, 2, 0) + 0.1 * rng.normal(size=(2 * n, dim))).astype(np.float32),
                      [f"s{i}" for i in range(n) for _ in range(2)], get_profile("custom-few", dim))
    cfg = TrainConfig.from_dict({**SHORT, "model": {**SHORT["model"], "gaussian_residual": False},
                                 "train": {**SHORT["train"], "validation_share": 0.0}})
    g = Generator.load(train(es, tmp_path / "few", cfg, progress=False))
    space = g.slider_space()
    assert space.eigvals[n:].max() < 1e-6 * space.eigvals[0]  # the speakers span fewer than dim directions
    voices = g.sample(40, 0)
    z = g.standardizer.forward(voices).astype(np.float64)
    straight = np.abs(g.standardizer.inverse(space.move(z, {"eig1": 30.0}).astype(np.float32)) - voices).mean()
    edited = np.abs(g.sample(40, 0, sliders={"eig1": 30.0}) - voices).mean()
    assert 0 < edited < 2 * straight, (edited, straight)


def zero_network(g: Generator) -> Generator:
    """The generator with its network's (zero-initialised) output layer zeroed again: the Gaussian fit alone."""
    with torch.no_grad():
        g.model.net.out.weight.zero_()
        g.model.net.out.bias.zero_()
    return g


@pytest.mark.parametrize("name,value", [("pc1", 1.5), ("gender:f", -0.7), ("eig2", 25.0)])
def test_latent_sliders_of_a_gaussian_model_are_exactly_the_move(uncond_run, name, value):
    """The move made in the noise is carried by the Gaussian's probability flow to exactly the move of the voice,
    whether the noise is known (deterministic DDIM) or found by DDIM inversion (ancestral voices)."""
    g = zero_network(Generator.load(uncond_run))
    space = g.slider_space()
    seeds = voice_seeds(5, 40)
    for sampler in ("ddim", "ancestral"):
        x = g.sample_seeds(seeds, sampler=sampler)
        want = g.standardizer.inverse(space.move(g.standardizer.forward(x), {name: value}).astype(np.float32))
        got = g.sample(40, 5, sliders={name: value}, sampler=sampler)
        np.testing.assert_allclose(got, want, atol=2e-4)
        assert np.abs(got - x).max() > 0.1  # the move is not nothing


def test_latent_sliders_at_zero_give_the_voice_itself_and_otherwise_a_sample_decoded_from_moved_noise(gen):
    x = gen.sample(60, 3, conditions={"gender": "f"})
    np.testing.assert_allclose(gen.sample(60, 3, conditions={"gender": "f"}, sliders={"pc1": 0.0}), x, atol=1e-5)
    moved = gen.sample(60, 3, conditions={"gender": "f"}, sliders={"pc1": 1.0})
    seeds = voice_seeds(3, 60)
    space = gen.slider_space()
    z = gen.standardizer.forward(x).astype(np.float64)
    noise = (gen.initial_noise(seeds) * gen.temperature).double().numpy() + latent_move(
        space.move(z, {"pc1": 1.0}) - z, gen.model.eigvecs.double().numpy(), gen.model.eigvals.double().numpy(),
        float(gen.diffusion.alphas_cumprod[gen.diffusion.ddim_timesteps(100, gen.cfg.sample.steps)[0]]))
    np.testing.assert_allclose(moved, gen.standardizer.inverse(gen.decode(noise, conditions={"gender": "f"})),
                               atol=1e-5)


def test_latent_sliders_on_voices_from_elsewhere_invert_them_first(gen):
    """Ancestral voices have no DDIM noise: it is found by inversion (its convergence: tests/diffusion/test_transforms.py);
    what the round trip misses is kept, so value 0 gives the voice back, and a move moves it."""
    seeds = voice_seeds(8, 100)
    x = gen.sample_seeds(seeds, sampler="ancestral")
    np.testing.assert_allclose(gen.edit(x, seeds, {"pc1": 0.0}), x, atol=1e-5)  # what it misses is kept
    space = gen.slider_space()
    moved = space.score(gen.standardizer.forward(gen.edit(x, seeds, {"pc1": 1.0})), "pc1")
    assert 0.7 < float(np.mean(moved - space.score(gen.standardizer.forward(x), "pc1"))) < 1.2


# ---- data with attributes -------------------------------------------------------------------------------

def test_label_columns_survive_files_and_speaker_means(tmp_path, data):
    for name in ("l.safetensors", "l.npz"):
        back = EmbeddingSet.load(data.save(tmp_path / name), profile="custom-attr")
        assert back.labels == data.labels
    means = data.speaker_means()
    assert means.labels["pitch"] == data.labels["pitch"][::2]
    with pytest.raises(SpeakEmbError) as ei:
        EmbeddingSet(data.embeddings, data.speaker_ids, data.profile, labels={"gender": ["f"] * len(data)})
    assert "gender" in one_line(ei)


def test_synthetic_attributes_leave_the_embeddings_alone_and_are_samplable():
    pop = SyntheticPopulation(dim=16, latent_dim=4, hidden=16, clusters=3)
    plain, labelled = pop.make_set(40, 2, seed=5), pop.make_set(40, 2, seed=5, attributes=True)
    np.testing.assert_array_equal(plain.embeddings, labelled.embeddings)
    assert plain.gender is None and set(labelled.gender) == {"f", "m"} and set(labelled.accent) <= {"c0", "c1", "c2"}
    z, k = pop.sample_latent_and_cluster(2000, np.random.default_rng(1))
    f = np.array(pop.attributes(z, k)["gender"]) == "f"
    assert 0.2 < f.mean() < 0.8
    only_f = pop.sample_speakers_with(50, np.random.default_rng(2), "gender", "f")
    assert only_f.shape == (50, 16)


def test_a_resumed_conditional_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, data):
    cfg = TrainConfig.from_dict({**TINY, "model": {**TINY["model"], "conditions": ["gender", "pitch"]},
                                 "train": {**TINY["train"], "steps": 20, "checkpoint_every": 10}})
    train(data, tmp_path / "whole", cfg, progress=False)
    train(data, tmp_path / "parts", cfg, progress=False, max_steps=10)
    train(data, tmp_path / "parts", cfg, progress=False)
    assert Generator.load(tmp_path / "parts").fingerprint == Generator.load(tmp_path / "whole").fingerprint


# ---- conditions with the polar transform, a principal subspace and model selection ----------------------

def test_validation_loss_of_a_conditional_model_uses_the_rows_codes():
    from toucan_speakemb.training.trainer import validation_loss

    model = random_conditional_net(True)
    diffusion = build_diffusion(TrainConfig.from_dict({"diffusion": {"timesteps": 50}}))
    rows = np.random.default_rng(0).normal(size=(30, DIM)).astype(np.float32)
    codes = np.tile([[2, 1]], (30, 1))
    plain = validation_loss(diffusion, model, rows, seed=1)
    # the null token is the unconditional model; real codes change the score
    assert validation_loss(diffusion, model, rows, seed=1, codes=np.zeros_like(codes)) == pytest.approx(plain, rel=1e-6)
    assert validation_loss(diffusion, model, rows, seed=1, codes=codes) != pytest.approx(plain, rel=1e-3)


def test_a_conditional_runs_validation_scores_its_validation_rows_with_their_codes(cond_run, data):
    """Step 0 of model selection is the Gaussian fit with its per-condition means: its recorded score is the
    validation loss of that model on the validation rows with their condition codes."""
    from toucan_speakemb.training.trainer import build_model, prepare_data, validation_loss

    cfg = TrainConfig.from_dict({**TINY, "model": {**TINY["model"], "conditions": ["gender", "age", "pitch"]}})
    prepared, _ = prepare_data(data, cfg)
    assert prepared.validation is not None and prepared.validation_codes.any()
    model = build_model(cfg, prepared.standardizer.model_dim, prepared.spec)
    model.fit_gaussian(torch.from_numpy(prepared.rows))
    model.fit_condition_offsets(torch.from_numpy(prepared.rows), torch.from_numpy(prepared.codes))
    step0 = (cond_run / "validation.csv").read_text().splitlines()[1].split(",")
    expected = validation_loss(build_diffusion(cfg), model, prepared.validation_rows, cfg.seed,
                               codes=prepared.validation_codes)
    assert int(step0[0]) == 0 and float(step0[1]) == pytest.approx(expected, rel=1e-4)
    assert float(step0[1]) != pytest.approx(validation_loss(build_diffusion(cfg), model, prepared.validation_rows,
                                                            cfg.seed), rel=1e-4)


def test_conditions_and_sliders_work_with_the_polar_transform_and_a_principal_subspace(tmp_path, data):
    """Fixed-length vectors: the model space has one dimension more (direction and length); conditional
    sampling, guidance and the sliders (noise moves, decoding) all run in that space and give data-space voices."""
    unit = data.embeddings / np.linalg.norm(data.embeddings, axis=1, keepdims=True)
    es = EmbeddingSet(unit.astype(np.float32), data.speaker_ids, data.profile, gender=data.gender)
    cfg = TrainConfig.from_dict({**SHORT, "model": {**SHORT["model"], "conditions": ["gender"],
                                                    "subspace": "fixed", "subspace_dims": 4},
                                 "normalization": {"polar": "auto"}})
    g = Generator.load(train(es, tmp_path / "polar", cfg, progress=False))
    assert g.standardizer.model_dim == g.model_dim == DIM + 1 and g.model.subspace == 4
    assert g.condition_means["gender"].shape == (2, DIM + 1)
    f, m = (g.sample(300, 0, conditions={"gender": v}) for v in ("f", "m"))
    assert f.shape == (300, DIM)
    train_lengths = np.linalg.norm(es.speaker_means().embeddings, axis=1)  # speaker means: slightly under 1
    lengths = np.linalg.norm(f, axis=1)
    assert train_lengths.min() - 1e-4 <= lengths.min() and lengths.max() <= train_lengths.max() + 1e-4
    assert f[:, 0].mean() > m[:, 0].mean()  # dimension 0 carries gender
    moved = g.sample(50, 0, sliders={"gender:f": 1.0, "pc1": 1.0}, conditions={"gender": "m"})
    assert moved.shape == (50, DIM) and np.isfinite(moved).all()
    np.testing.assert_array_equal(moved, g.sample(50, 0, sliders={"gender:f": 1.0, "pc1": 1.0},
                                                  conditions={"gender": "m"}))

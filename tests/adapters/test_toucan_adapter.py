"""Specification of the Toucan adapter, the inference hook, new-and-distinct voice sampling, the voice bank
and `synth`, against stand-ins of Toucan's interfaces (tests/toucan_standin.py: the names and signatures of
v2.2 InferenceFastSpeech2 and v3.1.2 ToucanTTSInterface). The real Toucan classes are exercised by
tests/adapters/test_toucan_integration.py when a checkout is given.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch

import toucan_standin as standin
from conftest import TINY, assert_one_error_line, clustered_set, one_line, train_tiny
from toucan_speakemb import EmbeddingSet, SpeakEmbError
from toucan_speakemb.adapters import ToucanAdapter, ToucanModels, random_voices
from toucan_speakemb.adapters.releases import release_of_checkout, releases
from toucan_speakemb.adapters.synthesis import Synthesis, seeded, utterance_seed
from toucan_speakemb.training.config import TrainConfig
from toucan_speakemb.evaluation.metrics import same_speaker_threshold
from toucan_speakemb.generate.generator import Generator
from toucan_speakemb.voices.novelty import VoiceSampler, resolve_rule
from toucan_speakemb.training.trainer import train
from toucan_speakemb.voices.bank import VoiceBank

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def es_v3(tiny_embeddings):
    return tiny_embeddings


@pytest.fixture(scope="module")
def gen_v3(tiny_generator):
    return tiny_generator


@pytest.fixture(scope="module")
def gen_v22(tiny_generator_v22):
    return tiny_generator_v22


@pytest.fixture
def v3(tmp_path):
    tts = standin.make_checkpoint(tmp_path / "ToucanTTS.pt", 192, config=True)
    voc = standin.make_vocoder(tmp_path / "Vocoder.pt", v22=False)
    return standin.ToucanTTSInterface(tts_model_path=str(tts), vocoder_model_path=str(voc))


@pytest.fixture
def v22(tmp_path, monkeypatch):
    standin.make_checkpoint(tmp_path / "Models" / "FastSpeech2_Meta" / "best.pt", 704)
    standin.make_vocoder(tmp_path / "Models" / "HiFiGAN_combined" / "best.pt", v22=True)
    monkeypatch.chdir(tmp_path)  # v2.2 reads Models/... from the working folder
    return standin.InferenceFastSpeech2()


@pytest.fixture
def v22_noisy(tmp_path, monkeypatch):
    """A v2.2 interface built with noise_reduce=True."""
    standin.make_checkpoint(tmp_path / "Models" / "FastSpeech2_Meta" / "best.pt", 704)
    standin.make_vocoder(tmp_path / "Models" / "HiFiGAN_combined" / "best.pt", v22=True)
    monkeypatch.chdir(tmp_path)
    return standin.InferenceFastSpeech2(noise_reduce=True)


def cos_to(x, rows):
    x = x / np.linalg.norm(x)
    r = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return r @ x


# ---- the generator carries what novelty checks need ------------------------------------------------------

def test_generator_stores_the_utterance_level_same_speaker_threshold_and_its_training_speakers(gen_v3, es_v3):
    thr, eer = same_speaker_threshold(es_v3.embeddings, np.asarray(es_v3.speaker_ids))
    assert gen_v3.same_speaker_threshold == pytest.approx(thr)
    rec = gen_v3.meta["same_speaker_threshold"]
    assert rec["level"] == "utterance" and rec["eer"] == pytest.approx(eer)
    means, ids = gen_v3.training_speakers()
    assert means.shape == (40, 192) and ids == es_v3.speakers
    np.testing.assert_allclose(means, es_v3.speaker_means().embeddings, rtol=1e-6)
    summary = json.loads((gen_v3.path.parent / "summary.json").read_text())
    assert summary["same_speaker_threshold"]["value"] == pytest.approx(thr)


def test_without_repeated_speakers_there_is_no_same_speaker_threshold_and_that_rule_asks_for_one(tmp_path):
    gen = train_tiny(clustered_set("toucan-v3", 20, 1), tmp_path / "run")
    assert gen.same_speaker_threshold is None
    assert "single embedding" in gen.meta["same_speaker_threshold"]["reason"]
    with pytest.raises(SpeakEmbError) as e:
        VoiceSampler(gen, seed=0, threshold="same-speaker")
    assert "--threshold" in one_line(e) and "single embedding" in str(e.value)
    # the default rule needs speakers, not repeated utterances
    assert resolve_rule(gen, None) == (gen.meta["unseen_speaker_threshold"]["value"], "unseen:0.9")
    v = VoiceSampler(gen, seed=0, threshold=0.9).next()
    assert v.threshold == 0.9 and v.is_new


# ---- new and distinct voices ----------------------------------------------------------------------------

def test_sampled_voices_are_new_and_distinct_under_the_threshold(gen_v3):
    # a threshold that rejects part of the candidates, so the check has something to do
    probe = gen_v3.sample(200, seed=3)
    means, _ = gen_v3.training_speakers()
    nearest = np.array([cos_to(p, means).max() for p in probe])
    thr = float(np.quantile(nearest, 0.5))
    s = VoiceSampler(gen_v3, seed=11, threshold=thr)
    vs = s.take(12)
    assert s.rejected["training speaker"] > 0
    X = np.stack([v.embedding for v in vs])
    for i, v in enumerate(vs):
        assert cos_to(v.embedding, means).max() <= thr + 1e-9
        others = np.delete(X, i, axis=0)
        assert cos_to(v.embedding, others).max() <= thr + 1e-9
        assert v.nearest_training_cosine == pytest.approx(cos_to(v.embedding, means).max(), abs=1e-6)


def test_which_voices_are_accepted_does_not_depend_on_the_sampling_block(gen_v3):
    a = VoiceSampler(gen_v3, seed=5, threshold=0.3, block=1)
    ids = [v.id for v in a.take(4)]
    assert a.rejected["training speaker"] + a.rejected["other voice"] > 0  # the order of checks matters here
    assert ids == [v.id for v in VoiceSampler(gen_v3, seed=5, threshold=0.3, block=64).take(4)]
    assert ids != [v.id for v in VoiceSampler(gen_v3, seed=6, threshold=0.3).take(4)]


def test_an_unreachable_threshold_is_a_clear_error_not_an_endless_loop(gen_v3):
    with pytest.raises(SpeakEmbError) as e:
        VoiceSampler(gen_v3, seed=0, threshold=-1.0, max_draws=30).next()
    assert "higher --threshold" in one_line(e) and "30 candidates" in str(e.value)


def test_a_voice_is_remade_from_its_id_and_a_foreign_id_is_refused(gen_v3, gen_v22):
    v = VoiceSampler(gen_v3, seed=2).next()
    again = VoiceSampler(gen_v3).remake(v.id)
    assert again.seed == v.seed
    np.testing.assert_allclose(again.embedding, v.embedding, atol=1e-4)
    with pytest.raises(SpeakEmbError) as e:
        VoiceSampler(gen_v22).remake(v.id)
    assert gen_v3.fingerprint[:8] in one_line(e) and gen_v22.fingerprint[:8] in str(e.value)
    with pytest.raises(SpeakEmbError):
        VoiceSampler(gen_v3).remake("nonsense")


# ---- the adapter ----------------------------------------------------------------------------------------------

def test_the_interface_kind_and_space_are_detected_not_configured(v3, v22):
    a3, a22 = ToucanAdapter(v3), ToucanAdapter(v22)
    # the stand-ins mirror the signatures of v3.1.2 and v2.2
    assert (a3.release.name, a3.family, a3.dim, a3.profile.name) == ("v3.1.2", "v3", 192, "toucan-v3")
    assert (a22.release.name, a22.family, a22.dim, a22.profile.name) == ("v2.2", "v2", 704, "toucan-v2.2")


def test_a_checkpoint_of_another_space_or_a_non_interface_is_refused(v3, tmp_path):
    with pytest.raises(SpeakEmbError) as e:
        ToucanAdapter(v3, standin.make_checkpoint(tmp_path / "x.pt", 64))
    assert "64" in one_line(e)
    with pytest.raises(SpeakEmbError) as e:
        ToucanAdapter(torch.nn.Linear(2, 2))
    assert "not a Toucan inference interface" in one_line(e)


def test_a_generator_of_another_profile_is_refused_with_both_named(v3, gen_v22, gen_v3):
    a = ToucanAdapter(v3)
    a.check_generator(gen_v3)
    with pytest.raises(SpeakEmbError) as e:
        a.check_generator(gen_v22)
    msg = one_line(e)
    assert "toucan-v2.2" in msg and "704" in msg and "toucan-v3" in msg and "192" in msg


@pytest.mark.parametrize("which", ["v3", "v22"])
def test_the_embedding_reaches_the_model_for_the_next_utterance_and_the_old_one_comes_back(which, request):
    it = request.getfixturevalue(which)
    a = ToucanAdapter(it)
    before = it.default_utterance_embedding
    e = np.linspace(-1, 1, a.dim).astype(np.float32)
    with a.voice(e):
        wave, sr = a.synthesize("hello")
    assert torch.equal(it.used_embeddings[-1], torch.from_numpy(e))
    assert it.default_utterance_embedding is before
    assert sr == (24000 if which == "v3" else 48000) and wave.dtype == np.float32 and len(wave) > 0
    with pytest.raises(RuntimeError):
        with a.voice(-e):
            raise RuntimeError("synthesis failed")
    assert it.default_utterance_embedding is before


@pytest.mark.parametrize("which", ["v3", "v22"])
def test_outputs_differ_between_voices_and_are_equal_for_equal_voices(which, request):
    a = ToucanAdapter(request.getfixturevalue(which))
    rng = np.random.default_rng(0)
    e1, e2 = rng.normal(size=(2, a.dim))
    with seeded(0), a.voice(e1):  # v3.x samples at inference: equal voices give equal audio under one seed
        w1, _ = a.synthesize("same words")
    with seeded(0), a.voice(e2):
        w2, _ = a.synthesize("same words")
    with seeded(0), a.voice(e1.copy()):
        w1b, _ = a.synthesize("same words")
    assert np.array_equal(w1, w1b)
    assert np.abs(w1 - w2).max() > 1e-3


def test_wrong_width_or_non_finite_embeddings_are_refused(v3):
    a = ToucanAdapter(v3)
    with pytest.raises(SpeakEmbError) as e:
        a.inject(np.zeros(704))
    assert "704" in one_line(e) and "192" in str(e.value)
    with pytest.raises(SpeakEmbError):
        a.inject(np.full(192, np.nan))


def test_v22_noise_reduction_profile_follows_the_voice_and_comes_back(v22_noisy):
    it = v22_noisy
    a = ToucanAdapter(it)
    noise0, updates0 = it.prototypical_noise, it.noise_profile_updates
    with a.voice(np.ones(704)):
        assert it.noise_profile_updates == updates0 + 1
        assert not np.array_equal(it.prototypical_noise, noise0)
    assert it.prototypical_noise is noise0


def test_v22_noise_profile_is_made_once_per_voice(v22_noisy):
    """Toucan's noise profile synthesises 200 pause symbols in the voice: the adapter makes it once per voice."""
    it = v22_noisy
    a = ToucanAdapter(it)
    e1, e2 = np.ones(704), -np.ones(704)
    start = it.noise_profile_updates
    for e in (e1, e1, e2, e1, e2):
        with a.voice(e):
            a.synthesize("hello")
    assert it.noise_profile_updates == start + 2
    with a.voice(e1):
        first = it.prototypical_noise
    with a.voice(e2):
        assert not np.array_equal(it.prototypical_noise, first)


def test_v3_outputs_of_every_return_form_give_the_wave_and_its_rate(v3):
    a = ToucanAdapter(v3)
    e = np.linspace(-1, 1, 192)
    forms = {}
    for kw in ({}, {"return_everything": True}, {"return_plot_as_filepath": True}):
        with seeded(1), a.voice(e):
            forms[str(kw)] = a.synthesize("hello", **kw)
    waves = [w for w, _ in forms.values()]
    assert {sr for _, sr in forms.values()} == {24000}
    assert all(np.array_equal(waves[0], w) for w in waves[1:])


# ---- releases: recognised from the source, models where each release's downloader puts them ------------------

V2_INIT = 'def __init__(self, device="cpu", model_name="Meta", language="en"{extra}): pass'
V3_INIT = 'def __init__(self, device="cpu", tts_model_path={tts}, vocoder_model_path={tts}, language="eng"): pass'
# the distinguishing signatures and lines of each release's interface (written for this test, after the real ones)
RELEASE_SOURCES = {
    "v2.0": ("InferenceFastSpeech2", V2_INIT.format(extra=""),
             "def forward(self, text, view=False, durations=None, pitch=None, energy=None): pass", None),
    "v2.1": ("InferenceFastSpeech2", V2_INIT.format(extra=", noise_reduce=False"),
             "def forward(self, text, view=False, durations=None, input_is_phones=False): pass", None),
    "v2.2": ("InferenceFastSpeech2", V2_INIT.format(extra=", noise_reduce=False"),
             "def forward(self, text, view=False, duration_scaling_factor=1.0, input_is_phones=False): pass", None),
    "v3.0": ("ToucanTTSInterface", V3_INIT.format(tts='os.path.join("Models", "x")'),
             "def forward(self, text, glow_sampling_temperature=0.2):\n        wave, _, _ = self.vocoder(text)",
             "Architectures"),
    "v3.1": ("ToucanTTSInterface", V3_INIT.format(tts='os.path.join("Models", "x")'),
             "def forward(self, text, prosody_creativity=0.1):\n        wave, _, _ = self.vocoder(text)", "Modules"),
    "v3.1.1": ("ToucanTTSInterface", V3_INIT.format(tts='os.path.join("Models", "x")'),
               "def forward(self, text, prosody_creativity=0.1):\n        wave = self.vocoder(text)", "Modules"),
    "v3.1.2": ("ToucanTTSInterface", V3_INIT.format(tts="None"),
               "def forward(self, text, prosody_creativity=0.1, return_everything=False):\n"
               "        wave = self.vocoder(text)", "Modules"),
}


def fake_checkout(root, name):
    cls, init, forward, classes = RELEASE_SOURCES[name]
    (root / "InferenceInterfaces").mkdir(parents=True)
    (root / "InferenceInterfaces" / f"{cls}.py").write_text(
        f"import os\n\n\nclass {cls}:\n    {init}\n\n    {forward}\n")
    if classes:
        (root / classes).mkdir()
    return root


@pytest.mark.parametrize("name", list(RELEASE_SOURCES))
def test_each_release_is_recognised_from_its_interface_source(name, tmp_path):
    assert release_of_checkout(fake_checkout(tmp_path / name, name)).name == name


def test_every_registered_release_is_specified_here():
    assert sorted(r.name for r in releases()) == sorted(RELEASE_SOURCES)


@pytest.mark.parametrize("marker,words", [
    ("InferenceInterfaces/FastSpeech2Interface.py", "v2.3"),
    ("InferenceInterfaces/PortaSpeechInterface.py", "v2.4"),
    ("InferenceInterfaces/InferenceArchitectures/InferenceToucanTTS.py", "v2.5")])
def test_a_release_of_another_space_is_refused_with_its_real_reason(marker, words, tmp_path):
    (tmp_path / marker).parent.mkdir(parents=True)
    (tmp_path / marker).write_text("")
    with pytest.raises(SpeakEmbError) as e:
        release_of_checkout(tmp_path)
    assert words in one_line(e) and "style embedding" in str(e.value) and "v3.1.2" in str(e.value)


def test_v30_is_refused_under_numpy_2_with_the_reason_before_anything_else(tmp_path, monkeypatch):
    root = fake_checkout(tmp_path / "t", "v3.0")
    monkeypatch.setattr(np, "__version__", "2.1.0")
    with pytest.raises(SpeakEmbError) as e:
        ToucanModels(root)
    assert "NumPy >= 2" in one_line(e) and "numpy<2" in str(e.value) and "v3.1" in str(e.value)
    monkeypatch.setattr(np, "__version__", "1.26.4")
    with pytest.raises(SpeakEmbError) as e:  # then the next check: the model files
        ToucanModels(root)
    assert "no TTS model" in one_line(e)


def test_v31_models_are_found_where_its_downloader_puts_them(tmp_path):
    root = fake_checkout(tmp_path / "t", "v3.1")
    with pytest.raises(SpeakEmbError) as e:
        ToucanModels(root)
    assert "Models/ToucanTTS_Meta/best.pt" in one_line(e) and "run_model_downloader.py" in str(e.value)
    standin.make_checkpoint(root / "Models" / "ToucanTTS_Meta" / "best.pt", 192, config=True)
    standin.make_vocoder(root / "Models" / "Vocoder" / "best.pt", v22=False)
    m = ToucanModels(root)
    assert m.describe()["release"] == "v3.1" and m.tts == root / "Models" / "ToucanTTS_Meta" / "best.pt"


# ---- same seed, same audio ------------------------------------------------------------------------------------

def test_utterances_are_seeded_from_the_voice_and_the_text_and_the_callers_randomness_comes_back(v3, gen_v3):
    synthesis = Synthesis(ToucanAdapter(v3), gen_v3)
    v1, v2 = VoiceSampler(gen_v3, seed=0).take(2)
    a = ToucanAdapter(v3)
    with a.voice(v1.embedding):  # unseeded, the v3 stand-in (like Toucan v3) gives other audio each time
        assert not np.array_equal(a.synthesize("words")[0], a.synthesize("words")[0])
    torch.manual_seed(123)
    before = torch.get_rng_state()
    waves = {}
    for key, v, text in (("a", v1, "words"), ("again", v1, "words"), ("other text", v1, "other"),
                         ("other voice", v2, "words")):
        with synthesis.conditioned(v, text) as seed:
            waves[key] = a.synthesize(text)[0]
        assert seed == utterance_seed(v.id, text)
    assert torch.equal(torch.get_rng_state(), before)
    assert np.array_equal(waves["a"], waves["again"])
    assert utterance_seed(v1.id, "words") not in (utterance_seed(v1.id, "other"), utterance_seed(v2.id, "words"))


def test_synth_twice_with_one_seed_writes_the_same_bytes(run_cli, gen_v3, v3_checkout, tmp_path):
    for run in ("a", "b"):
        r = run_cli("synth", "Hello there.", "Again.", "--random-speaker", "--seed", "8", "--generator", gen_v3.path,
                    *v3_checkout, "-o", tmp_path / run / "u.wav", "--no-progress")
        assert r.returncode == 0, r.stderr[-3000:]
    for name in ("u_001", "u_002"):
        assert (tmp_path / "a" / f"{name}.wav").read_bytes() == (tmp_path / "b" / f"{name}.wav").read_bytes()
        car = json.loads((tmp_path / "a" / f"{name}.json").read_text())
        assert car["synthesis_seed"] == utterance_seed(car["voice_id"], car["text"]) and "sha256" in car["seeding"]
        assert car["toucan"]["release"] == "v3.1.2" and car["toucan"]["device"] == "cpu"  # auto, without CUDA


def test_hook_blocks_with_one_seed_give_the_same_audio(v3, gen_v3, tmp_path):
    for run in ("a", "b"):
        with random_voices(v3, gen_v3, seed=2) as voices:
            v3.read_to_file(["one", "two"], str(tmp_path / f"{run}.wav"))
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    rec = voices.records[0]
    assert rec["synthesis_seed"] == utterance_seed(rec["voice_id"], "one\ntwo")


def test_hook_refuses_noise_reduce_with_the_reason(v22_noisy, gen_v22):
    it = v22_noisy
    with pytest.raises(SpeakEmbError) as e:
        with random_voices(it, gen_v22, seed=1):
            pass
    assert "noise_reduce" in one_line(e) and "new voice" in str(e.value)
    assert "forward" not in it.__dict__


# ---- the hook -------------------------------------------------------------------------------------------------

def test_hook_gives_every_call_a_fresh_voice_and_records_it(v3, gen_v3, tmp_path):
    before = v3.default_utterance_embedding
    with random_voices(v3, gen_v3, seed=4) as voices:
        v3("first")
        v3.forward("second")
        v3.read_to_file(["third", "fourth"], str(tmp_path / "x.wav"))
    assert [r["call"] for r in voices.records] == ["forward", "forward", "read_to_file"]
    ids = [r["voice_id"] for r in voices.records]
    assert len(set(ids)) == 3
    used = v3.used_embeddings
    assert len(used) == 4
    for rec, emb in zip(voices.voices, used[:2]):
        np.testing.assert_array_equal(emb.numpy(), rec.embedding)
    # both sentences of one read_to_file call share its voice
    assert torch.equal(used[2], used[3])
    np.testing.assert_array_equal(used[2].numpy(), voices.voices[2].embedding)
    assert voices.records[2]["texts"] == ["third", "fourth"] and voices.records[2]["file"].endswith("x.wav")
    assert all(r["new"] and r["distinct"] for r in voices.records)
    # afterwards the interface is as before
    assert "forward" not in v3.__dict__ and "read_to_file" not in v3.__dict__
    assert v3.default_utterance_embedding is before
    log = json.loads(voices.save(tmp_path / "voices.json").read_text())
    assert log["sampling"]["draw_seed"] == 4 and [c["voice_id"] for c in log["calls"]] == ids


def test_hook_voices_are_reproducible_by_seed(v3, gen_v3):
    runs = []
    for _ in range(2):
        with random_voices(v3, gen_v3, seed=9) as voices:
            v3("a")
            v3("b")
        runs.append([r["voice_id"] for r in voices.records])
    assert runs[0] == runs[1]


def test_hook_refuses_a_generator_of_another_space_before_touching_the_interface(v22, gen_v3):
    with pytest.raises(SpeakEmbError):
        with random_voices(v22, gen_v3):
            pass
    assert "forward" not in v22.__dict__


# ---- the voice bank -----------------------------------------------------------------------------------------

def test_bank_voices_are_distinct_from_the_voices_already_in_it(gen_v3):
    first = VoiceSampler(gen_v3, seed=1, threshold=0.3).take(5)
    bank = VoiceBank.empty(gen_v3.profile).added(first, {"n": 5})
    more = VoiceSampler(gen_v3, seed=1, threshold=0.3, bank=bank).take(5)
    assert not {v.id for v in more} & set(bank.ids)  # same draw seed: the bank's voices are skipped
    bank = bank.added(more, {"n": 5})
    near = bank.nearest_voice_cosines()
    assert len(bank) == 10 and near.max() <= 0.3 + 1e-6
    smaller = bank.without([bank.ids[0]])
    assert len(smaller) == 9 and bank.ids[0] not in smaller.ids
    np.testing.assert_array_equal(smaller.nearest_training_cosine, bank.nearest_training_cosine[1:])


# ---- the CLI -------------------------------------------------------------------------------------------------------

class _Result:
    def __init__(self, r):
        self.returncode, self.stdout, self.stderr = r.exit_code, r.stdout, r.stderr


@pytest.fixture(scope="module")
def run_cli():
    """The CLI in this process (a subprocess per call would cost seconds of imports each)."""
    from click.testing import CliRunner

    from toucan_speakemb.cli.main import main

    def run(*args, env=None):
        return _Result(CliRunner().invoke(main, [str(a) for a in args], env=env))

    return run


@pytest.fixture(scope="module")
def v3_checkout(tmp_path_factory):
    # one stand-in checkout for the module: Toucan's packages are imported once per process
    tmp = tmp_path_factory.mktemp("v3_checkout")
    root = standin.make_checkout(tmp / "IMS-Toucan", "v3")
    tts = standin.make_checkpoint(tmp / "ToucanTTS.pt", 192, config=True)
    voc = standin.make_vocoder(tmp / "Vocoder.pt", v22=False)
    return ["--toucan-dir", root, "--tts-model", tts, "--vocoder", voc]


def test_synth_writes_one_wav_and_sidecar_per_utterance_each_in_its_own_voice(run_cli, gen_v3, v3_checkout, tmp_path):
    out = tmp_path / "out" / "line.wav"
    r = run_cli("synth", "Hello there.", "General Kenobi.", "--random-speaker", "--seed", "3", "--generator",
                gen_v3.path, *v3_checkout, "-o", out, "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    wavs = sorted((tmp_path / "out").glob("*.wav"))
    assert [w.name for w in wavs] == ["line_001.wav", "line_002.wav"]
    cars = [json.loads(w.with_suffix(".json").read_text()) for w in wavs]
    assert cars[0]["voice_id"] != cars[1]["voice_id"]
    for w, c in zip(wavs, cars):
        data, sr = sf.read(w)
        assert sr == 24000 and c["sample_rate"] == 24000 and len(data) > 0
        assert c["draw_seed"] == 3 and c["profile"] == "toucan-v3" and c["generator"]["fingerprint"] == gen_v3.fingerprint
        assert c["nearest_training_cosine"] <= c["threshold"] and c["new"] and c["distinct"]
        assert (c["threshold"], c["threshold_rule"]) == (pytest.approx(resolve_rule(gen_v3, None)[0], abs=1e-6),
                                                         resolve_rule(gen_v3, None)[1])
        assert c["voice_id"] == f"{gen_v3.fingerprint[:8]}-{c['seed']}"
    assert cars[0]["nearest_voice_id"] == cars[1]["voice_id"]
    # the same voice again, by id: the same audio
    again = tmp_path / "again.wav"
    r = run_cli("synth", "Hello there.", "--voice", cars[0]["voice_id"], "--generator", gen_v3.path, *v3_checkout,
                "-o", again)
    assert r.returncode == 0, r.stderr[-3000:]
    np.testing.assert_allclose(sf.read(again)[0], sf.read(wavs[0])[0], atol=2 / 32768)
    # --same-voice: one voice for all
    r = run_cli("synth", "One.", "Two.", "--random-speaker", "--same-voice", "--generator", gen_v3.path,
                *v3_checkout, "-o", tmp_path / "same" / "s.wav", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    ids = {json.loads(p.read_text())["voice_id"] for p in (tmp_path / "same").glob("*.json")}
    assert len(ids) == 1


def test_synth_without_toucan_says_what_is_missing_and_where_to_get_it(run_cli, gen_v3, v3_checkout, tmp_path):
    out = tmp_path / "o.wav"
    env = {"TOUCAN_DIR": ""}
    r = run_cli("synth", "Hi.", "--random-speaker", "--generator", gen_v3.path, "-o", out, env=env)
    assert_one_error_line(r, "--toucan-dir", "github.com/DigitalPhonetics/IMS-Toucan", alone=True)
    r = run_cli("synth", "Hi.", "--random-speaker", "--generator", gen_v3.path, "--toucan-dir", tmp_path / "nope",
                "-o", out)
    assert r.returncode == 1 and "does not exist" in r.stderr and "git clone" in r.stderr
    args = list(v3_checkout)
    args[3] = tmp_path / "missing.pt"
    r = run_cli("synth", "Hi.", "--random-speaker", "--generator", gen_v3.path, *args, "-o", out)
    assert r.returncode == 1 and "no TTS model" in r.stderr and "Flux9665/ToucanTTS" in r.stderr
    args = list(v3_checkout)
    args[5] = tmp_path / "missing_voc.pt"
    r = run_cli("synth", "Hi.", "--random-speaker", "--generator", gen_v3.path, *args, "-o", out)
    assert r.returncode == 1 and "no vocoder" in r.stderr
    assert not out.exists()


def test_synth_refuses_a_generator_of_another_space_before_loading_toucan(run_cli, gen_v22, v3_checkout, tmp_path):
    r = run_cli("synth", "Hi.", "--random-speaker", "--generator", gen_v22.path, *v3_checkout, "-o", tmp_path / "o.wav")
    assert r.returncode == 1 and "toucan-v2.2" in r.stderr and "toucan-v3" in r.stderr


def test_voice_bank_commands(run_cli, gen_v3, tmp_path):
    bank = tmp_path / "bank.safetensors"
    r = run_cli("voices", "add", bank, "--generator", gen_v3.path, "-n", "4", "--seed", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("voices", "add", bank, "--generator", gen_v3.path, "-n", "3", "--seed", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    b = VoiceBank.load(bank)
    assert len(b) == 7 and len(b.provenance["additions"]) == 2
    thr = resolve_rule(gen_v3, None)[0]  # the default rule
    assert b.nearest_training_cosine.max() <= thr + 1e-6 and b.nearest_voice_cosines().max() <= thr + 1e-6
    # voices are re-made by id from the generator
    v = VoiceSampler(gen_v3).remake(b.ids[5])
    np.testing.assert_allclose(v.embedding, b.embeddings[5], atol=1e-4)
    r = run_cli("voices", "list", bank)
    assert r.returncode == 0 and all(i in r.stdout for i in b.ids)
    r = run_cli("voices", "show", bank, b.ids[0])
    assert r.returncode == 0 and json.loads(r.stdout)["seed"] == int(b.seeds[0])
    r = run_cli("voices", "remove", bank, b.ids[0], b.ids[1])
    assert r.returncode == 0 and VoiceBank.load(bank).ids == b.ids[2:]
    r = run_cli("voices", "export", bank, "-o", tmp_path / "v.npz", "--ids", b.ids[3])
    assert r.returncode == 0, r.stderr
    es = EmbeddingSet.load(tmp_path / "v.npz", profile="toucan-v3")
    assert es.speaker_ids == [b.ids[3]]
    r = run_cli("voices", "export", bank, "-o", tmp_path / "v.csv")
    assert r.returncode == 0 and len((tmp_path / "v.csv").read_text().splitlines()) == 6
    r = run_cli("voices", "show", bank, "0000abcd-1")
    assert r.returncode == 1 and "not in the bank" in r.stderr


def test_a_bank_of_another_generator_is_refused(run_cli, gen_v3, tmp_path):
    g2 = train_tiny(clustered_set("toucan-v3", seed=5), tmp_path / "g2")
    bank = tmp_path / "bank.safetensors"
    assert run_cli("voices", "add", bank, "--generator", gen_v3.path, "-n", "2", "--seed", "1").returncode == 0
    r = run_cli("voices", "add", bank, "--generator", g2.path, "-n", "2")
    assert r.returncode == 1 and "one bank per generator" in r.stderr


def test_models_are_checked_before_anything_is_loaded(tmp_path):
    root = standin.make_checkout(tmp_path / "t", "v3")
    with pytest.raises(SpeakEmbError) as e:
        ToucanModels(root, tmp_path / "a.pt", tmp_path / "b.pt")
    assert "no TTS model" in one_line(e)
    tts = standin.make_vocoder(tmp_path / "voc_as_tts.pt", v22=False)
    with pytest.raises(SpeakEmbError) as e:
        ToucanModels(root, tts, tts)
    assert "default_emb" in one_line(e)
    with pytest.raises(SpeakEmbError) as e:
        ToucanModels(tmp_path, tts, tts)
    assert "not an IMS-Toucan" in one_line(e)


def test_synth_with_a_bank_keeps_new_voices_distinct_from_the_banks_and_adds_them(run_cli, gen_v3, v3_checkout,
                                                                                  tmp_path):
    bank = tmp_path / "bank.safetensors"
    for run in ("a", "b"):  # the same draw seed twice: the second run must not reuse the bank's voices
        r = run_cli("synth", "One.", "Two.", "--random-speaker", "--seed", "5", "--bank", bank, "--generator",
                    gen_v3.path, *v3_checkout, "-o", tmp_path / run / "u.wav", "--no-progress")
        assert r.returncode == 0, r.stderr[-3000:]
    ids = {run: [json.loads((tmp_path / run / f"u_00{i}.json").read_text())["voice_id"] for i in (1, 2)]
           for run in ("a", "b")}
    assert not set(ids["a"]) & set(ids["b"])
    assert VoiceBank.load(bank).ids == ids["a"] + ids["b"]
    car = json.loads((tmp_path / "b" / "u_001.json").read_text())
    assert "bank" in car["distinctness_against"] and car["nearest_voice_cosine"] <= car["threshold"]


def test_synth_builds_a_v22_interface_from_its_fixed_model_places(gen_v22, tmp_path):
    """v2.2 reads Models/FastSpeech2_<name>/best.pt and Models/HiFiGAN_combined/best.pt from the working
    folder; synth links the given files there. A subprocess: this module already imported a v3 checkout."""
    import subprocess
    import sys

    root = standin.make_checkout(tmp_path / "IMS-Toucan-2.2", "v2.2")
    tts = standin.make_checkpoint(tmp_path / "fs2.pt", 704)
    voc = standin.make_vocoder(tmp_path / "hifigan.pt", v22=True)
    r = subprocess.run([sys.executable, "-m", "toucan_speakemb.cli", "synth", "Hello.", "--random-speaker",
                        "--generator", str(gen_v22.path), "--toucan-dir", str(root), "--tts-model", str(tts),
                        "--vocoder", str(voc), "-o", str(tmp_path / "h.wav")], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONWARNINGS="ignore"), timeout=600, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    car = json.loads((tmp_path / "h.json").read_text())
    assert car["sample_rate"] == 48000 and car["toucan"]["release"] == "v2.2" and car["profile"] == "toucan-v2.2"
    assert sf.read(tmp_path / "h.wav")[1] == 48000


def test_a_second_toucan_checkout_in_one_process_is_refused(run_cli, gen_v3, v3_checkout, tmp_path):
    assert run_cli("synth", "Hi.", "--random-speaker", "--generator", gen_v3.path, *v3_checkout,
                   "-o", tmp_path / "a.wav").returncode == 0
    other = standin.make_checkout(tmp_path / "other", "v3")
    with pytest.raises(SpeakEmbError) as e:
        ToucanModels(other, v3_checkout[3], v3_checkout[5]).load()
    assert "one checkout per process" in one_line(e)


# ---- conditional voices through the hook -------------------------------------------------------------------

@pytest.fixture(scope="module")
def gen_v3_gender(tmp_path_factory):
    es = clustered_set("toucan-v3")
    es.gender = ["f" if int(s[1:]) % 2 else "m" for s in es.speaker_ids]
    cfg = TrainConfig.from_dict({**TINY, "model": {**TINY["model"], "conditions": ["gender"]}})
    out = tmp_path_factory.mktemp("g3c") / "run"
    train(es, out, cfg, progress=False)
    return Generator.load(out)


def test_hook_gives_conditional_voices_with_their_own_ids(v3, gen_v3_gender):
    from toucan_speakemb.voices.novelty import VoiceSampler

    with random_voices(v3, gen_v3_gender, seed=3, threshold=1.0, conditions={"gender": "f"}, guidance=2.0) as voices:
        v3("one")
        v3("two")
    used = v3.used_embeddings
    for voice, emb in zip(voices.voices, used):
        expected = gen_v3_gender.sample_seeds([voice.seed], conditions={"gender": "f"}, guidance=2.0)[0]
        np.testing.assert_allclose(emb.numpy(), expected, rtol=1e-4, atol=1e-4)  # batch vs one row
        plain = gen_v3_gender.sample_seeds([voice.seed])[0]
        assert not np.allclose(expected, plain)  # the condition changed the voice
        assert voice.id.count("-") == 2  # <fingerprint>-<seed>-<variant>
    assert voices.describe()["sampling"]["conditions"] == {"gender": "f"}
    # a voice is re-made only with the conditions it was made with
    same = VoiceSampler(gen_v3_gender, threshold=1.0, conditions={"gender": "f"}, guidance=2.0)
    np.testing.assert_allclose(same.remake(voices.voices[0].id).embedding, voices.voices[0].embedding, atol=1e-4)
    with pytest.raises(SpeakEmbError, match="other conditions") as e:
        VoiceSampler(gen_v3_gender, threshold=1.0).remake(voices.voices[0].id)
    one_line(e)


def test_hook_gives_voices_edited_with_sliders_judged_as_edited(v3, gen_v3):
    from toucan_speakemb.generate.generator import voice_seeds
    from toucan_speakemb.voices.novelty import VoiceSampler

    with random_voices(v3, gen_v3, seed=4, threshold=1.0, sliders={"pc1": -1.5}) as voices:
        v3("one")
        v3("two")
    for voice, emb in zip(voices.voices, v3.used_embeddings):
        seeds = [voice.seed]
        plain = gen_v3.sample_seeds(seeds)
        latents, steps = gen_v3.known_latents(seeds)
        expected = gen_v3.edit(plain, seeds, {"pc1": -1.5}, latents=latents, steps=steps)[0]
        np.testing.assert_allclose(emb.numpy(), expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(voice.embedding, expected, rtol=1e-4, atol=1e-4)  # novelty judged on it
        assert not np.allclose(expected, plain[0], atol=1e-3)
        assert voice.id.count("-") == 2
    assert voices.describe()["sampling"]["sliders"] == {"pc1": -1.5}
    same = VoiceSampler(gen_v3, threshold=1.0, sliders={"pc1": -1.5})
    np.testing.assert_allclose(same.remake(voices.voices[0].id).embedding, voices.voices[0].embedding, atol=1e-4)
    with pytest.raises(SpeakEmbError, match="other conditions or sliders") as e:
        VoiceSampler(gen_v3, threshold=1.0).remake(voices.voices[0].id)
    one_line(e)
    with pytest.raises(SpeakEmbError) as e:
        with random_voices(v3, gen_v3, seed=4, sliders={"pc99999": 1.0}):
            pass
    assert "pc99999" in one_line(e)


def test_synth_speaks_slider_edited_voices_and_remakes_them_by_id(run_cli, gen_v3, v3_checkout, tmp_path):
    out = tmp_path / "edited.wav"
    r = run_cli("synth", "Hello there.", "--random-speaker", "--seed", "5", "--slider", "pc1=-1.5", "--generator",
                gen_v3.path, *v3_checkout, "-o", out, "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    car = json.loads(out.with_suffix(".json").read_text())
    assert car["sampling"] == {"sliders": {"pc1": -1.5}, "slider_method": "latent"}
    assert car["voice_id"].count("-") == 2
    again = tmp_path / "again.wav"
    r = run_cli("synth", "Hello there.", "--voice", car["voice_id"], "--slider", "pc1=-1.5", "--generator",
                gen_v3.path, *v3_checkout, "-o", again)
    assert r.returncode == 0, r.stderr[-3000:]
    np.testing.assert_allclose(sf.read(again)[0], sf.read(out)[0], atol=2 / 32768)
    r = run_cli("synth", "Hello there.", "--voice", car["voice_id"], "--generator", gen_v3.path, *v3_checkout,
                "-o", tmp_path / "plain.wav")
    assert r.returncode == 1 and "other conditions or sliders" in r.stderr
    r = run_cli("synth", "Hi.", "--random-speaker", "--slider", "pc1=1", "--slider-strength", "0.4", "--generator",
                gen_v3.path, *v3_checkout, "-o", tmp_path / "x.wav")
    assert r.returncode == 1 and "renoise" in r.stderr and not (tmp_path / "x.wav").exists()


def test_voices_add_puts_slider_edited_voices_in_a_bank(run_cli, gen_v3, tmp_path):
    from toucan_speakemb.voices.novelty import VoiceSampler

    bank = tmp_path / "edited.safetensors"
    r = run_cli("voices", "add", bank, "--generator", gen_v3.path, "-n", "3", "--seed", "6", "--threshold", "1.0",
                "--slider", "pc1=-1.5")
    assert r.returncode == 0, r.stderr[-3000:]
    b = VoiceBank.load(bank)
    assert b.provenance["additions"][0]["sliders"] == {"pc1": -1.5}
    same = VoiceSampler(gen_v3, threshold=1.0, sliders={"pc1": -1.5})
    for i, vid in enumerate(b.ids):
        assert vid.count("-") == 2
        np.testing.assert_allclose(same.remake(vid).embedding, b.embeddings[i], atol=1e-4)
    r = run_cli("voices", "add", bank, "--generator", gen_v3.path, "-n", "1", "--slider", "pc0=1")
    assert r.returncode == 1 and "pc0" in r.stderr and len(VoiceBank.load(bank)) == 3


def test_hook_refuses_conditions_the_generator_was_not_trained_with(v3, gen_v3):
    with pytest.raises(SpeakEmbError) as e:
        with random_voices(v3, gen_v3, seed=3, conditions={"gender": "f"}):
            pass
    assert "gender" in one_line(e)


# ---- hearing voices without a corpus -------------------------------------------------------------------------

def test_stand_in_speakers_sit_in_the_toucan_models_space_and_say_they_are_not_real(tmp_path):
    from toucan_speakemb.adapters.first_voices import toucan_space_set
    from toucan_speakemb.adapters.toucan import checkpoint_default_embedding

    root = standin.make_checkout(tmp_path / "t", "v3")
    tts = standin.make_checkpoint(tmp_path / "ToucanTTS.pt", 192, config=True)
    models = ToucanModels(root, tts, standin.make_vocoder(tmp_path / "Vocoder.pt", v22=False))
    es = toucan_space_set(models, n_speakers=50, per_speaker=2)
    default = checkpoint_default_embedding(tts)
    assert es.profile.name == "toucan-v3" and es.embeddings.shape == (100, 192)
    assert "not a real speaker distribution" in es.provenance["not_real_speakers"]
    # centred near the default embedding (the speakers' mean is much closer to it than the speakers are)
    dist = np.linalg.norm(es.embeddings - default, axis=1)
    assert np.linalg.norm(es.embeddings.mean(0) - default) < 0.5 * np.median(dist)


def test_demo_with_a_toucan_checkout_speaks_new_voices_without_a_corpus(run_cli, v3_checkout, tmp_path):
    out = tmp_path / "first"
    r = run_cli("demo", "--out", out, "--steps", "10", "--no-progress", *v3_checkout)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "not a real speaker distribution" in r.stdout
    cars = [json.loads(p.read_text()) for p in sorted((out / "wavs").glob("*.json"))]
    assert len(cars) == 6 and len({c["voice_id"] for c in cars}) == 6
    assert all(c["profile"] == "toucan-v3" and c["toucan"]["release"] == "v3.1.2" for c in cars)
    assert all(sf.read(out / "wavs" / c["wav"])[1] == 24000 for c in cars)

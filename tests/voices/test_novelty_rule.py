"""Specification of the rule that decides which voices count as new: calibrated at training time on how close
each training speaker, left out in turn, comes to the others (what a real new speaker scores), stored with the generator and in
summary.json, used by default by VoiceSampler (`synth`, `voices add`, the batch recipe, the Toucan hook);
the encoder's same-speaker threshold stays available as the stricter rule. Also the sampling temperature.
"""

from __future__ import annotations

import json
import logging
from collections import Counter

import numpy as np
import pytest

from toucan_speakemb import EmbeddingSet, SpeakEmbError, get_profile
from toucan_speakemb.generate.generator import Generator
from toucan_speakemb.training.config import TrainConfig
from toucan_speakemb.training.trainer import UNSEEN_QUANTILE, pick_validation_speakers, train
from toucan_speakemb.voices.bank import VoiceBank
from toucan_speakemb.voices.novelty import VoiceSampler, resolve_rule

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"seed": 1, "model": {"hidden": 32, "blocks": 1, "time_dim": 16}, "diffusion": {"timesteps": 40},
        "train": {"steps": 10, "batch_size": 16, "threads": 1, "log_every": 5, "checkpoint_every": 10,
                  "warmup_steps": 2, "validation_share": 0.2}, "sample": {"steps": 5, "batch_size": 64}}


def dense_population(n_speakers: int, seed: int, per: int = 3) -> EmbeddingSet:
    """Speakers on a thin curved 3-dim manifold in 32 dims, dense enough that every speaker's nearest other
    speaker is above the encoder's same-speaker threshold (as on populations of thousands of real speakers)."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(99).normal(size=(3, 32))  # the same manifold for every draw
    centres = np.tanh(rng.normal(size=(n_speakers, 3)) @ mixing) + 2.0
    x = np.repeat(centres, per, axis=0) + 0.35 * rng.normal(size=(n_speakers * per, 32))
    ids = [f"s{seed}_{i // per}" for i in range(n_speakers * per)]
    return EmbeddingSet(x.astype(np.float32), ids, get_profile("synthetic-32"))


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def dense_train():
    return dense_population(300, seed=0)


@pytest.fixture(scope="module")
def gen(tmp_path_factory, dense_train):
    out = tmp_path_factory.mktemp("dense") / "run"
    train(dense_train, out, TrainConfig.from_dict(TINY), progress=False)
    return Generator.load(out)


def test_the_record_is_every_training_speakers_cosine_to_its_nearest_other_one(gen, dense_train):
    rec = gen.meta["unseen_speaker_threshold"]
    u = unit(dense_train.speaker_means().embeddings)
    sims = u @ u.T
    np.fill_diagonal(sims, -2)  # each speaker left out in turn: validation and training-loop speakers alike
    expected = np.sort(sims.max(1))
    assert rec["speakers"] == len(u) == 300
    np.testing.assert_allclose(rec["nearest_cosines"], expected, atol=1e-6)
    assert rec["quantile"] == UNSEEN_QUANTILE
    assert rec["value"] == pytest.approx(np.quantile(expected, UNSEEN_QUANTILE), abs=1e-6)
    summary = json.loads((gen.path.parent / "summary.json").read_text())
    assert summary["unseen_speaker_threshold"]["value"] == pytest.approx(rec["value"])
    assert "nearest_cosines" not in summary["unseen_speaker_threshold"]  # the summary stays readable


@pytest.mark.parametrize("name", ["builtin:synthetic-small", "builtin:synthetic"])
def test_the_acceptance_quantile_on_every_speaker_lets_through_nine_in_ten_fresh_speakers_steadily(name):
    # calibrated on the validation share alone (10% of the speakers), the 0.9 quantile let between 75% and 96%
    # of fresh speakers of the true distribution through, depending on the split; on every speaker, left out
    # in turn, each training set lets 86-94% through
    from toucan_speakemb.core.synthetic import BUILTIN, SyntheticPopulation
    from toucan_speakemb.training.trainer import cosine_similarity_matrix_max as nearest, unseen_speaker_record

    kw, n, per, _ = BUILTIN[name]
    population = SyntheticPopulation(**kw)
    fresh = population.make_set(3000, per, 99, prefix="fresh").speaker_means().embeddings
    alone, pooled = [], []
    for draw in range(3):
        means = population.make_set(n, per, 500 + draw, prefix=f"d{draw}").speaker_means().embeddings
        to_training = nearest(fresh, means)[0]
        pooled.append(float(np.mean(to_training <= unseen_speaker_record(means)["value"])))
        loo = nearest(means, means, exclude_self=True)[0]
        for split in range(4):
            held = pick_validation_speakers(n, 0.1, split)
            alone.append(float(np.mean(to_training <= np.quantile(loo[held], UNSEEN_QUANTILE))))
    assert all(abs(p - 0.9) <= 0.045 for p in pooled), pooled
    assert np.std(pooled) < np.std(alone) and max(abs(a - 0.9) for a in alone) > 0.045


def test_real_new_speakers_pass_the_default_rule_and_fail_the_same_speaker_one(gen):
    # fresh speakers of the same distribution: what a perfect generator would hand out
    fresh = unit(dense_population(200, seed=7).speaker_means().embeddings)
    nearest = (fresh @ unit(gen.training_speakers()[0]).T).max(1)
    unseen, rule = resolve_rule(gen, None)
    same, same_rule = resolve_rule(gen, "same-speaker")
    assert rule == "unseen:0.9" and same_rule == "same-speaker" and same == gen.same_speaker_threshold
    # about 9 in 10 real new speakers are as far as the rule asks; the same-speaker rule rejects them all
    assert 0.8 <= float(np.mean(nearest <= unseen)) <= 0.98
    assert float(np.mean(nearest <= same)) < 0.05


def test_voice_sampler_accepts_by_the_unseen_rule_by_default_and_records_it(gen):
    s = VoiceSampler(gen, seed=3)
    voices = s.take(10)
    thr = gen.meta["unseen_speaker_threshold"]["value"]
    assert s.threshold == thr and s.provenance()["threshold_rule"] == "unseen:0.9"
    x = unit(np.stack([v.embedding for v in voices]))
    assert (x @ unit(gen.training_speakers()[0]).T).max() <= thr + 1e-9
    pair = x @ x.T
    np.fill_diagonal(pair, -1)
    assert pair.max() <= thr + 1e-9  # distinct from each other as real speakers are from their neighbours
    f = voices[0].figures()
    assert f["threshold"] == pytest.approx(thr, abs=1e-6) and f["threshold_rule"] == "unseen:0.9" and f["new"]


def test_other_rules_by_name_quantile_or_number_and_bad_ones_are_one_line_errors(gen):
    cos = np.asarray(gen.meta["unseen_speaker_threshold"]["nearest_cosines"])
    assert resolve_rule(gen, "unseen:0.5") == (pytest.approx(np.quantile(cos, 0.5)), "unseen:0.5")
    assert resolve_rule(gen, "0.8") == (0.8, "given") and resolve_rule(gen, 0.7) == (0.7, "given")
    for bad in ("someone", "unseen:2", "unseen:x", "1.5"):
        with pytest.raises(SpeakEmbError) as e:
            resolve_rule(gen, bad)
        assert "\n" not in str(e.value) and "threshold" in str(e.value)


def test_a_generator_without_the_record_falls_back_to_the_same_speaker_rule_and_says_so(gen, caplog):
    old = Generator.load(gen.path)
    del old.meta["unseen_speaker_threshold"]  # as written by earlier versions
    with caplog.at_level(logging.WARNING, logger="toucan_speakemb"):
        value, rule = resolve_rule(old, None)
    assert (value, rule) == (old.same_speaker_threshold, "same-speaker")
    assert "falling back to the same-speaker threshold" in caplog.text
    with pytest.raises(SpeakEmbError) as e:  # asked for by name, it is an error, not a silent fallback
        resolve_rule(old, "unseen")
    assert "no unseen-speaker threshold" in str(e.value)


# ---- temperature ------------------------------------------------------------------------------------------

def novelty_gap(gen, means, held, t):
    """How far the median nearest-training cosine of ``gen``'s voices at ``t`` is from real new speakers' (the
    novelty target: the validation speakers' and each training-loop speaker's, left out in turn)."""
    from toucan_speakemb.training.trainer import novelty_target

    u = unit(means)
    target = novelty_target(means[held], means[~held])
    x = unit(gen.sample(1000, seed=5, temperature=t))
    return float(np.median((x @ u[~held].T).max(1))) - target


def test_with_enough_validation_speakers_the_default_temperature_balances_precision_and_recall(gen, dense_train):
    from toucan_speakemb.training.trainer import BALANCE_MIN_SPEAKERS, knn_against

    rec = gen.meta["temperature"]
    means = dense_train.speaker_means().embeddings
    held = pick_validation_speakers(len(means), TINY["train"]["validation_share"], TINY["seed"])
    assert held.sum() >= BALANCE_MIN_SPEAKERS and rec["rule"] == "balance"
    assert gen.temperature == rec["value"] and 0.5 <= rec["value"] <= 1.5
    assert len(rec["balance_curve"]) >= 3 and rec["validation_speakers"] == held.sum()

    def f1(t):  # eight sets of the validation speakers' size, from other noise than the search used
        return knn_against(means[held].astype(np.float64), gen.sample(8 * int(held.sum()), seed=5, temperature=t))["f1"]

    novel_enough = [t for t in (0.5, 0.75, 1.0, 1.25, 1.5) if novelty_gap(gen, means, held, t) <= 0]
    assert novel_enough
    # no temperature at least as novel as real new speakers scores better (by more than sampling noise), and the
    # chosen one is itself that novel, up to the sampling noise of other voices' median
    assert f1(rec["value"]) >= max(f1(t) for t in novel_enough) - 0.03
    assert novelty_gap(gen, means, held, rec["value"]) <= 0.003
    summary = json.loads((gen.path.parent / "summary.json").read_text())
    assert summary["temperature"]["value"] == rec["value"]


def test_the_rest_ratio_applies_to_trained_weights_and_not_to_the_gaussian_fit_kept_as_step_0(gen):
    from toucan_speakemb.training.trainer import rest_temperature

    cfg = TrainConfig.from_dict(TINY)
    assert rest_temperature(cfg, 0) == 1.0 and rest_temperature(cfg, 250) == cfg.sample.rest_temperature == 0.7
    # this network sees every direction (32 rows per 16 directions, 32 dims): none is tempered apart, and the
    # record says what sampling does
    assert gen.meta["temperature"]["rest_temperature"] == 1.0 == gen.rest_temperature


def test_the_rest_ratio_and_direction_factors_are_stored_only_with_a_temperature_chosen_with_them(monkeypatch):
    from types import SimpleNamespace

    from toucan_speakemb.training import trainer

    part = SimpleNamespace(eigen_subspace=lambda: 3)
    model = SimpleNamespace(gaussian_part=lambda: part)
    for rec, stored in (({"value": 1.1, "chosen": True, "rule": "balance"}, 0.7),
                        ({"value": 0.9, "chosen": True, "rule": "novelty", "reached": True}, 0.7),
                        ({"value": 1.0, "chosen": False, "rule": "novelty", "nearest_end": 1.5}, 1.0),  # unreachable
                        ({"value": 1.0, "chosen": False, "reason": "no validation speakers"}, 1.0)):
        monkeypatch.setattr(trainer, "choose_temperature_value", lambda *a, rec=rec: dict(rec))
        out = trainer.choose_temperature(None, model, None, None, None, 0.7, [1.1, 0.9, 1.0])
        assert out["rest_temperature"] == stored
        assert out["direction_scales"] == ([1.1, 0.9, 1.0] if rec["chosen"] else None)  # with the ratio, or neither
        assert trainer.choose_temperature(None, model, None, None, None, 0.7)["direction_scales"] is None
    no_subspace = SimpleNamespace(gaussian_part=lambda: SimpleNamespace(eigen_subspace=lambda: None))
    monkeypatch.setattr(trainer, "choose_temperature_value", lambda *a: {"value": 1.1, "chosen": True, "rule": "balance"})
    out = trainer.choose_temperature(None, no_subspace, None, None, None, 0.7, [1.1, 0.9, 1.0])
    assert out["rest_temperature"] == 1.0 and out["direction_scales"] is None


def test_the_balance_record_holds_the_judgement_voice_quality_would_make_at_its_temperature(gen, dense_train):
    # keep_better_voices takes the voices' precision and recall from the record instead of sampling again
    from toucan_speakemb.training import trainer

    rec = gen.meta["temperature"]
    data, means = trainer.prepare_data(dense_train, gen.cfg)
    again = trainer.voice_quality(trainer.build_diffusion(gen.cfg), gen.model, data, means.embeddings, gen.cfg,
                                  rec["value"], rest=rec["rest_temperature"])
    assert rec["rule"] == "balance"
    assert (again["precision"], again["recall"], again["f1"]) == (rec["precision"], rec["recall"], rec["f1"])


def test_with_few_validation_speakers_the_default_temperature_makes_voices_as_novel_as_they_are(tmp_path):
    few = dense_population(120, seed=0)  # 24 validation speakers
    train(few, tmp_path / "run", TrainConfig.from_dict(TINY), progress=False)
    g = Generator.load(tmp_path / "run")
    rec = g.meta["temperature"]
    means = few.speaker_means().embeddings
    held = pick_validation_speakers(len(means), TINY["train"]["validation_share"], TINY["seed"])
    assert rec["rule"] == "novelty" and g.temperature == rec["value"]
    u = unit(means)
    loop = u[~held] @ u[~held].T
    np.fill_diagonal(loop, -np.inf)  # each training-loop speaker against the others
    pooled = np.concatenate([(u[held] @ u[~held].T).max(1), loop.max(1)])
    assert rec["target_median"] == pytest.approx(float(np.median(pooled)), abs=1e-6)
    gap = lambda t: abs(novelty_gap(g, means, held, t))
    # no temperature in the range does better (by more than sampling noise) than the chosen one
    assert gap(rec["value"]) <= min(gap(t) for t in (0.5, 0.75, 1.0, 1.25, 1.5)) + 0.002


@pytest.mark.parametrize("name", ["builtin:synthetic-small", "builtin:synthetic"])
def test_the_novelty_target_pools_the_validation_speakers_with_every_training_speaker_left_out_in_turn(name):
    # both are draws of one quantity, a real speaker's cosine to its nearest of the population's other speakers;
    # pooled, the median is the one of fresh speakers of the true distribution to within a quarter of the error
    # of the validation share's own median (10% of the speakers), split after split
    from toucan_speakemb.core.synthetic import BUILTIN, SyntheticPopulation
    from toucan_speakemb.training.trainer import cosine_similarity_matrix_max as nearest, novelty_target

    kw, n, per, set_seed = BUILTIN[name]
    population = SyntheticPopulation(**kw)
    means = population.make_set(n, per, set_seed).speaker_means().embeddings.astype(np.float64)
    fresh = population.make_set(2000, per, 99, prefix="fresh").speaker_means().embeddings
    alone, pooled = [], []
    for split in range(8):
        held = pick_validation_speakers(n, 0.1, split)
        truth = float(np.median(nearest(fresh, means[~held])[0]))
        alone.append(abs(float(np.median(nearest(means[held], means[~held])[0])) - truth))
        pooled.append(abs(novelty_target(means[held], means[~held]) - truth))
    assert max(pooled) < 0.005 < max(alone)
    assert np.mean(pooled) < np.mean(alone) / 4


def balance_choice(monkeypatch, peak: float, slope: float = 0.05, crossing: float = 1.0, f1=None, held: int = 60):
    """choose_temperature on stand-in voices that stand for their temperature t: their median
    nearest-training cosine is the validation speakers' + slope (crossing - t), so that they are at least as
    novel as real new speakers and at most 0.0025 more for t in crossing .. crossing + 0.0025 / slope; the
    harmonic mean of precision and recall peaks at ``peak`` (or is ``f1(t)``); ``held`` validation speakers of
    300. Returns (the record, the novelty target, the temperatures sampled in order)."""
    from types import SimpleNamespace

    import torch

    from toucan_speakemb.training import trainer
    from toucan_speakemb.training.config import TrainConfig

    means = np.random.default_rng(0).normal(size=(300, 8))
    data = SimpleNamespace(validation=np.arange(300) < held, standardizer=SimpleNamespace(model_dim=8))
    target = trainer.novelty_target(means[:held], means[held:])
    real_cosines = trainer.cosine_similarity_matrix_max
    sampled = []

    class Voices:
        def __init__(self, *a, **k): pass
        def __enter__(self): return lambda t: sampled.append(t) or np.full((4, 8), t)
        def __exit__(self, *a): return False

    def cosines(x, seen, **kw):
        if x.shape == (4, 8):
            return np.full(4, target + slope * (crossing - x[0, 0])), None
        return real_cosines(x, seen, **kw)

    score = f1 or (lambda t: 1 - (t - peak) ** 2)
    monkeypatch.setattr(trainer, "voices_as_sampled", Voices)
    monkeypatch.setattr(trainer, "cosine_similarity_matrix_max", cosines)
    monkeypatch.setattr(trainer, "knn_against", lambda real, x, k=5: {
        "precision": 0.9, "recall": 0.9, "f1": score(x[0, 0])})
    return trainer.choose_temperature(None, torch.nn.Linear(8, 8), data, means, TrainConfig()), target, sampled


def test_the_balance_rule_takes_the_best_precision_and_recall_among_temperatures_at_least_as_novel_as_real_new_speakers(
        monkeypatch):
    from toucan_speakemb.training.trainer import temperature_reason

    # at least as novel as real new speakers and at most 0.0025 more for t in 1.0 .. 1.05 (each edge found by
    # bisection to within 0.0005 of median, 0.01 of temperature); the peak inside is found by the parabola
    # through the band's ends and middle
    rec, target, sampled = balance_choice(monkeypatch, peak=1.03)
    assert rec["chosen"] is True and rec["rule"] == "balance" and rec["value"] == pytest.approx(1.03, abs=2e-3)
    assert rec["band"] == pytest.approx([1.0, 1.05], abs=0.011)
    assert [c["temperature"] for c in rec["balance_curve"]] == sorted(c["temperature"] for c in rec["balance_curve"])
    assert len(rec["balance_curve"]) == 4  # the ends, the middle and the vertex
    assert target - 0.0025 - 5e-4 <= rec["median"] <= target + 5e-4
    # the searches sample each temperature once for its median (no voices are kept); the scored ones once more
    counts = Counter(sampled)
    assert max(counts.values()) <= 2
    assert {t for t, c in counts.items() if c == 2} <= {c["temperature"] for c in rec["balance_curve"]}
    assert temperature_reason(rec).startswith("best balance of precision 0.900 and recall 0.900 against 60 ")
    # a peak where the voices are closer to the training speakers than real new speakers: not taken, the
    # band's least novel edge instead, where the voices are as novel as real new speakers
    rec = balance_choice(monkeypatch, peak=0.7)[0]
    assert rec["value"] == pytest.approx(1.0, abs=0.011) and abs(rec["median"] - target) <= 5e-4
    # nor one where they are more novel by more than half the yardstick's tolerance (recall bought off the
    # manifold, or voices a report would read as more novel than real new speakers)
    assert balance_choice(monkeypatch, peak=1.23)[0]["value"] == pytest.approx(1.05, abs=0.011)
    # the band anywhere in the range: found by bisection, not on a grid
    rec = balance_choice(monkeypatch, peak=1.0, crossing=1.337, slope=0.2)[0]  # band 1.337 .. 1.3495
    assert rec["rule"] == "balance" and rec["value"] == pytest.approx(1.337, abs=0.003)


def test_scores_that_are_no_parabola_leave_the_best_scored_point_of_the_band():
    from toucan_speakemb.training.trainer import _balance_search

    def search(f1):
        return _balance_search(lambda t: {"f1": f1(t), "median": -t}, 1.15, 1.25)

    value, scored = search(lambda t: float(np.exp(5 * t)))  # rising through the band: its upper end
    assert value == pytest.approx(1.25) and type(value) is float  # stored as JSON
    assert list(scored) == pytest.approx([1.15, 1.2, 1.25])
    value, scored = search(lambda t: (t - 1.2) ** 2)  # a valley: the better end
    assert value in (1.15, 1.25) and len(scored) == 3
    value, scored = search(lambda t: {1.15: 0.5, 1.2: 0.9, 1.25: 0.6}.get(round(t, 4), 0.0))  # vertex scores worse
    assert value == pytest.approx(1.2) and len(scored) == 4


def test_when_no_temperature_makes_the_voices_as_novel_the_balance_rule_falls_back_to_the_novelty_rule(monkeypatch):
    # far more novel than real new speakers at every temperature: no band, and no temperature reaches them
    rec, target, _ = balance_choice(monkeypatch, peak=1.0, crossing=-2.0)
    assert rec["rule"] == "novelty" and rec["value"] == 1.0 and "1.0 kept" in rec["reason"]
    assert rec["nearest_end"] == 0.5 and "balance_curve" not in rec and rec["chosen"] is False
    # never as novel: the same, at the other end
    rec, _, _ = balance_choice(monkeypatch, peak=1.0, crossing=3.0)
    assert rec["value"] == 1.0 and rec["nearest_end"] == 1.5
    # an end within the yardstick's tolerance of the target: taken
    rec, _, sampled = balance_choice(monkeypatch, peak=1.0, crossing=1.55)  # median at 1.5: target + 0.0025
    assert rec["rule"] == "novelty" and rec["value"] == 1.5 and rec["reached"] is False and rec["chosen"] is True
    assert len(sampled) == len(set(sampled))  # the range's ends sampled once
    # ... and not one beyond it
    rec, _, _ = balance_choice(monkeypatch, peak=1.0, crossing=1.62)  # median at 1.5: target + 0.006
    assert rec["value"] == 1.0 and rec["nearest_end"] == 1.5 and "1.0 kept" in rec["reason"]


def test_voices_inside_the_band_at_every_temperature_are_balanced_over_the_whole_range(monkeypatch):
    # a median that does not move with the temperature: exactly as novel as real new speakers everywhere
    rec, target, _ = balance_choice(monkeypatch, peak=1.2, slope=0.0, crossing=0.0)
    assert rec["band"] == [0.5, 1.5] and rec["value"] == pytest.approx(1.2, abs=2e-3)


def test_the_band_is_read_from_the_ends_of_the_range_and_its_edges_are_ordered():
    from toucan_speakemb.training.trainer import _novelty_band

    target = 0.9
    for bump in (0.0, 0.004, 0.03):  # falling medians, and ones that rise back up between 1.0 and 1.2
        a, b = _novelty_band(lambda t: target + 0.01 - 0.02 * (t - 0.5) + (bump if 1.0 < t < 1.2 else 0.0), target)
        assert 0.5 <= a <= b <= 1.5
    assert _novelty_band(lambda t: target - 0.01 + 0.02 * t, target) is None  # rising: not novel enough at 1.5
    assert _novelty_band(lambda t: target + 0.1, target) is None  # never as novel
    assert _novelty_band(lambda t: target - 0.1, target) is None  # always far more novel


def test_the_stored_median_is_the_one_of_the_voices_at_the_stored_temperature(monkeypatch):
    # the searches round each temperature as it is stored before sampling it, so the record describes the
    # voices the generator makes by default; steep medians make a rounding off by 5e-5 show
    for held in (60, 20):  # the balance rule, and the novelty rule of fewer validation speakers
        rec, target, _ = balance_choice(monkeypatch, peak=1.0, crossing=1.23456789, slope=0.5, held=held)
        assert rec["median"] == pytest.approx(target + 0.5 * (1.23456789 - rec["value"]), abs=1e-12)


def test_a_judgement_samples_sixteen_sets_of_the_validation_speakers_size_up_to_a_cap():
    from toucan_speakemb.training.trainer import (JUDGING_DRAWS, JUDGING_MAX_VOICES, TEMPERATURE_VOICES,
                                                   judging_voices)

    assert judging_voices(200) == JUDGING_DRAWS * 200 == 3200
    assert judging_voices(10) == TEMPERATURE_VOICES
    assert judging_voices(2000) == (JUDGING_MAX_VOICES // 2000) * 2000  # fewer sets of more speakers
    assert judging_voices(20000) == 20000  # at least one whole set


def test_temperature_scales_the_initial_noise_and_defaults_to_the_stored_one(gen):
    default = gen.sample(300, seed=2)
    np.testing.assert_array_equal(default, gen.sample(300, seed=2, temperature=gen.temperature))
    plain = gen.sample(300, seed=2, temperature=1.0)
    cold, hot = gen.sample(300, seed=2, temperature=0.5), gen.sample(300, seed=2, temperature=1.5)
    spread = [float(np.trace(np.cov(x.T))) for x in (cold, plain, hot)]
    assert spread[0] < spread[1] < spread[2]
    latents, _ = gen.known_latents([5, 6], temperature=0.5)
    np.testing.assert_allclose(latents, 0.5 * gen.initial_noise([5, 6]))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(SpeakEmbError):
            gen.sample(2, temperature=bad)


def test_voices_of_another_temperature_have_their_own_ids_and_are_remade_by_them(gen):
    s = VoiceSampler(gen, seed=4, temperature=0.7, threshold=1.0)
    v = s.next()
    assert v.id.count("-") == 2 and s.settings == {"temperature": 0.7}
    np.testing.assert_allclose(VoiceSampler(gen, temperature=0.7, threshold=1.0).remake(v.id).embedding,
                               v.embedding, atol=1e-5)
    with pytest.raises(SpeakEmbError):
        VoiceSampler(gen, threshold=1.0).remake(v.id)
    bank = VoiceBank.from_generator(gen, 3, seed=1, temperature=0.7)
    assert bank.provenance["temperature"] == 0.7
    assert VoiceBank.from_generator(gen, 3, seed=1).provenance["temperature"] == gen.temperature


def test_on_a_sparse_population_the_default_keeps_the_looser_same_speaker_threshold(tmp_path):
    # isotropic random speakers: real new speakers lie far below the same-speaker threshold of all of them
    rng = np.random.default_rng(3)
    x = np.repeat(rng.normal(size=(60, 32)), 3, axis=0) + 0.3 * rng.normal(size=(180, 32))
    es = EmbeddingSet(x.astype(np.float32), [f"s{i // 3}" for i in range(180)], get_profile("synthetic-32"))
    train(es, tmp_path / "run", TrainConfig.from_dict(TINY), progress=False)
    g = Generator.load(tmp_path / "run")
    unseen = g.meta["unseen_speaker_threshold"]["value"]
    assert unseen < g.same_speaker_threshold
    assert resolve_rule(g, None) == (g.same_speaker_threshold, "same-speaker")
    assert resolve_rule(g, "unseen") == (unseen, "unseen:0.9")  # asked for by name: the calibrated one


def test_sample_takes_a_temperature_and_refuses_a_non_positive_one(gen, tmp_path):
    from click.testing import CliRunner

    from toucan_speakemb.cli.main import main

    out = tmp_path / "cold.safetensors"
    r = CliRunner().invoke(main, ["sample", "--generator", str(gen.path), "-n", "4", "--seed", "1",
                                  "--temperature", "0.6", "--out", str(out)])
    assert r.exit_code == 0, r.output
    bank = VoiceBank.load(out)
    assert bank.provenance["temperature"] == 0.6
    np.testing.assert_allclose(bank.embeddings, gen.sample(4, seed=1, temperature=0.6), atol=1e-6)
    r = CliRunner().invoke(main, ["sample", "--generator", str(gen.path), "-n", "4", "--temperature", "0",
                                  "--out", str(tmp_path / "x.safetensors")])
    assert r.exit_code != 0 and "temperature" in r.output and not (tmp_path / "x.safetensors").exists()


def test_a_temperature_that_cannot_reach_real_novelty_is_not_stored(monkeypatch):
    # When no temperature in the range makes the voices as novel as real new speakers, an end of the
    # range would only shrink the voices (the demo's data once got 0.5, and a collapsed bank): keep 1.0.
    from types import SimpleNamespace

    import torch

    from toucan_speakemb.training import trainer
    from toucan_speakemb.training.config import TrainConfig

    rng = np.random.default_rng(0)
    means = rng.normal(size=(40, 8))
    target = trainer.novelty_target(means[:8], means[8:])
    monkeypatch.setattr(trainer, "knob_at_median", lambda *a, **k: (0.5, target - 0.03, False))
    data = SimpleNamespace(validation=np.arange(40) < 8, standardizer=SimpleNamespace(model_dim=8))
    rec = trainer.choose_temperature(None, torch.nn.Linear(8, 8), data, means, TrainConfig())
    assert rec["value"] == 1.0 and rec["reached"] is False and rec["nearest_end"] == 0.5
    assert "1.0 kept" in rec["reason"]
    monkeypatch.setattr(trainer, "knob_at_median", lambda *a, **k: (0.5, target - 0.002, False))  # an end within tolerance
    assert trainer.choose_temperature(None, torch.nn.Linear(8, 8), data, means, TrainConfig())["value"] == 0.5
    monkeypatch.setattr(trainer, "knob_at_median", lambda *a, **k: (0.83, 0.96, True))
    assert trainer.choose_temperature(None, torch.nn.Linear(8, 8), data, means, TrainConfig())["value"] == 0.83

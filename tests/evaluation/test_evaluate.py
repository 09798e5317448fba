"""`evaluate`: measures read as they should on data of known structure, the report is complete and
self-contained, chunked k-NN results equal the direct ones, and bad input gets one clear line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import assert_one_error_line
from toucan_speakemb import EmbeddingSet, get_profile
from toucan_speakemb.cli.main import main
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.evaluation import metrics as M
from toucan_speakemb.evaluation import matched
from toucan_speakemb.evaluation.baselines import (KNOBS, gaussian_fit, gaussian_mixture, interpolation,
                                                  kernel_density, resample_training, sample_baseline)
from toucan_speakemb.evaluation.report import GeneratedSet, evaluate, write_report
from toucan_speakemb.voices.bank import load_generated
from toucan_speakemb.core.synthetic import SyntheticPopulation
from toucan_speakemb.voices.bank import VoiceBank

DIM = 32


# ---------------------------------------------------------------------------------------------- k-NN measures
@pytest.mark.parametrize("chunk_size", [3, 17, 1000])
def test_one_pass_knn_measures_equal_the_separate_direct_ones(chunk_size):
    rng = np.random.default_rng(1)
    real = rng.standard_normal((60, 5))
    fake = np.concatenate([rng.standard_normal((30, 5)) * 1.3 + 0.4, real[:5]])  # copies sit on ball edges
    got = M.knn_measures(real, fake, k=4, chunk_size=chunk_size)
    p, r = M.precision_recall(real, fake, k=4, chunk_size=1000)
    d, c = M.density_coverage(real, fake, k=4, chunk_size=1000)
    assert got == pytest.approx({"precision": p, "recall": r, "density": d, "coverage": c}, abs=1e-12)


def test_knn_measures_accept_precomputed_real_radii_and_refuse_wrong_ones():
    rng = np.random.default_rng(2)
    real, fake = rng.standard_normal((40, 4)), rng.standard_normal((25, 4))
    radii = M.knn_sq_radii(real, 3)
    assert M.knn_measures(real, fake, 3, real_sq_radii=radii) == M.knn_measures(real, fake, 3)
    with pytest.raises(ValueError, match="one entry per real row"):
        M.knn_measures(real, fake, 3, real_sq_radii=radii[:-1])


def test_precomputed_radii_keep_exact_ties_on_a_grid():
    """Integer-grid data puts many points exactly on ball edges: the strict and non-strict tests must agree
    with the direct computation whether or not the real radii are passed in."""
    for seed in range(20):
        rng = np.random.default_rng(seed)
        real = rng.integers(0, 4, (30, 3)).astype(float)
        fake = rng.integers(0, 4, (20, 3)).astype(float)
        direct = dict(zip(("precision", "recall"), M.precision_recall(real, fake, 3, chunk_size=1000)))
        direct.update(zip(("density", "coverage"), M.density_coverage(real, fake, 3, chunk_size=1000)))
        assert M.knn_measures(real, fake, 3, chunk_size=7, real_sq_radii=M.knn_sq_radii(real, 3)) == direct


def test_symmetric_knn_radii_equal_a_full_distance_matrix():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_normal((50, 6)), np.zeros((2, 6))])  # a duplicate pair: radius 0 allowed
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    expected = np.sort(d, axis=1)[:, 2]
    for chunk in (4, 7, 100):
        assert M.knn_radii(x, 3, chunk_size=chunk) == pytest.approx(expected, abs=1e-9)


# ---------------------------------------------------------------------------------------------- baselines
def test_gaussian_fit_reproduces_mean_and_covariance():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((6, 6))
    train = rng.standard_normal((400, 6)) @ a + 3.0
    x = gaussian_fit(train, 20000, seed=1)
    assert np.abs(x.mean(0) - train.mean(0)).max() < 0.1
    assert np.abs(np.cov(x, rowvar=False) - np.cov(train, rowvar=False)).max() < 0.15 * np.abs(np.cov(train, rowvar=False)).max()
    assert np.array_equal(x, gaussian_fit(train, 20000, seed=1))


def test_gaussian_mixture_follows_two_clusters_that_a_single_gaussian_blurs():
    rng = np.random.default_rng(5)
    centres = np.zeros((2, 8))
    centres[0, 0], centres[1, 0] = -6, 6
    train = np.concatenate([c + rng.standard_normal((300, 8)) for c in centres])
    gmm, gauss = gaussian_mixture(train, 2000, seed=0), gaussian_fit(train, 2000, seed=0)
    between = lambda x: np.mean(np.abs(x[:, 0]) < 2)  # noqa: E731  (the empty gap between the clusters)
    assert between(gmm) < 0.05 < 0.2 < between(gauss)
    assert 0.4 < np.mean(gmm[:, 0] > 0) < 0.6
    assert M.total_variance_ratio(gmm, train) == pytest.approx(1.0, abs=0.1)
    assert np.array_equal(gmm, gaussian_mixture(train, 2000, seed=0))


def test_resampling_only_copies_training_vectors():
    train = np.random.default_rng(6).standard_normal((30, DIM)).astype(np.float32)
    x = resample_training(train, 200, seed=0)
    assert all(any(np.array_equal(row, t) for t in train) for row in x)


def test_interpolation_lies_between_a_speaker_and_one_of_its_nearest_within_the_mixing_range():
    train = np.random.default_rng(8).standard_normal((40, DIM)) + 2.0
    # mixing 0: copies of training speakers
    assert all(any(np.allclose(row, t, atol=1e-5) for t in train) for row in interpolation(train, 50, 0, mixing=0.0))
    x = interpolation(train, 200, seed=1, mixing=0.3, neighbours=3)
    u = train / np.linalg.norm(train, axis=1, keepdims=True)
    sims = u @ u.T
    np.fill_diagonal(sims, -np.inf)
    near = np.argsort(-sims, axis=1)[:, :3]
    for row in x[:40]:  # on a segment from some speaker a to one of a's 3 nearest, at most 0.3 of the way
        found = False
        for a in range(len(train)):
            for b in near[a]:
                d = train[b] - train[a]
                w = float((row - train[a]) @ d / (d @ d))
                if -1e-6 <= w <= 0.3 + 1e-6 and np.allclose(train[a] + w * d, row, atol=1e-4):
                    found = True
        assert found


def test_every_novelty_knob_moves_its_baseline_away_from_the_training_speakers():
    train = np.random.default_rng(9).standard_normal((300, DIM)) + 3.0
    for name, (knob, default, (lo, hi)) in KNOBS.items():
        medians = [matched.novelty_of(sample_baseline(name, train, 300, 0, v), train, 0.99)[0].median
                   for v in np.linspace(max(lo, 0.05), hi, 3)]
        assert medians[0] > medians[1] > medians[2], (name, medians)
    assert np.array_equal(sample_baseline("kde", train, 10, 3), kernel_density(train, 10, 3, bandwidth=0.2))


def test_match_knob_finds_the_setting_of_a_target_novelty_or_says_it_is_out_of_reach():
    train = np.random.default_rng(10).standard_normal((300, DIM)) + 3.0
    target = matched.novelty_of(kernel_density(train, 300, 1, bandwidth=0.4), train, 0.99)[0].median
    v, med, reached = matched.match_knob(lambda b: kernel_density(train, 300, 1, bandwidth=b), 0.0, 1.5, train, target)
    assert reached and v == pytest.approx(0.4, abs=0.05) and med == pytest.approx(target, abs=0.002)
    # interpolation never gets as far from the speakers as a wide kernel
    far = matched.novelty_of(kernel_density(train, 300, 1, bandwidth=1.5), train, 0.99)[0].median
    v, _, reached = matched.match_knob(lambda m: interpolation(train, 300, 1, mixing=m), 0.0, 0.5, train, far)
    assert not reached and v == 0.5


def test_the_yardstick_of_novelty_as_real_speakers():
    real = matched.Novelty(0.963, 0.40)
    assert matched.as_novel_as(matched.Novelty(0.966, 0.44), real)
    assert not matched.as_novel_as(matched.Novelty(0.970, 0.40), real)  # median too close to training
    assert not matched.as_novel_as(matched.Novelty(0.955, 0.40), real)  # farther than real speakers are
    assert not matched.as_novel_as(matched.Novelty(0.963, 0.46), real)  # too many above the threshold


def test_reports_show_baselines_at_the_held_out_novelty_and_the_precision_novelty_curve(population, split, tmp_path):
    train, held = split
    fresh = _fresh(population, 300, 3)
    ev = evaluate(held, [GeneratedSet("fresh", fresh, train.profile)], train, baselines=("kde", "interpolation"))
    target = ev.target["novelty_median"]
    kde = [n for n in ev.rows if n.startswith("kernel density, as novel as held-out")]
    assert len(kde) == 1 and ev.rows[kde[0]]["novelty_median"] == pytest.approx(target, abs=0.005)
    assert ev.rows["fresh"]["as_novel"] and not ev.rows["kernel density"]["as_novel"]  # h = 0.2: near copies
    assert set(ev.curves) == {"kernel density", "interpolation of neighbours"}
    assert all(0 <= p.precision <= 1 for p in ev.curves["kernel density"])
    write_report(ev, tmp_path / "rep", tsne=False)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Precision at matched novelty" in md and (tmp_path / "rep" / "precision_novelty.png").stat().st_size > 0
    assert "Alaa" in md
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["precision_novelty_curves"]["kernel density"]


# ---------------------------------------------------------------------------------------------- measures
@pytest.fixture(scope="module")
def population():
    return SyntheticPopulation(dim=DIM, latent_dim=4, clusters=3, hidden=64, seed=7)


@pytest.fixture(scope="module")
def split(population):
    train = population.make_set(200, 4, seed=1, prefix="train")
    held = population.make_set(150, 4, seed=2, prefix="held")
    return train, held


def _fresh(population, n, seed):
    return population.make_set(n, 4, seed=seed, prefix="new").speaker_means().embeddings


@pytest.fixture(scope="module")
def known_systems(population, split):
    """Fresh true speakers (a perfect generator), copies of the training speakers, and a collapsed generator."""
    train, held = split
    tm = train.speaker_means().embeddings
    fresh = _fresh(population, 300, 3)
    collapsed = tm.mean(0) + 0.05 * (fresh - fresh.mean(0))
    copies = tm[np.random.default_rng(0).integers(0, len(tm), 300)]
    gens = [GeneratedSet("fresh", fresh, train.profile), GeneratedSet("copies", copies, train.profile),
            GeneratedSet("collapsed", collapsed, train.profile)]
    return evaluate(held, gens, train, baselines=("gaussian", "resample"), seed=0)


def test_fresh_true_speakers_read_like_real_held_out_speakers(known_systems):
    rows = known_systems.rows
    real_train, fresh = rows["real training speakers"], rows["fresh"]
    assert fresh["frechet_ratio"] < 1.5
    assert abs(fresh["precision"] - real_train["precision"]) < 0.1
    assert abs(fresh["recall"] - real_train["recall"]) < 0.1
    assert abs(fresh["memorised"] - rows["real held-out speakers"]["memorised"]) < 0.1
    # the speaker-mean threshold is the stricter one: fewer new speakers count as memorised
    assert known_systems.settings["speaker_mean_threshold"] > known_systems.settings["threshold"]
    assert fresh["memorised_speaker_threshold"] <= fresh["memorised"]
    assert rows["copies"]["memorised_speaker_threshold"] == 1.0
    assert 0.8 < fresh["variance_ratio"] < 1.2


def test_copies_are_caught_as_memorised_and_a_collapse_as_shrunk_and_undiverse(known_systems):
    rows = known_systems.rows
    assert rows["copies"]["memorised"] == 1.0
    assert rows["copies"]["novelty_median"] == pytest.approx(1.0)
    assert rows["resampled training (copies)"]["memorised"] == 1.0
    collapsed = rows["collapsed"]
    assert collapsed["variance_ratio"] < 0.05
    assert collapsed["recall"] < 0.1 and collapsed["coverage"] < rows["fresh"]["coverage"]
    assert collapsed["close_pairs"] > max(0.9, 3 * rows["fresh"]["close_pairs"])
    assert collapsed["effective_share"] < rows["fresh"]["effective_share"]


def test_baselines_are_fitted_to_the_training_set_and_sized_like_the_first_generated_set(known_systems):
    assert known_systems.rows["Gaussian fit"]["n"] == 300
    assert known_systems.settings["baselines"] == ["gaussian", "resample"]


def test_gender_balance_is_judged_by_a_classifier_trained_on_real_speakers():
    rng = np.random.default_rng(8)
    prof = get_profile("synthetic-16")

    def make(n_spk, prefix, seed):
        r = np.random.default_rng(seed)
        g = np.array(["f", "m"])[r.integers(0, 2, n_spk)]
        centre = np.where(g[:, None] == "f", 2.0, -2.0) * np.eye(16)[0] + r.standard_normal((n_spk, 16))
        x = np.repeat(centre, 3, axis=0) + 0.3 * r.standard_normal((3 * n_spk, 16))
        ids = np.repeat([f"{prefix}{i}" for i in range(n_spk)], 3)
        return EmbeddingSet(x, ids.tolist(), prof, gender=np.repeat(g, 3).tolist())

    train, held = make(120, "t", 1), make(60, "h", 2)
    female_only = np.eye(16)[0] * 2.0 + rng.standard_normal((100, 16))
    ev = evaluate(held, [GeneratedSet("female", female_only, prof)], train, baselines=("gaussian",))
    assert ev.gender["held_out_accuracy"] > 0.9
    assert ev.gender["female_share"]["female"] > 0.9
    assert 0.3 < ev.gender["female_share"]["Gaussian fit"] < 0.7


# ---------------------------------------------------------------------------------------------- the report
def test_report_is_complete_self_contained_and_its_numbers_are_those_of_metrics_json(known_systems, tmp_path):
    write_report(known_systems, tmp_path, tsne=True)
    for name in ("report.md", "report.html", "metrics.json", "pca.png", "tsne.png", "novelty.png",
                 "distinctness.png", "dimensions.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    html = (tmp_path / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http" not in html.replace("http-equiv", "")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    md = (tmp_path / "report.md").read_text()
    for name, row in metrics["systems"].items():
        line = next(l for l in md.splitlines() if l.startswith(f"| {name} |"))
        if "precision" in row:
            assert f"{row['precision']:.2f}" in line
    for citation in ("Kynkäänniemi", "Naeem", "Heusel", "van der Maaten"):
        assert citation in md


# ---------------------------------------------------------------------------------------------- the CLI
@pytest.fixture()
def files(tmp_path, population, split):
    train, held = split
    train.save(tmp_path / "train.safetensors")
    held.save(tmp_path / "held.safetensors")
    fresh = _fresh(population, 80, 9)
    seeds = np.arange(80)
    VoiceBank(fresh, seeds, [f"v-{s}" for s in seeds], train.profile).save(tmp_path / "bank.safetensors")
    np.save(tmp_path / "bank.npy", fresh)
    return tmp_path


def _run(*args):
    return CliRunner().invoke(main, ["evaluate", *map(str, args)])


def test_cli_writes_the_report_and_compares_several_generators(files):
    out = files / "rep"
    r = _run("--real", files / "held.safetensors", "--train", files / "train.safetensors",
             "--generated", files / "bank.safetensors", "--generated", f"bare={files / 'bank.npy'}",
             "--out", out, "--no-tsne", "--baselines", "gaussian")
    assert r.exit_code == 0, r.output
    systems = json.loads((out / "metrics.json").read_text())["systems"]
    assert {"bank", "bare", "Gaussian fit", "real training speakers", "real held-out speakers"} <= set(systems)
    assert systems["bank"]["precision"] == systems["bare"]["precision"]
    assert not (out / "tsne.png").exists()


def test_cli_adds_the_loss_curve_and_training_speakers_of_a_run(files, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "loss.csv").write_text("step,loss,lr\n10,1.0,0.001\n20,0.5,0.001\n")
    EmbeddingSet.load(files / "train.safetensors").speaker_means().save(run / "train_speakers.safetensors")
    r = _run("--real", files / "held.safetensors", "--generated", files / "bank.safetensors", "--run", run,
             "--out", files / "rep", "--no-tsne", "--baselines", "none")
    assert r.exit_code == 0, r.output
    assert (files / "rep" / "loss.png").exists()
    assert json.loads((files / "rep" / "metrics.json").read_text())["settings"]["train"]["speakers"] == 200
    assert "kept the weights" not in (files / "rep" / "report.md").read_text()  # no validation log: no claim


def test_the_loss_curve_shows_the_validation_scores_and_the_selected_step(files, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "loss.csv").write_text("step,loss,lr\n10,1.0,0.001\n20,0.5,0.001\n")
    (run / "validation.csv").write_text("step,validation_loss\n0,0.9\n10,0.7\n20,0.8\n")
    (run / "summary.json").write_text(json.dumps({"selected_step": 10}))
    EmbeddingSet.load(files / "train.safetensors").speaker_means().save(run / "train_speakers.safetensors")
    args = ["--real", files / "held.safetensors", "--generated", files / "bank.safetensors", "--run", run,
            "--no-tsne", "--baselines", "none"]
    r = _run(*args, "--out", tmp_path / "with")
    assert r.exit_code == 0, r.output
    assert "model selection kept the weights of step 10" in (tmp_path / "with" / "report.md").read_text()
    assert "untrained network" not in (tmp_path / "with" / "report.md").read_text()
    (run / "summary.json").write_text(json.dumps({"selected_step": 0}))  # the Gaussian fit kept: the report says why
    (run / "validation.csv").write_text("step,validation_loss\n0,0.7\n10,0.9\n20,0.8\n")
    assert _run(*args, "--out", tmp_path / "zero").exit_code == 0
    text = (tmp_path / "zero" / "report.md").read_text()
    assert "step 0 0.70000, the best trained weights 0.80000 at step 20 (+14.3%)" in text
    (run / "summary.json").write_text(json.dumps({"selected_step": 10}))
    (run / "validation.csv").unlink()
    assert _run(*args, "--out", tmp_path / "without").exit_code == 0
    assert (tmp_path / "with" / "loss.png").read_bytes() != (tmp_path / "without" / "loss.png").read_bytes()
    (run / "validation.csv").write_text("step,validation_loss\n0,zero\n")
    _one_error_line(_run(*args, "--out", tmp_path / "bad"), "validation.csv", "not a readable validation log")
    (run / "validation.csv").write_text("step,validation_loss\n0,0.9\n")
    (run / "summary.json").write_text("{truncated")
    _one_error_line(_run(*args, "--out", tmp_path / "bad2"), "summary.json", "not a readable run summary")
    (run / "summary.json").write_text(json.dumps({"selected_step": "ten"}))
    _one_error_line(_run(*args, "--out", tmp_path / "bad3"), "summary.json", "selected_step")
    (run / "summary.json").write_text(json.dumps({"selected_step": 10}))
    (run / "validation.csv").write_text("step\n0\n")
    _one_error_line(_run(*args, "--out", tmp_path / "bad4"), "validation.csv", "two columns")


def _one_error_line(r, *fragments):
    return assert_one_error_line(r, *fragments, alone=True)  # the error line is all that is printed


def test_cli_refuses_a_bank_from_another_space(files):
    other = VoiceBank(np.ones((10, 192), np.float32) + np.arange(10)[:, None], np.arange(10),
                      [f"v-{i}" for i in range(10)], get_profile("toucan-v3"))
    other.save(files / "v3.safetensors")
    r = _run("--real", files / "held.safetensors", "--generated", files / "v3.safetensors", "--out", files / "r")
    _one_error_line(r, "192-dim", f"{DIM}-dim")


def test_cli_refuses_a_bank_of_the_same_width_but_another_profile(files):
    x = np.random.default_rng(0).standard_normal((10, DIM)).astype(np.float32)
    VoiceBank(x, np.arange(10), [f"v-{i}" for i in range(10)], get_profile("custom-x", DIM)).save(files / "o.safetensors")
    r = _run("--real", files / "held.safetensors", "--generated", files / "o.safetensors", "--out", files / "r")
    _one_error_line(r, "custom-x", f"synthetic-{DIM}")


def test_cli_refuses_too_few_vectors_nan_and_missing_files(files):
    np.save(files / "few.npy", np.random.default_rng(0).standard_normal((5, DIM)))
    _one_error_line(_run("--real", files / "held.safetensors", "--generated", files / "few.npy", "--out", files / "r"),
                    "5 vectors", "k+1 = 6")
    bad = np.random.default_rng(0).standard_normal((20, DIM))
    bad[3, 2] = np.nan
    np.save(files / "nan.npy", bad)
    _one_error_line(_run("--real", files / "held.safetensors", "--generated", files / "nan.npy", "--out", files / "r"),
                    "NaN")
    _one_error_line(_run("--real", files / "missing.safetensors", "--generated", files / "bank.npy",
                         "--out", files / "r"), "missing.safetensors")
    _one_error_line(_run("--real", files / "held.safetensors", "--generated", files / "bank.npy",
                         "--out", files / "r", "--baselines", "gaussian,magic"), "magic")
    assert not (files / "r" / "report.md").exists()


def test_cli_refuses_a_real_set_with_one_embedding_per_speaker_unless_a_threshold_is_given(files):
    means = EmbeddingSet.load(files / "held.safetensors").speaker_means()
    means.save(files / "means.safetensors")
    args = ["--real", files / "means.safetensors", "--generated", files / "bank.npy", "--out", files / "r",
            "--no-tsne", "--baselines", "none"]
    _one_error_line(_run(*args), "same-speaker threshold", "--threshold")
    assert _run(*args, "--threshold", "0.8").exit_code == 0


def test_load_generated_reads_every_format_alike(files):
    a = load_generated(files / "bank.safetensors")
    b = load_generated(files / "bank.npy")
    assert np.array_equal(a.vectors, b.vectors) and a.profile is not None and b.profile is None
    with pytest.raises(SpeakEmbError, match="not found"):
        load_generated(files / "nope.npy")


def test_cli_refuses_a_generated_set_named_like_a_row_of_the_report(files):
    r = _run("--real", files / "held.safetensors", "--train", files / "train.safetensors",
             "--generated", f"Gaussian fit={files / 'bank.npy'}", "--out", files / "r", "--no-tsne")
    _one_error_line(r, "Gaussian fit", "NAME=PATH")


def test_cli_refuses_all_zero_generated_vectors(files):
    x = np.random.default_rng(0).standard_normal((20, DIM))
    x[4] = 0
    np.save(files / "zero.npy", x)
    _one_error_line(_run("--real", files / "held.safetensors", "--generated", files / "zero.npy",
                         "--out", files / "r"), "all-zero", "row 4")


def test_report_of_small_sets_still_draws_the_t_sne_map(tmp_path):
    """Fewer points than the 50 principal components t-SNE starts from (the demo's smallest run)."""
    wide = SyntheticPopulation(dim=64, latent_dim=4, clusters=2, hidden=32, seed=3)
    train = wide.make_set(30, 3, seed=21, prefix="t")
    held = wide.make_set(12, 3, seed=22, prefix="h")
    gen = GeneratedSet("g", wide.make_set(12, 3, seed=23, prefix="g").speaker_means().embeddings, train.profile)
    ev = evaluate(held, [gen], train, baselines=(), seed=0)
    write_report(ev, tmp_path, tsne=True)
    assert (tmp_path / "tsne.png").stat().st_size > 0


def test_a_system_with_a_knob_is_traced_like_the_baselines(population, split):
    train, held = split
    fresh = _fresh(population, 300, 3)
    centre = fresh.mean(0)
    ev = evaluate(held, [GeneratedSet("fresh", fresh, train.profile)], train, baselines=(),
                  knob_systems={"shrunk": (lambda t, n: centre + t * (fresh[:n] - centre), "temperature", (0.3, 1.5))})
    assert [p.knob for p in ev.curves["shrunk"]][0] == pytest.approx(0.3)
    rows = [n for n in ev.rows if n.startswith("shrunk, as novel as held-out (temperature")]
    assert len(rows) == 1 and ev.rows[rows[0]]["kind"] == "generated"


def test_a_generated_set_also_traced_along_its_knob_is_drawn_as_its_curve_not_as_one_point(
        population, split, tmp_path, monkeypatch):
    from toucan_speakemb.core import plots

    train, held = split
    fresh = _fresh(population, 300, 3)
    centre = fresh.mean(0)
    ev = evaluate(held, [GeneratedSet("g", fresh, train.profile)], train, baselines=(),
                  knob_systems={"g": (lambda t, n: centre + t * (fresh[:n] - centre), "temperature", (0.3, 1.5))})
    drawn = {}
    real_plot = plots.plot_precision_novelty
    monkeypatch.setattr(plots, "plot_precision_novelty",
                        lambda systems, path, *a, **kw: (drawn.update(systems), real_plot(systems, path, *a, **kw))[1])
    write_report(ev, tmp_path, tsne=False)
    assert len(drawn["g"]) == len(ev.curves["g"]) > 1

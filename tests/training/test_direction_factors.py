"""Direction factors (``sample.variance_correction``): measured when a run ends, stored with the temperature it
chooses, and sampled with by every path that draws a voice's initial noise."""

from __future__ import annotations

import json

import numpy as np
import pytest

from toucan_speakemb.core.synthetic import builtin_set
from toucan_speakemb.diffusion.denoisers import gaussian_part
from toucan_speakemb.generate.generator import Generator, voice_seeds
from toucan_speakemb.training import trainer
from toucan_speakemb.training.config import TrainConfig

# a network that models 6 of 64 principal directions, trained long enough to shrink and spread some of them,
# with 60 validation speakers (the balance rule chooses the temperature)
RUN = {"seed": 2, "model": {"hidden": 64, "blocks": 2, "time_dim": 16, "subspace": "fixed", "subspace_dims": 6},
       "diffusion": {"timesteps": 40},
       "train": {"steps": 400, "validate_every": 50, "batch_size": 64, "threads": 1, "log_every": 50,
                 "checkpoint_every": 400, "warmup_steps": 2, "validation_share": 0.2, "lr": 0.002},
       "sample": {"steps": 8, "batch_size": 64}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("factors") / "run"
    trainer.train(builtin_set("builtin:synthetic-small"), out, TrainConfig.from_dict(RUN), progress=False)
    return Generator.load(out)


def principal_variances(gen: Generator, factors, n: int = 8000) -> np.ndarray:
    """The variance of ``n`` voices at temperature 1 along the network's principal directions (model space),
    sampled with ``factors`` stored in the generator's record for the time of it."""
    part = gaussian_part(gen.model)
    k = part.eigen_subspace()
    record = gen.meta["temperature"]
    stored = record["direction_scales"]
    try:
        record["direction_scales"] = factors
        z = gen.standardizer.forward(gen.sample_seeds(voice_seeds(11, n), temperature=1.0)).astype(np.float64)
    finally:
        record["direction_scales"] = stored
    return ((z - part.mean.double().numpy()) @ part.eigvecs.double().numpy())[:, :k].var(0)


def test_a_run_that_chooses_a_temperature_stores_one_factor_per_modelled_direction(run):
    rec = run.meta["temperature"]
    assert rec["chosen"] and rec["rule"] == "balance" and rec["rest_temperature"] == 0.7
    assert len(rec["direction_scales"]) == gaussian_part(run.model).eigen_subspace() == 6
    assert run.direction_scales == rec["direction_scales"]
    summary = json.loads((run.path.parent / "summary.json").read_text())
    assert summary["temperature"]["direction_scales"] == rec["direction_scales"]
    assert "principal directions is scaled by" in (run.path.parent / "train.log").read_text()


def test_the_factors_move_each_directions_variance_halfway_to_the_training_speakers(run):
    lam = gaussian_part(run.model).eigvals[:6].double().numpy()
    before = np.log(principal_variances(run, None) / lam)
    after = np.log(principal_variances(run, run.direction_scales) / lam)
    assert np.abs(before).mean() > 0.05  # the network does shrink or spread its directions (else this says nothing)
    # halfway in log-variance, up to the network's nonlinearity and two draws of voices
    np.testing.assert_allclose(after, before / 2, atol=0.03)


def test_the_record_judges_the_voices_sampled_with_its_factors(run):
    rec = run.meta["temperature"]
    data, means = trainer.prepare_data(builtin_set("builtin:synthetic-small"), run.cfg)
    judged = lambda directions: trainer.voice_quality(run.diffusion, run.model, data, means.embeddings, run.cfg,  # noqa: E731
                                                      rec["value"], rest=rec["rest_temperature"],
                                                      directions=directions)
    with_them = judged(rec["direction_scales"])
    assert (with_them["precision"], with_them["recall"]) == (rec["precision"], rec["recall"])
    without = judged(None)
    assert (without["precision"], without["recall"]) != (rec["precision"], rec["recall"])


def test_no_factors_are_measured_where_none_would_be_stored(run):
    data, _ = trainer.prepare_data(builtin_set("builtin:synthetic-small"), run.cfg)
    cfg = TrainConfig.from_dict(RUN)
    assert trainer.direction_scales(run.diffusion, run.model, data, cfg, step=400) is not None
    assert trainer.direction_scales(run.diffusion, run.model, data, cfg, step=0) is None  # the Gaussian fit
    cfg.sample.variance_correction = 0.0
    assert trainer.direction_scales(run.diffusion, run.model, data, cfg, step=400) is None
    no_validation = TrainConfig.from_dict({**RUN, "train": {**RUN["train"], "validation_share": 0}})
    data, _ = trainer.prepare_data(builtin_set("builtin:synthetic-small"), no_validation)
    assert trainer.direction_scales(run.diffusion, run.model, data, no_validation, step=400) is None

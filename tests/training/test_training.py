"""Specification tests for training: the run folder, exact resumption after an interruption or a kill,
refusal of incompatible resumes and bad data, the data levels and the stored standardisation."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.numpy import load_file

from conftest import one_line
from toucan_speakemb import EmbeddingSet, SpeakEmbError, get_profile
from toucan_speakemb.training.config import TrainConfig
from toucan_speakemb.generate.generator import Generator
from toucan_speakemb.training.trainer import prepare_data, train

CLI = Path(sys.executable).with_name("toucan-speakemb")

TINY = {
    "seed": 3,
    "model": {"hidden": 32, "blocks": 1, "time_dim": 16, "dropout": 0.1},  # dropout: global torch RNG is used
    "diffusion": {"timesteps": 50},
    "train": {"steps": 30, "batch_size": 16, "threads": 1, "log_every": 5, "checkpoint_every": 10,
              "warmup_steps": 3, "keep_checkpoints": 2,
              "validation_share": 0.0},  # every speaker is drawn; model selection has tests of its own
    "sample": {"steps": 10, "batch_size": 64},
    # these tests specify per-dimension standardisation; the quantile transform has tests of its own
    "normalization": {"transform": "standard"},
}


def tiny(**sections) -> TrainConfig:
    d = yaml.safe_load(yaml.safe_dump(TINY))
    for sec, values in sections.items():
        if isinstance(values, dict):
            d.setdefault(sec, {}).update(values)
        else:
            d[sec] = values
    return TrainConfig.from_dict(d)


def make_data(n_speakers=12, per=3, dim=6, seed=0, profile="custom-test") -> EmbeddingSet:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (n_speakers, dim)) * np.linspace(0.5, 3, dim)
    counts = [per] * n_speakers if np.isscalar(per) else list(per)
    x = np.concatenate([centres[s] + 0.3 * rng.normal(size=(c, dim)) for s, c in enumerate(counts)])
    ids = [f"s{s:02d}" for s, c in enumerate(counts) for _ in range(c)]
    return EmbeddingSet(x.astype(np.float32), ids, get_profile(profile, dim))


def tensors(path: Path) -> dict:
    return load_file(str(path))


pytestmark = pytest.mark.usefixtures("one_torch_thread")

def assert_bitwise_equal(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), f"tensor {k} differs"


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted run of the TINY config on make_data()."""
    out = tmp_path_factory.mktemp("reference") / "run"
    cfg = tiny()
    gen_path = train(make_data(), out, cfg, progress=False)
    return out, cfg, gen_path


# ---- the run folder -------------------------------------------------------------------------------------

def test_a_finished_run_folder_holds_every_documented_artifact(reference_run):
    out, cfg, gen_path = reference_run
    assert gen_path == out / "generator.safetensors" and gen_path.is_file()
    for name in ("config.yaml", "loss.csv", "loss.png", "summary.json", "train.log", "train_speakers.safetensors"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("*.safetensors"))
    assert ckpts == ["step_0000020.safetensors", "step_0000030.safetensors"]  # keep_checkpoints = 2
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.rglob("*.tmp")]


def test_config_yaml_of_the_run_is_the_config_used(reference_run):
    out, cfg, _ = reference_run
    assert TrainConfig.from_yaml(out / "config.yaml") == cfg


def test_loss_csv_has_one_row_per_log_interval(reference_run):
    out, cfg, _ = reference_run
    lines = (out / "loss.csv").read_text().splitlines()
    assert lines[0] == "step,loss,lr"
    rows = [line.split(",") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == list(range(5, 31, 5))
    assert all(float(r[1]) > 0 and np.isfinite(float(r[1])) for r in rows)
    assert all(0 < float(r[2]) <= cfg.train.lr for r in rows)


def test_summary_and_log_describe_the_run(reference_run):
    import json

    out, cfg, _ = reference_run
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == cfg.train.steps
    assert s["training_speakers"] == 12 and s["level"] == "speaker" and s["training_rows"] == 12
    assert s["generator"] == "generator.safetensors"
    assert np.isfinite(s["final_loss"])
    assert "finished" in (out / "train.log").read_text()


def test_train_speakers_file_holds_the_speaker_means(reference_run):
    out, _, _ = reference_run
    ts = EmbeddingSet.load(out / "train_speakers.safetensors")
    means = make_data().speaker_means()
    assert ts.speaker_ids == means.speaker_ids
    np.testing.assert_array_equal(ts.embeddings, means.embeddings)


def test_generator_loads_and_samples_in_the_data_space(reference_run):
    out, _, _ = reference_run
    gen = Generator.load(out)
    x = gen.sample(4, seed=0)
    assert x.shape == (4, 6) and np.all(np.isfinite(x))
    assert gen.profile == make_data().profile


# ---- exact resumption -----------------------------------------------------------------------------------

@pytest.mark.parametrize("stops", [(10,), (17,), (7, 9)], ids=["at-checkpoint", "between-checkpoints", "twice"])
def test_an_interrupted_run_resumes_to_bitwise_the_same_generator(reference_run, tmp_path, stops):
    ref_out, cfg, ref_gen = reference_run
    out = tmp_path / "run"
    for k in stops:
        train(make_data(), out, cfg, progress=False, max_steps=k)
        assert not (out / "generator.safetensors").exists()
    train(make_data(), out, cfg, progress=False)
    assert_bitwise_equal(tensors(out / "generator.safetensors"), tensors(ref_gen))
    assert (out / "loss.csv").read_text() == (ref_out / "loss.csv").read_text()
    for name in ("step_0000020.safetensors", "step_0000030.safetensors"):
        assert_bitwise_equal(tensors(out / "checkpoints" / name), tensors(ref_out / "checkpoints" / name))


def test_a_subspace_network_trains_on_the_loss_in_the_eigenbasis_and_resumes_to_bitwise_the_same_generator(
        tmp_path, monkeypatch):
    from toucan_speakemb.diffusion.denoisers import GaussianResidual

    cfg = tiny(model={"subspace": "fixed", "subspace_dims": 2}, train={"steps": 30, "checkpoint_every": 10})
    steps = []
    real = GaussianResidual.loss_in_eigenbasis
    monkeypatch.setattr(GaussianResidual, "loss_in_eigenbasis",
                        lambda self, *a, **kw: (steps.append(1), real(self, *a, **kw))[1])
    train(make_data(), tmp_path / "a", cfg, progress=False)
    assert len(steps) == 30  # every step took the eigenbasis loss
    train(make_data(), tmp_path / "b", cfg, progress=False, max_steps=17)
    train(make_data(), tmp_path / "b", cfg, progress=False)
    assert_bitwise_equal(tensors(tmp_path / "b" / "generator.safetensors"),
                         tensors(tmp_path / "a" / "generator.safetensors"))


def test_a_run_started_before_the_width_rule_resumes_as_it_started_and_ends_as_if_never_interrupted(tmp_path):
    # its config.yaml lacks model.hidden_per_64_dims (the width was model.hidden): resumed with a config whose
    # rule would build another width, it keeps the key's old value, so the network and the generator are as
    # without a stop
    before = {"hidden": 40, "hidden_per_64_dims": 0, "subspace": "fixed", "subspace_dims": 2}
    started = tiny(model=before, train={"steps": 20, "checkpoint_every": 10})
    train(make_data(), tmp_path / "a", started, progress=False)
    train(make_data(), tmp_path / "b", started, progress=False, max_steps=10)
    stored = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    del stored["model"]["hidden_per_64_dims"]
    (tmp_path / "b" / "config.yaml").write_text(yaml.safe_dump(stored))
    narrower = tiny(model={**before, "hidden_per_64_dims": 8}, train={"steps": 20, "checkpoint_every": 10})
    assert narrower.model.width(2) == 8 and started.model.width(2) == 40
    train(make_data(), tmp_path / "b", narrower, progress=False)
    assert_bitwise_equal(tensors(tmp_path / "b" / "generator.safetensors"),
                         tensors(tmp_path / "a" / "generator.safetensors"))
    assert yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())["model"]["hidden_per_64_dims"] == 0
    with pytest.raises(SpeakEmbError) as ei:  # a run that has the key is resumed only with the same value
        train(make_data(), tmp_path / "a", narrower, progress=False)
    assert "model.hidden_per_64_dims" in one_line(ei)


def test_loss_log_of_a_resumed_run_equals_the_uninterrupted_one_when_logs_and_checkpoints_are_not_aligned(tmp_path):
    """log_every need not divide checkpoint_every; the running mean of an open log interval must survive."""
    cfg = tiny(train={"log_every": 4, "checkpoint_every": 10, "steps": 20})
    train(make_data(), tmp_path / "a", cfg, progress=False)
    train(make_data(), tmp_path / "b", cfg, progress=False, max_steps=10)
    train(make_data(), tmp_path / "b", cfg, progress=False)
    assert_bitwise_equal(tensors(tmp_path / "b" / "generator.safetensors"),
                         tensors(tmp_path / "a" / "generator.safetensors"))
    assert (tmp_path / "b" / "loss.csv").read_text() == (tmp_path / "a" / "loss.csv").read_text()


def test_rerunning_a_finished_run_keeps_the_same_generator(reference_run, tmp_path):
    _, cfg, ref_gen = reference_run
    out = tmp_path / "run"
    train(make_data(), out, cfg, progress=False)
    first = tensors(out / "generator.safetensors")
    train(make_data(), out, cfg, progress=False)
    assert_bitwise_equal(tensors(out / "generator.safetensors"), first)
    assert_bitwise_equal(first, tensors(ref_gen))


def test_different_seeds_give_different_generators(reference_run, tmp_path):
    _, _, ref_gen = reference_run
    train(make_data(), tmp_path / "run", tiny(seed=4), progress=False)
    a, b = tensors(tmp_path / "run" / "generator.safetensors"), tensors(ref_gen)
    assert any(not np.array_equal(a[k], b[k]) for k in a if k.startswith("model."))


def test_a_killed_cli_training_resumes_to_bitwise_the_same_generator(tmp_path):
    data = make_data().save(tmp_path / "data.safetensors")
    cfg = tiny(train={"steps": 600, "checkpoint_every": 100, "log_every": 10})
    cfg_file = tmp_path / "hparams.yaml"
    cfg_file.write_text(cfg.to_yaml())
    out = tmp_path / "killed"
    cmd = [str(CLI), "train", "--data", str(data), "--out", str(out), "--config", str(cfg_file), "--no-progress"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        while not list((out / "checkpoints").glob("step_*.safetensors")):
            assert proc.poll() is None, f"training ended before its first checkpoint: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "generator.safetensors").exists(), "the run finished before it was killed"

    rerun = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    ref = tmp_path / "reference"  # the uninterrupted run, in this process, while the command resumes
    train(EmbeddingSet.load(data), ref, cfg, progress=False)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "resuming from step_" in (out / "train.log").read_text()
    assert_bitwise_equal(tensors(out / "generator.safetensors"), tensors(ref / "generator.safetensors"))
    assert (out / "loss.csv").read_text() == (ref / "loss.csv").read_text()


# ---- refused resumes ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """The TINY config on make_data() stopped after 10 of its 30 steps: a checkpoint, no generator yet."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    train(make_data(), out, tiny(), progress=False, max_steps=10)
    return out


@pytest.fixture
def stopped_run(interrupted_run, tmp_path):
    """This test's own copy of the interrupted run (the tests resume it, or damage it, in place)."""
    return Path(shutil.copytree(interrupted_run, tmp_path / "run"))


def test_resuming_with_a_different_model_config_is_refused_naming_the_key(stopped_run):
    out = stopped_run
    before = (out / "config.yaml").read_text()
    with pytest.raises(SpeakEmbError) as ei:
        train(make_data(), out, tiny(model={"hidden": 64}), progress=False)
    msg = one_line(ei)
    assert "model.hidden" in msg
    assert (out / "config.yaml").read_text() == before


def test_resuming_with_another_number_of_steps_is_refused_since_the_lr_schedule_depends_on_it(stopped_run):
    out = stopped_run
    with pytest.raises(SpeakEmbError) as ei:
        train(make_data(), out, tiny(train={"steps": 12}), progress=False)
    assert "train.steps" in one_line(ei)
    assert not (out / "generator.safetensors").exists()


def test_resuming_on_data_of_another_dimension_is_refused_naming_both(stopped_run):
    out = stopped_run  # make_data(): 6-dim
    with pytest.raises(SpeakEmbError) as ei:
        train(make_data(dim=5), out, tiny(), progress=False)
    msg = one_line(ei)
    assert "6-dim" in msg and "5-dim" in msg


def test_resuming_on_other_data_of_the_same_dimension_is_refused(stopped_run):
    out = stopped_run  # make_data(): seed 0
    with pytest.raises(SpeakEmbError) as ei:
        train(make_data(seed=1), out, tiny(), progress=False)
    assert "different data" in one_line(ei)


def test_a_damaged_checkpoint_is_a_clear_error_not_a_traceback(stopped_run):
    out = stopped_run
    (ckpt,) = (out / "checkpoints").glob("step_*.safetensors")
    raw = ckpt.read_bytes()
    ckpt.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SpeakEmbError) as ei:
        train(make_data(), out, tiny(), progress=False)
    msg = one_line(ei)
    assert "damaged" in msg and ckpt.name in msg


def test_a_checkpoint_with_a_damaged_header_length_is_a_clear_error(stopped_run):
    out = stopped_run
    (ckpt,) = (out / "checkpoints").glob("step_*.safetensors")
    raw = bytearray(ckpt.read_bytes())
    raw[:8] = struct.pack("<Q", 10**12)
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(SpeakEmbError) as ei:
        train(make_data(), out, tiny(), progress=False)
    assert "damaged" in one_line(ei)


# ---- bad data -------------------------------------------------------------------------------------------

def test_one_speaker_only_is_refused(tmp_path):
    es = make_data(n_speakers=1, per=10)
    with pytest.raises(SpeakEmbError) as ei:
        train(es, tmp_path / "run", tiny(), progress=False)
    msg = one_line(ei)
    assert "at least 2 speakers" in msg and "1" in msg


def test_min_utterances_leaving_one_speaker_is_refused(tmp_path):
    es = make_data(n_speakers=3, per=(1, 2, 5))
    with pytest.raises(SpeakEmbError) as ei:
        prepare_data(es, tiny(data={"min_utterances": 3}))
    assert "at least 2 speakers" in one_line(ei)


def test_min_utterances_leaves_out_speakers_with_fewer_utterances():
    es = make_data(n_speakers=5, per=(1, 2, 3, 4, 5))
    data, speakers = prepare_data(es, tiny(data={"min_utterances": 3}))
    assert speakers.speaker_ids == ["s02", "s03", "s04"]
    assert data.n_speakers == 3 and len(data.rows) == 3
    data_u, _ = prepare_data(es, tiny(data={"min_utterances": 3, "level": "utterance"}))
    assert len(data_u.rows) == 3 + 4 + 5


# ---- data levels ----------------------------------------------------------------------------------------

def indexed_data(counts, dim=4, seed=0) -> EmbeddingSet:
    """Column 0 holds the row number, so a drawn row tells which utterance it is."""
    rng = np.random.default_rng(seed)
    n = sum(counts)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[:, 0] = np.arange(n)
    ids = [f"s{s}" for s, c in enumerate(counts) for _ in range(c)]
    return EmbeddingSet(x, ids, get_profile("custom-test", dim))


def draw_rows(data, n_batches=20, batch=5000, seed=0):
    """Indices into data.rows of the rows drawn by the training loop."""
    lookup = {row.tobytes(): i for i, row in enumerate(data.rows)}
    assert len(lookup) == len(data.rows)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        out += [lookup[r.tobytes()] for r in data.draw(batch, gen).numpy()]
    return np.array(out)


COUNTS = (1, 10, 100)


def _within(observed, p, n):
    return abs(observed - p) <= 5 * np.sqrt(p * (1 - p) / n)


def test_speaker_level_trains_on_one_mean_per_speaker_drawn_uniformly():
    es = indexed_data(COUNTS)
    data, means = prepare_data(es, tiny(data={"level": "speaker"}))
    assert len(data.rows) == 3
    np.testing.assert_allclose(data.standardizer.inverse(data.rows), means.embeddings, rtol=1e-5, atol=1e-4)
    drawn = draw_rows(data)
    for s in range(3):
        assert _within(np.mean(drawn == s), 1 / 3, len(drawn))


def test_utterance_level_draws_every_utterance_equally_often():
    es = indexed_data(COUNTS)
    data, _ = prepare_data(es, tiny(data={"level": "utterance"}))
    assert len(data.rows) == sum(COUNTS)
    drawn = draw_rows(data)
    spk = es.speaker_index()[drawn]
    for s, c in enumerate(COUNTS):
        assert _within(np.mean(spk == s), c / sum(COUNTS), len(drawn))


def test_balanced_level_draws_every_speaker_equally_often_however_unequal_their_utterance_counts():
    es = indexed_data(COUNTS)
    data, _ = prepare_data(es, tiny(data={"level": "balanced"}))
    assert len(data.rows) == sum(COUNTS)
    drawn = draw_rows(data)
    row_ids = np.rint(data.standardizer.inverse(data.rows)[:, 0]).astype(int)
    spk = es.speaker_index()[row_ids[drawn]]
    for s in range(3):
        assert _within(np.mean(spk == s), 1 / 3, len(drawn))
    # and, within a speaker, each of its utterances equally often
    s2 = row_ids[drawn][spk == 2]
    hist = np.bincount(s2 - 11, minlength=100)
    assert hist.min() > 0
    expected = len(s2) / 100
    assert np.all(np.abs(hist - expected) <= 5 * np.sqrt(expected))


def test_balanced_level_draws_come_from_the_loop_generator_only():
    es = indexed_data(COUNTS)
    data, _ = prepare_data(es, tiny(data={"level": "balanced"}))
    a = data.draw(64, torch.Generator().manual_seed(5))
    torch.manual_seed(123)
    b = data.draw(64, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


# ---- standardisation ------------------------------------------------------------------------------------

def test_speaker_level_standardisation_is_the_mean_and_std_of_speaker_means():
    es = make_data(n_speakers=7, per=(1, 2, 3, 4, 5, 6, 7))
    data, _ = prepare_data(es, tiny())
    x = es.embeddings.astype(np.float64)
    ids = np.array(es.speaker_ids)
    means = np.stack([x[ids == s].mean(0) for s in es.speakers])
    np.testing.assert_allclose(data.standardizer.mean, means.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data.standardizer.std, means.std(0), rtol=1e-5)


def test_utterance_level_standardisation_is_the_plain_mean_and_std():
    es = make_data(n_speakers=7, per=(1, 2, 3, 4, 5, 6, 7))
    data, _ = prepare_data(es, tiny(data={"level": "utterance"}))
    x = es.embeddings.astype(np.float64)
    np.testing.assert_allclose(data.standardizer.mean, x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data.standardizer.std, x.std(0), rtol=1e-5)


def test_balanced_level_standardisation_weighs_every_speaker_the_same():
    es = make_data(n_speakers=7, per=(1, 2, 3, 4, 5, 6, 40))
    data, _ = prepare_data(es, tiny(data={"level": "balanced"}))
    x = es.embeddings.astype(np.float64)
    ids = np.array(es.speaker_ids)
    groups = [x[ids == s] for s in es.speakers]
    mean = np.mean([g.mean(0) for g in groups], axis=0)
    var = np.mean([((g - mean) ** 2).mean(0) for g in groups], axis=0)
    np.testing.assert_allclose(data.standardizer.mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data.standardizer.std, np.sqrt(var), rtol=1e-5)


def test_standardised_training_rows_have_zero_mean_and_unit_std():
    data, _ = prepare_data(make_data(n_speakers=20), tiny())
    np.testing.assert_allclose(data.rows.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(data.rows.std(0), 1, atol=1e-4)


def test_constant_dimension_gets_the_std_floor():
    es = make_data(n_speakers=5)
    x = es.embeddings.copy()
    x[:, 2] = 4.0
    es = EmbeddingSet(x, es.speaker_ids, es.profile)
    data, _ = prepare_data(es, tiny(normalization={"min_std": 0.01}))
    assert data.standardizer.std[2] == np.float32(0.01)
    assert np.all(np.isfinite(data.rows)) and np.all(data.rows[:, 2] == 0)


def test_standardisation_can_be_switched_off():
    data, _ = prepare_data(make_data(), tiny(normalization={"standardize": False}))
    assert np.all(data.standardizer.mean == 0) and np.all(data.standardizer.std == 1)


def test_standardisation_stored_in_the_generator_equals_the_datas(reference_run):
    out, _, _ = reference_run
    es = make_data()
    x = es.embeddings.astype(np.float64)
    ids = np.array(es.speaker_ids)
    means = np.stack([x[ids == s].mean(0) for s in es.speakers])
    t = tensors(out / "generator.safetensors")
    np.testing.assert_allclose(t["norm.mean"], means.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t["norm.std"], means.std(0), rtol=1e-5)
    gen = Generator.load(out)
    np.testing.assert_array_equal(gen.standardizer.mean, t["norm.mean"])
    np.testing.assert_array_equal(gen.standardizer.std, t["norm.std"])


# ---- model selection on validation speakers ------------------------------------------------------------

VALIDATED = {"validation_share": 0.25, "validate_every": 5, "patience": 0, "select": "best"}


@pytest.mark.parametrize("level", ["speaker", "utterance", "balanced"])
def test_validation_speakers_are_never_drawn_for_training(level):
    es = indexed_data((2, 3, 4, 5, 6, 7, 8, 9))
    data, _ = prepare_data(es, tiny(data={"level": level}, train=VALIDATED))
    assert data.validation.sum() == 2
    drawn = set(draw_rows(data, n_batches=4, batch=2000).tolist())
    held = set(np.flatnonzero(data.validation[data.row_speaker]).tolist())
    assert drawn and not drawn & held
    assert drawn == set(range(len(data.rows))) - held  # every other row is drawn
    assert len(data.validation_rows) == len(held)


def test_validation_loss_is_the_same_for_the_same_weights_and_differs_for_others():
    from toucan_speakemb.training.trainer import build_diffusion, build_model, validation_loss

    cfg = tiny()
    data, _ = prepare_data(make_data(), cfg)
    model = build_model(cfg, 6)
    a = validation_loss(build_diffusion(cfg), model, data.rows, seed=1)
    assert a == validation_loss(build_diffusion(cfg), model, data.rows, seed=1)
    torch.nn.init.normal_(model.net.out.weight)
    assert validation_loss(build_diffusion(cfg), model, data.rows, seed=1) != a


@pytest.fixture(scope="module")
def validated_run(tmp_path_factory):
    """An uninterrupted run of the TINY config with validation speakers and model selection."""
    out = tmp_path_factory.mktemp("validated") / "run"
    train(make_data(), out, tiny(train=VALIDATED), progress=False)
    return out


# lr 50 ruins the network at once; the EMA of decay 0.95 needs 20 steps to reflect it
PATIENT = {**VALIDATED, "lr": 50.0, "grad_clip": 0.0, "patience": 2, "ema_decay": 0.95, "steps": 60}


@pytest.fixture(scope="module")
def patient_run(tmp_path_factory):
    """An uninterrupted run with patience that stops early (PATIENT)."""
    out = tmp_path_factory.mktemp("patient") / "run"
    train(make_data(), out, tiny(train=PATIENT), progress=False)
    return out


def test_the_generator_keeps_the_weights_of_the_best_validation_score(validated_run):
    out = validated_run
    scores = np.loadtxt(out / "validation.csv", delimiter=",", skiprows=1)
    assert scores[:, 0].tolist() == [0, 5, 10, 15, 20, 25, 30]
    best = int(scores[np.argmin(scores[:, 1]), 0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selected_step"] == best and summary["steps"] == 30 and summary["validation_speakers"] == 3
    assert Generator.load(out).meta["selected_step"] == best


def test_selecting_step_0_gives_the_untrained_model(tmp_path):
    # a learning rate this large ruins the network at once: the untrained model (the Gaussian) scores best
    out = tmp_path / "run"
    train(make_data(), out, tiny(train={**VALIDATED, "lr": 50.0, "grad_clip": 0.0}), progress=False)
    assert json.loads((out / "summary.json").read_text())["selected_step"] == 0
    weights = tensors(out / "generator.safetensors")
    assert not weights["model.net.out.weight"].any() and not weights["model.net.out.bias"].any()


def test_patience_stops_training_and_the_stopped_run_is_finished(tmp_path):
    out = tmp_path / "run"
    # ema_decay 0.8: the EMA's memory (5 steps) is shorter than patience, so patience alone decides
    cfg = tiny(train={**VALIDATED, "lr": 50.0, "grad_clip": 0.0, "patience": 2, "ema_decay": 0.8})
    train(make_data(), out, cfg, progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_early"] and summary["steps"] == 10 and summary["selected_step"] == 0
    first = tensors(out / "generator.safetensors")
    train(make_data(), out, cfg, progress=False)  # a finished run stays finished
    assert_bitwise_equal(tensors(out / "generator.safetensors"), first)


def test_patience_waits_for_the_ema_to_catch_up_before_stopping(patient_run):
    # The EMA of decay 0.95 needs 20 steps to reflect the network: a run with patience 2 (10 steps) keeps
    # going until 20 steps after its best score, then stops.
    out = patient_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selected_step"] == 0 and summary["stopped_early"] and summary["steps"] == 20


def test_select_last_keeps_the_final_weights_once_the_network_beat_the_gaussian_fit(tmp_path):
    # 40 speakers, lr 0.03: the network beats step 0 (the Gaussian fit) at step 35, then scores worse again
    run = {**VALIDATED, "lr": 0.03, "steps": 60, "patience": 1}
    for select in ("best", "last"):
        train(make_data(n_speakers=40), tmp_path / select, tiny(train={**run, "select": select}), progress=False)
    scores = np.loadtxt(tmp_path / "best" / "validation.csv", delimiter=",", skiprows=1)
    best = json.loads((tmp_path / "best" / "summary.json").read_text())
    assert 0 < best["selected_step"] < 60 and scores[-1, 1] > scores[:, 1].min()
    summary = json.loads((tmp_path / "last" / "summary.json").read_text())
    assert summary["steps"] == 60 and summary["selected_step"] == 60 and not summary["stopped_early"]
    final = tensors(tmp_path / "last" / "checkpoints" / "step_0000060.safetensors")
    weights = tensors(tmp_path / "last" / "generator.safetensors")
    for k in (k for k in final if k.startswith("ema.")):
        assert weights["model." + k[len("ema."):]].tobytes() == final[k].tobytes(), k
    assert Generator.load(tmp_path / "last").meta["selected_step"] == 60


def test_select_last_ends_a_run_that_overfits_beyond_the_tolerance(tmp_path, monkeypatch):
    # 40 speakers, lr 0.03, an EMA of 20 steps' memory: the network beats step 0 at step 20, then scores worse.
    # With no tolerance the run ends 20 steps (the EMA's memory) after its best, long before patience (50
    # scores) would; here the best weights' voices are judged the better, so they are kept, as "best" does
    _judged_as(monkeypatch, final_f1=0.5, best_f1=0.8)
    run = {**VALIDATED, "lr": 0.03, "steps": 100, "patience": 50, "ema_decay": 0.95}
    train(make_data(n_speakers=40), tmp_path / "strict", tiny(train={**run, "select": "last", "overfit_tolerance": 0.0}),
          progress=False)
    scores = np.loadtxt(tmp_path / "strict" / "validation.csv", delimiter=",", skiprows=1)
    summary = json.loads((tmp_path / "strict" / "summary.json").read_text())
    assert summary["selected_step"] == int(scores[np.argmin(scores[:, 1]), 0]) > 0
    assert scores[-1, 1] > scores[:, 1].min()
    assert summary["stopped_early"] and summary["steps"] == summary["selected_step"] + 20 < 100
    assert Generator.load(tmp_path / "strict").meta["selected_step"] == summary["selected_step"]


OVERFITTING = {**VALIDATED, "lr": 0.03, "steps": 100, "patience": 50, "ema_decay": 0.95, "select": "last",
               "overfit_tolerance": 0.0}


def _ema_of_checkpoint(run, step):
    final = tensors(run / "checkpoints" / f"step_{step:07d}.safetensors")
    return {"model." + k[len("ema."):]: v for k, v in final.items() if k.startswith("ema.")}


def test_when_the_network_overfits_the_weights_whose_voices_score_higher_are_kept(tmp_path):
    # the guard ends the run; the best-scoring and the final weights each sample at their own temperature
    # and are judged by their voices' precision and recall against the 10 validation speakers
    out = tmp_path / "run"
    train(make_data(n_speakers=40), out, tiny(train=OVERFITTING), progress=False)
    summary = json.loads((out / "summary.json").read_text())
    judged = summary["overfitting"]
    f1 = {name: judged[name]["voices"]["f1"] for name in ("best", "final")}
    for name in ("best", "final"):
        q = judged[name]["voices"]
        assert 0 <= q["precision"] <= 1 and 0 <= q["recall"] <= 1
    kept = "final" if f1["final"] > f1["best"] else "best"
    assert judged["kept"] == kept
    assert summary["selected_step"] == judged[kept]["step"] and summary["temperature"]["value"] == judged[kept][
        "temperature"]
    assert judged["final"]["step"] == summary["steps"] > judged["best"]["step"] > 0
    if kept == "final":  # the generator holds the final EMA weights
        weights = tensors(out / "generator.safetensors")
        for k, v in _ema_of_checkpoint(out, summary["steps"]).items():
            assert weights[k].tobytes() == v.tobytes(), k


def _judged_as(monkeypatch, final_f1, best_f1):
    """voice_quality and choose_temperature answering per set of weights (final first, then best), with
    temperatures that tell them apart."""
    from toucan_speakemb.training import trainer

    scores = iter([{"precision": 0.9, "recall": 0.9, "f1": final_f1}, {"precision": 1.0, "recall": 0.1, "f1": best_f1}])
    temps = iter([{"value": 1.25, "reached": True, "target_median": 0.5, "median": 0.5, "method": "final"},
                  {"value": 0.75, "reached": True, "target_median": 0.5, "median": 0.5, "method": "best"}])
    monkeypatch.setattr(trainer, "voice_quality", lambda *a, **k: next(scores))
    monkeypatch.setattr(trainer, "choose_temperature", lambda *a, **k: next(temps))


def test_the_final_weights_of_an_overfitting_network_are_kept_when_their_voices_are_better(tmp_path, monkeypatch):
    # the best-scoring weights of a run that overfits a little can shrink to a few voices at the temperature
    # that makes them as novel as real new speakers: then the final ones are kept, with their own temperature
    _judged_as(monkeypatch, final_f1=0.9, best_f1=0.18)
    out = tmp_path / "run"
    train(make_data(n_speakers=40), out, tiny(train=OVERFITTING), progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overfitting"]["kept"] == "final" and summary["selected_step"] == summary["steps"]
    assert summary["temperature"]["value"] == 1.25 and summary["temperature"]["method"] == "final"
    assert Generator.load(out).temperature == 1.25
    weights = tensors(out / "generator.safetensors")
    for k, v in _ema_of_checkpoint(out, summary["steps"]).items():
        assert weights[k].tobytes() == v.tobytes(), k
    assert "kept the final weights" in (out / "train.log").read_text()


def test_the_best_weights_of_an_overfitting_network_are_kept_with_their_own_temperature(tmp_path, monkeypatch):
    _judged_as(monkeypatch, final_f1=0.5, best_f1=0.8)
    out = tmp_path / "run"
    train(make_data(n_speakers=40), out, tiny(train=OVERFITTING), progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overfitting"]["kept"] == "best" and summary["selected_step"] == summary["overfitting"]["best"]["step"]
    assert summary["temperature"]["method"] == "best" and Generator.load(out).temperature == 0.75
    assert "their voices are no better" in (out / "train.log").read_text()


def test_each_set_of_weights_of_an_overfitting_network_is_judged_with_its_own_direction_factors(tmp_path,
                                                                                                 monkeypatch):
    from toucan_speakemb.training import trainer

    chosen_with, judged_with = [], []
    monkeypatch.setattr(trainer, "direction_scales", lambda diffusion, model, data, cfg, step: [float(step)])

    def choose(diffusion, model, data, means, cfg, rest=1.0, directions=None):
        chosen_with.append(directions)
        return {"value": 1.0, "chosen": True, "rule": "novelty", "reached": True, "target_median": 0.5,
                "median": 0.5, "method": "stand-in", "rest_temperature": rest, "direction_scales": directions}

    def quality(*a, **k):
        judged_with.append(k["directions"])
        return {"precision": 0.9, "recall": 0.9, "f1": 0.9}

    monkeypatch.setattr(trainer, "choose_temperature", choose)
    monkeypatch.setattr(trainer, "voice_quality", quality)
    out = tmp_path / "run"
    train(make_data(n_speakers=40), out, tiny(train=OVERFITTING), progress=False)
    summary = json.loads((out / "summary.json").read_text())
    final, best = summary["overfitting"]["final"]["step"], summary["overfitting"]["best"]["step"]
    assert chosen_with == judged_with == [[float(final)], [float(best)]]
    assert summary["temperature"]["direction_scales"] == [float(best)]  # the kept weights' (equal voices: best)


def test_a_run_that_does_not_overfit_records_no_comparison(validated_run, tmp_path):
    assert json.loads((validated_run / "summary.json").read_text())["overfitting"] is None  # select best
    run = {**VALIDATED, "lr": 0.03, "steps": 60, "patience": 1, "select": "last"}  # select last, within tolerance
    train(make_data(n_speakers=40), tmp_path / "last", tiny(train=run), progress=False)
    summary = json.loads((tmp_path / "last" / "summary.json").read_text())
    assert summary["selected_step"] == 60 and summary["overfitting"] is None


def test_select_last_keeps_step_0_and_stops_by_patience_when_the_network_never_beat_it(tmp_path):
    # lr 1 without clipping spoils the network at once: step 0 (the Gaussian fit) stays the best score
    ruinous = {**VALIDATED, "lr": 1.0, "grad_clip": 0.0, "patience": 2, "ema_decay": 0.8, "steps": 60}
    for select in ("best", "last"):
        out = tmp_path / select
        train(make_data(), out, tiny(train={**ruinous, "select": select}), progress=False)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["selected_step"] == 0 and summary["stopped_early"] and summary["steps"] == 10, select
        weights = tensors(out / "generator.safetensors")
        assert not weights["model.net.out.weight"].any()


def test_ema_memory():
    from toucan_speakemb.training.trainer import ema_memory

    assert ema_memory(0.999) == 1000 and ema_memory(0.95) == 20 and ema_memory(0.0) == 1 and ema_memory(1.0) == 0
    assert ema_memory(0.9999) == 10000 and ema_memory(0.9) == 10


def test_ema_decay_ramps_up_to_its_cap():
    from toucan_speakemb.training.trainer import ema_decay_at

    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)  # the first update takes 90% of the trained weights
    assert ema_decay_at(990, 0.999) == pytest.approx(0.991)
    assert ema_decay_at(4999, 0.999) == pytest.approx(0.99820, abs=1e-5)  # the default run's last step: below the cap
    assert ema_decay_at(8991, 0.999) == 0.999 and ema_decay_at(20000, 0.999) == 0.999
    assert ema_decay_at(100, 0.0) == 0.0  # a zero cap: no averaging at all


def test_validation_loss_builds_no_autograd_graph():
    from toucan_speakemb.training.trainer import build_diffusion, build_model, validation_loss

    cfg = tiny()
    data, _ = prepare_data(make_data(), cfg)
    model = build_model(cfg, 6)
    with torch.enable_grad():
        # run under an explicit grad context: the function itself must switch gradients off
        seen = []
        hook = model.register_forward_hook(lambda m, i, o: seen.append(torch.is_grad_enabled()))
        validation_loss(build_diffusion(cfg), model, data.rows, seed=1)
        hook.remove()
    assert seen and not any(seen)


def test_a_run_stopped_by_patience_resumes_to_bitwise_the_same_generator(patient_run, tmp_path):
    cfg, ref = tiny(train=PATIENT), patient_run
    train(make_data(), tmp_path / "run", cfg, progress=False, max_steps=15)
    train(make_data(), tmp_path / "run", cfg, progress=False)
    for run in (ref, tmp_path / "run"):
        assert json.loads((run / "summary.json").read_text())["steps"] == 20
    assert_bitwise_equal(tensors(tmp_path / "run" / "generator.safetensors"), tensors(ref / "generator.safetensors"))


@pytest.mark.parametrize("stops", [(7,), (10, 3)], ids=["between-checkpoints", "twice"])
def test_a_validated_run_resumes_to_bitwise_the_same_generator(validated_run, tmp_path, stops):
    cfg, ref = tiny(train=VALIDATED), validated_run
    for k in stops:
        train(make_data(), tmp_path / "run", cfg, progress=False, max_steps=k)
    train(make_data(), tmp_path / "run", cfg, progress=False)
    assert_bitwise_equal(tensors(tmp_path / "run" / "generator.safetensors"), tensors(ref / "generator.safetensors"))
    assert (tmp_path / "run" / "validation.csv").read_text() == (ref / "validation.csv").read_text()


# ---- transforms chosen from the training data -----------------------------------------------------------

def test_polar_auto_is_on_for_fixed_length_vectors_only():
    from toucan_speakemb.training.trainer import use_polar

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True) * rng.uniform(0.95, 0.97, (50, 1))
    assert use_polar(tiny(), unit) and not use_polar(tiny(), x)
    assert not use_polar(tiny(normalization={"polar": "never"}), unit)
    assert use_polar(tiny(normalization={"polar": "always"}), x)


def test_a_polar_generator_samples_vectors_of_training_lengths(tmp_path):
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(60, 6)))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    es = EmbeddingSet(x, [f"s{i // 3}" for i in range(60)], get_profile("custom-test", 6))
    train(es, tmp_path / "run", tiny(normalization={"transform": "quantile", "polar": "always"}), progress=False)
    gen = Generator.load(tmp_path / "run")
    assert gen.model_dim == 7 and gen.dim == 6
    g = gen.sample(500, seed=1)
    r = np.linalg.norm(es.speaker_means().embeddings, axis=1)
    assert g.shape == (500, 6) and g.min() >= 0
    assert np.linalg.norm(g, axis=1).min() >= r.min() - 1e-5 and np.linalg.norm(g, axis=1).max() <= r.max() + 1e-5


@pytest.mark.parametrize("subspace,k", [("fixed", 2), ("auto", None)])
def test_a_subspace_generator_round_trips_through_its_file(tmp_path, subspace, k):
    cfg = tiny(model={"subspace": subspace, "subspace_dims": 2})
    train(make_data(n_speakers=30), tmp_path / "run", cfg, progress=False)
    weights = tensors(tmp_path / "run" / "generator.safetensors")
    assert weights["model.basis"].shape[0] == 6 and (k is None or weights["model.basis"].shape[1] == k)
    gen = Generator.load(tmp_path / "run")
    np.testing.assert_array_equal(gen.sample(8, seed=2), gen.sample(8, seed=2))


def test_transform_auto_is_quantile_for_data_with_a_point_mass_only():
    from toucan_speakemb.training.trainer import transform_kind

    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 5))
    relu = x.copy()
    relu[:, 3] = np.maximum(relu[:, 3], 0)  # about half exact zeros in one dimension
    assert transform_kind(tiny(normalization={"transform": "auto"}), x) == "standard"
    assert transform_kind(tiny(normalization={"transform": "auto"}), relu) == "quantile"
    few = x.copy()
    few[:3, 1] = 7.0  # 3% of rows share a value: below the 5% point-mass share
    assert transform_kind(tiny(normalization={"transform": "auto"}), few) == "standard"
    assert transform_kind(tiny(normalization={"transform": "quantile"}), x) == "quantile"


def test_clip_auto_is_on_for_data_with_a_point_mass_only_and_a_clipping_generator_keeps_its_floors(tmp_path):
    from toucan_speakemb.training.trainer import use_clip

    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 6))
    relu = np.maximum(x, 0)
    assert use_clip(tiny(), relu, "standard") and not use_clip(tiny(), x, "standard")
    assert not use_clip(tiny(), relu, "quantile")  # it keeps every value in range by itself
    # transform auto chose the standard transform only because it found no point mass: no second sort
    assert not use_clip(tiny(normalization={"transform": "auto"}), relu, "standard")
    assert not use_clip(tiny(normalization={"clip": "never"}), relu, "standard")
    assert use_clip(tiny(normalization={"clip": "always"}), x, "standard")
    es = EmbeddingSet(relu.astype(np.float32), [f"s{i // 2}" for i in range(100)], get_profile("custom-test", 6))
    train(es, tmp_path / "run", tiny(normalization={"transform": "standard"}), progress=False)
    g = Generator.load(tmp_path / "run").sample(500, seed=1, temperature=1.5)
    means = es.speaker_means().embeddings
    assert g.min() >= 0 and np.all(g <= means.max(0) + 1e-6)


def test_a_subspace_leaves_the_other_directions_to_the_gaussian_fit_unless_they_are_pooled():
    from toucan_speakemb.diffusion.denoisers import GaussianResidual, ResidualMLPDenoiser

    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(size=(400, 6)) * np.array([3.0, 2.0, 1.5, 1.0, 0.5, 0.2]) @ rng.normal(size=(6, 6)))
    abar = torch.linspace(0.999, 0.01, 50)

    def untrained(subspace, rest="full"):
        model = GaussianResidual(ResidualMLPDenoiser(subspace or 6, 50, hidden=8, blocks=1, time_dim=8), 6, abar,
                                 "v", subspace=subspace, rest=rest)
        model.fit_gaussian(x)
        return model

    xt, t = torch.from_numpy(rng.normal(size=(32, 6))).float(), torch.full((32,), 20)
    whole = untrained(None)(xt, t)
    # the network starts at zero: every untrained model is its Gaussian part alone
    torch.testing.assert_close(untrained(2)(xt, t), whole, rtol=1e-4, atol=1e-5)
    pooled = untrained(2, "isotropic")
    assert torch.allclose(pooled.eigvals[2:], pooled.eigvals[2:].mean())
    assert not torch.allclose(pooled(xt, t), whole, rtol=1e-2, atol=1e-3)
    with pytest.raises(ValueError, match="rest"):
        untrained(2, "pooled")


def test_on_the_demos_540_speakers_the_default_network_sees_34_directions_128_units_wide():
    # one direction per 16 rows the loop learns from (the least: 32), and 128 units per 64 directions:
    # a network sized to the data, which overfits later than a 64-direction, 256-unit one (docs/benchmarks.md)
    from toucan_speakemb.core.synthetic import builtin_set
    from toucan_speakemb.training.trainer import build_model, subspace_dims

    cfg = TrainConfig()
    data, _ = prepare_data(builtin_set("builtin:synthetic"), cfg)
    k = subspace_dims(cfg, data)
    assert data.n_train_rows == 540 and k == 34
    net = build_model(cfg, data.standardizer.model_dim, None, k).net
    assert net.inp.in_features == 34 and net.inp.out_features == 128


@pytest.mark.parametrize("level,n_speakers,per,share,expected", [
    ("speaker", 200, 2, 0.0, 200 // 4),        # one direction per 4 speaker rows
    ("speaker", 200, 2, 0.2, 160 // 4),        # validation speakers' rows are not learned from
    ("balanced", 40, 5, 0.0, 200 // 4),        # utterance rows count
    ("speaker", 400, 2, 0.0, None),            # k >= d: the network sees every direction
    ("speaker", 40, 2, 0.0, 20),               # never fewer than subspace_dims
])
def test_a_scaled_subspace_grows_with_the_rows_the_network_learns_from(level, n_speakers, per, share, expected):
    from toucan_speakemb.training.trainer import subspace_dims

    cfg = tiny(model={"subspace": "scaled", "subspace_rows_per_dim": 4, "subspace_dims": 20}, data={"level": level},
               train={"validation_share": share})
    data, _ = prepare_data(make_data(n_speakers=n_speakers, per=per, dim=64), cfg)
    assert subspace_dims(cfg, data) == expected

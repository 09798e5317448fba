"""The embedded-default main job (`demo`), the built-in data of known structure, the recipes, and `doctor`."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from toucan_speakemb.cli.main import main
from toucan_speakemb.training.config import TrainConfig
from toucan_speakemb.core.synthetic import SyntheticPopulation, builtin_set

ROOT = Path(__file__).resolve().parents[2]


def test_demo_trains_samples_and_writes_a_report_with_plots(tmp_path, monkeypatch):
    import toucan_speakemb.demo as demo
    from threadpoolctl import threadpool_info, threadpool_limits

    pools_in_report, real_evaluate = [], demo.evaluate

    def evaluate(*args, **kwargs):
        pools_in_report.extend(p["num_threads"] for p in threadpool_info())
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(demo, "evaluate", evaluate)
    out = tmp_path / "demo"
    with threadpool_limits(3):  # wider than the demo's one thread on any machine
        r = CliRunner().invoke(main, ["demo", "--out", str(out), "--steps", "30", "--voices", "40", "--no-progress"])
    assert r.exit_code == 0, r.output
    # the report's numpy work too runs on the training's one thread, so that the demo is fast beside another job
    assert pools_in_report and set(pools_in_report) == {1}
    report = (out / "report.md").read_text()
    summary = json.loads((out / "run" / "summary.json").read_text())
    assert "trained 30 steps in" in report and f"kept the weights of step {summary['selected_step']};" in report
    for row in ("fresh true speakers (reference)", "generator (default recipe)", "Gaussian fit",
                "Gaussian mixture", "real held-out speakers"):
        assert f"| {row} |" in report
    # the generator along its temperature, like the baselines along their knobs: a row at the held-out
    # speakers' novelty and a curve on the precision-novelty plot
    assert "| generator (default recipe), as novel as held-out (temperature " in report
    metrics = json.loads((out / "metrics.json").read_text())
    assert "generator (default recipe)" in metrics["precision_novelty_curves"]
    for plot in ("pca.png", "tsne.png", "novelty.png", "distinctness.png", "loss.png"):
        assert (out / plot).stat().st_size > 1000, plot
    assert "data:image/png;base64," in (out / "report.html").read_text()
    bank = np.load(out / "voices.npy")
    assert bank.shape == (40, 704) and np.isfinite(bank).all()


def test_builtin_data_is_reproducible_and_has_speaker_structure():
    a, b = builtin_set("builtin:synthetic-small"), builtin_set("builtin:synthetic-small")
    assert np.array_equal(a.embeddings, b.embeddings) and a.speaker_ids == b.speaker_ids
    means = a.speaker_means().embeddings
    idx = a.speaker_index()
    within = np.mean([a.embeddings[idx == i].var(0).sum() for i in range(len(means))])
    between = means.var(0).sum()
    assert between > within  # speakers differ more than their recordings do


def test_fresh_speakers_of_the_population_are_new_draws_of_the_same_distribution():
    pop = SyntheticPopulation(dim=32, hidden=32)
    x = pop.sample_speakers(4000, np.random.default_rng(1))
    y = pop.sample_speakers(4000, np.random.default_rng(2))
    assert not np.allclose(x[:10], y[:10])
    np.testing.assert_allclose(x.mean(0), y.mean(0), atol=0.15)
    np.testing.assert_allclose(x.var(0), y.var(0), rtol=0.2, atol=0.05)


def test_speaker_distribution_of_the_population_is_not_gaussian():
    pop = SyntheticPopulation(dim=32, hidden=32)
    x = pop.sample_speakers(6000, np.random.default_rng(0))
    z = (x - x.mean(0)) / x.std(0)
    excess_kurtosis = (z**4).mean(0) - 3
    skew = (z**3).mean(0)
    # a Gaussian would give |skew|, |excess kurtosis| ~ 0.03 at this n in every dimension
    assert np.max(np.abs(skew)) > 0.3 or np.max(np.abs(excess_kurtosis)) > 0.3


@pytest.mark.parametrize("recipe", sorted(p for p in (ROOT / "recipes").glob("*/*.yaml") if (p.parent / "train.py").exists()),
                         ids=lambda p: f"{p.parent.name}/{p.name}")  # training recipes (batch_voices is not one)
def test_every_recipe_yaml_is_a_complete_valid_config(recipe):
    import yaml

    cfg = TrainConfig.from_yaml(recipe)
    written = yaml.safe_load(recipe.read_text())
    # a recipe holds every hyperparameter: each section it names lists all of that section's keys
    for section, values in cfg.to_dict().items():
        if isinstance(values, dict) and section != "model":
            assert set(written.get(section, {})) == set(values), f"{recipe}: section {section} incomplete"


def test_default_recipe_learns_speakers_with_the_residual_mlp_and_samples_with_ddim():
    cfg = TrainConfig.from_yaml(ROOT / "recipes" / "default" / "hparams.yaml")
    assert cfg.data.level == "speaker" and cfg.model.kind == "resmlp" and cfg.sample.sampler == "ddim"


def test_source_baseline_recipe_runs_one_schedule_by_one_command(tmp_path):
    out = tmp_path / "base"
    r = subprocess.run([sys.executable, str(ROOT / "recipes" / "source_baseline" / "train.py"), "--only", "sigmoid",
                        "--out", str(out), "--no-progress", "train.steps=5", "sample.steps=10"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cfg = TrainConfig.from_yaml(out / "config.yaml")
    assert (cfg.diffusion.schedule, cfg.model.kind, cfg.diffusion.loss) == ("sigmoid", "fc3", "l1")
    assert (out / "generator.safetensors").exists()


def test_source_baseline_recipe_refuses_an_unknown_schedule(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "recipes" / "source_baseline" / "train.py"), "--only", "tanh"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode != 0 and "error:" in r.stderr and "linear" in r.stderr


def test_doctor_reports_versions_and_torchaudio_state():
    r = CliRunner().invoke(main, ["doctor"])
    assert "torch" in r.output and "speechbrain" in r.output
    assert r.exit_code in (0, 1)
    assert ("FAILS" in r.output) == (r.exit_code == 1)


def test_torchaudio_repair_is_a_no_op_when_torchaudio_imports():
    from toucan_speakemb.cli import doctor  # the module (cli.main.doctor is the click command)

    if doctor.torchaudio_import_error() is not None:
        pytest.skip("torchaudio does not import here; the repair itself runs in scripts/install.sh")
    msg, moved = doctor.repair_torchaudio()
    assert moved == [] and "nothing to repair" in msg


def test_torchaudio_repair_disables_an_extension_that_cannot_load_and_undo_restores_it(tmp_path, monkeypatch):
    from toucan_speakemb.cli import doctor  # the module (cli.main.doctor is the click command)

    lib = tmp_path / "torchaudio" / "lib"
    lib.mkdir(parents=True)
    (lib / "_torchaudio.abi3.so").write_bytes(b"broken")
    monkeypatch.setattr(doctor, "_torchaudio_lib_dir", lambda: lib)
    # the import fails while the broken library is present, and works once it is gone
    monkeypatch.setattr(doctor, "torchaudio_import_error",
                        lambda: "OSError: libc10_cuda.so" if (lib / "_torchaudio.abi3.so").exists() else None)
    msg, moved = doctor.repair_torchaudio()
    assert [p.name for p in moved] == ["_torchaudio.abi3.so.disabled"] and "disabled 1" in msg
    msg, moved = doctor.repair_torchaudio(undo=True)
    assert (lib / "_torchaudio.abi3.so").exists() and len(moved) == 1


def test_torchaudio_repair_puts_files_back_when_it_does_not_help(tmp_path, monkeypatch):
    from toucan_speakemb.cli import doctor  # the module (cli.main.doctor is the click command)

    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "x.so").write_bytes(b"")
    monkeypatch.setattr(doctor, "_torchaudio_lib_dir", lambda: lib)
    monkeypatch.setattr(doctor, "torchaudio_import_error", lambda: "ImportError: something else")
    msg, moved = doctor.repair_torchaudio()
    assert moved == [] and "still fails" in msg and (lib / "x.so").exists()


def test_built_in_defaults_are_the_default_recipe():
    recipe = TrainConfig.from_yaml(ROOT / "recipes" / "default" / "hparams.yaml").to_dict()
    recipe["data"]["path"] = None
    assert recipe == TrainConfig().to_dict()


def test_doctor_flags_a_cuda_built_torchaudio_beside_a_cpu_torch(tmp_path, monkeypatch):
    import importlib.metadata as md

    from toucan_speakemb.cli import doctor

    lib = tmp_path / "torchaudio" / "lib"
    lib.mkdir(parents=True)
    (lib / "libtorchaudio.so").write_bytes(b"\x7fELF...NEEDED libc10_cuda.so...")
    monkeypatch.setattr(doctor, "_torchaudio_lib_dir", lambda: lib)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(md, "version", lambda name: torch.__version__.split("+")[0])
    note = doctor.torchaudio_build_note()
    assert "built for CUDA, beside a CPU-only torch" in note and "--repair-torchaudio" in note
    (lib / "libtorchaudio.so").rename(lib / "libtorchaudio.so.disabled")
    assert "disabled by --repair-torchaudio" in doctor.torchaudio_build_note()
    (lib / "libtorchaudio.so.disabled").write_bytes(b"\x7fELF...NEEDED libc10.so...")  # a CPU build: fine
    assert doctor.torchaudio_build_note() is None


def test_doctor_prints_versions_not_speechbrain_log_lines():
    r = subprocess.run([sys.executable, "-m", "toucan_speakemb.cli", "doctor"], capture_output=True, text=True,
                       timeout=300)
    assert "speechbrain" in r.stdout
    assert "INFO" not in r.stdout + r.stderr, r.stderr

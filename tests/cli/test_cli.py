"""Specification tests for the ``toucan-speakemb`` command line: train -> sample, reproducibility, clean errors
(one ``error:`` line, no traceback), untouched outputs on failure, and helpful ``--help`` pages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import assert_one_error_line as assert_error  # exit 1, one 'error: ...' line, no traceback
from toucan_speakemb import EmbeddingSet, get_profile
from toucan_speakemb.cli.main import main
from toucan_speakemb.training.config import TrainConfig
from toucan_speakemb.voices.bank import VoiceBank

CLI = Path(sys.executable).with_name("toucan-speakemb")
DIM = 4
TINY = ["model.hidden=32", "model.blocks=1", "model.time_dim=16", "diffusion.timesteps=30", "train.steps=20",
        "train.batch_size=16", "train.threads=1", "train.checkpoint_every=10", "train.log_every=5",
        "train.warmup_steps=2", "sample.steps=5",
        "train.validation_share=0"]  # keep the trained network (model selection could keep the Gaussian, which DDIM samples exactly at any step count)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def make_set(n_speakers=10, per=2, dim=DIM, seed=0) -> EmbeddingSet:
    rng = np.random.default_rng(seed)
    x = np.repeat(rng.normal(0, 2, (n_speakers, dim)), per, axis=0) + 0.3 * rng.normal(size=(n_speakers * per, dim))
    return EmbeddingSet(x.astype(np.float32), [f"s{i // per}" for i in range(n_speakers * per)],
                        get_profile("custom-cli", dim))


def assert_usage_error(result, *words):
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.stderr
    assert "Usage:" in result.stderr and "Error:" in result.stderr
    for w in words:
        assert w in result.stderr


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cli")
    data = make_set().save(root / "data.safetensors")
    result = invoke("train", "--data", data, "--out", root / "run", "--no-progress", *TINY)
    assert result.exit_code == 0, (result.output, result.exception)
    return root, data, root / "run"


# ---- train and sample -----------------------------------------------------------------------------------

def test_train_writes_a_run_folder_with_a_generator_and_the_resolved_config(work):
    root, data, run = work
    assert (run / "generator.safetensors").is_file()
    cfg = TrainConfig.from_yaml(run / "config.yaml")
    assert cfg.model.hidden == 32 and cfg.train.steps == 20 and cfg.diffusion.timesteps == 30
    assert cfg.model.kind == TrainConfig().model.kind  # keys not given keep the defaults


def test_train_reads_a_recipe_yaml_and_overrides_win(tmp_path):
    data = make_set().save(tmp_path / "d.safetensors")
    recipe = tmp_path / "hparams.yaml"
    recipe.write_text("train:\n  steps: 7\n  lr: 1e-3\nmodel:\n  hidden: 8\n")
    r = invoke("train", "--data", data, "--out", tmp_path / "run", "--config", recipe, "--no-progress",
               *TINY[1:4], "train.threads=1", "sample.steps=5", "train.steps=6", "train.warmup_steps=1")
    assert r.exit_code == 0, (r.output, r.exception)
    cfg = TrainConfig.from_yaml(tmp_path / "run" / "config.yaml")
    assert cfg.train.steps == 6 and cfg.model.hidden == 8 and cfg.train.lr == 1e-3


def test_train_accepts_an_interchange_npz(tmp_path):
    data = make_set().save(tmp_path / "d.npz")
    r = invoke("train", "--data", data, "--profile", "custom-cli", "--out", tmp_path / "run", "--no-progress",
               *TINY, "train.steps=3", "train.checkpoint_every=3")
    assert r.exit_code == 0, (r.output, r.exception)
    assert (tmp_path / "run" / "generator.safetensors").is_file()


def test_sample_writes_a_voice_bank_and_an_npy_equal_to_it(work, tmp_path):
    _, _, run = work
    r = invoke("sample", "--generator", run, "-n", 7, "--seed", 3, "--out", tmp_path / "v.safetensors",
               "--npy", tmp_path / "v.npy")
    assert r.exit_code == 0, (r.output, r.exception)
    bank = VoiceBank.load(tmp_path / "v.safetensors")
    arr = np.load(tmp_path / "v.npy", allow_pickle=False)
    assert arr.shape == (7, DIM) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr, bank.embeddings)
    assert len(bank.ids) == 7 and bank.profile.name == "custom-cli"
    assert bank.provenance["bank_seed"] == 3


def test_sample_accepts_the_generator_file_itself(work, tmp_path):
    _, _, run = work
    r = invoke("sample", "--generator", run / "generator.safetensors", "-n", 2, "--out", tmp_path / "v.safetensors")
    assert r.exit_code == 0, (r.output, r.exception)


def test_same_seed_twice_gives_byte_identical_embeddings(work, tmp_path):
    _, _, run = work
    for name in ("a", "b"):
        r = invoke("sample", "--generator", run, "-n", 5, "--seed", 42, "--out", tmp_path / f"{name}.safetensors",
                   "--npy", tmp_path / f"{name}.npy")
        assert r.exit_code == 0, r.output
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    a, b = VoiceBank.load(tmp_path / "a.safetensors"), VoiceBank.load(tmp_path / "b.safetensors")
    assert a.embeddings.tobytes() == b.embeddings.tobytes() and a.ids == b.ids


def test_different_seeds_give_different_voices(work, tmp_path):
    _, _, run = work
    for seed in (1, 2):
        assert invoke("sample", "--generator", run, "-n", 5, "--seed", seed, "--out",
                      tmp_path / f"{seed}.safetensors").exit_code == 0
    a, b = VoiceBank.load(tmp_path / "1.safetensors"), VoiceBank.load(tmp_path / "2.safetensors")
    assert not np.allclose(a.embeddings, b.embeddings)
    assert not set(a.ids) & set(b.ids)


def test_sampler_and_steps_options_are_used(work, tmp_path):
    _, _, run = work
    r = invoke("sample", "--generator", run, "-n", 3, "--sampler", "ancestral", "--out", tmp_path / "anc.safetensors")
    assert r.exit_code == 0, r.output
    r = invoke("sample", "--generator", run, "-n", 3, "--steps", 2, "--out", tmp_path / "d2.safetensors")
    assert r.exit_code == 0, r.output
    r = invoke("sample", "--generator", run, "-n", 3, "--steps", 5, "--out", tmp_path / "d5.safetensors")
    assert r.exit_code == 0, r.output
    anc, d2, d5 = (VoiceBank.load(tmp_path / f"{n}.safetensors") for n in ("anc", "d2", "d5"))
    assert anc.provenance["sampler"] == "ancestral" and d2.provenance["steps"] == 2
    assert not np.allclose(d2.embeddings, d5.embeddings)
    assert not np.allclose(anc.embeddings, d5.embeddings)


# ---- errors ---------------------------------------------------------------------------------------------

def test_train_without_out_is_a_usage_error(work):
    _, data, _ = work
    assert_usage_error(invoke("train", "--data", data), "--out")


def test_sample_without_out_is_a_usage_error(work):
    _, _, run = work
    assert_usage_error(invoke("sample", "--generator", run, "-n", 2), "--out")


@pytest.mark.parametrize("n", [0, -3])
def test_sample_of_zero_or_negative_voices_is_a_usage_error(work, tmp_path, n):
    _, _, run = work
    assert_usage_error(invoke("sample", "--generator", run, "-n", n, "--out", tmp_path / "v.safetensors"), "-n")
    assert not (tmp_path / "v.safetensors").exists()


def test_unknown_sampler_is_a_usage_error(work, tmp_path):
    _, _, run = work
    assert_usage_error(invoke("sample", "--generator", run, "--sampler", "euler", "--out", tmp_path / "v.st"))


def test_unknown_override_key_is_an_error_naming_it(work, tmp_path):
    _, data, _ = work
    assert_error(invoke("train", "--data", data, "--out", tmp_path / "r", "--no-progress", "model.hiden=3"),
                 "model.hiden")


def test_malformed_override_is_an_error(work, tmp_path):
    _, data, _ = work
    assert_error(invoke("train", "--data", data, "--out", tmp_path / "r", "--no-progress", "train.steps"),
                 "bad override")


def test_wrong_override_type_is_an_error_naming_the_key(work, tmp_path):
    _, data, _ = work
    assert_error(invoke("train", "--data", data, "--out", tmp_path / "r", "--no-progress", "train.steps=lots"),
                 "train.steps")


def test_missing_data_file_is_an_error(tmp_path):
    assert_error(invoke("train", "--data", tmp_path / "nope.safetensors", "--out", tmp_path / "r", "--no-progress"),
                 "not found")


def test_no_data_at_all_is_an_error(tmp_path):
    assert_error(invoke("train", "--out", tmp_path / "r", "--no-progress"), "no training data")


@pytest.mark.parametrize("name", ["empty.safetensors", "empty.npz"])
def test_empty_data_file_is_an_error(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    assert_error(invoke("train", "--data", tmp_path / name, "--out", tmp_path / "r", "--no-progress"), "empty")


def test_corrupt_npz_is_an_error(tmp_path):
    good = make_set().save(tmp_path / "good.npz").read_bytes()
    (tmp_path / "bad.npz").write_bytes(good[: len(good) // 3])
    assert_error(invoke("train", "--data", tmp_path / "bad.npz", "--out", tmp_path / "r", "--no-progress"), "bad.npz")


def test_corrupt_safetensors_is_an_error(tmp_path):
    good = make_set().save(tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "bad.safetensors").write_bytes(good[:-9])
    assert_error(invoke("train", "--data", tmp_path / "bad.safetensors", "--out", tmp_path / "r", "--no-progress"),
                 "damaged")


def test_nan_in_embeddings_is_an_error(tmp_path):
    x = make_set().embeddings.copy()
    x[3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", embeddings=x, speaker_ids=np.array([f"s{i // 2}" for i in range(len(x))]))
    assert_error(invoke("train", "--data", tmp_path / "nan.npz", "--out", tmp_path / "r", "--no-progress"), "NaN")


def test_data_of_one_speaker_is_an_error(tmp_path):
    es = make_set(n_speakers=1, per=6)
    data = es.save(tmp_path / "one.safetensors")
    assert_error(invoke("train", "--data", data, "--out", tmp_path / "r", "--no-progress", *TINY), "2 speakers")


def test_wrong_profile_for_an_npz_is_an_error(tmp_path):
    data = make_set().save(tmp_path / "d.npz")
    assert_error(invoke("train", "--data", data, "--profile", "toucan-v2.2", "--out", tmp_path / "r", "--no-progress"),
                 "704")


def test_sampling_from_a_folder_without_a_generator_is_an_error(tmp_path):
    (tmp_path / "run").mkdir()
    assert_error(invoke("sample", "--generator", tmp_path / "run", "--out", tmp_path / "v.safetensors"),
                 "generator.safetensors")


def test_sampling_with_more_steps_than_the_diffusion_has_is_an_error(work, tmp_path):
    _, _, run = work
    assert_error(invoke("sample", "--generator", run, "--steps", 31, "--out", tmp_path / "v.safetensors"), "31")


def test_sampling_from_a_damaged_generator_is_an_error(work, tmp_path):
    _, _, run = work
    raw = (run / "generator.safetensors").read_bytes()
    (tmp_path / "g.safetensors").write_bytes(raw[: len(raw) // 2])
    assert_error(invoke("sample", "--generator", tmp_path / "g.safetensors", "--out", tmp_path / "v.safetensors"),
                 "damaged")


def test_resuming_a_run_with_another_config_is_an_error_naming_the_key(work):
    _, data, run = work
    assert_error(invoke("train", "--data", data, "--out", run, "--no-progress", *TINY, "model.hidden=64"),
                 "model.hidden")


def test_an_output_path_below_a_regular_file_is_an_error_not_a_traceback(work, tmp_path):
    _, _, run = work
    (tmp_path / "afile").write_text("x")
    assert_error(invoke("sample", "--generator", run, "-n", 2, "--out", tmp_path / "afile" / "v.safetensors"))


def test_a_run_folder_below_a_regular_file_is_an_error_not_a_traceback(work, tmp_path):
    _, data, _ = work
    (tmp_path / "afile").write_text("x")
    assert_error(invoke("train", "--data", data, "--out", tmp_path / "afile" / "run", "--no-progress", *TINY))


# ---- failing commands leave outputs alone ---------------------------------------------------------------

@pytest.fixture
def existing_bank(work, tmp_path):
    _, _, run = work
    out = tmp_path / "bank.safetensors"
    assert invoke("sample", "--generator", run, "-n", 3, "--seed", 5, "--out", out).exit_code == 0
    return out, out.read_bytes()


def test_a_failing_sample_leaves_an_existing_bank_untouched(work, existing_bank, tmp_path):
    _, _, run = work
    out, before = existing_bank
    assert_error(invoke("sample", "--generator", tmp_path / "missing", "-n", 3, "--out", out))
    assert out.read_bytes() == before
    assert_error(invoke("sample", "--generator", run, "-n", 3, "--steps", 99, "--out", out))
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.safetensors"]


def test_a_sample_whose_npy_cannot_be_written_is_an_error_not_a_traceback(work, tmp_path):
    _, _, run = work
    (tmp_path / "afile").write_text("x")
    assert_error(invoke("sample", "--generator", run, "-n", 3, "--out", tmp_path / "v.safetensors",
                        "--npy", tmp_path / "afile" / "v.npy"))


def test_a_sample_whose_npy_cannot_be_written_leaves_the_existing_bank_untouched(work, existing_bank, tmp_path):
    _, _, run = work
    out, before = existing_bank
    (tmp_path / "afile").write_text("x")
    result = invoke("sample", "--generator", run, "-n", 3, "--seed", 6, "--out", out,
                    "--npy", tmp_path / "afile" / "v.npy")
    assert result.exit_code != 0
    assert out.read_bytes() == before, "the failing command replaced the existing voice bank"


def test_a_refused_train_leaves_the_existing_run_untouched(work):
    _, data, run = work
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "train.log"}
    assert_error(invoke("train", "--data", data, "--out", run, "--no-progress", *TINY, "diffusion.timesteps=40"),
                 "diffusion.timesteps")
    assert_error(invoke("train", "--data", run / "nope.safetensors", "--out", run, "--no-progress", *TINY))
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "train.log"}
    assert after == before


# ---- help -----------------------------------------------------------------------------------------------

COMMANDS = ["train", "sample", "demo", "doctor"]


@pytest.mark.parametrize("name", COMMANDS)
def test_help_of_each_command_explains_every_option(name):
    result = invoke(name, "--help")
    assert result.exit_code == 0
    command = main.commands[name]
    assert command.help and command.help.split("\n")[0].strip()
    for param in command.params:
        if isinstance(param, click.Option):
            assert any(opt in result.output for opt in param.opts), (name, param.opts)
            assert param.help and param.help.strip(), f"{name} {param.opts[0]} has no help text"


def test_train_help_explains_overrides_and_levels():
    out = invoke("train", "--help").output
    assert "KEY=VALUE" in out and "train.steps=2000" in out
    for level in ("speaker", "balanced", "utterance"):
        assert level in out


def test_main_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_console_script_help_runs_as_a_real_process():
    p = subprocess.run([str(CLI), "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "Usage: toucan-speakemb" in p.stdout
    for name in ("train", "sample", "demo"):
        assert name in p.stdout
    assert "Traceback" not in p.stderr


def test_the_command_line_and_its_help_pages_load_without_torch():
    # --help stays fast: torch (seconds to import) is loaded by the commands that run it, when they run
    code = ("import sys\nfrom click.testing import CliRunner\nfrom toucan_speakemb.cli.main import main\n"
            "for args in ([], ['sample'], ['synth'], ['voices', 'add'], ['extract'], ['train']):\n"
            "    assert CliRunner().invoke(main, args + ['--help']).exit_code == 0, args\n"
            "print('torch' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "False"


def test_quiet_flag_silences_training_info_on_the_console(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "toucan_speakemb.cli", "-q", "train", "--data", "builtin:synthetic-small",
                        "--out", str(tmp_path / "run"), "--no-progress", "train.steps=5", "train.threads=1"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "INFO" not in r.stderr
    assert "INFO" in (tmp_path / "run" / "train.log").read_text()  # the run's own log still has it


def test_changing_the_number_of_steps_of_a_started_run_is_refused(tmp_path):
    from click.testing import CliRunner

    from toucan_speakemb.cli.main import main

    args = ["train", "--data", "builtin:synthetic-small", "--out", str(tmp_path / "run"), "--no-progress",
            "train.threads=1", "train.checkpoint_every=5"]
    assert CliRunner().invoke(main, args + ["train.steps=5"]).exit_code == 0
    r = CliRunner().invoke(main, args + ["train.steps=10"])
    assert r.exit_code == 1 and "train.steps" in r.output

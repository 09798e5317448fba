"""Every command that runs torch takes a device the same way: ``--device`` (extract, sample, voices add, synth)
or ``train.device=`` (train's config key), with one help text, one set of values (auto, cpu, cuda, cuda:<i>)
and default auto. A bad value, or CUDA asked for where this torch sees none, is one error line and exit 1
before any work: nothing is read, loaded or written."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_one_error_line
from test_cli import TINY, invoke, work  # noqa: F401 (work: a fixture)
from toucan_speakemb.cli.main import main
from toucan_speakemb.core.distributed import DEVICE_HELP
from toucan_speakemb.voices.bank import VoiceBank

CUDA = torch.cuda.is_available()
DEVICE_COMMANDS = {"extract": main.commands["extract"], "sample": main.commands["sample"],
                   "voices add": main.commands["voices"].commands["add"], "synth": main.commands["synth"]}


def device_param(command):
    return next(p for p in command.params if p.name == "device")


@pytest.mark.parametrize("name", sorted(DEVICE_COMMANDS))
def test_every_device_option_has_the_same_help_values_and_default(name):
    p = device_param(DEVICE_COMMANDS[name])
    assert p.opts == ["--device"] and p.default == "auto" and p.help == DEVICE_HELP


def test_train_names_its_device_key_with_the_same_help_text():
    assert "train.device=DEVICE" in main.commands["train"].help and DEVICE_HELP in main.commands["train"].help


def test_the_help_pages_say_what_auto_does():
    for args in (["sample", "--help"], ["synth", "--help"], ["voices", "add", "--help"], ["extract", "--help"]):
        text = " ".join(invoke(*args).output.split())
        assert "auto (cuda:LOCAL_RANK when this torch sees CUDA" in text and "[default: auto]" in text, args


def commands_with(device: str, root, run):
    """Each device-taking command, asked to run on ``device``, with outputs under ``root``."""
    return {
        "sample": ["sample", "--generator", run, "-n", "3", "--out", root / "bank.safetensors", "--device", device],
        "voices add": ["voices", "add", root / "voices.safetensors", "--generator", run, "-n", "2",
                       "--device", device],
        "synth": ["synth", "Hello.", "--random-speaker", "--generator", run, "--toucan-dir", root / "no-toucan",
                  "-o", root / "hello.wav", "--device", device],
        "extract": ["extract", root / "no-corpus", "-o", root / "emb.safetensors", "--device", device],
        "train": ["train", "--data", root / "no-data.safetensors", "--out", root / "run", *TINY,
                  f"train.device={device}"],
    }


@pytest.mark.parametrize("name", ["sample", "voices add", "synth", "extract", "train"])
@pytest.mark.parametrize("bad", ["gpu", "cuda:x"])
def test_a_bad_device_is_one_error_line_before_any_work(work, tmp_path, name, bad):
    _, _, run = work
    r = invoke(*commands_with(bad, tmp_path, run)[name])
    option = "train.device" if name == "train" else "--device"
    assert_one_error_line(r, option, "must be auto, cpu, cuda or cuda:<i>", repr(bad), alone=True)
    assert list(tmp_path.iterdir()) == []  # the missing corpus, data and Toucan were not even looked at


@pytest.mark.skipif(CUDA, reason="torch sees a CUDA device")
@pytest.mark.parametrize("name", ["sample", "voices add", "synth", "train"])
def test_cuda_without_cuda_is_one_error_line_before_any_work(work, tmp_path, name):
    _, _, run = work
    r = invoke(*commands_with("cuda", tmp_path, run)[name])
    assert_one_error_line(r, "'cuda' asked for", "no CUDA device", alone=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(CUDA, reason="auto is a GPU here")
def test_sample_on_auto_writes_the_bytes_sample_on_cpu_writes_here(work, tmp_path):
    _, _, run = work
    for device in ("cpu", "auto"):
        r = invoke("sample", "--generator", run, "-n", "40", "--seed", "5", "--slider", "pc1=1",
                   "--out", tmp_path / f"{device}.safetensors", "--device", device)
        assert r.exit_code == 0, r.output
        assert "sampled on cpu" in r.output
    a, b = (VoiceBank.load(tmp_path / f"{d}.safetensors") for d in ("cpu", "auto"))
    assert a.embeddings.tobytes() == b.embeddings.tobytes() and a.ids == b.ids
    assert a.provenance["device"] == b.provenance["device"] == "cpu"


def test_train_says_the_device_it_trains_on(work, tmp_path):
    _, data, _ = work
    r = invoke("train", "--data", data, "--out", tmp_path / "run", "--no-progress", *TINY, "train.device=cpu")
    assert r.exit_code == 0, r.output
    assert "device cpu" in r.output


def test_synth_runs_toucan_and_the_generator_on_the_resolved_device(work, tmp_path, monkeypatch):
    import toucan_speakemb.adapters as adapters

    _, _, run = work
    seen = {}

    def fake_synth(texts, outputs, generator, models, device, **kw):
        seen.update(device=device, generator=str(generator.device))
        return [], 0

    monkeypatch.setattr(adapters, "ToucanModels", lambda *a: "models")
    monkeypatch.setattr(adapters.synthesis, "synth", fake_synth)
    r = invoke("synth", "Hello.", "--random-speaker", "--generator", run, "-o", tmp_path / "a.wav")
    assert r.exit_code == 0, r.output
    expected = "cuda:0" if CUDA else "cpu"  # the default: auto
    assert seen == {"device": expected, "generator": expected}
